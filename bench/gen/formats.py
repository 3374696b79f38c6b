"""Formats: the exact line layouts of the Amazon releases (2014, 2018, 2023 reviews; 2018 metadata).

Lines are stitched with ``%`` from pre-escaped pieces (vocabulary.Pools), never ``json.dumps`` per
line, with the field names, value types and key order of the real files. ``LineShape`` holds the
per-line shares (text length, verified, votes, images, style) a caller may set from measurements.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from bench.gen.sampling import mix64
from bench.gen.vocabulary import pools

FORMATS = ("2014", "2018", "2023")
BAD_KINDS = ("truncated_json", "empty_line", "rating_out_of_range", "missing_asin", "not_an_object")
# The quarantine reason spark_jobs/load.py gives each kind of bad line.
LOAD_REASON = {"truncated_json": "bad JSON", "empty_line": "empty line",
               "rating_out_of_range": "rating out of range", "missing_asin": "missing item",
               "not_an_object": "not a JSON object"}

# Review time ranges of the releases (UTC seconds): reviews start in the late 1990s.
TIME_RANGE = {"2014": (852076800, 1406073600),   # 1997-01-01 .. 2014-07-23
              "2018": (852076800, 1538352000),   # 1997-01-01 .. 2018-10-01
              "2023": (946684800, 1693526400)}   # 2000-01-01 .. 2023-09-01
DAY = 86400
YEAR = 365.25 * DAY


@dataclass(frozen=True)
class LineShape:
    """Per-line shares of a review file; the defaults are the fuzz generator's long-standing ones."""
    median_text_chars: dict[int, float] = field(default_factory=lambda: {1: 260, 2: 300, 3: 250, 4: 200, 5: 140})
    text_log_sd: float = 0.9
    verified_share: float = 0.85          # 2018 (2023 uses 0.9)
    vote_share: float = 0.12              # 2018 lines with a "vote" field
    image_share: float = 0.02             # 2018 lines with an "image" list
    style_item_share: float = 0.55        # 2018 items whose lines carry a "style" object


DEFAULT_SHAPE = LineShape()


# ---------------------------------------------------------------------------------------------
# ids: reviewerID / user_id and ASIN codes, unique per number
# ---------------------------------------------------------------------------------------------

_B36 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
_B64 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+-", dtype=np.uint8)


def _digits(x: np.ndarray, width: int, alphabet: np.ndarray = _B36) -> np.ndarray:
    """(n, width) character codes of ``x`` written in base len(alphabet), most significant first."""
    x = x.astype(np.uint64, copy=True)
    base = np.uint64(len(alphabet))
    out = np.empty((len(x), width), np.uint8)
    for k in range(width - 1, -1, -1):
        out[:, k] = alphabet[(x % base).astype(np.intp)]
        x //= base
    return out


def _join_codes(*parts: np.ndarray | bytes, n: int) -> list[str]:
    """Concatenate fixed-width code blocks (or constant prefixes) row-wise into Python strings."""
    blocks = [np.broadcast_to(np.frombuffer(p, np.uint8), (n, len(p))) if isinstance(p, bytes) else p
              for p in parts]
    codes = np.concatenate(blocks, axis=1).astype(np.uint32)
    return np.ascontiguousarray(codes).view(f"U{codes.shape[1]}").ravel().tolist()


def user_codes(users: np.ndarray, fmt: str) -> list[str]:
    """reviewerID like 'A2IBPI20UZIR0U' (2014/2018) or user_id like 'AEMJ2EG5...' (2023, 28 chars)."""
    first = _digits(mix64(users, 1), 13)  # 36^13 > 2^64, so this part alone is unique per user
    if fmt == "2023":
        return _join_codes(b"AE", first, _digits(mix64(users, 2), 13), n=len(users))
    return _join_codes(b"A", first, n=len(users))


def item_codes(items: np.ndarray, fmt: str, variant: np.ndarray | None = None, n_items: int = 0) -> list[str]:
    """ASINs: 'B0' + 8 base-36 characters; 2014/2018 also have ISBN-like all-digit ASINs (books/music).

    ``variant`` > 0 gives a child ASIN (2023 ``asin`` of a colour/size of ``parent_asin``).
    """
    n = len(items)
    value = items.astype(np.uint64)
    if variant is not None:
        value = value + variant.astype(np.uint64) * np.uint64(max(n_items, 1))
    b_code = (value * np.uint64(1_000_000_007) + np.uint64(12345)) % np.uint64(36 ** 8)
    out = np.asarray(_join_codes(b"B0", _digits(b_code, 8), n=n), dtype=object)
    if fmt != "2023":
        isbn = (mix64(items, 3) % np.uint64(25)) == 0
        if isbn.any():
            sub = items[isbn].astype(np.uint64)
            num = (sub * np.uint64(1_000_003) + np.uint64(7)) % np.uint64(10 ** 9)
            lead = np.where(sub % np.uint64(2) == 0, ord("0"), ord("1")).astype(np.uint8)[:, None]
            out[isbn] = _join_codes(lead, _digits(num, 9, np.frombuffer(b"0123456789", np.uint8)),
                                    n=int(isbn.sum()))
    return out.tolist()


