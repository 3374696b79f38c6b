"""The rating-event contract between the site (producer) and the workers (consumers).

Events are versioned JSON so old and new producers and consumers can coexist during a deploy.
Both sides call :func:`parse_event` / :func:`validate`: the site refuses a bad rating before it is
published, and a worker sends whatever still slips through to the dead-letter topic with the
reason from :class:`InvalidEvent`.
"""
from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 5000
MAX_EVENT_BYTES = 64 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}\Z")  # \Z: "$" would let a trailing newline through
_EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}\Z")
# Events from before 2000 or more than a day in the future are clock bugs, not ratings.
_MIN_TS, _MAX_FUTURE_S = 946_684_800.0, 86_400.0


class InvalidEvent(ValueError):
    """A rating event that breaks the contract; ``str(exc)`` is the reason stored with it."""


@dataclass(frozen=True)
class RatingEvent:
    user_id: str
    product_id: str
    rating: int
    text: str = ""
    ts: float = field(default_factory=time.time)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @property
    def key(self) -> bytes:
        """Kafka message key: by user, so one user's events stay in order on one partition."""
        return self.user_id.encode("utf-8")


def _require_str(data: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be a string, got {type(value).__name__}")
    if not pattern.match(value):
        raise InvalidEvent(f"{name} has invalid characters or length")
    return value


def validate(data: Any) -> RatingEvent:
    """Check a decoded event strictly (types, ranges, unknown fields) and build the dataclass."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidEvent(f"unsupported schema_version {version!r}")
    unknown = set(data) - {f for f in RatingEvent.__dataclass_fields__}
    if unknown:
        raise InvalidEvent(f"unknown fields: {', '.join(sorted(unknown))[:200]}")
    rating = data.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise InvalidEvent(f"rating must be an integer, got {type(rating).__name__}")
    if not 1 <= rating <= 5:
        raise InvalidEvent(f"rating {rating} out of range 1..5")
    text = data.get("text", "")
    if not isinstance(text, str):
        raise InvalidEvent(f"text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidEvent(f"text too long ({len(text)} > {MAX_TEXT_CHARS} characters)")
    if not text.isascii():
        # JSON may carry a lone surrogate ("\ud800"): json.loads accepts it, but it is no UTF-8
        # text, so storing it fails in BSON encoding. Found by tests/integration/test_dead_letters.py:
        # without this check the worker crashed on it and, redelivered, crashed again forever.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent("text is not valid UTF-8 (lone surrogate)") from None
    ts = data.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidEvent("ts must be a finite number of seconds since the epoch")
    if not _MIN_TS <= ts <= time.time() + _MAX_FUTURE_S:
        raise InvalidEvent(f"ts {ts} outside the plausible range")
    return RatingEvent(
        user_id=_require_str(data, "user_id", _ID_RE),
        product_id=_require_str(data, "product_id", _ID_RE),
        rating=rating,
        text=text,
        ts=float(ts),
        event_id=_require_str(data, "event_id", _EVENT_ID_RE),
    )


def parse_event(raw: bytes | str) -> RatingEvent:
    """Decode and validate one Kafka message value."""
    if raw is None:
        raise InvalidEvent("empty message")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"message too large ({len(raw)} bytes > {MAX_EVENT_BYTES})")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"bad JSON: {exc}") from None
    return validate(data)
