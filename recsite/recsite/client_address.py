"""Who the client is: its address behind the trusted proxies, whether it is on this host, and what
the limits count as one client; and the middleware that drops X-Forwarded-* headers no trusted
proxy wrote.

One rule for the whole site: the login lockout (``accounts.throttle``), the shop's rate limits
(``shop.throttles``), ``/metrics`` and ``/healthz`` all ask here, so a client cannot be one address
to one of them and another to the next.
"""
from __future__ import annotations

import ipaddress

from django.conf import settings


def from_trusted_proxy(request) -> bool:
    """Whether this connection may carry X-Forwarded-* headers: ``TRUSTED_PROXIES`` is set and the
    peer (REMOTE_ADDR) lies in ``TRUSTED_PROXY_NETS`` (a Unix socket's empty one counts as loopback).

    The proxy count alone trusted whoever connected: a client reaching gunicorn directly (a
    published port, a proxy bypassed) wrote the rightmost X-Forwarded-For itself, escaping every
    limit, locking others out and reading /metrics as 127.0.0.1."""
    if getattr(settings, "TRUSTED_PROXIES", 0) <= 0:
        return False
    remote = request.META.get("REMOTE_ADDR", "")
    if remote == "":  # gunicorn on a Unix socket: only local processes connect, trusted as loopback is
        remote = "127.0.0.1"
    try:
        peer = ipaddress.ip_address(remote)
    except ValueError:
        return False
    peer = getattr(peer, "ipv4_mapped", None) or peer  # an IPv4 proxy seen through an IPv6 socket
    return any(peer in net for net in settings.TRUSTED_PROXY_NETS)


# Set on the request by ``forwarded_headers_middleware``: its ``from_trusted_proxy`` answer.
TRUSTED_PROXY_DECIDED = "recsite_from_trusted_proxy"


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or from a trusted proxy (``from_trusted_proxy``) with
    ``TRUSTED_PROXIES`` = n the n-th address from the right of X-Forwarded-For (what the outermost
    trusted proxy saw). Entries further left are written by the client and ignored. The same rule
    as DRF's ``NUM_PROXIES`` (whose headers ``forwarded_headers_middleware`` drops likewise).

    Whether the peer is a trusted proxy is what the middleware decided for the request (a request
    called several times per request: the lockout, the throttles); decided here only for a request
    that did not pass through it."""
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = getattr(request, TRUSTED_PROXY_DECIDED, None)
    if not (from_trusted_proxy(request) if trusted is None else trusted):
        return remote
    proxies = settings.TRUSTED_PROXIES
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    return forwarded[-min(proxies, len(forwarded))] if forwarded else remote


def from_this_host(request) -> bool:
    """Whether the client (after trusted proxies, :func:`client_address`) is on this host: who may
    read /metrics without a token and poll /healthz past the host check."""
    try:
        return ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


def address_key(address: str) -> str:
    """What the limits count as one client: an IPv4 address as it is, an IPv6 address as its /64.

    An IPv6 host is given a whole /64 and may use any address in it, so counted per address one
    host would have 2**64 budgets. An IPv4 address seen through an IPv6 socket counts as itself;
    anything that does not parse is counted as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def forwarded_headers_middleware(get_response):
    """Drop every X-Forwarded-* header of a request that did not come from a trusted proxy
    (:func:`from_trusted_proxy`), before anything reads them: Django's HTTPS header
    (``SECURE_PROXY_SSL_HEADER``), DRF's throttles (``NUM_PROXIES``) and :func:`client_address`. A
    client connecting directly would otherwise choose its own address and pass as HTTPS. The
    decision is kept on the request (``TRUSTED_PROXY_DECIDED``) for :func:`client_address`."""
    def middleware(request):
        trusted = from_trusted_proxy(request)
        setattr(request, TRUSTED_PROXY_DECIDED, trusted)
        if not trusted:
            for name in [key for key in request.META if key.startswith("HTTP_X_FORWARDED_")]:
                del request.META[name]
        return get_response(request)

    return middleware
