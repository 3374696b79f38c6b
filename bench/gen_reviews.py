"""Write synthetic Amazon review files (2014, 2018 or 2023 layout) with known dirt, for scale tests.

The real samples in ../shared/data hold a few thousand lines; the 2018 release the product is built
for has 233 million. This makes files of any size with the same field names, value types and key
order as the real lines, and with the skew that makes real data hard: a few items and users hold
most reviews (Zipf-like draws), about 60% of ratings are 5 stars, bad reviews are longer, review
volume grows over the years, some (user, item) pairs are rated twice and some lines are exact
copies. ``--bad-fraction`` adds lines the pipeline must quarantine (truncated JSON, empty lines,
rating 7, missing asin, JSON that is not an object).

Every count is exact, not estimated, and goes to DIR/manifest.json (also printed), including what
spark_jobs/load.py and spark_jobs/clean.py must report for these files, so a test can check the
pipeline's reconciliation against it:

    python bench/gen_reviews.py --rows 10000000 --out /tmp/me/synth --format 2018 --files 8 \\
        --bad-fraction 0.001 [--users U] [--items I] [--seed S]
    spark-submit spark_jobs/load.py --input '/tmp/me/synth/*.jsonl.gz'

Files are named like the real ones (``amazon2018_books.jsonl.gz``): each file is one category and
an item belongs to one category, as in the per-category releases. Items are dealt to categories by
popularity rank so the files come out about the same size; writing uses one process per file.

Memory: the (user, item, time, rating) of every row stay in the parent (about 17 bytes a row, plus
sort buffers while pairs are checked: ~0.5 GB for 10M rows) because counting repeated pairs
exactly needs them all; the text, the bulk of the output, is made and written 100k rows at a time.
Importable: ``generate(rows, out_dir, fmt, ...)`` returns the manifest dict.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

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

# 2018 per-category file names; a file is one category (load.py takes the category from the name).
CATEGORIES = (
    "books", "clothing_shoes_and_jewelry", "home_and_kitchen", "electronics", "sports_and_outdoors",
    "cell_phones_and_accessories", "tools_and_home_improvement", "movies_and_tv", "toys_and_games",
    "automotive", "pet_supplies", "kindle_store", "office_products", "patio_lawn_and_garden",
    "grocery_and_gourmet_food", "cds_and_vinyl", "arts_crafts_and_sewing", "video_games",
    "industrial_and_scientific", "digital_music", "musical_instruments", "luxury_beauty",
    "all_beauty", "appliances", "software", "prime_pantry", "gift_cards", "magazine_subscriptions",
    "amazon_fashion",
)

# Rating model: latent score -> stars with the marginal shares of the real releases.
RATING_SHARE = (0.07, 0.05, 0.08, 0.19, 0.61)  # 1..5 stars
_FACTORS = 4
_SD = {"item": 0.6, "user": 0.5, "factor": 0.5, "noise": 0.8}
# Zipf-Mandelbrot (exponent, offset as a share of the id space, which keeps the shape the same at
# any size): the top 20% of items hold ~80% of the reviews and the top 1% ~40%; the top 1% of users
# write ~25%, a quarter of the users who write at all write once (from ~20k rows up; smaller runs
# are flatter).
ITEM_ZIPF = (1.0, 0.0005)
USER_ZIPF = (0.85, 0.0005)
MEDIAN_TEXT_CHARS = {1: 260, 2: 300, 3: 250, 4: 200, 5: 140}


# ---------------------------------------------------------------------------------------------
# small vectorised helpers
# ---------------------------------------------------------------------------------------------

def zipf_ranks(rng: np.random.Generator, n: int, m: int, s: float, q_share: float) -> np.ndarray:
    """``n`` draws of ranks 0..m-1 with P(rank k) ~ (k+1+q)^-s, q = q_share*m, by inverting the CDF.

    The continuous CDF needs no table of m weights, so the id space can be huge at no memory cost.
    """
    q = q_share * m
    u = rng.random(n)
    if abs(s - 1.0) < 1e-9:
        x = (1 + q) * np.exp(u * math.log((m + 1 + q) / (1 + q))) - q
    else:
        a, b = (1 + q) ** (1 - s), (m + 1 + q) ** (1 - s)
        x = (a + u * (b - a)) ** (1 / (1 - s)) - q
    return np.clip(x.astype(np.int64) - 1, 0, m - 1)


def _coprime_multiplier(m: int, start: int) -> int:
    a = start % m or 1
    while math.gcd(a, m) != 1:
        a += 1
    return a


def scramble(ranks: np.ndarray, m: int, salt: int) -> np.ndarray:
    """A bijection of 0..m-1 so that popular ids are spread out instead of being 0, 1, 2..."""
    a = _coprime_multiplier(m, 2_654_435_761 + salt)
    return ((ranks.astype(np.uint64) * np.uint64(a) + np.uint64(salt % m)) % np.uint64(m)).astype(np.int64)


def mix64(x: np.ndarray, salt: int) -> np.ndarray:
    """A bijective 64-bit hash: distinct ids give distinct codes, and codes look random."""
    z = x.astype(np.uint64) + np.uint64(salt)
    z *= np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(29)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(32)
    return z


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


def split_counts(total: int, weights: np.ndarray | list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder; exact sum)."""
    w = np.asarray(weights, dtype=np.float64)
    if total == 0 or w.sum() == 0:
        return [0] * len(w)
    raw = w / w.sum() * total
    out = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - out), kind="stable")[: total - int(out.sum())]:
        out[i] += 1
    return out.tolist()


