""""Delete my account": the Django account and everything the recommender keeps about it.

Order matters. The recommender id is first recorded as deleted in MongoDB, so a worker drops any
event of the account that it reads from then on (and the training and load jobs leave a linked
reviewer's reviews out). Then the site removes the data itself, so the deletion is complete at
once (and counted for staff) even with no worker running, and right after, its cached product
pages that showed the account's reviews are no longer read (``shop.products.forget_reviews``:
they would be for minutes otherwise), nor anything that showed product titles or counts (a linked
reviewer's counts, titles and search words: ``shop.products.forget_catalog``). Then a ``delete_account`` event goes
to Kafka behind the account's other events (same key, same partition): a rating a worker was
applying at that very moment is removed again when the worker reaches that event. Last, the
Django rows.
The record staff see (``AccountDeletion``) holds when and how much, never who.

A product's or search key's lock lost midway (``core.locking.LeaseLost``: the deletion stalled
past ``LOCK_STALE_S`` and another writer took the lock over) or held by another writer past the
deletion's wait (``core.locking.LockHeld``), or a product a load kept rewriting while the deletion
read it (``core.shopper_controls.LoadContention``), stops the erasure before its next write. That
is a temporary failure, not an error of the site (``delete_or_interrupted``: 503): the Django
account is still there, signed in; already done are the ``deleted_users`` mark (workers drop the
account's events, no list is stored for it, training leaves it out), the cached list, and the
reviews of the products erased before the lost one. Every step is re-runnable, so the next
deletion finishes what this one began, as if it had run once (each product document erased is
marked until the search words are unlisted: ``core.shopper_controls._erase_reviews``). Left
alone, Celery's ``finish_erasures`` finishes the MongoDB part after ``ERASURE_SWEEP_S``; the Django
account stays until its owner deletes again.
"""
from __future__ import annotations

import logging

from django.contrib.auth import logout
from django.db import transaction

from accounts.models import AccountDeletion, Profile, recommender_id
from core import kafka_io, rating_history, shopper_controls
from core.events import DELETE_ACCOUNT, RatingEvent

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # the lock's new holder is done well before (one product's or key's rewrite)
INTERRUPTED = ("Deleting your account did not finish: it was interrupted part-way. Your account still exists "
               "and you are still signed in, but some of your data may already be gone: your recommendations "
               "are no longer updated and some of your reviews may already be removed. Please try again in a "
               "moment: deleting again finishes it.")


def delete_account(user, request=None) -> AccountDeletion:
    """Delete ``user`` everywhere; logs the request's session out. Returns the staff record."""
    from shop import products, recommendations

    rid = recommender_id(user)
    linked = bool(getattr(Profile.objects.filter(user=user).first(), "reviewer_id", None))
    rating_history.record_deleted_user(rid)
    recommendations.forget(rid)
    reviewed = shopper_controls.reviewed_products(rid)  # read before the history goes with the rest
    counts = shopper_controls.delete_user_data(rid)
    products.forget_reviews(reviewed)  # after MongoDB changed: the next view reads the reviews again
    # their counts, a title quoting them, search words: always, as a run stopped earlier (killed
    # past its last write) may have changed what this one finds unchanged; deletions are rare
    products.forget_catalog()
    try:
        kafka_io.publish_rating(RatingEvent(user_id=rid, product_id="", rating=0, action=DELETE_ACCOUNT))
        notified = True
    except kafka_io.PublishError as exc:  # the record above already makes workers drop later events
        log.warning("delete_account event not published (%s); events already in flight may leave data", exc)
        notified = False
    with transaction.atomic():
        counts["site_rating_submissions"] = user.ratings.count()
        record = AccountDeletion.objects.create(kind=AccountDeletion.LINKED if linked else AccountDeletion.SITE,
                                                counts=counts, worker_notified=notified)
        if request is not None:
            logout(request)
        user.delete()  # cascades: profile, rating submissions, API token
    return record


def delete_or_interrupted(user, request=None) -> AccountDeletion | None:
    """``delete_account``, or None (logged as a warning) when it lost a lock, waited too long for
    one or met a load midway and stopped: the caller answers 503 with ``INTERRUPTED`` and
    ``RETRY_AFTER_S``, the account is still there and a new deletion finishes it (see the module's
    docstring)."""
    try:
        return delete_account(user, request=request)
    except shopper_controls.INTERRUPTIONS as exc:
        log.warning("account deletion interrupted (%s); the account is still there, deleting it again finishes it",
                    exc)
        return None
