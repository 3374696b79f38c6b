"""Catalog, search, product pages and the analysis dashboard against the pipeline-loaded catalog.

Every expected list, count and review comes from the raw JSON lines (tests/site_catalog.py), or
from the files the training job wrote (similar items, metrics), never from the site's own reads.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from urllib.parse import quote

import pytest
from django.contrib.humanize.templatetags.humanize import intcomma
from django.template.defaultfilters import floatformat, linebreaksbr
from django.utils.html import escape

from tests.site_catalog import MAX_REVIEW_PAGES, ids_in

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
PER_PAGE = 24


def _get(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


def _all_result_ids(client, query: str) -> tuple[list[str], int]:
    first = _get(client, f"/?{query}")
    total = int(re.search(r"([\d,]+) products · page 1 of (\d+)", first).group(1).replace(",", ""))
    pages = math.ceil(total / PER_PAGE) if total else 1
    ids = ids_in(first, "products")
    for page in range(2, pages + 1):
        ids += ids_in(_get(client, f"/?{query}&page={page}"), "products")
    return ids, total


def test_catalog_pages_in_review_count_order(site, client):
    order = site.order()
    assert len(order) == len(site.reviews) > 1000  # both files' products are listed
    pages = math.ceil(len(order) / PER_PAGE)
    first = _get(client, "/")
    assert f"{intcomma(len(order))} products · page 1 of {pages}" in first
    assert ids_in(first, "products") == order[:PER_PAGE]
    assert 'rel="next" href="?category=&page=2"' in first
    assert ids_in(_get(client, "/?page=2"), "products") == order[PER_PAGE:2 * PER_PAGE]
    last = _get(client, f"/?page={pages}")
    assert ids_in(last, "products") == order[(pages - 1) * PER_PAGE:] and 'rel="next"' not in last
    assert "No products found." in _get(client, f"/?page={pages + 1}", status=404)  # and not cached


def test_category_filter(site, client):
    categories = Counter(site.category.values())
    assert set(categories) == {"Musical Instruments", "Gift Cards"}
    home = _get(client, "/")
    for name, n in categories.items():
        assert f'<option value="{name}" >{name} ({intcomma(n)})</option>' in home
        ids, total = _all_result_ids(client, f"category={quote(name)}")
        assert total == n and ids == site.order(name)
    assert "No products found." in _get(client, "/?category=Kitchen", status=404)


def _expected_search(site, term: str) -> list[str]:
    """The full ordered answer to a one-word search: title/brand/category matches, then review-only ones."""
    primary, review = site.search(term)
    assert primary or review, f"the data has no {term!r}: pick another term"
    # review text is searched through each product's summaries, of which the catalog keeps the
    # first 50 and 2,000 characters; the terms here occur only in products with fewer than that
    for p in review:
        summaries = [r.summary for r in site.reviews[p]]
        assert len(summaries) <= 50 and sum(len(s) + 1 for s in summaries) <= 1900, \
            f"{term!r}: product {p} has too much review text for this check; pick another term"
    return primary + review


@pytest.mark.parametrize("term", ["starbucks", "STARBUCKS", "flanger", "cymbal", "magic"])
def test_search_answers_every_match_in_rank_order(site, client, term):
    expected = _expected_search(site, term)
    ids, total = _all_result_ids(client, f"q={quote(term)}")
    assert total == len(expected) and ids == expected


@pytest.mark.parametrize("term", ["computer", "card"])
def test_brand_and_category_matches_rank_before_review_text(site, client, term):
    """"computer" is in the brand or category path of products whose titles lack it, and in the
    reviews of others; "card" is in the category of every gift card, some of whose titles lack it."""
    primary, review = site.search(term)
    not_by_title = [p for p in primary if not any(w.startswith(term) for w in _title_words(site, p))]
    assert not_by_title and review, "the data no longer has both kinds of match for this term"
    ids, total = _all_result_ids(client, f"q={term}")
    assert ids[:len(primary)] == primary and total == len(ids)
    # after them the review-text matches, most reviewed first (the catalog searches each product's
    # first 50 summaries, so one with more may be left out; none is added)
    tail = ids[len(primary):]
    assert tail and set(tail) <= set(review) and tail == [p for p in review if p in set(tail)]
    assert {p for p in review if len(site.reviews[p]) <= 50} <= set(tail)
    assert max(ids.index(p) for p in not_by_title) < min(ids.index(p) for p in tail)


def _title_words(site, product_id: str) -> list[str]:
    return re.findall(r"[^\W_]+", site.titles.get(product_id, "").lower())


def test_search_by_a_word_of_a_title_finds_it(site, client):
    """The rarest word of a gift card's title, whole and as the prefix a shopper is still typing."""
    words = Counter(w for t in site.titles.values() for w in set(re.findall(r"[^\W_]+", t.lower())))
    product = next(p for p in site.order("Gift Cards") if site.titles.get(p))
    word = min(re.findall(r"[^\W_]+", site.titles[product].lower()), key=lambda w: (words[w], -len(w)))
    for typed in (word, word[:max(1, len(word) - 2)], word.upper()):
        expected = _expected_search(site, typed)
        ids, total = _all_result_ids(client, f"q={quote(typed)}")
        assert product in ids and ids == expected and total == len(expected), typed
    page = _get(client, f"/?q={quote(word)}")
    assert escape(site.titles[product]) in page


