"""Prometheus metrics (off unless ``[metrics] address`` is set).

Labels are codes from closed sets only: the message type from the 8279 list (anything else
is ``other``), states, transports, delivery kinds. Never an id, a HER-id or free text, so no
patient data can reach a label and the number of series stays small.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pfhjem_msg import lifecycle
from pfhjem_msg.kith.codes import MESSAGE_TYPES
from pfhjem_msg.lifecycle import ALL_STATES
from pfhjem_msg.store.base import REFUSED_REASONS, StatusFacts

REGISTRY = CollectorRegistry()
STATES = ALL_STATES

received = Counter(
    "pfhjem_messages_received_total",
    "Messages accepted from the hub and stored",
    ["source"],
    registry=REGISTRY,
)
processed = Counter(
    "pfhjem_messages_processed_total",
    "Messages that reached an outcome (a final state, or held)",
    ["msg_type", "outcome"],
    registry=REGISTRY,
)
refused = Counter(
    "pfhjem_refused_total",
    "Spool files refused and moved to .refused (symlink, not_regular, too_large, unreadable)",
    ["reason"],
    registry=REGISTRY,
)
for _reason in REFUSED_REASONS:  # present at 0 from the start, so an increase() alert sees the first
    refused.labels(_reason)
smtp_refused = Counter(
    "pfhjem_smtp_refused_total",
    "SMTP connections, recipients and messages refused by the intake limits",
    ["reason"],
    registry=REGISTRY,
)
store_available = Gauge(
    "pfhjem_store_available",
    "1 while the store answers, 0 while it cannot be reached (nothing is acknowledged meanwhile)",
    registry=REGISTRY,
)
store_available.set(1)  # the daemon serves only once its store has opened
messages = Gauge("pfhjem_messages", "Messages in the store by state", ["state"], registry=REGISTRY)
delivery_attempts = Counter(
    "pfhjem_delivery_attempts_total", "Delivery attempts", ["transport", "kind"], registry=REGISTRY
)
delivery_failures = Counter(
    "pfhjem_delivery_failures_total",
    "Failed delivery attempts (permanent: no more tries)",
    ["transport", "kind", "permanent"],
    registry=REGISTRY,
)
latency = Histogram(
    "pfhjem_processing_seconds",
    "From acceptance to the message's outcome",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=REGISTRY,
)
oldest_unfinished = Gauge(
    "pfhjem_oldest_unfinished_seconds",
    "Age of the oldest message not yet finished (0: none)",
    registry=REGISTRY,
)
last_intake = Gauge(
    "pfhjem_last_intake_timestamp_seconds",
    "When the last message was accepted (Unix time)",
    registry=REGISTRY,
)
deliveries_waiting = Gauge("pfhjem_deliveries_waiting", "Deliveries not yet done", registry=REGISTRY)
receipts_overdue = Gauge(
    "pfhjem_gp_copies_without_apprec", "GP copies with no AppRec after 96 hours", registry=REGISTRY
)
claims_expired = Gauge(
    "pfhjem_claims_expired",
    "Unfinished messages and deliveries still claimed by a daemon whose lease has expired",
    registry=REGISTRY,
)
followups = Gauge(
    "pfhjem_followups",
    "Follow-ups by municipality and condition",
    ["municipality", "condition"],
    registry=REGISTRY,
)


DELIVERY_KINDS: frozenset[str] = frozenset(lifecycle.DELIVERY_KINDS)


def kind_label(kind: str) -> str:
    """A delivery's kind as a label (a reminder is ``reminder``: its follow-up id is a column,
    never a label); a value from a damaged row is ``other``."""
    return kind if kind in DELIVERY_KINDS else "other"


def transport_label(transport: str) -> str:
    return transport if transport in lifecycle.TRANSPORTS else "other"


@functools.lru_cache(maxsize=4096)
def child(metric: Any, *labels: str) -> Any:
    """The series of ``metric`` for these label values, looked up once: ``labels()`` takes a
    lock and checks its arguments on every call, and the pipeline counts several times per
    message. The values come from the closed sets above, so the cache stays small."""
    return metric.labels(*labels)


def type_label(msg_type: str | None) -> str:
    if msg_type is None:
        return "unreadable"
    return msg_type if msg_type in MESSAGE_TYPES else "other"


def update_status(facts: StatusFacts, now_ts: float) -> None:
    """Refresh the gauges from the store (the daemon calls this on a timer)."""
    for state in STATES:
        child(messages, state).set(facts.counts.get(state, 0))
    oldest = facts.oldest_unfinished
    oldest_unfinished.set(max(0.0, now_ts - oldest[1].timestamp()) if oldest else 0.0)
    if facts.last_intake is not None:
        last_intake.set(facts.last_intake.timestamp())
    deliveries_waiting.set(facts.deliveries_waiting)
    receipts_overdue.set(facts.receipts_overdue)
    claims_expired.set(facts.claims_expired)


def serve(address: tuple[str, int]) -> Any:
    """Start the HTTP endpoint in a background thread; returns the server (for ``shutdown``)."""
    host, port = address
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server
