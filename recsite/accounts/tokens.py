"""API tokens (django-rest-knox): one per sign-in, stored hashed, that expire (``API_TOKEN_TTL``),
can be revoked one device or every device at a time, and die with a password change or reset.

DRF's tokens were one per account, handed to every device alike (signing one device out signed out
all of them, and nothing could), kept until the account's next sign-in after expiry (no early
renewal), and stored in plain text: a copy of the database was a key to every account.
"""
from __future__ import annotations

from datetime import timedelta
from hmac import compare_digest

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save
from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework.exceptions import AuthenticationFailed

EXPIRED = "Token has expired; get a new one from /api/token/."
INVALID = "Invalid token."


def token_ttl() -> timedelta:
    """How long a new token works, read at each sign-in (knox's own setting is read once, at import)."""
    return timedelta(seconds=settings.API_TOKEN_TTL)


def expired(token: AuthToken) -> bool:
    return token.expiry is not None and timezone.now() >= token.expiry


def delete_expired() -> int:
    """Delete every account's expired tokens; how many. Celery's sweep (``API_TOKEN_SWEEP_S``,
    kafka_workers.tasks.delete_expired_tokens): until it runs, an expired token still answers "Token
    has expired" (:class:`ExpiringTokenAuthentication`), and a sign-in deletes its account's own."""
    deleted, _ = AuthToken.objects.filter(expiry__lte=timezone.now()).delete()
    return deleted


class ExpiringTokenAuthentication(TokenAuthentication):
    """Knox's token check (``Authorization: Token <key>``), saying when a token has expired.

    Knox deletes an expired token and answers "Invalid token.", which tells an app nothing about
    what to do; this keeps the site's "Token has expired" for as long as the token is in the
    database (``/api/token/`` deletes the account's expired ones at the next sign-in, Celery's sweep
    every account's, :func:`delete_expired`). A header
    that is not UTF-8 is an invalid token here (knox's own check raised a 500 on it)."""

    def authenticate_credentials(self, token: bytes):
        try:
            key = token.decode("utf-8")
        except UnicodeError:
            raise AuthenticationFailed(INVALID) from None
        digest = hash_token(key)
        # knox's lookup: by the key's first characters, then the digest compared in constant time
        for candidate in AuthToken.objects.filter(token_key=key[:CONSTANTS.TOKEN_KEY_LENGTH]).select_related("user"):
            if compare_digest(digest, candidate.digest):
                if expired(candidate):
                    raise AuthenticationFailed(EXPIRED)
                return self.validate_user(candidate)
        raise AuthenticationFailed(INVALID)


class ExpiringTokenScheme(KnoxTokenScheme):
    """drf-spectacular's knox scheme matches knox's class only, not this subclass; named
    ``tokenAuth`` as the schema always called it (generated clients keep their names)."""

    target_class = "accounts.tokens.ExpiringTokenAuthentication"
    name = "tokenAuth"


def _note_password_change(sender, instance, update_fields=None, **kwargs) -> None:
    """Before a user is saved: is the stored password hash about to change? (One query, skipped
    for saves that name their fields without the password, such as a login's ``last_login``.)

    Not when Django re-hashes the same password at a right sign-in (its hasher asks for more
    work, as each feature release does): that save names only the password and comes after
    ``check_password`` cleared the raw one ``set_password`` keeps until the save, and it signed
    every other device out. Any real change goes through ``set_password`` (the pages, a reset,
    the admin, ``changepassword``) or saves more than the password."""
    instance._password_changed = False
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    if update_fields is not None and set(update_fields) == {"password"} and instance._password is None:
        return  # check_password's re-hash
    old = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._password_changed = old is not None and old != instance.password


def _revoke_tokens(sender, instance, **kwargs) -> None:
    if getattr(instance, "_password_changed", False):
        AuthToken.objects.filter(user=instance).delete()
        instance._password_changed = False


def connect_signals() -> None:
    """Any password change (the site's pages, a reset, the admin, ``changepassword``) revokes
    every API token of the account, on every device; Django already ends its other sessions.
    (Deleting the account deletes them too: knox's tokens cascade with the user.)"""
    user_model = get_user_model()
    pre_save.connect(_note_password_change, sender=user_model, dispatch_uid="accounts-note-password-change")
    post_save.connect(_revoke_tokens, sender=user_model, dispatch_uid="accounts-revoke-tokens")
