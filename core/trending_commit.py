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
from itertools import islice
from typing import Any, Iterable

import redis
from pymongo.database import Database

from core import mongo, trending_store, trending_votes


def commit(r: redis.Redis, db: Database, now: float, meta: dict[str, float], old: dict[str, list],
           new: dict[str, list], rebuild: bool, hold: trending_store.Hold) -> None:
    """Subtract the ``old`` terms, add the ``new`` ones. Each product also has its number of voters
    per list: one without any leaves the list, where the sum of its added and subtracted terms
    would leave a rounding remainder. A refresh writes ``CHUNK`` users per MULTI
    (:func:`core.trending_store.write_update`), each a whole change of its own: those users' rows
    and due times and the sums they move, read after the MULTIs before. So Redis serves others
    between them (a backlog of marks, Celery stopped for hours, was one MULTI of every marked
    user), and a refresh that stops between two leaves a state where each user is either computed
    again or not, all still marked ("taking" goes with the last MULTI, and the stamp: see
    core.trending._rolled_back); the next refresh computes them again from what is stored. A
    rebuild or a rebase, which writes the whole state, writes in chunks then a switch
    (:func:`_rebuild`), and consumes ``new`` as it goes."""
    category = _categories(db, old, new, hold)
    if rebuild:
        _rebuild(r, db.name, now, meta, new, category, hold)
        return
    users = sorted(new)  # every user of ``old`` (a refresh carries their stored votes into ``new``)
    parts = [users[i:i + trending_votes.CHUNK] for i in range(0, len(users), trending_votes.CHUNK)] or [[]]
    for n, part in enumerate(parts, 1):
        delta, voters = _old_out({u: old[u] for u in part if u in old})
        rows, due = _new_in(((u, new[u]) for u in part), category, meta["t0"], now, delta, voters)
        count, score = _current(r, db.name, delta)  # after the parts before: they moved these sums
        change = _change(delta, voters, count, score, rows, due, [u for u in part if not new[u]])
        trending_store.write_update(r, db.name, meta if n == len(parts) else None, change, hold.token)
        hold.renew()


def _rebuild(r: redis.Redis, db_name: str, now: float, meta: dict[str, float], new: dict[str, list],
             category: dict[str, str], hold: trending_store.Hold) -> None:
    """The whole state from ``new`` (a rebuild's or rebase's votes), staged then switched in
    (:class:`core.trending_store.Staging`). The users' part goes ``CHUNK`` users at a time: their
    rows and due times computed, staged and dropped, their votes popped from ``new``; only the sums
    per (list, product), which the week's voted products bound, are held whole. Holding every
    user's rows and due times until the write took 125 MB at 1M votes (docs/benchmarks.md), on top
    of the votes themselves."""
    delta: dict[tuple[str, str], float] = defaultdict(float)
    voters: Counter[tuple[str, str]] = Counter()
    with trending_store.Staging(r, db_name, hold) as staging:
        while new:  # (a fresh islice each time: ``new`` shrinks, which no live iterator allows)
            users = list(islice(new, trending_votes.CHUNK))
            rows, due = _new_in(((u, new.pop(u)) for u in users), category, meta["t0"], now, delta, voters)
            staging.write("users", "hset", rows.items())
            staging.write("due", "zadd", due.items())
        staging.finish(meta, _change(delta, voters, {}, {}, {}, {}, []))


def _categories(db: Database, old: dict[str, list], new: dict[str, list],
                hold: trending_store.Hold) -> dict[str, str]:
    """A product's category as stored with a vote (a rebuild reads them all again), else the
    catalog's: a product moved to another category keeps its stored votes where they were added."""
    category = {p: cat for vs in old.values() for p, _r, _t, cat, _term in vs}
    unknown = {p for vs in new.values() for p, _r, _t in vs} - set(category)
    products = trending_store.read_by_ids(db, mongo.PRODUCTS, unknown, {"category": 1}, hold)
    category.update((p, d.get("category") or "") for p, d in products.items())
    return category


def _old_out(old: dict[str, list]) -> tuple[dict[tuple[str, str], float], Counter]:
    """Per (list, product): the change of its score and of its number of voters once the ``old``
    rows' terms are out (a refresh's users computed again; nothing for a rebuild)."""
    delta: dict[tuple[str, str], float] = defaultdict(float)
    voters: Counter[tuple[str, str]] = Counter()
    for vs in old.values():
        for p, _r, _t, cat, term in vs:
            for name in (mongo.ALL, cat):
                delta[name, p] -= term
                voters[name, p] -= 1
    return delta, voters


def _new_in(votes_by_user: Iterable[tuple[str, list]], category: dict[str, str], t0: float, now: float,
            delta: dict[tuple[str, str], float], voters: Counter) -> tuple[dict[str, str], dict[str, float]]:
    """The rows (JSON) and due times of these users with a vote, their terms added to ``delta`` and
    ``voters`` per (list, product): a refresh's users at once, a rebuild's a chunk at a time."""
    rows: dict[str, str] = {}
    due: dict[str, float] = {}
    for user, vs in votes_by_user:
        if not vs:
            continue
        kept = []
        for (p, rating, t), term in zip(vs, trending_votes.terms(vs, t0, now)):
            cat = category.get(p, "")
            kept.append([p, rating, t, cat, term])
            for name in (mongo.ALL, cat):
                delta[name, p] += term
                voters[name, p] += 1
        rows[user], due[user] = json.dumps(kept), trending_votes.due(vs, now)
    return rows, due


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
            score: dict[tuple[str, str], float], rows: dict[str, str], due: dict[str, float],
            gone_users: list[str]) -> trending_store.Change:
    """The stored ``count`` and ``score`` moved by ``delta`` and ``voters``, and the users' rows,
    due times and users without a vote left: what to write."""
    change = trending_store.Change(scores={}, gone={}, counts={}, no_voters=[], rows=rows, due=due,
                                   gone_users=gone_users, cats=set())
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
