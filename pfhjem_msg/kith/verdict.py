"""One call from untrusted bytes to a verdict: how it arrived, whether it is well-formed and
valid, which standard it is, the typed model, the signature, and every issue found.

``examine`` never raises on bad input: anything at all ends in a Verdict with issues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from pfhjem_msg.kith import checks, msghead, signature
from pfhjem_msg.kith.apprec import read_apprec
from pfhjem_msg.kith.envelope import Transport, unwrap
from pfhjem_msg.kith.epikrise import VERSIONS as EPIKRISE_VERSIONS
from pfhjem_msg.kith.epikrise import read_epikrise
from pfhjem_msg.kith.issues import Issue, capped, error, has_errors, shown_code, warning
from pfhjem_msg.kith.model import Message, Standard
from pfhjem_msg.kith.parse import Limits, find_kith_root, local, namespace, parse_xml, too_large
from pfhjem_msg.kith.schemas import SchemaSet, load_schema_set
from pfhjem_msg.kith.walk import Reader, text

MSGHEAD_NS = "http://www.kith.no/xmlstds/msghead/2006-05-24"
APPREC_VERSIONS = {
    "http://www.kith.no/xmlstds/apprec/2004-11-21": "1.0",
    "http://www.kith.no/xmlstds/apprec/2012-02-15": "1.1",
}


@dataclass
class Options:
    schemas: SchemaSet = field(default_factory=load_schema_set)
    limits: Limits = field(default_factory=Limits)
    trust_anchors: Path | None = None
    crl_dir: Path | None = None
    require_signature: bool = False
    """Reject unsigned messages; a sender's own setting in ``senders`` takes precedence."""
    senders: dict[str, signature.SenderTrust] = field(default_factory=dict)
    """Per sender HER-id: the organisation number its certificate must carry, and whether
    its messages must be signed."""
    salvage: bool = True
    """Read what can be read from a broken document (for addressing a T01 AppRec)."""


@dataclass
class Verdict:
    source: str
    well_formed: bool
    transport: Transport = "xml"
    standard: Standard = "unknown"
    message: Message | None = None
    signature: signature.SignatureResult = field(default_factory=lambda: signature.SignatureResult("absent"))
    issues: list[Issue] = field(default_factory=list)
    salvaged: bool = False
    """True when ``message`` was read from a document that is not well-formed."""
    root: etree._Element | None = field(default=None, repr=False)
    """The KITH root element (for carrying attachments over); None when nothing was read."""

    @property
    def valid(self) -> bool:
        return self.well_formed and not has_errors(self.issues)

    @property
    def msg_type(self) -> str | None:
        """The type code as shown everywhere outside the message (never the sender's raw text:
        see ``shown_code``); decisions read ``message.msg_type`` itself."""
        return shown_code(self.message.msg_type.value) if self.message and self.message.msg_type else None

    @property
    def msg_id(self) -> str | None:
        return self.message.msg_id if self.message else None

    def human_lines(self) -> list[str]:
        """The verdict as a compiler would print it: a line for the file, a line per issue."""
        if self.valid:
            head = "valid"
        elif self.well_formed:
            head = "INVALID"
        else:
            head = "NOT WELL-FORMED" if any(i.apprec_code == "T01" for i in self.issues) else "UNREADABLE"
        detail = " ".join(x for x in (self.standard, self.msg_type or "", self.msg_id or "") if x)
        sig = f" signature {self.signature.status}" if self.signature.status != "absent" else ""
        return [f"{self.source}: {head} {detail}{sig}".rstrip()] + [
            "  " + issue.format(self.source) for issue in self.issues
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "well_formed": self.well_formed,
            "valid": self.valid,
            "standard": self.standard,
            "msg_type": self.msg_type,
            "msg_id": self.msg_id,
            "signature": self.signature.status,
            "issues": [i.as_dict() for i in self.issues],
        }


def read_message(kith_root: etree._Element, issues: list[Issue]) -> tuple[Message | None, str | None]:
    """The typed model of a KITH root, and its MIGversion; deviations go to ``issues``."""
    reader = Reader(kith_root)
    name, ns = local(kith_root), namespace(kith_root)
    msg: Message | None = None
    mig: str | None = None
    if name == "MsgHead" and ns == MSGHEAD_NS:
        msg = msghead.read_msghead(reader, kith_root)
    elif name == "Message" and ns in EPIKRISE_VERSIONS:
        msg = read_epikrise(reader, kith_root)
        mig = text(kith_root, "MIGversion")
    elif name == "AppRec" and ns in APPREC_VERSIONS:
        msg = read_apprec(reader, kith_root, APPREC_VERSIONS[ns])
        mig = text(kith_root, "MIGversion")
    issues.extend(reader.issues)
    return msg, mig


