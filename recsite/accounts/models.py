"""A site account's link to the recommender's user id."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import models
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

ID_CACHE_SECONDS = 300  # a backstop only: every change through the ORM clears the key at once


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
    reviewer_id = models.CharField(max_length=64, unique=True, null=True, blank=True,
                                   help_text="Reviewer id in the Amazon data this account acts as.")
    onboarded = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.user.username} → {self.recommender_id}"

    @property
    def recommender_id(self) -> str:
        return self.reviewer_id or self.site_id


def _id_key(user_pk) -> str:
    return f"accounts:recommender_id:{user_pk}"


def recommender_id(user) -> str:
    """The id this account's ratings and recommendations are stored under in MongoDB.

    Every page and API call needs it; from the cache it costs a Redis read instead of a query
    on Django's database (a third of a product page's database time under load).
    """
    key = _id_key(user.pk)
    found = cache.get(key)
    if found is None:
        profile, _ = Profile.objects.get_or_create(user=user)
        found = profile.recommender_id
        cache.set(key, found, ID_CACHE_SECONDS)
    return found


def forget_recommender_ids(user_pks) -> None:
    """For changes that bypass signals (``QuerySet.update``)."""
    cache.delete_many([_id_key(pk) for pk in user_pks])


@receiver([post_save, post_delete], sender=Profile)
def _profile_changed(sender, instance: Profile, **kwargs) -> None:
    forget_recommender_ids([instance.user_id])
