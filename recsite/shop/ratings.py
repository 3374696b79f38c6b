"""Submitting a rating or a control: validate, publish to Kafka, record it (the retries' and the
status lookup's ``RatingSubmission``); return at once.

The page does not wait for the worker: the event is durable once Kafka acknowledges it, and the
recommendations page notices the worker's new list by polling with a conditional request.

The idempotency key is the submission's identity: the form carries a key made when the page was
rendered, an API client sends ``Idempotency-Key``. A retry of the same submission (a double click,
a resubmitted page, a client whose response was lost although Kafka had the event) reuses it. A
key is one user's: the submission is found by (user, key), and its event id is derived from both
(:func:`keyed_event_id`), so the retry publishes the same event id and the worker, which stores
events by id, stores and counts the rating once. Another account's same key is another
submission (two clients counting their keys from 1 do not collide, and a 409 tells nobody which
keys other users sent). A key never expires: a client offline for days can still retry. A retry
of an accepted submission publishes nothing and returns it marked ``replayed`` (the API's
``Idempotent-Replayed`` header). Rows from before keys were per user have the key itself as event
id (migration shop.0005 copied it into ``idempotency_key``); their retries publish that id.

A rating answered 503 is never stored: when the broker's ack does not come in time, the site
cancels the event id (``core.cancellation``) before it answers, and the workers skip a cancelled
id; if a worker stored it first, the answer is 202 after all. A retry with the same key removes
the cancellation and publishes again; if that fails, however fast, it cancels again (the first
attempt's record may still arrive). The attempts of one key run one at a time (a lock by its
derived event id), so a timed-out attempt cannot cancel what a concurrent one (a double click)
reported as accepted.

Changing a rating is rating again (the newest rating wins); removing it, "not interested" and
taking that back are events of their own (``core.events`` actions), on the same topic, so the worker applies a user's
events in the order they were made.
"""
from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Callable, Iterator

from django.db import IntegrityError, transaction
from django.db.models import Q
from pymongo.errors import PyMongoError

from accounts.models import recommender_id
from core import cancellation, catalog, kafka_io, locking, mongo, rating_history
from core.events import (CONTROL_ACTIONS, INTERESTED_AGAIN, NOT_INTERESTED, RATE, UNRATE, InvalidEvent, RatingEvent,
                         is_event_id, validate)
from shop.models import RatingSubmission

ATTEMPT_LOCK_WAIT_S = 10.0  # an attempt holds the lock for one delivery timeout and a few writes
# The namespace of the event ids derived from (user, key): fixed forever, or a retry after a
# change would publish a new id and a rating the worker already has would count twice.
KEYED_EVENT_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "recsite:rating-idempotency-key")
log = logging.getLogger(__name__)


class RatingRejected(ValueError):
    """The rating is not acceptable (unknown product, bad value); nothing was stored."""


class UnknownProduct(RatingRejected):
    """The catalog has no such product (the API's code ``unknown_product``)."""


class IdempotencyConflict(RatingRejected):
    """This user already used the key for another request: not a retry."""


_USED_FOR = {RATE: "a rating of {}", UNRATE: "removing the rating of {}", NOT_INTERESTED: '"not interested" in {}',
             INTERESTED_AGAIN: '"interested again" in {}'}


def _conflict(earlier: RatingSubmission) -> IdempotencyConflict:
    """The conflict, naming what the key was used for (the user's own request: keys are per user):
    it said "a different rating" for a control action too."""
    used_for = "another request"
    if earlier.action in _USED_FOR:
        used_for += f" ({_USED_FOR[earlier.action].format(earlier.product_id)})"
    return IdempotencyConflict(f"this idempotency key was already used for {used_for}")


def already_charged() -> None:
    """The ``charge`` of a caller that counted its ratings before (onboarding charges all its
    picks at once): nothing more to count."""


def _same(sub: RatingSubmission, user, event: RatingEvent) -> bool:
    return (sub.user_id == user.pk and sub.product_id == event.product_id and sub.rating == event.rating
            and sub.text == event.text and sub.action == event.action)


def keyed_event_id(user_pk: int, idempotency_key: str) -> str:
    """The event id of a user's keyed submission: the same for every retry (even after the site
    lost its row: Kafka may have the event), another for another user's same key, and in the
    event id pattern. A name-based UUID (version 5) never equals a made one (``RatingEvent``'s
    uuid4), and a client cannot choose it, so no key reaches another user's event."""
    return uuid.uuid5(KEYED_EVENT_IDS, f"{user_pk}:{idempotency_key}").hex


