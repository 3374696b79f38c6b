"""The API's request and response shapes (DRF serializers), apart from its views (shop/api.py).

A rating's fields come from ``core.events``, the one contract the HTML form (shop/forms.py) and the
workers check too: the stars' range, the product id and idempotency key patterns, the text length.
"""
from __future__ import annotations

from rest_framework import serializers

from core.events import (CONTROL_ACTIONS, MAX_EVENT_ID_LENGTH, MAX_ID_LENGTH, MAX_STARS, MAX_TEXT_CHARS,
                         MIN_EVENT_ID_LENGTH, MIN_STARS, is_event_id, is_product_id)
from shop.ratings import STATES

KEY_ERROR = f"{MIN_EVENT_ID_LENGTH}-{MAX_EVENT_ID_LENGTH} characters from A-Z a-z 0-9 _ -"  # EVENT_ID_PATTERN
EVENT_ID_HELP = ("The submission's id. With an Idempotency-Key it is derived from your account and the key (the "
                 "same for every retry), not the key itself; GET /api/ratings/<id>/ takes either.")


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
    product_id = StrictCharField(max_length=MAX_ID_LENGTH, trim_whitespace=False)
    rating = StrictIntegerField(min_value=MIN_STARS, max_value=MAX_STARS)
    text = StrictCharField(required=False, allow_blank=True, max_length=MAX_TEXT_CHARS, default="")
    idempotency_key = StrictCharField(required=False, max_length=MAX_EVENT_ID_LENGTH, trim_whitespace=False,
                                      help_text="Same as the Idempotency-Key header: a retry sends the same key "
                                                "and the rating is stored once.")

    def validate_idempotency_key(self, value: str) -> str:
        if not is_event_id(value):
            raise serializers.ValidationError(KEY_ERROR)
        return value

    def validate_product_id(self, value: str) -> str:
        if not is_product_id(value):
            raise serializers.ValidationError("not a product id")
        return value

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
        return attrs


class ProductIn(RatingIn):
    """Just a product: "remove my rating", "not interested" and its undo."""

    rating = None
    text = None


class ControlOut(serializers.Serializer):
    event_id = serializers.CharField(help_text=EVENT_ID_HELP)
    product_id = serializers.CharField()
    action = serializers.ChoiceField(CONTROL_ACTIONS)
    status = serializers.CharField()


class RatingOut(serializers.Serializer):
    event_id = serializers.CharField(help_text=EVENT_ID_HELP)
    product_id = serializers.CharField()
    rating = serializers.IntegerField()
    status = serializers.CharField()


class RatingStatusOut(serializers.Serializer):
    """GET /api/ratings/<event_id>/: what became of one of your submissions."""

    event_id = serializers.CharField()
    published = serializers.BooleanField(help_text="Kafka acknowledged the event.")
    state = serializers.ChoiceField(
        STATES,
        help_text="pending: sent, not processed yet (poll again); processed: your list includes it; not_sent: "
                  "never delivered (Kafka was unavailable): it will not be processed unless you POST it again "
                  "with the same Idempotency-Key; dead_letter: the worker could not process it (an operator "
                  "may replay it); a rating whose list could not be computed is stored all the same, only its "
                  "list was not rebuilt. Poll while pending; the others change only by a retry, an operator's replay, or "
                  "(not_sent, rarely) a late delivery the site could not cancel.")
    model_version = serializers.CharField(allow_null=True, help_text="The model of the list it made, once processed.")


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


class SearchQuery(serializers.Serializer):
    q = serializers.CharField(max_length=100, trim_whitespace=True)
    category = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000, default=1)
    per_page = serializers.IntegerField(required=False, min_value=1, max_value=100, default=24)


class ListPageQuery(serializers.Serializer):
    """A page of one of the shopper's own lists (the bounds of the HTML page's shop.forms.ListPageForm)."""

    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000, default=1)


class HiddenItem(serializers.Serializer):
    product_id = serializers.CharField()
    title = serializers.CharField(help_text="the product's title, or a readable fallback; never the bare id")
    hidden_at = serializers.DateTimeField(help_text="when you said \"not interested\" in it")


class HiddenOut(serializers.Serializer):
    total = serializers.IntegerField(help_text="products you hid, on every page (one the catalog no longer has is counted, not listed)")
    page = serializers.IntegerField()
    next = serializers.IntegerField(allow_null=True, help_text="the next page's number; null on the last page")
    items = HiddenItem(many=True)


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
    unused_words = serializers.ListField(child=serializers.CharField(), help_text=(
        "the query's words past the first 8, not searched for: the items may lack them"))
