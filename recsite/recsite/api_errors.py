"""The one error body of every ``/api/`` answer: ``{"detail": "<sentence>", "code": "<code>"}``, plus
``"fields": {"<field>": ["<message>", ...]}`` when fields of the request are invalid.

An app had to parse three shapes (DRF's ``{"detail"}``, its per-field lists at the top level and
``{"non_field_errors"}``), and the same mistake had a different shape depending on where it was
sent; no answer carried a code a program could branch on. DRF's errors pass through
:func:`exception_handler` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``); the answers the site builds
itself (the views' 404/409/503, the middlewares' 413/429/503, the API's 404 path) use
:func:`error_body` or :func:`json_error`, so every path gives the same shape.
"""
from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

# The site's own codes; DRF's (parse_error, throttled, not_authenticated, authentication_failed,
# not_found, method_not_allowed, unsupported_media_type, permission_denied) come with its errors.
INVALID = "invalid"  # DRF's code of a ValidationError; the site's own checks of a request use it too
NOT_FOUND = "not_found"
UNKNOWN_PRODUCT = "unknown_product"
IDEMPOTENCY_CONFLICT = "idempotency_conflict"
PRECONDITION_FAILED = "precondition_failed"
WRONG_PASSWORD = "wrong_password"
TOKEN_LIMIT = "token_limit"  # /api/token/: the account has API_TOKEN_LIMIT live tokens already
THROTTLED = "throttled"
UNAVAILABLE = "unavailable"
TOO_LARGE = "too_large"
SERVER_ERROR = "server_error"  # a defect: nothing the client did; a retry may or may not help


class ErrorOut(serializers.Serializer):
    """The body of every error (4xx, 5xx) of the API."""

    detail = serializers.CharField(help_text="what went wrong, in one sentence for a developer")
    code = serializers.CharField(help_text="what went wrong, for a program: README's \"API\" lists them")
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False,
                                   help_text="the request's invalid fields and why (code invalid only)")


UNAUTHORIZED = "no credentials (not_authenticated), or a wrong or expired token (authentication_failed)"


def documented(errors: dict[int, str]) -> dict[int, OpenApiResponse]:
    """``{status: description}`` as the schema's responses, each with the :class:`ErrorOut` body."""
    return {status: OpenApiResponse(ErrorOut, description=text) for status, text in errors.items()}


# What any endpoint may answer besides the statuses its own schema lists (README's "API").
ANY_ENDPOINT = {
    429: "too many requests (API_USER_RATE; throttled): wait Retry-After seconds",
    500: "a defect of the site (server_error), logged",
    503: "a service the site needs is unavailable for a moment (unavailable): retry after Retry-After seconds",
}
RETRY_AFTER = {"schema": {"type": "integer"}, "description": "seconds to wait before trying again"}
ANY_BODY = {413: "the body is over REQUEST_MAX_BODY_BYTES (too_large)"}


def add_any_endpoint_errors(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook: every operation lists :data:`ANY_ENDPOINT` (and one
    with a body :data:`ANY_BODY`), with the error body, unless its own schema says more, and its
    429 and 503 the ``Retry-After`` header; a generated client had no type for them, though every
    endpoint can answer them."""
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            statuses = {**ANY_ENDPOINT, **(ANY_BODY if "requestBody" in operation else {})}
            for status, text in statuses.items():
                operation["responses"].setdefault(str(status), {"description": text, "content": ref})
            for status in ("429", "503"):  # when to retry, which a client acts on
                operation["responses"][status].setdefault("headers", {})["Retry-After"] = RETRY_AFTER
    return result


def error_body(detail: str, code: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The body of every API error; ``fields`` only when some are invalid."""
    body: dict[str, Any] = {"detail": str(detail), "code": code}
    if fields:
        body["fields"] = fields
    return body


def json_error(detail: str, code: str, status: int) -> JsonResponse:
    """:func:`error_body` as a Django response, for the middlewares and the views outside DRF."""
    return JsonResponse(error_body(detail, code), status=status)


def _messages(value: Any) -> list[str]:
    """Every message of one field's errors, flat (a nested serializer's are dicts and lists)."""
    if isinstance(value, dict):
        return [m for v in value.values() for m in _messages(v)]
    if isinstance(value, list):
        return [m for v in value for m in _messages(v)]
    return [str(value)]


def validation_body(detail: Any) -> dict[str, Any]:
    """A ValidationError's errors as the one body: the errors about no field in ``detail``,
    the others in ``fields`` (and summed up in ``detail``, so it always says what is wrong)."""
    if not isinstance(detail, dict):
        return error_body(" ".join(_messages(detail)) or "Invalid input.", INVALID)
    general = _messages(detail.get(api_settings.NON_FIELD_ERRORS_KEY, []))
    fields = {str(name): _messages(value) for name, value in detail.items()
              if name != api_settings.NON_FIELD_ERRORS_KEY}
    summary = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
    return error_body(" ".join(general) or summary or "Invalid input.", INVALID, fields)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler (status, WWW-Authenticate, Retry-After, the rollback), with the one body."""
    if isinstance(exc, Http404):  # what DRF's handler does too, to know the code here
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        response.data = validation_body(exc.detail)
    else:
        code = exc.get_codes()
        response.data = error_body(str(exc.detail), code if isinstance(code, str) else exc.default_code)
    return response
