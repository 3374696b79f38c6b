"""Celery application: periodic refresh of the site's lists and re-scoring after a new model.

    celery -A kafka_workers.celery_app worker -B -Q celery -n default@%h -l info   # beat + the periodic tasks
    celery -A kafka_workers.celery_app worker -Q rescore -n rescore@%h -l info     # re-scoring only

Redis (``REDIS_URL``) is the broker. The Kafka workers keep each user's list current per event;
Celery does what is not tied to one event: popular and trending lists per category, and, when the
batch pipeline publishes a model (a new ``CURRENT``), re-scoring recently active users; and two
sweeps, of unfinished account erasures and of expired API tokens (the one task that uses Django).

Two workers, two queues: a re-scoring can run for hours (``RESCORE_TIME_LIMIT_S``), and in the one
queue the periodic refreshes waited behind it, so trending and popular went stale for hours after
every model publish. ``rescore_active_users`` goes to ``RESCORE_QUEUE``, consumed by a worker of its
own; everything else (what beat sends) to ``DEFAULT_QUEUE``. Beat runs in the default one only. A
worker started without ``-Q`` consumes both queues (the old single-worker setup still works, with
the old head-of-line wait).
"""
from __future__ import annotations


from celery import Celery
from kombu import Exchange, Queue

from core.settings import TASK_TIME_LIMIT_S, get_settings
from kafka_workers.celery_config import read_config

# Redis hands an unacknowledged task to another worker after the visibility timeout; with late
# acks a task still running then would run twice. Every task's hard time limit is below it
# (TASK_TIME_LIMIT_S, core/settings.py: an hour; RESCORE_TIME_LIMIT_S for the long one), so no task
# can still be running when that happens: read_config refuses a visibility timeout that is not.
CONFIG = read_config()

DEFAULT_QUEUE = "celery"  # Celery's default name: what an older worker or producer uses too
RESCORE_QUEUE = "rescore"
RESCORE_TASK = "kafka_workers.tasks.rescore_active_users"


def _every(task: str, period_s: float) -> dict:
    """A beat entry that runs ``task`` every ``period_s``, each copy expiring after one period.

    Beat sends on the clock whether or not the last copy has run. When a refresh takes longer than
    its period (a week of ratings to rank; the worker busy or stopped), the copies would pile up in
    Redis and run one after another, each redoing the same work, long after it mattered; an expired
    copy is dropped by the worker instead, and the next one is at most a period away.
    """
    return {"task": task, "schedule": period_s, "options": {"expires": period_s}}


app = Celery("amazon_recommender", broker=get_settings().redis_url, include=["kafka_workers.tasks"])
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,  # a task interrupted by a crash runs again; every task here is idempotent
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": CONFIG.visibility_timeout_s},
    task_time_limit=TASK_TIME_LIMIT_S,
    timezone="UTC",
    # Each queue with its own exchange and routing key, so a routing key names one queue (a bare
    # Queue("rescore") is bound to the default exchange under the key "celery", like the default queue).
    task_queues=(Queue(DEFAULT_QUEUE, Exchange(DEFAULT_QUEUE), routing_key=DEFAULT_QUEUE),
                 Queue(RESCORE_QUEUE, Exchange(RESCORE_QUEUE), routing_key=RESCORE_QUEUE)),
    task_default_queue=DEFAULT_QUEUE,
    task_routes={RESCORE_TASK: {"queue": RESCORE_QUEUE}},
    beat_schedule={
        "refresh-popular": _every("kafka_workers.tasks.refresh_popular", CONFIG.popular_refresh_s),
        "refresh-trending": _every("kafka_workers.tasks.refresh_trending", CONFIG.trending_refresh_s),
        "check-model": _every("kafka_workers.tasks.check_model", CONFIG.model_check_s),
        "finish-erasures": _every("kafka_workers.tasks.finish_erasures", CONFIG.erasure_sweep_s),
        "delete-expired-tokens": _every("kafka_workers.tasks.delete_expired_tokens", CONFIG.token_sweep_s),
    },
    beat_schedule_filename=str(get_settings().local_dir / "celerybeat-schedule"),
)
