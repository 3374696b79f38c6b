"""Celery's routing: the hours-long re-scoring goes to a queue of its own, so the periodic refreshes
(in the default queue, with beat) never wait behind it. No broker needed: the router is what
``apply_async`` / ``send_task`` ask for a task's queue.

The queue names are written out: the workers' command lines (``-Q celery``, ``-Q rescore`` in
services/programs.py and docker/docker-compose.yml) depend on them.
"""
from __future__ import annotations

from kafka_workers import tasks
from kafka_workers.celery_app import app


def _queue(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_rescore_goes_to_its_own_queue():
    assert _queue(tasks.rescore_active_users.name) == "rescore"


def test_every_periodic_task_goes_to_the_default_queue():
    periodic = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert periodic == {tasks.refresh_popular.name, tasks.refresh_trending.name, tasks.check_model.name,
                        tasks.finish_erasures.name, tasks.delete_expired_tokens.name}
    for name in periodic:
        assert _queue(name) == "celery", name


def test_each_queue_has_its_own_routing_key():
    """A routing key names one queue: the re-score worker (``-Q rescore``) gets nothing else."""
    queues = app.amqp.queues
    assert set(queues) == {"celery", "rescore"}
    assert queues["rescore"].routing_key != queues["celery"].routing_key


def test_every_periodic_copy_expires_after_one_period():
    """Beat sends on the clock: a refresh slower than its period, or a stopped worker, would leave
    copies piling up in Redis, each redoing the same work when it finally runs. Each copy expires
    after its period (the worker drops it), and beat passes an entry's options to apply_async."""
    from celery.beat import ScheduleEntry

    for name, entry in app.conf.beat_schedule.items():
        sent = ScheduleEntry(name=name, app=app, **entry)
        assert 0 < sent.options["expires"] <= entry["schedule"], name


def test_expired_tokens_are_swept_every_api_token_sweep_s():
    """The sweep's period is ``API_TOKEN_SWEEP_S`` (an hour by default), read when the app is made:
    checked in a fresh interpreter with the variable set."""
    import os
    import subprocess
    import sys

    from kafka_workers.celery_app import CONFIG

    assert app.conf.beat_schedule["delete-expired-tokens"]["schedule"] == CONFIG.token_sweep_s
    assert app.conf.beat_schedule["delete-expired-tokens"]["task"] == tasks.delete_expired_tokens.name
    read = subprocess.run([sys.executable, "-c", "from kafka_workers.celery_app import app; "
                           "print(app.conf.beat_schedule['delete-expired-tokens']['schedule'])"],
                          env={**os.environ, "API_TOKEN_SWEEP_S": "120"}, capture_output=True, text=True, check=True)
    assert read.stdout.split() == ["120.0"], read.stdout
