"""bench/kafka_hop.py's reading of the broker's request log."""
import json

from bench import kafka_hop


def _line(topic: str, api: str, total: float, local: float) -> str:
    body = {"isForwarded": False,
            "requestHeader": {"requestApiKey": 0, "clientId": "amazon-recommender", "requestApiKeyName": api},
            "request": {"acks": -1, "topicData": [{"name": topic, "partitionData": [{"index": 2}]}]},
            "totalTimeMs": total, "requestQueueTimeMs": 0.1, "localTimeMs": local, "remoteTimeMs": 0.0,
            "responseQueueTimeMs": 0.05, "sendTimeMs": 0.2}
    return f"[2026-12-03 19:59:12,171] DEBUG Completed request:{json.dumps(body)} (kafka.request.logger)\n"


def test_broker_produce_times_keeps_the_runs_produce_requests_only():
    lines = [
        _line("bench-hop-a", "PRODUCE", 1.0, 0.5),
        _line("bench-hop-a", "PRODUCE", 3.0, 2.5),
        _line("bench-hop-a", "PRODUCE", 2.0, 1.5),
        _line("bench-hop-b", "PRODUCE", 90.0, 80.0),  # another topic
        _line("bench-hop-a", "FETCH", 50.0, 0.1),  # not a produce
        "[2026-12-03 19:59:12,171] INFO something else (kafka.server)\n",
    ]
    times = kafka_hop.broker_produce_times(lines, "bench-hop-a")
    assert times["totalTimeMs"]["n"] == 3
    assert times["totalTimeMs"]["p50"] == 2.0
    assert times["localTimeMs"]["p50"] == 1.5
    assert kafka_hop.broker_produce_times(lines, "bench-hop-c") == {}


def test_lines_since_reads_across_a_rotation(tmp_path):
    log = tmp_path / "kafka.log"
    log.write_text("before\n")
    mark = kafka_hop.log_mark(log)
    with log.open("a") as f:
        f.write("one\n")
    assert kafka_hop.lines_since(log, mark) == ["one\n"]
    log.rename(tmp_path / "kafka.log.1")  # supervisord's rotation
    log.write_text("two\n")
    assert kafka_hop.lines_since(log, mark) == ["one\n", "two\n"]
