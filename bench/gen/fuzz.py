"""Fuzz files: any number of rows in the 2014, 2018 or 2023 review layout, with known dirt.

This is the generator the reconciliation tests use (``generate(rows, out_dir, fmt, ...)``): files of
any size with the same field names, value types and key order as the real lines and the skew that
makes real data hard: a few items and users hold most reviews (Zipf-like draws), most ratings are 5
stars, bad reviews are longer, review volume grows over the years, some (user, item) pairs are rated
twice and some lines are exact copies. ``bad_fraction`` adds lines the pipeline must quarantine
(truncated JSON, empty lines, rating 7, missing asin, JSON that is not an object).

Every count is exact and goes to DIR/manifest.json, including what spark_jobs/load.py and
spark_jobs/clean.py must report for these files. For files of the 2018 release's shape (29
categories, metadata, measured skew, latent taste, streaming to 233M lines) see bench/gen/release.py.

Files are named ``amazon<fmt>_<category>.jsonl.gz``: each file is one category and an item belongs
to one category. Items are dealt to categories by popularity rank so the files come out about the
same size; writing uses one process per file.

Memory: the (user, item, time, rating) of every row stay in the parent (about 17 bytes a row, plus
sort buffers while pairs are checked: ~0.5 GB for 10M rows) because counting repeated pairs
exactly needs them all; the text is made and written 100k rows at a time.
"""
from __future__ import annotations

import gzip
import json
import math
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from bench.gen.formats import BAD_KINDS, FORMATS, LOAD_REASON, TIME_RANGE, DAY, YEAR, format_lines, with_dirt
from bench.gen.manifest import print_summary
from bench.gen.sampling import make_lines_distinct, scramble, split_counts, zipf_ranks
from bench.gen.vocabulary import pools

# Category file names of this generator (lower case, as the earlier samples); a file is one category.
CATEGORIES = (
    "books", "clothing_shoes_and_jewelry", "home_and_kitchen", "electronics", "sports_and_outdoors",
    "cell_phones_and_accessories", "tools_and_home_improvement", "movies_and_tv", "toys_and_games",
    "automotive", "pet_supplies", "kindle_store", "office_products", "patio_lawn_and_garden",
    "grocery_and_gourmet_food", "cds_and_vinyl", "arts_crafts_and_sewing", "video_games",
    "industrial_and_scientific", "digital_music", "musical_instruments", "luxury_beauty",
    "all_beauty", "appliances", "software", "prime_pantry", "gift_cards", "magazine_subscriptions",
    "amazon_fashion",
)

# Rating model: latent score -> stars with these marginal shares.
RATING_SHARE = (0.07, 0.05, 0.08, 0.19, 0.61)  # 1..5 stars
_FACTORS = 4
_SD = {"item": 0.6, "user": 0.5, "factor": 0.5, "noise": 0.8}
# Zipf-Mandelbrot (exponent, offset as a share of the id space, which keeps the shape the same at
# any size): the top 20% of items hold ~80% of the reviews and the top 1% ~40%; the top 1% of users
# write ~25%, a quarter of the users who write at all write once (from ~20k rows up; smaller runs
# are flatter).
ITEM_ZIPF = (1.0, 0.0005)
USER_ZIPF = (0.85, 0.0005)


# ---------------------------------------------------------------------------------------------
# the rows: who rated what, when, how many stars (parent process, vectorised)
# ---------------------------------------------------------------------------------------------
def _rating_thresholds() -> np.ndarray:
    """Cut points of the latent score giving RATING_SHARE (the score is close to normal)."""
    sd = math.sqrt(_SD["item"] ** 2 + _SD["user"] ** 2 + _FACTORS * _SD["factor"] ** 4 + _SD["noise"] ** 2)
    cum = np.cumsum(RATING_SHARE)[:-1]
    return np.array([NormalDist(0, sd).inv_cdf(float(c)) for c in cum])


