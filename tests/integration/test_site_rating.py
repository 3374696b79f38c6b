"""Rating, recommendations and the JSON API against real Kafka, MongoDB and Redis.

What the site published is read back from the session's Kafka topic; where a test needs the
worker's result it runs the worker's own step (kafka_workers.process.handle) on those records,
so the whole path page -> Kafka -> worker -> MongoDB -> page is the real one.
"""
from __future__ import annotations

import json

import pytest
from knox.models import AuthToken

from core.events import parse_event
from tests.site_catalog import PASSWORD, ids_in

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _uid(user) -> str:
    return user.profile.recommender_id


def _rate_and_process(client, ratings_probe, process_published, product: str, rating: int) -> None:
    """Rate through the API, then run the worker's step on what the site published."""
    mark = ratings_probe.mark()
    assert client.post("/api/ratings/", {"product_id": product, "rating": rating},
                       content_type="application/json").status_code == 202
    process_published(mark)


def test_rating_publishes_one_event_and_returns_before_processing(site, user_client, ratings_probe, mongo_db):
    from shop.models import RatingSubmission

    client, user = user_client
    product = site.order("Gift Cards")[0]
    mark = ratings_probe.mark()
    response = client.post(f"/p/{product}/rate/", {"rating": "4", "text": "  Arrived <b>fast</b>, works.  "})
    assert response.status_code == 302 and response["Location"] == "/recommendations/"

    records = ratings_probe.read_since(mark)
    assert len(records) == 1
    event = parse_event(records[0].value)  # the contract the workers enforce
    assert (event.user_id, event.product_id, event.rating) == (_uid(user), product, 4)
    assert event.text == "Arrived <b>fast</b>, works." and records[0].key == _uid(user).encode()
    sub = RatingSubmission.objects.get(user=user)
    assert sub.event_id == event.event_id and sub.published and sub.rating == 4 and sub.product_id == product
    # no worker runs in this test, so the page answered without waiting for the event's processing
    assert mongo_db["ratings"].find_one({"_id": event.event_id}) is None
    page = client.get("/recommendations/").content.decode()
    assert "Thanks! You rated it 4 ★" in page


def test_anonymous_cannot_rate(site, client, ratings_probe):
    product = site.order()[0]
    mark = ratings_probe.mark()
    page = client.post(f"/p/{product}/rate/", {"rating": "5"})
    assert page.status_code == 302 and page["Location"].startswith("/accounts/login/")
    api = client.post("/api/ratings/", {"product_id": product, "rating": 5}, content_type="application/json")
    assert api.status_code == 401
    assert ratings_probe.count_since(mark) == 0


def test_get_on_rate_is_refused(site, user_client, ratings_probe):
    client, _ = user_client
    mark = ratings_probe.mark()
    assert client.get(f"/p/{site.order()[0]}/rate/?rating=5").status_code == 405
    assert ratings_probe.count_since(mark) == 0


def test_api_rating_etag_polling_and_status(site, user_client, make_user, ratings_probe, process_published):
    client, user = user_client
    first = client.get("/api/recommendations/")
    assert first.status_code == 200 and first["Cache-Control"] == "private, no-cache"
    assert first.json()["source"] == "popular" and first.json()["n_rated"] == 0
    etag = first["ETag"]
    assert client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=etag).status_code == 304

    liked = site.order("Musical Instruments")[3]
    mark = ratings_probe.mark()
    posted = client.post("/api/ratings/", {"product_id": liked, "rating": 5, "text": "Love it"},
                         content_type="application/json")
    assert posted.status_code == 202, posted.content
    body = posted.json()
    assert body["status"] == "accepted" and body["product_id"] == liked and body["rating"] == 5
    event_id = body["event_id"]
    status = client.get(f"/api/ratings/{event_id}/").json()
    assert status == {"event_id": event_id, "published": True, "state": "pending", "model_version": None}
    assert client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=etag).status_code == 304  # not processed yet

    outcomes = process_published(mark)  # the worker's step on exactly what the site published
    assert [o.event.event_id for o in outcomes] == [event_id]

    changed = client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    data = changed.json()
    assert data["source"] == "personal" and data["model_version"] == site.model_version
    assert data["source_event_id"] == event_id and data["n_rated"] == 1
    assert data["items"] and all(i["because"] == liked for i in data["items"])
    assert liked not in {i["product_id"] for i in data["items"]}
    assert client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=changed["ETag"]).status_code == 304
    assert client.get(f"/api/ratings/{event_id}/").json()["state"] == "processed"

    page = client.get("/recommendations/").content.decode()
    assert ids_in(page, "recs") == [i["product_id"] for i in data["items"]]
    assert 'data-source="personal"' in page and "because you rated" in page
    assert json.dumps(changed["ETag"]) in page  # the page starts polling from the list it shows

    other = make_user()
    client.force_login(other)
    assert client.get(f"/api/ratings/{event_id}/").status_code == 404  # not yours: not found