def _esc(text: str) -> str:
    """The JSON string body of ``text`` (escaped like the real files: ASCII with \\u escapes)."""
    return json.dumps(text)[1:-1]


# ---------------------------------------------------------------------------------------------
# text pools (built once per process, deterministic)
# ---------------------------------------------------------------------------------------------

NOUNS = ("product", "item", "unit", "case", "cable", "strap", "cover", "bag", "box", "set", "kit",
         "charger", "battery", "light", "lamp", "bottle", "brush", "cream", "lotion", "shampoo", "soap",
         "card", "gift card", "book", "story", "album", "song", "guitar", "pedal", "string set", "stand",
         "mount", "holder", "filter", "tool", "knife", "pan", "mug", "shirt", "pair of shoes", "jacket",
         "watch", "phone case", "screen protector", "speaker", "headset", "mic", "adapter", "toy", "game",
         "puzzle", "leash", "collar", "bag of treats", "coffee", "tea", "pillow", "blanket", "subscription")
ASPECTS = ("quality", "price", "size", "fit", "color", "sound", "battery life", "build quality", "material",
           "design", "packaging", "smell", "texture", "weight", "finish", "instructions", "customer service",
           "shipping", "value", "feel", "taste", "volume", "grip", "cord")
POS = ("great", "excellent", "perfect", "awesome", "amazing", "solid", "sturdy", "nice", "good", "fantastic",
       "wonderful", "beautiful", "comfortable", "reliable", "handy", "useful", "cute", "lovely", "well made",
       "durable")
NEG = ("cheap", "flimsy", "poor", "terrible", "awful", "useless", "broken", "defective", "disappointing",
       "bad", "horrible", "weak", "noisy", "uncomfortable", "overpriced", "too small", "too big", "fake",
       "scratched", "leaking")
NEU = ("okay", "fine", "decent", "average", "acceptable", "alright", "so-so", "adequate", "passable", "fair")
ADV = ("very", "really", "pretty", "quite", "super", "extremely", "so", "fairly", "incredibly", "a bit")
DURATIONS = ("a week", "two weeks", "a month", "three months", "six months", "a year", "two days",
             "a few uses", "one use", "several months", "about 10 days", "2 years")
PEOPLE = ("my wife", "my husband", "my son", "my daughter", "my mom", "my dad", "a friend", "my kids",
          "my sister", "my brother", "a coworker", "my grandson", "my dog", "my cat")
