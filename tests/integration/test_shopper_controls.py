"""Shopper controls end to end: change or remove a rating, "not interested" and its undo, "delete
my account".

Everything is real: the site (Django test client) publishes to Kafka, a real ``python -m
kafka_workers.worker`` process applies the events to FerretDB and announces lists in Redis, and
the pages and API read them back. The module uses the synthetic catalog and model of
realtime_support (its own database, topics and artifacts) and its own Redis database number, so
the list versions announced here are read by nobody else.
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta
from urllib.parse import urlparse

import pytest
import scipy.sparse as sp

from core import (artifacts, catalog, erasure, list_state, mongo, rating_history, recommend, redis_client,
                  shopper_controls, storage, stored_lists)
from core.events import INTERESTED_AGAIN, NOT_INTERESTED, UNRATE, RatingEvent
from realtime_support import TOP_N, forget_users, publish_all, reset_core_caches, wait_until, worker_stats
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)
from tests.site_catalog import PASSWORD, ids_in

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
WAIT_S = 90  # liveness bound for the worker on a loaded 2-core machine, not a speed check


@pytest.fixture(scope="module", autouse=True)
def own_redis_db(rt_catalog, settings):
    """list_state keys in a Redis database of this module's own."""
    number = 1 + int(hashlib.sha1(f"{settings.mongo_db}-controls".encode()).hexdigest(), 16) % 15
    url = urlparse(settings.redis_url)._replace(path=f"/{number}").geturl()
    mp = pytest.MonkeyPatch()
    mp.setenv("REDIS_URL", url)
    reset_core_caches()
    redis_client._client.cache_clear()
    try:
        yield url
    finally:
        mp.undo()
        reset_core_caches()
        redis_client._client.cache_clear()


@pytest.fixture
def shop(rt, site_cache, client, make_user):
    """A logged-in shopper on the site, with a real worker consuming this test's topic."""
    worker = rt.start_worker()
    user = make_user()
    client.force_login(user)
    return rt, client, user, worker


def _uid(user) -> str:
    return user.profile.recommender_id


def _list_from(db, uid: str, event_id: str) -> dict:
    """Wait until the user's list is the one the worker wrote after ``event_id``."""
    def current():
        doc = stored_lists.get_recommendations(uid, db=db)
        return doc if doc and doc.get("source_event_id") == event_id else None
    return wait_until(current, WAIT_S, f"the list re-solved after {event_id}")


def _site_list(client, event_id: str) -> dict:
    """Wait until the site serves the list written after ``event_id``: the worker writes the list,
    then announces its ETag in Redis, so for a moment the site still serves the previous one."""
    def current():
        shown = client.get("/api/recommendations/").json()
        return shown if shown.get("source_event_id") == event_id else None
    return wait_until(current, WAIT_S, f"the site serves the list re-solved after {event_id}")


def _ids(doc: dict) -> list[str]:
    return [i["product_id"] for i in doc["items"]]


def _api(client, path: str, body: dict, status: int = 202) -> dict:
    response = client.post(path, body, content_type="application/json")
    assert response.status_code == status, response.content
    return response.json()


def _last_event_id(user, action: str) -> str:
    from shop.models import RatingSubmission

    sub = RatingSubmission.objects.filter(user=user, action=action).latest("created_at")
    assert sub.published
    return sub.event_id


def test_change_then_remove_a_rating_re_solves_the_list(shop):
    rt, client, user, _ = shop
    uid, model = _uid(user), artifacts.load_model(rt.version)
    first, second = rt.catalog.in_model[5], rt.catalog.in_model[60]

    assert client.post(f"/p/{first}/rate/", {"rating": "5"}).status_code == 302
    rated = _list_from(rt.db, uid, _last_event_id(user, "rate"))
    assert _ids(rated) == [r["product_id"] for r in recommend.recommend(model, {first: 5.0}, TOP_N)]

    # Changing a rating is rating again: the newest one wins and the list is solved with it.
    changed = _api(client, "/api/ratings/", {"product_id": first, "rating": 1})
    _list_from(rt.db, uid, changed["event_id"])
    assert rating_history.user_ratings(uid, db=rt.db) == {first: 1.0}
    page = client.get(f"/p/{first}/").content.decode()
    assert "You rated this 1 ★." in page and 'id="remove-rating"' in page and "Change my rating" in page

    both = _list_from(rt.db, uid, _api(client, "/api/ratings/", {"product_id": second, "rating": 5})["event_id"])
    assert {i["because"] for i in both["items"]} <= {first, second}

    # Remove the first rating with the product page's form.
    response = client.post(f"/p/{first}/unrate/", {"next": "product"})
    assert response.status_code == 302 and response["Location"] == f"/p/{first}/"
    removed = _list_from(rt.db, uid, _last_event_id(user, UNRATE))
    assert rating_history.user_ratings(uid, db=rt.db) == {second: 5.0}
    assert _ids(removed) == [r["product_id"] for r in recommend.recommend(model, {second: 5.0}, TOP_N)]
    assert {i["because"] for i in removed["items"]} == {second}
    api_list = _site_list(client, _last_event_id(user, UNRATE))
    assert api_list["n_rated"] == 1
    page = client.get(f"/p/{first}/").content.decode()
    assert "You rated this" not in page and 'id="remove-rating"' not in page and "Not interested" in page

    # ... and the second through the API: no rating left, the list falls back to popular products.
    gone = _api(client, "/api/ratings/remove/", {"product_id": second})
    assert gone["action"] == UNRATE and gone["status"] == "accepted"
    empty = _list_from(rt.db, uid, gone["event_id"])
    assert rating_history.user_ratings(uid, db=rt.db) == {} and empty["model_version"] == "popular"
    assert _site_list(client, gone["event_id"])["n_rated"] == 0
    stored = wait_until(lambda: (d := rating_history.get_rating(gone["event_id"], db=rt.db)) and d.get("state") == "processed"
                        and d, 30, "the removal stored as processed")  # right after the list is written
    assert stored["action"] == UNRATE


