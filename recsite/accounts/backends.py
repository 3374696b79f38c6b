"""Authentication: Django's own ModelBackend, loading the account's Profile with the user, behind
the shared credential lockout (``accounts.throttle``)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from accounts import throttle
from recsite.client_address import client_address


class ProfileBackend(ModelBackend):
    """Every page and API call needs the account's recommender id (``accounts.models.recommender_id``).

    Django loads the logged-in user on each request; joining the profile into that query makes
    the id free, where a second query or a cache read per request cost more than the rest of a
    cached page.

    Every password check with a request (the site's login, the admin's, ``/api/token/``)
    takes its attempt from the lockout first (counted as failed until the password proves right,
    so concurrent guesses cannot all pass) and resolves it after the check (an attempt past a
    limit may be waiting for it): a refused attempt never reaches the password hasher,
    and ``PermissionDenied`` stops Django from trying any other backend. Checks without a request
    (the shell, management commands) are not network-facing and are not counted.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if request is None or username is None or password is None:
            return super().authenticate(request, username, password, **kwargs)
        username, address = str(username)[:150], client_address(request)
        try:
            with throttle.attempt(username, password, address) as checked:
                user = super().authenticate(request, username, password, **kwargs)
                checked.right = user is not None
        except throttle.Refused as refusal:  # only ever raised before the check
            throttle.mark_refused(request, refusal)
            raise PermissionDenied(refusal.message) from None
        return user

    def get_user(self, user_id):
        users = get_user_model()._default_manager
        try:
            user = users.select_related("profile").get(pk=user_id)
        except users.model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
