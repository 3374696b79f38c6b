"""A refresh's commit: the users' old terms out of the trending state, their new votes' terms in.

core/trending.py picks the users to compute again and their votes (core/trending_votes.py); this
turns them into what changes per list and product (its score and its number of voters) and hands
that to core/trending_store.py to write. A refresh reads the stored counts and scores of the
products it touches and writes them moved; a rebuild or rebase starts from nothing. Each product
keeps its number of voters per list so that one left without any leaves the list, rather than
staying with the rounding remainder of its added and subtracted terms.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any, Callable

import redis
from pymongo.database import Database

from core import mongo, trending_store, trending_votes


def commit(r: redis.Redis, db: Database, now: float, meta: dict[str, float], old: dict[str, list],
           new: dict[str, list], rebuild: bool, hold: trending_store.Hold) -> None:
    """Subtract the ``old`` terms, add the ``new`` ones. Each product also has its number of voters
    per list: one without any leaves the list, where the sum of its added and subtracted terms
    would leave a rounding remainder. A refresh writes in one MULTI
    (:func:`core.trending_store.write_update`); a rebuild or a rebase, which writes the whole state,
    in chunks then a switch (:func:`core.trending_store.write_staged`)."""
    category = _categories(db, old, new, hold)
    delta, voters, kept = _deltas(old, new, category, meta["t0"], now, hold.renew)
    count, score = ({}, {}) if rebuild else _current(r, db.name, delta)
    change = _change(delta, voters, count, score, kept, new, now)
    if rebuild:
        trending_store.write_staged(r, db.name, meta, change, hold)
    else:
        trending_store.write_update(r, db.name, meta, change, hold.token)


def _categories(db: Database, old: dict[str, list], new: dict[str, list],
                hold: trending_store.Hold) -> dict[str, str]:
    """A product's category as stored with a vote (a rebuild reads them all again), else the
    catalog's: a product moved to another category keeps its stored votes where they were added."""
    category = {p: cat for vs in old.values() for p, _r, _t, cat, _term in vs}
    unknown = {p for vs in new.values() for p, _r, _t in vs} - set(category)
    products = trending_store.read_by_ids(db, mongo.PRODUCTS, unknown, {"category": 1}, hold)
    category.update((p, d.get("category") or "") for p, d in products.items())
    return category


def _deltas(old: dict[str, list], new: dict[str, list], category: dict[str, str], t0: float, now: float,
            between: Callable[[], None]) -> tuple[dict[tuple[str, str], float], Counter, dict[str, str]]:
    """Per (list, product): the change of its score and of its number of voters (the ``old`` rows'
    terms out, the ``new`` votes' in); and the rows (JSON) to keep per user with a vote.
    ``between`` is called every ``CHUNK`` users (a rebuild renews its lock)."""
    delta: dict[tuple[str, str], float] = defaultdict(float)
    voters: Counter[tuple[str, str]] = Counter()
    kept: dict[str, str] = {}
    for vs in old.values():
        for p, _r, _t, cat, term in vs:
            for name in (mongo.ALL, cat):
                delta[name, p] -= term
                voters[name, p] -= 1
    for user, vs in trending_votes.every_chunk(new.items(), between):
        if not vs:
            continue
        rows = []
        for (p, rating, t), term in zip(vs, trending_votes.terms(vs, t0, now)):
            cat = category.get(p, "")
            rows.append([p, rating, t, cat, term])
            for name in (mongo.ALL, cat):
                delta[name, p] += term
                voters[name, p] += 1
        kept[user] = json.dumps(rows)
    return delta, voters, kept


def _by_list(delta: dict[tuple[str, str], Any]) -> dict[str, list[str]]:
    """The products of each list in ``delta``'s (list, product) keys, in their order."""
    by_list: dict[str, list[str]] = defaultdict(list)
    for name, p in delta:
        by_list[name].append(p)
    return by_list


def _current(r: redis.Redis, db_name: str, delta: dict[tuple[str, str], float]
             ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float]]:
    """The stored voter counts and scores of the (list, product) pairs a refresh changes: read,
    then written whole under the lock (one command per list, not one per product)."""
    if not delta:
        return {}, {}
    by_list = _by_list(delta)
    pipe = r.pipeline(transaction=False)
    pipe.hmget(trending_store.key(db_name, "voters"), [f"{name}{trending_store.SEP}{p}" for name, p in delta])
    for name, products in by_list.items():
        pipe.zmscore(trending_store.list_key(db_name, name), products)
    had, *scores = pipe.execute()
    count = {nk: int(c or 0) for nk, c in zip(delta, had)}
    score = {(name, p): s or 0.0 for (name, products), got in zip(by_list.items(), scores)
             for p, s in zip(products, got)}
    return count, score


def _change(delta: dict[tuple[str, str], float], voters: Counter, count: dict[tuple[str, str], int],
            score: dict[tuple[str, str], float], kept: dict[str, str], new: dict[str, list],
            now: float) -> trending_store.Change:
    """The stored ``count`` and ``score`` moved by ``delta`` and ``voters``: what to write."""
    change = trending_store.Change(scores={}, gone={}, counts={}, no_voters=[], rows=kept,
                                   due={u: trending_votes.due(new[u], now) for u in kept},
                                   gone_users=[u for u in new if not new[u]], cats=set())
    for name, products in _by_list(delta).items():
        change.scores[name], change.gone[name] = {}, []
        if name != mongo.ALL:
            change.cats.add(name)
        for p in products:
            n = count.get((name, p), 0) + voters[name, p]
            if n <= 0:  # no voter left: gone, not a rounding remainder near zero
                change.gone[name].append(p)
                change.no_voters.append(f"{name}{trending_store.SEP}{p}")
            else:
                change.scores[name][p] = score.get((name, p), 0.0) + delta[name, p]
                change.counts[f"{name}{trending_store.SEP}{p}"] = n
    return change
