from __future__ import annotations

import pytest

from core.settings import Settings


def test_defaults_follow_the_service_ports(monkeypatch):
    for name in ("MONGO_URI", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MONGO_PORT", "27101")
    monkeypatch.setenv("KAFKA_PORT", "9201")
    monkeypatch.setenv("REDIS_PORT", "6401")
    s = Settings.from_env()
    assert s.mongo_uri == "mongodb://127.0.0.1:27101/"
    assert s.kafka_bootstrap_servers == "127.0.0.1:9201"
    assert s.redis_url == "redis://127.0.0.1:6401/0"


def test_explicit_uri_wins_and_bad_integers_fail_loudly(monkeypatch):
    monkeypatch.setenv("MONGO_URI", "mongodb://db.internal:27017/")
    monkeypatch.setenv("RECS_TOP_N", "ten")
    with pytest.raises(ValueError, match="RECS_TOP_N"):
        Settings.from_env()
    monkeypatch.setenv("RECS_TOP_N", "10")
    s = Settings.from_env()
    assert s.mongo_uri == "mongodb://db.internal:27017/" and s.top_n == 10
