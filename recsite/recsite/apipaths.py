"""Paths under ``/api/`` are answered as an API: without their trailing slash they still reach
their endpoint, an unknown one is a JSON 404, and an unhandled error a JSON 500.

Django's ``APPEND_SLASH`` suits pages, not apps: ``POST /api/ratings`` got an HTML 301 to
``/api/ratings/`` (a client following it resends a GET: 405), or with DEBUG on a 500 (Django refuses
to redirect a POST), and an unknown ``/api/...`` path Django's HTML 404. The routes keep their one
documented spelling (with the slash: the schema and ``reverse`` show it); a request that matches
one only with the slash is routed to it as if sent with it. Pages keep Django's redirect and 404.
"""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from recsite import api_errors

PREFIX = "/api/"
NOT_FOUND = "api_not_found"  # the catch-all route's name (recsite.urls), last of the URLconf


def is_api_path(path: str) -> bool:
    """Whether ``path`` (a request's ``path`` or ``path_info``) belongs to the API: answered for an
    app (errors in the JSON body of ``recsite.api_errors``), not as a page. The one test of it, for
    every middleware and handler that answers both."""
    return path.startswith(PREFIX)


@csrf_exempt  # a POST to an unknown path is a 404, not Django's HTML "CSRF verification failed"
def not_found(request: HttpRequest) -> JsonResponse:
    """Any path under ``/api/`` that no endpoint has: DRF's own 404 answer."""
    return api_errors.json_error("Not found.", api_errors.NOT_FOUND, 404)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's ``handler500`` (with DEBUG off): an app got Django's HTML "Server Error (500)" page
    where every other API answer is the one JSON error body. Pages keep Django's page. Nothing
    about the error is said (it is logged by Django, as before)."""
    if is_api_path(request.path):
        return api_errors.json_error("A server error occurred; it has been logged.", api_errors.SERVER_ERROR, 500)
    return defaults.server_error(request)


def _endpoint(path: str, urlconf: str | None) -> bool:
    """Whether ``path`` reaches an API endpoint (not the catch-all)."""
    try:
        return resolve(path, urlconf).url_name != NOT_FOUND
    except Resolver404:
        return False


def trailing_slash_middleware(get_response):
    """Adds the missing trailing slash to an ``/api/`` path that only matches with it, before the
    URL is resolved (and before CommonMiddleware, which would redirect it)."""
    def middleware(request: HttpRequest):
        path, urlconf = request.path_info, getattr(request, "urlconf", None)
        if is_api_path(path) and not path.endswith("/") and not _endpoint(path, urlconf) \
                and _endpoint(f"{path}/", urlconf):
            request.path_info, request.path = f"{path}/", f"{request.path}/"
        return get_response(request)

    return middleware
