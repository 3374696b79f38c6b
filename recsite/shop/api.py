"""JSON API for the same actions as the pages, described by OpenAPI (/api/schema/)."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import partial
from typing import Callable

from django.db.models import Q
from django.utils.cache import get_conditional_response
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view, parser_classes, permission_classes, throttle_classes
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response

from accounts.models import recommender_id
from core import catalog, stored_lists
from core.breaker import Unavailable
from core.events import EVENT_ID_PATTERN, INTERESTED_AGAIN, NOT_INTERESTED, UNRATE, is_event_id, is_product_id
from core.search import unused_words
from recsite import api_errors
from recsite.api_errors import UNAUTHORIZED, documented, error_body
from recsite.parsers import JSONParser
from shop import recommendations
from shop.models import RatingSubmission
from shop.products import cards, headline, summaries, title
from shop.ratings import (IdempotencyConflict, RatingRejected, UnknownProduct, processing_state, submit_control,
                          submit_rating)
from shop.serializers import (KEY_ERROR, ControlOut, HiddenOut, ListPageQuery, ProductIn, RatingIn, RatingOut,
                              RatingStatusOut, RecommendationsOut, SearchOut, SearchQuery, SimilarItem)
from shop.throttles import ApiRateThrottle, SearchRateThrottle, charge_rating, refund_rating

REPLAYED = "Idempotent-Replayed"  # Stripe's name: the 202 repeats an earlier acceptance, nothing new was sent
# The headers of a rating's or control's request and 202, for generated clients (the prose says them too).
KEY_HEADERS = [
    OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER,
                     pattern=EVENT_ID_PATTERN.replace(r"\A", "^").replace(r"\Z", "$"),  # ECMA-262's anchors
                     description="your id of this request, reused on a retry (or the body's idempotency_key)"),
    OpenApiParameter(REPLAYED, str, OpenApiParameter.HEADER, response=[202], enum=["true"],
                     description="present when the 202 repeats an earlier acceptance of the key: nothing new was sent"),
]
KEYS = ("Keys are yours alone (another user's same key is another request) and never expire. A resend of an "
        "accepted key is answered 202 with the header Idempotent-Replayed: true (nothing is sent again); a "
        "first acceptance has no such header.")
PAGE_ONLY = ("pid", "stars")  # what only the HTML card (shop/_card.html) reads of shop.products.card()
BAD_PRODUCT_POST = ("malformed JSON (parse_error), an invalid field or Idempotency-Key (invalid), or a product "
                    "the catalog does not have (unknown_product)")
POST_ERRORS = {
    401: UNAUTHORIZED,
    409: "you used the Idempotency-Key for another request (idempotency_conflict): not a retry",
    429: "too many ratings and controls (RATING_RATE) or requests (throttled): wait Retry-After seconds",
    503: "Kafka or MongoDB is unavailable (unavailable): retry after Retry-After seconds with the same key",
}


@extend_schema(responses={200: RecommendationsOut, 304: None, **documented({
                   401: UNAUTHORIZED, 412: "If-Match names no ETag of the list (precondition_failed)"})},
               description="The logged-in user's list. Send If-None-Match with the last ETag to poll cheaply "
                           "(weak tags, lists and * are understood, RFC 9110). The popular fallback's ETag "
                           "changes with its content.")
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def my_recommendations(request):
    uid = recommender_id(request.user)
    etag, data = recommendations.shown_etag(uid)  # a personal list's: one Redis read, nothing else
    response = get_conditional_response(request, etag=etag)  # 304 (or 412 for a failed If-Match)
    if response is not None and response.status_code == 412:  # Django's has no body
        response = Response(error_body("If-Match names no ETag of the list", api_errors.PRECONDITION_FAILED),
                            status=412)
    elif response is None:
        if data is None:
            data = dict(recommendations.for_user(uid, tag=etag))
            etag = data.pop("etag")
        response = Response(_for_api(data))
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


def _for_api(shown: dict) -> dict:
    """The list as the API documents it (RecommendationsOut): without the card's fields an app
    has under another name (``pid`` is ``product_id``) or derives (``stars`` from ``avg_rating``)."""
    items = [{k: v for k, v in item.items() if k not in PAGE_ONLY} for item in shown["items"]]
    return {**shown, "items": items}


@extend_schema(responses={200: SimilarItem(many=True),
                          **documented({404: "a product the catalog does not have (unknown_product)"})})
@api_view(["GET"])
@permission_classes([AllowAny])
def similar(request, product_id: str):
    if not is_product_id(product_id) or not summaries([product_id]):
        return Response(error_body("unknown product", api_errors.UNKNOWN_PRODUCT), status=404)
    items = stored_lists.get_similar_items(product_id)
    if request.user.is_authenticated:  # never a product this user is not interested in
        hidden = recommendations.excluded(recommender_id(request.user))
        items = [i for i in items if i["product_id"] not in hidden]
    names = summaries([i["product_id"] for i in items])
    return Response([{"product_id": i["product_id"], "score": i["score"], "title": title(names, i["product_id"])}
                     for i in items])


@extend_schema(parameters=[SearchQuery],
               responses={200: SearchOut, **documented({400: "an invalid parameter (invalid)",
                                                        429: "too many searches (throttled): wait Retry-After "
                                                             "seconds"})},
               description="Products matching every word of q, up to its first 8 (the rest: unused_words) (prefixes of title, brand and category "
                           "words, whole words of reviews), title/brand/category matches first. Throttled.")
@api_view(["GET"])
@permission_classes([AllowAny])
@throttle_classes([SearchRateThrottle])
def search(request):
    params = SearchQuery(data=request.query_params)
    params.is_valid(raise_exception=True)
    p = params.validated_data
    found, total = catalog.list_products(page=p["page"], per_page=p["per_page"], category=p["category"] or None,
                                         query=p["q"])
    return Response({"total": total, "page": p["page"], "items": [
        {"product_id": d["_id"], "title": headline(d), "brand": d.get("brand") or "",
         "category": d.get("category") or "", "n_reviews": int(d.get("n_reviews") or 0),
         "avg_rating": float(d.get("avg_rating") or 0)} for d in found],
        "unused_words": unused_words(p["q"])})


@extend_schema(request=RatingIn, parameters=KEY_HEADERS,
               responses={202: RatingOut, **documented({400: BAD_PRODUCT_POST, **POST_ERRORS})},
               description="Rate a product as the logged-in user. Returns once Kafka has the event. Send an "
                           f"Idempotency-Key header ({KEY_ERROR}) and reuse it when retrying: the "
                           "rating is stored once. " + KEYS + " 409: you used the key for another request; 429: too "
                           "many ratings; 503: Kafka or MongoDB is unavailable, retry later with the same key.")
@api_view(["POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
@throttle_classes([ApiRateThrottle])
def post_rating(request):
    def submit(data: dict, key: str | None) -> tuple[dict, bool]:
        sub = submit_rating(request.user, data["product_id"], data["rating"], data["text"], idempotency_key=key,
                            charge=partial(charge_rating, request))
        return {"event_id": sub.event_id, "product_id": sub.product_id, "rating": sub.rating}, sub.replayed

    return _accept(request, RatingIn, submit, "the rating could not be saved right now")


def _accept(request, serializer, submit, unavailable: str) -> Response:
    """One POST about a product (a rating or a control): check, publish, 202 at once (or why not).

    Only a newly accepted event is charged to ``RATING_RATE`` (``shop.throttles.charge_rating``, called by
    ``shop.ratings.submit_event`` just before it publishes, and given back if that fails): an
    invalid request is bounded by ``API_USER_RATE`` alone, and a replay of an accepted key is
    answered without a charge, so a client can always confirm what it sent.

    The idempotency key comes from the ``Idempotency-Key`` header or the body's ``idempotency_key``
    (both: they must match). ``submit(validated data, key)`` publishes (shop.ratings) and returns
    the answer's fields and whether it replayed an accepted submission (then the 202 says so in
    ``Idempotent-Replayed``, for a client that reused a key by mistake).
    """
    if not isinstance(request.data, dict):
        return Response(error_body("expected a JSON object", api_errors.INVALID), status=400)
    body = serializer(data=request.data)
    body.is_valid(raise_exception=True)
    key = body.validated_data.get("idempotency_key")
    header = request.headers.get("Idempotency-Key")
    if header is not None:
        if not is_event_id(header) or (key and key != header):
            return Response(error_body(f"Idempotency-Key must be {KEY_ERROR} (and match idempotency_key if both "
                                       "are sent)", api_errors.INVALID), status=400)
        key = header
    try:
        answer, replayed = submit(body.validated_data, key)
    except IdempotencyConflict as exc:
        response = Response(error_body(str(exc), api_errors.IDEMPOTENCY_CONFLICT), status=409)
    except UnknownProduct as exc:
        response = Response(error_body(str(exc), api_errors.UNKNOWN_PRODUCT), status=400)
    except RatingRejected as exc:
        response = Response(error_body(str(exc), api_errors.INVALID), status=400)
    except Unavailable:
        response = Response(error_body(f"{unavailable}; try again in a few seconds", api_errors.UNAVAILABLE),
                            status=503, headers={"Retry-After": "2"})
    else:
        return Response({**answer, "status": "accepted"}, status=202, headers={REPLAYED: "true"} if replayed else None)
    refund_rating(request)  # nothing was accepted: it must not use up the shopper's ratings
    return response


@extend_schema(responses={200: RatingStatusOut, **documented({
                   401: UNAUTHORIZED, 404: "no rating of yours has this event id or key (not_found)"})},
               description="What became of one of your ratings or controls, by the event_id of its 202 or by "
                           "the Idempotency-Key you sent with it.")
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def rating_status(request, event_id: str):
    """Processing state of one of *your* ratings (another user's id or key is simply not found)."""
    sub = _own_submission(request.user, str(event_id)[:64])
    if sub is None:
        return Response(error_body("not found", api_errors.NOT_FOUND), status=404)
    state, model_version = processing_state(sub)
    return Response({"event_id": sub.event_id, "published": sub.published, "state": state,
                     "model_version": model_version})


def _own_submission(user, ident: str) -> RatingSubmission | None:
    """The user's submission with this event id or idempotency key. Clients looked ratings up by
    their key while it was the event id; a key is now one user's and the event id derived from it
    (shop.ratings.keyed_event_id). If one row has it as event id and another as key, the event id wins."""
    found = RatingSubmission.objects.filter(Q(event_id=ident) | Q(idempotency_key=ident), user=user)[:2]
    return min(found, key=lambda sub: sub.event_id != ident, default=None)


def _control(request, action: str) -> Response:
    def submit(data: dict, key: str | None) -> tuple[dict, bool]:
        sub = submit_control(request.user, data["product_id"], action, idempotency_key=key,
                             charge=partial(charge_rating, request))
        return {"event_id": sub.event_id, "product_id": sub.product_id, "action": action}, sub.replayed

    return _accept(request, ProductIn, submit, "the request could not be delivered")


def _control_endpoint(description: str) -> Callable[[Callable], Callable]:
    """The decorators every control endpoint shares (a JSON POST about one product, counted like a
    rating), applied in the order they would be written above it; only the description differs."""
    decorators = (
        extend_schema(request=ProductIn, parameters=KEY_HEADERS,
                      responses={202: ControlOut, **documented({400: BAD_PRODUCT_POST, **POST_ERRORS})},
                      description=f"{description} Send an Idempotency-Key as for a rating. {KEYS}"),
        api_view(["POST"]),
        parser_classes([JSONParser]),
        permission_classes([IsAuthenticated]),
        throttle_classes([ApiRateThrottle]),
    )

    def decorate(view: Callable) -> Callable:
        for decorator in reversed(decorators):
            view = decorator(view)
        return view

    return decorate


@_control_endpoint("Remove your rating of a product (to change it, POST /api/ratings/ again). "
                   "Returns once Kafka has the event; your list re-solves like after a rating.")
def remove_rating(request):
    return _control(request, UNRATE)


@_control_endpoint("Never recommend this product to you again (your lists and similar items).")
def post_not_interested(request):
    return _control(request, NOT_INTERESTED)


@_control_endpoint("Take \"not interested\" back: the product may be recommended to you again "
                   "(your list re-solves like after a rating).")
def post_interested_again(request):
    return _control(request, INTERESTED_AGAIN)


@extend_schema(parameters=[ListPageQuery],
               responses={200: HiddenOut, **documented({400: "an invalid page (invalid)", 401: UNAUTHORIZED})},
               description="The products you said you are not interested in, the latest first, 24 a page (a page "
                           "past the last is empty), to offer POST /api/interested-again/. A product whose undo "
                           "was accepted (202) stays listed until the undo is applied: drop it from your own "
                           "copy when the 202 comes.")
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def hidden(request):
    """The "Hidden products" page's list (:func:`shop.recommendations.hidden_latest_first`), its
    card titles and the dates, so an app can offer the undo.

    The page leaves out a product at once after its undo, before the worker applies it, through
    a note in the HTML session (``shop.views._shown_again``). The API keeps no such state: a token
    client has no session, and a cookie one would see the list depend on which undos went through
    the page. It lists what is stored; the client, which got the 202 for its undo, knows which
    product it just took back. A page past the last is empty with ``next`` null, like
    /api/search/'s, not the last page again as on the HTML page (a link there, not a client's loop).
    """
    params = ListPageQuery(data=request.query_params)
    params.is_valid(raise_exception=True)
    number = params.validated_data["page"]
    pages = recommendations.hidden_latest_first(recommender_id(request.user))
    since = dict(pages.page(number)) if number <= pages.num_pages else {}
    return Response({"total": pages.count, "page": number, "next": number + 1 if number < pages.num_pages else None,
                     "items": [{"product_id": c["product_id"], "title": c["title"],
                                "hidden_at": datetime.fromtimestamp(since[c["product_id"]], timezone.utc)}
                               for c in cards(list(since))]})
