"""A dead letter's replay killed between its record and its send (``kill -9`` of the command) must
not read as replayed: the record says "replaying" until Kafka acknowledged the send, and a later
replay sends the letter (core/dead_letter_replays.py). Real MongoDB-protocol server and Kafka; the
kill is a real SIGKILL of the command, at the moment it would send.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from core import dead_letter_replays, kafka_io, mongo
from core.events import RatingEvent
from kafka_workers.dead_letters import dead_letter_payload
from realtime_support import ROOT, process_env, read_topic, wait_until
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

# the replay command, killed (SIGKILL, as an OOM kill or a lost host would) when it is about to send
KILLED_AT_THE_SEND = """
import os, signal, sys
from core import kafka_io
from kafka_workers import dead_letters
kafka_io.publish_raw = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(dead_letters.main(sys.argv[1:]))
"""


def _dead_letters(*args: str, script: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *(script or ["-m", "kafka_workers.dead_letters"]), *args], cwd=ROOT,
                          env=process_env(), capture_output=True, text=True, timeout=120)


def _listed(lid: str) -> dict:
    rows = [json.loads(line) for line in _dead_letters("list", "--json").stdout.splitlines() if line.strip()]
    return {r["id"]: r for r in rows}[lid]


def test_a_replay_killed_before_its_send_is_not_replayed_and_the_next_replay_sends_it(rt):
    event = RatingEvent(user_id="rt-dlr-killed", product_id=rt.catalog.in_model[0], rating=4)
    letter = dead_letter_payload(event.to_bytes(), "LinAlgError: Singular matrix", rt.topic, 0, 7,
                                 key=event.user_id.encode(), event_id=event.event_id, attempts=3)
    kafka_io.publish_json(rt.dead_letter_topic, letter, key=event.user_id.encode())
    lid = letter["id"]

    killed = _dead_letters("replay", "--id", lid, script=["-c", KILLED_AT_THE_SEND])
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    row = _listed(lid)
    assert not row["replayed"], "a replay killed before its send reads as replayed"
    assert row["replaying"]

    # a later replay (once the killed one's send would have timed out) sends it, once
    again = wait_until(lambda: (r := _dead_letters("replay", "--id", lid)) and "replayed to" in r.stdout and r, 60,
                       "a later replay to send the letter")
    assert again.returncode == 0, again.stdout + again.stderr
    sent = read_topic(rt.topic, 1, timeout_s=30)
    assert [(r.key, r.value) for r in sent] == [(event.user_id.encode(), event.to_bytes())]
    assert _listed(lid)["replayed"]
    done = _dead_letters("replay", "--id", lid)
    assert done.returncode == 0 and "already replayed" in done.stdout, done.stdout + done.stderr


def test_a_replay_taken_over_leaves_the_record_of_the_one_that_took_it(rt):
    """Replay A's send outlasted ``stale_s``; replay B took its record over and sent the letter.
    A's send then failed, and its release deleted B's record; B's ack recorded nothing, and the
    letter read as never replayed (the next replay sent it a third time)."""
    db, lid = mongo.get_db(), "rt-dlr-taken-over:0:1"
    db[mongo.DEAD_LETTER_REPLAYS].delete_one({"_id": lid})
    a, _ = dead_letter_replays.claim(lid, {"event_id": "e1"}, stale_s=30.0)
    assert a is not None
    db[mongo.DEAD_LETTER_REPLAYS].update_one({"_id": lid}, {"$inc": {"claimed_at": -31.0}})  # A's send is slow
    b, earlier = dead_letter_replays.claim(lid, {"event_id": "e1"}, stale_s=30.0)
    assert b is not None and earlier is None, "B did not take the stale record over"
    dead_letter_replays.release(lid, a)  # A's send failed after all
    assert dead_letter_replays.state(dead_letter_replays.get(lid)) == dead_letter_replays.REPLAYING
    dead_letter_replays.replayed(lid, a)  # (or A's ack came late: the record stays B's)
    assert dead_letter_replays.state(dead_letter_replays.get(lid)) == dead_letter_replays.REPLAYING
    dead_letter_replays.replayed(lid, b)  # B's send acknowledged
    assert dead_letter_replays.state(dead_letter_replays.get(lid)) == dead_letter_replays.REPLAYED
    assert dead_letter_replays.claim(lid, {"event_id": "e1"}, stale_s=30.0)[0] is None
    db[mongo.DEAD_LETTER_REPLAYS].delete_one({"_id": lid})
