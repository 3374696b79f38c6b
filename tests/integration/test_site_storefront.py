"""What a shopper sees: product cards, the product page's two "also" lists, reasons by title, the
home page's popular and trending lists, and the onboarding step after sign-up.

Expected titles, brands, prices, images and "also bought" lists come from the raw metadata lines
(tests/site_catalog.py's files), never from the site's own reads.
"""
from __future__ import annotations

import ast
import gzip
import json
import math
import re
import uuid
from dataclasses import dataclass
from html import unescape

import pytest
from django.template.defaultfilters import floatformat
from django.utils.html import escape

from tests.site_catalog import META_FILES, PASSWORD, ids_in

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
PLACEHOLDER = "/static/shop/placeholder.svg"


@dataclass(frozen=True)
class Meta:
    title: str
    brand: str
    price: float | None
    image: str | None
    also_buy: tuple[str, ...]


@pytest.fixture(scope="module")
def meta() -> dict[str, Meta]:
    """The metadata as Amazon published it (2018 JSON lines), the first record of each product."""
    out: dict[str, Meta] = {}
    for path in META_FILES:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:  # 2014 metadata: one Python dict literal per line
                    d = ast.literal_eval(line)
                related = d.get("related") if isinstance(d.get("related"), dict) else {}
                price = re.search(r"\d+(\.\d+)?", str(d.get("price") or "").replace(",", ""))
                images = d.get("image") or d.get("imUrl") or []
                images = [images] if isinstance(images, str) else images
                out.setdefault(d["asin"].strip(), Meta(
                    title=(d.get("title") or "").strip(), brand=(d.get("brand") or "").strip(),
                    price=float(price.group(0)) if price and float(price.group(0)) > 0 else None,
                    image=next((u for u in images if u.startswith(("http://", "https://"))), None),
                    also_buy=tuple(d.get("also_buy") or related.get("also_bought") or ())))
    return out


