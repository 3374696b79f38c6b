"""The peak Python memory of turning a week's rating events into votes, without a database.

    .local/venv/bin/python -m bench.trending_fold_memory --events 1000000 --pairs 1000000,200000
    .local/venv/bin/python -m bench.trending_fold_memory --trending-from /tmp/trending_before.py

Why: bench/trending_refresh.py's week has about one event per (user, product), so it cannot show
what a rebuild holds when the same votes come with more events (re-ratings, ratings taken back and
given again). This makes ``--events`` documents shaped as the scan of ``ratings`` returns them
(``_id``, user, product, rating, ts, action; one user per five pairs) over ``--pairs`` distinct
(user, product) pairs, and measures under ``tracemalloc`` the fold as the rebuild does it: with
the code before (``--trending-from`` a copy whose ``live_events`` returns a list), the list of
events, then ``votes_from_events``; with a module that has ``fold_events``, the generator folded.
The rule is core/trending_votes.py's (measured by default); before core/trending.py was split into
modules it was in that file, so the copy to compare with is of whichever file held it then.
"""
from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from types import ModuleType
from typing import Iterator

from bench.module_copy import load_copy
from core import trending_votes as current


def scan(n_events: int, n_pairs: int, seed: int = 1) -> Iterator[dict]:
    """``n_events`` event documents over ``n_pairs`` pairs (every pair once, then at random),
    made one at a time as a cursor decodes them; about one in ten of the repeats is an ``unrate``."""
    rng, now = random.Random(seed), 1_700_000_000.0
    for i in range(n_events):
        pair = i if i < n_pairs else rng.randrange(n_pairs)
        action = "unrate" if i >= n_pairs and rng.random() < 0.1 else "rate"
        yield {"_id": f"e{i}", "user_id": f"u{pair // 5}", "product_id": f"p{(pair * 7919) % 20_000}",
               "rating": 0 if action == "unrate" else rng.randint(1, 5), "ts": now - rng.random() * 6 * 86400,
               "action": action}


def fold(module: ModuleType, n_events: int, n_pairs: int) -> int:
    """Votes of the events as ``module``'s rebuild makes them; returns the number of voters."""
    if hasattr(module, "fold_events"):
        return len(module.fold_events(scan(n_events, n_pairs)).votes)
    events = list(scan(n_events, n_pairs))  # what the old live_events returned
    return len(module.votes_from_events(events))


def measure(module: ModuleType, n_events: int, n_pairs: int) -> tuple[float, float, int]:
    """(seconds untraced, peak MB under tracemalloc, voters)."""
    gc.collect()
    t0 = time.perf_counter()
    voters = fold(module, n_events, n_pairs)
    took = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    try:
        fold(module, n_events, n_pairs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return took, peak / 1e6, voters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--pairs", default="1000000,200000", help="distinct (user, product) pairs, comma-separated")
    ap.add_argument("--trending-from", metavar="FILE",
                    help="this copy of core/trending_votes.py (or of core/trending.py before the split) instead")
    args = ap.parse_args()
    module = load_copy(args.trending_from, "trending_measured") if args.trending_from else current
    print(f"trending module: {module.__file__}")
    print(f"{'events':>10} {'pairs':>10} {'voters':>8} {'s (untraced)':>13} {'peak MB':>8} {'B/event':>8}")
    for n_pairs in (int(p) for p in args.pairs.split(",")):
        took, peak, voters = measure(module, args.events, min(n_pairs, args.events))
        print(f"{args.events:>10,} {n_pairs:>10,} {voters:>8,} {took:>13.1f} {peak:>8.1f} "
              f"{peak * 1e6 / args.events:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
