"""Prometheus metrics of the site: requests by view and status, and their duration, on /metrics.

A plain view and a middleware on prometheus_client (django-prometheus would also wrap the
database and cache backends; requests are what we watch). gunicorn runs several worker
processes, each with its own counters: with ``PROMETHEUS_MULTIPROC_DIR`` set (bin/services sets
it for ``web`` and empties it at each start) prometheus_client keeps them in files there and
/metrics adds them up, whichever process answers the scrape. Without it (runserver, tests) the
process's own registry is served. Readers: see ``METRICS_TOKEN`` in settings.
"""
from __future__ import annotations

import hmac
import os
import time

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

from recsite.client_address import from_this_host

REQUESTS = Counter("recommender_http_requests", "Requests answered, by view and status", ["view", "status"])
DURATION = Histogram("recommender_http_request_duration_seconds", "Time to answer a request, by view", ["view"],
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


def metrics_middleware(get_response):
    """Outermost, so every answer is counted (throttled, refused, redirected ones too)."""
    def middleware(request):
        started = time.perf_counter()
        response = get_response(request)
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match else "<unmatched>"  # bounded: the URLconf's names
        REQUESTS.labels(view, str(response.status_code)).inc()
        DURATION.labels(view).observe(time.perf_counter() - started)
        return response
    return middleware


def may_read_metrics(request) -> bool:
    """The bearer token when METRICS_TOKEN is set (compared in constant time), else a loopback client."""
    token = settings.METRICS_TOKEN
    if token:
        sent = request.META.get("HTTP_AUTHORIZATION", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())
    return from_this_host(request)


def metrics_view(request):
    if not may_read_metrics(request):
        return HttpResponseForbidden("metrics: send the METRICS_TOKEN bearer token, or scrape from this host\n",
                                     content_type="text/plain")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
