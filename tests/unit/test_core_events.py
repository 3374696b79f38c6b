"""The rating-event contract's edge cases (both the site and the workers validate with it)."""
from __future__ import annotations

import json
import time

import pytest

from core.events import MAX_EVENT_BYTES, MAX_TEXT_CHARS, SCHEMA_VERSION, InvalidEvent, RatingEvent, parse_event, validate


def _good(**changes) -> dict:
    d = RatingEvent(user_id="u1", product_id="B000123", rating=4, text="nice").to_dict()
    d.update(changes)
    return d


def test_round_trip_keeps_every_field_and_keys_by_user():
    e = RatingEvent(user_id="A2ABC", product_id="B00X", rating=5, text="très bien ✓")
    back = parse_event(e.to_bytes())
    assert back == e
    assert e.key == b"A2ABC" and e.schema_version == SCHEMA_VERSION
    assert len(e.event_id) == 32 and e.event_id != RatingEvent(user_id="A2ABC", product_id="B00X", rating=5).event_id


@pytest.mark.parametrize("changes, reason", [
    ({"rating": 0}, "rating 0 out of range"),
    ({"rating": 6}, "rating 6 out of range"),
    ({"rating": True}, "got bool"),
    ({"rating": "5"}, "got str"),
    ({"rating": 4.0}, "got float"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "text too long"),
    ({"text": None}, "text must be a string"),
    ({"text": "a\ud800b"}, "not valid UTF-8"),
    ({"ts": float("inf")}, "finite"),
    ({"ts": True}, "finite"),
    ({"ts": 100.0}, "outside the plausible range"),
    ({"ts": time.time() + 3 * 86400}, "outside the plausible range"),
    ({"schema_version": True}, "unsupported schema_version"),
    ({"schema_version": 2}, "unsupported schema_version"),
    ({"user_id": ""}, "user_id has invalid"),
    ({"user_id": "a" * 129}, "user_id has invalid"),
    ({"product_id": {"$gt": ""}}, "product_id must be a string"),
    ({"event_id": "short"}, "event_id has invalid"),
    ({"extra": 1}, "unknown fields: extra"),
])
def test_invalid_fields_are_refused_with_a_reason(changes, reason):
    with pytest.raises(InvalidEvent) as exc:
        validate(_good(**changes))
    assert reason in str(exc.value)


def test_text_at_the_limit_and_non_ascii_text_are_accepted():
    assert validate(_good(text="é" * MAX_TEXT_CHARS)).text == "é" * MAX_TEXT_CHARS
    assert validate(_good(text="emoji 🎸 ok")).text == "emoji 🎸 ok"


@pytest.mark.parametrize("raw, reason", [
    (None, "empty message"),
    (b"{", "bad JSON"),
    (b"\xff\xfe", "bad JSON"),
    (b"[]", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"x" * (MAX_EVENT_BYTES + 1), "message too large"),
])
def test_undecodable_messages_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as exc:
        parse_event(raw)
    assert reason in str(exc.value)


def test_lone_surrogate_escaped_in_json_is_refused():
    raw = json.dumps(_good(text="x\udfffy")).encode()  # json.dumps writes it as \\udfff: valid JSON
    assert b"\\udfff" in raw
    with pytest.raises(InvalidEvent, match="not valid UTF-8"):
        parse_event(raw)
