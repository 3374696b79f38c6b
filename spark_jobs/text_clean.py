"""Text normalisation shared by the clean job and its tests: the analysable copy of review text.

URLs first (their punctuation would otherwise leave fragments such as "http www"), then anything
that is not a letter, digit or whitespace, in any script; then lower case and single spaces.
"""
from __future__ import annotations

import re

from pyspark.sql import Column
from pyspark.sql import functions as F

URL_PATTERN = r"(?i)\b(?:https?://|www\.)\S+"
NOT_WORD_PATTERN = r"[^\p{L}\p{N}\s]+"


def clean_text_col(col: Column) -> Column:
    """The Spark expression of :func:`clean_text` (both must stay in step; tests compare them)."""
    no_urls = F.regexp_replace(F.coalesce(col, F.lit("")), URL_PATTERN, " ")
    words = F.regexp_replace(no_urls, NOT_WORD_PATTERN, " ")
    return F.trim(F.regexp_replace(F.lower(words), r"\s+", " "))


_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_NOT_WORD = re.compile(r"[^\w\s]+|_+")


def clean_text(text: str | None) -> str:
    """Pure-Python twin for places without Spark (the site's search, tests)."""
    no_urls = _URL.sub(" ", text or "")
    return re.sub(r"\s+", " ", _NOT_WORD.sub(" ", no_urls).lower()).strip()
