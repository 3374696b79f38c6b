"""bench/worker_trace.py's summary: which wait a rating had before its batch, and its batch's commands."""
import json

from bench import worker_trace


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_tells_a_busy_worker_from_an_idle_one(tmp_path):
    trace = tmp_path / "worker-1.jsonl"
    _write(trace, [
        # another user's batch 100.000-100.010; ours was made at 100.004 and waited for it
        {"kind": "batch", "t0": 100.000, "t1": 100.010, "ts": [99.998], "users": ["bg-1"]},
        {"kind": "command", "name": "insert", "collection": "event_claims", "t0": 100.001, "us": 5000, "ok": True},
        {"kind": "batch", "t0": 100.011, "t1": 100.019, "ts": [100.004], "users": ["bench-user-1"]},
        {"kind": "command", "name": "insert", "collection": "event_claims", "t0": 100.012, "us": 600, "ok": True},
        {"kind": "command", "name": "update", "collection": "recommendations", "t0": 100.015, "us": 900, "ok": True},
        # made at 101.000 with nothing running: 2 ms of Kafka
        {"kind": "batch", "t0": 101.002, "t1": 101.008, "ts": [101.000], "users": ["bench-user-2"]},
        {"kind": "command", "name": "insert", "collection": "event_claims", "t0": 101.003, "us": 400, "ok": True},
        # two events in one batch: not a one-event batch, left out
        {"kind": "batch", "t0": 102.000, "t1": 102.020, "ts": [101.990, 101.995], "users": ["bench-user-3", "bg-2"]},
    ])
    s = worker_trace.summary(trace, lambda user: not user.startswith("bg-"))
    assert s["events"] == 5 and s["batches"] == 4
    assert s["measured_batches"] == 2 and s["measured_in_shared_batches"] == 1
    assert s["pickup_busy_ms"]["p99"] is None  # one value tells no p99
    assert s["pickup_busy_ms"]["n"] == 1 and abs(s["pickup_busy_ms"]["p50"] - 7.0) < 1e-6
    assert s["pickup_idle_ms"]["n"] == 1 and abs(s["pickup_idle_ms"]["p50"] - 2.0) < 1e-6
    claims = s["commands_ms"]["insert event_claims"]
    assert claims["share_of_batches"] == 1.0
    assert abs(claims["p50"] - 0.5) < 1e-9  # 0.6 and 0.4; not the other user's 5 ms
    assert s["commands_ms"]["update recommendations"]["share_of_batches"] == 0.5
    assert s["sequences"][0]["share"] == 0.5
    assert abs(s["busy_share"] - (0.010 + 0.008 + 0.006 + 0.020) / 2.020) < 1e-3


def test_summary_of_an_empty_trace(tmp_path):
    trace = tmp_path / "worker-2.jsonl"
    trace.write_text("")
    assert worker_trace.summary(trace, lambda user: True) == {}


def test_summary_says_what_an_idle_worker_was_doing(tmp_path):
    trace = tmp_path / "worker-3.jsonl"
    _write(trace, [
        {"kind": "span", "name": "poll", "t0": 99.9, "t1": 100.003},
        # made in a poll at 100.001, picked up 2 ms later
        {"kind": "batch", "t0": 100.003, "t1": 100.008, "ts": [100.001], "users": ["bench-user-1"]},
        {"kind": "span", "name": "finish", "t0": 100.009, "t1": 100.012},
        {"kind": "span", "name": "commit", "t0": 100.012, "t1": 100.014},
        {"kind": "span", "name": "poll", "t0": 100.014, "t1": 100.016},
        # made in the finish at 100.010, waited 6 ms; made between spans at 100.0085, waited 9.5 ms
        {"kind": "batch", "t0": 100.016, "t1": 100.020, "ts": [100.010], "users": ["bench-user-2"]},
        {"kind": "batch", "t0": 100.021, "t1": 100.025, "ts": [100.0085], "users": ["bench-user-3"]},
    ])
    s = worker_trace.summary(trace, lambda user: True)
    by = s["pickup_idle_by_activity_ms"]
    assert by["poll"]["n"] == 1 and abs(by["poll"]["p50"] - 2.0) < 1e-6
    assert by["finish"]["n"] == 1 and abs(by["finish"]["p50"] - 6.0) < 1e-6
    assert by["other"]["n"] == 1 and abs(by["other"]["p50"] - 12.5) < 1e-6
    assert "commit" not in by


def test_summary_tells_a_poll_that_returned_another_users_event_first(tmp_path):
    trace = tmp_path / "worker-4.jsonl"
    _write(trace, [
        {"kind": "span", "name": "poll", "t0": 99.9, "t1": 100.002},
        # ours was made at 100.001, in that poll, but the poll returned another user's event first
        {"kind": "batch", "t0": 100.002, "t1": 100.007, "ts": [100.0005], "users": ["bg-1"]},
        {"kind": "span", "name": "poll", "t0": 100.007, "t1": 100.0075},
        {"kind": "batch", "t0": 100.0075, "t1": 100.012, "ts": [100.001], "users": ["bench-user-1"]},
        # made at 100.013 in a poll that returned it: 2 ms of Kafka
        {"kind": "span", "name": "poll", "t0": 100.012, "t1": 100.015},
        {"kind": "batch", "t0": 100.015, "t1": 100.020, "ts": [100.013], "users": ["bench-user-2"]},
    ])
    s = worker_trace.summary(trace, lambda user: not user.startswith("bg-"))
    by = s["pickup_idle_by_activity_ms"]
    assert by["poll"]["n"] == 1 and abs(by["poll"]["p50"] - 2.0) < 1e-6
    other_first = by["poll, another batch first"]
    assert other_first["n"] == 1 and abs(other_first["p50"] - 6.5) < 1e-6
