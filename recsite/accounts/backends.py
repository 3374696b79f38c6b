"""Authentication: Django's own ModelBackend, loading the account's Profile with the user."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend


class ProfileBackend(ModelBackend):
    """Every page and API call needs the account's recommender id (``accounts.models.recommender_id``).

    Django loads the logged-in user on each request; joining the profile into that query makes
    the id free, where a second query or a cache read per request cost more than the rest of a
    cached page.
    """

    def get_user(self, user_id):
        users = get_user_model()._default_manager
        try:
            user = users.select_related("profile").get(pk=user_id)
        except users.model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
