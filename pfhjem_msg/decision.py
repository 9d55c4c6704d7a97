"""Everything the product decides about one received message, in one place: the pathway
facts, the route, the AppRec. ``explain`` prints it; the daemon acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pfhjem_msg.config import Settings
from pfhjem_msg.gpregistry import GPRegistry
from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.verdict import Verdict
from pfhjem_msg.pathway import Detection, Found, Matcher, PathwayFacts, analyse
from pfhjem_msg.routing import RoutingDecision, route


@dataclass
class MessageDecision:
    verdict: Verdict
    facts: PathwayFacts | None
    routing: RoutingDecision
    apprec: apprec.AppRecDecision

    def as_dict(self) -> dict[str, Any]:
        v, f, r, a = self.verdict, self.facts, self.routing, self.apprec
        diagnosis: Found | None = f.diagnosis if f else None
        return {
            "file": v.source,
            "standard": v.standard,
            "msg_type": v.msg_type,
            "msg_id": v.msg_id,
            "valid": v.valid,
            "marked": bool(f and f.detection.marked),
            "marking": [m.as_dict() for m in f.detection.matches] if f else [],
            "not_marked_reason": f.detection.not_marked_reason if f else "the message could not be read",
            "contact_point": f.contact_point.value if f else None,
            "contact_point_reason": f.contact_point.how if f else None,
            "diagnosis_date": diagnosis.value.isoformat() if diagnosis else None,  # type: ignore[attr-defined]
            "diagnosis_date_from": {"where": diagnosis.where, "how": diagnosis.how} if diagnosis else None,
            "municipal_contact_at": f.municipal_contact_where if f else None,
            "municipality": r.municipality.name if r.municipality else None,
            "routing_action": r.action,
            "routing_reason": r.reason,
            "routing": [x.as_dict() for x in r.recipients],
            "notes": list(r.notes),
            "apprec": {
                "due": a.due,
                "status": a.status,
                "errors": [code for code, _ in a.errors],
                "version": a.version,
                "reason": a.reason,
            },
            "followups": [w.as_dict() for w in f.followups] if f else [],
            **(f.explain() if f else {}),
        }


def decide(
    verdict: Verdict, settings: Settings, registry: GPRegistry | None, matcher: Matcher | None = None
) -> MessageDecision:
    msg = verdict.message
    receipt = apprec.decide(verdict, settings.apprec)
    if msg is None or verdict.salvaged:
        reason = "the message could not be read; an operator must look at it"
        return MessageDecision(verdict, None, RoutingDecision("hold", reason), receipt)
    facts = analyse(msg, matcher or Matcher(settings.pathway), verdict.root)
    if receipt.due and receipt.status == "2":
        codes = ", ".join(c for c, _ in receipt.errors)
        routing = RoutingDecision("reject", f"rejected with a negative AppRec ({codes}); not delivered")
        return MessageDecision(verdict, facts, routing, receipt)
    return MessageDecision(verdict, facts, route(msg, facts.detection, settings, registry), receipt)


__all__ = ["Detection", "MessageDecision", "decide"]
