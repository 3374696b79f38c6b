"""``/api/token/`` (sign in: a new token per device), ``/api/token/revoke/`` (sign this device out)
and ``/api/token/revoke-all/`` (every device): knox's views (``accounts.tokens``), kept a password
exchange with the site's answer and errors. And the API's other account endpoints:
``/api/account/delete/`` (``accounts.deletion`` behind the password check) and
``/api/account/email/`` (the e-mail page's ``accounts.email_change``).

Kept apart from ``accounts.tokens``: DRF's views import its settings, which import the
authentication class defined there.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from knox.models import AuthToken
from knox.views import LoginView, LogoutAllView, LogoutView
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer  # no model: needs no authtoken app
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response

from accounts import confirmation, deletion, email_change, throttle
from accounts.forms import PendingEmailForm
from accounts.middleware import refusal_response
from accounts.models import PendingEmail
from accounts.tokens import ExpiringTokenAuthentication, token_ttl
from recsite import api_errors
from recsite.api_errors import UNAUTHORIZED, documented, error_body
from recsite.parsers import JSONParser
from shop.serializers import StrictCharField


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
        return super().post(request, format)

    def create_token(self) -> tuple[AuthToken, str]:
        """Knox's new token, made only while the account has room for it (:func:`_refuse_past_the_limit`),
        the count and the insert in one transaction that holds the account's row: sign-ins at once
        count one after another, each seeing the token of the one before."""
        with transaction.atomic():
            _refuse_past_the_limit(self.request.user)
            return super().create_token()

    def get_token_ttl(self) -> timedelta:
        return token_ttl()

    def get_token_limit_per_user(self) -> None:
        return None  # checked in create_token, with the site's error body (knox's is {"error": ...})

    def get_post_response_data(self, request, token: str, instance: AuthToken) -> dict[str, str]:
        return {"token": token, "expires": instance.expiry.isoformat()}


def _refuse_past_the_limit(user) -> None:
    """Inside the transaction that makes the new token: take the account's row, delete its expired
    tokens, then refuse a new one while ``API_TOKEN_LIMIT`` still work, so a script with the password
    cannot fill the table, even with sign-ins at once (which all passed the count before one of them
    made its token).

    The row lock is PostgreSQL's (``SELECT ... FOR UPDATE``); SQLite has none, but the site begins
    its transactions IMMEDIATE (recsite.settings), which takes the database's write lock first, so
    there too the second sign-in counts after the first committed."""
    type(user).objects.select_for_update().values_list("pk", flat=True).get(pk=user.pk)
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


class DeleteAccountIn(serializers.Serializer):  # class names are the OpenAPI components': keep them
    password = StrictCharField(max_length=1024, trim_whitespace=False)


class DeleteAccountOut(serializers.Serializer):
    status = serializers.CharField()
    deleted_at = serializers.DateTimeField()
    counts = serializers.DictField(child=serializers.IntegerField())


class DeleteAccountUnfinishedOut(serializers.Serializer):
    status = serializers.CharField()
    deleted_at = serializers.DateTimeField()
    erasure = serializers.CharField(help_text="'in progress': a few reviews are still being removed")


@extend_schema(request=DeleteAccountIn,
               responses={200: DeleteAccountOut, 202: DeleteAccountUnfinishedOut, **documented({
                   400: "malformed JSON (parse_error) or no password (invalid)", 401: UNAUTHORIZED,
                   403: "a wrong password (wrong_password)",
                   429: "too many wrong passwords (throttled): wait Retry-After seconds",
                   503: "a store is unavailable (unavailable): try again after Retry-After seconds"})},
               description="Delete your account and everything kept about you (ratings, history, lists, "
                           "exclusions); the next model is trained without you. Needs your password. 202: the "
                           "account is deleted, but removing its ratings, reviews and history was interrupted and "
                           "finishes in the background (within about two ERASURE_SWEEP_S periods). 503: a store "
                           "is unavailable (the password check's, or MongoDB part-way: try again).")
@api_view(["POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
def delete_account(request):
    if not isinstance(request.data, dict):
        return Response(error_body("expected a JSON object", api_errors.INVALID), status=400)
    body = DeleteAccountIn(data=request.data)
    body.is_valid(raise_exception=True)
    password = body.validated_data["password"]
    try:  # the password check is a login attempt too: it shares the lockout, counted before the check
        with throttle.own_password_attempt(request, password) as checked:
            checked.right = request.user.check_password(password)
    except throttle.Refused as refusal:  # only ever raised before the check
        return refusal_response(request, refusal)  # with Retry-After, as /api/token/'s refusals
    if not checked.right:
        return Response(error_body("wrong password", api_errors.WRONG_PASSWORD), status=403)
    record = deletion.delete_account(request.user, request=request)
    if deletion.unfinished(record):  # the account is gone; a few reviews are left to Celery's sweep
        return Response({"status": "deleted", "deleted_at": record.deleted_at, "erasure": "in progress"}, status=202)
    return Response({"status": "deleted", "deleted_at": record.deleted_at, "counts": record.counts})


class EmailIn(serializers.Serializer):
    email = StrictCharField(max_length=254, required=False,
                            help_text="the address to confirm, with your password; leave both out to have the "
                                      "waiting address's link sent again")
    password = StrictCharField(max_length=1024, trim_whitespace=False, required=False)


class EmailOut(serializers.Serializer):
    email = serializers.CharField(help_text="the confirmed address, where password resets go ('' if none)")
    pending = serializers.CharField(allow_null=True, help_text="the address waiting for its link to be opened")


class EmailSentOut(EmailOut):
    sent = serializers.BooleanField(help_text="whether the link was mailed now; false: the mailbox's cap or the mail "
                                              "server, ask again later")


def _addresses(user, pending: PendingEmail | None) -> dict:
    return {"email": user.email, "pending": pending.email if pending else None}


@extend_schema(methods=["GET"], request=None, responses={200: EmailOut, **documented({401: UNAUTHORIZED})})
@extend_schema(methods=["POST"], request=EmailIn, responses={202: EmailSentOut, **documented({
                   400: "malformed JSON (parse_error), an invalid address, no password with it, or no address "
                        "given and none waiting (invalid)", 401: UNAUTHORIZED,
                   403: "a wrong password (wrong_password)",
                   429: "too many wrong passwords, or links asked for (throttled): wait Retry-After seconds",
                   503: "a store is unavailable (unavailable): try again after Retry-After seconds"})},
               description="Give the address to confirm, with your password (it is where password resets will "
                           "go): the link that confirms it is mailed there, and opening it, signed in on the site, "
                           "makes it the account's; until then resets go to the confirmed one, which is then told "
                           "of the change. Without an address, the waiting one's link is sent again. Limited as the "
                           "site's e-mail page (EMAIL_CONFIRM_RESENDS_PER_ACCOUNT); a refused one is not counted. "
                           "An address another account has is answered alike (its owner is told instead).")
@api_view(["GET", "POST"])
@parser_classes([JSONParser])
@permission_classes([IsAuthenticated])
def account_email(request):
    """The site's e-mail page (``views.account_email``) for an app: the same ``email_change`` steps."""
    user, pending = request.user, confirmation.pending_of(request.user)
    if request.method == "GET":
        return Response(_addresses(user, pending))
    if not isinstance(request.data, dict):
        return Response(error_body("expected a JSON object", api_errors.INVALID), status=400)
    body = EmailIn(data=request.data)
    body.is_valid(raise_exception=True)
    given = body.validated_data
    form = PendingEmailForm(user, {"email": given["email"], "password": given.get("password", "")}) \
        if "email" in given else None
    if form is None and pending is None:
        return Response(error_body("no address is waiting for confirmation: give one with your password",
                                   api_errors.INVALID), status=400)
    try:
        pending, sent = email_change.send_link(request, form, pending)
    except throttle.Refused as refusal:
        return refusal_response(request, refusal)
    except email_change.FormInvalid:
        if given.get("password") and "password" in form.errors:
            return Response(error_body("wrong password", api_errors.WRONG_PASSWORD), status=403)
        raise serializers.ValidationError({field: list(errors) for field, errors in form.errors.items()}) from None
    return Response({**_addresses(user, pending), "sent": sent}, status=202)


obtain_token = ObtainExpiringToken.as_view()
revoke_token = RevokeToken.as_view()
revoke_all_tokens = RevokeAllTokens.as_view()
