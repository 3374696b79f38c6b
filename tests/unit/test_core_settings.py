from __future__ import annotations

import os
import subprocess
import sys
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


def test_jvm_sizes_are_checked_as_spark_reads_them(monkeypatch):
    """A size handed to Spark (SPARK_EXECUTOR_MEMORY, SPARK_MAX_PARTITION_BYTES) failed in a JVM
    trace that never named the variable; it is checked where it is read."""
    from core.env import env_jvm_size

    assert env_jvm_size("SOME_SIZE", "1g") == "1g"
    for good in ("512m", "4G", "134217728", "1gb", "64k", "100b"):
        monkeypatch.setenv("SOME_SIZE", good)
        assert env_jvm_size("SOME_SIZE", "1g") == good
    for bad in ("0", "0m", "1.5g", "-1g", "512 m", "four", "4x", "g"):
        monkeypatch.setenv("SOME_SIZE", bad)
        with pytest.raises(ValueError, match=f"SOME_SIZE must be a JVM size above 0 .*'{bad}'"):
            env_jvm_size("SOME_SIZE", "1g")


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


def test_a_list_knob_names_its_variable_and_refuses_what_cannot_work(monkeypatch):
    from core.env import env_floats

    monkeypatch.setenv("SOME_GRID", " ")
    assert env_floats("SOME_GRID", (50, 100)) == [50.0, 100.0]
    monkeypatch.setenv("SOME_GRID", "1, 2.5,1e3")
    assert env_floats("SOME_GRID", (50,), minimum=0) == [1.0, 2.5, 1000.0]
    for bad in ("nan", "50,inf", "50,,100", "ten", ","):
        monkeypatch.setenv("SOME_GRID", bad)
        with pytest.raises(ValueError, match="SOME_GRID must be comma-separated finite numbers"):
            env_floats("SOME_GRID", (50,))
    monkeypatch.setenv("SOME_GRID", "50,-1")
    with pytest.raises(ValueError, match="SOME_GRID must be at least 0"):
        env_floats("SOME_GRID", (50,), minimum=0)


# (variable, a value it refused to work with but was quietly raised to its floor, its reader)
WORKER_KNOBS_BELOW_THEIR_MINIMUM = [
    ("WORKER_MAX_POLL_INTERVAL_MS", "10", "max_poll_interval_ms"),
    ("WORKER_BATCH_MAX", "0", "batch_max"),
    ("WORKER_COMMIT_EVERY_MS", "-1", "commit_every_s"),
    ("WORKER_REMEMBER_CATALOG_MAX", "-1", "remember_catalog_max"),
    ("WORKER_MAX_ATTEMPTS", "0", "max_attempts"),
    ("WORKER_RETRY_DELAY_S", "-0.5", "retry_delay_s"),
    ("WORKER_READY_BROKER_S", "0.5", "ready_broker_s"),
]


@pytest.mark.parametrize("name, value, reader", WORKER_KNOBS_BELOW_THEIR_MINIMUM)
def test_a_worker_knob_below_its_minimum_stops_the_worker_instead_of_being_changed(monkeypatch, name, value, reader):
    """WORKER_BATCH_MAX=0 was read as 1, WORKER_MAX_POLL_INTERVAL_MS=10 as 1000: the worker ran with
    a value nobody set. And it stops at its start, not at the first message that fails."""
    from kafka_workers import config, worker

    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name} must be at least"):
        getattr(config, reader)()

    def started(*args, **kwargs):
        raise AssertionError("the worker started with a knob that cannot work")

    monkeypatch.setattr(worker, "threadpool_limits", started)  # run()'s first step after the check
    with pytest.raises(ValueError, match=name):
        worker.run()


def test_the_dashboard_refuses_zero_workers(monkeypatch):
    from core import freshness

    monkeypatch.delenv("WORKER_METRICS_URLS", raising=False)
    monkeypatch.setenv("WORKER_METRICS_PORT", "19410")  # off, there are no workers to count
    monkeypatch.setenv("WORKERS", "0")
    with pytest.raises(ValueError, match="WORKERS must be at least 1"):
        freshness.worker_urls()


@pytest.mark.parametrize("name, value", [("EASE_LAMBDAS", "nan"), ("EASE_LAMBDAS", "50,,100"),
                                         ("EASE_LAMBDAS", "-5"), ("EASE_LAMBDAS", "0,100"), ("SPARK_GRID_SIZE", "0")])
def test_train_refuses_a_grid_that_cannot_work_naming_the_variable(name, value):
    """spark_jobs.engines reads them at import (in a fresh interpreter here, so no module is left
    half-imported): a bare float() said "could not convert string to float: ''" and took nan."""
    env = {**os.environ, name: value, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", "import spark_jobs.engines"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and f"environment variable {name} must be" in done.stderr, done.stderr[-500:]