def test_not_interested_items_never_come_back(shop, make_user):
    from kafka_workers import tasks
    from spark_jobs import publish as publish_job
    from spark_jobs.serving_lists import write_serving_lists

    rt, client, user, _ = shop
    uid, model = _uid(user), artifacts.load_model(rt.version)
    liked = rt.catalog.in_model[10]
    before = _list_from(rt.db, uid, _api(client, "/api/ratings/", {"product_id": liked, "rating": 5})["event_id"])
    x, y = _ids(before)[0], _ids(before)[1]

    # The card's form on the recommendations page, then the API.
    page = client.get("/recommendations/").content.decode()
    assert f'action="/p/{x}/not-interested/"' in page and 'id="not-interested-template"' in page
    response = client.post(f"/p/{x}/not-interested/", {"next": "recommendations"})
    assert response.status_code == 302 and response["Location"] == "/recommendations/"
    after_x = _list_from(rt.db, uid, _last_event_id(user, NOT_INTERESTED))
    assert x not in _ids(after_x) and len(_ids(after_x)) == TOP_N
    assert _ids(after_x) == [r["product_id"] for r in recommend.recommend(model, {liked: 5.0}, TOP_N, exclude={x})]
    after_y = _list_from(rt.db, uid, _api(client, "/api/not-interested/", {"product_id": y})["event_id"])
    assert not {x, y} & set(_ids(after_y))
    assert shopper_controls.exclusions(uid, db=rt.db) == {x, y}
    assert rating_history.user_ratings(uid, db=rt.db) == {liked: 5.0}  # "not interested" is no rating
    shown = client.get("/recommendations/").content.decode()
    assert not {x, y} & set(ids_in(shown, "recs"))

    # More ratings: solved again each time, never with x or y.
    for p in rt.catalog.in_model[100:103]:
        doc = _list_from(rt.db, uid, _api(client, "/api/ratings/", {"product_id": p, "rating": 4})["event_id"])
        assert not {x, y} & set(_ids(doc))

    # Similar items shown to this user leave them out too (another user still sees them).
    mongo.bulk_upsert(mongo.SIMILAR_ITEMS, [{"_id": liked, "items": [
        {"product_id": p, "score": 1.0 - k / 10} for k, p in enumerate([x, rt.catalog.in_model[11], y])]}], db=rt.db)
    similar = [i["product_id"] for i in client.get(f"/api/products/{liked}/similar/").json()]
    assert similar == [rt.catalog.in_model[11]]
    assert ids_in(client.get(f"/p/{liked}/").content.decode(), "similar") == [rt.catalog.in_model[11]]
    client.force_login(make_user())
    assert ids_in(client.get(f"/p/{liked}/").content.decode(), "similar") == [x, rt.catalog.in_model[11], y]
    assert [i["product_id"] for i in client.get(f"/api/products/{liked}/similar/").json()] == [
        x, rt.catalog.in_model[11], y]
    client.force_login(user)

    # Celery's re-scoring after a new model.
    assert tasks.rescore_active_users(rt.version) >= 1
    rescored = stored_lists.get_recommendations(uid, db=rt.db)
    assert rescored["source_event_id"] is None and len(_ids(rescored)) == TOP_N
    assert not {x, y} & set(_ids(rescored))

    # The batch job's lists: computed without them, and loaded without them even when the
    # exclusion came after training.
    history = rating_history.user_ratings(uid, db=rt.db)
    row = sp.csr_matrix(([1.0] * len(history), ([0] * len(history), [model.item_index[p] for p in history])),
                        shape=(1, len(model.item_ids)))
    write_serving_lists(rt.version, row, [uid], list(model.item_ids), n=TOP_N)
    (batch,) = artifacts.serving_list_docs(artifacts.models_dir() / rt.version / artifacts.TOPN_LISTS)
    assert batch["_id"] == uid and len(batch["items"]) == TOP_N and not {x, y} & set(_ids(batch))
    # as a job from before the exclusions could have written it
    stale = [{"product_id": x, "score": 9.0, "because": liked}, {"product_id": y, "score": 8.0, "because": liked},
             *recommend.recommend(model, history, TOP_N - 2)]
    with storage.open_text_output(artifacts.serving_lists_file(artifacts.models_dir() / rt.version,
                                                               artifacts.TOPN_LISTS)) as f:
        f.write(json.dumps({"_id": uid, "items": stale}) + "\n")
    publish_job.load_serving_lists(rt.version)
    loaded = stored_lists.get_recommendations(uid, db=rt.db)
    assert loaded["source_event_id"] is None and _ids(loaded) and not {x, y} & set(_ids(loaded))


