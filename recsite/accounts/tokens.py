"""API tokens that expire (``API_TOKEN_TTL``) and die with a password change or reset.

DRF's tokens live until deleted; a leaked one was a permanent key to the account.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed


def expires_at(token: Token):
    return token.created + timedelta(seconds=settings.API_TOKEN_TTL)


def expired(token: Token) -> bool:
    return timezone.now() >= expires_at(token)


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if expired(token):
            raise AuthenticationFailed("Token has expired; get a new one from /api/token/.")
        return user, token


def _note_password_change(sender, instance, update_fields=None, **kwargs) -> None:
    """Before a user is saved: is the stored password hash about to change? (One query, skipped
    for saves that name their fields without the password, such as a login's ``last_login``.)"""
    instance._password_changed = False
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    old = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._password_changed = old is not None and old != instance.password


def _revoke_tokens(sender, instance, **kwargs) -> None:
    if getattr(instance, "_password_changed", False):
        Token.objects.filter(user=instance).delete()
        instance._password_changed = False


def connect_signals() -> None:
    """Any password change (the site's pages, a reset, the admin, ``changepassword``) revokes the
    account's API token; Django already ends its other sessions."""
    user_model = get_user_model()
    pre_save.connect(_note_password_change, sender=user_model, dispatch_uid="accounts-note-password-change")
    post_save.connect(_revoke_tokens, sender=user_model, dispatch_uid="accounts-revoke-tokens")
