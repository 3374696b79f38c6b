"""clean_text_col, the clean job's analysable copy of a text, gives what its first form gave.

The first form (three regular-expression passes: URLs, then punctuation, then lower case and
whitespace runs) is written out below as the reference; the job's expression was rewritten for
speed (bench/clean_phases.py) and must not change a single output: checked on every text field of
the real review and metadata files shipped in data/demo (as read and as the job decodes them) and
on cases made to hit the rewrite's edges (URLs in any case, "://" without a URL, Unicode spaces,
letters whose lower case is not a letter, underscores beside URLs).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from spark_jobs.text_clean import clean_text, clean_text_col, unescape_html

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
TEXT_FIELDS = ("reviewText", "summary", "reviewerName", "text", "title", "brand", "description")

EDGES = [
    None, "", " ", "   ", "a", " a ", "Hello, World!", "It's   fine...\n\tReally",
    "see http://example.com/x?a=1, and HTTPS://Foo.BAR/baz. ok", "WWW.Example.COM rocks", "wWw.x.y",
    "go to www.a.b/c)(d and http://", "ftp://not-a-url here", "a://b c", "x://", "http:/ /a", "://",
    "_http://a.b c", "xhttp://a.b c", "(http://a.b) d", "foo-www.bar.com baz", "WWW-x www. y",
    "İstanbul IŞIK", "ΣΑΣ ΟΔΟΣ", "café naïve résumé", "日本語のテキスト、です。", "١٢٣ ٤٥٦", "½ ² Ⅻ",
    "non\u00a0breaking\u2003em\u3000ideographic", "line\u2028sep", "tab\tvt\x0bff\x0ccr\r", "emoji 😀👍 ok",
    "under_score __x__", "e\u0301 combining", "a&amp;b &#34;q&#34;", "trailing punctuation!!!", "!!!",
    "http://only.url", "www.only", "MiXeD CaSe WoRdS", "ǅ Dž titlecase", "K kelvin",
]


def first_form(col: Column) -> Column:
    """clean_text_col as first written (three passes), the reference."""
    no_urls = F.regexp_replace(F.coalesce(col, F.lit("")), r"(?i)\b(?:https?://|www\.)\S+", " ")
    words = F.regexp_replace(no_urls, r"[^\p{L}\p{N}\s]+", " ")
    return F.trim(F.regexp_replace(F.lower(words), r"\s+", " "))


def _demo_texts() -> list[str]:
    texts = []
    for path in sorted(DEMO.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                for field in TEXT_FIELDS:
                    v = d.get(field)
                    for s in (v if isinstance(v, list) else [v]):
                        if isinstance(s, str) and s:
                            texts.append(s)
                            texts.append(unescape_html(s))
    return texts


def test_clean_text_col_equals_its_first_form_on_real_texts_and_edges(spark):
    texts = _demo_texts()
    assert len(texts) > 50_000
    assert sum("http" in t.lower() for t in texts) > 50 and sum("&" in t for t in texts) > 100
    df = spark.createDataFrame([(i, t) for i, t in enumerate(EDGES + texts)], "i long, t string")
    got = df.select("i", "t", first_form(F.col("t")).alias("want"), clean_text_col(F.col("t")).alias("got"))
    differ = got.where(~F.col("want").eqNullSafe(F.col("got"))).limit(5).collect()
    assert not differ, [(r["t"], r["want"], r["got"]) for r in differ]
    edges = {r["i"]: r["got"] for r in got.where(F.col("i") < len(EDGES)).collect()}
    assert edges[0] == "" and edges[EDGES.index("see http://example.com/x?a=1, and HTTPS://Foo.BAR/baz. ok")] \
        == "see and ok"
    assert edges[EDGES.index("WWW.Example.COM rocks")] == "rocks"
    assert edges[EDGES.index("a://b c")] == "a b c"
    # the Python twin (what tests predict with) agrees on plain text
    for i in (EDGES.index("Hello, World!"), EDGES.index("It's   fine...\n\tReally"), EDGES.index("café naïve résumé")):
        assert edges[i] == clean_text(EDGES[i])


def test_year_col_equals_the_year_of_from_unixtime(spark):
    """clean's year column, now from a timestamp inside 1970-2099, is what from_unixtime's text gave."""
    from spark_jobs.clean import year_col

    seconds = [0, 1, 59, 86_399, 86_400, 946_684_799, 946_684_800, 1_388_361_600, 1_526_688_000, 1_700_000_000,
               4_102_444_799, 4_102_444_800, -1, -86_400, -2_208_988_800, 253_402_300_799, 253_402_300_800,
               9_223_372_036_854, 9_223_372_036_854_775_807, -9_223_372_036_854_775_808]
    df = spark.createDataFrame([(s,) for s in seconds], "ts long")
    rows = df.select("ts", F.year(F.from_unixtime("ts")).cast("int").alias("want"),
                     year_col(F.col("ts")).alias("got")).collect()
    assert [r["got"] for r in rows] == [r["want"] for r in rows]
    assert {r["ts"]: r["got"] for r in rows}[1_388_361_600] == 2013
    assert {r["ts"]: r["got"] for r in rows}[4_102_444_799] == 2099
