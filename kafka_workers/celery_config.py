"""Celery's knobs, read and checked together once, when the Celery app is made (the worker's start).

The app's options (the beat periods, the broker's visibility timeout) and a task's own limits
(the re-scoring's) must be known before Celery starts, so they cannot be read at call time like the
rating worker's (``kafka_workers.config``). Read in one place, they are checked against each other
there too: every task's hard time limit must stay below the visibility timeout, or Redis hands a
task still running to another worker, and with late acks it runs twice. A value that breaks that
stops Celery at its start, naming the variables. README lists them under "Workers and Celery".
"""
from __future__ import annotations

from dataclasses import dataclass

from core.env import env_float, env_int
from core.settings import TASK_TIME_LIMIT_S


@dataclass(frozen=True)
class CeleryConfig:
    visibility_timeout_s: int  # CELERY_VISIBILITY_TIMEOUT_S
    rescore_time_limit_s: int  # RESCORE_TIME_LIMIT_S
    popular_refresh_s: float  # POPULAR_REFRESH_S
    trending_refresh_s: float  # TRENDING_REFRESH_S
    model_check_s: float  # MODEL_CHECK_S
    # how often unfinished account erasures are finished, and how old one must be first: a
    # deletion still running on the site is left alone (kafka_workers.tasks.finish_erasures)
    erasure_sweep_s: float  # ERASURE_SWEEP_S
    # how often expired API tokens are deleted from the site's database: a device that never
    # signs in again leaves its token, which nothing else would delete
    token_sweep_s: float  # API_TOKEN_SWEEP_S


def read_config() -> CeleryConfig:
    """Every knob, each refused with its variable's name when it does not parse or is out of range."""
    config = CeleryConfig(
        visibility_timeout_s=env_int("CELERY_VISIBILITY_TIMEOUT_S", 6 * 3600, minimum=1),
        rescore_time_limit_s=env_int("RESCORE_TIME_LIMIT_S", 3 * 3600, minimum=120),
        popular_refresh_s=env_float("POPULAR_REFRESH_S", 300, minimum=1),
        trending_refresh_s=env_float("TRENDING_REFRESH_S", 60, minimum=1),
        model_check_s=env_float("MODEL_CHECK_S", 15, minimum=1),
        erasure_sweep_s=env_float("ERASURE_SWEEP_S", 600, minimum=1),
        token_sweep_s=env_float("API_TOKEN_SWEEP_S", 3600, minimum=1),
    )
    limits = {"RESCORE_TIME_LIMIT_S": config.rescore_time_limit_s,
              "every other task's limit (TASK_TIME_LIMIT_S in core/settings.py)": TASK_TIME_LIMIT_S}
    for name, limit in limits.items():
        if limit >= config.visibility_timeout_s:  # Redis would hand the running task out again
            raise ValueError(f"{name} ({limit}) must be below CELERY_VISIBILITY_TIMEOUT_S "
                             f"({config.visibility_timeout_s})")
    return config
