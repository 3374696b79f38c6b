"""mongo_load.search_index_docs gives, per key, the postings core/search.py's rules define.

The reference below builds the index in plain Python from the rules in core/search.py's
docstring (primary words keyed by every prefix and whole, review words whole, a key's best tier
per product, primary first then the catalog's popularity order, the best MAX_POSTINGS kept); the
Spark job computes it without grouping (key, product) pairs, and the two must agree exactly.
"""
from __future__ import annotations

from core import search
from spark_jobs.mongo_load import search_index_docs

PRODUCTS = [  # _id, category, title, title_generated, brand, categories, search_text, n_reviews
    ("p1", "Electronics", "Sony speaker set", False, "Sony", ["Electronics", "Audio"], "great bass sony sound", 9),
    ("p2", "Electronics", "Speaker stand", False, "", ["Electronics"], "steady stand, sturdy", 9),
    ("p3", "Toys", "so-so sound", True, "", ["Toys"], "so-so sound from a toy speaker", 4),
    ("p4", "Toys", "Supercalifragilisticexpialidocious kit", False, "Acme", [], "", 1),
    ("p5", "Books", "", False, "", [], "", 0),
    ("p6", "Books", "Sound of music", False, "Sony", ["Books", "Music"], None, 4),
]
SCHEMA = ("_id string, category string, title string, title_generated boolean, brand string, "
          "categories array<string>, search_text string, n_reviews long")
FIELDS = ("n", "ids", "tiers", "ranks", "cats", "cat")


def reference(products: list[tuple]) -> dict[str, dict]:
    order = sorted(products, key=lambda p: (-p[7], p[0]))
    rank = {p[0]: i for i, p in enumerate(order)}
    best: dict[str, dict[str, str]] = {}  # key -> product -> tier
    for pid, cat, title, generated, brand, cats, text, _n in products:
        primary_text = " ".join([*([] if generated else [title]), brand, cat, " ".join(cats)])
        for w in search.words(primary_text):
            for key in {w[:i] for i in range(1, min(len(w), search.MAX_PREFIX) + 1)} | {w}:
                best.setdefault(key, {})[pid] = search.PRIMARY
        for w in search.words(text or ""):
            best.setdefault(w, {}).setdefault(pid, search.REVIEW)
    cat_of = {p[0]: p[1] for p in products}
    out = {}
    for key, tiers in best.items():
        kept = sorted(tiers, key=lambda pid: (tiers[pid] != search.PRIMARY, rank[pid]))[:search.MAX_POSTINGS]
        cats = list(dict.fromkeys(cat_of[pid] for pid in kept))
        out[key] = {"n": len(tiers), "ids": " ".join(kept), "tiers": "".join(tiers[pid] for pid in kept),
                    "ranks": " ".join(str(rank[pid]) for pid in kept), "cats": cats,
                    "cat": " ".join(str(cats.index(cat_of[pid])) for pid in kept)}
    return out


def built(spark) -> tuple[list, dict[str, dict]]:
    """The job's documents of PRODUCTS, as collected and by key."""
    docs = search_index_docs(spark.createDataFrame(PRODUCTS, SCHEMA)).collect()
    return docs, {d["_id"]: {k: d[k] for k in FIELDS} for d in docs}


def test_search_index_docs_equal_the_reference(spark):
    docs, got = built(spark)
    want = reference(PRODUCTS)
    assert len(docs) == len(got)  # one document per key
    assert got == want
    # the cases the rules single out
    assert got["sony"]["tiers"] == "11"  # a brand word also in a review is primary for that product
    assert "supercalifragilisticexpialidocious" in got and "supercalifragili" not in got  # 15-char prefixes
    assert got["so"]["ids"].split(" ") == ["p1", "p6", "p3"]  # p3's title is generated: review tier, last
    assert got["bass"] == {"n": 1, "ids": "p1", "tiers": "0", "ranks": "0", "cats": ["Electronics"], "cat": "0"}


def test_a_key_keeps_its_best_postings_and_counts_all(spark, monkeypatch):
    monkeypatch.setattr(search, "MAX_POSTINGS", 2)
    _, got = built(spark)
    assert got == reference(PRODUCTS)
    assert got["so"]["n"] == 3 and got["so"]["ids"] == "p1 p6"


def test_only_ids_and_counts_go_through_one_partition(spark):
    """The catalog-wide rank is computed in one partition; the texts, their words and each key's
    window must not go through it (one partition also counts as "clustered by key", so Spark would
    not shuffle again and would run all of it in one task)."""
    plan = search_index_docs(spark.createDataFrame(PRODUCTS, SCHEMA))._jdf.queryExecution().executedPlan().toString()
    assert "Exchange hashpartitioning(key" in plan
    lines = plan.splitlines()
    single = [i for i, line in enumerate(lines) if "Exchange SinglePartition" in line]
    assert len(single) == 1
    below = lines[single[0] + 1]  # what goes through it
    assert "_id" in below and "n_reviews" in below and "search_text" not in below and "title" not in below


def test_a_keys_window_holds_only_its_best_postings(spark):
    """Each key's postings are cut to its best MAX_POSTINGS on both sides of the shuffle (Spark's
    window group limit) and nothing counts over a key's whole window: at 51.6M reviews such a count
    held all of a common prefix's postings (millions) and ran out of mongo_load's 4 GB heap."""
    plan = search_index_docs(spark.createDataFrame(PRODUCTS, SCHEMA))._jdf.queryExecution().executedPlan().toString()
    limits = [line for line in plan.splitlines() if "WindowGroupLimit [key" in line]
    assert [line.rstrip().rsplit(", ", 1)[-1] for line in limits] == ["Final", "Partial"]
    assert all(f"row_number(), {search.MAX_POSTINGS}," in line for line in limits)
    assert not [line for line in plan.splitlines() if "windowspecdefinition(key" in line and "row_number()" not in line]