T2014 = ('{"reviewerID": "%s", "asin": "%s", "reviewerName": "%s", "helpful": [%d, %d], "reviewText": "%s", '
         '"overall": %s, "summary": "%s", "unixReviewTime": %d, "reviewTime": "%s"}')
T2018 = ('{%s"overall": %s, %s"verified": %s, "reviewTime": "%s", "reviewerID": "%s", "asin": "%s", %s'
         '"reviewerName": "%s", "reviewText": "%s", "summary": "%s", "unixReviewTime": %d}')
T2023 = ('{"rating": %s, "title": "%s", "text": "%s", "images": %s, "asin": "%s", "parent_asin": "%s", '
         '"user_id": "%s", "timestamp": %d, "helpful_vote": %d, "verified_purchase": %s}')
RATING_TEXT = np.array(["0.0", "1.0", "2.0", "3.0", "4.0", "5.0"], dtype=object)
BOOL_TEXT = np.array(["false", "true"], dtype=object)
IMG = "https://images-na.ssl-images-amazon.com/images/I/"


def _heavy_tail(rng: np.random.Generator, n: int, p_zero: float, scale: float) -> np.ndarray:
    """Vote counts: mostly 0, a Pareto tail (a few reviews collect thousands of votes)."""
    v = np.floor(rng.pareto(1.2, n) * scale).astype(np.int64)
    v[rng.random(n) < p_zero] = 0
    return np.minimum(v, 50_000)