def submit_rating(user, product_id: str, rating: int, text: str = "",
                  idempotency_key: str | None = None, *, charge: Callable[[], None]) -> RatingSubmission:
    """Publish one rating for the logged-in user (see :func:`submit_event` for what it raises).

    The event is filed under the account's recommender id (``accounts.models.recommender_id``),
    looked up here rather than by each caller, so no page can file it under another id than the
    one its lists are read by."""
    return submit_event(user, RatingEvent(user_id=recommender_id(user), product_id=str(product_id), rating=rating,
                                          text=text or ""), idempotency_key=idempotency_key, charge=charge)


def submit_control(user, product_id: str, action: str,
                   idempotency_key: str | None = None, *, charge: Callable[[], None]) -> RatingSubmission:
    """Publish "remove my rating" (``unrate``), ``not_interested`` or its undo (``interested_again``)
    for the logged-in user, under its recommender id as :func:`submit_rating` does."""
    if action not in CONTROL_ACTIONS:
        raise RatingRejected(f"unknown action {action}")
    return submit_event(user, RatingEvent(user_id=recommender_id(user), product_id=str(product_id), rating=0,
                                          action=action), idempotency_key=idempotency_key, charge=charge)


def submit_event(user, event: RatingEvent, *, idempotency_key: str | None = None,
                 charge: Callable[[], None]) -> RatingSubmission:
    """Publish one event of the logged-in user.

    Raises RatingRejected (IdempotencyConflict), mongo.StoreUnavailable or kafka_io.PublishError
    (both ``core.breaker.Unavailable``: the site answers 503). A key this user sent before returns
    the earlier submission (``replayed`` if Kafka had it: nothing is sent); if that one was not
    acknowledged, its event (same id) is sent again.

    With ``idempotency_key`` the event's id is replaced by :func:`keyed_event_id`. Without one the
    event id was made by this request, so no earlier or concurrent attempt can carry it; the retry
    checks and the attempt's lock are skipped (two SQL reads and two MongoDB commands of the request).

    ``charge()`` is called once the event is known to be new (no replay of a published key) and
    valid, just before anything changes; it may raise (the rating limit: a 429), and then nothing
    is published. The API and the product page charge ``RATING_RATE`` there
    (``shop.throttles.charge_rating``), so a replay is never charged. Required, so that a new
    caller cannot forget the limit: one that counted before passes :func:`already_charged`.
    """
    if idempotency_key:
        if not is_event_id(idempotency_key):
            raise RatingRejected("invalid idempotency key")
        event = replace(event, event_id=keyed_event_id(user.pk, idempotency_key))
    try:
        validate(event.to_dict())
    except InvalidEvent as exc:
        raise RatingRejected(str(exc)) from None
    submission = _earlier(user, idempotency_key, event) if idempotency_key else None
    if submission is not None and submission.published:
        return _replayed(submission)  # a retry of a submission Kafka already has: nothing to do
    with mongo.fail_fast():
        exists = catalog.product_exists(event.product_id)
    if not exists:
        raise UnknownProduct("unknown product")
    with _one_attempt_at_a_time(event.event_id) if idempotency_key else nullcontext():
        # a concurrent attempt may have finished
        submission = _earlier(user, idempotency_key, event) if idempotency_key else None
        if submission is None:
            submission = RatingSubmission(user=user, recommender_id=event.user_id, product_id=event.product_id,
                                          rating=event.rating, action=event.action, text=event.text,
                                          event_id=event.event_id, idempotency_key=idempotency_key)
        elif submission.published:
            return _replayed(submission)
        else:  # an earlier attempt not acknowledged: sent again under its stored id (a row from before
            # keys were per user has the key itself as its event id, not the derived one)
            event = replace(event, event_id=submission.event_id)
        charge()
        retry = submission.pk is not None
        if retry:  # a retry of a submission answered 503: it may have been cancelled
            _uncancel(event.event_id)
        try:
            kafka_io.publish_event(event)
        except kafka_io.PublishError as exc:
            submission.publish_error = str(exc)[:300]
            _save(submission, user, event)  # before the cancellation: a retry then finds the row
            # A retry cancels again even when this send surely failed (maybe_sent False: the
            # breaker, no broker): it took back the earlier attempt's cancellation, and that
            # attempt's record may still be written by a stalled broker.
            if not (exc.maybe_sent or retry) or _cancelled(event.event_id):
                raise
            log.info("rating %s: not acknowledged but a worker had stored it; accepted", event.event_id)
        submission.published = True
        submission.publish_error = ""
        return _save(submission, user, event)


# What became of a submission, as GET /api/ratings/<id>/ says it (shop.serializers.RatingStatusOut).
# "pending" changes by itself; "not_sent" with a retry under the same key (or, rarely, a late
# delivery the site could not cancel), "dead_letter" with an operator's replay (kafka_workers.dead_letters).
PROCESSED, DEAD_LETTER, NOT_SENT, PENDING = "processed", "dead_letter", "not_sent", "pending"
STATES = (PENDING, PROCESSED, NOT_SENT, DEAD_LETTER)