WORDS = ("the", "and", "it", "to", "a", "I", "is", "for", "this", "of", "was", "my", "with", "that", "in",
         "but", "on", "not", "have", "you", "so", "they", "as", "one", "are", "be", "would", "very", "just",
         "use", "will", "after", "also", "than", "when", "more", "only", "time", "well", "like", "what",
         "out", "up", "them", "get", "if", "all", "can", "no", "some", "other", "used", "using", "easy",
         "little", "first", "two", "still", "new", "bought", "works", "much", "really", "make", "back",
         "which", "does", "even", "because", "need", "could", "been", "over", "any", "day", "every",
         "bit", "fits", "feel", "looks", "year", "old", "long", "recommend", "order", "ordered", "money",
         "hand", "side", "top", "bottom", "inside", "right", "left", "hold", "holds", "small", "large",
         "light", "heavy", "soft", "hard", "clean", "water", "home", "car", "work", "office", "travel",
         "kitchen", "room", "night", "morning", "weekend", "color", "picture", "description", "seller",
         "return", "replacement", "warranty", "model", "version", "brand", "review", "reviews", "stars")
TEMPLATES = {
    "pos": (
        "The {n} is {adv} {pos}.", "I love this {n}!", "{Pos} {n} for the price.",
        "Works {adv} well and the {asp} is {pos}.", "Would definitely recommend it to anyone.",
        "I bought this for {who} and they love it.", "Arrived quickly and was packed well.",
        "The {asp} is {pos} and the {asp2} is {pos2}.", "I've been using it for {dur} with no problems.",
        "Exactly as described.", "Five stars!", "Better than I expected.",
        "This is my second one and I'll buy another.", "Can't beat it for the money.",
        "Highly recommended.", "It does exactly what it's supposed to do.", "Very happy with this purchase.",
        "Great value.", "The {asp} is {pos}, {adv} {pos2} actually.", "It says \"{pos}\" and it really is.",
        "Would buy again.", "{Who} uses it every day.", "Love it!", "Perfect fit.",
    ),
    "neu": (
        "It's {neu}, nothing special.", "The {asp} is {neu} but the {asp2} could be better.",
        "Not bad for the price.", "Does the job, I guess.", "It works, but the {asp} is {neg}.",
        "The {asp} is {pos}, the {asp2} not so much.", "An {neu} {n}.", "I expected more from this {n}.",
        "Good enough for {dur}.", "Three stars because the {asp} is {neu}.", "It's fine for {who}.",
        "Some good, some bad.", "It is what it is.",
    ),
    "neg": (
        "The {n} broke after {dur}.", "Very disappointed.", "The {asp} is {neg}.",
        "I returned it for a refund.", "Do not buy this {n}.", "It stopped working after {dur}.",
        "Not worth the money.", "Looks nothing like the picture.", "The {asp} is {neg} and the {asp2} is {neg2}.",
        "I wanted to like it, but the {asp} is {neg}.", "Customer service never answered.",
        "Arrived damaged.", "Total waste of money.", "Cheaply made.", "{Who} tried it once and it fell apart.",
        "It's labeled \"{pos}\" but it's {neg}.", "One star is too many.", "Save your money.",
    ),
}
SUMMARIES = {
    5: ("Great", "Great!", "Love it!", "Love it", "Perfect", "Excellent product", "Works great", "Awesome",
        "Highly recommend", "Exactly as described", "Great product", "Great {n}", "Perfect {n}", "Best {n} ever",
        "Very {pos}", "Nice", "Amazing!", "Worth it", "Does the job", "Great value"),
    4: ("Good", "Nice", "Pretty good", "Good value", "Works well", "Solid", "Good {n}", "Nice {n}",
        "Good product", "Very good", "Happy with it", "Good, not great"),
    3: ("OK", "Okay", "Decent", "It's okay", "Average", "Not bad", "Meh", "It's fine", "{Neu} {n}",
        "Could be better", "Just okay"),
    2: ("Disappointed", "Not great", "Meh", "Could be better", "Not as expected", "Poor quality",
        "{Neg} {n}", "Not worth it", "Cheap", "Returned it"),
    1: ("Junk", "Broke quickly", "Do not buy", "Waste of money", "Terrible", "Garbage", "Defective",
        "Awful {n}", "Stopped working", "Don't waste your money", "Returned"),
}
STARS = {1: "One Star", 2: "Two Stars", 3: "Three Stars", 4: "Four Stars", 5: "Five Stars"}
STAR_SUMMARY_SHARE = {"2014": 0.03, "2018": 0.25, "2023": 0.08}
FIRST = ("James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Susan",
         "William", "Karen", "Richard", "Lisa", "Joseph", "Nancy", "Thomas", "Betty", "Chris", "Sandra",
         "Daniel", "Ashley", "Matthew", "Emily", "Anthony", "Kim", "Mark", "Donna", "Steven", "Michelle",
         "Paul", "Carol", "Andrew", "Amanda", "Josh", "Melissa", "Kevin", "Debbie", "Brian", "Stephanie",
         "George", "Rebecca", "Ed", "Laura", "Ron", "Helen", "Tim", "Sharon", "Jason", "Cynthia", "Jeff",
         "Kathy", "Ryan", "Amy", "Jacob", "Angela", "Gary", "Anna", "Nick", "Brenda", "Eric", "Pam", "José",
         "Zoë", "Renée", "Tonya", "Shelly", "Jake", "Lenci", "Bubba")
LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
        "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson",
        "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker",
        "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams",
        "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "O'Brien", "Foyer")
STYLE_KINDS = (
    ("Format:", (" Paperback", " Hardcover", " Kindle Edition", " Audio CD", " MP3 Music", " DVD", " Blu-ray",
                 " Mass Market Paperback", " Audible Audiobook")),
    ("Size:", (" Small", " Medium", " Large", " X-Large", " 7.0 oz", " 200ml/6.7oz", " 1", " 6", " Shampoo",
               " Pack of 2", " 12 Count")),
    ("Color:", (" Black", " White", " Blue", " Red", " Grey", " Pink", " Navy", " Black/White/Anthracite",
                " Blue/Orange", " Silver")),
    ("Gift Amount:", (" 25", " 50", " 100", " 0", " 10", " 20", " 75")),
    ("Size:|Color:", ((" 7 B(M) US", " 8 B(M) US", " 8.5 B(M) US", " 9 B(M) US", " 9.5 B(M) US", " 10 M US",
                       " 11 B(M) US"), (" Black/White", " Grey", " Blue/Orange", " Wolf Grey/Black"))),
    ("Size:|Flavor:", ((" 7.0 oz", " 12 Ounce", " 2 Pound"), (" Classic Ice Blue", " Vanilla", " Original",
                                                              " Chocolate", " Unscented"))),
)


def _syllable_words(rng: np.random.Generator, n: int) -> list[str]:
    """Made-up brand/model words: the long tail of a real review vocabulary."""
    cons, vows = "bcdfgklmnprstvxz", "aeiou"
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 4))
        w = "".join(cons[int(rng.integers(len(cons)))] + vows[int(rng.integers(len(vows)))] for _ in range(k))
        if rng.random() < 0.3:
            w = f"{w.upper()[:2]}-{int(rng.integers(10, 999))}"
        out.append(w.capitalize() if w[0].islower() else w)
    return out


