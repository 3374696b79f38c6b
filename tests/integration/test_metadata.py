"""Real catalog metadata through load -> clean -> mongo_load, into MongoDB product documents.

Inputs are the shipped real files of three categories with their metadata (data/demo/), among
them the 2014 Musical Instruments metadata exactly as Amazon published it (Python dict literals,
not JSON), plus files of broken lines made here from real ones. Expected values come from the
raw lines read with plain Python (``ast.literal_eval`` / ``json``), never from the jobs, and
Parquet outputs are re-read with pyarrow. The jobs write into a MongoDB database of this module's
own, so the session's catalog (site tests) is never replaced.
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from spark_jobs.text_clean import unescape_html
from tests.conftest import DEMO_DIR, real_file

pytestmark = pytest.mark.integration

RAW_META = DEMO_DIR / "amazon2014_meta_musical_instruments_FIRST100_raw.json"
REVIEWS = [DEMO_DIR / "amazon2014_musical_instruments_5.jsonl.gz", DEMO_DIR / "amazon2014_digital_music_5_PARTIAL.jsonl.gz",
           DEMO_DIR / "amazon2018_gift_cards_5.jsonl.gz"]
JSON_META = [DEMO_DIR / "amazon2014_meta_digital_music_PARTIAL.jsonl.gz", DEMO_DIR / "amazon2018_meta_gift_cards.jsonl.gz"]
CATEGORY = {"amazon2014_musical_instruments_5.jsonl.gz": "Musical Instruments",
            "amazon2014_digital_music_5_PARTIAL.jsonl.gz": "Digital Music",
            "amazon2018_gift_cards_5.jsonl.gz": "Gift Cards"}


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def _broken_lines(tmp: Path) -> tuple[Path, Counter]:
    """Real 2014 metadata lines damaged the ways files get damaged, with the reason each must get."""
    real = _lines(RAW_META)
    cases = [
        (real[1][: len(real[1]) // 2], "bad Python dict literal"),  # cut off mid-write
        (real[2].replace("'title': ", "'title': __import__('os').getcwd() or "), "bad Python dict literal"),
        ("{'0006428320', '0014072149'}", "Python literal is not a dict"),  # a set
        (real[3].replace("'asin': ", "'was_asin': "), "missing item"),  # a dict without an id
        (real[4][:-1] + ", 'x': {1, 2}}", "Python literal has values JSON cannot hold"),
        (real[5].replace("'asin': '", "'asin': 'x/", 1), "bad item id"),  # no URL of the site can hold it
    ]
    assert all(line != r for (line, _), r in zip(cases, real[1:])), "a case did not change its line"
    path = tmp / "amazon2014_meta_musical_instruments_broken.json"
    path.write_text("".join(line + "\n" for line, _ in cases), encoding="utf-8")
    return path, Counter(reason for _, reason in cases)


def _with(line: str, **changes) -> str:
    """A real JSON line with some of its fields changed (JSON escapes: "\\n" stays in the line)."""
    return json.dumps({**json.loads(line), **changes})


def _bad_id_lines(tmp: Path) -> tuple[Path, Counter]:
    """Real review and metadata lines of the three formats with ids the site and the rating events
    refuse (core.events.PRODUCT_ID_PATTERN), with the reason each must get. Before load refused them
    a product id with "/" made every site page listing the product fail (HTTP 500)."""
    r2014, r2018 = _lines(REVIEWS[0])[0], _lines(REVIEWS[2])[0]
    r2023 = _lines(real_file("amazon2023_subscription_boxes.jsonl.gz"))[0]
    m2014, m2018 = _lines(JSON_META[0])[0], _lines(JSON_META[1])[0]
    # No 2023 metadata file is shipped: a line of the published layout, for the 2023 review's product.
    m2023 = json.dumps({"main_category": "Subscription Boxes", "title": "Cat toy box", "average_rating": 4.1,
                        "rating_number": 9, "features": [], "description": [], "price": None, "images": [],
                        "videos": [], "store": "KitNipBox", "categories": [], "details": {},
                        "parent_asin": json.loads(r2023)["parent_asin"] + "/1", "bought_together": None})
    cases = [
        (_with(r2014, asin="1384719342/1"), "bad item id"),
        (_with(r2014, reviewerID="A2IBPI20 UZIR0U"), "bad user id"),
        (_with(r2018, asin="B004LLIKVU\n"), "bad item id"),  # Java's \Z (not \z) would let it through
        (_with(r2018, reviewerID="\u00c431UBHTUUIFJUT"), "bad user id"),
        (_with(r2023, parent_asin="B" * 129), "bad item id"),  # its asin is fine: the product is the parent
        (_with(r2023, user_id=json.loads(r2023)["user_id"] + "\u2028"), "bad user id"),
        (_with(m2014, asin="5555991584/x"), "bad item id"),
        (_with(m2018, asin="B001BK\tEWF2"), "bad item id"),
        (m2023, "bad item id"),
    ]
    path = tmp / "amazon_ids_broken.json"
    path.write_text("".join(line + "\n" for line, _ in cases), encoding="utf-8")
    return path, Counter(reason for _, reason in cases)


def _own_path(meta: dict, department: str) -> list[str]:
    """The category path a 2014 product is shown under: the one in the file's department, else the first."""
    paths = meta.get("categories") or []
    own = [p for p in paths if p and p[0] == department]
    return (own or paths or [[]])[0]


