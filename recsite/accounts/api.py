"""``/api/token/``: DRF's token view with expiring tokens (``accounts.tokens``).

Kept apart from ``accounts.tokens``: DRF's views import its settings, which import the
authentication class defined there.
"""
from __future__ import annotations

from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from accounts.tokens import expired, expires_at
from recsite.api_errors import documented
from recsite.parsers import JSONParser


class TokenOut(serializers.Serializer):  # for the schema: DRF's answer (AuthToken) has no expires
    """A token to send as ``Authorization: Token <token>``, valid until ``expires``."""

    token = serializers.CharField()
    expires = serializers.DateTimeField(help_text="when the token stops working; ask for a new one then")


@extend_schema(auth=[], responses={200: TokenOut, **documented({
    400: "malformed JSON (parse_error), a missing field or a wrong username or password (invalid)",
    429: "too many wrong passwords (throttled): wait Retry-After seconds",
    503: "signing in is unavailable for a moment (unavailable): try again after Retry-After seconds"})})
@method_decorator(never_cache, name="dispatch")  # the answer is a credential: no cache may keep it
class ObtainExpiringToken(ObtainAuthToken):
    """Exchange a username and password for an API token, valid until ``expires``; after that,
    ask again for a new one. Repeated failures are refused with 429 for a while."""

    # DRF's obtain_auth_token; its password check passes the shared lockout (accounts.backends).
    parser_classes = (FormParser, MultiPartParser, JSONParser)  # DRF's, with the site's JSON parser
    # Only the password counts. A client renewing its token sends the old one, expired or revoked
    # (the default classes answered 401, naming this very endpoint), or a browser its session
    # without a CSRF token (403): none of it may stand between a right password and a token.
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        if expired(token):
            token.delete()
            token = Token.objects.create(user=user)
        return Response({"token": token.key, "expires": expires_at(token).isoformat()})


obtain_token = ObtainExpiringToken.as_view()
