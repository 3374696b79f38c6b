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
