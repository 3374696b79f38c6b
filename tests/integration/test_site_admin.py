"""The Django admin: staff only; ratings with their live processing state; model versions with
metrics and pipeline runs mirrored from MongoDB (by the sync command, and by the lists themselves when opened)."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils.html import escape

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PAGES = ["/admin/", "/admin/shop/ratingsubmission/", "/admin/shop/modelversion/", "/admin/shop/pipelinerun/",
         "/admin/auth/user/"]


@pytest.mark.parametrize("url", PAGES)
def test_admin_refuses_anonymous_and_non_staff(site, client, make_user, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(make_user())
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_admin_lists_ratings_with_processing_state(site, client, make_user, ratings_probe, process_published):
    rater = make_user()
    client.force_login(rater)
    first, second = site.order("Gift Cards")[1], site.order("Gift Cards")[2]
    mark = ratings_probe.mark()
    processed = client.post("/api/ratings/", {"product_id": first, "rating": 4}, content_type="application/json")
    process_published(mark)
    waiting = client.post("/api/ratings/", {"product_id": second, "rating": 2}, content_type="application/json")
    assert processed.status_code == waiting.status_code == 202

    client.force_login(make_user(staff=True))
    page = client.get("/admin/shop/ratingsubmission/")
    assert page.status_code == 200
    html = page.content.decode()
    rows = {pid: html.split(f"<td class=\"field-product_id\">{pid}</td>", 1)[1].split("</tr>", 1)[0]
            for pid in (first, second)}
    assert f"processed (model {site.model_version})" in rows[first]
    assert "not yet stored" in rows[second]  # published; the worker has not stored it yet
    assert rater.username in html
    detail = client.get(f"/admin/shop/ratingsubmission/?q={processed.json()['event_id']}")
    assert detail.status_code == 200 and first in detail.content.decode()


def test_admin_shows_model_versions_and_pipeline_runs(site, client, make_user):
    out = StringIO()
    call_command("sync_pipeline_records", stdout=out)
    assert "synced" in out.getvalue()
    client.force_login(make_user(staff=True))

    versions = client.get("/admin/shop/modelversion/").content.decode()
    metrics = site.records["train"]["metrics"]
    assert site.model_version in versions
    row = versions.split(site.model_version, 1)[1].split("</tr>", 1)[0]
    assert "ease" in row and str(metrics["test"]["ndcg@10"])[:6] in row
    assert str(metrics["baselines"]["popularity"]["ndcg@10"])[:6] in row

    runs = client.get(f"/admin/shop/pipelinerun/?q={site.run_id}").content.decode()
    for job in ("load", "clean", "mongo_load", "eda", "train", "publish"):
        assert f'<td class="field-job">{job}</td>' in runs, job
    from shop.models import PipelineRun

    load = PipelineRun.objects.get(key=f"{site.run_id}:load")
    assert load.status == "ok" and load.balanced is True
    assert load.counts["counts_in"]["lines"] == site.records["load"]["counts_in"]["lines"]
    detail = client.get(f"/admin/shop/pipelinerun/{load.pk}/change/")
    assert detail.status_code == 200 and escape(site.run_id) in detail.content.decode()


def test_admin_lists_refresh_from_mongodb_without_the_command(site, client, make_user):
    """A run recorded only in MongoDB (as Airflow's tasks do) shows up when staff open the list."""
    import uuid

    from core import mongo
    from shop.models import PipelineRun

    run_id = f"airflow-only-{uuid.uuid4().hex[:8]}"
    mongo.record_pipeline_run(run_id, "load", {"status": "ok", "balanced": True,
                                              "counts_in": {"lines": 7}, "counts_out": {"reviews": 7}})
    assert not PipelineRun.objects.filter(run_id=run_id).exists()
    client.force_login(make_user(staff=True))
    runs = client.get(f"/admin/shop/pipelinerun/?q={run_id}").content.decode()
    assert run_id in runs and '<td class="field-job">load</td>' in runs
    assert PipelineRun.objects.get(key=f"{run_id}:load").counts["counts_in"] == {"lines": 7}


@pytest.mark.parametrize("model", ["pipelinerun", "modelversion"])
def test_pipeline_records_are_read_only(site, client, make_user, model):
    """Staff see runs and versions but cannot add, edit or delete them (the pipeline owns them)."""
    from shop.models import ModelVersion, PipelineRun

    call_command("sync_pipeline_records", stdout=StringIO())
    client.force_login(make_user(staff=True))  # a superuser: every permission Django can give
    listing = client.get(f"/admin/shop/{model}/").content.decode()
    assert f'href="/admin/shop/{model}/add/"' not in listing  # neither the button nor the sidebar's link
    assert client.get(f"/admin/shop/{model}/add/").status_code == 403
    obj = (PipelineRun if model == "pipelinerun" else ModelVersion).objects.first()
    change = client.get(f"/admin/shop/{model}/{obj.pk}/change/")
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()  # a view, no form
    before = {f.name: getattr(obj, f.name) for f in obj._meta.fields}
    assert client.post(f"/admin/shop/{model}/{obj.pk}/change/", {"status": "edited", "engine": "edited"}
                       ).status_code == 403
    assert client.post(f"/admin/shop/{model}/{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    obj.refresh_from_db()
    assert {f.name: getattr(obj, f.name) for f in obj._meta.fields} == before
    assert 'value="delete_selected"' not in listing


def test_rating_submissions_cannot_be_added_by_hand(site_cache, client, make_user):
    """Every field of a rating submission is read-only (it records what the site published), so an
    add form could only be saved empty (an IntegrityError, a 500): there is no add form."""
    from shop.models import RatingSubmission

    client.force_login(make_user(staff=True))  # a superuser: every permission Django can give
    listing = client.get("/admin/shop/ratingsubmission/")
    assert listing.status_code == 200
    assert 'href="/admin/shop/ratingsubmission/add/"' not in listing.content.decode()
    assert client.get("/admin/shop/ratingsubmission/add/").status_code == 403
    assert client.post("/admin/shop/ratingsubmission/add/", {}).status_code == 403
    assert not RatingSubmission.objects.exists()


def _topn_of(site, user_id: str) -> list[dict]:
    """The list training wrote for a batch user (what publish loaded), from the model's files."""
    from core import artifacts

    for doc in artifacts.serving_list_docs(artifacts.models_dir() / site.model_version / artifacts.TOPN_LISTS):
        if doc["_id"] == user_id:
            return doc["items"]
    raise AssertionError(f"no list for {user_id}")


def test_user_page_shows_ratings_and_current_list_with_reasons(site, client, make_user, ratings_probe,
                                                               process_published):
    from core import catalog, rating_history
    from shop.products import headline

    deleted = rating_history.deleted_user_ids()  # the controls tests may have deleted a linked reviewer
    # The least active reviewer with a few ratings: this test adds a live rating to the history, and
    # the demo-account tests expect the most active reviewers' histories as loaded.
    reviewer = next(r for r, n in reversed(site.reviewer_counts().most_common()) if n >= 3 and r not in deleted)
    shopper = make_user(reviewer_id=reviewer)
    staff = make_user(staff=True)
    client.force_login(staff)
    page = client.get(f"/admin/auth/user/{shopper.pk}/change/").content.decode()
    rated = {r.product_id: r.rating for rs in site.reviews.values() for r in rs if r.user_id == reviewer}
    section = page.split('class="recsys-ratings"', 1)[1].split("</table>", 1)[0]
    assert sorted(re.findall(r"<code>([^<]+)</code></td><td>(\d) ★", section)) == \
        sorted((p, str(r)) for p, r in rated.items())
    listed = page.split('class="recsys-list"', 1)[1].split("</ol>", 1)[0]
    items = _topn_of(site, reviewer)
    assert re.findall(r"<code>([^<]+)</code>", listed) == [i["product_id"] for i in items]
    names = catalog.get_products([i["because"] for i in items])
    for item in items:  # each reason names the product it comes from, by its headline (title or fallback)
        because = escape(headline(names.get(item["because"], {})))
        assert f"because they rated {because}" in listed
    assert f"model {site.model_version}" in page and "from event batch" in page

    # a live rating: the page shows it and the worker's new list, read from MongoDB at once
    product = next(p for p in site.order("Gift Cards") if p not in rated)
    client.force_login(shopper)
    mark = ratings_probe.mark()
    posted = client.post("/api/ratings/", {"product_id": product, "rating": 5}, content_type="application/json")
    assert posted.status_code == 202
    process_published(mark)
    client.force_login(staff)
    page = client.get(f"/admin/auth/user/{shopper.pk}/change/").content.decode()
    assert re.search(rf"<code>{product}</code></td><td>5 ★", page)
    assert f"from event {posted.json()['event_id']}" in page


def test_user_page_shows_the_newest_ratings_and_counts_the_rest(mongo_db, site_cache, client, make_user):
    """A reviewer of the data can have thousands of ratings: the page listed, and read the product
    of, every one. It shows the newest ``RATINGS_SHOWN`` and says how many more there are, so its
    size and its database queries are the same for 100 ratings as for 2,000."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import recommender_id
    from core import mongo, rating_history
    from shop.admin import RATINGS_SHOWN

    staff = make_user(staff=True)
    client.force_login(staff)
    assert client.get(f"/admin/auth/user/{staff.pk}/change/").status_code == 200  # what a first page reads once

    def user_page(n: int) -> tuple[str, list[str], int]:
        """The page of a user with ``n`` ratings, the products its ratings table lists, its SQL queries."""
        shopper = make_user()
        uid = recommender_id(shopper)
        ratings = {f"P{i:06d}": (float(1 + i % 5), 1_700_000_000.0 + 60 * i) for i in range(n)}
        mongo_db[mongo.USER_HISTORY].replace_one({"_id": uid}, rating_history.history_doc(uid, ratings, {}),
                                                 upsert=True)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/admin/auth/user/{shopper.pk}/change/")
        assert response.status_code == 200
        page = response.content.decode()
        table = page.split('class="recsys-ratings"', 1)[1].split("</table>", 1)[0]
        return page, re.findall(r"<code>([^<]+)</code></td>", table), len(queries)

    few_page, few, few_queries = user_page(RATINGS_SHOWN)
    many_page, many, many_queries = user_page(20 * RATINGS_SHOWN)
    assert len(few) == RATINGS_SHOWN and "not shown" not in few_page
    assert many == [f"P{i:06d}" for i in range(20 * RATINGS_SHOWN - 1, 19 * RATINGS_SHOWN - 1, -1)]  # newest first
    assert f"{19 * RATINGS_SHOWN:,} more, older, not shown ({20 * RATINGS_SHOWN:,} ratings in all)" in many_page
    assert len(many_page) - len(few_page) < 200 and many_queries == few_queries


def test_make_current_rolls_back_through_the_publish_job(site, client, make_user):
    """An earlier version made current again: CURRENT, the lists and the records all say so."""
    import shutil

    from django.contrib.admin.models import LogEntry

    from core import artifacts, mongo, stored_lists
    from shop.models import ModelVersion

    current = site.model_version
    assert artifacts.current_version() == current
    # an "earlier" version: the same trained files under another name, recorded as training records it
    earlier = f"{current}-earlier"
    shutil.copytree(artifacts.models_dir() / current, artifacts.models_dir() / earlier)
    mongo.record_model_version(earlier, {"engine": "ease", "metrics": artifacts.load_metrics(current),
                                         "published": False})
    staff = make_user(staff=True)
    client.force_login(staff)
    try:
        call_command("sync_pipeline_records", stdout=StringIO())
        pk = ModelVersion.objects.get(version=earlier).pk
        listing = client.get("/admin/shop/modelversion/").content.decode()
        assert 'value="make_current"' in listing
        response = client.post("/admin/shop/modelversion/", {"action": "make_current", "_selected_action": [pk]},
                               follow=True)
        assert response.status_code == 200
        assert artifacts.current_version() == earlier
        doc = mongo.get_db()[mongo.MODEL_VERSIONS].find_one({"_id": earlier})
        assert doc["published"] is True and doc["replaced"] == current and doc["made_current_by"] == staff.username
        run = mongo.get_db()[mongo.PIPELINE_RUNS].find_one({"_id": f"{doc['made_current_run']}:publish"})
        assert run["status"] == "published" and run["requested_by"] == staff.username
        # the publish job's own work: the version's lists are what users are served now
        some_user = next(iter(site.reviewer_counts()))
        assert stored_lists.get_recommendations(some_user)["model_version"] == earlier
        log = LogEntry.objects.filter(object_id=str(pk), user=staff).latest("action_time")
        assert f"Made current by {staff.username}" in log.get_change_message() and f"replacing {current}" in \
            log.get_change_message()
        detail = client.get(f"/admin/shop/modelversion/{pk}/change/").content.decode()
        assert f"{staff.username} at " in detail
        # only staff with the right to change model versions may do it
        plain_staff = make_user()
        plain_staff.is_staff = True
        plain_staff.save()
        from django.contrib.auth.models import Permission

        plain_staff.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
        client.force_login(plain_staff)
        assert 'value="make_current"' not in client.get("/admin/shop/modelversion/").content.decode()
    finally:  # roll forward again the same way, so the rest of the session is served what it expects
        client.force_login(staff)
        call_command("sync_pipeline_records", stdout=StringIO())
        client.post("/admin/shop/modelversion/", {
            "action": "make_current", "_selected_action": [ModelVersion.objects.get(version=current).pk]})
        assert artifacts.current_version() == current


def test_make_current_waits_for_no_batch_job_and_says_which_one_runs(site, client, make_user):
    """A rollback while a pipeline job holds the batch lock would race its publish (lists dropped,
    the version's folder pruned): the action is refused, naming the job, and nothing changes."""
    from core import artifacts, locking
    from shop.models import ModelVersion
    from spark_jobs.common import BATCH_LOCK

    current = site.model_version
    staff = make_user(staff=True)
    client.force_login(staff)
    call_command("sync_pipeline_records", stdout=StringIO())
    pk = ModelVersion.objects.get(version=current).pk
    with locking.lease(BATCH_LOCK, {"run_id": "nightly-7", "stage": "train"}, lease_s=60, wait_s=5):
        response = client.post("/admin/shop/modelversion/", {"action": "make_current", "_selected_action": [pk]},
                               follow=True)
    page = response.content.decode()
    assert "a batch job is running" in page and "nightly-7" in page and "train" in page
    assert artifacts.current_version() == current


def test_dashboard_shows_live_freshness_from_the_workers(site, client, make_user, ratings_probe, monkeypatch):
    """A real worker processes ratings; the dashboard's p50/p99 are read from its /metrics histogram."""
    import math
    import socket
    import threading
    import time
    import uuid

    from core import freshness, rating_history
    from kafka_workers import metrics, worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
    monkeypatch.setenv("WORKER_METRICS_URLS", nobody)
    client.force_login(make_user(staff=True))  # the workers' URLs are shown to staff only
    section = client.get("/dashboard/").content.decode().split('id="freshness"', 1)[1].split("</section>", 1)[0]
    assert "No worker answered" in section and f"Not answering: {nobody}" in section

    server = metrics.serve(0)  # the worker's endpoint, in this process like the worker below
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    monkeypatch.setenv("WORKER_METRICS_URLS", url)
    before = freshness.scrape(url)[0].get(math.inf, 0)  # earlier in-process workers of this session
    monkeypatch.setenv("KAFKA_WORKER_GROUP", f"it-freshness-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(stats=worker.run(stop, name="it-freshness")), daemon=True)
    try:
        thread.start()
        user = make_user()
        client.force_login(user)
        events = []
        for product in site.order("Gift Cards")[:6]:
            posted = client.post("/api/ratings/", {"product_id": product, "rating": 4}, content_type="application/json")
            assert posted.status_code == 202
            events.append(posted.json()["event_id"])
        deadline = time.monotonic() + 120  # a guard against a hang, not a speed check
        while not all((rating_history.get_rating(e) or {}).get("state") == "processed" for e in events):
            assert time.monotonic() < deadline and thread.is_alive(), "the worker did not process the ratings"
            time.sleep(0.2)
        stop.set()
        thread.join(30)
        measured = result["stats"].counts["processed"]  # each processed rating's latency is measured
        # the new group reads the topic from the start: ratings earlier tests published but never
        # processed are processed (and measured) too
        assert measured >= len(events)
        buckets = freshness.scrape(url)[0]
        assert buckets[math.inf] - before == measured

        page = client.get("/dashboard/").content.decode()
    finally:
        stop.set()
        server.shutdown()
    section = page.split('id="freshness"', 1)[1].split("</section>", 1)[0]
    n = re.search(r"(\d+) ratings? measured by the workers", section)
    assert n and int(n.group(1)) == buckets[math.inf]
    shown = {q: float(re.search(rf"p{q} <strong>([\d.]+) ms</strong>", section).group(1)) for q in (50, 99)}
    assert shown[50] <= shown[99]
    if before == 0:  # only this worker's latencies in the histogram: the figure lies in the bucket
        # holding the q-th of them (cumulative counts: the first bound with at least that many)
        bounds, total = sorted(buckets), buckets[math.inf]
        for q in (50, 99):
            rank = math.ceil(q / 100 * total)
            upper = next(b for b in bounds if buckets[b] >= rank)
            lower = max([0.0] + [b for b in bounds if b < upper])
            assert lower * 1000 - 0.05 <= shown[q] <= upper * 1000 + 0.05, (q, rank, shown[q])


@pytest.fixture
def own_versions(monkeypatch, tmp_path, settings, mongo_db):
    """This test's own MongoDB database and model folders (no site catalog needed)."""
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "admin_versions", ARTIFACTS_DIR=str(tmp_path / "artifacts"))


def test_a_pruned_version_is_listed_as_pruned_and_not_made_current(own_versions, site_cache, client, make_user):
    """Publish deletes old version folders (MODEL_VERSIONS_KEPT) and marks their records: the admin
    lists them as pruned, with their metrics, and refuses to make one current with a message that
    says why, instead of an error from the files that are gone."""
    import numpy as np

    from core import artifacts, mongo
    from shop.models import ModelVersion

    kept = artifacts.save_model(["a", "b"], np.ones((2, 2)), {"kind": "ials"}, {"test": {"ndcg@10": 0.2}})
    artifacts.publish(kept)
    pruned = "20260101T000000000000-00000001"  # its folder is gone
    for version, ndcg in ((kept, 0.2), (pruned, 0.1)):
        mongo.record_model_version(version, {"engine": "ials", "published": True, "metrics": {"test": {"ndcg@10": ndcg}}})
    mongo.record_pruned_versions([pruned])
    client.force_login(make_user(staff=True))

    only_pruned = client.get("/admin/shop/modelversion/?pruned_at__isempty=0").content.decode()
    assert pruned in only_pruned and kept not in only_pruned
    assert ModelVersion.objects.get(version=pruned).pruned_at is not None
    assert ModelVersion.objects.get(version=pruned).metrics == {"test": {"ndcg@10": 0.1}}
    assert ModelVersion.objects.get(version=kept).pruned_at is None

    pk = ModelVersion.objects.get(version=pruned).pk
    response = client.post("/admin/shop/modelversion/", {"action": "make_current", "_selected_action": [pk]},
                           follow=True)
    page = response.content.decode()
    assert response.status_code == 200
    assert f"Could not make {pruned} current: model version {pruned} was pruned at " in page
    assert "cannot be made current" in page and "FileNotFoundError" not in page and "VersionGone" not in page
    assert artifacts.current_version() == kept


@pytest.mark.parametrize("how", ["page", "bulk action"])
def test_deleting_a_user_in_the_admin_erases_what_the_recommender_keeps(mongo_db, site_cache, client, make_user, how):
    """Staff answering a "delete me" request in the admin (a user's delete page, or the list's
    "delete selected") deleted the Django rows only: the shopper's history, ratings and list stayed
    in MongoDB under an id nobody owned, unmarked, so training went on learning from them. It runs
    the shopper's own deletion (accounts.deletion), with its staff record; the staff member stays
    logged in."""
    from django.contrib.auth.models import User

    from accounts.models import AccountDeletion, recommender_id
    from core import mongo, rating_history

    staff = make_user(staff=True)
    client.force_login(staff)
    shopper = make_user()
    uid = recommender_id(shopper)
    mongo_db[mongo.USER_HISTORY].replace_one(
        {"_id": uid}, rating_history.history_doc(uid, {"P000001": (4.0, 1_700_000_000.0)}, {}), upsert=True)
    if how == "page":
        done = client.post(f"/admin/auth/user/{shopper.pk}/delete/", {"post": "yes"})
    else:
        done = client.post("/admin/auth/user/", {"action": "delete_selected", "_selected_action": [shopper.pk],
                                                 "post": "yes"})
    assert done.status_code == 302, done.content[:500]
    assert not User.objects.filter(pk=shopper.pk).exists()
    assert mongo_db[mongo.USER_HISTORY].find_one({"_id": uid}) is None
    assert rating_history.is_deleted_user(uid, db=mongo_db)
    assert AccountDeletion.objects.get().counts["history"] == 1
    assert client.get("/admin/").status_code == 200


def test_delete_selected_stopped_by_mongodb_keeps_and_logs_only_what_it_deleted(mongo_db, site_cache, client, make_user,
                                                                              monkeypatch):
    """Django's "delete selected" logs every selected user as deleted before deleting any: with
    MongoDB failing at the second, the admin's history said all three were deleted. Each is now
    logged with its deletion; the action stops at the error."""
    from django.contrib.admin.models import DELETION, LogEntry
    from django.contrib.auth.models import User
    from pymongo.errors import ServerSelectionTimeoutError

    from core import erasure

    staff = make_user(staff=True)
    client.force_login(staff)
    shoppers = sorted((make_user() for _ in range(3)), key=lambda u: u.pk)
    erase, calls = erasure.delete_user_data, []

    def second_fails(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise ServerSelectionTimeoutError("no server")
        return erase(*args, **kwargs)

    monkeypatch.setattr(erasure, "delete_user_data", second_fails)
    stopped = client.post("/admin/auth/user/", {"action": "delete_selected", "post": "yes",
                                                "_selected_action": [u.pk for u in shoppers]})
    assert stopped.status_code == 503
    left = set(User.objects.filter(pk__in=[u.pk for u in shoppers]).values_list("pk", flat=True))
    logged = set(LogEntry.objects.filter(action_flag=DELETION).values_list("object_id", flat=True))
    assert len(left) == 2 and len(calls) == 2
    assert logged == {str(u.pk) for u in shoppers} - {str(pk) for pk in left}


def test_an_address_another_account_has_is_refused_on_the_user_page(mongo_db, site_cache, client, make_user):
    """The admin's user form checks e-mail addresses as sign-up does, in any case: the unique index
    (accounts.0009) alone made saving one a server error."""
    from django.contrib.auth.models import User

    owner, shopper = make_user(), make_user()
    client.force_login(make_user(staff=True))

    def save(email: str):
        joined = shopper.date_joined
        return client.post(f"/admin/auth/user/{shopper.pk}/change/", {
            "username": shopper.username, "email": email, "first_name": "", "last_name": "", "is_active": "on",
            "date_joined_0": f"{joined:%Y-%m-%d}", "date_joined_1": f"{joined:%H:%M:%S}"})

    refused = save(f"  {owner.email.upper()} ")
    assert refused.status_code == 200 and "Another account already uses this e-mail address." in \
        refused.content.decode()
    assert User.objects.get(pk=shopper.pk).email == shopper.email
    assert save(shopper.email.upper()).status_code == 302  # its own address, in another case: no conflict
    User.objects.filter(pk=owner.pk).update(email="")
    assert save("").status_code == 302  # no address, as another account: never a conflict
    assert User.objects.get(pk=shopper.pk).email == ""


def test_a_save_that_loses_the_race_for_an_address_gets_the_form_error(mongo_db, site_cache, client, make_user):
    """Two saves of one new address at once (or one during accounts.0009's deploy): both pass the
    form's check, the unique index refuses the second. That one gets the form's error, not a server
    error, and nothing of it is kept (no change, no log entry).

    The race is made real without threads: the other account takes the address just before this
    save's own update (a pre_save receiver), after the form's check."""
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.auth.models import User
    from django.db.models.signals import pre_save

    shopper = make_user()
    client.force_login(make_user(staff=True))
    email = f"taken.{shopper.username}@example.com"

    def the_other_save_first(sender, instance, **kwargs):
        if instance.pk == shopper.pk:
            User.objects.create(username=f"other{shopper.username}", email=email.upper())

    joined = shopper.date_joined
    pre_save.connect(the_other_save_first, sender=User)
    try:
        lost = client.post(f"/admin/auth/user/{shopper.pk}/change/", {
            "username": shopper.username, "email": email, "first_name": "", "last_name": "", "is_active": "on",
            "date_joined_0": f"{joined:%Y-%m-%d}", "date_joined_1": f"{joined:%H:%M:%S}"})
    finally:
        pre_save.disconnect(the_other_save_first, sender=User)
    assert lost.status_code == 200 and "Another account already uses this e-mail address." in lost.content.decode()
    assert User.objects.get(pk=shopper.pk).email == shopper.email
    assert not LogEntry.objects.filter(object_id=str(shopper.pk), action_flag=CHANGE).exists()


@pytest.mark.parametrize("page", ["add", "change"])
def test_a_save_that_loses_the_race_for_a_username_gets_the_form_error(mongo_db, site_cache, client, make_user,
                                                                        page):
    """Two saves of one new username at once (the admin's "add user" or a rename, against another
    save or a sign-up): both pass Django's check, the username's UNIQUE constraint refuses the
    second. That one gets Django's usual error on the form (it was a server error, 500), and
    nothing of it is kept (no account, no change, no log entry).

    The race is made real without threads: the other account takes the name just before this
    save's own insert or update (a pre_save receiver, once), after the form's check."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.models import User
    from django.db.models.signals import pre_save

    from tests.site_catalog import admin_user_form

    shopper = make_user()
    client.force_login(make_user(staff=True))
    name = f"taken{shopper.username}"

    def the_other_save_first(sender, instance, **kwargs):
        if instance.username == name:
            pre_save.disconnect(the_other_save_first, sender=User)  # once: the other's own save
            User.objects.create(username=name)

    url, data = admin_user_form(page, shopper, name)
    pre_save.connect(the_other_save_first, sender=User)
    try:
        lost = client.post(url, data)
    finally:
        pre_save.disconnect(the_other_save_first, sender=User)
    assert lost.status_code == 200 and "A user with that username already exists." in lost.content.decode()
    assert not User.objects.filter(username=name).exists()  # the other's insert went with this save's transaction
    assert User.objects.get(pk=shopper.pk).username == shopper.username
    assert not LogEntry.objects.filter(object_repr__in=[name, shopper.username]).exists()