def format_lines(fmt: str, users: np.ndarray, items: np.ndarray, ts: np.ndarray, stars: np.ndarray,
                 rng: np.random.Generator, n_items: int, style_index: int,
                 shape: LineShape = DEFAULT_SHAPE) -> list[str]:
    """The JSON lines of these rows, stitched from pre-escaped pieces: no json.dumps per line (speed)."""
    P = pools(fmt)
    n = len(users)
    # Review text: a window of whole sentences of the rating's sentiment, longer for bad ratings.
    group_of = {1: "neg", 2: "neg", 3: "neu", 4: "pos", 5: "pos"}
    median = np.array([1] + [shape.median_text_chars[r] for r in range(1, 6)], np.float64)
    want = np.clip(rng.lognormal(np.log(median[stars]), shape.text_log_sd), 10, 5000).astype(np.int64)
    first = np.empty(n, np.int64)
    for r in range(1, 6):
        sel = stars == r
        a, b = P.group_range[group_of[r]]
        first[sel] = rng.integers(a, b - 400, int(sel.sum()))
    start = P.starts[first]
    last = np.minimum(np.searchsorted(P.ends, start + want), len(P.ends) - 1)
    end = P.ends[np.maximum(last, first)]
    corpus = P.corpus
    texts = [corpus[s:e] for s, e in zip(start.tolist(), end.tolist())]
    summ = np.empty(n, dtype=object)
    for r in range(1, 6):
        sel = stars == r
        pool = P.summaries[r]
        summ[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
    summaries = summ.tolist()
    rating = RATING_TEXT[stars].tolist()
    uid = user_codes(users, fmt)
    tlist = ts.tolist()

    if fmt == "2023":
        parent = item_codes(items, fmt)
        variant = np.where(rng.random(n) < 0.69, rng.integers(1, 4, n), 0)  # most reviews name a child asin
        child = np.array(item_codes(items, fmt, variant, n_items), dtype=object)  # variant 0 = the parent
        images = np.full(n, "[]", dtype=object)
        has = np.flatnonzero(rng.random(n) < 0.05)
        if len(has):
            keys = _join_codes(_digits(rng.integers(0, 2 ** 62, len(has)), 11, _B64), n=len(has))
            images[has] = [f'[{{"small_image_url": "{IMG}{k}._SL256_.jpg", "medium_image_url": '
                           f'"{IMG}{k}._SL800_.jpg", "large_image_url": "{IMG}{k}._SL1600_.jpg", '
                           f'"attachment_type": "IMAGE"}}]' for k in keys]
        votes = _heavy_tail(rng, n, 0.6, 1.5).tolist()
        verified = BOOL_TEXT[(rng.random(n) < 0.9).astype(np.intp)].tolist()
        return [T2023 % row for row in zip(rating, summaries, texts, images.tolist(), child.tolist(),
                                           parent, uid, tlist, votes, verified)]

    asin = item_codes(items, fmt)
    names = P.names[(mix64(users, 5) % np.uint64(len(P.names))).astype(np.intp)].tolist()
    days = (ts // DAY - P.day0).tolist()
    dates = [P.dates[d] for d in days]
    if fmt == "2014":
        total = _heavy_tail(rng, n, 0.66, 1.0)
        up = rng.binomial(total, 0.8)
        lines = [T2014 % row for row in zip(uid, asin, names, up.tolist(), total.tolist(), texts, rating,
                                            summaries, tlist, dates)]
        drop = {"reviewerName": 0.003}
    else:
        image = np.full(n, "", dtype=object)
        has = np.flatnonzero(rng.random(n) < shape.image_share)
        if len(has):
            keys = _join_codes(_digits(rng.integers(0, 2 ** 62, len(has)), 11, _B64), n=len(has))
            image[has] = [f'"image": ["{IMG}{k}._SY88.jpg"], ' for k in keys]
        vote = np.full(n, "", dtype=object)
        has = np.flatnonzero(rng.random(n) < shape.vote_share)
        if len(has):
            vote[has] = [f'"vote": "{v:,}", ' for v in (2 + _heavy_tail(rng, len(has), 0.0, 3.0)).tolist()]
        style = np.full(n, "", dtype=object)
        pool = P.styles[style_index % len(P.styles)]
        has = np.flatnonzero((mix64(items, 7) % np.uint64(100)).astype(np.int64) < round(100 * shape.style_item_share))
        if len(has):
            base = (mix64(items[has], 9) % np.uint64(len(pool))).astype(np.int64)
            style[has] = pool[(base + rng.integers(0, 4, len(has))) % len(pool)]
        verified = BOOL_TEXT[(rng.random(n) < shape.verified_share).astype(np.intp)].tolist()
        lines = [T2018 % row for row in zip(image.tolist(), rating, vote.tolist(), verified, dates, uid, asin,
                                            style.tolist(), names, texts, summaries, tlist)]
        drop = {"reviewText": 0.001}
    # Rare missing fields of the real files: re-encoded through json, which keeps the key order.
    for key, p in drop.items():
        for k in np.flatnonzero(rng.random(n) < p).tolist():
            d = json.loads(lines[k])
            del d[key]
            lines[k] = json.dumps(d)
    return lines


def bad_line(kind: str, good: str, fmt: str, rng: np.random.Generator) -> str:
    """One line load.py must quarantine, made from a good line of the same file."""
    if kind == "empty_line":
        return ""
    if kind == "truncated_json":  # a cut-off write: never valid, the closing brace is gone
        return good[: int(rng.integers(1, len(good) - 1))]
    d = json.loads(good)
    if kind == "rating_out_of_range":
        d["rating" if fmt == "2023" else "overall"] = 7.0
        return json.dumps(d)
    if kind == "missing_asin":
        d.pop("asin")
        d.pop("parent_asin", None)  # 2023: the pipeline falls back from parent_asin to asin
        return json.dumps(d)
    if kind == "not_an_object":
        choices = ("[1,2]", "[]", json.dumps([d.get("overall", d.get("rating")), d.get("summary", d.get("title"))]))
        return choices[int(rng.integers(len(choices)))]
    raise ValueError(kind)




def with_dirt(good: list[str], n_dup: int, bad: dict[str, int], fmt: str,
              rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``good`` with ``n_dup`` exact copies of its lines and ``bad[kind]`` broken lines at random places.

    Returns the lines in file order and the indices (into ``good``) of the copied lines; the good
    lines keep their order around the extras.
    """
    g = len(good)
    dup_src = rng.integers(0, g, n_dup) if g else np.zeros(0, np.int64)
    extras = [good[i] for i in dup_src.tolist()]
    for kind in BAD_KINDS:
        for _ in range(bad.get(kind, 0)):
            extras.append(bad_line(kind, good[int(rng.integers(g))], fmt, rng))
    total = g + len(extras)
    at = np.zeros(total, bool)
    at[rng.choice(total, len(extras), replace=False)] = True
    index = np.empty(total, np.int64)
    index[~at] = np.arange(g)
    index[at] = g + rng.permutation(len(extras))
    pool = good + extras
    return [pool[i] for i in index.tolist()], dup_src