def _column_rows(path: Path, columns: list[str]) -> list[dict]:
    return pq.read_table(str(path), columns=columns).to_pylist()


@pytest.fixture(scope="module")
def own_db(settings):
    """This module's own MongoDB database (mongo_load replaces whole collections)."""
    from core import mongo
    from core.settings import get_settings

    name = f"{settings.mongo_db}_meta"[:60]
    mp = pytest.MonkeyPatch()
    mp.setenv("MONGO_DB", name)
    get_settings.cache_clear()
    try:
        db = mongo.get_db()
        mongo.ensure_indexes(db)
        yield db
    finally:
        if os.environ.get("KEEP_TEST_DB") != "1":
            mongo.get_client().drop_database(name)
        mp.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def run(spark, own_db, tmp_path_factory):
    from spark_jobs.clean import clean
    from spark_jobs.load import load
    from spark_jobs.mongo_load import mongo_load

    work = tmp_path_factory.mktemp("metadata")
    broken, reasons = _broken_lines(work)
    bad_ids, id_reasons = _bad_id_lines(work)
    inputs = [*REVIEWS, RAW_META, *JSON_META, broken, bad_ids]
    run_id = f"it-meta-{uuid.uuid4().hex[:6]}"
    loaded = load(spark, [str(p) for p in inputs], str(work / "raw"), run_id)
    cleaned = clean(spark, str(work / "raw"), str(work / "clean"), run_id)
    loaded_to_mongo = mongo_load(spark, str(work / "clean"), run_id)
    return {"work": work, "inputs": inputs, "reasons": reasons + id_reasons, "load": loaded, "clean": cleaned,
            "mongo_load": loaded_to_mongo, "db": own_db}


def test_raw_2014_metadata_loads_and_broken_lines_are_quarantined(run):
    lines = {p.name: len(_lines(p)) for p in run["inputs"]}
    record = run["load"]
    assert record["balanced"] is True and record["counts_in"] == {"lines": sum(lines.values())}
    out = record["counts_out"]
    assert out["reviews"] + out["products"] + out["quarantined"] == sum(lines.values())
    assert record["quarantine_reasons"] == dict(run["reasons"])  # the real files have no bad line
    quarantine = _column_rows(run["work"] / "raw" / "quarantine", ["reason", "source_file", "raw_line"])
    assert Counter(q["reason"] for q in quarantine) == run["reasons"]
    assert all(q["source_file"].endswith("_broken.json") and q["raw_line"] for q in quarantine)
    # every line of the bad ids' file is accounted for, in the quarantine
    by_file = {f["file"]: f for f in record["per_file"]}
    assert by_file["amazon_ids_broken.json"] == {"file": "amazon_ids_broken.json", "lines": 9, "reviews": 0,
                                                 "products": 0, "quarantine": 9}
    assert not [r for r in _column_rows(run["work"] / "raw" / "reviews", ["source_file"])
                if r["source_file"].endswith("_broken.json")]

    products = _column_rows(run["work"] / "raw" / "products",
                            ["product_id", "title", "price", "image", "categories", "also_buy", "brand", "source_file"])
    raw_rows = [p for p in products if p["source_file"].endswith(RAW_META.name)]
    assert len(raw_rows) == lines[RAW_META.name] == 100  # every raw line is a product
    by_id = {p["product_id"]: p for p in raw_rows}
    for line in _lines(RAW_META):
        meta = ast.literal_eval(line)  # the test's own reading of the published line
        got = by_id[meta["asin"]]
        assert got["title"] == meta.get("title", ""), meta["asin"]
        assert got["price"] == pytest.approx(float(meta.get("price", 0.0))), meta["asin"]
        assert got["image"] == meta["imUrl"], meta["asin"]
        assert got["brand"] == meta.get("brand", ""), meta["asin"]
        assert got["categories"] == _own_path(meta, "Musical Instruments"), meta["asin"]
        assert got["also_buy"] == meta.get("related", {}).get("also_bought", []), meta["asin"]
    # no line of the broken files is a product: neither the dict without an id nor those with bad ids
    broken_products = [p for p in products if p["source_file"].endswith("_broken.json")]
    assert broken_products == []


