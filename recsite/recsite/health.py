"""``/healthz`` polled from this host is answered before the host check and the HTTPS redirect.

bin/services (and a supervisor or load balancer on the same host) polls
``http://127.0.0.1:<port>/healthz``: plain HTTP, with the loopback address as its Host. With
production settings (``DJANGO_DEBUG=0``) SecurityMiddleware answered that with a 301 to HTTPS, and
CommonMiddleware with 400 (DisallowedHost) unless 127.0.0.1 was in ``DJANGO_ALLOWED_HOSTS``, so
neither ever saw whether MongoDB answers. This middleware, ahead of both, answers such a poll with
the view itself. Only that path and only a client on this host (``recsite.client_address``, the
address after trusted proxies, as /metrics decides): every other request keeps the host check.
A poller elsewhere sends an allowed Host; ``SECURE_REDIRECT_EXEMPT`` spares it the redirect.
"""
from __future__ import annotations

from django.urls import resolve

from recsite.client_address import from_this_host

PATH = "/healthz"


def loopback_health_middleware(get_response):
    def middleware(request):
        if request.path_info == PATH and request.method in ("GET", "HEAD") and from_this_host(request):
            match = resolve(PATH)
            request.resolver_match = match  # /metrics counts it under its view name, as any request
            return match.func(request, *match.args, **match.kwargs)
        return get_response(request)

    return middleware
