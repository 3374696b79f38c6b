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

from accounts.models import recommender_id
from core import kafka_io, mongo
from core.events import MAX_TEXT_CHARS
from shop import recommendations
from shop.forms import PRODUCT_ID_REGEX
from shop.models import RatingSubmission
from shop.products import summaries, title
from shop.ratings import RatingRejected, submit_rating
from shop.throttle import SearchRateThrottle

_ID_RE = re.compile(PRODUCT_ID_REGEX)


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

    def validate_product_id(self, value: str) -> str:
        if not _ID_RE.match(value):
            raise serializers.ValidationError("not a product id")
        return value

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
        return attrs


class RatingOut(serializers.Serializer):
    event_id = serializers.CharField()
    product_id = serializers.CharField()
    rating = serializers.IntegerField()
    status = serializers.CharField()


class RecItem(serializers.Serializer):
    product_id = serializers.CharField()
    title = serializers.CharField()
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
        {"product_id": d["_id"], "title": d.get("title") or d["_id"], "brand": d.get("brand") or "",
         "category": d.get("category") or "", "n_reviews": int(d.get("n_reviews") or 0),
         "avg_rating": float(d.get("avg_rating") or 0)} for d in found]})


@extend_schema(request=RatingIn, responses={202: RatingOut, 400: None, 503: None},
               description="Rate a product as the logged-in user. Returns once Kafka has the event.")
@api_view(["POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
def post_rating(request):
    if not isinstance(request.data, dict):
        return Response({"detail": "expected a JSON object"}, status=400)
    body = RatingIn(data=request.data)
    body.is_valid(raise_exception=True)
    try:
        sub = submit_rating(request.user, recommender_id(request.user), body.validated_data["product_id"],
                            body.validated_data["rating"], body.validated_data["text"])
    except RatingRejected as exc:
        return Response({"detail": str(exc)}, status=400)
    except kafka_io.PublishError:
        return Response({"detail": "the rating could not be delivered; try again"}, status=503)
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
