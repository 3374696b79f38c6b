"""``/api/token/`` (sign in: a new token per device), ``/api/token/revoke/`` (sign this device out)
and ``/api/token/revoke-all/`` (every device): knox's views (``accounts.tokens``), kept a password
exchange with the site's answer and errors.

Kept apart from ``accounts.tokens``: DRF's views import its settings, which import the
authentication class defined there.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from knox.models import AuthToken
from knox.views import LoginView, LogoutAllView, LogoutView
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer  # no model: needs no authtoken app
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny

from accounts.tokens import ExpiringTokenAuthentication, token_ttl
from recsite import api_errors
from recsite.api_errors import UNAUTHORIZED, documented
from recsite.parsers import JSONParser


class TokenOut(serializers.Serializer):  # knox answers "expiry" (and would add the user): ours as before
    """A token to send as ``Authorization: Token <token>``, valid until ``expires``."""

    token = serializers.CharField()
    expires = serializers.DateTimeField(help_text="when the token stops working; ask for a new one then")


class TokenLimitReached(PermissionDenied):
    """Knox answered its own ``{"error"}`` body here; this goes through the site's error handler."""

    default_detail = ("Too many devices are signed in to this account: sign one out (POST /api/token/revoke/ or "
                      "/api/token/revoke-all/), change the password, or wait until a token expires.")
    default_code = api_errors.TOKEN_LIMIT


@extend_schema(auth=[], request=AuthTokenSerializer, responses={200: TokenOut, **documented({
    400: "malformed JSON (parse_error), a missing field or a wrong username or password (invalid)",
    403: "the account has API_TOKEN_LIMIT live tokens already (token_limit): sign a device out first",
    429: "too many wrong passwords (throttled): wait Retry-After seconds",
    503: "signing in is unavailable for a moment (unavailable): try again after Retry-After seconds"})})
@method_decorator(never_cache, name="dispatch")  # the answer is a credential: no cache may keep it
class ObtainExpiringToken(LoginView):
    """Exchange a username and password for a new API token (one per sign-in: per device), valid
    until ``expires``; ask again for a new one before or after that. Repeated failures are refused
    with 429 for a while."""

    # DRF's password check (as its obtain_auth_token): it passes the shared lockout (accounts.backends).
    parser_classes = (FormParser, MultiPartParser, JSONParser)  # DRF's, with the site's JSON parser
    # Only the password counts (knox's LoginView authenticates with the default classes). A client
    # renewing its token sends the old one, expired or revoked (the default classes answered 401,
    # naming this very endpoint), or a browser its session without a CSRF token (403): none of it
    # may stand between a right password and a token.
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def post(self, request, format=None):
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        request.user = serializer.validated_data["user"]
        _refuse_past_the_limit(request.user)
        return super().post(request, format)

    def get_token_ttl(self) -> timedelta:
        return token_ttl()

    def get_token_limit_per_user(self) -> None:
        return None  # checked in post, with the site's error body (knox's is {"error": ...})

    def get_post_response_data(self, request, token: str, instance: AuthToken) -> dict[str, str]:
        return {"token": token, "expires": instance.expiry.isoformat()}


def _refuse_past_the_limit(user) -> None:
    """Delete the account's expired tokens (nothing else would: a device that never comes back
    leaves one), then refuse a new one while ``API_TOKEN_LIMIT`` still work, so a script with the
    password cannot fill the table. Two sign-ins at once may both pass the count: a bound, not a
    quota."""
    AuthToken.objects.filter(user=user, expiry__lte=timezone.now()).delete()
    if AuthToken.objects.filter(user=user).count() >= settings.API_TOKEN_LIMIT:
        raise TokenLimitReached()


@extend_schema(request=None, responses={204: None, **documented({401: UNAUTHORIZED})})
class RevokeToken(LogoutView):
    """Sign this device out: the token sent with the request stops working at once (the account's
    other tokens keep working). Answers 204."""

    authentication_classes = (ExpiringTokenAuthentication,)


@extend_schema(request=None, responses={204: None, **documented({401: UNAUTHORIZED})})
class RevokeAllTokens(LogoutAllView):
    """Sign every device out: all the account's tokens stop working at once, the one sent too.
    Answers 204."""

    authentication_classes = (ExpiringTokenAuthentication,)


obtain_token = ObtainExpiringToken.as_view()
revoke_token = RevokeToken.as_view()
revoke_all_tokens = RevokeAllTokens.as_view()
