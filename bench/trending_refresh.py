"""What one trending refresh costs against a week of live ratings, beside its beat period.

    .local/venv/bin/python -m bench.trending_refresh --sizes 10000,100000,1000000 --new 1000
    .local/venv/bin/python -m bench.trending_refresh --sizes 10000 --heavy 50000

Why: Celery beat sends ``core.popular.refresh_trending`` every ``TRENDING_REFRESH_S`` (60 s by
default). It used to read every rating event of the last week and rank them again: its cost grew
with the site's traffic (38.8 s at 1M events on FerretDB, docs/benchmarks.md). It now updates
scores kept in Redis with the users whose histories changed since the last refresh
(core/trending.py), and ranks the week's events again only to rebuild them (state missing, the
publish job). This prints, per week size, the rebuild (the old refresh's read and scoring, plus
writing the state), then a refresh after ``--new`` events of ``--new`` / 2 users,
and a refresh with nothing new, each as a share of the beat period; how many histories the
incremental refresh read; and the weekly rebase (every stored vote around a new T0). ``--heavy``
times instead the refresh after one new vote of an account with that many votes in the week
(core.trending_votes.MAX_VOTES_PER_USER bounds what it recomputes).

Beside the times: the longest any other Redis client waited for a ``PING`` while the rebuild, the
refresh after new events and the rebase ran (a separate process pings every 2 ms: Redis is shared
with the site's cache, Celery's broker and the workers' marks, and one large command or MULTI makes
every one of them wait); the Redis memory of the state after the rebuild (``MEMORY USAGE`` of its
keys) per voter; and the longest the rebuild or the rebase went without taking or renewing the
state's lock (what ``trending_store.LOCK_S`` must exceed). With ``--memory``, the rebuild is run a second time
under ``tracemalloc`` and its peak of Python memory printed (:func:`traced_rebuild`); the times
printed are the first, untraced run's.

The PING waits include the machine's
scheduling noise (printed first: the longest wait with no refresh running); the JSON rows also
give Redis's own time per command on the state's keys (SLOWLOG, 10 ms and over).

Events are synthetic (users rate 5 products each on average, spread over 20,000 products in 10
categories and six days), written as the workers leave them: in ``ratings`` and applied to the
users' histories, in a database of their own (``--database``, dropped at the end) on ``MONGO_URI``,
with its trending state in ``REDIS_URL`` (dropped too).
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import random
import sys
import time
import tracemalloc
from contextlib import contextmanager
from typing import Iterator

import redis
from pymongo import MongoClient, monitoring

from bench.module_copy import load_copy
from core import mongo, popular, rating_history, trending, trending_store
from core.settings import get_settings

N_PRODUCTS = 20_000


class _HistoryReads(monitoring.CommandListener):
    """How many ``user_history`` ids a client asked for (``$in`` reads by ``_id``)."""

    def __init__(self) -> None:
        self.ids = 0

    def started(self, event) -> None:
        if event.command_name == "find" and event.command["find"] == mongo.USER_HISTORY:
            self.ids += len(((event.command.get("filter") or {}).get("_id") or {}).get("$in", []))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def _ping_forever(url: str, conn) -> None:
    """In its own process (no GIL shared with the refresh): PING every 2 ms; on any message from
    ``conn``, answer the longest wait since the last answer and how many pings it took."""
    r = redis.Redis.from_url(url, socket_timeout=120)
    worst, n = 0.0, 0
    while True:
        if conn.poll():
            if conn.recv() == "stop":
                return
            conn.send((worst, n))
            worst, n = 0.0, 0
        t = time.perf_counter()
        r.ping()
        worst, n = max(worst, time.perf_counter() - t), n + 1
        time.sleep(0.002)


class Stalls:
    """The longest PING wait of another Redis client during a block of code (:func:`_ping_forever`)."""

    def __init__(self, url: str) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(target=_ping_forever, args=(url, child), daemon=True)
        self.proc.start()

    @contextmanager
    def measure(self, into: dict, name: str) -> Iterator[None]:
        self.conn.send("reset")
        self.conn.recv()
        try:
            yield
        finally:
            self.conn.send("read")
            worst, n = self.conn.recv()
            into[name] = round(worst * 1000, 1)
            into[name.replace("_ms", "_pings")] = n

    def close(self) -> None:
        self.conn.send("stop")
        self.proc.join(5)


class LockGaps:
    """The longest time between two takes or renewals of a Redis lock (acquire, reacquire, extend,
    release), whichever code holds it: wraps redis-py's Lock."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.worst, self.where, self.since = 0.0, "", ""
        for name in ("acquire", "reacquire", "extend", "release"):
            self._wrap(name)

    def _wrap(self, name: str) -> None:
        real = getattr(redis.lock.Lock, name)

        def wrapped(lock, *a, **kw):
            out = real(lock, *a, **kw)
            now = time.perf_counter()
            here = _caller()
            if self.last is not None and name != "acquire" and now - self.last > self.worst:
                self.worst, self.where = now - self.last, f"{self.since} -> {here}"
            self.last, self.since = (None if name == "release" else now), here
            return out

        setattr(redis.lock.Lock, name, wrapped)

    def take(self) -> tuple[float, str]:
        """The longest gap since the last take, and between which callers of the lock it was."""
        worst, where = self.worst, self.where
        self.worst, self.where = 0.0, ""
        return worst, where


