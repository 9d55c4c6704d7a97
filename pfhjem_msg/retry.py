"""Retry policy as data: how often, how long between, and which errors never retry."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    """Delivery attempts before a delivery (and its message) is ``failed``."""
    base_seconds: float = 30.0
    factor: float = 2.0
    max_seconds: float = 3600.0
    jitter: float = 0.2
    """± this fraction of the delay, so retries after an outage do not arrive together."""
    pipeline_attempts: int = 3
    """Times a message may crash the pipeline before it is ``failed`` (a bug, not the peer)."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1 for the first failure)."""
        base = min(self.max_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return timedelta(seconds=max(0.0, base * (1 + spread)))

    def next_attempt(self, attempt: int, now: datetime, rng: random.Random | None = None) -> datetime | None:
        """When to try again after failed attempt ``attempt``; None when the attempts are used up."""
        if attempt >= self.max_attempts:
            return None
        return now + self.delay(attempt, rng)
