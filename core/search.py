"""Product search: the words a shopper types, answered from the inverted index the pipeline builds.

The batch load (spark_jobs/mongo_load.py) writes one ``_id``-keyed document per search key into
``search_index``. A product is listed under

- every prefix (1 to ``MAX_PREFIX`` characters) and the whole of each word of its title, brand and
  category path: the *primary* tier, so "flang" finds a flanger while the shopper is typing;
- each whole word of its review text (the summaries the catalog keeps): the *review* tier.

Each key's postings are ranked primary tier first, then by the catalog's popularity order (most
reviewed, then id), and the best ``MAX_POSTINGS`` are kept, so a query reads one small document
per word, never scans the catalog (FerretDB v1 scans a collection for any non-``_id`` filter and
for ``$in``). Postings are packed into strings because FerretDB v1 decodes a 10,000-element
array in ~65 ms but a string of the same ids in ~4 ms (measured here).

A query matches the products listed under *every* one of its words (its first
``MAX_QUERY_WORDS`` distinct ones: the search page names the others; a word too long to be
indexed matches nothing); those that match more of the words by title, brand or category come
first, then the catalog's popularity order, whatever order the words were typed in.
"""
from __future__ import annotations

import re

MAX_PREFIX = 15  # prefixes indexed per primary word; longer words are indexed whole as well
MAX_WORD = 40  # longer "words" (URLs, serial numbers run together) are not indexed: a query with one matches nothing
MAX_POSTINGS = 2_000  # best postings kept per key: 83 pages of 24 results (what is counted and paged)
MAX_QUERY_WORDS = 8  # distinct words a query reads; the search page names the ones past it
PRIMARY, REVIEW = "1", "0"

# Letters and digits, as Java's [\p{L}\p{N}]+ in the Spark job: str.isalnum() without "_".
_WORD_RE = re.compile(r"[^\W_]+")
# The Spark job splits on this (Java regex) to get the same words as words() below.
SPARK_SPLIT_REGEX = r"[^\p{L}\p{N}]+"


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` in order, as the index keys them (too-long ones dropped)."""
    return [w for w in _WORD_RE.findall(str(text).lower()) if len(w) <= MAX_WORD]


def query_words(query: str) -> list[str]:
    """A query's distinct lower-cased words in the order typed, over-long ones kept.

    Unlike :func:`words`, a word longer than ``MAX_WORD`` stays: dropped, a pasted serial number
    left the query to its other words, which matched more products than the shopper asked for.
    """
    return list(dict.fromkeys(_WORD_RE.findall(str(query).lower())))


def query_keys(query: str) -> list[str]:
    """The index keys a query reads: its first ``MAX_QUERY_WORDS`` distinct words (an over-long one
    included: see :func:`indexed`). The rest are :func:`unused_words`, which the page names."""
    return query_words(query)[:MAX_QUERY_WORDS]


def unused_words(query: str) -> list[str]:
    """The distinct words of a query past the first ``MAX_QUERY_WORDS``: not searched for, so the
    results may hold products without them, which the shopper must be told."""
    return query_words(query)[MAX_QUERY_WORDS:]


def indexed(key: str) -> bool:
    """Whether the index can list anything under ``key``: a word longer than ``MAX_WORD`` is keyed
    neither whole nor by its prefixes (the Spark job drops it before making prefixes, as
    :func:`words` does), so a query with such a word matches no product."""
    return len(key) <= MAX_WORD


class Postings:
    """One key's document, unpacked lazily: splitting the packed strings is done in C, and only
    the candidates of a multi-word query have their tier, rank and category looked up."""

    def __init__(self, doc: dict) -> None:
        self.ids: list[str] = doc["ids"].split(" ") if doc.get("ids") else []
        self._doc = doc
        self._pos: dict[str, int] | None = None
        self._ranks: list[str] | None = None
        self._cats: list[str] | None = None

    @classmethod
    def from_doc(cls, doc: dict) -> "Postings":
        return cls(doc)

    @property
    def pos(self) -> dict[str, int]:
        if self._pos is None:
            self._pos = dict(zip(self.ids, range(len(self.ids))))
        return self._pos

    def primary(self, i: int) -> bool:
        return self._doc["tiers"][i] == PRIMARY

    def rank(self, i: int) -> int:
        if self._ranks is None:
            self._ranks = self._doc["ranks"].split(" ")
        return int(self._ranks[i])

    def category(self, i: int) -> str:
        if self._cats is None:
            self._cats = self._doc["cat"].split(" ")
        return self._doc["cats"][int(self._cats[i])]


def rank(postings: list[Postings], category: str | None = None) -> list[str]:
    """Ids listed under every key: most keys matched by title/brand/category first, then popularity.

    One key's postings are already in that order. For several, the candidates are the set
    intersection (in C), then each is scored from its positions in the keys' postings.
    """
    if not postings or any(not p.ids for p in postings):
        return []
    if len(postings) == 1:
        p = postings[0]
        if category is None:
            return p.ids
        return [pid for i, pid in enumerate(p.ids) if p.category(i) == category]
    postings = sorted(postings, key=lambda p: len(p.ids))  # intersect from the rarest word
    candidates = set(postings[0].ids).intersection(*(p.ids for p in postings[1:]))
    first = postings[0]
    scored = []
    for pid in candidates:
        i = first.pos[pid]
        if category is not None and first.category(i) != category:
            continue
        hits = sum(p.primary(p.pos[pid]) for p in postings)
        scored.append((-hits, first.rank(i), pid))
    scored.sort()
    return [pid for _, _, pid in scored]


def without_review_postings(doc: dict, product_ids: set[str]) -> tuple[dict | None, int]:
    """``doc`` (one key's document) without the *review*-tier postings of ``product_ids``, and how
    many went; None for the document when none is left (the key then goes, as a reload would not
    write it). A primary-tier posting stays: the product's own title, brand or category has the word.

    What an account deletion does to the keys of a reviewer's words (core.erasure): the
    packed strings lose the same positions, the rest keeps its order; ``cats`` is left whole (an
    unused category costs nothing and keeps the other postings' indexes into it valid).
    """
    ids = doc["ids"].split(" ") if doc.get("ids") else []
    drop = {i for i, pid in enumerate(ids) if pid in product_ids and doc["tiers"][i] == REVIEW}
    if not drop:
        return doc, 0
    if len(drop) == len(ids):
        return None, len(drop)

    def kept(values: list[str] | str) -> list[str]:
        return [v for i, v in enumerate(values) if i not in drop]

    return {**doc, "n": max(0, int(doc.get("n") or len(ids)) - len(drop)), "ids": " ".join(kept(ids)),
            "tiers": "".join(kept(doc["tiers"])), "ranks": " ".join(kept(doc["ranks"].split(" "))),
            "cat": " ".join(kept(doc["cat"].split(" ")))}, len(drop)
