"""Users this process saw with no "not interested" item, per database: a batch reads no exclusions
for them, one MongoDB read fewer before a rating's list. It holds because the worker that
owns a user's partition writes all of their exclusions: the site publishes "not interested" (and
"interested again", which only takes one away) to the ratings topic keyed by user, a dead letter
is replayed the same way, and deleting an account only removes them. A rebalance forgets it all (the user may have been another worker's for a
while). Were a list still to carry an excluded product, the site drops it when it shows the list.
It only ever spares a read: a batch that adds a user's exclusion reads theirs first, so a cached
"none" never replaces a list another worker stored meanwhile (``kafka_workers.batch._read_users``).
"""
from __future__ import annotations

_no_exclusions: dict[str, set[str]] = {}
NO_EXCLUSIONS_MAX = 500_000  # users remembered per process (~50 MB), then it starts again


def users_without_exclusions(db) -> set[str]:
    """The users of ``db`` known to have no exclusions (the batch adds to it)."""
    known = _no_exclusions.get(db.name)
    if known is None or len(known) > NO_EXCLUSIONS_MAX:
        _no_exclusions.clear()
        known = _no_exclusions[db.name] = set()
    return known


def may_have_exclusions(user_id: str) -> None:
    """Before writing a user's exclusion: read them again next time."""
    for known in _no_exclusions.values():
        known.discard(user_id)


def forget_users_without_exclusions() -> None:
    """On a rebalance: another worker may have written exclusions for users this one saw."""
    _no_exclusions.clear()
