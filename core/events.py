"""The rating contract: what a rating, a control and their event are, for every program.

This module is its one definition: the stars' range, the id patterns, the actions and the
event's fields. The site's HTML form (recsite/shop/forms.py) and its API serializers
(recsite/shop/serializers.py) build their fields from these constants, so a page, the API and the
workers can never disagree on what a valid rating is.

Events are versioned JSON so old and new producers and consumers can coexist during a deploy.
Both sides call :func:`parse_event` / :func:`validate`: the site refuses a bad rating before it is
published, and a worker sends whatever still slips through to the dead-letter topic with the
reason from :class:`InvalidEvent`.

Versions:
- 1: a rating (no ``action`` field). Still accepted: events already in the topic, or sent by a
  site not yet upgraded during a deploy, parse as ``action="rate"``.
- 2: adds ``action``, the shopper's controls travel the same path as ratings (same topic, keyed
  by user, so one user's events stay in order):
  ``rate`` (rating 1..5; rating a product again changes the rating), ``unrate`` (remove the
  rating), ``not_interested`` (never recommend this product to the user again),
  ``interested_again`` (take a ``not_interested`` back: the product may be recommended again) and
  ``delete_account`` (the user's account was deleted: drop everything the workers keep for
  them; it carries no product). Those carry ``rating`` 0 and no text. ``interested_again`` came
  later within version 2 (the fields did not change, only the actions): a worker older than it
  sends such an event to the dead-letter topic, to be replayed once it is upgraded.
"""
from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
RATE, UNRATE, NOT_INTERESTED, DELETE_ACCOUNT = "rate", "unrate", "not_interested", "delete_account"
INTERESTED_AGAIN = "interested_again"  # undoes NOT_INTERESTED, as UNRATE undoes RATE
ACTIONS = (RATE, UNRATE, NOT_INTERESTED, INTERESTED_AGAIN, DELETE_ACCOUNT)
# what a shopper sends about one product besides a rating
CONTROL_ACTIONS = (UNRATE, NOT_INTERESTED, INTERESTED_AGAIN)
EXCLUSION_ACTIONS = (NOT_INTERESTED, INTERESTED_AGAIN)  # the events that change the exclusions, not the history
MIN_STARS, MAX_STARS = 1, 5
MAX_TEXT_CHARS = 5000
MAX_EVENT_BYTES = 64 * 1024
# A product or user id's characters and length, written once for the two regex dialects below.
MAX_ID_LENGTH = 128  # of a product or user id: the site's Profile.reviewer_id holds one as long
_ID_CHARS = rf"[A-Za-z0-9_.:@-]{{1,{MAX_ID_LENGTH}}}"


def _id_pattern(end: str) -> str:
    """The id pattern with the dialect's end of input: not "." or "..", which a browser resolves
    (/p/../ is the catalog's URL), so their pages could never be reached."""
    return rf"\A(?!\.\.?{end}){_ID_CHARS}{end}"


# \Z, not $: "$" also matches before a trailing newline, which would let "id\n" through.
PRODUCT_ID_PATTERN = _id_pattern(r"\Z")  # user ids follow it too
# The same pattern in Java's dialect, for Spark's ``rlike``: load quarantines a batch line whose id
# it rejects, or the line would become a product the site cannot link to (its pages fail) or a
# reviewer whose linked demo account cannot rate. Java's \Z, like Python's $, also matches before
# a final line terminator (in Java "\r", "\u0085", "\u2028"... too); Java's \z is Python's \Z.
PRODUCT_ID_JAVA_PATTERN = _id_pattern(r"\z")
# An event's id, and so a form's submission id and an API client's Idempotency-Key.
MIN_EVENT_ID_LENGTH, MAX_EVENT_ID_LENGTH = 8, 64
EVENT_ID_PATTERN = rf"\A[A-Za-z0-9_-]{{{MIN_EVENT_ID_LENGTH},{MAX_EVENT_ID_LENGTH}}}\Z"
_ID_RE = re.compile(PRODUCT_ID_PATTERN)
_EVENT_ID_RE = re.compile(EVENT_ID_PATTERN)
# Events from before 2000 or more than a day in the future are clock bugs, not ratings.
_MIN_TS, _MAX_FUTURE_S = 946_684_800.0, 86_400.0


class InvalidEvent(ValueError):
    """A rating event that breaks the contract; ``str(exc)`` is the reason stored with it."""


@dataclass(frozen=True)
class RatingEvent:
    """One event of the ratings topic, whichever its ``action``: a rating (``rate``), a shopper's
    control about one product (``unrate``, ``not_interested``, ``interested_again``) or an
    account's deletion (``delete_account``).

    Named after its first and commonest kind: version 1 carried ratings only. The name stays
    although it carries every kind: the rest of the path says "rating" for all of them as well
    (the ratings topic ``KAFKA_RATINGS_TOPIC``, ``shop.ratings``, ``RatingSubmission``,
    ``GET /api/ratings/<id>/`` of a control), so renaming this class alone would not make the
    words agree, and it would touch ~240 lines in 31 files (core, the workers, the site, bench
    and 23 test files) without changing what any of them does. The name is not on the wire: a
    Kafka message is :meth:`to_bytes`, the fields alone.

    ``rating`` is 1..5 for ``rate`` and 0 for every other action; ``text`` is empty except for
    ``rate``; ``product_id`` is empty only for ``delete_account``. ``event_id`` is the event's
    identity: the workers store an event once by it; a submission with an idempotency key gets one
    derived from the account and the key (``shop.ratings.keyed_event_id``), so its retries share it.
    :func:`validate` enforces all of this.
    """

    user_id: str
    product_id: str
    rating: int
    text: str = ""
    ts: float = field(default_factory=time.time)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = SCHEMA_VERSION
    action: str = RATE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @property
    def key(self) -> bytes:
        """Kafka message key: by user, so one user's events stay in order on one partition."""
        return self.user_id.encode("utf-8")


def is_product_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None


def is_event_id(value: object) -> bool:
    return isinstance(value, str) and _EVENT_ID_RE.match(value) is not None


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
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise InvalidEvent(f"unsupported schema_version {version!r}")
    known = set(RatingEvent.__dataclass_fields__) - ({"action"} if version == 1 else set())
    unknown = set(data) - known
    if unknown:
        raise InvalidEvent(f"unknown fields: {', '.join(sorted(unknown))[:200]}")
    action = data.get("action") if version >= 2 else RATE
    if action not in ACTIONS:
        raise InvalidEvent(f"action must be one of {', '.join(ACTIONS)}, got {str(action)[:40]!r}")
    rating = data.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise InvalidEvent(f"rating must be an integer, got {type(rating).__name__}")
    if action == RATE and not MIN_STARS <= rating <= MAX_STARS:
        raise InvalidEvent(f"rating {rating} out of range {MIN_STARS}..{MAX_STARS}")
    if action != RATE and rating != 0:
        raise InvalidEvent(f"rating must be 0 for action {action}, got {rating}")
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
    if action != RATE and text:
        raise InvalidEvent(f"text must be empty for action {action}")
    if action == DELETE_ACCOUNT:
        if data.get("product_id") != "":
            raise InvalidEvent("product_id must be empty for action delete_account")
        product_id = ""
    else:
        product_id = _require_str(data, "product_id", _ID_RE)
    return RatingEvent(
        user_id=_require_str(data, "user_id", _ID_RE),
        product_id=product_id,
        rating=rating,
        text=text,
        ts=float(ts),
        event_id=_require_str(data, "event_id", _EVENT_ID_RE),
        action=action,
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
