"""Submitting a rating: validate, publish to Kafka, record for the admin; return at once.

The page does not wait for the worker: the event is durable once Kafka acknowledges it, and the
recommendations page notices the worker's new list by polling with a conditional request.
"""
from __future__ import annotations

from core import kafka_io, mongo
from core.events import InvalidEvent, RatingEvent, validate
from shop.models import RatingSubmission


class RatingRejected(ValueError):
    """The rating is not acceptable (unknown product, bad value); nothing was stored."""


def submit_rating(user, recommender_id: str, product_id: str, rating: int, text: str = "") -> RatingSubmission:
    """Publish one rating for the logged-in user; raises RatingRejected or kafka_io.PublishError."""
    event = RatingEvent(user_id=recommender_id, product_id=str(product_id), rating=rating, text=text or "")
    try:
        validate(event.to_dict())
    except InvalidEvent as exc:
        raise RatingRejected(str(exc)) from None
    if not mongo.product_exists(event.product_id):
        raise RatingRejected("unknown product")
    submission = RatingSubmission(user=user, recommender_id=recommender_id, product_id=event.product_id,
                                  rating=event.rating, text=event.text, event_id=event.event_id)
    try:
        kafka_io.publish_rating(event)
    except kafka_io.PublishError as exc:
        submission.publish_error = str(exc)[:300]
        submission.save()
        raise
    submission.published = True
    submission.save()
    return submission
