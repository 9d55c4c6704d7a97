"""Every free-text place a sender may write in: all of MsgHead and the payload, read from the
document itself, so that a note, an annotation, an attachment title or an Epikrise plan
comment is read whatever its element is called.

Not read: who the message is about or between (``MsgInfo``: patient identity, addresses,
parties; persons related to a note), ids, dates and codes, base64 attachments, signatures, and the request a
Dialogmelding answer embeds (``Notat/Foresporsel``: the earlier message). Display names of
codes (``DN``) and original texts (``OT``) are read: senders put the marking in ``TemaKodet``'s
DN.
"""

from __future__ import annotations

from collections.abc import Iterator

from lxml import etree

from pfhjem_msg.kith.model import DialogPayload, EpikrisePayload, Message
from pfhjem_msg.kith.parse import Where, text_of

XHTML = "http://www.w3.org/1999/xhtml"
_SKIP = frozenset({
    "MsgInfo", "Patient", "Sender", "Receiver", "OtherReceiver", "Address", "Ident", "HCP", "ServProvider", "Requester",
    "CopyDest", "PatRelHCP", "PatientRelParty", "RollerRelatertNotat", "HealthcareProfessional",
    "Organisation", "Person", "TeleCom", "Signature", "Base64Container", "Kontaktenhet", "TilknyttetEnhet",
    "ConversationRef", "MsgId", "MIGversion", "GenDate", "IssueDate", "ServProvId", "MimeType",
    "Compression", "DatoNotat", "Id", "TypeId", "OffId", "TypeOffId", "DateOfBirth", "Sex", "MsgType",
    "Ack", "StartDateTime", "EndDateTime", "OrgDate", "FileReference", "Status", "ServType", "RefToParent",
    "RefToConversation", "TypeForesp", "DokIdNotat", "DokIdForesp",
})  # fmt: skip
_WHOLE = frozenset({"TekstNotatInnhold", "TextResultValue", "Sporsmal", "Description", "Merknad"})


class Place:
    """Where a text sits (an element, or one of its attributes), as a path made only when shown."""

    __slots__ = ("_at", "_suffix")

    def __init__(self, at: Where | str, suffix: str = "") -> None:
        self._at, self._suffix = at, suffix

    def __str__(self) -> str:
        return f"{self._at}{self._suffix}"

    __repr__ = __str__


_LOCAL: dict[str, str] = {}
"""{namespace}Name -> Name, filled as tags are seen (the KITH vocabulary is small)."""
_XHTML_PREFIX = "{" + XHTML + "}"


def tree_places(root: etree._Element) -> Iterator[tuple[Place, str]]:
    """(place, text) of every free-text place under ``root``, in document order. One pass over
    the elements in lxml's own order; a skipped subtree's elements are set aside as met."""
    skipped: set[etree._Element] = set()
    for el in root.iter(etree.Element):
        if el in skipped:
            continue
        tag = el.tag
        name = _LOCAL.get(tag)
        if name is None:
            name = tag[tag.rfind("}") + 1 :]
            if len(_LOCAL) < 4096:  # senders choose the tags
                _LOCAL[tag] = name
        if name in _SKIP or (name == "Foresporsel" and _in_note(el)):
            skipped.update(el.iter())
            continue
        for attribute in ("DN", "OT"):
            value = el.get(attribute)
            if value and not value.isspace():
                yield Place(Where(el, root), f"/@{attribute}"), value
        if not len(el):
            text = el.text
            if text and not text.isspace():
                yield Place(Where(el, root)), text
        elif name in _WHOLE or (el[0].tag.__class__ is str and el[0].tag.startswith(_XHTML_PREFIX)):
            value = text_of(el)
            if value:
                yield Place(Where(el, root)), value
            skipped.update(el.iter())


def _in_note(el: etree._Element) -> bool:
    """Whether a request is the one an answer embeds (inside ``Notat``)."""
    parent = el.getparent()
    return parent is not None and parent.tag.__class__ is str and parent.tag.endswith("Notat")


def model_places(msg: Message) -> Iterator[tuple[Place, str]]:
    """The same places as read into the typed model, for a message without its document."""
    for where, text in msg.document_descriptions:
        yield Place(where), text
    for attachment in msg.attachments:
        if attachment.description:
            yield Place(attachment.path, "/Description"), attachment.description
    payload = msg.payload
    if isinstance(payload, DialogPayload):
        for note in payload.notes:
            base = str(note.path)
            if note.tema_kodet and note.tema_kodet.text:
                yield Place(base, "/TemaKodet/@DN"), note.tema_kodet.text
            for suffix, value in (
                ("/Tema", note.tema),
                ("/TekstNotatInnhold", note.text),
                ("/Merknad", note.merknad),
            ):
                if value:
                    yield Place(base, suffix), value
        for req in payload.requests:
            base = str(req.path)
            if "/Notat" in base:
                continue
            for suffix, value in (
                ("/EmneSporsmal", req.subject),
                ("/Sporsmal", req.text),
                ("/Begrunnelse", req.reason),
            ):
                if value:
                    yield Place(base, suffix), value
    elif isinstance(payload, EpikrisePayload):
        for comment in payload.comments:
            base = str(comment.path)
            if comment.heading and comment.heading.text:
                yield Place(base, "/Heading/@DN"), comment.heading.text
            if comment.text:
                yield Place(base, "/TextResultValue"), comment.text
        for where, code in payload.services:
            if code.text:
                yield Place(where, "/@DN"), code.text
