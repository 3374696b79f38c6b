"""Refuse request bodies over ``REQUEST_MAX_BODY_BYTES`` with 413 before anything reads them.

gunicorn sets no limit on bodies, and DRF parses JSON straight from the stream, past
``DATA_UPLOAD_MAX_MEMORY_SIZE``: one anonymous multi-gigabyte POST to ``/api/token/`` held a
worker. Two layers use the same rule:

- ``limit_wsgi`` wraps the WSGI application (``recsite.wsgi``, what gunicorn runs). It answers
  413 from the Content-Length alone and asks gunicorn to close the connection, so the rest of
  the body is never read. A chunked body (no Content-Length) is read up to the limit and handed
  on as an ordinary body with a length, or refused as soon as it passes the limit.
- ``body_limit_middleware`` applies the same check inside Django, for any other WSGI server and
  for the test client. Under ASGI (``recsite/asgi.py``) Django's handler reads the whole body
  before any middleware runs: there the ASGI server's own limit is the one that holds.

Both answer a path under ``/api/`` with the API's error body (``recsite.api_errors``), pages with text.
"""
from __future__ import annotations

import io
import json

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpResponse

MESSAGE = b"Request body too large.\n"


def _refusal(path: str) -> tuple[bytes, str]:
    """(body, content type) of the 413 for ``path``: an app reads every ``/api/`` error as JSON."""
    # Both import DRF, which needs Django set up: recsite.wsgi imports this module before that.
    from recsite import api_errors, apipaths

    if not apipaths.is_api_path(path):
        return MESSAGE, "text/plain; charset=utf-8"
    body = api_errors.error_body("Request body too large.", api_errors.TOO_LARGE)
    return json.dumps(body).encode(), "application/json"


def _over_limit(environ: dict, limit: int) -> bool:
    """True if the body is too large. A chunked body within the limit is buffered and given a
    Content-Length (Django reads only that many bytes: without one it would see no body)."""
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            return int(length) > limit
        except ValueError:
            return False  # Django treats it as no body
    stream = environ.get("wsgi.input")  # None under ASGI: the server has read the body already
    if stream is None or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return False
    data = bytearray()
    while len(data) <= limit:
        part = stream.read(min(65536, limit + 1 - len(data)))
        if not part:
            break
        data += part
    if len(data) > limit:
        return True
    environ["wsgi.input"] = io.BytesIO(bytes(data))
    environ["CONTENT_LENGTH"] = str(len(data))
    return False


def limit_wsgi(app):
    """The WSGI app behind a body-size check (see the module docstring)."""

    def limited(environ, start_response):
        if _over_limit(environ, settings.REQUEST_MAX_BODY_BYTES):
            # gunicorn would read the unread body to keep the connection alive; its Response
            # (start_response's owner) can be told to close instead. Other servers: no-op.
            force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
            if callable(force_close):
                force_close()
            body, content_type = _refusal(environ.get("PATH_INFO", ""))
            start_response("413 Content Too Large", [("Content-Type", content_type),
                                                     ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return limited


def body_limit_middleware(get_response):
    def middleware(request):
        length_before = request.META.get("CONTENT_LENGTH")
        if _over_limit(request.META, settings.REQUEST_MAX_BODY_BYTES):
            body, content_type = _refusal(request.path)
            return HttpResponse(body, status=413, content_type=content_type)
        if request.META.get("CONTENT_LENGTH") != length_before:  # a chunked body, now buffered
            request._stream = LimitedStream(request.META["wsgi.input"], int(request.META["CONTENT_LENGTH"]))
        return get_response(request)

    return middleware
