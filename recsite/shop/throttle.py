"""Search throttling: searches per client per period, counted in the shared cache (Redis).

A search reads one index document per word and ranks up to ``MAX_POSTINGS`` ids per word, so
it is the most expensive read a visitor can repeat; DRF's cache-based throttle (the same
machinery as the API's per-user throttle) keeps one client from hogging the site. Signed-in
users are counted by account, visitors by address. The rate is read from Django's settings on
each request (``SEARCH_THROTTLE_RATE``, env ``SEARCH_RATE``).
"""
from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class SearchRateThrottle(SimpleRateThrottle):
    scope = "search"

    def get_rate(self) -> str:
        return settings.SEARCH_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str:
        user = getattr(request, "user", None)
        ident = f"user-{user.pk}" if user is not None and user.is_authenticated \
            else f"addr-{request.META.get('REMOTE_ADDR', '')}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def allow_search(request) -> tuple[bool, float | None]:
    """(allowed?, seconds to wait) for a plain Django view; DRF views list the class instead."""
    throttle = SearchRateThrottle()
    if throttle.allow_request(request, None):
        return True, None
    return False, throttle.wait()