def test_a_hidden_product_is_shown_again_with_the_button_and_comes_back_in_the_list(shop):
    """"Not interested" clicked by mistake: the product page says the product is hidden and offers
    "Show it to me again", the "Hidden products" page lists it with the same button, and once the
    worker has the undo the exclusion is gone and the list is the one before the click."""
    rt, client, user, _ = shop
    uid = _uid(user)
    liked = rt.catalog.in_model[12]
    before = _list_from(rt.db, uid, _api(client, "/api/ratings/", {"product_id": liked, "rating": 5})["event_id"])
    x, y = _ids(before)[0], _ids(before)[1]
    assert client.post(f"/p/{x}/not-interested/", {"next": "recommendations"}).status_code == 302
    hidden = _last_event_id(user, NOT_INTERESTED)
    assert x not in _ids(_list_from(rt.db, uid, hidden))
    _site_list(client, hidden)  # the site reads the exclusions of the new list's version

    page = client.get(f"/p/{x}/").content.decode()
    assert 'id="hidden-notice"' in page and f'action="/p/{x}/interested-again/"' in page
    assert f'action="/p/{x}/not-interested/"' not in page
    listed = client.get("/hidden/")
    assert listed.status_code == 200 and ids_in(listed.content.decode(), "hidden") == [x]
    assert f'action="/p/{x}/interested-again/"' in listed.content.decode()
    assert 'id="nav-hidden"' in client.get("/").content.decode()

    response = client.post(f"/p/{x}/interested-again/", {"next": "hidden"})
    assert response.status_code == 302 and response["Location"] == "/hidden/"
    undone = _last_event_id(user, INTERESTED_AGAIN)
    back = _list_from(rt.db, uid, undone)
    assert shopper_controls.exclusions(uid, db=rt.db) == set()
    assert _ids(back) == _ids(before)  # the same history, nothing hidden: x is back where it was
    assert x in [i["product_id"] for i in _site_list(client, undone)["items"]]
    assert x in ids_in(client.get("/recommendations/").content.decode(), "recs")
    page = client.get(f"/p/{x}/").content.decode()
    assert 'id="hidden-notice"' not in page and f'action="/p/{x}/not-interested/"' in page
    assert ids_in(client.get("/hidden/").content.decode(), "hidden") == []

    # The API: the same pair of calls, from the product page's button this time.
    _list_from(rt.db, uid, _api(client, "/api/not-interested/", {"product_id": y})["event_id"])
    assert client.post(f"/p/{y}/interested-again/", {"next": "product"})["Location"] == f"/p/{y}/"
    _list_from(rt.db, uid, _last_event_id(user, INTERESTED_AGAIN))
    assert shopper_controls.exclusions(uid, db=rt.db) == set()
    _list_from(rt.db, uid, _api(client, "/api/not-interested/", {"product_id": y})["event_id"])
    again = _api(client, "/api/interested-again/", {"product_id": y})
    assert again["action"] == INTERESTED_AGAIN and again["status"] == "accepted"
    assert _ids(_list_from(rt.db, uid, again["event_id"])) == _ids(before)
    assert shopper_controls.exclusions(uid, db=rt.db) == set()


def test_the_api_lists_hidden_products_latest_first_until_the_worker_applies_their_undo(shop):
    """GET /api/hidden/ for an app's "Hidden products": what the worker stored, the latest "not
    interested" first; an undo sent through the API leaves the list once the worker applied it."""
    rt, client, user, _ = shop
    uid = _uid(user)
    liked = rt.catalog.in_model[14]
    before = _list_from(rt.db, uid, _api(client, "/api/ratings/", {"product_id": liked, "rating": 5})["event_id"])
    x, y = _ids(before)[0], _ids(before)[1]
    _list_from(rt.db, uid, _api(client, "/api/not-interested/", {"product_id": x})["event_id"])
    _list_from(rt.db, uid, _api(client, "/api/not-interested/", {"product_id": y})["event_id"])

    listed = client.get("/api/hidden/").json()
    assert [i["product_id"] for i in listed["items"]] == [y, x] and listed["next"] is None
    hidden_at = [datetime.fromisoformat(i["hidden_at"]) for i in listed["items"]]
    assert hidden_at[0] > hidden_at[1] and hidden_at[0].utcoffset() == timedelta(0)

    undone = _api(client, "/api/interested-again/", {"product_id": x})
    _list_from(rt.db, uid, undone["event_id"])
    assert [i["product_id"] for i in client.get("/api/hidden/").json()["items"]] == [y]


def test_hide_and_show_again_are_applied_once_each_and_the_newest_wins(rt):
    """The undo has the guarantees of the other controls: a replayed event changes nothing, and a
    "not interested" older than the undo (a request that lost a race, delivered late) does not hide
    the product again, as a rating older than its removal does not bring it back; a newer one does."""
    worker = rt.start_worker()
    user, p = "rt-controls-undo", rt.catalog.in_model
    model = artifacts.load_model(rt.version)
    t = time.time() - 60
    liked = RatingEvent(user_id=user, product_id=p[10], rating=5, ts=t)
    publish_all([liked])
    x = _ids(_list_from(rt.db, user, liked.event_id))[0]
    hide = RatingEvent(user_id=user, product_id=x, rating=0, ts=t + 1, action=NOT_INTERESTED)
    show = RatingEvent(user_id=user, product_id=x, rating=0, ts=t + 3, action=INTERESTED_AGAIN)
    publish_all([hide, show])
    doc = _list_from(rt.db, user, show.event_id)
    want = [r["product_id"] for r in recommend.recommend(model, {p[10]: 5.0}, TOP_N)]
    assert shopper_controls.exclusions(user, db=rt.db) == set() and _ids(doc) == want and x in want

    late = RatingEvent(user_id=user, product_id=x, rating=0, ts=t + 2, action=NOT_INTERESTED)
    marker = RatingEvent(user_id=user, product_id=p[10], rating=5, ts=t + 4)  # rated again: the same history
    publish_all([hide, show, late, marker])
    assert _ids(_list_from(rt.db, user, marker.event_id)) == want
    assert shopper_controls.exclusions(user, db=rt.db) == set()

    newer = RatingEvent(user_id=user, product_id=x, rating=0, ts=t + 5, action=NOT_INTERESTED)
    publish_all([newer])
    assert x not in _ids(_list_from(rt.db, user, newer.event_id))
    assert shopper_controls.exclusions(user, db=rt.db) == {x}
    n_stored = wait_until(lambda: rt.db[mongo.RATINGS].count_documents({"user_id": user}) >= 6
                          and rt.db[mongo.RATINGS].count_documents({"user_id": user}), WAIT_S, "the events inserted")
    assert n_stored == 6  # each event id stored once
    stats = wait_until(lambda: (s := worker_stats(worker.popen.pid)) and s.get("duplicate") == 2 and s,
                       WAIT_S, "the worker's duplicate count")
    assert stats["dead-letter"] == 0


