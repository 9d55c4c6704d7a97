"""Our AppRec decision in the message service's terms, and its AppRecs in ours.

The service builds and sends the AppRec document itself from a status and an error list; we
give it exactly what our own AppRec would carry (the same decision, the same 8221 codes with
the same extra text), so a message answered over EDI 2.0 is answered as one from the hub is.
The status goes as the description's enumeration names (``Ok``, ``Rejected``); its prose also
speaks of 1 and 2, which are the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lxml import etree

from pfhjem_msg.kith import codes
from pfhjem_msg.kith.apprec import AppRecDecision

STATUS_NAMES = {"1": "Ok", "2": "Rejected", "3": "OkErrorInMessagePart"}
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}


@dataclass(frozen=True)
class AppRecAnswer:
    status: Literal["1", "2"]
    """8258: 1 OK, 2 rejected (3 is not supported by the service)."""
    errors: tuple[tuple[str, str | None], ...] = ()
    """(8221 code, extra text) as in our AppRec's ``Error`` elements."""

    def request_body(self) -> dict[str, Any]:
        """The ``PostAppRecRequest`` body."""
        return {
            "appRecStatus": STATUS_NAMES[self.status],
            "appRecErrorList": [
                {
                    "errorCode": code,
                    "details": extra or "",
                    "description": codes.APPREC_ERRORS.get(code),
                    "oid": codes.APPREC_ERROR_SYSTEM,
                }
                for code, extra in self.errors
            ],
        }

    @classmethod
    def of(cls, decision: AppRecDecision) -> AppRecAnswer | None:
        """The answer for an AppRec decision; None when no AppRec is due."""
        if not decision.due or decision.status not in ("1", "2"):
            return None
        return cls("1" if decision.status == "1" else "2", tuple(decision.errors))

    @classmethod
    def from_xml(cls, xml: bytes) -> AppRecAnswer:
        """The answer an AppRec document we built carries: how a queued AppRec delivery (whose
        payload is our AppRec XML) becomes the service's request without deciding again."""
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        root = etree.fromstring(xml, parser)
        status_el = root.find("{*}Status")
        status = status_el.get("V") if status_el is not None else None
        errors = tuple((e.get("V", ""), e.get("OT")) for e in root.findall("{*}Error"))
        if status not in ("1", "2"):
            raise ValueError("the AppRec carries no status 1 or 2")
        return cls("1" if status == "1" else "2", errors)


def receipt_of(status_name: str | None, errors: tuple[tuple[str, str | None], ...]) -> tuple[str, str] | None:
    """A receiver's AppRec as the service reports it → (8258 status, error codes joined by
    spaces), the form the store records receipts in; None while no AppRec has come."""
    if status_name is None:
        return None
    return STATUS_CODES.get(status_name, "?"), " ".join(code for code, _ in errors)
