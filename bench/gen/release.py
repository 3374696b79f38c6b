"""Files of the Amazon 2018 release's shape: 29 category review files, each with its metadata file.

``generate_release(scale, out_dir)`` writes ``<Category>.json.gz`` and ``meta_<Category>.json.gz``
for the release's 29 categories, in its relative sizes; ``scale`` 1.0 is the release's 233.1M
review lines from 43.5M users over 15.2M products (0.001 = 233k lines). Same seed, same bytes.

How a review comes about (the latent taste model, so that a recommender can beat popularity):

* every user has a number of reviews drawn from the per-user law measured on the real files
  (``USER_COUNT_*``) and a persona: a point in a K=16 factor space; their own factor is the
  persona's plus personal noise (from a hash of the user id: no per-user table is stored);
* personas prefer categories (a persona x category table fitted so the categories keep the
  release's sizes): each of a user's reviews picks a category from their persona's row;
* within a category, products fall into clusters (subcategories, written to the metadata's
  ``category`` list) with a centroid in the factor space and a popularity mass; a review picks a
  cluster by softmax(TASTE_STRENGTH x user factor . centroid + log mass), then a product of that
  cluster by popularity (Zipf, exponent from the measured per-product tail);
* stars come from product quality + user leniency + user factor . product factor + noise, cut at
  the measured star shares; dates from the user's active years and the product's launch.

Streaming: the parent plans users in chunks (who writes how many reviews in which category) into
one spool file of user ids per category (4 bytes per review, on disk); one process per category
then reads its spool 100k reviews at a time, draws products, stars and dates, and writes JSON.
A user's reviews of a category lie in one chunk, so repeated (user, product) pairs are found and
counted exactly without holding the file; the manifest's counts are counts of what was written.
"""
from __future__ import annotations

import gzip
import json
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.gen.formats import (BAD_KINDS, DAY, LOAD_REASON, TIME_RANGE, YEAR, LineShape, format_lines,
                               item_codes, with_dirt)
from bench.gen.sampling import hash_normal, make_lines_distinct, mix64, split_counts, unit, zipf_from_uniform
from bench.gen.vocabulary import NOUNS, POS, _esc, _syllable_words, pools

# ---------------------------------------------------------------------------------------------
# the release (https://nijianmo.github.io/amazon/index.html, Ni, Li and McAuley, EMNLP 2019):
# per category (file name, reviews, metadata products) from its "complete review data" table.
# The rows sum to 230,139,802 reviews and 15,177,901 products; the headline is 233.1M reviews from
# 43.5M users, so --scale 1.0 writes 233.1M review lines in these proportions.
# ---------------------------------------------------------------------------------------------
RELEASE_CATEGORIES = (
    ("AMAZON_FASHION", 883_636, 186_637), ("All_Beauty", 371_345, 32_992), ("Appliances", 602_777, 30_459),
    ("Arts_Crafts_and_Sewing", 2_875_917, 303_426), ("Automotive", 7_990_166, 932_019),
    ("Books", 51_311_621, 2_935_525), ("CDs_and_Vinyl", 4_543_369, 544_442),
    ("Cell_Phones_and_Accessories", 10_063_255, 590_269), ("Clothing_Shoes_and_Jewelry", 32_292_099, 2_685_059),
    ("Digital_Music", 1_584_082, 465_392), ("Electronics", 20_994_353, 786_868), ("Gift_Cards", 147_194, 1_548),
    ("Grocery_and_Gourmet_Food", 5_074_160, 287_209), ("Home_and_Kitchen", 21_928_568, 1_301_225),
    ("Industrial_and_Scientific", 1_758_333, 167_524), ("Kindle_Store", 5_722_988, 493_859),
    ("Luxury_Beauty", 574_628, 12_308), ("Magazine_Subscriptions", 89_689, 3_493),
    ("Movies_and_TV", 8_765_568, 203_970), ("Musical_Instruments", 1_512_530, 120_400),
    ("Office_Products", 5_581_313, 315_644), ("Patio_Lawn_and_Garden", 5_236_058, 279_697),
    ("Pet_Supplies", 6_542_483, 206_141), ("Prime_Pantry", 471_614, 10_815), ("Software", 459_436, 26_815),
    ("Sports_and_Outdoors", 12_980_837, 962_876), ("Tools_and_Home_Improvement", 9_015_203, 571_982),
    ("Toys_and_Games", 8_201_231, 634_414), ("Video_Games", 2_565_349, 84_893),
)
RELEASE_REVIEWS = 233_100_000
RELEASE_USERS = 43_500_000