class Pools:
    """Escaped text pieces for one format; lines are stitched from these without per-line escaping."""

    def __init__(self, fmt: str, seed: int = 20240511):
        rng = np.random.default_rng(seed)
        self.fmt = fmt
        tail = _syllable_words(rng, 4000)
        words = np.array(WORDS + NOUNS + ASPECTS + POS + NEU + NEG + tuple(tail), dtype=object)
        zipf_p = 1.0 / np.arange(1, len(words) + 1) ** 1.3
        zipf_p /= zipf_p.sum()

        def fill(t: str) -> str:
            pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
            s = t.format(n=pick(NOUNS), asp=pick(ASPECTS), asp2=pick(ASPECTS), pos=pick(POS), pos2=pick(POS),
                         neg=pick(NEG), neg2=pick(NEG), neu=pick(NEU), adv=pick(ADV), dur=pick(DURATIONS),
                         who=pick(PEOPLE), Pos=pick(POS).capitalize(), Neu=pick(NEU).capitalize(),
                         Neg=pick(NEG).capitalize(), Who=pick(PEOPLE).capitalize())
            return s

        def sentence(group: str) -> str:
            if rng.random() < 0.2:  # free text from the Zipf vocabulary: lexical variety for text features
                k = int(rng.integers(5, 18))
                ws = words[rng.choice(len(words), size=k, p=zipf_p)].tolist()
                s = " ".join(ws)
                s = s[0].upper() + s[1:] + (". " if rng.random() < 0.9 else "! ")[:1]
            else:
                s = fill(TEMPLATES[group][int(rng.integers(len(TEMPLATES[group])))])
            if fmt == "2023":
                if rng.random() < 0.7:
                    s = s.replace("'", "\u2019")  # the 2023 text is full of typographic apostrophes
                if group == "pos" and rng.random() < 0.03:
                    s += " " + ("\U0001F60D", "\u2764\ufe0f", "\U0001F44D")[int(rng.integers(3))]
                if rng.random() < 0.04:
                    s += "<br /><br />"
            elif rng.random() < 0.002:
                s = s.replace(".", "\u2026", 1)
            return _esc(s)

        # One corpus per sentiment; a review is a window of whole sentences, so a text is one slice.
        pieces, starts, ends, self.group_range = [], [], [], {}
        pos = 0
        for group in ("neg", "neu", "pos"):
            first = len(starts)
            for _ in range(6000 if group != "pos" else 12000):
                s = sentence(group)
                starts.append(pos)
                ends.append(pos + len(s))
                pieces.append(s)
                pos += len(s) + 1
            self.group_range[group] = (first, len(starts))
        self.corpus = " ".join(pieces)
        self.starts = np.array(starts, np.int64)
        self.ends = np.array(ends, np.int64)

        # Summaries / 2023 titles, with the Amazon "Five Stars" default at the share seen per release.
        self.summaries = {}
        for r, pool in SUMMARIES.items():
            filled = [_esc(fill(p)) for p in pool for _ in range(6)]
            n_star = int(round(len(filled) * STAR_SUMMARY_SHARE[fmt] / (1 - STAR_SUMMARY_SHARE[fmt])))
            self.summaries[r] = np.array(filled + [STARS[r]] * n_star, dtype=object)

        names = []
        for i in range(20000):
            f, last = FIRST[int(rng.integers(len(FIRST)))], LAST[int(rng.integers(len(LAST)))]
            style = rng.random()
            if style < 0.45:
                names.append(f"{f} {last}")
            elif style < 0.65:
                names.append(f"{f} {last[0]}.")
            elif style < 0.75:
                names.append(f.lower())
            elif style < 0.82:
                names.append(f"{f[0]}. {last}")
            elif style < 0.85:
                names.append(f'{f} "{tail[i % len(tail)]}" {last}')
            else:
                names.append(f"{f}{int(rng.integers(1, 99))}")
        names += ["Amazon Customer"] * 1000  # the most common reviewerName in the 2018 release
        self.names = np.array([_esc(n) for n in names], dtype=object)

        self.styles = []
        for key, values in STYLE_KINDS:
            frags = []
            if "|" in key:
                k1, k2 = key.split("|")
                for v1 in values[0]:
                    for v2 in values[1]:
                        frags.append(f'"style": {json.dumps({k1: v1, k2: v2})}, ')
            else:
                frags = [f'"style": {json.dumps({key: v})}, ' for v in values]
            self.styles.append(np.array(frags, dtype=object))

        d0 = dt.date(1995, 1, 1)
        self.day0 = (d0 - dt.date(1970, 1, 1)).days
        self.dates = [f"{d.month:02d} {d.day}, {d.year}"
                      for d in (d0 + dt.timedelta(days=i) for i in range(366 * 40))]


