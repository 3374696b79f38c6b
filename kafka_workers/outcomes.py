"""What became of one rating event: the status the worker counts (its stats, ``/metrics``) and
acts on (a dead letter is sent, everything else is committed past)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.events import RatingEvent

Status = Literal["processed", "duplicate", "dead-letter", "cancelled", "dropped"]
STATUSES: tuple[Status, ...] = ("processed", "duplicate", "dead-letter", "cancelled", "dropped")


@dataclass(frozen=True)
class Outcome:
    """What became of one event; ``reason`` says why for every status but processed and duplicate."""

    event: RatingEvent | None
    status: Status
    reason: str = ""
    latency_s: float = 0.0
