"""A site account's link to the recommender's user id."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Profile(models.Model):
    """Which recommender user an account is.

    A new account rates as ``site-<pk>``; a demo account is linked to a reviewer of the loaded
    data (``reviewer_id``) so its batch history and recommendations are there from the start.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    reviewer_id = models.CharField(max_length=64, unique=True, null=True, blank=True,
                                   help_text="Reviewer id in the Amazon data this account acts as.")
    onboarded = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.user.username} → {self.recommender_id}"

    @property
    def recommender_id(self) -> str:
        return self.reviewer_id or f"site-{self.user_id}"


def recommender_id(user) -> str:
    """The id this account's ratings and recommendations are stored under in MongoDB."""
    profile, _ = Profile.objects.get_or_create(user=user)
    return profile.recommender_id
