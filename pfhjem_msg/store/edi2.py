"""What the daemon needs from the store for the message service ("EDI 2.0"), beyond what
``Edi2IntakeStore`` (the exactly-once intake) asks: the service's id of what we sent through
it, the sent messages whose receiver's AppRec is still to be read, and the intake's health.

Our AppRec for a message that came over EDI 2.0 is a delivery with the transport
``edi2_apprec``: the intake posts it (``POST /Messages/{id}/apprec/{herId}``),
``deliver_due`` never does."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pfhjem_msg.edi2.intake import Edi2Health, Edi2IntakeStore
from pfhjem_msg.store.base import DeliveryRow, OperatorStore

__all__ = ["DaemonStore", "Edi2Store"]


class Edi2Store(Edi2IntakeStore, Protocol):
    def edi2_sent(self, delivery_id: int, service_id: str, now: datetime) -> None:
        """The service accepted the delivery's document under ``service_id`` (durably, before
        the delivery is marked delivered)."""

    def edi2_awaiting_receipts(self, since: datetime, limit: int) -> list[tuple[DeliveryRow, str]]:
        """Deliveries sent through the service since ``since`` whose receiver's AppRec has not
        come, oldest first, with the service's id of each."""

    def edi2_save_health(self, health: Edi2Health, now: datetime) -> None: ...


class DaemonStore(OperatorStore, Edi2Store, Protocol):
    """Everything the daemon uses."""
