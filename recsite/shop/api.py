"""JSON API for the same actions as the pages, described by OpenAPI (/api/schema/)."""
from __future__ import annotations

import re

from django.utils.http import parse_etags
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes, throttle_classes
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle

from accounts.models import recommender_id
from core import mongo
from core.breaker import Unavailable
from core.events import MAX_TEXT_CHARS
from shop import recommendations
from shop.forms import PRODUCT_ID_REGEX
from shop.models import RatingSubmission
from shop.products import headline, summaries, title
from core.events import NOT_INTERESTED, UNRATE
from shop.ratings import IdempotencyConflict, RatingRejected, submit_control, submit_rating
from shop.throttles import RatingRateThrottle, SearchRateThrottle

_ID_RE = re.compile(PRODUCT_ID_REGEX)
_KEY_RE = re.compile(r"\A[A-Za-z0-9_-]{8,64}\Z")


class StrictCharField(serializers.CharField):
    """A JSON string only: DRF's CharField would turn 123 or 1.5 into "123" and "1.5"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: DRF's IntegerField would accept "5", 5.0 and "5.0"."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class RatingIn(serializers.Serializer):
    product_id = StrictCharField(max_length=128, trim_whitespace=False)
    rating = StrictIntegerField(min_value=1, max_value=5)
    text = StrictCharField(required=False, allow_blank=True, max_length=MAX_TEXT_CHARS, default="")
    idempotency_key = StrictCharField(required=False, max_length=64, trim_whitespace=False,
                                      help_text="Same as the Idempotency-Key header: a retry sends the same key "
                                                "and the rating is stored once.")

    def validate_idempotency_key(self, value: str) -> str:
        if not _KEY_RE.match(value):
            raise serializers.ValidationError("8-64 characters from A-Z a-z 0-9 _ -")
        return value

    def validate_product_id(self, value: str) -> str:
        if not _ID_RE.match(value):
            raise serializers.ValidationError("not a product id")
        return value

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
        return attrs


class ProductIn(RatingIn):
    """Just a product: "remove my rating" and "not interested"."""

    rating = None
    text = None


class ControlOut(serializers.Serializer):
    event_id = serializers.CharField()
    product_id = serializers.CharField()
    action = serializers.ChoiceField([UNRATE, NOT_INTERESTED])
    status = serializers.CharField()


class DeleteAccountIn(serializers.Serializer):
    password = StrictCharField(max_length=1024, trim_whitespace=False)


class DeleteAccountOut(serializers.Serializer):
    status = serializers.CharField()
    deleted_at = serializers.DateTimeField()
    counts = serializers.DictField(child=serializers.IntegerField())


class RatingOut(serializers.Serializer):
    event_id = serializers.CharField()
    product_id = serializers.CharField()
    rating = serializers.IntegerField()
    status = serializers.CharField()


class RecItem(serializers.Serializer):
    product_id = serializers.CharField()
    title = serializers.CharField(help_text="the product's title, or a readable fallback; never the bare id")
    brand = serializers.CharField(allow_blank=True)
    price = serializers.FloatField(allow_null=True)
    image = serializers.URLField(allow_null=True, help_text="from the data; null when it has none")
    category = serializers.CharField(allow_blank=True)
    avg_rating = serializers.FloatField()
    n_reviews = serializers.IntegerField()
    score = serializers.FloatField()
    because = serializers.CharField(allow_null=True)
    because_title = serializers.CharField(allow_null=True)


class RecommendationsOut(serializers.Serializer):
    user_id = serializers.CharField()
    source = serializers.ChoiceField(["personal", "popular"])
    model_version = serializers.CharField(allow_null=True)
    updated_at = serializers.FloatField(allow_null=True)
    source_event_id = serializers.CharField(allow_null=True)
    n_rated = serializers.IntegerField()
    items = RecItem(many=True)


class SimilarItem(serializers.Serializer):
    product_id = serializers.CharField()
    title = serializers.CharField()
    score = serializers.FloatField()


@extend_schema(responses={200: RecommendationsOut, 304: None},
               description="The logged-in user's list. Send If-None-Match with the last ETag to poll cheaply.")
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def my_recommendations(request):
    uid = recommender_id(request.user)
    etag = recommendations.current_etag(uid)
    if etag in parse_etags(request.headers.get("If-None-Match", "")):
        response = Response(status=status.HTTP_304_NOT_MODIFIED)  # one Redis read, nothing else
    else:
        data = dict(recommendations.for_user(uid, tag=etag))
        etag = data.pop("etag")
        response = Response(data)
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


@extend_schema(responses={200: SimilarItem(many=True)})
@api_view(["GET"])
@permission_classes([AllowAny])
def similar(request, product_id: str):
    if not _ID_RE.match(product_id) or not summaries([product_id]):
        return Response({"detail": "unknown product"}, status=404)
    items = mongo.get_similar_items(product_id)
    if request.user.is_authenticated:  # never a product this user is not interested in
        hidden = recommendations.excluded(recommender_id(request.user))
        items = [i for i in items if i["product_id"] not in hidden]
    names = summaries([i["product_id"] for i in items])
    return Response([{"product_id": i["product_id"], "score": i["score"], "title": title(names, i["product_id"])}
                     for i in items])


class SearchQuery(serializers.Serializer):
    q = serializers.CharField(max_length=100, trim_whitespace=True)
    category = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000, default=1)
    per_page = serializers.IntegerField(required=False, min_value=1, max_value=100, default=24)


class SearchHit(serializers.Serializer):
    product_id = serializers.CharField()
    title = serializers.CharField()
    brand = serializers.CharField()
    category = serializers.CharField()
    n_reviews = serializers.IntegerField()
    avg_rating = serializers.FloatField()


class SearchOut(serializers.Serializer):
    total = serializers.IntegerField()
    page = serializers.IntegerField()
    items = SearchHit(many=True)


@extend_schema(parameters=[SearchQuery], responses={200: SearchOut, 400: None, 429: None},
               description="Products matching every word of q (prefixes of title, brand and category "
                           "words, whole words of reviews), title/brand/category matches first. Throttled.")
@api_view(["GET"])
@permission_classes([AllowAny])
@throttle_classes([SearchRateThrottle])
def search(request):
    params = SearchQuery(data=request.query_params)
    params.is_valid(raise_exception=True)
    p = params.validated_data
    found, total = mongo.list_products(page=p["page"], per_page=p["per_page"], category=p["category"] or None,
                                       query=p["q"])
    return Response({"total": total, "page": p["page"], "items": [
        {"product_id": d["_id"], "title": headline(d), "brand": d.get("brand") or "",
         "category": d.get("category") or "", "n_reviews": int(d.get("n_reviews") or 0),
         "avg_rating": float(d.get("avg_rating") or 0)} for d in found]})


@extend_schema(request=RatingIn, responses={202: RatingOut, 400: None, 409: None, 429: None, 503: None},
               description="Rate a product as the logged-in user. Returns once Kafka has the event. Send an "
                           "Idempotency-Key header (8-64 of A-Z a-z 0-9 _ -) and reuse it when retrying: the "
                           "rating is stored once. 409: the key was used for another rating; 429: too many ratings; 503: Kafka or "
                           "MongoDB is unavailable, retry later with the same key.")
@api_view(["POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
@throttle_classes([UserRateThrottle, RatingRateThrottle])
def post_rating(request):
    if not isinstance(request.data, dict):
        return Response({"detail": "expected a JSON object"}, status=400)
    body = RatingIn(data=request.data)
    body.is_valid(raise_exception=True)
    key = body.validated_data.get("idempotency_key")
    header = request.headers.get("Idempotency-Key")
    if header is not None:
        if not _KEY_RE.match(header) or (key and key != header):
            return Response({"detail": "Idempotency-Key must be 8-64 characters from A-Z a-z 0-9 _ - "
                                       "(and match idempotency_key if both are sent)"}, status=400)
        key = header
    try:
        sub = submit_rating(request.user, recommender_id(request.user), body.validated_data["product_id"],
                            body.validated_data["rating"], body.validated_data["text"], idempotency_key=key)
    except IdempotencyConflict as exc:
        return Response({"detail": str(exc)}, status=409)
    except RatingRejected as exc:
        return Response({"detail": str(exc)}, status=400)
    except Unavailable:
        return Response({"detail": "the rating could not be saved right now; try again in a few seconds"},
                        status=503, headers={"Retry-After": "2"})
    return Response({"event_id": sub.event_id, "product_id": sub.product_id, "rating": sub.rating,
                     "status": "accepted"}, status=202)


@extend_schema(responses={200: None, 404: None})
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def rating_status(request, event_id: str):
    """Processing state of one of *your* ratings (another user's id is simply not found)."""
    sub = RatingSubmission.objects.filter(event_id=str(event_id)[:64], user=request.user).first()
    if sub is None:
        return Response({"detail": "not found"}, status=404)
    doc = mongo.get_rating(sub.event_id) or {}
    return Response({"event_id": sub.event_id, "published": sub.published,
                     "state": doc.get("state", "pending"), "model_version": doc.get("model_version")})


def _control(request, action: str):
    if not isinstance(request.data, dict):
        return Response({"detail": "expected a JSON object"}, status=400)
    body = ProductIn(data=request.data)
    body.is_valid(raise_exception=True)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY_RE.match(key):
        return Response({"detail": "Idempotency-Key must be 8-64 characters from A-Z a-z 0-9 _ -"}, status=400)
    try:
        sub = submit_control(request.user, recommender_id(request.user), body.validated_data["product_id"], action,
                             idempotency_key=key)
    except IdempotencyConflict as exc:
        return Response({"detail": str(exc)}, status=409)
    except RatingRejected as exc:
        return Response({"detail": str(exc)}, status=400)
    except Unavailable:
        return Response({"detail": "the request could not be delivered; try again in a few seconds"},
                        status=503, headers={"Retry-After": "2"})
    return Response({"event_id": sub.event_id, "product_id": sub.product_id, "action": action,
                     "status": "accepted"}, status=202)


@extend_schema(request=ProductIn, responses={202: ControlOut, 400: None, 409: None, 429: None, 503: None},
               description="Remove your rating of a product (to change it, POST /api/ratings/ again). "
                           "Returns once Kafka has the event; your list re-solves like after a rating.")
@api_view(["POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
@throttle_classes([UserRateThrottle, RatingRateThrottle])
def remove_rating(request):
    return _control(request, UNRATE)


@extend_schema(request=ProductIn, responses={202: ControlOut, 400: None, 409: None, 429: None, 503: None},
               description="Never recommend this product to you again (your lists and similar items).")
@api_view(["POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
@throttle_classes([UserRateThrottle, RatingRateThrottle])
def post_not_interested(request):
    return _control(request, NOT_INTERESTED)


@extend_schema(request=DeleteAccountIn, responses={200: DeleteAccountOut, 400: None, 403: None, 429: None, 503: None},
               description="Delete your account and everything kept about you (ratings, history, lists, "
                           "exclusions); the next model is trained without you. Needs your password.")
@api_view(["POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
def delete_account(request):
    from accounts.deletion import delete_account as delete

    if not isinstance(request.data, dict):
        return Response({"detail": "expected a JSON object"}, status=400)
    from accounts import throttle

    body = DeleteAccountIn(data=request.data)
    body.is_valid(raise_exception=True)
    name, address = request.user.get_username(), throttle.client_address(request)
    password = body.validated_data["password"]
    try:  # the password check is a login attempt too: it shares the lockout
        throttle.check_login(name, password, address)
    except throttle.Refused as refusal:
        return Response({"detail": refusal.message}, status=refusal.status)
    if not request.user.check_password(password):
        throttle.record_failure(name, password, address)
        return Response({"detail": "wrong password"}, status=403)
    record = delete(request.user, request=request)
    return Response({"status": "deleted", "deleted_at": record.deleted_at, "counts": record.counts})
