"""Vocabulary: the words, templates, names and style values review lines are stitched from.

Text is built once per process into escaped pools (``Pools``), so writing a line never calls
``json.dumps``: a review's text is a slice of a long corpus of whole sentences of its sentiment.
"""
from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache

import numpy as np

STAR_SUMMARY_SHARE = {"2014": 0.03, "2018": 0.25, "2023": 0.08}


def _esc(text: str) -> str:
    """The JSON string body of ``text`` (escaped like the real files: ASCII with \\u escapes)."""
    return json.dumps(text)[1:-1]


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