def test_clean_unescapes_real_text_and_keeps_reconciliation(run):
    record = run["clean"]
    assert record["balanced"] is True
    out = record["counts_out"]
    assert record["counts_in"]["reviews"] == run["load"]["counts_out"]["reviews"] == \
        out["reviews"] + out["exact duplicate lines"] + out["repeated user-item pairs"]
    assert record["counts_in"]["products"] == out["products"] + out["duplicate product records"]

    reviews = {(r["user_id"], r["product_id"]): r for r in _column_rows(
        run["work"] / "clean" / "reviews", ["user_id", "product_id", "review_text", "summary", "reviewer_name"])}
    # The review the issue quotes ("a bit &#34;meh&#34;"): real line of the Musical Instruments file.
    meh = reviews[("A202CZ4PJH83G4", "B0002E1G5C")]["review_text"]
    assert 'a serious two-star "meh".' in meh and "&#34;" not in meh
    # Every review line of the three files that carries a reference reads as the Python twin says.
    checked = 0
    for path in REVIEWS:
        for d in map(json.loads, _lines(path)):
            if "&" in (d.get("reviewText") or "") + (d.get("summary") or ""):
                got = reviews[(d["reviewerID"], d["asin"])]
                assert got["review_text"] == unescape_html(d.get("reviewText")), (d["reviewerID"], d["asin"])
                assert got["summary"] == unescape_html(d.get("summary")), (d["reviewerID"], d["asin"])
                checked += 1
    assert checked > 1000
    assert not [k for k, r in reviews.items() if "&#34;" in r["review_text"] or "&quot;" in r["review_text"]]

    titles = {p["product_id"]: p["title"] for p in _column_rows(run["work"] / "clean" / "products",
                                                                 ["product_id", "title"])}
    assert titles["B00000IS02"] == 'Remo Kids Gathering Drum, 22" x 8" (KD-5822-01)'  # raw 2014 line
    assert titles["B0000002YU"] == "Rhythm, Blues, Soul & Grooves"  # 2014 Digital Music metadata
    assert titles["B002VFYGC0"] == " Maggiano's Gift Card"  # 2018 Gift Cards metadata


