"""Text normalisation of the clean job: the analysable copy of review text.

URLs first (their punctuation would otherwise leave fragments such as "http www"), then anything
that is not a letter, digit or whitespace, in any script; then lower case and single spaces.

The Amazon files also carry HTML character references in the text people read (``a bit &#34;meh&#34;``,
``R&amp;B``, even twice escaped: ``&amp;quot;``). :func:`unescape_html_col` decodes them in the JVM
(commons-text, which Spark ships) rather than in a Python UDF, which would send every review
through Python. Only references ending in ``;`` are decoded, so "R&B" or "AT&Tcall" stay as they
are; references to the C1 range (``&#x92;``, ``&#150;``: Windows-1252 text escaped by its code
point) become the characters Windows-1252 meant, as browsers do.
"""
from __future__ import annotations

import html
import re

from pyspark.sql import Column
from pyspark.sql import functions as F

from spark_jobs import jvm_jar

URL_PATTERN = r"(?i)\b(?:https?://|www\.)\S+"
# Punctuation and whitespace in one class: a run of either becomes one space, which is what
# replacing punctuation by spaces and then collapsing the spaces did, in one pass instead of two.
NOT_WORD_PATTERN = r"[^\p{L}\p{N}]+"


CLEAN_TEXT_CLASS = "amazonrec.CleanText"  # spark_jobs/jvm: the same in one pass over the characters


def clean_text_col(col: Column) -> Column:
    """``col`` without URLs and punctuation, lower case, in single spaces ("" for null).

    Regular expressions were 40% of the clean job's time on release-shaped data
    (bench/clean_phases.py), so the job calls :data:`CLEAN_TEXT_CLASS`, the same in one pass
    (spark_jobs/jvm_jar.py builds it, ~4x faster), and :func:`clean_text_regex_col` only where that
    jar is not on the driver's class path.
    """
    if jvm_jar.loaded(CLEAN_TEXT_CLASS):
        return F.coalesce(F.reflect(F.lit(CLEAN_TEXT_CLASS), F.lit("clean"), col), F.lit(""))
    return clean_text_regex_col(col)


def clean_text_regex_col(col: Column) -> Column:
    """:func:`clean_text_col` in Spark's own functions.

    The URL pattern runs only on texts holding "://" or "www." (a match needs one; few reviews have
    any), and punctuation and whitespace go in one pass. Lower case comes after that pass, as
    before: lower-casing can change what counts as a letter ("İ" becomes "i" and a combining dot).
    """
    text = F.coalesce(col, F.lit(""))
    no_urls = F.when(text.contains("://") | F.lower(text).contains("www."),
                     F.regexp_replace(text, URL_PATTERN, " ")).otherwise(text)
    return F.trim(F.lower(F.regexp_replace(no_urls, NOT_WORD_PATTERN, " ")))


_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_NOT_WORD = re.compile(r"[^\w\s]+|_+")


def clean_text(text: str | None) -> str:
    """Pure-Python twin of :func:`clean_text_col` for tests that predict what the clean job writes."""
    no_urls = _URL.sub(" ", text or "")
    return re.sub(r"\s+", " ", _NOT_WORD.sub(" ", no_urls).lower()).strip()


_UNESCAPER = "org.apache.commons.text.StringEscapeUtils"
# Windows-1252's characters at 0x80-0x9F (HTML5's mapping of those numeric references); the code
# points Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) map to themselves.
_C1 = "".join(chr(c) for c in range(0x80, 0xA0))
_CP1252 = "".join(bytes([c]).decode("cp1252", errors="ignore") or chr(c) for c in range(0x80, 0xA0))
_C1_TO_CP1252 = str.maketrans(_C1, _CP1252)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def unescape_html_col(col: Column) -> Column:
    """HTML character references decoded, twice (``&amp;quot;`` -> ``"``); null -> ""."""
    text = F.coalesce(col, F.lit(""))
    once = F.reflect(F.lit(_UNESCAPER), F.lit("unescapeHtml4"), F.regexp_replace(text, "&apos;", "'"))
    twice = F.reflect(F.lit(_UNESCAPER), F.lit("unescapeHtml4"), F.regexp_replace(once, "&apos;", "'"))
    decoded = F.translate(twice, _C1, _CP1252)
    return F.when(text.contains("&"), F.coalesce(decoded, text)).otherwise(text)


def unescape_html(text: str | None) -> str:
    """Pure-Python twin of :func:`unescape_html_col` (tests; places without Spark)."""
    text = text or ""
    if "&" not in text:
        return text
    for _ in range(2):
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    return text.translate(_C1_TO_CP1252)