# ---------------------------------------------------------------------------------------------
# measured skew: `python -m bench.gen.measure --data ../shared/data` (numbers of 2026-11-30).
# The shared 2018/2014 files are 5-cores (every user and product has >= 5 reviews), which cut the
# head of the count laws but not their tails: the tail exponents are fitted above 5, the means
# are the release's own (233.1M / 43.5M users = 5.36 reviews per user; 233.1M / 15.2M = 15.3).
# ---------------------------------------------------------------------------------------------
# Reviews per user: P(n) ~ (n + c)^-USER_COUNT_ALPHA, n >= 1; alpha = 3.604, fitted (discrete
# power-law MLE, n >= 5) on the 2018 All_Beauty, AMAZON_FASHION, Appliances, Gift_Cards and the
# 2014 Musical_Instruments 5-cores; c is solved so that the mean is 5.36.
USER_COUNT_ALPHA = 3.604
USER_COUNT_MEAN = RELEASE_REVIEWS / RELEASE_USERS
USER_COUNT_MAX = 10_000
# Reviews per product: tail exponent 2.263 on the same files (n >= 5); a Zipf rank law with
# exponent s has a count tail of exponent 1 + 1/s, so s = 1 / 1.263.
ITEM_COUNT_ALPHA = 2.263
ITEM_ZIPF_S = 1.0 / (ITEM_COUNT_ALPHA - 1.0)
ITEM_ZIPF_Q = 0.0005
# Stars 1..5: mean over the four 2018 files of each file's distinct-line shares.
STAR_SHARE = (0.026, 0.0241, 0.0451, 0.0814, 0.8234)
# Per line (2018 files, distinct lines): review length median per star and sd of log length,
# verified 0.8996, "vote" present 0.0918 (median 3, p90 15), "image" 0.0196, "style" 0.7189.
RELEASE_SHAPE = LineShape(median_text_chars={1: 128, 2: 167, 3: 170, 4: 131, 5: 56}, text_log_sd=1.2,
                          verified_share=0.8996, vote_share=0.0918, image_share=0.0196, style_item_share=0.72)
# Metadata (2018 meta_Gift_Cards, the one 2018 metadata file shared): share of products with a
# price 0.234, a brand 0.341, images 0.427, also_buy 0.217, also_view 0.569.
META_SHARE = {"price": 0.234, "brand": 0.341, "image": 0.427, "also_buy": 0.217, "also_view": 0.569}

# ---------------------------------------------------------------------------------------------
# latent taste (chosen, not measured: the real files have no ground truth for it)
# ---------------------------------------------------------------------------------------------
FACTORS = 16
PERSONAS = 512
PERSONAL_NOISE = 0.6        # user factor = normalize(persona + PERSONAL_NOISE * N(0, I/K))
ITEM_NOISE = 0.4            # product factor = normalize(cluster centroid + ITEM_NOISE * N(0, I/K))
CLUSTER_SPREAD = 1.2        # centroid = normalize(category direction + CLUSTER_SPREAD * N(0, I/K))
CATEGORY_TASTE = 3.0        # persona x category affinity exp(CATEGORY_TASTE * cosine), then fitted to sizes
# Share of a user's reviews in their one home category: the release's users are loyal to one
# category (Electronics keeps 32.1% of its reviews in its 5-core). Measured at scale 0.01 with
# `python -m bench.gen.measure --five-cores DIR`: 9.9% with personas alone, 32.0% with 0.5.
HOME_CATEGORY_SHARE = 0.5
TASTE_STRENGTH = 12.0       # cluster logits: TASTE_STRENGTH * cosine(user, centroid) + log(mass)
RATING_SD = {"item": 0.6, "user": 0.5, "taste": 1.5, "noise": 0.8}
CHUNK_USERS = 250_000
CHUNK_REVIEWS = 100_000


def file_name(category: str, compresslevel: int, meta: bool = False) -> str:
    return f"{'meta_' if meta else ''}{category}.json{'.gz' if compresslevel else ''}"


def display_name(category: str) -> str:
    """What spark_jobs/load.py makes of the file name ('Clothing_Shoes_and_Jewelry' -> 'Clothing Shoes And Jewelry')."""
    return " ".join(w.capitalize() for w in category.split("_"))


@lru_cache(maxsize=4)
def user_count_law(mean: float = USER_COUNT_MEAN, alpha: float = USER_COUNT_ALPHA,
                   n_max: int = USER_COUNT_MAX) -> tuple[float, np.ndarray]:
    """(c, cumulative P(n <= k) for k = 1..n_max) of P(n) ~ (n + c)^-alpha with the given mean."""
    n = np.arange(1, n_max + 1, dtype=np.float64)

    def mean_of(c: float) -> float:
        w = (n + c) ** -alpha
        return float((n * w).sum() / w.sum())

    lo, hi = -0.99, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_of(mid) < mean else (lo, mid)
    c = (lo + hi) / 2
    w = (n + c) ** -alpha
    return c, np.cumsum(w) / w.sum()


