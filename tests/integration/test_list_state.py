"""core.list_state against the real Redis: announced versions win, Redis down is only slower."""
from __future__ import annotations

import uuid

import pytest

from core import list_state
from core.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def user(redis_url):
    return f"ls-{uuid.uuid4().hex[:10]}"


def test_remembered_version_never_hides_an_announced_one(user):
    gen = list_state.generation()
    list_state.announce(user, '"m1-1.0"')
    list_state.remember(user, '"m1-0.5"', gen)  # a page that read MongoDB just before the write
    assert list_state.current(user, gen) == '"m1-1.0"'
    list_state.announce(user, '"m1-2.0"')  # a later write always wins
    assert list_state.current(user, gen) == '"m1-2.0"'
    list_state.forget(user, gen)
    assert list_state.current(user, gen) is None
    list_state.remember(user, '"m1-2.0"', gen)
    assert list_state.current(user, gen) == '"m1-2.0"'
    assert 0 < list_state.client().ttl(list_state.key(user, gen)) <= list_state.REMEMBERED_TTL_S


def test_keys_are_per_generation_and_per_database(user, monkeypatch):
    gen = list_state.generation()
    list_state.announce(user, '"m1-1.0"')
    assert list_state.current(user, gen + "-next") is None  # a new model forgets every version
    monkeypatch.setenv("MONGO_DB", get_settings().mongo_db + "-other")
    get_settings.cache_clear()
    try:
        assert list_state.current(user, gen) is None  # another deployment on the same Redis
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert list_state.current(user, gen) == '"m1-1.0"'


def test_redis_down_costs_nothing_but_the_read(user, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    get_settings.cache_clear()
    try:
        list_state.announce(user, '"m1-1.0"')  # logged, not raised: MongoDB already has the list
        list_state.remember(user, '"m1-1.0"', 0)
        list_state.forget(user, 0)
        assert list_state.current(user, 0) is None
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_version_of_matches_what_the_site_sends_as_etag():
    assert list_state.version_of(None) == list_state.NO_LIST
    assert list_state.version_of({"items": []}) == list_state.NO_LIST
    assert list_state.version_of({"items": [{}], "model_version": "v3", "updated_at": 12.5}) == '"v3-12.5"'
