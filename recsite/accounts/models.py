"""A site account's link to the recommender's user id."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from core.events import MAX_ID_LENGTH


def new_site_id() -> str:
    return f"site-{uuid.uuid4().hex}"


class Profile(models.Model):
    """Which recommender user an account is.

    A new account rates under a random ``site_id``; a demo account is linked to a reviewer of the
    loaded data (``reviewer_id``) so its batch history and recommendations are there from the start.
    The id is random rather than derived from the user's primary key because MongoDB outlives
    Django's database: SQLite hands a deleted user's key to the next sign-up, and a reset or
    second site database starts again at 1, and the new account would then inherit someone else's
    ratings and recommendations.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    site_id = models.CharField(max_length=64, unique=True, default=new_site_id, editable=False,
                               help_text="Id this account's own ratings and recommendations are stored under.")
    reviewer_id = models.CharField(max_length=MAX_ID_LENGTH, unique=True, null=True, blank=True,
                                   help_text="Reviewer id in the Amazon data this account acts as.")

    def __str__(self) -> str:
        return f"{self.user.username} → {self.recommender_id}"

    @property
    def recommender_id(self) -> str:
        return self.reviewer_id or self.site_id


def recommender_id(user) -> str:
    """The id this account's ratings and recommendations are stored under in MongoDB.

    On a request the profile came with the user (``accounts.backends.ProfileBackend``), so this
    is no query; an account without a profile (made in the shell or the admin) gets one here.
    """
    try:
        return user.profile.recommender_id
    except Profile.DoesNotExist:
        profile, _ = Profile.objects.get_or_create(user=user)
        return profile.recommender_id


class AccountDeletion(models.Model):
    """A "Delete my account" that was carried out, for staff: when, and how much was removed.

    Deliberately without personal data: no username, e-mail or recommender id, only the kind of
    account and counts per store (MongoDB collections, Django rows), so staff can see that a
    deletion happened and was complete without the record undoing it. An erasure that stopped
    part-way and was left to a run again holds, until that run ends it, a random reference that
    its deleted mark in MongoDB also holds (the mark holds the pseudonymous id, as it must for the
    workers); ``erased_at`` then says when it ended and the reference goes.
    """

    SITE, LINKED = "site", "linked_reviewer"
    deleted_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=32, choices=[(SITE, "site account"),
                                                     (LINKED, "demo account linked to a reviewer of the data")])
    counts = models.JSONField(default=dict, blank=True, help_text="What was removed, per kind of record.")
    worker_notified = models.BooleanField(default=False, help_text="Kafka acknowledged the delete_account event.")
    erased_at = models.DateTimeField(null=True, blank=True,
                                     help_text="When the erasure ran to its end: at once, or later by a run "
                                               "again (the worker's or Celery's sweep); empty while unfinished.")
    # a random value also on the deleted mark in MongoDB, kept only while the erasure is unfinished:
    # how the record learns when it ended (accounts.deletion.note_ended_erasures), then cleared
    erasure_ref = models.CharField(max_length=32, blank=True, default="", editable=False)

    class Meta:
        ordering = ["-deleted_at"]

    def __str__(self) -> str:
        return f"account deletion {self.pk} at {self.deleted_at:%Y-%m-%d %H:%M}"


# The constraint of one claim per account as each database names it in the IntegrityError's first
# line: PostgreSQL the constraint, SQLite the column it covers (``confirmation.lost_claim_race``).
ONE_CLAIM = "accounts_pendingemail_one_per_account"
ONE_CLAIM_ERRORS = (f'"{ONE_CLAIM}"', "UNIQUE constraint failed: accounts_pendingemail.user_id")


class PendingEmail(models.Model):
    """An e-mail address given at sign-up (or on the e-mail page) that its owner has not confirmed yet.

    Kept apart from ``User.email``, which holds confirmed addresses only: anyone can type anyone's
    address, so an unconfirmed one must neither block its owner's own sign-up (the unique index on
    ``lower(email)``) nor receive that account's password resets. Not unique per address: several
    accounts may claim one; the first to confirm it (``accounts.confirmation``) gets it, and the
    other claims can no longer be confirmed. One claim per account (a constraint, accounts.0013):
    another address given on the account page, or the link sent again, replaces the row
    (``confirmation.new_claim``). A row is never edited, so a link made for one row cannot confirm
    another address, and only the newest link works. Celery's sweep deletes rows older than
    ``EMAIL_CONFIRM_TTL``, whose links have expired.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pending_emails")
    email = models.EmailField(max_length=254)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-pk"]
        constraints = [models.UniqueConstraint(fields=["user"], name=ONE_CLAIM)]

    def __str__(self) -> str:
        return f"{self.email} (unconfirmed, {self.user})"
