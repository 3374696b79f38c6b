"""Poison events: each lands in the dead-letter topic with its reason; the events around them are
processed as if the poison was not there, and the worker keeps running.

Count in = count out + count rejected: every message of the ratings topic is either a processed
rating or a dead letter.
"""
from __future__ import annotations

import json

import pytest

from core import mongo
from core.events import MAX_EVENT_BYTES, MAX_TEXT_CHARS, RatingEvent
from realtime_support import (TOP_N, check_users_current, committed_and_end_offsets, publish_all, read_topic, send_raw,
                              wait_until, worker_stats)
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _event(**changes) -> bytes:
    base = RatingEvent(user_id="rt-dl-0", product_id="RT00001", rating=4).to_dict()
    base.update(changes)
    return json.dumps(base).encode()


def _poison(unknown_product: str) -> list[tuple[str, bytes | None, str]]:
    """(label, message value, what the reason must say)."""
    return [
        ("bad JSON", b'{"user_id": "rt-dl-0", "rating": 4', "bad JSON"),
        ("not UTF-8", b"\xff\xfe\x00garbage", "bad JSON"),
        ("unknown product", _event(product_id=unknown_product), f"unknown product {unknown_product}"),
        ("rating 7", _event(rating=7), "rating 7 out of range 1..5"),
        ("rating true", _event(rating=True), "rating must be an integer, got bool"),
        ("rating 4.5", _event(rating=4.5), "rating must be an integer, got float"),
        ("huge text", _event(text="x" * (MAX_TEXT_CHARS + 1000)),
         f"text too long ({MAX_TEXT_CHARS + 1000} > {MAX_TEXT_CHARS} characters)"),
        ("huge message", _event(text="y" * (MAX_EVENT_BYTES + 10)), "message too large"),
        # A lone surrogate is valid JSON (json.dumps writes it as \ud800) but is not UTF-8 text.
        ("lone surrogate", _event(text="ok \ud800 then"), "text is not valid UTF-8"),
        ("empty value", None, "empty message"),
        ("JSON array", b"[1, 2, 3]", "event must be a JSON object, got list"),
        ("schema v3", _event(schema_version=3), "unsupported schema_version 3"),
        ("bad action", _event(action="delete_everything"), "action must be one of"),
        ("unknown field", _event(admin=True), "unknown fields: admin"),
        ("bad user id", _event(user_id="rt dl $where"), "user_id has invalid characters"),
        ("NaN time", _event(ts=float("nan")), "ts must be a finite number"),
        ("missing event id", json.dumps({k: v for k, v in json.loads(_event()).items() if k != "event_id"}).encode(),
         "event_id must be a string"),
    ]


def test_poison_events_go_to_dead_letters_with_reasons_and_good_ones_are_unaffected(rt):
    products = rt.catalog.in_model
    poison = _poison("NOPE0001")
    assert b'"ok \\ud800 then"' in poison[8][1]  # the message really carries the escaped lone surrogate
    users = [f"rt-dl-{i}" for i in range(3)]
    good: list[RatingEvent] = []
    sent: dict[tuple[int, int], tuple[str, bytes | None, str, bytes]] = {}
    for k, (label, value, reason) in enumerate(poison):
        # Good events before and after each poison one, for the same user (same partition) too.
        batch = [RatingEvent(user_id=users[(k + j) % 3], product_id=products[(7 * k + j) % len(products)],
                             rating=1 + (k + j) % 5) for j in range(2)]
        publish_all(batch[:1])
        key = users[k % 3].encode()
        sent[send_raw(value, key=key)] = (label, value, reason, key)
        publish_all(batch[1:])
        good.extend(batch)

    worker = rt.start_worker()
    letters = read_topic(rt.dead_letter_topic, len(poison), timeout_s=120)
    assert len(letters) == len(poison), [json.loads(r.value)["reason"] for r in letters]
    for record in letters:
        letter = json.loads(record.value)
        label, value, reason, key = sent[(letter["partition"], letter["offset"])]
        assert letter["topic"] == rt.topic
        assert reason in letter["reason"], f"{label}: {letter['reason']!r}"
        assert letter["value_bytes"] == len(value or b""), label
        assert len(letter["value"]) <= 4096
        assert record.key == key, label
    assert len({(json.loads(r.value)["partition"], json.loads(r.value)["offset"]) for r in letters}) == len(poison), \
        "one dead letter per poison event"

    stats = wait_until(lambda: (s := worker_stats(worker.pid)) and s["processed"] == len(good)
                       and s["dead-letter"] >= len(poison) and s, 120,
                       "all good events processed, every poison one counted (after its letter is sent)")
    # Count in = count out + count rejected.
    assert len(read_topic(rt.topic, len(good) + len(poison))) == stats["processed"] + stats["dead-letter"]
    assert stats["dead-letter"] == len(poison) and stats["duplicate"] == 0
    assert worker.alive(), "poison must not stop the worker"
    check_users_current(good, rt.db, rt.version, TOP_N)
    stored = rt.db[mongo.RATINGS].count_documents({"user_id": {"$regex": "^rt-dl-"}})
    assert stored == len(good), "no poison event is stored as a rating"


def test_a_message_with_a_huge_key_is_dead_lettered_and_its_partition_moves_on(rt):
    """A 200 KB key of bytes that are not UTF-8 (far below the broker's 1 MB): the letter once
    repeated it twice, escaped (1.8 MB), Kafka refused it, and the worker waited for ever as if
    Kafka were down, its partition blocked. The letter keeps a preview of such a key and no
    record key; a good event behind it (same key: same partition) is processed. A small key is
    the letter's record key, byte for byte."""
    big_key, small_key = b"\xff" * 200_000, b"rt-dl-\xfe"
    good = RatingEvent(user_id="rt-dl-bigkey", product_id=rt.catalog.in_model[0], rating=5)
    big_at = send_raw(b"not json", key=big_key)
    send_raw(good.to_bytes(), key=big_key)
    small_at = send_raw(b"also not json", key=small_key)
    worker = rt.start_worker()

    letters = {(json.loads(r.value)["partition"], json.loads(r.value)["offset"]): r
               for r in read_topic(rt.dead_letter_topic, 2, timeout_s=120)}
    assert set(letters) == {big_at, small_at}
    big = json.loads(letters[big_at].value)
    assert letters[big_at].key is None and big["key_b64"] is None and big["key_bytes"] == len(big_key)
    assert "bad JSON" in big["reason"] and len(letters[big_at].value) < 100_000
    assert letters[small_at].key == small_key
    wait_until(lambda: (s := worker_stats(worker.pid)) and s["processed"] == 1 and s, 120, "the good event processed")

    def all_committed() -> bool:
        committed, ends = committed_and_end_offsets(rt.group, rt.topic)
        return all(committed.get(p, 0) == end for p, end in ends.items())

    wait_until(all_committed, 60, "the committed offsets to reach the end of the log")
    assert worker.alive()