def _caller() -> str:
    """The innermost function of trending's code on the stack (who took or renewed the lock), past
    the lock's own wrapper (``Hold.renew``): of core/trending.py and the modules beside it
    (core/trending_*.py), or of the copy measured (``--trending-from``), not of this file."""
    frame = sys._getframe(2)
    while frame is not None and (not os.path.basename(frame.f_code.co_filename).startswith("trending")
                                 or frame.f_code.co_filename == __file__ or frame.f_code.co_name == "renew"):
        frame = frame.f_back
    return frame.f_code.co_name if frame is not None else "?"


@contextmanager
def redis_busy(into: dict, name: str, db_name: str) -> Iterator[None]:
    """The longest single command on the state's keys during a block, and their sum, from Redis's
    SLOWLOG (commands of 10 ms and more by default; a MULTI's commands are logged one by one):
    Redis's own time, which a PING's wait adds the load's scheduling noise to."""
    r = trending_store.client()
    last = max((e["id"] for e in r.slowlog_get(1)), default=-1)
    try:
        yield
    finally:
        mine = trending_store.key(db_name, "").encode()
        took = [e["duration"] for e in r.slowlog_get(128) if e["id"] > last and mine in e["command"]]
        into[name] = round(max(took, default=0) / 1000, 1)
        into[name.replace("_max_ms", "_sum_ms")] = round(sum(took) / 1000, 1)


def state_bytes(db_name: str) -> tuple[int, int]:
    """(bytes, voters) of a database's trending state: ``MEMORY USAGE`` (every element counted) of
    each of its keys, and the number of users stored."""
    r = trending_store.client()
    cats = [c.decode() for c in r.smembers(trending_store.key(db_name, "cats"))]
    keys = [trending_store.key(db_name, p) for p in ("meta", "all", "users", "voters", "due", "cats")]
    keys += [trending_store.list_key(db_name, c) for c in cats]
    total = sum(r.memory_usage(k, samples=0) or 0 for k in keys)
    return total, r.hlen(trending_store.key(db_name, "users"))


