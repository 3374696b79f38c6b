"""The rating-event contract's edge cases (both the site and the workers validate with it)."""
from __future__ import annotations

import json
import time

import pytest

from core.events import (CONTROL_ACTIONS, DELETE_ACCOUNT, INTERESTED_AGAIN, MAX_EVENT_BYTES, MAX_TEXT_CHARS,
                         NOT_INTERESTED, RATE, SCHEMA_VERSION, UNRATE, InvalidEvent, RatingEvent, parse_event, validate)


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
    ({"schema_version": 3}, "unsupported schema_version"),
    ({"schema_version": "2"}, "unsupported schema_version"),
    ({"action": "delete"}, "action must be one of"),
    ({"action": None}, "action must be one of"),
    ({"action": "unrate"}, "rating must be 0 for action unrate"),
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


# --- version 2: the shopper's controls travel as events with an action -------------------------

def test_version_1_events_still_parse_as_ratings():
    """What is already in the topic (or a site not yet upgraded sends) keeps working."""
    v1 = {k: v for k, v in _good().items() if k != "action"}
    v1["schema_version"] = 1
    event = parse_event(json.dumps(v1).encode())
    assert event.action == RATE and event.rating == 4 and event.text == "nice"
    assert event.event_id == v1["event_id"] and event.product_id == "B000123"


def test_version_1_has_no_action_field():
    with pytest.raises(InvalidEvent, match="unknown fields: action"):
        validate(_good(schema_version=1, action=RATE))


def test_version_2_requires_an_action():
    v2 = _good()
    del v2["action"]
    with pytest.raises(InvalidEvent, match="action must be one of"):
        validate(v2)


@pytest.mark.parametrize("action", [UNRATE, NOT_INTERESTED, INTERESTED_AGAIN])
def test_controls_round_trip_with_rating_zero_and_no_text(action):
    e = RatingEvent(user_id="u1", product_id="B000123", rating=0, action=action)
    back = parse_event(e.to_bytes())
    assert back == e and back.action == action and back.key == b"u1"
    assert json.loads(e.to_bytes())["schema_version"] == 2


@pytest.mark.parametrize("action", [UNRATE, NOT_INTERESTED, INTERESTED_AGAIN, DELETE_ACCOUNT])
def test_controls_carry_no_rating_and_no_text(action):
    pid = "" if action == DELETE_ACCOUNT else "B000123"
    with pytest.raises(InvalidEvent, match=f"rating must be 0 for action {action}"):
        validate(_good(action=action, rating=3, text="", product_id=pid))
    with pytest.raises(InvalidEvent, match=f"text must be empty for action {action}"):
        validate(_good(action=action, rating=0, text="why", product_id=pid))


def test_delete_account_carries_no_product_and_others_need_one():
    e = RatingEvent(user_id="site-abc", product_id="", rating=0, action=DELETE_ACCOUNT)
    assert parse_event(e.to_bytes()) == e
    with pytest.raises(InvalidEvent, match="product_id must be empty"):
        validate(_good(action=DELETE_ACCOUNT, rating=0, text=""))
    for action in (RATE, UNRATE, NOT_INTERESTED, INTERESTED_AGAIN):
        with pytest.raises(InvalidEvent, match="product_id has invalid"):
            validate(_good(action=action, rating=4 if action == RATE else 0, text="", product_id=""))


def test_interested_again_is_a_control_the_site_may_send():
    """The undo of "not interested" is validated as the wire value "interested_again", and the site
    (shop.ratings.submit_control, the API's ControlOut) accepts it like the other controls."""
    assert INTERESTED_AGAIN == "interested_again" and INTERESTED_AGAIN in CONTROL_ACTIONS
    raw = json.dumps({**_good(rating=0, text=""), "action": "interested_again"}).encode()
    assert parse_event(raw).action == INTERESTED_AGAIN
