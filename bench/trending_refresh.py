"""How long one trending refresh takes against a week of live ratings, beside its beat period.

    .local/venv/bin/python -m bench.trending_refresh --sizes 10000,100000,1000000

Why: ``core.popular.refresh_trending`` reads every rating event of the last week and ranks them
again on each call (Celery beat sends one every ``TRENDING_REFRESH_S``, 60 s by default). Its cost
grows with the site's traffic, not with what changed since the last call. This prints, per week
size, the time to read the events, to score them and to write the lists, and how much of the beat
period that is: the traffic at which the refresh can no longer keep up.

Events are synthetic (users rate 5 products each on average, spread over 20,000 products and six
days), written to a database of their own (``--database``, dropped at the end) on ``MONGO_URI``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

from core import mongo, popular


def fill(db, n: int, now: float) -> None:
    """``n`` rating events of the last six days in ``ratings``, in batches of 10,000."""
    db.drop_collection(mongo.RATINGS)
    rng = random.Random(n)
    for start in range(0, n, 10_000):
        db[mongo.RATINGS].insert_many([
            {"_id": f"e{i}", "user_id": f"u{rng.randrange(max(1, n // 5))}", "product_id": f"p{rng.randrange(20_000)}",
             "rating": rng.randint(1, 5), "ts": now - rng.random() * 6 * 86400, "action": "rate"}
            for i in range(start, min(n, start + 10_000))], ordered=False)
    mongo.ensure_indexes(db)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--database", default="bench_trending")
    ap.add_argument("--period-s", type=float, default=float(os.environ.get("TRENDING_REFRESH_S", "60")))
    args = ap.parse_args()
    db = mongo.get_client()[args.database]
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'events/week':>12} {'ratings/s':>10} {'read s':>8} {'score s':>8} {'write s':>8} {'total s':>8} "
          f"{'of period':>10}")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        now = time.time()
        fill(db, n, now)
        t0 = time.perf_counter()
        events, now, half_life = popular.trending_events(db, quiet_fallback=False)
        t1 = time.perf_counter()
        scores = popular.trending_scores(events, now, half_life)
        t2 = time.perf_counter()
        lists = popular.refresh_trending(db=db)  # all three steps again, as Celery runs them
        t3 = time.perf_counter()
        if len(events) != n or not scores or not lists:
            raise SystemExit(f"read {len(events)} of {n} events, {len(scores)} scores, {lists} lists")
        read_s, score_s, total_s = t1 - t0, t2 - t1, t3 - t2
        row = {"events": n, "ratings_per_s": round(n / (7 * 86400), 2), "read_s": round(read_s, 2),
               "score_s": round(score_s, 2), "write_s": round(max(0.0, total_s - read_s - score_s), 2),
               "total_s": round(total_s, 2), "share_of_period": round(total_s / args.period_s, 3)}
        rows.append(row)
        print(f"{n:>12,} {row['ratings_per_s']:>10} {read_s:>8.2f} {score_s:>8.2f} {row['write_s']:>8.2f} "
              f"{total_s:>8.2f} {row['share_of_period']:>10.1%}")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(json.dumps(rows))
    mongo.get_client().drop_database(args.database)


if __name__ == "__main__":
    main()
