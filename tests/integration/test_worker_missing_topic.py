"""A worker subscribed to a topic that does not exist joins its group and heartbeats, and consumes
nothing: its /readyz answered 200 once the broker answered, so ``bin/services start`` reported it
started. It says ``no-topic`` now, until the topic is made. On the shared Kafka, in-process."""
from __future__ import annotations

import threading
import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from core.settings import get_settings
from kafka_workers import metrics, worker
from realtime_support import delete_topics, reset_core_caches, wait_until
from realtime_support import rt_catalog, worker_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def test_a_worker_whose_topic_does_not_exist_is_not_ready_until_it_does(rt_catalog, worker_env, monkeypatch):
    topic = f"it-missing-{uuid.uuid4().hex[:8]}.ratings"
    monkeypatch.setenv("KAFKA_RATINGS_TOPIC", topic)
    monkeypatch.setenv("KAFKA_WORKER_GROUP", f"{topic}.workers")
    reset_core_caches()
    bootstrap = get_settings().kafka_bootstrap_servers
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, "it-missing-topic"), daemon=True)
    thread.start()
    try:
        wait_until(lambda: metrics.ready()[1]["broker_answered_s_ago"] is not None, 120,
                   "the consumer to reach the broker")
        ok, body = wait_until(lambda: (r := metrics.ready())[1]["status"] in ("ready", "no-topic") and r, 60,
                              "/readyz to say whether the worker consumes")
        assert not ok and body["status"] == "no-topic", body
        assert (body["topic"], body["topic_exists"]) == (topic, False)
        status, _ = _get_readyz()
        assert status.startswith("503")

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="it-missing-topic")
        try:
            admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            admin.close()
        wait_until(lambda: metrics.ready()[0], 120, "the worker ready once its topic exists")
        assert metrics.ready()[1]["topic_exists"] is True
    finally:
        stop.set()
        thread.join(60)
        delete_topics(bootstrap, [topic])
        metrics.watch_broker(lambda: None)
        metrics.topic_checked(topic, None)
        monkeypatch.undo()
        reset_core_caches()


def _get_readyz() -> tuple[str, bytes]:
    answer = {}
    body = b"".join(metrics.app({"PATH_INFO": "/readyz", "REQUEST_METHOD": "GET"},
                                lambda status, headers: answer.setdefault("status", status)))
    return answer["status"], body