def test_duplicate_and_replayed_control_events_change_nothing(rt):
    worker = rt.start_worker()
    user, p = "rt-controls-dup", rt.catalog.in_model
    t = time.time() - 60
    events = [RatingEvent(user_id=user, product_id=p[1], rating=5, ts=t),
              RatingEvent(user_id=user, product_id=p[2], rating=4, ts=t + 1),
              RatingEvent(user_id=user, product_id=p[1], rating=0, ts=t + 2, action=UNRATE),
              RatingEvent(user_id=user, product_id=p[3], rating=0, ts=t + 3, action=NOT_INTERESTED)]
    publish_all(events)
    _list_from(rt.db, user, events[-1].event_id)
    history, excluded = rating_history.user_ratings(user, db=rt.db), shopper_controls.exclusions(user, db=rt.db)
    assert history == {p[2]: 4.0} and excluded == {p[3]}
    listed = stored_lists.get_recommendations(user, db=rt.db)

    # Every event again (a producer retry, a replay), then a rating of p[1] older than its
    # removal (a request that lost a race), then a marker event.
    late = RatingEvent(user_id=user, product_id=p[1], rating=3, ts=t + 1.5)
    marker = RatingEvent(user_id=user, product_id=p[4], rating=0, ts=t + 4, action=NOT_INTERESTED)
    publish_all(events + [events[3], late, marker])
    _list_from(rt.db, user, marker.event_id)
    assert rating_history.user_ratings(user, db=rt.db) == {p[2]: 4.0}  # the older rating did not undo the removal
    assert shopper_controls.exclusions(user, db=rt.db) == {p[3], p[4]}
    doc = stored_lists.get_recommendations(user, db=rt.db)
    assert not {p[3], p[4], p[2]} & set(_ids(doc))
    assert _ids(doc) == [r["product_id"] for r in recommend.recommend(
        artifacts.load_model(rt.version), {p[2]: 4.0}, TOP_N, exclude={p[3], p[4]})]
    assert _ids(listed) == [r["product_id"] for r in recommend.recommend(
        artifacts.load_model(rt.version), {p[2]: 4.0}, TOP_N, exclude={p[3]})]
    n_stored = wait_until(lambda: rt.db[mongo.RATINGS].count_documents({"user_id": user}) >= len(events) + 2
                          and rt.db[mongo.RATINGS].count_documents({"user_id": user}), WAIT_S,
                          "the ratings inserted")  # (the worker inserts them after the lists, process.Tail)
    assert n_stored == len(events) + 2  # each event id stored once
    stats = wait_until(lambda: (s := worker_stats(worker.popen.pid)) and s.get("duplicate") == 5 and s,
                       WAIT_S, "the worker's duplicate count")
    assert stats["dead-letter"] == 0


