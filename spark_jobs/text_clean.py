"""Text normalisation of the clean job: the analysable copy of review text.

URLs first (their punctuation would otherwise leave fragments such as "http www"), then anything
that is not a letter, digit or whitespace, in any script; then lower case and single spaces.
"""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

URL_PATTERN = r"(?i)\b(?:https?://|www\.)\S+"
NOT_WORD_PATTERN = r"[^\p{L}\p{N}\s]+"


def clean_text_col(col: Column) -> Column:
    """``col`` without URLs and punctuation, lower case, in single spaces ("" for null)."""
    no_urls = F.regexp_replace(F.coalesce(col, F.lit("")), URL_PATTERN, " ")
    words = F.regexp_replace(no_urls, NOT_WORD_PATTERN, " ")
    return F.trim(F.regexp_replace(F.lower(words), r"\s+", " "))