def processing_state(submission: RatingSubmission) -> tuple[str, str | None]:
    """(state, model version of the list it made) of one submission: the worker's record first
    (a late delivery of an unacknowledged event may still have been processed), then the
    dead-letter mark on the event's claim (``core.cancellation.note_dead_letter``), then whether
    Kafka ever acknowledged it: unacknowledged, it was never sent or was cancelled, and no worker
    will process it until the client retries with the same key."""
    doc = rating_history.get_rating(submission.event_id) or {}
    if doc.get("state") == PROCESSED:
        return PROCESSED, doc.get("model_version")
    if cancellation.dead_lettered(submission.event_id):
        return DEAD_LETTER, None
    return (PENDING if submission.published else NOT_SENT), None


def _earlier(user, idempotency_key: str, event: RatingEvent) -> RatingSubmission | None:
    """This user's earlier submission with this key, if any (a retry); IdempotencyConflict if it
    is not one. Another user's key is not looked at: it is another submission.

    In the same read, a row of anyone else that holds this key's event id: before keys were per
    user, a client's key was its event id, so a row from then can hold the id this (user, key)
    derives to. Published under it, the event would be taken for that one (then the row refused:
    a 500 on every retry); the key is refused instead, before anything is sent."""
    rows = RatingSubmission.objects.filter(Q(user=user, idempotency_key=idempotency_key) | Q(event_id=event.event_id))
    submission = None
    for row in rows[:2]:
        if row.user_id != user.pk or row.idempotency_key != idempotency_key:
            raise IdempotencyConflict("this idempotency key cannot be used (its event id is taken); send another")
        submission = row
    if submission is not None and not _same(submission, user, event):
        raise _conflict(submission)
    return submission


def _replayed(submission: RatingSubmission) -> RatingSubmission:
    """The answer to a retry of an accepted submission, marked so the API can say it was one."""
    submission.replayed = True
    return submission


def _cancelled(event_id: str) -> bool:
    """Cancel a timed-out event; False if a worker stored it first (then it counts: answer 202).

    If MongoDB cannot record the cancellation either, the answer is still 503: a late delivery
    would then be stored, but a worker cannot store it before MongoDB is back, and the shopper's
    retry with the same key is stored once anyway.
    """
    try:
        with mongo.fail_fast():
            return cancellation.cancel(event_id)
    except (mongo.StoreUnavailable, PyMongoError) as exc:
        log.warning("rating %s: ack timed out and the cancellation could not be recorded (%s)", event_id, exc)
        return True


def _uncancel(event_id: str) -> None:
    """Before a retry publishes again; if this fails the retry must not publish (a worker would
    skip it while the shopper heard 202), so any MongoDB error is a 503."""
    try:
        with mongo.fail_fast():
            cancellation.uncancel(event_id)
    except PyMongoError as exc:
        raise mongo.StoreUnavailable(f"could not clear the cancellation: {exc.__class__.__name__}") from exc


@contextmanager
def _one_attempt_at_a_time(event_id: str) -> Iterator[None]:
    """Hold the lock of this key (``locking.named_lock``) around one attempt to publish it."""
    try:
        lock = locking.named_lock(f"rating-submission:{event_id}", wait_s=ATTEMPT_LOCK_WAIT_S)
        lock.__enter__()
    except (PyMongoError, TimeoutError) as exc:
        raise mongo.StoreUnavailable(f"could not take the submission's lock: {exc.__class__.__name__}") from exc
    try:
        yield
    finally:
        try:
            lock.__exit__(None, None, None)
        except PyMongoError as exc:  # the lock goes stale and is taken over after LOCK_STALE_S
            log.warning("could not release the submission lock of %s: %s", event_id, exc)


def _save(submission: RatingSubmission, user, event: RatingEvent) -> RatingSubmission:
    """Save, unless a concurrent retry with the same key saved first (then that row stands). The
    attempt's lock makes that rare: only an attempt whose lock was taken over as stale gets here."""
    try:
        with transaction.atomic():
            submission.save()
        return submission
    except IntegrityError:
        key = submission.idempotency_key
        existing = RatingSubmission.objects.filter(user=user, idempotency_key=key).first() if key else None
        if existing is None:
            raise  # not a row of this key: no retry to join (an event id or database fault)
        if not _same(existing, user, event):
            raise _conflict(existing) from None
        if submission.published and not existing.published:
            existing.published, existing.publish_error = True, ""
            existing.save(update_fields=["published", "publish_error"])
        return existing


__all__ = ["RATE", "UNRATE", "NOT_INTERESTED", "STATES", "IdempotencyConflict", "RatingRejected", "UnknownProduct",
           "already_charged", "keyed_event_id", "processing_state", "submit_rating", "submit_control", "submit_event"]
