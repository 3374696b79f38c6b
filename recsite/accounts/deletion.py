""""Delete my account": the Django account and everything the recommender keeps about it.

Order matters. The recommender id is first recorded as deleted in MongoDB, so a worker drops any
event of the account that it reads from then on (and the training and load jobs leave a linked
reviewer's reviews out). Then the site removes the data itself, so the deletion is complete at
once (and counted for staff) even with no worker running, and right after, its cached product
pages that showed the account's reviews are no longer read (``shop.products.forget_reviews``:
they would be for minutes otherwise), nor, when product documents changed (a linked reviewer's
counts, titles and search words), anything that showed their titles or counts
(``shop.products.forget_catalog``). Then a ``delete_account`` event goes
to Kafka behind the account's other events (same key, same partition): a rating a worker was
applying at that very moment is removed again when the worker reaches that event. Last, the
Django rows.
The record staff see (``AccountDeletion``) holds when and how much, never who.
"""
from __future__ import annotations

import logging

from django.contrib.auth import logout
from django.db import transaction

from accounts.models import AccountDeletion, Profile, recommender_id
from core import kafka_io, rating_history, shopper_controls
from core.events import DELETE_ACCOUNT, RatingEvent

log = logging.getLogger(__name__)


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
    if counts["products"] or counts["search_postings"]:  # their counts, a title quoting them, search words
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