def test_a_multi_word_search_needs_every_word(site, client):
    """Products matching both words; more words matched by title/brand/category first."""
    matches = {}
    for term in ("birthday", "card"):
        primary, review = site.search(term)
        _expected_search(site, term)
        matches[term] = {p: int(p in set(primary)) for p in primary + review}
    both = set(matches["birthday"]) & set(matches["card"])
    expected = sorted(both, key=lambda p: (-matches["birthday"][p] - matches["card"][p],
                                           -len(site.reviews.get(p, [])), p))
    assert len({matches["birthday"][p] + matches["card"][p] for p in expected}) > 1  # both kinds
    ids, total = _all_result_ids(client, "q=Birthday+card")
    assert ids == expected and total == len(expected)
    assert _all_result_ids(client, "q=starbucks+zzzqqqxx")[1] == 0


def test_a_broad_search_ranks_and_counts_every_match(site, client):
    """More than 1,000 matches (every gift card, by its category): all counted, page 1 is the best."""
    expected = _expected_search(site, "card")
    assert len(expected) > 1000
    first = _get(client, "/?q=card")
    total = int(re.search(r"([\d,]+) products · page 1 of", first).group(1).replace(",", ""))
    assert total == len(expected) and ids_in(first, "products") == expected[:PER_PAGE]
    assert ids_in(_get(client, "/?q=card&page=3"), "products") == expected[2 * PER_PAGE:3 * PER_PAGE]


def test_search_is_literal_text_and_combines_with_category(site, client):
    assert not site.search("c.mbal")[0] + site.search("c.mbal")[1]
    ids, total = _all_result_ids(client, "q=c.mbal")  # a regex would match "cymbal"
    assert total == 0 and ids == []
    assert _all_result_ids(client, "q=%24where") == _all_result_ids(client, "q=where")  # "$where" is a word
    # the search covers every product with metadata, reviewed or not (browsing lists reviewed ones)
    everywhere = _expected_search(site, "magic")
    for category in ("Gift Cards", "Musical Instruments"):
        expected = [p for p in everywhere if site.category_of(p) == category]
        assert 0 < len(expected) < len(everywhere)
        ids, total = _all_result_ids(client, f"q=magic&category={quote(category)}")
        assert ids == expected and total == len(expected), category


def test_search_reads_the_index_the_pipeline_built(site, client):
    """mongo_load wrote one search_index document per word, its postings in rank order."""
    from core import mongo

    expected = _expected_search(site, "flanger")
    assert mongo.get_db()[mongo.SEARCH_INDEX].find_one({"_id": "flanger"})["ids"].split(" ") == expected
    assert _all_result_ids(client, "q=flanger")[0] == expected


def test_search_api_and_throttle(site, client):
    from django.test.utils import override_settings

    expected = _expected_search(site, "starbucks")
    body = client.get("/api/search/?q=starbucks&per_page=100", REMOTE_ADDR="10.77.0.1").json()
    assert body["total"] == len(expected) and [i["product_id"] for i in body["items"]] == expected[:100]
    assert client.get("/api/search/?q=", REMOTE_ADDR="10.77.0.1").status_code == 400
    with override_settings(SEARCH_RATE="3/min"):
        address = "10.77.0.2"
        for _ in range(3):
            assert client.get("/?q=guitar", REMOTE_ADDR=address).status_code == 200
        refused = client.get("/?q=guitar", REMOTE_ADDR=address)
        assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
        assert "Too many searches" in refused.content.decode()
        assert client.get("/api/search/?q=guitar", REMOTE_ADDR=address).status_code == 429
        assert client.get("/", REMOTE_ADDR=address).status_code == 200  # browsing is not a search
        assert client.get("/?q=guitar", REMOTE_ADDR="10.77.0.3").status_code == 200  # per client


