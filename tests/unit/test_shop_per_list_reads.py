"""What a page that needs both the user's ratings and their "not interested" products reads: the
list's ETag once and the cache once for both (onboarding and the product page read each twice).

A unit test: Redis (the ETag) and MongoDB (the readers) are stand-ins that record what is asked,
the cache a local-memory one that records the calls made to it.
"""
from __future__ import annotations

from django.core.cache.backends.locmem import LocMemCache

from core import list_state, rating_history, shopper_controls
from shop import recommendations


class _Recorded:
    """A cache that records the name of each method called on it."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name: str):
        self.calls.append(name)
        return getattr(self.inner, name)


def test_ratings_and_exclusions_take_one_etag_read_and_one_cache_read(monkeypatch):
    asked: list[str] = []
    cache = _Recorded(LocMemCache("per-list-test", {}))
    monkeypatch.setattr(recommendations, "cache", cache)
    monkeypatch.setattr(recommendations, "cache_generation", lambda: "model-1")
    monkeypatch.setattr(recommendations, "catalog_revision", lambda: "0")
    monkeypatch.setattr(list_state, "current", lambda uid, generation: asked.append("etag") or '"v7"')
    monkeypatch.setattr(rating_history, "user_ratings", lambda uid: asked.append("ratings") or {"P1": 4.0})
    monkeypatch.setattr(shopper_controls, "exclusions", lambda uid: asked.append("exclusions") or {"P2"})

    assert recommendations.rated_and_excluded("u1") == ({"P1": 4.0}, {"P2"})
    assert asked == ["etag", "ratings", "exclusions"] and cache.calls == ["get_many", "set_many"]
    asked.clear()
    cache.calls.clear()
    assert recommendations.rated_and_excluded("u1") == ({"P1": 4.0}, {"P2"})  # kept for this ETag
    assert asked == ["etag"] and cache.calls == ["get_many"]
    asked.clear()  # each alone still answers from what was kept
    assert recommendations.history("u1") == {"P1": 4.0} and recommendations.excluded("u1") == {"P2"}
    assert asked == ["etag", "etag"]


def test_without_an_announced_list_both_are_read_and_nothing_is_kept(monkeypatch):
    asked: list[str] = []
    cache = _Recorded(LocMemCache("per-list-test-none", {}))
    monkeypatch.setattr(recommendations, "cache", cache)
    monkeypatch.setattr(recommendations, "cache_generation", lambda: "model-1")
    monkeypatch.setattr(list_state, "current", lambda uid, generation: None)
    monkeypatch.setattr(rating_history, "user_ratings", lambda uid: asked.append("ratings") or {})
    monkeypatch.setattr(shopper_controls, "exclusions", lambda uid: asked.append("exclusions") or set())

    assert recommendations.rated_and_excluded("u2") == ({}, set())
    assert asked == ["ratings", "exclusions"] and cache.calls == []