@lru_cache(maxsize=3)
def pools(fmt: str) -> Pools:
    return Pools(fmt)


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


def _make_lines_distinct(users: np.ndarray, items: np.ndarray, ts: np.ndarray, n_items: int, fmt: str) -> None:
    """Rows of the same pair get different times, so only the planned duplicates are equal lines."""
    step = 1000 if fmt == "2023" else DAY
    keys = users.astype(np.int64) * n_items + items
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    repeated = np.zeros(len(keys), bool)
    repeated[1:] = sk[1:] == sk[:-1]
    repeated[:-1] |= repeated[1:]
    rows = order[repeated]  # every row whose pair occurs more than once
    del order, sk
    for _ in range(1000):
        sub = np.lexsort((ts[rows], keys[rows]))
        r = rows[sub]
        same = (keys[r][1:] == keys[r][:-1]) & (ts[r][1:] == ts[r][:-1])
        if not same.any():
            return
        ts[r[1:][same]] += step
    raise RuntimeError("could not give repeated pairs distinct times")


# ---------------------------------------------------------------------------------------------
# writing one file (runs in a worker process)
# ---------------------------------------------------------------------------------------------

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
                 rng: np.random.Generator, n_items: int, style_index: int) -> list[str]:
    """The JSON lines of these rows, stitched from pre-escaped pieces: no json.dumps per line (speed)."""
    P = pools(fmt)
    n = len(users)
    # Review text: a window of whole sentences of the rating's sentiment, longer for bad ratings.
    group_of = {1: "neg", 2: "neg", 3: "neu", 4: "pos", 5: "pos"}
    median = np.array([0] + [MEDIAN_TEXT_CHARS[r] for r in range(1, 6)], np.float64)
    want = np.clip(rng.lognormal(np.log(median[stars]), 0.9), 10, 5000).astype(np.int64)
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
        has = np.flatnonzero(rng.random(n) < 0.02)
        if len(has):
            keys = _join_codes(_digits(rng.integers(0, 2 ** 62, len(has)), 11, _B64), n=len(has))
            image[has] = [f'"image": ["{IMG}{k}._SY88.jpg"], ' for k in keys]
        vote = np.full(n, "", dtype=object)
        has = np.flatnonzero(rng.random(n) < 0.12)
        if len(has):
            vote[has] = [f'"vote": "{v:,}", ' for v in (2 + _heavy_tail(rng, len(has), 0.0, 3.0)).tolist()]
        style = np.full(n, "", dtype=object)
        pool = P.styles[style_index % len(P.styles)]
        has = np.flatnonzero((mix64(items, 7) % np.uint64(100)).astype(np.int64) < 55)
        if len(has):
            base = (mix64(items[has], 9) % np.uint64(len(pool))).astype(np.int64)
            style[has] = pool[(base + rng.integers(0, 4, len(has))) % len(pool)]
        verified = BOOL_TEXT[(rng.random(n) < 0.85).astype(np.intp)].tolist()
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
            dup_src = rng.integers(0, g, dup_per_chunk[c])
            extras = [good[i] for i in dup_src.tolist()]
            for kind in BAD_KINDS:
                for _ in range(bad_per_chunk[kind][c]):
                    extras.append(bad_line(kind, good[int(rng.integers(g))], fmt, rng))
                stats["bad_lines"][kind] += bad_per_chunk[kind][c]
            # Extras land at random places; the good rows keep their order around them.
            total = g + len(extras)
            at = np.zeros(total, bool)
            at[rng.choice(total, len(extras), replace=False)] = True
            index = np.empty(total, np.int64)
            index[~at] = np.arange(g)
            index[at] = g + rng.permutation(len(extras))
            pool = good + extras
            out.write(("\n".join([pool[i] for i in index.tolist()]) + "\n").encode("ascii"))
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
    _make_lines_distinct(u, it, ts, n_items, fmt)
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
    tmp = out / f".gen_reviews_tmp_{os.getpid()}"
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
        "synthetic": True, "generator": "bench/gen_reviews.py", "format": fmt, "seed": seed,
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


