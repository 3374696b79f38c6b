"""The shop's HTML pages: the catalog (with search) and a product's page; rating a product and the
controls (remove my rating, not interested, interested again); the hidden products; the
recommendations; onboarding after sign-up; and ``/healthz``.

The analysis dashboard, which reads the batch jobs' output and not the rating path, is shop/dashboard.py.
"""
from __future__ import annotations

import hashlib
import math
import time
from functools import partial, wraps
from typing import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST, require_safe
from rest_framework.exceptions import Throttled

from accounts.models import recommender_id
from core import mongo, search
from core import catalog as catalog_db  # the view below is called catalog
from core.breaker import Unavailable
from core.events import INTERESTED_AGAIN, NOT_INTERESTED, UNRATE
from shop import products as products_cache
from shop import recommendations
from shop.forms import (ONBOARDING_PREFIX, CatalogQueryForm, ControlForm, ListPageForm, OnboardingForm, RatingForm,
                        ReviewPageForm, product_id_validator)
from shop.ratings import IdempotencyConflict, RatingRejected, already_charged, submit_control, submit_rating
from shop.throttles import RatingRateThrottle, allow_search, charge_rating, rating_throttled, refund_rating

PER_PAGE = 24
HOME_SHOWN = 8


def _valid_product_id(product_id: str) -> str:
    try:
        product_id_validator(product_id)
    except Exception:
        raise Http404("No such product") from None
    return product_id


def _product_post(view):
    """POST only, logged in: a logged-out shopper (a session expired on an open page) logs in and
    comes back to the product's page. ``login_required`` brought them back to this POST-only URL
    with a GET: a blank 405."""
    @wraps(view)
    def checked(request, product_id: str):
        if not request.user.is_authenticated:
            return redirect_to_login(reverse("product", args=[_valid_product_id(product_id)]))
        return view(request, product_id)

    return require_POST(checked)


@require_safe
def catalog(request):
    form = CatalogQueryForm(request.GET)
    if not form.is_valid():
        return render(request, "shop/catalog.html", {"form": form, "products": [], "categories": []}, status=400)
    page = form.cleaned_data["page"] or 1
    q, category = form.cleaned_data["q"], form.cleaned_data["category"] or None
    categories = products_cache.categories()
    listing = {"form": form, "products": [], "categories": categories, "q": q, "category": category or "",
               "total": 0, "page": page, "pages": 1}
    if category and category not in {c["name"] for c in categories}:
        return render(request, "shop/catalog.html", listing, status=404)  # nothing of it read or cached
    if q:  # answered from the search index (core/search.py), throttled per client
        allowed, wait = allow_search(request)
        if not allowed:
            response = render(request, "shop/catalog.html", {**listing, "page": 1, "throttled": True}, status=429)
            response["Retry-After"] = str(max(1, int(wait or 1)))
            return response
        ids = _search_ids(q, category)
        shown = ids[(page - 1) * PER_PAGE:page * PER_PAGE]
        found = products_cache.summaries(shown)
        products, total = [found[i] for i in shown if i in found], len(ids)
        listing.update(unused_words=search.unused_words(q), max_query_words=search.MAX_QUERY_WORDS)
    else:
        products, total = _catalog_page(category, page) or (None, None)
        if products is None:
            return render(request, "shop/catalog.html", listing, status=404)
    pages = _page_count(total)
    # The home page (first page, no search, no filter) opens with what is popular and trending,
    # for everyone: an anonymous visitor or a new account has nothing personal yet. Not what a
    # signed-in shopper marked "not interested" (search still finds it: asked for by name).
    home = page == 1 and not q and not category
    hidden = recommendations.excluded(recommender_id(request.user)) if home and request.user.is_authenticated else set()
    return render(request, "shop/catalog.html", {
        **listing, "products": [_catalog_card(p) for p in products], "total": total, "pages": pages,
        "has_prev": page > 1, "has_next": page < pages,
        "home_lists": recommendations.fallback_lists(limit=HOME_SHOWN, categories=0, exclude=hidden) if home else [],
    })


def _catalog_page(category: str | None, page: int) -> tuple[list[dict], int] | None:
    """A page of the catalog or of one (known) category and the total, cached; None past the last page.

    Only pages that exist are cached: every page number anyone asks for was, each a key in the
    Redis that also holds Celery's broker and the trending state, which must never be evicted.
    """
    key = "catalog:" + hashlib.sha256(f"{products_cache.catalog_generation()}|{category or ''}|{page}".encode()
                                      ).hexdigest()[:32]
    found = cache.get(key)
    if found is None:
        found = catalog_db.list_products(page=page, per_page=PER_PAGE, category=category)
        if page > _page_count(found[1]):
            return None
        cache.set(key, found, products_cache.TTL_S)
    return found


