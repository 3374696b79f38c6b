"""recsite.bodylimit under an ASGI server (recsite/asgi.py): Django's ASGI handler has read the body
already and its request has no ``wsgi.input``, so the middleware has nothing to limit there."""
from __future__ import annotations

import io

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse

from recsite.bodylimit import body_limit_middleware


def test_a_chunked_request_under_asgi_reaches_the_view():
    scope = {"type": "http", "method": "POST", "path": "/api/token/", "query_string": b"",
             "headers": [(b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")]}
    request = ASGIRequest(scope, io.BytesIO(b"{}"))
    response = body_limit_middleware(lambda r: HttpResponse("reached"))(request)
    assert response.status_code == 200 and response.content == b"reached"
