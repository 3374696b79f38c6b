"""Submitting a rating or a control: validate, publish to Kafka, record for the admin; return at once.

The page does not wait for the worker: the event is durable once Kafka acknowledges it, and the
recommendations page notices the worker's new list by polling with a conditional request.

The event id is the submission's identity: the form carries a key made when the page was
rendered, an API client sends ``Idempotency-Key``. A retry of the same submission (a double click,
a resubmitted page, a client whose response was lost although Kafka had the event) reuses it, so
the worker, which stores events by id, stores and counts the rating once.

Changing a rating is rating again (the newest rating wins); removing it and "not interested" are
events of their own (``core.events`` actions), on the same topic, so the worker applies a user's
events in the order they were made.
"""
from __future__ import annotations

from django.db import IntegrityError, transaction

from core import kafka_io, mongo
from core.events import CONTROL_ACTIONS, NOT_INTERESTED, RATE, UNRATE, InvalidEvent, RatingEvent, validate
from shop.models import RatingSubmission


class RatingRejected(ValueError):
    """The rating is not acceptable (unknown product, bad value); nothing was stored."""


class IdempotencyConflict(RatingRejected):
    """The key was already used for another rating, or by another user: not a retry."""


def _same(sub: RatingSubmission, user, event: RatingEvent) -> bool:
    return (sub.user_id == user.pk and sub.product_id == event.product_id and sub.rating == event.rating
            and sub.text == event.text and sub.action == event.action)


def _event(idempotency_key: str | None, **fields) -> RatingEvent:
    return RatingEvent(**fields, event_id=idempotency_key) if idempotency_key else RatingEvent(**fields)


def submit_rating(user, recommender_id: str, product_id: str, rating: int, text: str = "",
                  idempotency_key: str | None = None) -> RatingSubmission:
    """Publish one rating for the logged-in user (see :func:`submit_event` for what it raises)."""
    return submit_event(user, _event(idempotency_key, user_id=recommender_id, product_id=str(product_id),
                                     rating=rating, text=text or ""))


def submit_control(user, recommender_id: str, product_id: str, action: str,
                   idempotency_key: str | None = None) -> RatingSubmission:
    """Publish "remove my rating" (``unrate``) or ``not_interested`` for the logged-in user."""
    if action not in CONTROL_ACTIONS:
        raise RatingRejected(f"unknown action {action}")
    return submit_event(user, _event(idempotency_key, user_id=recommender_id, product_id=str(product_id),
                                     rating=0, action=action))


def submit_event(user, event: RatingEvent) -> RatingSubmission:
    """Publish one event of the logged-in user.

    Raises RatingRejected (IdempotencyConflict), mongo.StoreUnavailable or kafka_io.PublishError
    (both ``core.breaker.Unavailable``: the site answers 503). A repeated key returns the earlier
    submission; if that one was not acknowledged, its event (same id) is sent again.
    """
    try:
        validate(event.to_dict())
    except InvalidEvent as exc:
        raise RatingRejected(str(exc)) from None
    submission = RatingSubmission.objects.filter(event_id=event.event_id).first()
    if submission is not None:
        if not _same(submission, user, event):
            raise IdempotencyConflict("this idempotency key was already used for a different rating")
        if submission.published:
            return submission  # a retry of a submission Kafka already has: nothing to do
    with mongo.fail_fast():
        exists = mongo.product_exists(event.product_id)
    if not exists:
        raise RatingRejected("unknown product")
    if submission is None:
        submission = RatingSubmission(user=user, recommender_id=event.user_id, product_id=event.product_id,
                                      rating=event.rating, action=event.action, text=event.text,
                                      event_id=event.event_id)
    try:
        kafka_io.publish_rating(event)
    except kafka_io.PublishError as exc:
        submission.publish_error = str(exc)[:300]
        _save(submission, user, event)
        raise
    submission.published = True
    submission.publish_error = ""
    return _save(submission, user, event)


def _save(submission: RatingSubmission, user, event: RatingEvent) -> RatingSubmission:
    """Save, unless a concurrent retry with the same key saved first (then that row stands)."""
    try:
        with transaction.atomic():
            submission.save()
        return submission
    except IntegrityError:
        existing = RatingSubmission.objects.get(event_id=event.event_id)
        if not _same(existing, user, event):
            raise IdempotencyConflict("this idempotency key was already used for a different rating") from None
        if submission.published and not existing.published:
            existing.published, existing.publish_error = True, ""
            existing.save(update_fields=["published", "publish_error"])
        return existing


__all__ = ["RATE", "UNRATE", "NOT_INTERESTED", "IdempotencyConflict", "RatingRejected", "submit_rating",
           "submit_control", "submit_event"]
