"""Every free-text place a sender may write in: all of MsgHead and the payload, read from the
document itself, so that a note, an annotation, an attachment title or an Epikrise plan
comment is read whatever its element is called.

Not read: who the message is about or between (patient identity, addresses, parties, persons
related to a note), ids, dates and codes, base64 attachments, signatures, and the request a
Dialogmelding answer embeds (``Notat/Foresporsel``: the earlier message). Display names of
codes (``DN``) and original texts (``OT``) are read: senders put the marking in ``TemaKodet``'s
DN.
"""

from __future__ import annotations

from collections.abc import Iterator

from lxml import etree

from pfhjem_msg.kith.model import DialogPayload, EpikrisePayload, Message
from pfhjem_msg.kith.parse import Where, local, namespace, text_of

XHTML = "http://www.w3.org/1999/xhtml"
_SKIP = frozenset({
    "Patient", "Sender", "Receiver", "OtherReceiver", "Address", "Ident", "HCP", "ServProvider", "Requester",
    "CopyDest", "PatRelHCP", "PatientRelParty", "RollerRelatertNotat", "HealthcareProfessional",
    "Organisation", "Person", "TeleCom", "Signature", "Base64Container", "Kontaktenhet", "TilknyttetEnhet",
    "ConversationRef", "MsgId", "MIGversion", "GenDate", "IssueDate", "ServProvId", "MimeType",
    "Compression", "DatoNotat", "Id", "TypeId", "OffId", "TypeOffId", "DateOfBirth", "Sex", "MsgType",
    "Ack", "StartDateTime", "EndDateTime", "OrgDate", "FileReference", "Status", "ServType",
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


def tree_places(root: etree._Element) -> Iterator[tuple[Place, str]]:
    """(place, text) of every free-text place under ``root``, in document order."""
    stack: list[tuple[etree._Element, bool]] = [(root, False)]
    while stack:
        el, in_note = stack.pop()
        name = local(el)
        if not name or name in _SKIP or (in_note and name == "Foresporsel"):
            continue
        for attribute in ("DN", "OT"):
            value = el.get(attribute)
            if value and value.strip():
                yield Place(Where(el, root), f"/@{attribute}"), value
        kids = [c for c in el if isinstance(c.tag, str)]
        if kids and (name in _WHOLE or namespace(kids[0]) == XHTML):
            value = text_of(el)
            if value:
                yield Place(Where(el, root)), value
            continue
        if not kids:
            if el.text and el.text.strip():
                yield Place(Where(el, root)), el.text
            continue
        note = in_note or name == "Notat"
        stack.extend((c, note) for c in reversed(kids))


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