def sizes(scale: float) -> dict[str, Any]:
    """Reviews, users and products per category at ``scale`` (products at least 1 per category)."""
    weights = np.array([r for _, r, _ in RELEASE_CATEGORIES], np.float64)
    products = [max(1, round(p * scale)) for _, _, p in RELEASE_CATEGORIES]
    return {"users": max(1, round(RELEASE_USERS * scale)), "review_share": weights / weights.sum(),
            "products": products, "offsets": np.concatenate([[0], np.cumsum(products)]).astype(np.int64).tolist()}


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Taste:
    """The latent model's tables (small: personas, categories, clusters), rebuilt from the seed anywhere."""

    def __init__(self, seed: int, scale: float):
        rng = np.random.default_rng([seed, 1729])
        sz = sizes(scale)
        self.products = sz["products"]
        self.offsets = sz["offsets"]
        n_cat = len(RELEASE_CATEGORIES)
        k = FACTORS
        self.personas = _unit_rows(rng.normal(0, 1, (PERSONAS, k))).astype(np.float32)
        self.cat_dir = _unit_rows(rng.normal(0, 1, (n_cat, k)))
        affinity = np.exp(CATEGORY_TASTE * (self.personas @ self.cat_dir.T))
        # Sinkhorn: rows (personas, equally many reviews each in expectation) sum to 1, columns to
        # the categories' review shares, so the categories keep the release's relative sizes.
        w = affinity.copy()
        target = sz["review_share"] * PERSONAS
        for _ in range(500):
            w *= (target / w.sum(axis=0))[None, :]
            w /= w.sum(axis=1, keepdims=True)
        cum = np.cumsum(w, axis=1)
        cum[:, -1] = 1.0
        self.cat_cum = cum
        # Offsetting each persona's cumulative row by its index makes one sorted array, so a
        # review's category is one searchsorted for all personas at once.
        self.cat_cum_flat = (np.arange(PERSONAS)[:, None] + cum).ravel()
        self.clusters, self.centroids, self.log_mass = [], [], []
        for c in range(n_cat):
            n_items = self.products[c]
            n_clu = int(min(n_items, max(2, min(512, round(math.sqrt(n_items) / 2)))))
            self.clusters.append(n_clu)
            cen = _unit_rows(self.cat_dir[c][None, :] + CLUSTER_SPREAD * rng.normal(0, 1 / math.sqrt(k), (n_clu, k)))
            self.centroids.append(cen.astype(np.float32))
            mass = rng.lognormal(0, 1.0, n_clu) * self.cluster_sizes(c)
            self.log_mass.append(np.log(mass / mass.sum()).astype(np.float32))
        self.cuts = self._rating_cuts(rng)


    def cluster_sizes(self, c: int) -> np.ndarray:
        """Products of category c in each cluster: cluster k holds local ids k, k + C, k + 2C, ..."""
        n, n_clu = self.products[c], self.clusters[c]
        return (n - np.arange(n_clu) + n_clu - 1) // n_clu

    def user_factors(self, users: np.ndarray, salt: int = 0) -> np.ndarray:
        persona = (mix64(users, 101) % np.uint64(PERSONAS)).astype(np.intp)
        noise = hash_normal(users, 202 + salt, FACTORS) * (PERSONAL_NOISE / math.sqrt(FACTORS))
        return _unit_rows(self.personas[persona] + noise).astype(np.float32)

    def item_factors(self, c: int, local: np.ndarray) -> np.ndarray:
        items, back = np.unique(local, return_inverse=True)  # a chunk names popular products many times
        return self._item_factors(c, items)[back]

    def _item_factors(self, c: int, local: np.ndarray) -> np.ndarray:
        cen = self.centroids[c][local % self.clusters[c]]
        noise = hash_normal(local + self.offsets[c], 303, FACTORS) * (ITEM_NOISE / math.sqrt(FACTORS))
        return _unit_rows(cen + noise).astype(np.float32)

    def score(self, c: int, users: np.ndarray, local: np.ndarray, u_f: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
        """The latent rating score of each (user, product) row (stars are its cut)."""
        glob = local + self.offsets[c]
        taste = np.einsum("ij,ij->i", u_f, self.item_factors(c, local))
        return (RATING_SD["item"] * hash_normal(glob, 404, 1)[:, 0] + RATING_SD["user"] * hash_normal(users, 505, 1)[:, 0]
                + RATING_SD["taste"] * taste + rng.normal(0, RATING_SD["noise"], len(users)))

    def _rating_cuts(self, rng: np.random.Generator) -> np.ndarray:
        """Score cut points giving STAR_SHARE, from a pilot sample drawn exactly as the reviews are."""
        n_cat = len(RELEASE_CATEGORIES)
        users = np.unique(rng.integers(0, 2 ** 31, 100_000))
        persona = (mix64(users, 101) % np.uint64(PERSONAS)).astype(np.int64)
        cat = np.clip(np.searchsorted(self.cat_cum_flat, persona + rng.random(len(users)), side="right")
                      - persona * n_cat, 0, n_cat - 1)
        scores = []
        for c in range(n_cat):
            u = users[cat == c]
            if len(u) == 0:
                continue
            u_f = self.user_factors(u)
            local = _draw_items(self, c, u_f, np.arange(len(u)), rng.random(len(u)), rng.random(len(u)))
            scores.append(self.score(c, u, local, u_f, rng))
        return np.quantile(np.concatenate(scores), np.cumsum(STAR_SHARE)[:-1])


@lru_cache(maxsize=2)
def get_taste(seed: int, scale: float) -> Taste:
    """One Taste per (seed, scale) and process; built in the parent, forked workers inherit it."""
    return Taste(seed, scale)


# ---------------------------------------------------------------------------------------------
# the plan (parent): users -> review counts -> categories, spooled per category
# ---------------------------------------------------------------------------------------------

def plan(seed: int, scale: float, spool: Path, taste: Taste) -> dict[str, Any]:
    """Write spool/<c>.u32 (the user id of each review of category c, users ascending); return user stats."""
    n_users = sizes(scale)["users"]
    n_cat = len(RELEASE_CATEGORIES)
    n_max = min(USER_COUNT_MAX, max(1, sum(taste.products) // 4))
    _, cdf = user_count_law()
    hist = np.zeros(USER_COUNT_MAX + 1, np.int64)
    outs = [open(spool / f"{c}.u32", "wb") for c in range(n_cat)]
    try:
        for chunk, a in enumerate(range(0, n_users, CHUNK_USERS)):
            rng = np.random.default_rng([seed, 7, chunk])
            users = np.arange(a, min(n_users, a + CHUNK_USERS), dtype=np.int64)
            counts = np.minimum(np.searchsorted(cdf, rng.random(len(users)), side="right") + 1, n_max)
            hist += np.bincount(counts, minlength=USER_COUNT_MAX + 1)
            rows = np.repeat(users, counts)
            persona = (mix64(rows, 101) % np.uint64(PERSONAS)).astype(np.int64)
            # A review goes to the user's home category (drawn once per user from the persona's
            # mix, so the categories keep their sizes) with probability HOME_CATEGORY_SHARE.
            pick = np.where(rng.random(len(rows)) < HOME_CATEGORY_SHARE, unit(rows, 808), rng.random(len(rows)))
            cat = np.searchsorted(taste.cat_cum_flat, persona + pick, side="right") - persona * n_cat
            cat = np.clip(cat, 0, n_cat - 1)
            order = np.argsort(cat, kind="stable")  # users stay ascending within a category
            bounds = np.concatenate([[0], np.cumsum(np.bincount(cat, minlength=n_cat))])
            by_cat = rows[order].astype(np.uint32)
            for c in range(n_cat):
                by_cat[bounds[c]:bounds[c + 1]].tofile(outs[c])
    finally:
        for f in outs:
            f.close()
    n = np.arange(len(hist))
    reviews = int((n * hist).sum())
    return {"users": n_users, "reviews_planned": reviews,
            "one_review_user_share": round(float(hist[1] / n_users), 4),
            "mean_reviews_per_user": round(reviews / n_users, 3), "max_reviews_per_user": int(n[hist > 0].max()),
            "top_1pct_users_share": round(top_share(hist, max(1, n_users // 100)) / reviews, 4)}


def top_share(hist: np.ndarray, k: int) -> float:
    """Reviews held by the k biggest holders, from a histogram (hist[n] = holders with n reviews)."""
    n = np.arange(len(hist))[::-1]
    h = hist[::-1]
    cum = np.cumsum(h)
    full = cum <= k
    taken = float((n[full] * h[full]).sum())
    rest = k - int(cum[full][-1]) if full.any() else k
    nxt = np.flatnonzero(~full)
    return taken + (rest * float(n[nxt[0]]) if len(nxt) and rest > 0 else 0.0)


# ---------------------------------------------------------------------------------------------
# one category (worker process)
# ---------------------------------------------------------------------------------------------

def _chunk_bounds(users: np.ndarray, target: int) -> list[int]:
    """Cut points near every ``target`` reviews that never split one user's reviews."""
    bounds, a, n = [0], 0, len(users)
    while a < n:
        b = min(n, a + target)
        if b < n:
            b = int(np.searchsorted(users, users[b - 1], side="right"))
        bounds.append(b)
        a = b
    return bounds


def _cluster_cdf(taste: Taste, c: int, u_f: np.ndarray) -> np.ndarray:
    """Each user's cumulative cluster probabilities, row r offset by r (one sorted array for all users)."""
    logits = TASTE_STRENGTH * (u_f @ taste.centroids[c].T) + taste.log_mass[c][None, :]
    logits -= logits.max(axis=1, keepdims=True)
    cum = np.cumsum(np.exp(logits), axis=1)
    cum /= cum[:, -1:]
    cum[:, -1] = 1.0
    return (np.arange(len(u_f))[:, None] + cum).ravel()


def _draw_items(taste: Taste, c: int, u_f: np.ndarray, row_user: np.ndarray, u: np.ndarray,
                v: np.ndarray, flat: np.ndarray | None = None) -> np.ndarray:
    """Local product id per review: a cluster by the user's taste, then a product by popularity."""
    n_clu = taste.clusters[c]
    if flat is None:
        flat = _cluster_cdf(taste, c, u_f)
    clu = np.searchsorted(flat, row_user + u, side="right") - row_user * n_clu
    clu = np.clip(clu, 0, n_clu - 1)
    size = taste.cluster_sizes(c)[clu]
    rank = zipf_from_uniform(v, size, ITEM_ZIPF_S, ITEM_ZIPF_Q)
    return clu + rank * n_clu


def write_category(task: dict[str, Any]) -> dict[str, Any]:
    """Write one category's review file and metadata file; return their exact counts."""
    started = time.time()
    c, seed, out = task["index"], task["seed"], Path(task["out"])
    name = RELEASE_CATEGORIES[c][0]
    taste = get_taste(seed, task["scale"])
    n_items = taste.products[c]
    offset = taste.offsets[c]
    # Mapped, not read: Books alone is 51M reviews (205 MB of ids) at scale 1.0.
    spool = (np.memmap(task["spool"], dtype=np.uint32, mode="r") if os.path.getsize(task["spool"])
             else np.zeros(0, np.uint32))
    # The users x subcategories table of a chunk is its biggest array: at most ~8M cells (~100 MB
    # with temporaries) however many subcategories (512 in Books at scale 1.0).
    bounds = _chunk_bounds(spool, max(5_000, min(CHUNK_REVIEWS, 8_000_000 // taste.clusters[c])))
    chunk_sizes = np.diff(bounds)
    dups = split_counts(task["duplicates"], chunk_sizes) if len(chunk_sizes) else []
    bads = {k: split_counts(v, chunk_sizes) if len(chunk_sizes) else [] for k, v in task["bad"].items()}
    item_reviews = np.zeros(n_items, np.int64)
    stats = {"category": name, "path": file_name(name, task["compresslevel"]), "kind": "reviews", "lines": 0,
             "good_lines": 0, "distinct_good_lines": 0, "duplicate_lines": 0, "unique_pairs": 0,
             "bad_lines": dict.fromkeys(BAD_KINDS, 0), "rating_counts": [0] * 6, "users": 0}
    lo, hi = TIME_RANGE["2018"]
    span = hi - lo
    path = out / stats["path"]
    with _open_out(path, task["compresslevel"]) as f:
        for k in range(len(chunk_sizes)):
            rng = np.random.default_rng([seed, 11, c, k])
            users = spool[bounds[k]:bounds[k + 1]].astype(np.int64)
            uniq, row_user = np.unique(users, return_inverse=True)
            u_f = taste.user_factors(uniq)
            flat = _cluster_cdf(taste, c, u_f)
            local = _draw_items(taste, c, u_f, row_user, rng.random(len(users)), rng.random(len(users)), flat)
            # A user reviews a product once, mostly: redraw accidental repeats a few times; what
            # is left (a heavy user in a small category) stays, counted, as real data has it.
            for _ in range(6):
                key = users * n_items + local
                _, first = np.unique(key, return_index=True)
                again = np.ones(len(key), bool)
                again[first] = False
                idx = np.flatnonzero(again)
                if len(idx) == 0 or n_items < 2:
                    break
                local[idx] = _draw_items(taste, c, u_f, row_user[idx], rng.random(len(idx)), rng.random(len(idx)), flat)
            glob = local + offset
            # Dates: the user is active around a moment of their own (more users in later years),
            # a product is reviewed after its launch.
            t = lo + span * unit(users, 606) ** (1 / 3) + rng.normal(0, 1.5 * YEAR, len(users))
            launch = lo + span * unit(glob, 707) ** (1 / 2.5) - 2 * YEAR
            early = t < launch
            t[early] = launch[early] + rng.exponential(120 * DAY, int(early.sum()))
            t = np.where(t > hi, hi - (t - hi), t)
            ts = (np.clip(t, lo, hi).astype(np.int64) // DAY) * DAY
            make_lines_distinct(users, local, ts, n_items, DAY)
            stars = (np.searchsorted(taste.cuts, taste.score(c, users, local, u_f[row_user], rng)) + 1).astype(np.int8)
            good = format_lines("2018", users, glob, ts, stars, rng, 0, task["style_kind"], RELEASE_SHAPE)
            bad = {kind: bads[kind][k] for kind in BAD_KINDS}
            lines, dup_src = with_dirt(good, dups[k], bad, "2018", rng)
            f.write(("\n".join(lines) + "\n").encode("ascii"))
            item_reviews += np.bincount(local, minlength=n_items)
            counts = np.bincount(stars, minlength=6) + np.bincount(stars[dup_src], minlength=6)
            stats["rating_counts"] = [x + int(y) for x, y in zip(stats["rating_counts"], counts)]
            stats["lines"] += len(lines)
            stats["good_lines"] += len(good) + len(dup_src)
            stats["distinct_good_lines"] += len(good)
            stats["duplicate_lines"] += len(dup_src)
            stats["unique_pairs"] += int(len(np.unique(users * n_items + local)))
            stats["users"] += len(uniq)
            for kind in BAD_KINDS:
                stats["bad_lines"][kind] += bad[kind]
    stats["repeated_pair_lines"] = stats["distinct_good_lines"] - stats["unique_pairs"]
    stats["products_reviewed"] = int(np.count_nonzero(item_reviews))
    stats["item_review_histogram"] = np.bincount(item_reviews).tolist()
    meta = write_metadata(taste, c, out, task["compresslevel"], seed)
    stats["seconds"] = round(time.time() - started, 2)
    return {"reviews": stats, "metadata": meta}


def _open_out(path: Path, compresslevel: int):
    if compresslevel:
        return gzip.GzipFile(filename="", mode="wb", fileobj=open(path, "wb"), mtime=0, compresslevel=compresslevel)
    return open(path, "wb")


# ---------------------------------------------------------------------------------------------
# metadata lines (2018 layout: the key order of the real meta files, images as imageURL lists)
# ---------------------------------------------------------------------------------------------

META = ('{"category": %s, "tech1": "", "description": %s, "fit": "", "title": "%s", "also_buy": %s, '
        '"tech2": "", "brand": "%s", "feature": %s, "rank": "%s", "also_view": %s, "details": {}, '
        '"main_cat": "%s", "similar_item": "", "date": "%s", "price": "%s", "asin": "%s", '
        '"imageURL": %s, "imageURLHighRes": %s}')
IMG = "https://images-na.ssl-images-amazon.com/images/I/"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


@lru_cache(maxsize=1)
def _meta_words() -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(4242)
    return _syllable_words(rng, 3000), _syllable_words(rng, 500)


def write_metadata(taste: Taste, c: int, out: Path, compresslevel: int, seed: int) -> dict[str, Any]:
    """meta_<Category>: one line per product of the category, every product exactly once."""
    name = RELEASE_CATEGORIES[c][0]
    n_items, n_clu, offset = taste.products[c], taste.clusters[c], taste.offsets[c]
    brands, sub_words = _meta_words()
    main = display_name(name)
    subcats = [_esc(f"{sub_words[(c * 131 + k) % len(sub_words)]} {NOUNS[(c * 7 + k) % len(NOUNS)].title()}")
               for k in range(n_clu)]
    path = out / file_name(name, compresslevel, meta=True)
    lines_written = 0
    with _open_out(path, compresslevel) as f:
        for a in range(0, n_items, CHUNK_REVIEWS):
            local = np.arange(a, min(n_items, a + CHUNK_REVIEWS), dtype=np.int64)
            glob = local + offset
            rng = np.random.default_rng([seed, 13, c, a])
            n = len(local)
            asin = item_codes(glob, "2018")
            clu = (local % n_clu).tolist()
            brand_i = (mix64(glob, 808) % np.uint64(len(brands))).astype(np.intp)
            has_brand = unit(glob, 809) < META_SHARE["brand"]
            noun_i = (mix64(glob, 810) % np.uint64(len(NOUNS))).astype(np.intp).tolist()
            adj_i = (mix64(glob, 811) % np.uint64(len(POS))).astype(np.intp).tolist()
            price = np.where(unit(glob, 812) < META_SHARE["price"],
                             np.round(np.exp(rng.normal(3.0, 1.0, n)), 2), 0.0).tolist()
            img = unit(glob, 813) < META_SHARE["image"]
            buy = unit(glob, 814) < META_SHARE["also_buy"]
            view = unit(glob, 815) < META_SHARE["also_view"]
            # Related products: the most popular of the same cluster (ranks 0..4: local k + j*C).
            rel = [[clu[i] + j * n_clu for j in range(5) if clu[i] + j * n_clu < n_items and clu[i] + j * n_clu != a + i]
                   for i in range(n)]
            rel_codes = item_codes(np.array(sorted({x for r in rel for x in r}), np.int64) + offset, "2018") if n else []
            code_of = dict(zip(sorted({x for r in rel for x in r}), rel_codes))
            year = (2000 + (mix64(glob, 816) % np.uint64(19))).astype(np.int64).tolist()
            img_key = (mix64(glob, 817) % np.uint64(10 ** 10)).tolist()
            rows = []
            for i in range(n):
                b = brands[brand_i[i]] if has_brand[i] else ""
                title = f"{b or brands[brand_i[i]]} {POS[adj_i[i]].title()} {NOUNS[noun_i[i]].title()} {asin[i][-4:]}"
                related = json.dumps([code_of[x] for x in rel[i]])
                images = (f'["{IMG}{img_key[i]:010d}._SS40_.jpg"]', f'["{IMG}{img_key[i]:010d}._SL1500_.jpg"]') \
                    if img[i] else ("[]", "[]")
                rows.append(META % (
                    f'["{main}", "{subcats[clu[i]]}"]', f'["{_esc(title)}: a {NOUNS[noun_i[i]]} for every day."]',
                    _esc(title), related if buy[i] else "[]", _esc(b), "[]",
                    f"{(a + i) * 7 + 1:,} in {main} (", related if view[i] else "[]", main,
                    f"{MONTHS[i % 12]} {1 + i % 28}, {year[i]}", f"${price[i]:.2f}" if price[i] else "",
                    asin[i], *images))
            f.write(("\n".join(rows) + "\n").encode("ascii"))
            lines_written += n
    return {"category": name, "path": path.name, "kind": "metadata", "lines": lines_written, "products": lines_written}


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------

def _style_kind(category: str) -> int:
    from bench.gen.fuzz import style_kind

    return style_kind(category.lower())


def generate_release(scale: float, out_dir: str | Path, *, seed: int = 0, processes: int | None = None,
                     compresslevel: int = 1, duplicate_fraction: float = 0.0, bad_fraction: float = 0.0,
                     quiet: bool = True) -> dict[str, Any]:
    """Write the 2018 release's 29 review + 29 metadata files at ``scale``; return (and write) the manifest.

    ``duplicate_fraction`` of the review lines are exact copies of a good line of the same file,
    ``bad_fraction`` are broken lines (split evenly over BAD_KINDS): both relative to the planned
    reviews, placed at random in each file. ``compresslevel`` 0 writes plain ``.json`` files.
    """
    started = time.time()
    if not 0 < scale <= 4:
        raise ValueError(f"scale must be in (0, 4], got {scale}")
    for label, frac in (("bad_fraction", bad_fraction), ("duplicate_fraction", duplicate_fraction)):
        if not 0 <= frac < 1:
            raise ValueError(f"{label} must be in [0, 1), got {frac}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taste = get_taste(seed, scale)
    spool = out / f".gen_release_spool_{os.getpid()}"
    spool.mkdir(exist_ok=True)
    try:
        users = plan(seed, scale, spool, taste)
        n_cat = len(RELEASE_CATEGORIES)
        per_cat = [os.path.getsize(spool / f"{c}.u32") // 4 for c in range(n_cat)]
        dups = split_counts(round(users["reviews_planned"] * duplicate_fraction), per_cat)
        n_bad = split_counts(round(users["reviews_planned"] * bad_fraction), [1] * len(BAD_KINDS))
        bads = {k: split_counts(v, per_cat) for k, v in zip(BAD_KINDS, n_bad)}
        tasks = [{"index": c, "seed": seed, "scale": scale, "out": str(out), "spool": str(spool / f"{c}.u32"),
                  "compresslevel": compresslevel, "duplicates": dups[c],
                  "bad": {k: bads[k][c] for k in BAD_KINDS}, "style_kind": _style_kind(RELEASE_CATEGORIES[c][0])}
                 for c in range(n_cat)]
        pools("2018")  # built once here; forked workers inherit it
        procs = max(1, min(processes or os.cpu_count() or 1, n_cat))
        by_size = sorted(tasks, key=lambda t: -per_cat[t["index"]])  # biggest first
        if procs == 1:
            results = [write_category(t) for t in by_size]
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(procs) as pool:
                results = list(pool.imap_unordered(write_category, by_size))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    results.sort(key=lambda r: r["reviews"]["category"])
    manifest = release_manifest(results, users, scale=scale, seed=seed, compresslevel=compresslevel,
                                duplicate_fraction=duplicate_fraction, bad_fraction=bad_fraction,
                                seconds=round(time.time() - started, 2))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if not quiet:
        print_release_summary(manifest, out)
    return manifest


def release_manifest(results: list[dict], users: dict, **arguments: Any) -> dict[str, Any]:
    """Totals, per-file counts, measured skew of what was written, and what load/clean must report."""
    seconds = arguments.pop("seconds")
    rev = [r["reviews"] for r in results]
    meta = [r["metadata"] for r in results]
    total = lambda key: sum(r[key] for r in rev)  # noqa: E731
    bad = {k: sum(r["bad_lines"][k] for r in rev) for k in BAD_KINDS}
    reasons: dict[str, int] = {}
    for k, v in bad.items():
        if v:
            reasons[LOAD_REASON[k]] = reasons.get(LOAD_REASON[k], 0) + v
    hist = np.zeros(max(len(r["item_review_histogram"]) for r in rev), np.int64)
    for r in rev:
        hist[: len(r["item_review_histogram"])] += r.pop("item_review_histogram")
    n_products = sum(m["products"] for m in meta)
    counts = np.arange(len(hist))
    distinct_good = total("distinct_good_lines")
    ratings = [sum(r["rating_counts"][s] for r in rev) for s in range(6)]
    review_lines, meta_lines = total("lines"), sum(m["lines"] for m in meta)
    return {
        "synthetic": True, "generator": "bench/gen/release.py", "shape": "amazon-2018-release", "format": "2018",
        "seed": arguments["seed"], "scale": arguments["scale"],
        "lines": review_lines + meta_lines, "review_lines": review_lines, "metadata_lines": meta_lines,
        "good_lines": total("good_lines"), "distinct_good_lines": distinct_good,
        "duplicate_lines": total("duplicate_lines"), "repeated_pair_lines": distinct_good - total("unique_pairs"),
        "unique_pairs": total("unique_pairs"), "bad_lines": bad, "bad_lines_total": sum(bad.values()),
        "users": users["users"], "distinct_users": users["users"], "products": n_products,
        "distinct_items": int(hist[1:].sum()), "items": n_products,
        "top_1pct_items_share": round(top_share(hist, max(1, n_products // 100)) / max(1, distinct_good), 4),
        "rating_counts": {str(s): ratings[s] for s in range(1, 6)},
        "skew": {**users, "mean_reviews_per_product": round(distinct_good / max(1, n_products), 3),
                 "unreviewed_product_share": round(float(hist[0] / max(1, n_products)), 4),
                 "max_reviews_per_product": int(counts[hist > 0].max()) if hist.any() else 0,
                 "measured_parameters": json.loads(json.dumps({  # as JSON has them: lists, string keys
                     "user_count_alpha": USER_COUNT_ALPHA, "item_count_alpha": ITEM_COUNT_ALPHA,
                     "star_share": STAR_SHARE, "line_shape": asdict(RELEASE_SHAPE), "meta_share": META_SHARE}))},
        "categories": {r["category"]: {"review_lines": r["lines"], "metadata_lines": m["lines"],
                                       "unique_pairs": r["unique_pairs"], "users": r["users"],
                                       "products_reviewed": r["products_reviewed"]} for r, m in zip(rev, meta)},
        "files": [x for r, m in zip(rev, meta) for x in (r, m)],
        "expected": {
            "load": {"lines": review_lines + meta_lines, "reviews": total("good_lines"), "products": meta_lines,
                     "quarantined": sum(bad.values()), "quarantine_reasons": reasons},
            "clean": {"reviews_in": total("good_lines"), "exact duplicate lines": total("duplicate_lines"),
                      "repeated user-item pairs": distinct_good - total("unique_pairs"),
                      "reviews_out": total("unique_pairs"), "products": n_products, "duplicate product records": 0},
        },
        "arguments": arguments,
        "seconds": seconds,
    }


def print_release_summary(m: dict[str, Any], out: Path) -> None:
    rate = m["lines"] / max(m["seconds"], 1e-9)
    print(f"wrote {len(m['files'])} files ({len(m['categories'])} categories x reviews + metadata) in "
          f"{m['seconds']}s ({rate:,.0f} lines/s) to {out} (scale {m['scale']}, seed {m['seed']})")
    for label, v in (("review lines", m["review_lines"]), ("  exact duplicate lines", m["duplicate_lines"]),
                     ("  repeated user-item pairs", m["repeated_pair_lines"]), ("  bad lines", m["bad_lines_total"]),
                     ("unique user-item pairs", m["unique_pairs"]), ("users", m["users"]),
                     ("products (metadata lines)", m["products"]), ("products with reviews", m["distinct_items"])):
        print(f"  {label:<34}{v:>14,}")
    s = m["skew"]
    print(f"  per user: mean {s['mean_reviews_per_user']}, one review {s['one_review_user_share']:.1%}, max "
          f"{s['max_reviews_per_user']}; per product: mean {s['mean_reviews_per_product']}, max "
          f"{s['max_reviews_per_product']}, top 1% hold {m['top_1pct_items_share']:.1%}; stars 1..5: "
          + ", ".join(f"{m['rating_counts'][str(k)] / max(1, m['good_lines']):.1%}" for k in range(1, 6)))
    print(f"  manifest: {out / 'manifest.json'}")