def _page_count(total: int) -> int:
    """Catalog pages of ``total`` products (one, empty, when there are none)."""
    return max(1, -(-total // PER_PAGE))


def _catalog_card(doc: dict) -> dict:
    """A card plus a quoted review line (unless the headline already is that line: no title)."""
    return {**products_cache.card(doc["_id"], doc),
            "sample_summary": (doc.get("sample_summary") or "") if str(doc.get("title") or "").strip() else ""}


SEARCH_CACHE_S = 60


def _search_ids(q: str, category: str | None) -> list[str]:
    """Ranked ids of a search, kept a minute so paging through results reads the index once.

    Kept by the index keys read, sorted: the ranking does not depend on the order the words were
    typed in (core.search.rank), so "strap guitar" is answered from "guitar strap"'s entry.
    """
    words = " ".join(sorted(search.query_keys(q)))
    key = "search:" + hashlib.sha256(f"{products_cache.catalog_generation()}|{category or ''}|{words}".encode()
                                     ).hexdigest()[:32]
    ids = cache.get(key)
    if ids is None:
        ids = catalog_db.search_ids(q, category=category)
        cache.set(key, ids, SEARCH_CACHE_S)
    return ids


@require_safe
def product(request, product_id: str):
    product_id = _valid_product_id(product_id)
    form = ReviewPageForm(request.GET)
    if not form.is_valid():
        return HttpResponse(f"Invalid page: {form.errors.as_text()}", status=400, content_type="text/plain")
    page = form.cleaned_data["page"] or 1
    data = products_cache.product_page(product_id, page)
    if data is None:
        raise Http404("No such product or page of reviews")
    doc = data["product"]
    hist = doc.get("rating_hist") or {}
    n = max(1, sum(int(v) for v in hist.values()))
    histogram = [{"star": s, "count": int(hist.get(str(s), 0)), "pct": round(100 * int(hist.get(str(s), 0)) / n)}
                 for s in range(5, 0, -1)]
    mine, similar, bought_together, shown_variant = None, data["similar"], data["bought_together"], ""
    hidden_here = False  # the shopper said "not interested" in this product: the page offers the undo
    if request.user.is_authenticated:
        uid = recommender_id(request.user)
        rated, excluded = recommendations.rated_and_excluded(uid)
        mine, hidden_here = rated.get(product_id), product_id in excluded and product_id not in _shown_again(request)
        hidden = excluded & {c["product_id"] for c in similar + bought_together}
        if hidden:  # "not interested" items are not shown to this user here either
            similar = [c for c in similar if c["product_id"] not in hidden]
            bought_together = [c for c in bought_together if c["product_id"] not in hidden]
            shown_variant = hashlib.sha256("|".join(sorted(hidden)).encode()).hexdigest()[:16]
    response = render(request, "shop/product.html", {
        "product": {**doc, "pid": doc["_id"]}, "card": data["card"], "category_path": data["category_path"],
        "reviews": data["reviews"], "page": page, "pages": data["pages"], "histogram": histogram,
        "similar": similar, "shown_variant": shown_variant, "bought_together": bought_together,
        "form": RatingForm(), "my_rating": mine, "hidden": hidden_here, "ttl": products_cache.TTL_S,
        "generation": products_cache.catalog_generation(), "reviews_revision": data["reviews_revision"],
    })
    if request.user.is_authenticated:  # its forms' keys, the shopper's rating: Back fetches it again
        add_never_cache_headers(response)
    return response


def _submit(request, product_id: str, form_class, submit, what: str):
    """One POST about a product (a rating or a control): check, publish, return at once.

    ``submit(product_id, cleaned_data, charge)`` publishes the event (shop.ratings, which calls
    ``charge`` once the event is known to be new: ``RATING_RATE`` counts ratings, not posts, and
    not a double click's replay, as the API) and returns the flash message; the recommendations
    page then shows the worker's update. ``what`` names the thing in the answers that say why
    not ("rating": "Invalid rating", "Rating refused").
    """
    product_id = _valid_product_id(product_id)
    form = form_class(request.POST)
    if not form.is_valid():
        return HttpResponse(f"Invalid {what}: {form.errors.as_text()}", status=400, content_type="text/plain")
    try:
        done = submit(product_id, form.cleaned_data, partial(charge_rating, request))
    except Throttled as exc:
        return _too_many(exc.wait)
    except (IdempotencyConflict, RatingRejected, Unavailable) as exc:
        refund_rating(request)  # nothing was published
        if isinstance(exc, Unavailable):
            return _unavailable(f"your {what}")
        status = 409 if isinstance(exc, IdempotencyConflict) else 400
        return HttpResponse(f"{what.capitalize()} refused: {exc}", status=status, content_type="text/plain")
    messages.success(request, done)
    if form.cleaned_data["next"] == "product":
        return redirect("product", product_id=product_id)
    if form.cleaned_data["next"] == "hidden":
        return redirect("hidden_products")
    return redirect("recommendations")


@_product_post
def rate(request, product_id: str):
    def submit(product_id: str, data: dict, charge: Callable[[], None]) -> str:
        rating = partial(submit_rating, request.user, product_id, data["rating"], data["text"], charge=charge)
        try:
            submission = rating(idempotency_key=data.get("submission_id") or None)
        except IdempotencyConflict:  # the page shown again (Back) and another choice made: a new rating
            submission = rating(idempotency_key=None)
        return f"Thanks! You rated it {submission.rating} ★. Your recommendations are updating."

    return _submit(request, product_id, RatingForm, submit, "rating")


def _control(request, product_id: str, action: str, done: str):
    """Publish "remove my rating", "not interested" or its undo like a rating."""
    def submit(product_id: str, data: dict, charge: Callable[[], None]) -> str:
        submit_control(request.user, product_id, action, charge=charge)
        return done

    return _submit(request, product_id, ControlForm, submit, "request")


@_product_post
def unrate(request, product_id: str):
    return _control(request, product_id, UNRATE, "Your rating was removed. Your recommendations are updating.")


@_product_post
def not_interested(request, product_id: str):
    response = _control(request, product_id, NOT_INTERESTED,
                        "Got it: we will not recommend that product to you again (changed your mind? "
                        "“Hidden products” lists it). Your recommendations are updating.")
    if response.status_code == 302:
        _note_shown_again(request, product_id, None)
    return response


@_product_post
def interested_again(request, product_id: str):
    """Take "not interested" back: a click by mistake must not hide a product for good."""
    response = _control(request, product_id, INTERESTED_AGAIN,
                        "Got it: that product may be recommended to you again. Your recommendations are updating.")
    if response.status_code == 302:
        _note_shown_again(request, product_id, time.time())
    return response


SHOWN_AGAIN_S = 60.0  # how long the session remembers an undo the worker may not have applied yet


def _note_shown_again(request, product_id: str, at: float | None) -> None:
    """Remember in the session that this shopper just took "not interested" back (``at``), or
    forget it (None: hidden again), so the page the undo returns to, read before the worker
    applied it, does not show the product hidden with its button again (:func:`_shown_again`)."""
    noted = _shown_again(request)
    noted.pop(product_id, None)
    if at is not None:
        noted[product_id] = at
    request.session["shown_again"] = noted


def _shown_again(request) -> dict[str, float]:
    """{product: when} of the shopper's undos of the last ``SHOWN_AGAIN_S`` seconds (this session)."""
    now = time.time()
    return {p: t for p, t in request.session.get("shown_again", {}).items() if now - t < SHOWN_AGAIN_S}


@login_required
@require_safe
def hidden_products(request):
    """The products the shopper marked "not interested", the latest first, each with the button
    that takes it back (:func:`shop.recommendations.hidden_latest_first`, without the undos this
    session just sent). Only products the catalog has (the undo of another is refused)."""
    form = ListPageForm(request.GET)
    if not form.is_valid():
        return HttpResponse(f"Invalid page: {form.errors.as_text()}", status=400, content_type="text/plain")
    hidden = recommendations.hidden_latest_first(recommender_id(request.user), _shown_again(request))
    page = hidden.get_page(form.cleaned_data["page"] or 1)
    return render(request, "shop/hidden_products.html",
                  {"page": page, "products": products_cache.cards([p for p, _ in page])})


def _too_many(wait: float) -> HttpResponse:
    """429 with Retry-After: the user is over the per-user rating limit (ratings and controls)."""
    response = HttpResponse("Too many ratings in a short time; please wait a moment.", status=429,
                            content_type="text/plain")
    response["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


def _unavailable(what: str) -> HttpResponse:
    """A clear 503 at once (the breaker), not a redirect that looks like success to a script."""
    response = HttpResponse(f"Sorry, {what} could not be saved right now. Please try again in a few seconds.",
                            status=503, content_type="text/plain")
    response["Retry-After"] = "2"
    return response


# An empty card for the page's script to clone (shop/_card.html with every optional part present).
_CARD_TEMPLATE = {"pid": "_", "product_id": "_", "title": "", "brand": "-", "price": 1.0, "image": None,
                  "category": "-", "avg_rating": 0.0, "n_reviews": 0, "stars": ""}


@login_required
@require_safe
def recommendations_page(request):
    uid = recommender_id(request.user)
    data = recommendations.for_user(uid)
    fallback = []
    if data["source"] != "personal":
        # neither what the user rated nor what they are not interested in
        rated, excluded = recommendations.rated_and_excluded(uid)
        fallback = recommendations.fallback_lists(exclude=set(rated) | excluded)
    return render(request, "shop/recommendations.html", {
        "data": data, "rec_state": {"etag": data["etag"]}, "fallback": fallback,
        "rating_form": RatingForm(), "card_template": _CARD_TEMPLATE,
    })


@login_required
def onboarding(request):
    """After sign-up: rate a few popular products per category; the picks make the first list.

    Each pick is an ordinary rating (shop.ratings.submit_rating: Kafka, then the workers), so the
    first personal list is folded in from exactly these ratings, like any later one. Each pick is
    also charged to ``RATING_RATE`` before any is published (all fit or none is published).
    """
    uid = recommender_id(request.user)
    history, excluded = recommendations.rated_and_excluded(uid)
    rated = set(history)
    # neither what the shopper rated nor what they said they are not interested in
    lists = recommendations.onboarding_lists(exclude=rated | excluded)
    # no more than may be rated at once (RATING_RATE): rating every product offered must not be refused
    most = max(1, RatingRateThrottle().num_requests // max(1, len(lists)))
    lists = [{**lst, "items": lst["items"][:most]} for lst in lists]
    offered = [p["pid"] for lst in lists for p in lst["items"]]
    form = OnboardingForm(request.POST or None, product_ids=offered)
    status, retry_after = 200, None
    if request.method == "POST":
        picks = form.picks() if form.is_valid() else {}
        wait = rating_throttled(request, cost=max(1, len(picks)))  # an invalid POST costs one, as before
        if wait == math.inf:
            form.add_error(None, f"You can rate at most {RatingRateThrottle().num_requests} products at once: "
                                 "please rate fewer.")
            status = 400
        elif wait is not None:
            form.add_error(None, f"Too many ratings in a short time: ratings are limited to {settings.RATING_RATE}. "
                                 "Please wait a moment, or rate fewer products.")
            status, retry_after = 429, max(1, math.ceil(wait))
        elif not form.is_valid():
            status = 400
        else:
            status = _publish_picks(request, form, picks)
            if status == 302:
                return redirect("recommendations")
    for lst in lists:
        for p in lst["items"]:
            p["field"] = form[ONBOARDING_PREFIX + p["pid"]] if ONBOARDING_PREFIX + p["pid"] in form.fields else None
    response = render(request, "shop/onboarding.html", {"form": form, "lists": lists, "n_rated": len(rated)},
                      status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _publish_picks(request, form: OnboardingForm, picks: dict[str, int]) -> int:
    """Publish the onboarding picks one rating each; the status to answer (302: all published).

    Unknown products are checked before anything is published; a failure part way (the broker or
    the store down) cannot take back what was published, so the message names what was saved.
    """
    known = products_cache.summaries(list(picks))
    if set(picks) - set(known):
        form.add_error(None, "Rating refused: unknown product")
        return 400
    saved: list[str] = []
    try:
        for product_id, stars in picks.items():
            submit_rating(request.user, product_id, stars, charge=already_charged)  # all picks, above
            saved.append(product_id)
    except RatingRejected as exc:
        error, status = f"Rating refused: {exc}.", 400
    except Unavailable:
        error, status = "Sorry, your ratings could not be saved right now. Please try again.", 503
    else:
        messages.success(request, f"Thanks! You rated {len(picks)} product{'s' if len(picks) != 1 else ''}. "
                                  "Your recommendations are being built from them.")
        return 302
    if saved:
        names = "; ".join(products_cache.headline(known[p]) for p in saved)
        error = f"{error} Only {len(saved)} of your {len(picks)} ratings were saved ({names}); the others were not."
    form.add_error(None, error)
    return status


def healthz(request):
    """Liveness plus whether MongoDB answers (load balancers and bin/services poll this)."""
    try:
        mongo.get_db().command("ping")
        return JsonResponse({"ok": True})
    except Exception as exc:
        return JsonResponse({"ok": False, "error": exc.__class__.__name__}, status=503)