def examine(data: bytes, source: str = "-", options: Options | None = None) -> Verdict:
    opts = options or Options()
    verdict = _examine(data, source, opts)
    verdict.issues = capped(verdict.issues, opts.limits.max_issues)
    return verdict


def _examine(data: bytes, source: str, opts: Options) -> Verdict:
    if len(data) > opts.limits.max_bytes:
        return Verdict(source, False, issues=too_large(len(data), opts.limits))
    unwrapped = unwrap(data, opts.limits)
    verdict = Verdict(source, False, unwrapped.transport, issues=list(unwrapped.issues))
    if unwrapped.xml is None:
        return verdict
    parsed = parse_xml(unwrapped.xml, opts.limits)
    verdict.issues.extend(parsed.issues)
    if parsed.document is None:
        if opts.salvage and any(i.code == "XML_NOT_WELL_FORMED" for i in parsed.issues):
            _salvage(verdict, unwrapped.xml, opts)
        return verdict
    verdict.well_formed = True
    kith_root = find_kith_root(parsed.document)
    if kith_root is None:
        verdict.issues.append(
            error(
                "NOT_KITH",
                "no MsgHead, Epikrise Message or AppRec was found in the document",
                line=parsed.document.sourceline,
                apprec_code="T10",
            )
        )
        return verdict
    if kith_root is not parsed.document:
        verdict.issues.append(
            warning(
                "WRAPPED",
                f"the {local(kith_root)} sits inside a <{local(parsed.document)}> wrapper; "
                "the wrapper is not validated",
                line=kith_root.sourceline,
            )
        )
    msg, mig = read_message(kith_root, verdict.issues)
    verdict.message = msg
    verdict.root = kith_root
    ns = namespace(kith_root)
    if msg is None:
        verdict.issues.append(
            error(
                "STANDARD_UNSUPPORTED",
                f"{local(kith_root)} in namespace {ns} is not a standard this product reads",
                line=kith_root.sourceline,
                apprec_code="T10",
            )
        )
    else:
        verdict.standard = msg.standard
        if msg.standard == "msghead-1.2":
            what = f"namespace {msg.payload_namespace}" if msg.payload_namespace else "no XML payload"
            verdict.issues.append(
                error(
                    "PAYLOAD_UNSUPPORTED",
                    f"the MsgHead carries {what}, not a payload this product reads",
                    apprec_code="T10",
                )
            )
        verdict.issues.extend(checks.check(msg, mig))
    if opts.schemas.covers(ns):
        verdict.issues.extend(opts.schemas.validate(kith_root, opts.limits.max_issues))
    else:
        verdict.issues.append(
            error(
                "XSD_NO_SCHEMA", f"the schema directory has no schema for namespace {ns}", apprec_code="T10"
            )
        )
    _check_signature(verdict, kith_root, msg, opts)
    return verdict


