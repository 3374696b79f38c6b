"""What the trending integration tests share: a clean catalog, events through the worker's batch
path, and the names of the lists trending writes (tests/integration/test_trending_*.py)."""
from __future__ import annotations

import pytest

from core import mongo, trending
from core.events import RatingEvent
from realtime_support import rt_catalog, worker_env  # noqa: F401  (fixtures)


@pytest.fixture
def env(rt_catalog, worker_env):
    """The module's catalog with no live rating, history or trending state left by another test."""
    db = rt_catalog.db
    for name in (mongo.RATINGS, mongo.USER_HISTORY, mongo.EXCLUSIONS, mongo.DELETED_USERS, mongo.POPULAR):
        db[name].delete_many({})
    trending.drop_state(db.name)
    yield rt_catalog
    trending.drop_state(db.name)


def apply_batch(*events: RatingEvent) -> None:
    """The events through the worker's own path (``ratings``, the histories, the trending marks)."""
    from kafka_workers.batch import handle_batch

    outcomes = handle_batch(list(events), None)
    assert {o.status for o in outcomes} == {"processed"}, outcomes


def list_names(db) -> set[str]:
    """Every list trending writes: all products, and one per category of the catalog."""
    from core import catalog

    return {mongo.ALL, *(c["name"] for c in catalog.categories(db=db))}
