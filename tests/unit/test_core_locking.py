"""The write fence of core/locking.py: when it asks the server, and what it does with the answer
(a fake ``event_claims`` collection; tests/integration/test_writer_fencing.py runs it for real)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from core import locking, mongo


class Claims:
    """``update_many`` of the lock documents: records each call, answers ``matched`` of them."""

    def __init__(self, matched: int) -> None:
        self.matched, self.calls = matched, []

    def update_many(self, query, update):
        self.calls.append(query)
        return SimpleNamespace(matched_count=self.matched)


def test_a_fresh_lock_is_not_asked_about_and_an_old_one_is_renewed():
    claims = Claims(matched=2)
    db = {mongo.EVENT_CLAIMS: claims}
    check = locking.fence(["user:b", "user:a"], "tok", time.monotonic(), db=db)
    check()
    assert claims.calls == [], "a lock younger than half its lease cannot have been taken over"
    check = locking.fence(["user:b", "user:a"], "tok", time.monotonic() - locking.LOCK_STALE_S, db=db)
    check()
    assert claims.calls == [{"_id": {"$in": ["user:a", "user:b"]}, "token": "tok"}]
    check()
    assert len(claims.calls) == 1, "renewed just now: fresh again"


def test_a_lock_taken_over_stops_the_write():
    db = {mongo.EVENT_CLAIMS: Claims(matched=1)}
    check = locking.fence(["user:a", "user:b"], "tok", time.monotonic() - locking.LOCK_STALE_S, db=db)
    with pytest.raises(locking.LeaseLost, match="1 of 2"):
        check()
