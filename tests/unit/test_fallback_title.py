"""core.catalog.fallback_title: the one rule that titles a product without a title, used by the
batch load (as a pandas UDF) and by an account deletion that removes the review it quoted."""
from __future__ import annotations

import numpy as np

from core import catalog


def test_a_product_without_a_title_is_named_by_its_category_and_best_summary():
    assert catalog.fallback_title(["Music", "Strings"], "Musical Instruments", "Ernie", "  Great strings ") == \
        "Strings – “Great strings”"
    assert catalog.fallback_title([], "Musical Instruments", "", "ok") == "Musical Instruments – “ok”"
    assert catalog.fallback_title(None, "", None, "ok") == "Catalog – “ok”"
    # a path as Arrow hands it to the load's UDF
    assert catalog.fallback_title(np.array(["A", "B"], dtype=object), "C", "", "ok") == "B – “ok”"


def test_without_a_summary_the_title_quotes_nobody():
    assert catalog.fallback_title(["Music", "Strings"], "M", " Ernie Ball ", "   ") == "Ernie Ball Strings"
    assert catalog.fallback_title([], "Gift Cards", "", None) == "Gift Cards product"
    assert catalog.fallback_title(None, None, None, None) == "Catalog product"


def test_a_long_summary_is_cut_at_a_word_gap_with_an_ellipsis():
    summary = "x" * (catalog.FALLBACK_SUMMARY_CHARS - 2) + "  yz"
    assert catalog.fallback_title([], "M", "", summary) == "M – “" + "x" * (catalog.FALLBACK_SUMMARY_CHARS - 2) + "…”"
    exact = "y" * catalog.FALLBACK_SUMMARY_CHARS
    assert catalog.fallback_title([], "M", "", exact) == f"M – “{exact}”"


def test_the_quoted_summary_is_the_first_non_empty_one_in_page_order():
    pages = [{"summary": ""}, {"summary": "  "}, {}, {"summary": "Second best"}, {"summary": "Third"}]
    assert catalog.most_helpful_summary(pages) == "Second best"
    assert catalog.most_helpful_summary([{"summary": " "}]) == "" and catalog.most_helpful_summary([]) == ""