def test_metadata_fields_reach_product_documents(run):
    from core import mongo

    db = run["db"]
    reviewed: dict[str, str] = {}
    best_summary: dict[str, tuple] = {}  # product -> (best key, the summaries that share it)
    for path in REVIEWS:
        for d in map(json.loads, _lines(path)):
            reviewed[d["asin"]] = CATEGORY[path.name]
            helpful = d["helpful"][0] if "helpful" in d else int(str(d.get("vote") or "0").replace(",", ""))
            summary = unescape_html(d.get("summary")).strip()
            key = (summary != "", helpful, d["unixReviewTime"])
            if d["asin"] not in best_summary or key > best_summary[d["asin"]][0]:
                best_summary[d["asin"]] = (key, {summary})
            elif key == best_summary[d["asin"]][0]:
                best_summary[d["asin"]][1].add(summary)
    metadata = {ast.literal_eval(line)["asin"]: ast.literal_eval(line) for line in _lines(RAW_META)}
    for path in JSON_META:
        metadata.update({d["asin"]: d for d in map(json.loads, _lines(path))})

    # the one Musical Instruments product of the raw 2014 metadata that has reviews
    doc = db[mongo.PRODUCTS].find_one({"_id": "1384719342"})
    meta = metadata["1384719342"]
    assert doc["has_metadata"] is True and doc["title_generated"] is False and doc["n_reviews"] > 0
    assert doc["title"] == meta["title"] and doc["brand"] == "niceEshop" and doc["price"] == pytest.approx(7.09)
    assert doc["image"] == meta["imUrl"]
    assert doc["categories"] == ["Musical Instruments", "Microphones & Accessories", "Accessories",
                                 "Windsreens & Pop Filters"]
    assert doc["category"] == "Musical Instruments" and doc["also_buy"] == meta["related"]["also_bought"]

    # a Digital Music album: 2014 metadata (JSON) with several paths, shown under its own department
    dm = next(p for p, c in reviewed.items() if c == "Digital Music" and len(metadata[p].get("categories", [])) > 1
              and metadata[p].get("related", {}).get("also_bought"))
    doc = db[mongo.PRODUCTS].find_one({"_id": dm})
    assert doc["has_metadata"] is True and doc["title"] == unescape_html(metadata[dm]["title"]).strip()
    assert doc["categories"] == _own_path(metadata[dm], "Digital Music") and doc["categories"][0] == "Digital Music"
    assert doc["also_buy"] == metadata[dm]["related"]["also_bought"] and doc["image"] == metadata[dm]["imUrl"]

    # a gift card: 2018 metadata, image list -> its first URL, brand, also_buy
    gc = next(p for p in sorted(metadata) if len(metadata[p].get("image") or []) > 1 and metadata[p].get("also_buy")
              and metadata[p].get("brand"))
    doc = db[mongo.PRODUCTS].find_one({"_id": gc})
    assert doc["image"] == metadata[gc]["image"][0] and doc["brand"] == unescape_html(metadata[gc]["brand"])
    assert doc["also_buy"] == metadata[gc]["also_buy"] and doc["has_metadata"] is True

    # reviewed products without metadata: a readable title from category and best review summary
    without = sorted(p for p in reviewed if p not in metadata)
    assert without and "B0002E1G5C" in without
    docs = {d["_id"]: d for d in db[mongo.PRODUCTS].find({"_id": {"$in": without}})}
    assert set(docs) == set(without)
    for p in without:
        d = docs[p]
        summaries = best_summary[p][1]
        assert d["has_metadata"] is False and d["title_generated"] is True, p
        assert d["title"] and p not in d["title"], p
        assert d["title"].startswith(f"{reviewed[p]} – “"), d["title"]
        assert any(s[:40] in d["title"] for s in summaries), (p, summaries, d["title"])
    # no product anywhere is headed by its bare id or by nothing
    assert db[mongo.PRODUCTS].count_documents({"title": ""}) == 0
    assert not [d["_id"] for d in db[mongo.PRODUCTS].find({}, {"title": 1}) if d["title"].strip() in ("", d["_id"])]

    coverage = run["mongo_load"]["metadata"]
    assert coverage["reviewed products"] == len(reviewed)
    assert coverage["reviewed products without metadata"] == len(without)
    assert coverage["products with metadata, not reviewed"] == len(set(metadata) - set(reviewed))
    assert coverage["generated titles"] == len(without) + sum(
        1 for p, m in metadata.items() if not unescape_html(m.get("title")).strip())


def test_a_product_reviewed_in_two_categories_is_filed_by_its_most_helpful_review(spark):
    """Not by whichever review a group-by met first: a reload must not move it between categories."""
    from pyspark.sql import functions as F

    from spark_jobs.mongo_load import product_stats

    rows = [("p1", "Alpha", 0, 100, "a"), ("p1", "Alpha", 1, 200, "b"), ("p1", "Beta", 9, 50, "c")]
    reviews = spark.createDataFrame(rows, "product_id string, category string, helpful_votes long, ts long, "
                                          "summary string").withColumns({"rating": F.lit(5.0),
                                                                         "summary_clean": F.col("summary")})
    got = product_stats(reviews.coalesce(1)).collect()
    assert [r["review_category"] for r in got] == ["Beta"]
