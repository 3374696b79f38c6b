"""A worker's /readyz: its /healthz stayed 200 while Kafka was down (poll() returns nothing every
200 ms and the loop turns as ever), so nothing told an operator that no rating was consumed.
/readyz and the gauge recommender_worker_broker_connected say whether the broker answers the
consumer (its last heartbeat answer, within WORKER_READY_BROKER_S), and the topic it subscribes to
exists (a member of a missing topic heartbeats as well, and consumes nothing)."""
from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer

from kafka_workers import metrics
from kafka_workers.consumer import last_broker_contact
from kafka_workers.topic_check import topic_exists


def _get(path: str) -> tuple[str, bytes]:
    answer = {}
    body = b"".join(metrics.app({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                                lambda status, headers: answer.setdefault("status", status)))
    return answer["status"], body


@pytest.fixture
def broker(monkeypatch):
    """``broker.answered`` is the wall time the broker last answered (None: never)."""
    monkeypatch.setenv("WORKER_READY_BROKER_S", "30")
    state = type("Broker", (), {"answered": None})()
    metrics.watch_broker(lambda: state.answered)
    metrics.topic_checked("ratings", True)
    metrics.loop_turned()
    yield state
    metrics.watch_broker(lambda: None)
    metrics.topic_checked("ratings", None)


def _connected_gauge() -> float:
    _, body = _get("/metrics")
    line = next(x for x in body.decode().splitlines() if x.startswith("recommender_worker_broker_connected "))
    return float(line.split()[1])


def test_ready_while_the_broker_answers(broker):
    broker.answered = time.time() - 2
    status, body = _get("/readyz")
    assert status.startswith("200") and json.loads(body)["status"] == "ready"
    assert _connected_gauge() == 1.0


def test_not_ready_once_the_broker_is_silent_though_the_loop_turns(broker):
    broker.answered = time.time() - 45
    status, body = _get("/readyz")
    assert status.startswith("503")
    answer = json.loads(body)
    assert answer["status"] == "no-broker" and answer["broker_answered_s_ago"] >= 45
    assert _get("/healthz")[0].startswith("200")  # alive: a restart would not bring Kafka back
    assert _connected_gauge() == 0.0
    broker.answered = None  # never answered (joining the group)
    assert _get("/readyz")[0].startswith("503") and _connected_gauge() == 0.0


def test_the_consumers_last_heartbeat_answer_is_read_from_kafka_python():
    """kafka-python keeps it only in its heartbeat record (its metrics are off here): read from a
    consumer of the pinned version, which must not connect to be made (api_version given)."""
    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="readiness-test", api_version=(2, 5, 0),
                             metrics_enabled=False)
    try:
        assert last_broker_contact(consumer) is None  # never answered
        consumer._coordinator.heartbeat.received_heartbeat()  # what an answered heartbeat does
        assert abs(last_broker_contact(consumer) - time.time()) < 60
    finally:
        consumer.close(autocommit=False)
    assert last_broker_contact(object()) is None  # another kafka-python: never ready rather than always


def test_not_ready_while_the_topic_does_not_exist_though_the_broker_answers(broker):
    broker.answered = time.time() - 2
    metrics.topic_checked("ratings", False)
    status, body = _get("/readyz")
    answer = json.loads(body)
    assert status.startswith("503") and answer["status"] == "no-topic"
    assert (answer["topic"], answer["topic_exists"]) == ("ratings", False)
    assert _connected_gauge() == 1.0  # the broker's part
    metrics.topic_checked("ratings", None)  # not looked at yet (the loop does once the broker answers)
    status, body = _get("/readyz")
    assert status.startswith("503") and json.loads(body)["status"] == "starting"
    assert metrics.topic_checked("ratings", True) is None  # what was known before


class _Cluster:
    """kafka-python's metadata cache as topic_exists reads it (a unit test below holds the names)."""

    def __init__(self, partitions, refreshed_ms):
        self.partitions, self._last_successful_refresh_ms, self.asked = partitions, refreshed_ms, 0

    def partitions_for_topic(self, topic):
        return self.partitions.get(topic)  # None: not in the metadata

    def request_update(self):
        self.asked += 1


def _consumer(cluster, assigned=()):
    def blocking(self, topic):
        raise AssertionError("asked the broker and waited: a broker down froze the consume loop")
    return type("Consumer", (), {"_client": type("Client", (), {"cluster": cluster})(),
                                 "assignment": lambda self: set(assigned), "partitions_for_topic": blocking,
                                 "topics": blocking})()


def test_the_topic_is_read_from_the_metadata_cache_never_waited_for():
    """More members than partitions leave some idle (no assignment alone is no missing topic); a
    member keeps its partitions of a deleted topic until the leader rebalances (an assignment is no
    sign that it exists); and the broker is never waited for (kafka-python's partitions_for_topic
    waits without a limit: a broker down froze the loop, and SIGTERM)."""
    assert topic_exists(_consumer(_Cluster({"ratings": {0, 1}}, 5.0)), "ratings", 0.0) is True  # idle member
    deleted = _Cluster({}, 5.0)
    assert topic_exists(_consumer(deleted, assigned={("ratings", 0)}), "ratings", 0.0) is False
    assert topic_exists(_consumer(_Cluster({}, 5.0)), "ratings", 9.0) is None  # not refreshed since asked
    assert topic_exists(type("Consumer", (), {})(), "ratings", 0.0) is None  # another kafka-python: not known


def test_the_loop_asks_for_metadata_once_answered_at_once_while_missing_else_now_and_then(monkeypatch):
    from kafka_workers.topic_check import check_topic

    missing = _Cluster({}, 5.0)
    asked = check_topic(_consumer(missing), "ratings", 0.0)
    assert missing.asked == 1 and asked > 5.0  # answered since: ask again, at once
    assert check_topic(_consumer(missing), "ratings", asked) == asked and missing.asked == 1  # in flight
    present = _Cluster({"ratings": {0}}, 5.0)
    now_ms = __import__("time").time() * 1000
    assert check_topic(_consumer(present), "ratings", now_ms - 1000) == now_ms - 1000 and present.asked == 0
    assert check_topic(_consumer(present), "ratings", 1.0) > 5.0 and present.asked == 1  # TOPIC_REFRESH_S on
    metrics.topic_checked("ratings", None)


def test_kafka_python_keeps_the_metadata_cache_where_topic_exists_reads_it():
    import inspect

    from kafka import KafkaConsumer
    from kafka.cluster import ClusterMetadata

    cluster = ClusterMetadata()
    assert cluster._last_successful_refresh_ms == 0 and cluster.partitions_for_topic("ratings") is None
    assert callable(cluster.request_update)
    assert "self._client = " in inspect.getsource(KafkaConsumer.__init__)
    assert ".cluster" in inspect.getsource(KafkaConsumer.partitions_for_topic)