def manifest_differences(manifest: dict, load_rec: dict | None, clean_rec: dict | None) -> list[str]:
    """Differences between what was generated and what the load and clean jobs reported (empty = exact).

    ``load_rec``/``clean_rec`` are the jobs' reconciliation records (a missing one is not compared).
    """
    problems = []
    exp_l, exp_c = manifest["expected"]["load"], manifest["expected"]["clean"]
    if load_rec:
        got = load_rec.get("counts_out", {})
        want = {"reviews": exp_l["reviews"], "products": 0, "quarantined": exp_l["quarantined"]}
        if load_rec.get("counts_in", {}).get("lines") != exp_l["lines"] or got != want:
            problems.append(f"load: {load_rec.get('counts_in')} -> {got}, manifest {exp_l['lines']} -> {want}")
        if load_rec.get("quarantine_reasons") != exp_l["quarantine_reasons"]:
            problems.append(f"load reasons {load_rec.get('quarantine_reasons')} != {exp_l['quarantine_reasons']}")
    if clean_rec:
        got = clean_rec.get("counts_out", {})
        for key, want in (("reviews", exp_c["reviews_out"]), ("exact duplicate lines", exp_c["exact duplicate lines"]),
                          ("repeated user-item pairs", exp_c["repeated user-item pairs"])):
            if got.get(key) != want:
                problems.append(f"clean {key}: {got.get(key)} != manifest {want}")
    return problems


def print_summary(m: dict[str, Any], out: Path) -> None:
    print(f"wrote {len(m['files'])} file(s) in {m['seconds']}s to {out} (format {m['format']}, seed {m['seed']})")
    rows = [("lines", m["lines"]), ("good lines", m["good_lines"]),
            ("  of which exact duplicate lines", m["duplicate_lines"]),
            ("  of which repeated user-item pairs", m["repeated_pair_lines"]),
            ("  unique user-item pairs", m["unique_pairs"]),
            ("bad lines", m["bad_lines_total"])] + [(f"  {k}", v) for k, v in m["bad_lines"].items()]
    rows += [("distinct users", m["distinct_users"]), ("distinct items", m["distinct_items"])]
    for label, v in rows:
        print(f"  {label:<38}{v:>14,}")
    print(f"  top 1% of items hold {m['top_1pct_items_share']:.1%} of reviews; stars 1..5: "
          + ", ".join(f"{m['rating_counts'][str(s)] / max(1, m['good_lines']):.0%}" for s in range(1, 6)))
    print(f"  manifest: {out / 'manifest.json'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, required=True, help="lines to write in all (good + duplicate + bad)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=FORMATS, default="2018")
    p.add_argument("--users", type=int, help="size of the user id space (default rows/5)")
    p.add_argument("--items", type=int, help="size of the item id space (default rows/15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--files", type=int, default=1, help="number of files (= categories); one process each")
    p.add_argument("--bad-fraction", type=float, default=0.0, help="share of lines that are broken")
    p.add_argument("--duplicate-fraction", type=float, default=0.01, help="share of lines that are exact copies")
    p.add_argument("--repeat-fraction", type=float, default=0.01, help="share of good lines re-rating a pair")
    p.add_argument("--processes", type=int, help="worker processes (default: cores, at most --files)")
    p.add_argument("--compresslevel", type=int, default=1, choices=range(0, 10), metavar="0-9")
    a = p.parse_args(argv)
    try:
        generate(a.rows, a.out, a.format, users=a.users, items=a.items, seed=a.seed, files=a.files,
                 bad_fraction=a.bad_fraction, duplicate_fraction=a.duplicate_fraction,
                 repeat_fraction=a.repeat_fraction, processes=a.processes, compresslevel=a.compresslevel,
                 quiet=False)
    except ValueError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