def test_new_user_gets_popular_trending_and_onboarding(site, user_client, ratings_probe, process_published):
    from kafka_workers import tasks

    client, _ = user_client
    trending_pick = site.order("Gift Cards")[5]
    _rate_and_process(client, ratings_probe, process_published, trending_pick, 5)
    tasks.refresh_trending()  # what Celery beat runs

    client.force_login(_new_user())
    page = client.get("/recommendations/").content.decode()
    assert 'data-source="popular"' in page and 'id="onboarding"' in page
    assert ids_in(page, "recs") == site.order()[:20]  # most reviewed first
    assert "Trending in all" in page and "Popular in Gift Cards" in page and "Popular in Musical Instruments" in page
    trending = page.split("Trending in all", 1)[1].split("</ul>", 1)[0]
    assert f'href="/p/{trending_pick}/"' in trending
    assert page.count(">I like this</button>") >= 8


def _new_user():
    from django.contrib.auth.models import User

    from accounts.models import Profile

    user = User.objects.create_user(f"fresh-{User.objects.count()}", "f@example.com", PASSWORD)
    Profile.objects.create(user=user)
    return user


def test_similar_items_api(site, client):
    from core import artifacts

    product = site.order()[1]
    expected = next(d["items"] for d in artifacts.serving_list_docs(
        artifacts.models_dir() / site.model_version / artifacts.SIMILAR_LISTS) if d["_id"] == product)
    response = client.get(f"/api/products/{product}/similar/")
    assert response.status_code == 200
    got = response.json()
    assert [i["product_id"] for i in got] == [i["product_id"] for i in expected]
    assert [i["score"] for i in got] == pytest.approx([i["score"] for i in expected])
    assert all(i["title"] for i in got)
    assert client.get("/api/products/NO-SUCH/similar/").status_code == 404


def test_token_authentication(site, client, make_user):
    user = make_user()
    bad = client.post("/api/token/", {"username": user.username, "password": "wrong"})
    assert bad.status_code == 400 and "token" not in bad.json()
    token = client.post("/api/token/", {"username": user.username, "password": PASSWORD}).json()["token"]
    assert [t.token_key for t in AuthToken.objects.filter(user=user)] == [token[:15]]
    ok = client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {token}")
    assert ok.status_code == 200 and ok.json()["user_id"] == _uid(user)
    for headers in ({"HTTP_AUTHORIZATION": "Token " + "0" * 40}, {}):  # a bad token, no credentials
        refused = client.get("/api/recommendations/", **headers)
        assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Token"


def test_openapi_schema_is_valid(site, client):
    from drf_spectacular.validation import validate_schema

    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)  # jsonschema against the official OpenAPI 3.0 schema
    assert {"/api/recommendations/", "/api/products/{product_id}/similar/", "/api/ratings/",
            "/api/ratings/{event_id}/", "/api/token/"} <= set(schema["paths"])
    body = schema["paths"]["/api/ratings/"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json"}
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_announced_list_is_served_without_mongodb(site, user_client, ratings_probe, process_published, monkeypatch):
    """After the worker announces a list, polling, the list and the product page need no MongoDB."""
    from core import catalog, list_state, rating_history, stored_lists
    from shop.products import cache_generation

    client, user = user_client
    liked = site.order("Musical Instruments")[4]
    _rate_and_process(client, ratings_probe, process_published, liked, 4)
    announced = list_state.current(_uid(user), cache_generation())
    assert announced == list_state.version_of(stored_lists.get_recommendations(_uid(user)))

    first = client.get("/api/recommendations/")  # renders the list once (MongoDB) and keeps it
    assert first.status_code == 200 and first["ETag"] == announced
    assert client.get(f"/p/{liked}/").status_code == 200  # keeps the history the same way

    def no_mongodb(*args, **kwargs):
        raise AssertionError("MongoDB read on a path Redis answers")

    for module, name in ((stored_lists, "get_recommendations"), (rating_history, "user_ratings"),
                         (catalog, "get_product"), (stored_lists, "get_similar_items"), (catalog, "product_reviews")):
        monkeypatch.setattr(module, name, no_mongodb)
    assert client.get("/api/recommendations/", HTTP_IF_NONE_MATCH=announced).status_code == 304
    again = client.get("/api/recommendations/")
    assert again.status_code == 200 and again.json() == first.json() and again["ETag"] == announced
    page = client.get(f"/p/{liked}/").content.decode()
    assert "You rated this 4 ★." in page


def test_version_redis_got_wrong_is_corrected_from_mongodb(site, user_client, ratings_probe, process_published):
    """A lost announcement (Redis holds an older version) is replaced by what MongoDB has."""
    from core import list_state, stored_lists
    from shop.products import cache_generation

    client, user = user_client
    _rate_and_process(client, ratings_probe, process_published, site.order()[6], 5)
    truth = list_state.version_of(stored_lists.get_recommendations(_uid(user)))
    list_state.announce(_uid(user), '"older-model-1.0"')  # nothing is kept for this version

    response = client.get("/api/recommendations/")
    assert response.status_code == 200 and response["ETag"] == truth
    assert response.json()["source_event_id"] is not None
    assert list_state.current(_uid(user), cache_generation()) is None  # forgotten, not believed again
    client.get("/api/recommendations/")
    assert list_state.current(_uid(user), cache_generation()) == truth  # remembered from MongoDB
