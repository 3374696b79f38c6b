"""The Django admin: staff only; ratings with their live processing state; model versions with
metrics and pipeline runs mirrored from MongoDB (by the sync command, and by the lists themselves when opened)."""
from __future__ import annotations

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
