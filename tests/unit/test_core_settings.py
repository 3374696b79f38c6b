from __future__ import annotations

import time

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


def test_knobs_parse_blank_as_unset_and_name_the_variable_in_errors(monkeypatch):
    from core.env import env_bool, env_float, env_int, env_str

    monkeypatch.setenv("SOME_KNOB", "  ")
    assert env_str("SOME_KNOB", "d") == "d" and env_int("SOME_KNOB", 7) == 7 and env_bool("SOME_KNOB", True)
    monkeypatch.setenv("SOME_KNOB", "2e6")
    assert env_int("SOME_KNOB", 0) == 2_000_000 and env_float("SOME_KNOB", 0.0) == 2e6
    for bad, reader in (("1.5", env_int), ("ten", env_int), ("ten", env_float), ("maybe", env_bool)):
        monkeypatch.setenv("SOME_KNOB", bad)
        with pytest.raises(ValueError, match=f"SOME_KNOB must be .*'{bad}'"):
            reader("SOME_KNOB", 0)
    monkeypatch.setenv("SOME_KNOB", "Off")
    assert env_bool("SOME_KNOB", True) is False


def test_knobs_refuse_what_parses_but_cannot_work(monkeypatch):
    """nan and inf are floats, and a zero or negative count or period parses too: each would pass
    through silently (empty lists, a beat schedule firing without pause); each stops the program."""
    from core.env import env_float, env_int

    for bad in ("nan", "inf", "-inf"):
        monkeypatch.setenv("SOME_KNOB", bad)
        with pytest.raises(ValueError, match="SOME_KNOB must be a finite number"):
            env_float("SOME_KNOB", 1.0)
    monkeypatch.setenv("SOME_KNOB", "0")
    with pytest.raises(ValueError, match="SOME_KNOB must be at least 1"):
        env_int("SOME_KNOB", 5, minimum=1)
    assert env_int("SOME_KNOB", 5, minimum=0) == 0
    for name, value in (("RECS_TOP_N", "0"), ("KAFKA_RATINGS_PARTITIONS", "0"), ("MONGO_PORT", "abc")):
        monkeypatch.delenv("MONGO_URI", raising=False)
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=name):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_the_worker_and_its_health_check_read_one_poll_interval(monkeypatch):
    from kafka_workers import config, metrics

    monkeypatch.setenv("WORKER_MAX_POLL_INTERVAL_MS", "4000")
    monkeypatch.setattr(metrics, "_last_turn", time.monotonic() - 3.0)
    assert config.max_poll_interval_ms() == 4000 and metrics.healthy()[0]
    monkeypatch.setenv("WORKER_MAX_POLL_INTERVAL_MS", "2000")
    assert not metrics.healthy()[0]
