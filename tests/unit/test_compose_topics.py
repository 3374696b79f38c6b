"""The compose deployment creates the project's Kafka topics before anything uses them: its broker
creates none itself (KAFKA_AUTO_CREATE_TOPICS_ENABLE false, as bin/services' broker), and nothing
in the images did, so the site's first rating failed and the workers consumed nothing."""
from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "docker-compose.yml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_a_one_shot_service_creates_the_topics_once_kafka_answers():
    services = _services()
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    topics = services["topics"]
    assert "kafka_io.ensure_topics()" in " ".join(topics["command"])
    assert topics["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    # a one-shot: "unless-stopped" would run it for ever; plain "on-failure" kept a lasting failure
    # restarting, and `docker compose up` waited for its completion for ever, saying nothing
    assert topics["restart"] == "on-failure:5"


def test_everything_that_publishes_or_consumes_waits_for_the_topics():
    services = _services()
    for name in ("web", "worker", "celery", "celery-rescore"):
        assert services[name]["depends_on"].get("topics") == {"condition": "service_completed_successfully"}, name
