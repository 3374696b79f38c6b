"""Every word a shopper searches for counts, or the page says which did not.

A query read only its first 8 distinct words and dropped the rest, and dropped any word longer
than the index keys (40 letters), both silently: a ninth word or a pasted serial number made the
search match more products than asked for. Now an over-long word matches nothing (the index keys
neither it nor its prefixes), and the page names the words past the eighth. And the results of
the same words typed in another order (the ranking does not depend on it) come from one cached
search, not from the index again.

Real site (Django's test client), the synthetic catalog of realtime_support in FerretDB (300
products "Synthetic product <i>", brand RT, 100 in each of three categories) with its search index
written as the load job writes it (``core/search.py``'s packed postings), the real Redis.
"""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from realtime_support import CATEGORIES, rt_catalog  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

EVERY_PRODUCT = ["synthetic", "product", "rt", "w1", "w2", "w3", "w4", "w5", "w6"]


@pytest.fixture(scope="module")
def indexed(rt_catalog):
    """The search index of the synthetic catalog: each of ``EVERY_PRODUCT`` lists all products,
    each category's word the products of that category (all by title, brand or category: the
    primary tier), in the catalog's popularity order."""
    from core import mongo

    ranked = rt_catalog.products  # most reviewed first

    def doc(key: str, ids: list[str]) -> dict:
        ranks = [ranked.index(pid) for pid in ids]
        return {"_id": key, "n": len(ids), "ids": " ".join(ids), "tiers": "1" * len(ids),
                "ranks": " ".join(map(str, ranks)), "cats": list(CATEGORIES),
                "cat": " ".join(str(r % len(CATEGORIES)) for r in ranks)}

    docs = [doc(word, ranked) for word in EVERY_PRODUCT]
    docs += [doc(c.lower(), [p for i, p in enumerate(ranked) if i % len(CATEGORIES) == n])
             for n, c in enumerate(CATEGORIES)]
    mongo.bulk_upsert(mongo.SEARCH_INDEX, docs, db=rt_catalog.db)
    return rt_catalog


def _search(client, q: str) -> tuple[int, list[str], str]:
    """(total, the first page's ids, the page) of a search."""
    response = client.get(f"/?q={quote(q)}")
    assert response.status_code == 200, response
    page = response.content.decode()
    total = int(re.search(r"([\d,]+) products ·", page).group(1).replace(",", ""))
    return total, re.findall(r'data-product="([^"]+)"', page), page


def _unused(page: str) -> list[str]:
    """The words the page says it did not search for."""
    found = re.search(r'<p class="msg info" id="unused-words">(.*?)</p>', page)
    return re.findall(r"“([^”]*)”", found.group(1)) if found else []


def test_words_past_the_eighth_are_named_on_the_page(indexed, site_cache, client):
    total, _, page = _search(client, "synthetic product")
    assert total == 300 and _unused(page) == []
    total, _, page = _search(client, "synthetic product rt w1 w2 w3 w4 w5 w6")  # nine: w6 not read
    assert total == 300 and _unused(page) == ["w6"]
    total, _, page = _search(client, "zzznotaword synthetic product rt w1 w2 w3 w4 w5 w6 w6 Synthetic")
    assert total == 0 and _unused(page) == ["w5", "w6"]  # repeats are one word; the first eight are read
    total, _, page = _search(client, "synthetic product rt w1 w2 w3 w4 w5 zzznotaword")
    assert total == 300 and _unused(page) == ["zzznotaword"]
    api = client.get("/api/search/", {"q": "synthetic product rt w1 w2 w3 w4 w5 zzznotaword"}).json()
    assert api["total"] == 300 and api["unused_words"] == ["zzznotaword"]  # the API says so too
    assert client.get("/api/search/", {"q": "synthetic"}).json()["unused_words"] == []


def test_a_word_too_long_to_be_indexed_matches_nothing(indexed, site_cache, client):
    assert _search(client, "synthetic")[0] == 300
    serial = "x" * 41  # one letter past what the index keys (core.search.MAX_WORD)
    for q in (f"synthetic {serial}", f"{serial} synthetic", f"drums {serial.upper()}", serial):
        total, ids, page = _search(client, q)
        assert total == 0 and ids == [] and "No products found." in page, q
    assert _search(client, "synthetic " + "x" * 40)[0] == 0  # indexed length, but no product has it


def test_the_same_words_in_another_order_are_one_cached_search(indexed, site_cache, client, mongo_commands):
    first: list = []
    commands = mongo_commands.watch(lambda: first.append(_search(client, "synthetic guitars")))
    assert [c for c in commands if c[1] == "search_index"] == [("find", "search_index")] * 2  # a read per word
    total, ids, _ = first[0]
    assert total == 100 and ids == indexed.products[0:3 * 24:3]  # the guitars, most reviewed first

    again: list = []
    commands = mongo_commands.watch(lambda: again.append(_search(client, "Guitars SYNTHETIC guitars")))
    assert [c for c in commands if c[1] == "search_index"] == []
    assert again[0][:2] == (total, ids)