def test_delete_my_account_removes_it_everywhere(shop, make_user, django_user_model):
    from knox.models import AuthToken

    from accounts.models import AccountDeletion
    from shop import recommendations
    from shop.models import RatingSubmission

    rt, client, user, worker = shop
    uid, p = _uid(user), rt.catalog.in_model
    AuthToken.objects.create(user)
    for product, rating in ((p[20], 5), (p[21], 2)):
        _api(client, "/api/ratings/", {"product_id": product, "rating": rating})
    x = _ids(_list_from(rt.db, uid, _last_event_id(user, "rate")))[0]
    _list_from(rt.db, uid, _api(client, "/api/not-interested/", {"product_id": x})["event_id"])
    assert client.get("/api/recommendations/").status_code == 200  # the site keeps the list's view in its cache
    tag = list_state.current(uid, list_state.generation())
    assert tag and recommendations.cache.get(recommendations._view_key("view", uid, tag)) is not None

    page = client.get("/accounts/delete/")
    assert page.status_code == 200 and 'id="delete-account"' in page.content.decode()
    assert client.post("/accounts/delete/", {"password": "wrong", "confirm": "on"}).status_code == 400
    assert client.post("/accounts/delete/", {"password": PASSWORD}).status_code == 400  # no tick
    assert django_user_model.objects.filter(pk=user.pk).exists() and AccountDeletion.objects.count() == 0
    assert client.get("/accounts/delete/?password=x").status_code == 200  # GET never deletes
    revision = _catalog_revision()
    done = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert done.status_code == 200 and 'id="account-deleted"' in done.content.decode()
    # its ratings were on no product document: the site's cached pages stay (each deletion emptied
    # them all, so a sign-up and a deletion wiped the site's caches)
    assert _catalog_revision() == revision

    assert not django_user_model.objects.filter(pk=user.pk).exists()
    assert not RatingSubmission.objects.filter(recommender_id=uid).exists()
    assert not AuthToken.objects.filter(user_id=user.pk)  # the tokens went with the account
    assert client.get("/recommendations/").status_code == 302  # logged out
    record = AccountDeletion.objects.get()
    assert record.kind == "site" and record.worker_notified
    assert record.counts["ratings"] == 3 and record.counts["history"] == 1 and record.counts["recommendations"] == 1
    assert record.counts["exclusions"] == 1 and record.counts["site_rating_submissions"] == 3
    _assert_nothing_kept(rt.db, uid)
    assert list_state.current(uid, list_state.generation()) is None
    assert recommendations.cache.get(recommendations._view_key("view", uid, tag)) is None
    assert rating_history.is_deleted_user(uid, db=rt.db)

    # A rating that was still on its way arrives after the deletion: dropped, nothing comes back.
    publish_all([RatingEvent(user_id=uid, product_id=p[22], rating=5)])
    wait_until(lambda: (s := worker_stats(worker.popen.pid)) and s.get("dropped") == 1, WAIT_S,
               "the worker dropping the late event")
    _assert_nothing_kept(rt.db, uid)

    # Staff see that it was done, and when, but not who.
    staff = make_user(staff=True)
    client.force_login(staff)
    admin = client.get("/admin/accounts/accountdeletion/").content.decode()
    assert "ratings 3" in admin and user.username not in admin and uid not in admin
    assert client.get("/admin/accounts/accountdeletion/add/").status_code == 403
    assert user.username not in json.dumps(record.counts) and uid not in json.dumps(record.counts)


def _catalog_revision() -> bytes | None:
    """The revision in Redis (made by the first read, as any page's makes it)."""
    from core import catalog_revision

    catalog_revision.current()
    return list_state.client().get(catalog_revision._key())


def _assert_nothing_kept(db, uid: str) -> None:
    for name in (mongo.RATINGS, mongo.RECENT_REVIEWS):
        assert db[name].count_documents({"user_id": uid}) == 0, name
    for name in (mongo.USER_HISTORY, mongo.RECOMMENDATIONS, mongo.EXCLUSIONS):
        assert db[name].find_one({"_id": uid}) is None, name


def test_delete_a_linked_demo_account_through_the_api(rt, site_cache, client, make_user):
    """A demo account acts as a reviewer of the data: that reviewer's reviews go too."""
    from accounts.models import AccountDeletion

    worker = rt.start_worker()
    reviewer, p = "RTREVIEWER1", rt.catalog.in_model
    user = make_user(reviewer_id=reviewer)
    # the reviewer's batch data, as mongo_load writes it
    mongo.bulk_upsert(mongo.RECENT_REVIEWS, [{"_id": f"{reviewer}|{p[30]}", "user_id": reviewer, "product_id": p[30],
                                              "rating": 4.0, "ts": 1_300_000_000}], db=rt.db)
    other = {"user_id": "SOMEONE", "rating": 5.0, "summary": "stays"}
    mongo.bulk_upsert(mongo.PRODUCT_REVIEWS, [{"_id": f"{p[30]}:1", "pages": 1, "items": [
        other, {"user_id": reviewer, "rating": 4.0, "summary": "mine"}]}], db=rt.db)
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(reviewer, {p[30]: (4.0, 1_300_000_000.0)}, {})], db=rt.db)
    mongo.bulk_upsert(mongo.CATALOG_INDEX, [{"_id": "top_users", "items": [{"user_id": "SOMEONE", "n": 9},
                                                                           {"user_id": reviewer, "n": 1}]}], db=rt.db)
    token = client.post("/api/token/", {"username": user.username, "password": PASSWORD}).json()["token"]
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    rated = client.post("/api/ratings/", {"product_id": p[31], "rating": 5}, content_type="application/json", **auth)
    _list_from(rt.db, reviewer, rated.json()["event_id"])
    assert rating_history.user_ratings(reviewer, db=rt.db) == {p[30]: 4.0, p[31]: 5.0}

    wrong = client.post("/api/account/delete/", {"password": "nope"}, content_type="application/json", **auth)
    assert wrong.status_code == 403 and AccountDeletion.objects.count() == 0
    revision = _catalog_revision()
    done = client.post("/api/account/delete/", {"password": PASSWORD}, content_type="application/json", **auth)
    assert done.status_code == 200, done.content
    assert _catalog_revision() != revision  # the reviewer's review left a product's page and counts
    counts = done.json()["counts"]
    assert counts["recent_reviews"] == 1 and counts["review_pages"] == 1 and counts["ratings"] == 1
    assert AccountDeletion.objects.get().kind == "linked_reviewer"
    _assert_nothing_kept(rt.db, reviewer)
    assert catalog.product_reviews(p[30], 1, db=rt.db)[0] == [other]
    assert catalog.most_active_users(db=rt.db) == [("SOMEONE", 9)] and counts["top_users"] == 1
    assert rating_history.deleted_user_ids(db=rt.db) >= {reviewer}
    assert client.get("/api/recommendations/", **auth).status_code == 401  # the token went with the account
    # The worker re-applies the deletion behind the account's earlier events: still nothing kept.
    wait_until(lambda: (s := worker_stats(worker.popen.pid)) and s.get("processed", 0) >= 2, WAIT_S,
               "the worker processing the delete_account event")
    _assert_nothing_kept(rt.db, reviewer)