def fill(db, n: int, now: float, n_products: int = N_PRODUCTS) -> None:
    """A catalog of ``n_products`` and ``n`` rating events of the last six days in ``ratings``,
    applied to their users' histories, in batches of 10,000."""
    for name in (mongo.RATINGS, mongo.USER_HISTORY, mongo.PRODUCTS, mongo.CATALOG_INDEX, mongo.POPULAR):
        db.drop_collection(name)
    cats = [f"cat{c}" for c in range(10)]
    for start in range(0, n_products, 10_000):
        db[mongo.PRODUCTS].insert_many([{"_id": f"p{i}", "category": cats[i % 10]}
                                        for i in range(start, min(n_products, start + 10_000))])
    db[mongo.CATALOG_INDEX].insert_one({"_id": "categories", "items": [{"name": c, "n_products": n_products // 10}
                                                                        for c in cats]})
    rng = random.Random(n)
    histories: dict[str, tuple[dict, dict]] = {}
    for start in range(0, n, 10_000):
        docs = [{"_id": f"e{i}", "user_id": f"u{rng.randrange(max(1, n // 5))}",
                 "product_id": f"p{rng.randrange(N_PRODUCTS)}",
                 "rating": rng.randint(1, 5), "ts": now - rng.random() * 6 * 86400, "action": "rate"}
                for i in range(start, min(n, start + 10_000))]
        db[mongo.RATINGS].insert_many(docs, ordered=False)
        for d in docs:
            rated, removed = histories.setdefault(d["user_id"], ({}, {}))
            rating_history.apply_history_change(rated, removed, d["product_id"], d["rating"], d["ts"])
    users = list(histories)
    for start in range(0, len(users), 10_000):
        db[mongo.USER_HISTORY].insert_many([rating_history.history_doc(u, *histories[u])
                                            for u in users[start:start + 10_000]], ordered=False)
    mongo.ensure_indexes(db)


def add_events(db, n_users: int, k: int, now: float, rng: random.Random) -> None:
    """``k`` new rating events of ``n_users`` users (half of them new), as a worker batch leaves
    them: stored, applied to the histories, the users marked for the refresh."""
    users = [f"u{rng.randrange(n_users)}" for _ in range(k // 4)]
    users += [f"new{rng.randrange(10**9)}" for _ in range(k // 4)]
    events = [{"_id": f"x{rng.randrange(10**12)}", "user_id": users[i % len(users)],
               "product_id": f"p{rng.randrange(N_PRODUCTS)}", "rating": rng.randint(1, 5), "ts": now - i * 0.01,
               "action": "rate"} for i in range(k)]
    db[mongo.RATINGS].insert_many(events, ordered=False)
    docs = mongo.find_by_ids(mongo.USER_HISTORY, set(users), db=db)
    changed = {u: rating_history.history_entries(docs.get(u)) for u in set(users)}
    for e in events:
        rating_history.apply_history_change(*changed[e["user_id"]], e["product_id"], e["rating"], e["ts"])
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(u, *h) for u, h in changed.items()], db=db)
    trending.mark_changed(changed, db=db)


def rate_as(db, user: str, products: list[str], now: float, rng: random.Random) -> None:
    """``user`` rates ``products`` within the last six days (the newest at ``now``), as a worker
    batch leaves it: the events stored, the history written whole, the user marked."""
    events = [{"_id": f"{user}-{p}", "user_id": user, "product_id": p, "rating": rng.randint(1, 5),
               "ts": now - (0.0 if len(products) == 1 else rng.random() * 6 * 86400), "action": "rate"}
              for p in products]
    for start in range(0, len(events), 10_000):
        db[mongo.RATINGS].insert_many(events[start:start + 10_000], ordered=False)
    rated, removed = rating_history.history_entries(mongo.find_by_ids(mongo.USER_HISTORY, [user], db=db).get(user))
    for e in events:
        rating_history.apply_history_change(rated, removed, e["product_id"], e["rating"], e["ts"])
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(user, rated, removed)], db=db)
    trending.mark_changed([user], db=db)


def heavy_case(db, base: int, heavy: int, repeats: int) -> dict:
    """A week of ``base`` events and one account with ``heavy`` votes in it (a bot at the rating
    limit), then ``repeats`` refreshes each after one new vote of that account: what the minute's
    refresh pays for it. Also the read of its history alone (the part the cap leaves: the refresh
    reads a changed user's history whole) and the size of its row in Redis."""
    trending.drop_state(db.name)
    now, rng = time.time(), random.Random(heavy)
    fill(db, base, now, n_products=max(N_PRODUCTS, heavy + repeats))
    rate_as(db, "heavy", [f"p{i}" for i in range(heavy)], now, rng)
    rebuild_s = timed_refresh(db)
    after_vote, cpu = [], []
    for k in range(repeats):
        rate_as(db, "heavy", [f"p{heavy + k}"], time.time(), rng)
        c0 = time.process_time()  # this process's CPU: the refresh's own work, less sensitive to load
        after_vote.append(timed_refresh(db))
        cpu.append(time.process_time() - c0)
    t0 = time.perf_counter()
    mongo.find_by_ids(mongo.USER_HISTORY, ["heavy"], {"ratings": 1, "removed": 1}, db=db)
    history_read_s = time.perf_counter() - t0
    row = trending_store.client().hstrlen(trending_store.key(db.name, "users"), "heavy")
    rule = getattr(trending, "trending_votes", trending)  # the rule's module, or a one-file copy (--trending-from)
    return {"base_events": base, "heavy_votes": heavy, "cap": getattr(rule, "MAX_VOTES_PER_USER", None),
            "rebuild_s": round(rebuild_s, 2), "refresh_after_its_vote_s": [round(x, 3) for x in after_vote],
            "its_cpu_s": [round(x, 3) for x in cpu],
            "history_read_s": round(history_read_s, 3), "redis_row_bytes": row}


def timed_refresh(db) -> float:
    t0 = time.perf_counter()
    if not popular.refresh_trending(db=db):
        raise SystemExit("the refresh wrote no lists")
    return time.perf_counter() - t0


def traced_rebuild(db) -> int:
    """The rebuild again (the state dropped), under ``tracemalloc``: the peak, in bytes, of the Python
    memory allocated during it. What grows with the week's traffic is Python objects (the events
    read, the votes), which this counts exactly and alone; the process's peak RSS would also hold
    what the fill left in the allocator's free lists (its peak is the fill's, which keeps every
    event's history), and varies with fragmentation. tracemalloc makes the call 2-3x slower,
    hence a second run."""
    trending.drop_state(db.name)
    gc.collect()
    tracemalloc.start()
    try:
        timed_refresh(db)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _use_trending(path: str) -> None:
    """Make ``path`` the trending module of this bench and of core.popular (which the refresh runs)."""
    global trending
    trending = popular.trending = load_copy(path, "core.trending")
    print(f"trending module: {path}")


def _clean_up(db, client: MongoClient, stalls: Stalls) -> None:
    """The bench's database and trending state dropped, its pinging process stopped; the load at the end."""
    trending.drop_state(db.name)
    client.drop_database(db.name)
    client.close()
    stalls.close()
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--new", type=int, default=1000, help="events between two refreshes")
    ap.add_argument("--database", default="bench_trending")
    ap.add_argument("--trending-from", metavar="FILE",
                    help="measure this copy of core/trending.py instead (the code before: "
                         "git show REV:core/trending.py > /tmp/trending_before.py); a copy from "
                         "after the split runs with this checkout's core/trending_*.py")
    ap.add_argument("--period-s", type=float, default=float(os.environ.get("TRENDING_REFRESH_S", "60")))
    ap.add_argument("--heavy", type=int, default=0,
                    help="instead: one account with this many votes in a week of --sizes' first size")
    ap.add_argument("--repeats", type=int, default=3, help="--heavy: refreshes after one vote of it")
    ap.add_argument("--memory", action="store_true",
                    help="also the rebuild's peak Python memory (a second rebuild, under tracemalloc)")
    args = ap.parse_args()
    if args.trending_from:
        _use_trending(args.trending_from)
    stalls = Stalls(get_settings().redis_url)  # forked before any client exists
    gaps = LockGaps()
    reads = _HistoryReads()
    client = MongoClient(get_settings().mongo_uri, event_listeners=[reads])
    db = mongo.ReloadableDatabase(client, args.database)
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.heavy:
        try:
            print(json.dumps(heavy_case(db, int(args.sizes.split(",")[0]), args.heavy, args.repeats)))
        finally:
            _clean_up(db, client, stalls)
        return
    floor: dict = {}
    with stalls.measure(floor, "quiet_ping_max_ms"):  # the noise floor: no refresh running
        time.sleep(3)
    print(f"longest PING wait over 3 s with no refresh running: {floor['quiet_ping_max_ms']} ms")
    print(f"{'events/week':>12} {'rebuild s':>10} {'of period':>10} {f'+{args.new} s':>10} {'histories':>10} "
          f"{'of period':>10} {'idle s':>8} {'rebase s':>9} {'ping max ms: rebuild':>20} {f'+{args.new}':>7} "
          f"{'rebase':>7} {'slowest cmd ms: rebuild':>23} {'rebase':>7} {'state MB':>9} {'B/voter':>8} "
          f"{'lock gap s':>10}" + (f"{'rebuild peak MB':>17}" if args.memory else ""))
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            trending.drop_state(db.name)
            fill(db, n, time.time())
            stall: dict = {}
            gaps.take()
            with stalls.measure(stall, "rebuild_ping_max_ms"), redis_busy(stall, "rebuild_cmd_max_ms", db.name):
                rebuild_s = timed_refresh(db)  # no state yet: one scan of the week, the voters' histories
            lock_gap_s, gap_at = gaps.take()
            state, voters = state_bytes(db.name)
            peak = traced_rebuild(db) if args.memory else None
            add_events(db, max(1, n // 5), args.new, time.time(), random.Random(n + 1))
            reads.ids = 0
            with stalls.measure(stall, "incremental_ping_max_ms"), \
                    redis_busy(stall, "incremental_cmd_max_ms", db.name):
                incremental_s = timed_refresh(db)
            histories = reads.ids
            idle_s = timed_refresh(db)
            # the weekly rebase: every stored vote computed again around a new T0 (forced by ageing T0)
            meta, r = trending_store.key(db.name, "meta"), trending_store.client()
            r.hset(meta, "t0", float(r.hget(meta, "t0")) - trending.REBASE_AFTER_S - 1)
            gaps.take()
            with stalls.measure(stall, "rebase_ping_max_ms"), redis_busy(stall, "rebase_cmd_max_ms", db.name):
                rebase_s = timed_refresh(db)
            rebase_gap_s, rebase_gap_at = gaps.take()
            if rebase_gap_s > lock_gap_s:
                lock_gap_s, gap_at = rebase_gap_s, rebase_gap_at
            row = {"events": n, "rebuild_s": round(rebuild_s, 2), "new_events": args.new,
                   "incremental_s": round(incremental_s, 3), "histories_read": histories, "idle_s": round(idle_s, 3),
                   "rebase_s": round(rebase_s, 2),
                   "incremental_share_of_period": round(incremental_s / args.period_s, 4), **stall,
                   "state_bytes": state, "voters": voters, "bytes_per_voter": round(state / max(1, voters)),
                   "longest_lock_gap_s": round(lock_gap_s, 2), "longest_lock_gap_between": gap_at,
                   "rebuild_peak_py_bytes": peak}
            rows.append(row)
            print(f"{n:>12,} {rebuild_s:>10.2f} {rebuild_s / args.period_s:>10.1%} {incremental_s:>10.3f} "
                  f"{histories:>10,} {incremental_s / args.period_s:>10.2%} {idle_s:>8.3f} {rebase_s:>9.2f} "
                  f"{stall['rebuild_ping_max_ms']:>20.1f} {stall['incremental_ping_max_ms']:>7.1f} "
                  f"{stall['rebase_ping_max_ms']:>7.1f} {stall['rebuild_cmd_max_ms']:>23.1f} "
                  f"{stall['rebase_cmd_max_ms']:>7.1f} {state / 1e6:>9.1f} {state / max(1, voters):>8.0f} "
                  f"{lock_gap_s:>10.2f}" + (f"{peak / 1e6:>17.1f}" if peak is not None else ""), flush=True)
    finally:
        _clean_up(db, client, stalls)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
