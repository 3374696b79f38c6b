"""The published model version (``CURRENT`` in the model store), read at most once a second.

Three readers follow ``CURRENT`` all the time: the reload pointers (``core.mongo``: a version's
serving lists), the worker's model (``kafka_workers.model_holder``) and the keys of the list
versions in Redis (``core.list_state``); Celery's model check and re-scoring
(``kafka_workers.tasks``) and the admin's "current" column read it too. They share this one cache
(which a caller told to check now skips, ``fresh=True``) and its one error policy,
because the model store can be remote (``ARTIFACTS_DIR=s3a://...``) and so unreachable:

- a read that fails after one succeeded keeps the last known version (logged): a worker keeps
  serving the model it has, and the writes go on;
- a store never read yet is an outage (:class:`ModelStoreUnreachable`): nothing that depends on
  the version can be done, so the worker waits it out like a MongoDB outage instead of blaming
  (and dead-lettering) the message in hand.
"""
from __future__ import annotations

import logging
import time

from core import artifacts
from core.settings import get_settings

log = logging.getLogger(__name__)

CHECK_S = 1.0  # how long a process trusts the version it read
_read: dict[str, tuple[str | None, float]] = {}  # artifacts folder -> (version, read at)


class ModelStoreUnreachable(ConnectionError):
    """The model store cannot be read and this process has never read ``CURRENT``."""


def current_version(fresh: bool = False) -> str | None:
    """The published version (None: nothing published), read again after ``CHECK_S``, or now if
    ``fresh`` (a caller told to check now, as the worker's ``ModelHolder.refresh(force=True)``)."""
    where, now = str(get_settings().artifacts_dir), time.monotonic()
    hit = _read.get(where)
    if not fresh and hit is not None and now - hit[1] < CHECK_S:
        return hit[0]
    try:
        version = artifacts.current_version()
    except OSError as exc:  # FileNotFoundError (nothing published) is None already
        if hit is None:
            raise ModelStoreUnreachable(f"model store {where} unreachable: {exc}") from exc
        log.warning("CURRENT not read from %s (%s: %s); keeping version %s", where, exc.__class__.__name__,
                    str(exc)[:200], hit[0])
        version = hit[0]
    _read[where] = (version, now)
    return version


def forget() -> None:
    """Read ``CURRENT`` again at the next call (after a publish this process made, and in tests)."""
    _read.clear()