def _reviewed_by(db, reviewer: str, pid: str, summary: str, text: str) -> tuple[dict, dict]:
    """Product ``pid``'s only review page: another shopper's review, then ``reviewer``'s (who has
    nothing else stored); returns both reviews."""
    forget_users(db, [reviewer])
    other = {"user_id": "SOMEONE", "rating": 5.0, "summary": "Still here", "reviewer_name": "Other Person",
             "review_text": "A review that stays."}
    mine = {"user_id": reviewer, "rating": 2.0, "summary": summary, "reviewer_name": f"Reviewer {reviewer.title()}",
            "review_text": text}
    mongo.bulk_upsert(mongo.PRODUCT_REVIEWS, [{"_id": f"{pid}:1", "pages": 1, "items": [other, mine]}], db=db)
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(reviewer, {pid: (2.0, 1_300_000_000.0)}, {})],
                      db=db)
    return other, mine


def test_deleted_reviewers_reviews_leave_cached_product_pages_at_once(rt, site_cache, client, make_user):
    """The product page is cached twice (its data and its rendered reviews, each for minutes):
    after "delete my account" a linked reviewer's review is gone from the next view, not later."""
    reviewer, pid = "RTREVIEWER2", rt.catalog.in_model[40]
    user = make_user(reviewer_id=reviewer)
    other, mine = _reviewed_by(rt.db, reviewer, pid, "Gone soon", "Words of a reviewer who deletes the account.")

    before = client.get(f"/p/{pid}/")  # anonymous: fills the page data and the rendered fragment
    assert before.status_code == 200
    assert mine["review_text"] in before.content.decode() and mine["reviewer_name"] in before.content.decode()
    client.force_login(user)
    done = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert done.status_code == 200 and 'id="account-deleted"' in done.content.decode()
    assert catalog.product_reviews(pid, 1, db=rt.db)[0] == [other]  # MongoDB is right; the caches must be too

    after = client.get(f"/p/{pid}/").content.decode()  # logged out again: the same cached fragment as before
    assert other["review_text"] in after and other["reviewer_name"] in after
    assert mine["review_text"] not in after and mine["reviewer_name"] not in after and mine["summary"] not in after


@pytest.mark.parametrize("by", ["sweep", "worker"])
def test_an_erasure_ended_after_the_site_s_run_hides_the_pages_cached_before_it(
        rt, site_cache, client, make_user, monkeypatch, by):
    """An account deletion whose erasure stopped deletes the account and leaves the rest to the
    worker's ``delete_account`` (seconds later) or Celery's sweep; the product page viewed meanwhile
    is cached with the reviewer's review (MongoDB still has it). They changed MongoDB but could not
    reach the site's cache revisions (Django's cache), so the page showed the deleted review for up
    to ``CATALOG_CACHE_SECONDS`` after. Every run of the erasure changes the catalog's revision
    (``core.catalog_revision``), as the site's own run did."""
    from core.events import DELETE_ACCOUNT
    from core.locking import LockHeld
    from kafka_workers.batch import forget_user

    reviewer, pid = f"RTSWEPT{by.upper()}", rt.catalog.in_model[41 if by == "sweep" else 42]
    user = make_user(reviewer_id=reviewer)
    other, mine = _reviewed_by(rt.db, reviewer, pid, "Swept later", "Words the sweep removes.")
    erase = erasure.delete_user_data

    def held(*args, **kwargs):
        raise LockHeld("another writer holds a product's lock")

    monkeypatch.setattr(erasure, "delete_user_data", held)
    client.force_login(user)
    done = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert done.status_code == 200 and "was interrupted part-way" in " ".join(done.content.decode().split())
    monkeypatch.setattr(erasure, "delete_user_data", erase)
    cached = client.get(f"/p/{pid}/").content.decode()  # logged out: fills the page data and its fragment
    assert mine["review_text"] in cached  # not erased yet

    if by == "sweep":
        assert erasure.finish_erasures(0, db=rt.db)["finished"] >= 1
    else:
        assert forget_user(RatingEvent(user_id=reviewer, product_id="", rating=0, action=DELETE_ACCOUNT)).status \
            == "processed"
    assert catalog.product_reviews(pid, 1, db=rt.db)[0] == [other]
    after = client.get(f"/p/{pid}/").content.decode()
    assert other["review_text"] in after
    assert mine["review_text"] not in after and mine["reviewer_name"] not in after

def _postings(db, key: str) -> dict[str, str] | None:
    """{product: tier} of one search key, None when the key is not in the index."""
    doc = db[mongo.SEARCH_INDEX].find_one({"_id": key})
    return None if doc is None else dict(zip(doc["ids"].split(" "), doc["tiers"]))


