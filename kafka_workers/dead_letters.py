"""Dead letters: what one carries (``kafka_workers.dead_letter_sender`` sends it), and the
command that lists them and replays chosen ones after the cause was fixed.

    python -m kafka_workers.dead_letters list [--reason TEXT] [--json]
    python -m kafka_workers.dead_letters replay --id TOPIC:PARTITION:OFFSET [--id ...] [--force]

A letter is named by where its original message was (``topic:partition:offset``), so a message
dead-lettered twice (a worker crashed between the letter and its commit) is one letter. Replay
republishes the exact original bytes with the original key to the topic they came from; the
workers then process it like any event. Replaying is idempotent twice over: each replay is
recorded in MongoDB by the letter's id (a second replay says "already replayed" and does nothing,
unless ``--force``), and a rating event keeps its event id, which the workers store once. The record
says "replaying" until Kafka acknowledged the send: a replay killed before that is done again by
the next one (``core.dead_letter_replays``).
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any, Iterator

from kafka import KafkaConsumer, TopicPartition

from core import cancellation, dead_letter_replays, kafka_io
from core.events import MAX_EVENT_BYTES
from core.settings import get_settings


KEY_KEPT_BYTES = 1024  # a key up to this size is kept exactly (a user id is at most 128 bytes)
PREVIEW_CHARS = 4096  # of the value; the key's preview is KEY_PREVIEW_CHARS
KEY_PREVIEW_CHARS = 256
REASON_CHARS = 2000


def dead_letter_payload(raw: bytes | None, reason: str, topic: str, partition: int, offset: int,
                        key: bytes | None = None, event_id: str | None = None, attempts: int = 1,
                        lost_leases: int = 0) -> dict[str, Any]:
    """What a dead letter carries: the reason, where it came from, and the original.

    ``id`` (topic:partition:offset of the original) names the letter for the dead-letters command;
    ``attempts`` the tries that counted towards ``WORKER_MAX_ATTEMPTS``, ``lost_leases`` how many
    tries lost the user's writer lock (``core.locking.LeaseLost``: taken over while the worker
    stalled; the first ``WORKER_MAX_ATTEMPTS`` of them use no try, later ones count among
    ``attempts``), which ``attempts`` alone hid; the reason is the last try's exception (the lock's
    name when it was lost).
    ``value`` is a readable preview, ``value_b64`` the exact original bytes (events are at most
    ``MAX_EVENT_BYTES``; a larger message is kept as the preview only), which a replay republishes
    with the original key: ``key`` (a preview) and ``key_b64`` (exact, up to ``KEY_KEPT_BYTES``).
    Everything is capped, so a letter stays far below the broker's and the producer's 1 MB
    whatever the original (a message with a 200 KB key made a 1.8 MB letter, which Kafka
    refused, and the worker retried it for ever: tests/unit/test_kafka_workers_units.py).
    """
    raw_bytes = raw if isinstance(raw, bytes) else (str(raw).encode() if raw is not None else None)
    text = raw_bytes[:PREVIEW_CHARS * 4].decode("utf-8", errors="replace") if raw_bytes is not None else "None"
    if event_id is None and raw_bytes is not None:
        try:  # an invalid event may still name itself; the list shows it when it does
            data = json.loads(raw_bytes)
            event_id = data.get("event_id") if isinstance(data, dict) and isinstance(data.get("event_id"), str) else None
        except ValueError:
            pass
    return {"id": f"{topic}:{partition}:{offset}", "reason": str(reason)[:REASON_CHARS], "topic": topic,
            "partition": partition, "offset": offset,
            "key": key[:KEY_PREVIEW_CHARS * 4].decode("utf-8", "replace")[:KEY_PREVIEW_CHARS] if key else None,
            "key_bytes": len(key or b""),
            "key_b64": base64.b64encode(kept).decode() if (kept := letter_key(key)) else None,
            "event_id": (event_id or "")[:64] or None, "attempts": attempts, "lost_leases": lost_leases,
            "value": text[:PREVIEW_CHARS], "value_bytes": len(raw_bytes or b""),
            "value_b64": (base64.b64encode(raw_bytes).decode() if raw_bytes is not None
                          and len(raw_bytes) <= MAX_EVENT_BYTES else None),
            "dead_lettered_at": time.time()}


def letter_key(key: bytes | None) -> bytes | None:
    """The dead letter's own record key: the original's when it is kept whole, else none."""
    return key if key and len(key) <= KEY_KEPT_BYTES else None


def bare_letter(letter: dict[str, Any], refused: str) -> dict[str, Any]:
    """A letter Kafka refused (``refused``: why), without the original: where it was, its size, the
    reason. A few hundred bytes: the message is quarantined and its partition moves on."""
    kept = ("id", "topic", "partition", "offset", "event_id", "attempts", "lost_leases", "key_bytes", "value_bytes",
            "dead_lettered_at")
    return {**{k: letter.get(k) for k in kept}, "key": None, "key_b64": None, "value": "", "value_b64": None,
            "reason": f"{str(letter.get('reason'))[:500]} (its letter was refused by Kafka: {refused[:200]};"
                      " the original is not kept)"}


def letter_id(letter: dict[str, Any]) -> str:
    """Letters written before ids existed are named the same way, from their origin fields."""
    return str(letter.get("id") or f"{letter.get('topic')}:{letter.get('partition')}:{letter.get('offset')}")


def read_letters(timeout_s: float = 30.0) -> Iterator[dict[str, Any]]:
    """Every letter of the dead-letter topic, oldest first, up to its end when called."""
    s = get_settings()
    consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False,
                             client_id="dead-letters-cli", consumer_timeout_ms=int(timeout_s * 1000))
    try:
        consumer.topics()  # fetch the cluster's metadata, so a topic that exists is known
        parts = consumer.partitions_for_topic(s.dead_letter_topic) or set()
        tps = [TopicPartition(s.dead_letter_topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {s.dead_letter_topic} to its end in {timeout_s:.0f}s")
            for tp, batch in consumer.poll(timeout_ms=500).items():
                for record in batch:
                    if record.offset >= end[tp]:
                        continue
                    try:
                        letter = json.loads(record.value)
                    except (TypeError, ValueError):
                        letter = {"reason": "unreadable dead letter", "value": repr(record.value)[:200]}
                    if not isinstance(letter, dict):
                        letter = {"reason": "unreadable dead letter", "value": repr(letter)[:200]}
                    letter.setdefault("topic", None)
                    letter["letter_offset"] = record.offset
                    yield letter
    finally:
        consumer.close()


def collect(reason: str | None = None) -> dict[str, dict[str, Any]]:
    """Letters by id (first copy kept, copies counted), with their replay record if any."""
    letters: dict[str, dict[str, Any]] = {}
    for letter in read_letters():
        lid = letter_id(letter)
        if lid in letters:
            letters[lid]["copies"] += 1
            continue
        if reason and reason.lower() not in str(letter.get("reason", "")).lower():
            continue
        letters[lid] = {**letter, "id": lid, "copies": 1}
    for lid, letter in letters.items():
        replay = dead_letter_replays.get(lid)
        done = dead_letter_replays.state(replay) == dead_letter_replays.REPLAYED
        letter["replayed"] = replay.get("replayed_at") if done else None
        letter["replaying"] = replay.get("claimed_at") if replay and not done else None
    return letters


def original_bytes(letter: dict[str, Any]) -> bytes | None:
    """The exact original message, or None when the letter only kept a preview."""
    if letter.get("value_b64"):
        return base64.b64decode(letter["value_b64"])
    value = letter.get("value")
    if isinstance(value, str) and "\ufffd" not in value and len(value.encode()) == letter.get("value_bytes"):
        return value.encode()  # an older letter whose preview is the whole, clean original
    return None


def original_key(letter: dict[str, Any]) -> tuple[bool, bytes | None]:
    """(kept, key): the original message's exact key, or kept False when the letter has only a
    preview of it (a key over ``KEY_KEPT_BYTES``: no event's, whose key is its user id)."""
    if letter.get("key_b64"):
        return True, base64.b64decode(letter["key_b64"])
    key = letter.get("key")
    if "key_bytes" not in letter:  # an older letter: its key as it was written
        return True, key.encode() if key else None
    if not letter["key_bytes"]:
        return True, None
    return False, None


def cmd_list(args: argparse.Namespace) -> int:
    letters = collect(args.reason)
    for letter in letters.values():
        row = {k: letter.get(k) for k in ("id", "reason", "event_id", "key", "attempts", "lost_leases",
                                          "dead_lettered_at", "copies", "replayed", "replaying", "value_bytes")}
        row["replayable"] = original_bytes(letter) is not None and original_key(letter)[0]
        if args.json:
            print(json.dumps(row, default=str))
        else:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(letter.get("dead_lettered_at") or 0)))
            state = ("replayed" if row["replayed"] else "replaying" if row["replaying"]
                     else "-" if row["replayable"] else "not replayable")
            print(f"{row['id']}  {at}Z  {state:<14}  {str(row['reason'])[:160]}")
    if not args.json:
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    letters = collect()
    missing = [i for i in args.id if i not in letters]
    if missing:
        print(f"no dead letter with id {', '.join(missing)}", file=sys.stderr)
        return 2
    failed = 0
    for lid in dict.fromkeys(args.id):
        letter = letters[lid]
        raw, (key_kept, key) = original_bytes(letter), original_key(letter)
        if raw is None or not key_kept:
            print(f"{lid}: the letter kept only a preview of the original; cannot replay it", file=sys.stderr)
            failed += 1
            continue
        token, earlier = dead_letter_replays.claim(lid, {"event_id": letter.get("event_id"),
                                                         "reason": letter.get("reason")},
                                                   stale_s=kafka_io.send_wait_s())
        if token is None and not args.force:
            if dead_letter_replays.state(earlier) == dead_letter_replays.REPLAYING:
                print(f"{lid}: being replayed since {earlier.get('claimed_at')}; skipped (--force to send it again)")
            else:
                print(f"{lid}: already replayed at {earlier.get('replayed_at')}; skipped (--force to send it again)")
            continue
        topic = letter.get("topic") or get_settings().ratings_topic
        if letter.get("event_id"):  # it can be processed again: its status is pending, not dead_letter
            cancellation.forget_dead_letter(letter["event_id"])
        try:
            meta = kafka_io.publish_raw(topic, raw, key=key)
        except kafka_io.PublishError as exc:
            if letter.get("event_id"):
                cancellation.note_dead_letter(letter["event_id"])
            if token is not None:
                dead_letter_replays.release(lid, token)
            print(f"{lid}: {exc}", file=sys.stderr)
            failed += 1
            continue
        dead_letter_replays.replayed(lid, token)  # acknowledged: until now the record said "replaying"
        print(f"{lid}: replayed to {topic}[{meta['partition']}]@{meta['offset']}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kafka_workers.dead_letters", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list dead letters with their reasons")
    p_list.add_argument("--reason", help="only letters whose reason contains this text")
    p_list.add_argument("--json", action="store_true", help="one JSON object per line")
    p_replay = sub.add_parser("replay", help="republish chosen letters' original messages")
    p_replay.add_argument("--id", action="append", required=True, help="a letter id from `list` (repeatable)")
    p_replay.add_argument("--force", action="store_true", help="replay even if it was replayed before")
    args = parser.parse_args(argv)
    return cmd_list(args) if args.command == "list" else cmd_replay(args)


if __name__ == "__main__":
    raise SystemExit(main())