def _check_signature(verdict: Verdict, kith_root: etree._Element, msg: Message | None, opts: Options) -> None:
    """The signature, and what the operator requires of it: one that verifies, a certificate
    of the sender's own organisation, and a signature at all when the sender must sign."""
    if local(kith_root) == "MsgHead":
        verdict.signature = signature.verify(
            kith_root,
            opts.trust_anchors,
            crl_dir=opts.crl_dir,
            message_time=_message_time(msg),
        )
    result = verdict.signature
    if result.status == "invalid":
        verdict.issues.append(
            error("SIGNATURE_INVALID", result.reason or "invalid signature", apprec_code=result.apprec_code)
        )
        return
    if msg is None:
        return  # what is unreadable is already refused
    sender = msg.sender.her_ids if msg.sender else []
    trust = next((opts.senders[h] for h in reversed(sender) if h in opts.senders), None)
    required = _required(sender, opts)
    if msg.is_apprec:
        # No AppRec answers an AppRec, but an unsigned one must not settle what we sent
        # when its sender must sign: a forged «status 1» would stop the wait for a receipt.
        if result.status == "absent" and required:
            verdict.issues.append(
                error(
                    "SIGNATURE_MISSING",
                    f"the AppRec is not signed, and messages from {_who(sender)} must be "
                    "([kith] require_signature); it settles nothing we sent",
                    apprec_code="S01",
                )
            )
        return
    who = _who(sender)
    if result.status == "absent":
        if required:
            verdict.issues.append(
                error(
                    "SIGNATURE_MISSING",
                    f"the message is not signed, and messages from {who} must be "
                    "([kith] require_signature); ask the sender to sign",
                    apprec_code="S01",
                )
            )
        return
    if required and not result.anchored:
        verdict.issues.append(
            error(
                "SIGNATURE_UNTRUSTED",
                f"messages from {who} must be signed, but [kith] trust_anchors is not set, so the "
                "signer cannot be checked; an operator must configure trust_anchors",
                apprec_code="S02",
            )
        )
    problem = _organisation_problem(result, msg, trust)
    if problem is not None:
        verdict.issues.append(error("SIGNATURE_WRONG_ORGANISATION", problem, apprec_code="S02"))
    elif not _expected_organisations(msg, trust):
        verdict.issues.append(
            warning(
                "SIGNATURE_ORGANISATION_UNCHECKED",
                f"who signed is not checked: the MsgHead gives no ENH organisation number for {who} "
                "and none is configured ([[kith.sender]] organisation_number)",
            )
        )
    verdict.issues.extend(warning("CRL_STALE", w) for w in result.warnings)
    if result.weak_algorithm:
        verdict.issues.append(warning("SIGNATURE_SHA1", "the signature uses SHA-1, which is outdated"))


def _who(sender: list[str]) -> str:
    return f"sender HER-id {sender[-1]}" if sender else "a sender without HER-id"


def _required(sender: list[str], opts: Options) -> bool:
    """Whether the sender must sign. Any level of the sender (organisation, department, person)
    whose operator setting requires a signature requires it: the levels are the sender's own
    words, so an exempt HER-id added below a hospital that must sign must not exempt the
    message. Otherwise the lowest level with a setting decides, else ``[kith] require_signature``."""
    settings = [opts.senders[h].require_signature for h in reversed(sender) if h in opts.senders]
    if any(s is True for s in settings):
        return True
    return next((s for s in settings if s is not None), opts.require_signature)


def _message_time(msg: Message | None) -> datetime | None:
    """GenDate, which KITH writes in Norwegian local time when it has no offset."""
    moment = msg.gen_datetime if msg is not None else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("Europe/Oslo"))
    return moment


def _expected_organisations(msg: Message, trust: signature.SenderTrust | None) -> set[str]:
    """The organisation numbers the signer may have: the configured one for the sender, else
    the ENH idents of the sender's organisation levels in the (signed) MsgHead."""
    if trust is not None and trust.organisation_number:
        return {trust.organisation_number}
    levels = msg.sender.levels if msg.sender else []
    return {
        i.id.strip()
        for lvl in levels
        if lvl.kind in ("organisation", "department")
        for i in lvl.idents
        if i.type == "ENH"
    }


def _organisation_problem(
    result: signature.SignatureResult, msg: Message, trust: signature.SenderTrust | None
) -> str | None:
    expected = _expected_organisations(msg, trust)
    if not expected or result.organisation_number in expected:
        return None
    source = (
        "configured for the sender" if trust is not None and trust.organisation_number else "in the MsgHead"
    )
    wanted = ", ".join(sorted(expected))
    if result.organisation_number is None:
        return f"the signing certificate carries no organisation number; the sender's ({source}) is {wanted}"
    return (
        f"the message is signed by organisation {result.organisation_number}, not by the sender's "
        f"{wanted} ({source})"
    )


def _salvage(verdict: Verdict, xml: bytes, opts: Options) -> None:
    """Read sender and MsgId from a broken document so a T01 AppRec can be addressed."""
    try:
        parsed = parse_xml(xml, opts.limits, recover=True)
        if parsed.document is None:
            return
        kith_root = find_kith_root(parsed.document)
        if kith_root is None:
            return
        msg, _ = read_message(kith_root, [])
    except Exception:  # salvage is best effort; the verdict already says T01
        return
    if msg is not None and msg.sender is not None and msg.sender.her_ids:
        verdict.message = msg
        verdict.standard = msg.standard
        verdict.salvaged = True