def test_a_deleted_reviewers_words_leave_titles_counts_and_search_at_once(rt, site_cache, client, make_user):
    """A product without metadata is titled with its most helpful review's summary; when that
    reviewer deletes the account, the title quotes the next most helpful review, the counts and
    the search index leave the reviewer out, and no cached page shows the old ones, before any reload."""
    from accounts.models import AccountDeletion

    reviewer, (pid, qid, xid) = "RTREVIEWER3", rt.catalog.not_in_model[:3]
    forget_users(rt.db, [reviewer])
    user = make_user(reviewer_id=reviewer)
    ts = 1_300_000_000
    # as mongo_load writes them: pid has no metadata (title generated from the reviewer's summary),
    # qid a title of its own (its quoted summary is someone else's)
    mongo.bulk_upsert(mongo.PRODUCTS, [
        {"_id": pid, "title": "Strings – “Zyzzyva quasar strings”", "title_generated": True,
         "has_metadata": False, "category": "Musical Instruments",
         "categories": ["Musical Instruments", "Strings"], "brand": "", "price": 0.0, "n_reviews": 3,
         "avg_rating": 3.333, "rating_hist": {"1": 1, "2": 0, "3": 0, "4": 1, "5": 1},
         "sample_summary": "Zyzzyva quasar strings"},
        {"_id": qid, "title": "Quasar Tuner", "title_generated": False, "has_metadata": True,
         "category": "Musical Instruments", "categories": [], "brand": "RT", "price": 9.5, "n_reviews": 2,
         "avg_rating": 3.0, "rating_hist": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0}, "sample_summary": "Tunes fast"},
        {"_id": xid, "title": "Another Quasar thing", "title_generated": False, "category": "Musical Instruments",
         "n_reviews": 1, "avg_rating": 5.0, "rating_hist": {"5": 1}, "sample_summary": ""}], db=rt.db)
    mine_p = {"user_id": reviewer, "rating": 1.0, "summary": "Zyzzyva quasar strings", "helpful_votes": 9, "ts": ts,
              "reviewer_name": "Leaving Reviewer", "review_text": "Mine."}
    mine_q = {"user_id": reviewer, "rating": 2.0, "summary": "Quasar junk", "helpful_votes": 1, "ts": ts}
    others_p = [{"user_id": "SOMEONE", "rating": 5.0, "summary": "Bright strings, no buzz", "helpful_votes": 3,
                 "ts": ts},
                {"user_id": "ANYONE", "rating": 4.0, "summary": "", "helpful_votes": 0, "ts": ts}]
    other_q = {"user_id": "SOMEONE", "rating": 4.0, "summary": "Tunes fast", "helpful_votes": 5, "ts": ts}
    mongo.bulk_upsert(mongo.PRODUCT_REVIEWS, [{"_id": f"{pid}:1", "pages": 1, "items": [mine_p, *others_p]},
                                              {"_id": f"{qid}:1", "pages": 1, "items": [other_q, mine_q]}], db=rt.db)
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(
        reviewer, {pid: (1.0, float(ts)), qid: (2.0, float(ts))}, {})], db=rt.db)

    def key(word: str, postings: list[tuple[str, str]]) -> dict:
        return {"_id": word, "n": len(postings), "ids": " ".join(p for p, _ in postings),
                "tiers": "".join(t for _, t in postings), "ranks": " ".join(str(i) for i in range(len(postings))),
                "cats": ["Musical Instruments"], "cat": " ".join("0" for _ in postings)}
    mongo.bulk_upsert(mongo.SEARCH_INDEX, [
        key("zyzzyva", [(pid, "0")]), key("quasar", [(qid, "1"), (xid, "1"), (pid, "0")]),
        key("strings", [(pid, "0")]), key("junk", [(qid, "0")]), key("tunes", [(qid, "0")])], db=rt.db)

    before = client.get(f"/p/{pid}/").content.decode()  # anonymous: fills the page data and its fragments
    assert "Zyzzyva quasar strings" in before and "from 3 reviews" in before
    assert ids_in(client.get("/?q=zyzzyva").content.decode(), "products") == [pid]
    assert ids_in(client.get("/?q=quasar").content.decode(), "products") == [qid, xid, pid]
    assert "Zyzzyva" in client.get("/?q=quasar").content.decode()  # the card's title, from the summaries cache

    client.force_login(user)
    done = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert done.status_code == 200 and 'id="account-deleted"' in done.content.decode()

    p, q = (rt.db[mongo.PRODUCTS].find_one({"_id": i}) for i in (pid, qid))
    assert p["title"] == "Strings – “Bright strings, no buzz”"  # the next most helpful review's summary
    assert p["sample_summary"] == "Bright strings, no buzz"
    assert (p["n_reviews"], p["avg_rating"], p["rating_hist"]) == (2, 4.5, {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1})
    assert q["title"] == "Quasar Tuner" and q["sample_summary"] == "Tunes fast"  # not the reviewer's words
    assert (q["n_reviews"], q["avg_rating"], q["rating_hist"]) == (1, 4.0, {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0})
    assert _postings(rt.db, "zyzzyva") is None and _postings(rt.db, "junk") is None
    assert _postings(rt.db, "quasar") == {qid: "1", xid: "1"}  # pid was listed by the reviewer's word only
    assert _postings(rt.db, "strings") == {pid: "0"} and _postings(rt.db, "tunes") == {qid: "0"}  # others said them
    counts = AccountDeletion.objects.get().counts
    assert (counts["review_pages"], counts["products"], counts["search_postings"]) == (2, 2, 3)

    after = client.get(f"/p/{pid}/").content.decode()  # logged out: what was cached before is not shown
    assert "Zyzzyva" not in after and "Bright strings, no buzz" in after and "from 2 reviews" in after
    assert ids_in(client.get("/?q=zyzzyva").content.decode(), "products") == []
    found = client.get("/?q=quasar").content.decode()
    assert ids_in(found, "products") == [qid, xid] and "Zyzzyva" not in found

    # A second deletion (the worker's delete_account) finds nothing more to change.
    kept = {i: rt.db[mongo.PRODUCTS].find_one({"_id": i}) for i in (pid, qid)}
    again = erasure.delete_user_data(reviewer, db=rt.db)
    assert (again["review_pages"], again["products"], again["search_postings"]) == (0, 0, 0)
    assert {i: rt.db[mongo.PRODUCTS].find_one({"_id": i}) for i in (pid, qid)} == kept
    assert _postings(rt.db, "quasar") == {qid: "1", xid: "1"}


