"""The public analysis dashboard (``/dashboard/``) and its plots (``/dashboard/plots/<name>``).

Apart from the shop's pages (shop/views.py): it shows what the batch side produced (the EDA job's
``summary.json`` and plots, the published model's metrics against its baselines) and the workers'
rating -> new list latency scraped from their ``/metrics``, and shares nothing with the rating path
(forms, rate limits, Kafka) those pages are built around.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime, timezone

from django.core.cache import cache
from django.http import FileResponse, Http404
from django.shortcuts import render
from django.views.decorators.http import require_safe
from pymongo.errors import PyMongoError

from core import artifacts, freshness
from core.settings import get_settings
from shop import products as products_cache

_PLOT_RE = re.compile(r"^[a-z0-9_]{1,64}\.png$")


def _eda_dir():
    return get_settings().eda_dir / "latest"


FRESHNESS_CACHE_S = 5.0  # a figure this old is served as is; an older one is scraped again
FRESHNESS_KEEP_S = 300  # an older figure is still served while another request scrapes
FRESHNESS_LOCK_S = 30  # the refresh "lock" (cache.add) expires even if its holder died mid-scrape


def _freshness() -> dict:
    """``core.freshness.summary()``, scraped at most once per ``FRESHNESS_CACHE_S`` (Django's cache).

    The page is public and a scrape waits up to ``SCRAPE_TIMEOUT_S`` for a worker that does not
    answer, so scraping per request let a flood of hits hold every gunicorn thread. One request at
    a time refreshes (the one whose ``cache.add`` of the lock key wins); the others meanwhile get the
    previous figure. With no figure at all yet (or Redis down) a request scrapes itself, as before.
    The key names the worker URLs, so a changed ``WORKER_METRICS_URLS`` is read at once.
    """
    urls = freshness.worker_urls()
    key = "dashboard:freshness:" + hashlib.sha256("|".join(urls).encode()).hexdigest()[:32]
    cached = cache.get(key)
    if cached is not None and time.time() - cached["at"] < FRESHNESS_CACHE_S:
        return cached["summary"]
    locked = cached is not None  # with no figure to serve yet, a request scrapes for itself
    if locked and not cache.add(f"{key}:lock", 1, FRESHNESS_LOCK_S):
        return cached["summary"]  # another request is scraping right now
    try:
        summary = freshness.summary(urls)
        cache.set(key, {"at": time.time(), "summary": summary}, FRESHNESS_KEEP_S)
    finally:
        if locked:
            cache.delete(f"{key}:lock")
    return summary


@require_safe
def dashboard(request):
    key = f"dashboard:summary:{products_cache.cache_generation()}"
    summary = cache.get(key)
    if summary is None:
        try:
            summary = json.loads((_eda_dir() / "summary.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            summary = {}
        cache.set(key, summary, 60)
    version, metrics = _published_model()
    fresh = dict(_freshness())  # the workers' latency histograms, from their /metrics
    if fresh["since"]:
        fresh["since"] = datetime.fromtimestamp(fresh["since"], tz=timezone.utc)
    fresh["n_unreachable"] = len(fresh["unreachable"])
    if not request.user.is_staff:  # the workers' internal addresses are the operator's business
        fresh["unreachable"] = []
    return render(request, "shop/dashboard.html", {
        "freshness": fresh,
        "summary": summary, "summary_pretty": json.dumps(summary.get("counts", {}), indent=2),
        "analyses": _analyses(summary),
        "version": version, "metrics": metrics, "metrics_rows": _metric_rows(metrics),
    })


def _published_model() -> tuple[str | None, dict]:
    """The published model version and its metrics, read from the artifact store once per version.

    The page is public, and with ``ARTIFACTS_DIR`` in an object store reading ``CURRENT`` and
    ``metrics.json`` was two GETs per hit. The version is the generation the cached pages carry (a
    new model changes it within a second); a version's metrics never change, so they are kept
    under it. Metrics not readable yet (``{}``: a version still being copied) are not kept.
    """
    version = products_cache.published_version()
    if version is None:
        return None, {}
    key = f"dashboard:metrics:{version}"
    metrics = cache.get(key)
    if metrics is None:
        metrics = artifacts.read_metrics(version)
        if metrics:
            cache.set(key, metrics, products_cache.TTL_S)
    return version, metrics


def _analyses(summary: dict) -> list[dict]:
    """The EDA job's analyses (a list of {name, title, png, table: [row, ...]}) as plots and tables."""
    out = []
    for a in summary.get("analyses") or []:
        if not isinstance(a, dict):
            continue
        table = _with_headlines([row for row in a.get("table") or [] if isinstance(row, dict)])
        columns = list(dict.fromkeys(k for row in table for k in row))
        png = a.get("png") if isinstance(a.get("png"), str) and _PLOT_RE.match(a["png"]) else None
        out.append({"name": str(a.get("name", "")), "title": str(a.get("title") or a.get("name") or ""),
                    "png": png, "columns": columns, "rows": [[row.get(c) for c in columns] for row in table]})
    return out


def _with_headlines(table: list[dict]) -> list[dict]:
    """Product rows whose title the EDA job left empty (a product without metadata) get the
    headline the rest of the site shows (category and a review's words), never a bare id."""
    missing = [str(row["product_id"]) for row in table if "title" in row and not row.get("title")
               and isinstance(row.get("product_id"), str)]
    if not missing:
        return table
    try:
        found = products_cache.summaries(missing)
    except PyMongoError:  # the dashboard still shows its plots and numbers without MongoDB
        return table
    return [{**row, "title": products_cache.headline(found.get(str(row.get("product_id")), {}))}
            if "title" in row and not row.get("title") else row for row in table]


def _metric_rows(metrics: dict) -> list[dict]:
    """Model vs baselines as table rows, whatever subset of metrics the training recorded."""
    rows = []
    if isinstance(metrics.get("test"), dict):
        rows.append({"name": f"model ({metrics.get('engine', '?')})", **metrics["test"]})
    baselines = metrics.get("baselines")
    for name, m in (baselines.items() if isinstance(baselines, dict) else []):
        if isinstance(m, dict):
            rows.append({"name": str(name), **m})
    keys = ["ndcg@10", "recall@10", "hr@10", "rmse", "coverage"]
    return [{"name": r["name"], "values": [r.get(k) for k in keys]} for r in rows]


@require_safe
def eda_plot(request, name: str):
    if not _PLOT_RE.match(name):
        raise Http404()
    path = _eda_dir() / name
    if not path.is_file():
        raise Http404()
    return FileResponse(path.open("rb"), content_type="image/png")
