"""clean_text_col, the clean job's analysable copy of a text, gives what its first form gave.

The first form (three regular-expression passes: URLs, then punctuation, then lower case and
whitespace runs) is written out below as the reference; the job's expression was rewritten for
speed twice (bench/clean_phases.py: fewer passes, then a JVM function of our own, spark_jobs/jvm)
and neither form may change a single output: checked on every text field of the real review and
metadata files shipped in data/demo (as read and as the job decodes them), on cases made to hit
the rewrites' edges (URLs in any case, "://" without a URL, Unicode spaces, letters whose lower
case is not a letter, underscores, digits and combining marks before URLs), and on random strings
of such characters.
"""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

import pytest

from spark_jobs import jvm_jar
from spark_jobs.text_clean import CLEAN_TEXT_CLASS, clean_text, clean_text_col, clean_text_regex_col, unescape_html

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
    "e\u0301http://a.b c", ".\u0301http://a.b c", "\u0301www.a b", "1www.a b", "½www.a b", "😀http://a.b c",
    "http://\u00a0x y", "https://", "https:// x", "HtTpS://A.B/C?D=E", "www.\u3000x", "WWW.", "ww.w.x",
    "İ http://a.b", "ıI iİ", "x_www.a b", "(www.a)b", "é\u0301\u0301www.a b", "\U0001d400\U0001d7ce",
]
# characters the two forms treat differently if anything does: URL pieces, word characters of every
# kind, combining marks, spaces ASCII or not, letters whose lower case grows, a surrogate pair
PIECES = ["http://", "https://", "www.", "WWW.", "HTTP://", "h", "w", "t", "p", "s", ":", "/", ".", "_", "a", "Z",
          "7", "½", "Ⅻ", "\u0301", "\u0300", " ", "\t", "\n", "\x0b", "\u00a0", "\u2003", "İ", "I", "ß", "Σ",
          "😀", "日", "-", "!", "&amp;"]


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


def _random_texts(n: int, seed: int = 12) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def test_the_jvm_form_is_what_the_job_uses_here(spark):
    """This machine has javac (bin/setup needs a JDK): the session got the jar, and clean uses it."""
    assert jvm_jar.loaded(CLEAN_TEXT_CLASS)
    assert "reflect" in str(clean_text_col(F.col("t"))).lower()


@pytest.mark.parametrize("form", [clean_text_col, clean_text_regex_col], ids=["jvm", "regex"])
def test_clean_text_col_equals_its_first_form_on_real_texts_and_edges(spark, form):
    texts = _demo_texts()
    assert len(texts) > 50_000
    assert sum("http" in t.lower() for t in texts) > 50 and sum("&" in t for t in texts) > 100
    df = spark.createDataFrame([(i, t) for i, t in enumerate(EDGES + texts + _random_texts(20_000))], "i long, t string")
    got = df.select("i", "t", first_form(F.col("t")).alias("want"), form(F.col("t")).alias("got"))
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