def test_product_page_histogram_reviews_and_similar_items(site, client):
    from core import artifacts

    product = site.order()[0]  # the most reviewed: several review pages
    n = len(site.reviews[product])
    page = _get(client, f"/p/{product}/")
    assert f"from {intcomma(n)} reviews" in page
    shown = {int(star): int(count.replace(",", "")) for star, count in
             re.findall(r"<tr><td>(\d) ★</td><td [^>]*><div [^>]*></div></td><td>([\d,]+)</td></tr>", page)}
    assert shown == site.histogram(product)

    pages = site.review_pages(product)
    assert len(pages) == min(math.ceil(n / 10), MAX_REVIEW_PAGES) > 2
    for number in (1, 2, len(pages)):
        html = page if number == 1 else _get(client, f"/p/{product}/?page={number}")
        texts = re.findall(r"<article class=\"card\">.*?<p>(.*?)</p></article>", html, re.S)
        assert texts == [linebreaksbr(escape(r.text)) for r in pages[number - 1]], f"review page {number}"
    assert 'More reviews →' in page and '← Newer' not in page
    assert client.get(f"/p/{product}/?page={len(pages) + 1}").status_code == 404  # and not cached

    # what training wrote for publish to load
    similar = {d["_id"]: [i["product_id"] for i in d["items"]]
               for d in artifacts.serving_list_docs(_model_dir(site) / artifacts.SIMILAR_LISTS)}
    assert ids_in(page, "similar") == similar[product][:8]
    assert product not in similar[product]


def test_product_page_of_a_gift_card_shows_its_title(site, client):
    product = site.order("Gift Cards")[0]
    page = _get(client, f"/p/{product}/")
    assert f"<h1>{escape(site.titles[product])}</h1>" in page
    assert "Log in</a> to rate this product." in page


@pytest.mark.parametrize("path", ["/p/NO-SUCH-PRODUCT/", "/p/%24gt/", "/p/a%0A/", "/p/" + "A" * 129 + "/"])
def test_unknown_or_malformed_product_is_404(site, client, path):
    assert client.get(path).status_code == 404


def _model_dir(site):
    from core import artifacts

    return artifacts.models_dir() / site.model_version


def test_dashboard_shows_eda_and_model_against_baselines(site, client):
    page = _get(client, "/dashboard/")
    summary = json.loads((site.eda_dir / "summary.json").read_text())
    assert len(summary["analyses"]) >= 7
    for analysis in summary["analyses"]:
        assert escape(analysis["title"]) in page
        url = f"/dashboard/plots/{analysis['png']}"
        assert f'src="{url}"' in page
        plot = client.get(url)
        assert plot.status_code == 200 and plot["Content-Type"] == "image/png"
        assert b"".join(plot.streaming_content).startswith(b"\x89PNG\r\n\x1a\n")
    # the rating distribution table, checked against the raw files
    stars = Counter(r.rating for rs in site.reviews.values() for r in rs)
    for star, n in stars.items():
        sentiment = "negative" if star <= 2 else "neutral" if star == 3 else "positive"
        assert f"<td>{star}</td><td>{sentiment}</td><td>{n}</td>" in page, star

    metrics = json.loads((_model_dir(site) / "metrics.json").read_text())
    assert f"<code>{site.model_version}</code>" in page
    rows = {"model (ease)": metrics["test"], **metrics["baselines"]}
    for name, m in rows.items():
        cells = "".join(f"<td>{floatformat(m[k], 4) if m.get(k) is not None else '–'}</td>"
                        for k in ("ndcg@10", "recall@10", "hr@10", "rmse", "coverage"))
        assert f"<tr><th>{name}</th>{cells}</tr>" in page, name
    assert metrics["test"]["ndcg@10"] > metrics["baselines"]["popularity"]["ndcg@10"]


def test_dashboard_top_tables_name_every_product(site, client):
    """The EDA job leaves a product without metadata untitled; the table shows the site's headline
    for it (category and a review's words), as every other page does, never an empty cell."""
    from core import catalog
    from shop.products import headline

    page = _get(client, "/dashboard/")
    summary = json.loads((site.eda_dir / "summary.json").read_text())
    rows = [r for a in summary["analyses"] if a["name"] in ("most_reviewed", "least_reviewed") for r in a["table"]]
    assert len(rows) == 20
    docs = catalog.get_products([r["product_id"] for r in rows])
    for r in rows:
        shown = r["title"] or headline(docs[r["product_id"]])
        assert shown and shown != r["product_id"]
        assert f"<td>{r['product_id']}</td><td>{escape(shown)}</td>" in page, r["product_id"]


@pytest.mark.parametrize("name", ["summary.json", "..%2Fsummary.json", "x.png", "RATING.png"])
def test_dashboard_plots_only_serves_existing_pngs(site, client, name):
    assert client.get(f"/dashboard/plots/{name}").status_code == 404


def test_public_pages_answer_head(site, client):
    """Uptime checkers and link previews send HEAD: the public pages answered it 405."""
    product = site.order()[0]
    for path in ("/", f"/p/{product}/", "/?q=guitar", "/dashboard/"):
        answer = client.head(path)
        assert answer.status_code == 200 and answer.content == b"", path
    assert client.head("/recommendations/").status_code == 302  # to the login page, as a GET