def _sample_pairs(rng: np.random.Generator, n: int, n_users: int, n_items: int, n_files: int,
                  chunk: int = 1_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, category file) per row: Zipf draws, then most accidental repeats redrawn."""
    users = np.empty(n, np.int32)
    ranks = np.empty(n, np.int64)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        users[a:b] = scramble(zipf_ranks(rng, b - a, n_users, *USER_ZIPF), n_users, 11)
        ranks[a:b] = zipf_ranks(rng, b - a, n_items, *ITEM_ZIPF)
    keys = users.astype(np.int64) * n_items + scramble(ranks, n_items, 17)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    again = order[1:][sorted_keys[1:] == sorted_keys[:-1]]
    # A user reviews an item once, mostly: redraw the item of accidental repeats a few times. What
    # is left (a heavy user meeting the head items) is counted exactly later, as real data has it.
    for _ in range(6):
        if len(again) == 0 or n_items < 2:
            break
        ranks[again] = zipf_ranks(rng, len(again), n_items, *ITEM_ZIPF)
        new = users[again].astype(np.int64) * n_items + scramble(ranks[again], n_items, 17)
        pos = np.clip(np.searchsorted(sorted_keys, new), 0, len(sorted_keys) - 1)
        clash = sorted_keys[pos] == new
        _, first = np.unique(new, return_index=True)
        inside = np.ones(len(new), bool)
        inside[first] = False
        again = again[clash | inside]
    del order, sorted_keys, keys
    items = scramble(ranks, n_items, 17).astype(np.int32)
    files = (ranks % n_files).astype(np.int16)  # popularity ranks dealt round-robin: even file sizes
    return users, items, files


def _times_and_ratings(rng: np.random.Generator, users: np.ndarray, items: np.ndarray, fmt: str,
                       n_users: int, n_items: int, chunk: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Review time (s, or ms for 2023) and stars per row, from per-user and per-item traits.

    Users are active around their own moment in time, items are reviewed after launch, and review
    volume grows over the years; stars = item quality + user leniency + taste match + noise, so a
    recommender trained on these files has something real to learn.
    """
    lo, hi = TIME_RANGE[fmt]
    span = hi - lo
    user_mid = lo + span * rng.random(n_users) ** (1 / 3)  # density ~ t^2: more reviews in later years
    item_launch = lo + span * rng.random(n_items) ** (1 / 2.5) - 2 * YEAR
    user_bias = rng.normal(0, _SD["user"], n_users).astype(np.float32)
    item_qual = rng.normal(0, _SD["item"], n_items).astype(np.float32)
    user_f = rng.normal(0, _SD["factor"], (n_users, _FACTORS)).astype(np.float32)
    item_f = rng.normal(0, _SD["factor"], (n_items, _FACTORS)).astype(np.float32)
    cuts = _rating_thresholds()
    n = len(users)
    ts = np.empty(n, np.int64)
    stars = np.empty(n, np.int8)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        u, i = users[a:b], items[a:b]
        t = user_mid[u] + rng.normal(0, 1.5 * YEAR, b - a)
        early = t < item_launch[i]
        t[early] = item_launch[i[early]] + rng.exponential(120 * DAY, int(early.sum()))
        t = np.where(t > hi, hi - (t - hi), t)  # fold the overshoot back instead of piling it on `hi`
        t = np.clip(t, lo, hi)
        if fmt == "2023":
            ts[a:b] = t.astype(np.int64) * 1000 + rng.integers(0, 1000, b - a)
        else:
            ts[a:b] = (t.astype(np.int64) // DAY) * DAY  # 2014/2018 times are midnight UTC of the day
        score = (item_qual[i] + user_bias[u] + np.einsum("ij,ij->i", user_f[u], item_f[i])
                 + rng.normal(0, _SD["noise"], b - a))
        stars[a:b] = np.searchsorted(cuts, score) + 1
    return ts, stars

# ---------------------------------------------------------------------------------------------
# writing one file (runs in a worker process)
# ---------------------------------------------------------------------------------------------

def write_file(task: dict[str, Any]) -> dict[str, Any]:
    """Write one category file: its good rows in chunks, with its share of duplicates and bad lines."""
    fmt = task["fmt"]
    arrays = {k: np.load(p, mmap_mode="r") for k, p in task["arrays"].items()}
    a, b = task["start"], task["end"]
    n_good = b - a
    bounds = list(range(a, b, task["chunk_rows"])) + [b]
    sizes = np.diff(bounds)
    dup_per_chunk = split_counts(task["duplicates"], sizes)
    bad_per_chunk = {k: split_counts(v, sizes) for k, v in task["bad"].items()}
    stats = {"path": task["name"], "category": task["category"], "lines": 0, "good_lines": 0,
             "distinct_good_lines": n_good, "duplicate_lines": 0, "bad_lines": dict.fromkeys(BAD_KINDS, 0),
             "rating_counts": [0] * 6}
    tmp = Path(task["path"] + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=task["compresslevel"]) as out:
        for c in range(len(sizes)):
            lo, hi = bounds[c], bounds[c + 1]
            rng = np.random.default_rng([task["seed"], task["file_index"], c])
            stars = np.asarray(arrays["stars"][lo:hi])
            good = format_lines(fmt, np.asarray(arrays["users"][lo:hi]), np.asarray(arrays["items"][lo:hi]),
                                np.asarray(arrays["ts"][lo:hi]), stars, rng, task["n_items"], task["style_kind"])
            g = len(good)
            bad = {kind: bad_per_chunk[kind][c] for kind in BAD_KINDS}
            lines, dup_src = with_dirt(good, dup_per_chunk[c], bad, fmt, rng)
            for kind in BAD_KINDS:
                stats["bad_lines"][kind] += bad[kind]
            total = len(lines)
            out.write(("\n".join(lines) + "\n").encode("ascii"))
            counts = np.bincount(stars, minlength=6) + np.bincount(stars[dup_src], minlength=6)
            stats["rating_counts"] = [x + int(y) for x, y in zip(stats["rating_counts"], counts)]
            stats["lines"] += total
            stats["good_lines"] += g + len(dup_src)
            stats["duplicate_lines"] += len(dup_src)
    os.replace(tmp, task["path"])
    return stats


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------

def style_kind(category: str) -> int:
    """Which STYLE_KINDS entry a category's 2018 ``style`` objects use (books have formats...)."""
    for kind, words in ((0, ("book", "kindle", "movies", "cds", "music", "software", "video", "magazine")),
                        (4, ("clothing", "fashion")), (3, ("gift",)), (5, ("beauty", "grocery", "pantry")),
                        (2, ("electronics", "phones", "toys", "automotive", "office"))):
        if any(w in category for w in words):
            return kind
    return 1


def category_names(n_files: int) -> list[str]:
    out = []
    for k in range(n_files):
        base = CATEGORIES[k % len(CATEGORIES)]
        out.append(base if k < len(CATEGORIES) else f"{base}_{k // len(CATEGORIES) + 1}")
    return out


def generate(rows: int, out_dir: str | Path, fmt: str = "2018", *, users: int | None = None,
             items: int | None = None, seed: int = 0, files: int = 1, bad_fraction: float = 0.0,
             duplicate_fraction: float = 0.01, repeat_fraction: float = 0.01, processes: int | None = None,
             chunk_rows: int = 100_000, compresslevel: int = 1, quiet: bool = True) -> dict[str, Any]:
    """Write ``rows`` lines (good + duplicate + bad) into ``files`` gzipped JSON-lines files.

    ``duplicate_fraction`` of the lines are exact copies of a good line, ``bad_fraction`` are bad
    lines (split evenly over BAD_KINDS), ``repeat_fraction`` of the distinct good lines re-rate an
    already rated (user, item) pair at another time. Returns (and writes to manifest.json) the exact
    counts. Same arguments, same bytes.
    """
    started = time.time()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    for name, frac in (("bad_fraction", bad_fraction), ("duplicate_fraction", duplicate_fraction),
                       ("repeat_fraction", repeat_fraction)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if rows < 1 or files < 1 or chunk_rows < 1:
        raise ValueError("rows, files and chunk_rows must be positive")
    n_bad = round(rows * bad_fraction)
    n_dup = round(rows * duplicate_fraction)
    n_good = rows - n_bad - n_dup
    if n_good < 1:
        raise ValueError("bad_fraction + duplicate_fraction leave no good lines")
    n_users = int(users or max(2, n_good // 5))
    n_items = int(items or max(2, n_good // 15))
    if n_users < 1 or n_items < 1 or n_items >= 2 ** 31 or n_users >= 2 ** 31:
        raise ValueError("users and items must be between 1 and 2^31")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(np.random.SeedSequence([seed, FORMATS.index(fmt)]))
    u, it, cat = _sample_pairs(rng, n_good, n_users, n_items, files)
    n_rep = round(n_good * repeat_fraction) if n_good > 1 else 0
    if n_rep:  # some users rate an item again, later (clean.py keeps the latest)
        target = rng.choice(n_good, n_rep, replace=False)
        source = rng.integers(0, n_good, n_rep)
        source = np.where(source == target, (source + 1) % n_good, source)
        u[target], it[target], cat[target] = u[source], it[source], cat[source]
    ts, stars = _times_and_ratings(rng, u, it, fmt, n_users, n_items)
    make_lines_distinct(u, it, ts, n_items, 1000 if fmt == "2023" else DAY)
    keys = u.astype(np.int64) * n_items + it
    unique_pairs = int(len(np.unique(keys)))
    del keys
    distinct_users = int(np.count_nonzero(np.bincount(u, minlength=n_users)))
    item_counts = np.bincount(it, minlength=n_items)
    distinct_items = int(np.count_nonzero(item_counts))
    top = np.sort(item_counts)[::-1]
    top_1pct_items_share = float(top[: max(1, n_items // 100)].sum() / n_good)
    del item_counts, top

    order = np.argsort(cat, kind="stable")  # rows grouped by file, in drawing order within a file
    per_file = np.bincount(cat, minlength=files)
    tmp = out / f".gen_fuzz_tmp_{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    try:
        arrays = {}
        for name, arr in (("users", u), ("items", it), ("ts", ts), ("stars", stars)):
            arrays[name] = str(tmp / f"{name}.npy")
            np.save(arrays[name], arr[order])
        del u, it, ts, stars, cat, order

        names = category_names(files)
        dups = split_counts(n_dup, per_file)
        bads = {k: split_counts(v, per_file) for k, v in zip(BAD_KINDS, split_counts(n_bad, [1] * len(BAD_KINDS)))}
        bounds = np.concatenate([[0], np.cumsum(per_file)]).tolist()
        tasks = [{"fmt": fmt, "arrays": arrays, "start": bounds[k], "end": bounds[k + 1], "seed": seed,
                  "file_index": k, "name": f"amazon{fmt}_{names[k]}.jsonl.gz",
                  "path": str(out / f"amazon{fmt}_{names[k]}.jsonl.gz"),
                  "category": names[k].replace("_", " ").title(), "duplicates": dups[k],
                  "bad": {kind: bads[kind][k] for kind in BAD_KINDS}, "n_items": n_items,
                  "style_kind": style_kind(names[k]),
                  "chunk_rows": chunk_rows, "compresslevel": compresslevel} for k in range(files)]
        # Files with no rows at all (tiny runs, many files) are still written, empty, so a glob sees K files.
        pools(fmt)  # build once here; forked workers inherit it
        procs = max(1, min(processes or os.cpu_count() or 1, files))
        if procs == 1:
            results = [write_file(t) for t in tasks]
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            by_size = sorted(tasks, key=lambda t: t["start"] - t["end"])  # biggest first
            with ctx.Pool(procs) as pool:
                done = {r["path"]: r for r in pool.imap_unordered(write_file, by_size)}
            results = [done[t["name"]] for t in tasks]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    bad_total = {k: sum(r["bad_lines"][k] for r in results) for k in BAD_KINDS}
    good_lines = sum(r["good_lines"] for r in results)
    dup_lines = sum(r["duplicate_lines"] for r in results)
    lines = sum(r["lines"] for r in results)
    ratings = [sum(r["rating_counts"][s] for r in results) for s in range(6)]
    if (lines, good_lines, dup_lines, sum(bad_total.values())) != (rows, n_good + n_dup, n_dup, n_bad):
        raise RuntimeError("written line counts do not match the plan")  # a bug here, never in the data
    reasons: dict[str, int] = {}
    for k, v in bad_total.items():
        if v:
            reasons[LOAD_REASON[k]] = reasons.get(LOAD_REASON[k], 0) + v
    manifest = {
        "synthetic": True, "generator": "bench/gen/fuzz.py", "format": fmt, "seed": seed,
        "users": n_users, "items": n_items, "lines": lines, "good_lines": good_lines,
        "distinct_good_lines": n_good, "duplicate_lines": dup_lines,
        "repeated_pair_lines": n_good - unique_pairs, "unique_pairs": unique_pairs,
        "bad_lines": bad_total, "bad_lines_total": sum(bad_total.values()),
        "distinct_users": distinct_users, "distinct_items": distinct_items,
        "top_1pct_items_share": round(top_1pct_items_share, 4),
        "rating_counts": {str(s): ratings[s] for s in range(1, 6)},
        "files": results,
        "expected": {  # what spark_jobs/load.py and clean.py must report for exactly these files
            "load": {"lines": lines, "reviews": good_lines, "products": 0, "quarantined": sum(bad_total.values()),
                     "quarantine_reasons": reasons},
            "clean": {"reviews_in": good_lines, "exact duplicate lines": dup_lines,
                      "repeated user-item pairs": n_good - unique_pairs, "reviews_out": unique_pairs},
        },
        "arguments": {"rows": rows, "files": files, "bad_fraction": bad_fraction,
                      "duplicate_fraction": duplicate_fraction, "repeat_fraction": repeat_fraction},
        "seconds": round(time.time() - started, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if not quiet:
        print_summary(manifest, out)
    return manifest


