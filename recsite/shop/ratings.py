"""Submitting a rating or a control: validate, publish to Kafka, record for the admin; return at once.

The page does not wait for the worker: the event is durable once Kafka acknowledges it, and the
recommendations page notices the worker's new list by polling with a conditional request.
Changing a rating is rating again (the newest rating wins); removing it and "not interested" are
events of their own (``core.events`` actions), on the same topic, so the worker applies a user's
events in the order they were made.
"""
from __future__ import annotations

from core import kafka_io, mongo
from core.events import NOT_INTERESTED, RATE, UNRATE, InvalidEvent, RatingEvent, validate
from shop.models import RatingSubmission

CONTROL_ACTIONS = (UNRATE, NOT_INTERESTED)


class RatingRejected(ValueError):
    """The rating is not acceptable (unknown product, bad value); nothing was stored."""


def submit_rating(user, recommender_id: str, product_id: str, rating: int, text: str = "") -> RatingSubmission:
    """Publish one rating for the logged-in user; raises RatingRejected or kafka_io.PublishError."""
    return submit_event(user, RatingEvent(user_id=recommender_id, product_id=str(product_id), rating=rating,
                                          text=text or ""))


def submit_control(user, recommender_id: str, product_id: str, action: str) -> RatingSubmission:
    """Publish "remove my rating" (``unrate``) or ``not_interested`` for the logged-in user."""
    if action not in CONTROL_ACTIONS:
        raise RatingRejected(f"unknown action {action}")
    return submit_event(user, RatingEvent(user_id=recommender_id, product_id=str(product_id), rating=0,
                                          action=action))


def submit_event(user, event: RatingEvent) -> RatingSubmission:
    try:
        validate(event.to_dict())
    except InvalidEvent as exc:
        raise RatingRejected(str(exc)) from None
    if not mongo.product_exists(event.product_id):
        raise RatingRejected("unknown product")
    submission = RatingSubmission(user=user, recommender_id=event.user_id, product_id=event.product_id,
                                  rating=event.rating, action=event.action, text=event.text, event_id=event.event_id)
    try:
        kafka_io.publish_rating(event)
    except kafka_io.PublishError as exc:
        submission.publish_error = str(exc)[:300]
        submission.save()
        raise
    submission.published = True
    submission.save()
    return submission


__all__ = ["RATE", "UNRATE", "NOT_INTERESTED", "RatingRejected", "submit_rating", "submit_control", "submit_event"]
