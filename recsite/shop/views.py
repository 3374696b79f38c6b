"""HTML pages: catalog, product, rating, recommendations, analysis dashboard."""
from __future__ import annotations

import hashlib
import json
import re

import redis
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import recommender_id
from core import artifacts, freshness, kafka_io, mongo, search
from core.settings import get_settings
from shop import products as products_cache
from shop import recommendations
from shop.forms import CatalogQueryForm, RatingForm, ReviewPageForm, product_id_validator
from shop.ratings import RatingRejected, submit_rating
from shop.throttle import allow_search

PER_PAGE = 24
_PLOT_RE = re.compile(r"^[a-z0-9_]{1,64}\.png$")


def _valid_product_id(product_id: str) -> str:
    try:
        product_id_validator(product_id)
    except Exception:
        raise Http404("No such product") from None
    return product_id


@require_GET
def catalog(request):
    form = CatalogQueryForm(request.GET)
    if not form.is_valid():
        return render(request, "shop/catalog.html", {"form": form, "products": [], "categories": []}, status=400)
    page = form.cleaned_data["page"] or 1
    q, category = form.cleaned_data["q"], form.cleaned_data["category"] or None
    if q:  # answered from the search index (core/search.py), throttled per client
        allowed, wait = allow_search(request)
        if not allowed:
            response = render(request, "shop/catalog.html", {
                "form": form, "products": [], "categories": mongo.categories(), "q": q, "total": 0, "page": 1,
                "pages": 1, "throttled": True}, status=429)
            response["Retry-After"] = str(max(1, int(wait or 1)))
            return response
        ids = _search_ids(q, category)
        shown = ids[(page - 1) * PER_PAGE:page * PER_PAGE]
        found = products_cache.summaries(shown)
        products, total = [found[i] for i in shown if i in found], len(ids)
    else:
        key = "catalog:" + hashlib.sha256(f"{category or ''}|{page}".encode()).hexdigest()[:32]
        products, total = cache.get(key) or (None, None)
        if products is None:
            products, total = mongo.list_products(page=page, per_page=PER_PAGE, category=category)
            cache.set(key, (products, total), products_cache.TTL_S)
    pages = max(1, -(-total // PER_PAGE))
    return render(request, "shop/catalog.html", {
        "form": form, "products": [{**p, "pid": p["_id"]} for p in products], "total": total, "page": page, "pages": pages,
        "has_prev": page > 1, "has_next": page < pages, "q": q, "category": category or "",
        "categories": mongo.categories(),
    })


SEARCH_CACHE_S = 60


def _search_ids(q: str, category: str | None) -> list[str]:
    """Ranked ids of a search, kept a minute so paging through results reads the index once."""
    words = " ".join(search.query_keys(q))
    key = "search:" + hashlib.sha256(f"{products_cache.cache_generation()}|{category or ''}|{words}".encode()
                                     ).hexdigest()[:32]
    ids = cache.get(key)
    if ids is None:
        ids = mongo.search_ids(q, category=category)
        cache.set(key, ids, SEARCH_CACHE_S)
    return ids


@require_GET
def product(request, product_id: str):
    product_id = _valid_product_id(product_id)
    form = ReviewPageForm(request.GET)
    if not form.is_valid():
        return HttpResponse(f"Invalid page: {form.errors.as_text()}", status=400, content_type="text/plain")
    page = form.cleaned_data["page"] or 1
    data = products_cache.product_page(product_id, page)
    if data is None:
        raise Http404("No such product")
    doc = data["product"]
    hist = doc.get("rating_hist") or {}
    n = max(1, sum(int(v) for v in hist.values()))
    histogram = [{"star": s, "count": int(hist.get(str(s), 0)), "pct": round(100 * int(hist.get(str(s), 0)) / n)}
                 for s in range(5, 0, -1)]
    mine = None
    if request.user.is_authenticated:
        mine = recommendations.history(recommender_id(request.user)).get(product_id)
    return render(request, "shop/product.html", {
        "product": {**doc, "pid": doc["_id"]}, "reviews": data["reviews"], "page": page, "pages": data["pages"],
        "histogram": histogram, "similar": data["similar"], "form": RatingForm(), "my_rating": mine,
        "ttl": products_cache.TTL_S, "generation": products_cache.cache_generation(),
    })


@login_required
@require_POST
def rate(request, product_id: str):
    """Publish the rating and return at once; the recommendations page shows the worker's update."""
    product_id = _valid_product_id(product_id)
    form = RatingForm(request.POST)
    if not form.is_valid():
        return HttpResponse(f"Invalid rating: {form.errors.as_text()}", status=400, content_type="text/plain")
    try:
        submission = submit_rating(request.user, recommender_id(request.user), product_id,
                                   form.cleaned_data["rating"], form.cleaned_data["text"])
    except RatingRejected as exc:
        return HttpResponse(f"Rating refused: {exc}", status=400, content_type="text/plain")
    except kafka_io.PublishError:
        messages.error(request, "Sorry, your rating could not be saved right now. Please try again.")
        return redirect("product", product_id=product_id)
    messages.success(request, f"Thanks! You rated it {submission.rating} ★. Your recommendations are updating.")
    return redirect("recommendations")


@login_required
@require_GET
def recommendations_page(request):
    uid = recommender_id(request.user)
    data = recommendations.for_user(uid)
    return render(request, "shop/recommendations.html", {
        "data": data, "rec_state": {"etag": data["etag"]},
        "fallback": recommendations.fallback_lists() if data["source"] != "personal" else [],
        "rating_form": RatingForm(),
    })


def _eda_dir():
    return get_settings().eda_dir / "latest"


@require_GET
def dashboard(request):
    key = f"dashboard:summary:{products_cache.cache_generation()}"
    summary = cache.get(key)
    if summary is None:
        try:
            summary = json.loads((_eda_dir() / "summary.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            summary = {}
        cache.set(key, summary, 60)
    version = artifacts.current_version()
    metrics = artifacts.load_metrics(version) if version else {}
    try:  # live: the workers' own per-event measurements, summed over the last hour (no cache)
        fresh = freshness.summary()
    except redis.RedisError as exc:
        fresh = {"n": 0, "minutes": freshness.WINDOW_MINUTES, "error": exc.__class__.__name__}
    return render(request, "shop/dashboard.html", {
        "freshness": fresh,
        "summary": summary, "summary_pretty": json.dumps(summary.get("counts", {}), indent=2),
        "analyses": _analyses(summary),
        "version": version, "metrics": metrics, "metrics_rows": _metric_rows(metrics),
    })


def _analyses(summary: dict) -> list[dict]:
    """The EDA job's analyses (a list of {name, title, png, table: [row, ...]}) as plots and tables."""
    out = []
    for a in summary.get("analyses") or []:
        if not isinstance(a, dict):
            continue
        table = [row for row in a.get("table") or [] if isinstance(row, dict)]
        columns = list(dict.fromkeys(k for row in table for k in row))
        png = a.get("png") if isinstance(a.get("png"), str) and _PLOT_RE.match(a["png"]) else None
        out.append({"name": str(a.get("name", "")), "title": str(a.get("title") or a.get("name") or ""),
                    "png": png, "columns": columns, "rows": [[row.get(c) for c in columns] for row in table]})
    return out


def _metric_rows(metrics: dict) -> list[dict]:
    """Model vs baselines as table rows, whatever subset of metrics the training recorded."""
    rows = []
    if metrics.get("test"):
        rows.append({"name": f"model ({metrics.get('engine', '?')})", **metrics["test"]})
    for name, m in (metrics.get("baselines") or {}).items():
        rows.append({"name": name, **m})
    keys = ["ndcg@10", "recall@10", "hr@10", "rmse", "coverage"]
    return [{"name": r["name"], "values": [r.get(k) for k in keys]} for r in rows]


@require_GET
def eda_plot(request, name: str):
    if not _PLOT_RE.match(name):
        raise Http404()
    path = _eda_dir() / name
    if not path.is_file():
        raise Http404()
    return FileResponse(path.open("rb"), content_type="image/png")


def healthz(request):
    """Liveness plus whether MongoDB answers (load balancers and bin/services poll this)."""
    try:
        mongo.get_db().command("ping")
        return JsonResponse({"ok": True})
    except Exception as exc:
        return JsonResponse({"ok": False, "error": exc.__class__.__name__}, status=503)
