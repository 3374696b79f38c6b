"""Celery's knobs are read and checked together when the app is made (kafka_workers.celery_config):
a value that cannot work stops Celery at its start, naming the variable. Each start is a fresh
interpreter importing the app, as ``celery -A kafka_workers.celery_app`` does."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.settings import TASK_TIME_LIMIT_S


def _start(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import kafka_workers.tasks"], env={**os.environ, **env},
                          capture_output=True, text=True)


def test_the_defaults_start():
    started = _start()
    assert started.returncode == 0, started.stderr


def test_a_visibility_timeout_not_above_the_default_tasks_limit_stops_celery():
    """With it below TASK_TIME_LIMIT_S (an hour), Redis hands a refresh still running to another
    worker, and with late acks it runs twice: only the re-scoring's limit was checked."""
    started = _start(CELERY_VISIBILITY_TIMEOUT_S=str(TASK_TIME_LIMIT_S), RESCORE_TIME_LIMIT_S="600")
    assert started.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT_S" in started.stderr and "TASK_TIME_LIMIT_S" in started.stderr, started.stderr


def test_a_rescore_limit_not_below_the_visibility_timeout_stops_celery():
    started = _start(CELERY_VISIBILITY_TIMEOUT_S="7200", RESCORE_TIME_LIMIT_S="7200")
    assert started.returncode != 0
    assert "RESCORE_TIME_LIMIT_S (7200) must be below CELERY_VISIBILITY_TIMEOUT_S (7200)" in started.stderr


@pytest.mark.parametrize("name, value", [("CELERY_VISIBILITY_TIMEOUT_S", "6h"), ("CELERY_VISIBILITY_TIMEOUT_S", "0"),
                                         ("MODEL_CHECK_S", "0"), ("ERASURE_SWEEP_S", "ten")])
def test_a_knob_that_cannot_work_stops_celery_naming_it(name, value):
    started = _start(**{name: value})
    assert started.returncode != 0
    assert f"environment variable {name} must be" in started.stderr, started.stderr
