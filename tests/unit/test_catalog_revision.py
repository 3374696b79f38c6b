"""The catalog revision (core.catalog_revision) when Redis fails: a deletion never fails for it,
and pages keep the revision last read rather than falling back to "0" (whose pages may be old)."""
from __future__ import annotations

import redis

from core import catalog_revision


class _Down:
    def get(self, key):
        raise redis.ConnectionError("down")

    def set(self, key, value, ex=None):
        raise redis.ConnectionError("down")


def test_redis_down_keeps_the_last_revision_read_and_a_bump_does_not_raise(monkeypatch):
    monkeypatch.setattr(catalog_revision, "_seen", {catalog_revision._key(): ("abc123", -1e9)})  # stale: read again
    monkeypatch.setattr(catalog_revision.list_state, "client", lambda: _Down())
    assert catalog_revision.current() == "abc123"
    catalog_revision.bump()  # logged, not raised: the account's deletion goes on
    assert catalog_revision.current() == "abc123"


class _Store:
    """A Redis of GET and SET (NX)."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value, nx=False, ex=None):
        if nx and key in self.data:
            return None
        self.data[key] = value.encode() if isinstance(value, str) else value
        return True


def test_a_missing_revision_starts_random_and_every_process_reads_the_same(monkeypatch):
    """Never "0": the site's pages were cached under "0" before its revision was kept here."""
    store = _Store()
    monkeypatch.setattr(catalog_revision.list_state, "client", lambda: store)
    monkeypatch.setattr(catalog_revision, "_seen", {})
    first = catalog_revision.current()
    monkeypatch.setattr(catalog_revision, "_seen", {})  # another process
    assert catalog_revision.current() == first and first not in ("", "0")
    catalog_revision.bump()
    assert catalog_revision.current() != first
