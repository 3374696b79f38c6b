""""Delete my account": the Django account and everything the recommender keeps about it.

Order matters. The recommender id is first recorded as deleted in MongoDB, so a worker drops any
event of the account that it reads from then on (and the training and load jobs leave a linked
reviewer's reviews out). Then the site removes the data itself, so the deletion is complete at
once (and counted for staff) even with no worker running, and right after, its cached product
pages that showed the account's reviews are no longer read (``shop.products.forget_reviews``:
they would be for minutes otherwise), nor, when the erasure changed them, anything that showed
product titles or counts (a linked reviewer's counts, titles and search words: the catalog's
revision, ``core.catalog_revision``). Then a ``delete_account`` event goes to Kafka behind the account's other events (same key, same partition): a rating a worker was
applying at that very moment is removed again when the worker reaches that event. Last, the
Django rows.
The record staff see (``AccountDeletion``) holds when and how much, never who.

A product's or search key's lock lost midway (``core.locking.LeaseLost``: the deletion stalled
past ``LOCK_STALE_S`` and another writer took the lock over) or held by another writer past the
deletion's wait (``core.locking.LockHeld``), or a product a load kept rewriting while the deletion
read it (``core.erasure.LoadContention``), stops the erasure before its next write. That
does not keep the account: what the shopper asked for is decided by the ``deleted_users`` mark
(workers drop the account's events, no list is stored for it, training leaves it out), and every
step of the erasure is re-runnable, so Celery's ``finish_erasures`` ends it after
``ERASURE_SWEEP_S`` as if it had run once (each product document erased is marked until the search
words are unlisted: ``core.erasure._erase_reviews``). The rest goes on: the Django rows
are deleted, the shopper is told that some reviews are still being removed, and the staff record
says the erasure was left to the sweep (``counts["unfinished"]``, the failure's name) until a run
again ends it (``erased_at``, learnt through ``erasure_ref``: :func:`note_ended_erasures`). Asking the
shopper to come back and delete again (a 503) left the account, name and e-mail included, with
whoever did not.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets

import pymongo
from django.contrib.auth import logout
from django.db import transaction
from django.utils import timezone
from pymongo.errors import PyMongoError

from accounts.models import AccountDeletion, Profile, recommender_id
from core import erasure, kafka_io, mongo
from core.events import DELETE_ACCOUNT, RatingEvent
from core.settings import get_settings

log = logging.getLogger(__name__)

UNFINISHED = "unfinished"  # in a staff record's counts: the erasure stopped, left to finish_erasures


def delete_account(user, request=None) -> AccountDeletion:
    """Delete ``user`` everywhere; logs the request's session out. Returns the staff record."""
    from shop import products, recommendations

    rid = recommender_id(user)
    linked = bool(getattr(Profile.objects.filter(user=user).first(), "reviewer_id", None))
    asked_before = not erasure.record_deleted_user(rid)
    recommendations.forget(rid)
    reviewed = erasure.reviewed_products(rid)  # read before the history goes with the rest
    ref = ""
    try:
        counts = erasure.delete_user_data(rid, rerun=asked_before)
    except erasure.INTERRUPTIONS as exc:
        log.warning("account deletion: the erasure stopped (%s); Celery's finish_erasures ends it", exc)
        counts = {UNFINISHED: type(exc).__name__}
        ref = secrets.token_hex(16)  # on the record and the mark: how the record learns the erasure's end
        try:
            erasure.note_unfinished_erasure(rid, ref)
        except PyMongoError as note_exc:  # not worth keeping the account for: the record says "unknown"
            log.warning("account deletion: the erasure's reference not noted (%s); its staff record will "
                        "not learn when it ends", note_exc.__class__.__name__)
            ref = ""
    products.forget_reviews(reviewed)  # after MongoDB changed: the next view reads the reviews again
    # their counts, a title quoting them, search words: delete_user_data made them unread if it (or
    # a run asked before, maybe killed before it could say so) changed any
    try:
        kafka_io.publish_event(RatingEvent(user_id=rid, product_id="", rating=0, action=DELETE_ACCOUNT))
        notified = True
    except kafka_io.PublishError as exc:  # the record above already makes workers drop later events
        log.warning("delete_account event not published (%s); events already in flight may leave data", exc)
        notified = False
    with transaction.atomic():
        counts["site_rating_submissions"] = user.ratings.count()
        left = UNFINISHED in counts
        record = AccountDeletion.objects.create(kind=AccountDeletion.LINKED if linked else AccountDeletion.SITE,
                                                counts=counts, worker_notified=notified,
                                                erased_at=None if left else timezone.now(),
                                                erasure_ref=ref)
        if request is not None:
            logout(request)
        user.delete()  # cascades: profile, rating submissions, API token
    return record


def unfinished(record: AccountDeletion) -> bool:
    """Whether the account's erasure was left to Celery's ``finish_erasures`` (see the module's docstring)."""
    return UNFINISHED in record.counts


def note_ended_erasures(limit: int = 1000) -> int:
    """Note on the staff records of erasures left unfinished when a run again ended them (the
    worker's ``delete_account``, Celery's ``finish_erasures``: neither has Django), read from their
    deleted marks in MongoDB; the reference is cleared then. Called when staff open the records,
    as the pipeline runs' mirror is (``shop.admin.MirroredFromMongoAdmin``), with a web request's
    short deadline; not while the site's breaker is open (``StoreUnavailable``), and never reporting
    to it: a slow staff query must not make shoppers' ratings fail fast. Returns how many ended.
    The newest ``limit`` waiting records: one whose mark is gone (MongoDB reset) waits for ever, and
    those are the old ones."""
    waiting = {r.erasure_ref: r for r in AccountDeletion.objects.filter(erased_at__isnull=True)
               .exclude(erasure_ref="").order_by("-deleted_at")[:limit]}
    if not waiting:
        return 0
    if mongo.BREAKER.is_open:
        raise mongo.StoreUnavailable("MongoDB failed moments ago")
    with pymongo.timeout(get_settings().mongo_request_timeout_ms / 1000):
        ended = erasure.erasures_ended(waiting)
    for ref, at in ended.items():
        record = waiting[ref]
        record.erased_at, record.erasure_ref = dt.datetime.fromtimestamp(at, tz=dt.timezone.utc), ""
        record.save(update_fields=["erased_at", "erasure_ref"])
    return len(ended)