def test_site_refuses_bad_control_requests(rt, site_cache, client, make_user):
    from shop.models import RatingSubmission

    user = make_user()
    product = rt.catalog.in_model[0]
    assert client.post(f"/p/{product}/not-interested/").status_code == 302  # anonymous: to the login page
    assert client.post("/api/not-interested/", {"product_id": product}, content_type="application/json").status_code in (401, 403)
    client.force_login(user)
    assert client.get(f"/p/{product}/unrate/").status_code == 405
    assert client.get(f"/p/{product}/not-interested/").status_code == 405
    assert client.post(f"/p/{product}/unrate/", {"user_id": "someone-else"}).status_code == 400
    assert client.post("/p/NO-SUCH-THING/not-interested/").status_code == 400
    for body in ({"product_id": product, "rating": 3}, {"product_id": 5}, {}, {"product_id": "a b"}):
        assert client.post("/api/ratings/remove/", body, content_type="application/json").status_code == 400, body
    assert client.post("/api/account/delete/", {}, content_type="application/json").status_code == 400
    assert not RatingSubmission.objects.filter(user=user).exists()
    # the OpenAPI schema lists the new endpoints, and is still valid
    from drf_spectacular.validation import validate_schema

    schema = json.loads(client.get("/api/schema/?format=json").content)
    validate_schema(schema)
    assert {"/api/ratings/remove/", "/api/not-interested/", "/api/account/delete/"} <= set(schema["paths"])
    # the forms need the CSRF token like every other POST of the site
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(f"/p/{product}/not-interested/").status_code == 403
    assert strict.post(f"/p/{product}/unrate/").status_code == 403
    assert strict.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}).status_code == 403
    assert not RatingSubmission.objects.filter(user=user).exists()


def test_site_refuses_bad_undo_requests_like_the_other_controls(rt_catalog, site_cache, client, make_user):
    """"Show it to me again" and the page listing hidden products: logged in only, POST only with
    the CSRF token, a known product, no extra field, and the per-user rating limit."""
    from django.test import Client, override_settings

    from shop.models import RatingSubmission

    user, product = make_user(), rt_catalog.products[0]
    assert client.post(f"/p/{product}/interested-again/").status_code == 302  # anonymous: to the login page
    assert client.get("/hidden/").status_code == 302
    assert client.post("/api/interested-again/", {"product_id": product},
                       content_type="application/json").status_code in (401, 403)
    client.force_login(user)
    assert client.get(f"/p/{product}/interested-again/").status_code == 405
    assert client.post("/hidden/").status_code == 405
    assert client.get("/hidden/?page=0").status_code == 400
    assert client.post(f"/p/{product}/interested-again/", {"user_id": "someone-else"}).status_code == 400
    assert client.post(f"/p/{product}/interested-again/", {"next": "https://evil.example/"}).status_code == 400
    assert client.post("/p/NO-SUCH-THING/interested-again/").status_code == 400
    assert client.post("/api/interested-again/", {"product_id": "a b"}, content_type="application/json").status_code == 400
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(f"/p/{product}/interested-again/").status_code == 403
    assert not RatingSubmission.objects.filter(user=user).exists()
    user = make_user()  # the refused requests above were counted: a shopper of their own
    client.force_login(user)
    with override_settings(RATING_RATE="2/min"):
        codes = [client.post(f"/p/{product}/not-interested/").status_code,
                 client.post(f"/p/{product}/interested-again/").status_code,
                 client.post(f"/p/{product}/interested-again/").status_code]
    assert codes == [302, 302, 429], codes  # one counter for ratings and every control
    assert RatingSubmission.objects.filter(user=user, action=INTERESTED_AGAIN).count() == 1
    schema = json.loads(client.get("/api/schema/?format=json").content)
    assert "/api/interested-again/" in schema["paths"]


def test_api_controls_take_the_idempotency_key_from_the_body_like_ratings(rt, site_cache, client, make_user):
    """/api/ratings/ and the control endpoints share one submit path (shop.api._accept): the body's
    ``idempotency_key`` is the key for a control too, and must match the header if both come."""
    from shop.models import RatingSubmission
    from shop.ratings import keyed_event_id

    user = make_user()
    client.force_login(user)
    product = rt.catalog.in_model[1]
    body = {"product_id": product, "idempotency_key": "ctl-body-key-1"}
    first = client.post("/api/not-interested/", body, content_type="application/json")
    assert first.status_code == 202, first.content
    again = client.post("/api/not-interested/", body, content_type="application/json")
    assert again.status_code == 202 and first.json()["event_id"] == again.json()["event_id"] \
        == keyed_event_id(user.pk, "ctl-body-key-1")
    assert RatingSubmission.objects.filter(user=user).count() == 1
    clash = client.post("/api/not-interested/", body, content_type="application/json",
                        headers={"Idempotency-Key": "another-key-22"})
    assert clash.status_code == 400 and "match idempotency_key" in clash.json()["detail"]