def _get(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


def _cards(html: str, element_id: str) -> dict[str, str]:
    """{product id: the card's HTML} inside the list with this id, in page order."""
    match = re.search(rf'<(ul|ol) [^>]*id="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f'no list id="{element_id}"'
    return dict(re.findall(r'<li class="card" data-product="([^"]+)">(.*?)</li>', match.group(2), re.S))


def _card_title(card: str) -> str:
    return unescape(re.search(r'<span class="title">(.*?)</span>', card, re.S).group(1))


def _check_card(card: str, product_id: str, meta: dict[str, Meta], site) -> None:
    """Image (lazy, data URL or placeholder, placeholder on error), title, brand, price, stars, category."""
    img = re.search(r"<img [^>]*>", card).group(0)
    assert 'loading="lazy"' in img and f'data-placeholder="{PLACEHOLDER}"' in img, img
    m = meta.get(product_id)
    src = unescape(re.search(r'src="([^"]*)"', img).group(1))
    assert src == (m.image if m and m.image else PLACEHOLDER), (product_id, src)
    title = _card_title(card)
    assert product_id not in title and title.strip()  # never the bare id as the headline
    if m and m.title:
        assert title == (m.title if len(m.title) <= 90 else m.title[:89] + "…")
    else:  # no title in the data: a readable fallback (e.g. its category and what a review said)
        assert len(title) > 12 and not re.fullmatch(r"[A-Z0-9]{10}", title), title
    if m and m.brand:
        assert f'<span class="brand">{escape(m.brand)}</span>' in card
    else:
        assert 'class="brand"' not in card
    if m and m.price:
        assert f'<span class="price">${m.price:.2f}</span>' in card
    else:
        assert 'class="price"' not in card
    reviews = site.reviews.get(product_id, [])
    avg = round(sum(r.rating for r in reviews) / len(reviews), 3) if reviews else 0.0
    stars = math.floor(avg + 0.5)  # to the nearest whole star, half up
    shown = floatformat(round(avg, 2), 1)
    assert f'<span class="stars" title="{shown} out of 5">{"★" * stars}{"☆" * (5 - stars)}</span>' in card, product_id
    assert f'<span class="category muted">{escape(site.category_of(product_id))}</span>' in card


def test_catalog_cards_show_image_title_brand_price_stars_category(site, client, meta):
    for query in ("category=Gift+Cards", "category=Musical+Instruments", "category=Gift+Cards&page=2"):
        cards = _cards(_get(client, f"/?{query}"), "products")
        assert len(cards) == 24
        for pid, card in cards.items():
            _check_card(card, pid, meta, site)
    gift = _cards(_get(client, "/?category=Gift+Cards"), "products")
    # the data's mix: some cards have an image, some the placeholder; some a brand and a price
    srcs = {re.search(r'src="([^"]*)"', c).group(1) == PLACEHOLDER for c in gift.values()}
    assert srcs == {True, False}
    priced = [c for page in range(1, 8) for c in _cards(_get(client, f"/?category=Gift+Cards&page={page}"),
                                                         "products").values() if 'class="price"' in c]
    assert priced


def test_placeholder_is_a_local_static_file_and_failed_images_fall_back(site, client):
    from django.contrib.staticfiles import finders

    svg = finders.find("shop/placeholder.svg")
    assert svg and open(svg).read().lstrip().startswith("<svg")
    page = _get(client, "/")
    assert '<script src="/static/shop/images.js"></script>' in page.split("</head>", 1)[0]
    script = open(finders.find("shop/images.js")).read()
    assert 'addEventListener("error"' in script and "dataset.placeholder" in script


def test_product_page_shows_facts_bought_together_and_similar(site, client, meta):
    from core import artifacts

    in_catalog = set(site.reviews) | set(site.titles)
    product = next(p for p in site.order("Gift Cards")
                   if p in meta and meta[p].image and sum(a in in_catalog for a in meta[p].also_buy) >= 2)
    m = meta[product]
    page = _get(client, f"/p/{product}/")
    hero = re.search(r'<img [^>]*id="product-image"[^>]*>', page).group(0)
    assert f'src="{escape(m.image)}"' in hero and 'loading="lazy"' in hero and f'data-placeholder="{PLACEHOLDER}"' in hero
    assert f"<h1>{escape(m.title)}</h1>" in page
    if m.brand:
        assert f'<span class="brand">by {escape(m.brand)}</span>' in page
    # frequently bought together: the metadata's also_buy, in its order, only what the catalog has
    expected = [p for p in dict.fromkeys(m.also_buy) if p in in_catalog and p != product][:8]
    fbt = _cards(page, "fbt")
    assert list(fbt) == expected and len(expected) >= 2
    for pid, card in fbt.items():
        _check_card(card, pid, meta, site)
    # beside it, our own "customers who liked this also liked" from the model
    similar = {d["_id"]: [i["product_id"] for i in d["items"]]
               for d in artifacts.serving_list_docs(artifacts.models_dir() / site.model_version / artifacts.SIMILAR_LISTS)}
    cards = _cards(page, "similar")
    assert list(cards) == similar[product][:8]
    for pid, card in cards.items():
        _check_card(card, pid, meta, site)
    assert page.index("Frequently bought together") < page.index("Customers who liked this also liked")


def test_product_without_metadata_gets_a_readable_headline_and_the_placeholder(site, client, meta):
    product = next(p for p in site.order("Musical Instruments") if p not in meta)
    page = _get(client, f"/p/{product}/")
    h1 = unescape(re.search(r"<h1>(.*?)</h1>", page, re.S).group(1))
    assert product not in h1 and h1.startswith("Musical Instruments")
    assert f'id="product-image" src="{PLACEHOLDER}"' in page
    assert 'id="fbt"' not in page  # nothing to show: no empty section


def _signup(client) -> str:
    username = f"shop{uuid.uuid4().hex[:8]}"
    response = client.post("/accounts/signup/", {"username": username, "email": f"{username}@example.com",
                                                  "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/welcome/"
    return username


def test_every_reason_names_a_title(site, client, meta, ratings_probe, process_published):
    _signup(client)
    liked = [p for p in site.order("Gift Cards") if meta.get(p) and meta[p].title][:2]
    mark = ratings_probe.mark()
    for p in liked:
        assert client.post("/api/ratings/", {"product_id": p, "rating": 5},
                           content_type="application/json").status_code == 202
    process_published(mark)
    data = client.get("/api/recommendations/").json()
    assert data["source"] == "personal" and data["items"]
    for item in data["items"]:
        assert item["because"] in liked and item["because_title"] == meta[item["because"]].title
        assert item["title"] and item["title"] != item["product_id"]
        assert item["image"] == (meta[item["product_id"]].image if item["product_id"] in meta else None)
    page = _get(client, "/recommendations/")
    cards = _cards(page, "recs")
    assert list(cards) == [i["product_id"] for i in data["items"]]
    for item in data["items"]:
        card = cards[item["product_id"]]
        _check_card(card, item["product_id"], meta, site)
        title = meta[item["because"]].title
        shown = title if len(title) <= 60 else title[:59] + "…"
        assert f'because you rated <a href="/p/{item["because"]}/">{escape(shown)}</a>' in card
    assert not re.search(r"because you rated <a [^>]*>[A-Z0-9]{10}</a>", page)


def test_home_page_shows_popular_and_trending_to_anonymous_visitors(site, client, ratings_probe,
                                                                    process_published, meta):
    from core import popular

    # written by the pipeline's publish step (the fixture runs no Celery task): all three lists of
    # each kind (overall and the two categories), before the model went live
    assert site.records["publish"]["loaded"]["popular_lists"] == {"popular": 3, "trending": 3}
    home = _get(client, "/")
    assert ids_in(home, "home-popular") == site.order()[:8]
    for pid, card in _cards(home, "home-popular").items():
        _check_card(card, pid, meta, site)
    assert ids_in(home, "products") == site.order()[:24]  # the catalog is still there below
    assert 'id="home"' not in _get(client, "/?page=2") and 'id="home"' not in _get(client, "/?q=guitar")

    # a product several people rated just now trends once the trending refresh ran (Celery beat)
    from core import kafka_io
    from core.events import RatingEvent

    pick = site.order("Musical Instruments")[30]
    mark = ratings_probe.mark()
    for _ in range(6):
        kafka_io.publish_event(RatingEvent(user_id=f"trend{uuid.uuid4().hex[:6]}", product_id=pick, rating=5))
    process_published(mark)
    popular.refresh_trending()
    trending = ids_in(_get(client, "/"), "home-trending")
    assert pick in trending


def test_signup_leads_to_onboarding_whose_picks_make_the_first_list(site, client, meta, ratings_probe,
                                                                    process_published, mongo_db):
    _signup(client)
    page = _get(client, "/welcome/")
    offered = re.findall(r'<select name="rate_([^"]+)"', page)
    for category in ("Gift Cards", "Musical Instruments"):
        assert f"Popular in {category}</h2>" in page
        assert set(site.order(category)[:6]) <= set(offered)
    assert len(offered) == 12 and 'loading="lazy"' in page

    # nothing chosen: refused, nothing published
    mark = ratings_probe.mark()
    empty = client.post("/welcome/", {f"rate_{p}": "" for p in offered})
    assert empty.status_code == 400 and "Rate at least one product" in empty.content.decode()
    for bad in ({"rate_NO-SUCH-PRODUCT": "5"}, {f"rate_{offered[0]}": "9"}, {f"rate_{offered[0]}": "5", "user_id": "x"},
                {"rate_a$b": "5"}):
        assert client.post("/welcome/", bad).status_code == 400, bad
    assert ratings_probe.count_since(mark) == 0

    picks = {site.order("Gift Cards")[0]: 5, site.order("Musical Instruments")[1]: 4, site.order("Musical Instruments")[3]: 5}
    form = {f"rate_{p}": str(picks.get(p, "")) for p in offered}
    mark = ratings_probe.mark()
    done = client.post("/welcome/", form)
    assert done.status_code == 302 and done["Location"] == "/recommendations/"
    # the same Kafka path as any rating: one event per pick, then the worker's step
    events = {json.loads(r.value)["product_id"]: json.loads(r.value)["rating"] for r in ratings_probe.read_since(mark)}
    assert events == picks
    process_published(mark)
    data = client.get("/api/recommendations/").json()
    assert data["source"] == "personal" and data["n_rated"] == 3 and data["items"]
    assert {i["because"] for i in data["items"]} <= set(picks) and not {i["product_id"] for i in data["items"]} & set(picks)
    page = _get(client, "/recommendations/")
    assert 'data-source="personal"' in page and "Thanks! You rated 3 products." in page
    # onboarding again offers only what is not rated yet
    again = re.findall(r'<select name="rate_([^"]+)"', _get(client, "/welcome/"))
    assert again and not set(again) & set(picks)


def test_onboarding_offers_no_more_products_than_may_be_rated_at_once(site, client):
    """Six categories of six: 36 products offered against a default limit of 30 ratings a minute,
    and a shopper who rated them all was refused whole. Each category's list is cut alike."""
    from django.test import override_settings

    _signup(client)
    with override_settings(RATING_RATE="6/min"):
        page = _get(client, "/welcome/")
    offered = re.findall(r'<select name="rate_([^"]+)"', page)
    for category in ("Gift Cards", "Musical Instruments"):
        assert f"Popular in {category}</h2>" in page
        assert set(site.order(category)[:3]) <= set(offered)
    assert len(offered) == 6


def test_onboarding_needs_a_login(site, client):
    response = client.get("/welcome/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
