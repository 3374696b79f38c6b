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

A query matches the products listed under *every* one of its words; those that match more of
the words by title, brand or category come first, then the catalog's popularity order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PREFIX = 15  # prefixes indexed per primary word; longer words are indexed whole as well
MAX_WORD = 40  # longer "words" (URLs, serial numbers run together) are not indexed
MAX_POSTINGS = 10_000  # best postings kept per key: the first 416 pages of 24 results
MAX_QUERY_WORDS = 8
PRIMARY, REVIEW = "1", "0"

# Letters and digits, as Java's [\p{L}\p{N}]+ in the Spark job: str.isalnum() without "_".
_WORD_RE = re.compile(r"[^\W_]+")
# The Spark job splits on this (Java regex) to get the same words as words() below.
SPARK_SPLIT_REGEX = r"[^\p{L}\p{N}]+"


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` in order, as the index keys them (too-long ones dropped)."""
    return [w for w in _WORD_RE.findall(str(text).lower()) if len(w) <= MAX_WORD]


def query_keys(query: str) -> list[str]:
    """The index keys a query reads: its distinct words, at most ``MAX_QUERY_WORDS``."""
    return list(dict.fromkeys(words(query)))[:MAX_QUERY_WORDS]


@dataclass(frozen=True)
class Postings:
    """One key's document unpacked: ids in ranked order, their tier, popularity rank and category."""

    ids: list[str]
    primary: list[bool]
    ranks: list[int]
    categories: list[str]

    @classmethod
    def from_doc(cls, doc: dict) -> "Postings":
        ids = doc["ids"].split(" ") if doc.get("ids") else []
        cats = doc.get("cats") or []
        return cls(ids=ids, primary=[c == PRIMARY for c in doc.get("tiers", "")],
                   ranks=[int(r) for r in doc["ranks"].split(" ")] if ids else [],
                   categories=[cats[int(c)] for c in doc["cat"].split(" ")] if ids else [])


def rank(postings: list[Postings], category: str | None = None) -> list[str]:
    """Ids listed under every key: most keys matched by title/brand/category first, then popularity."""
    if not postings or any(not p.ids for p in postings):
        return []
    postings = sorted(postings, key=lambda p: len(p.ids))  # intersect from the rarest word
    first = postings[0]
    best: dict[str, list[int]] = {}  # id -> [primary matches, popularity rank]
    for i, pid in enumerate(first.ids):
        if category is None or first.categories[i] == category:
            best[pid] = [int(first.primary[i]), first.ranks[i]]
    for p in postings[1:]:
        if not best:
            break
        seen: dict[str, list[int]] = {}
        for i, pid in enumerate(p.ids):
            hit = best.get(pid)
            if hit is not None:
                seen[pid] = [hit[0] + int(p.primary[i]), hit[1]]
        best = seen
    return sorted(best, key=lambda pid: (-best[pid][0], best[pid][1]))
