"""Per-user rate limits on the two things a client can repeat that cost the most: ratings and searches.

Each rating costs a Kafka event, a fold-in and four MongoDB writes, and floods skewed the public
lists; ``RATING_RATE`` (``"30/min"`` by default, DRF's rate syntax) holds for the rating page and
the API together (one counter per user). A search reads one index document per word and ranks up
to ``MAX_POSTINGS`` ids per word; ``SEARCH_THROTTLE_RATE`` (env ``SEARCH_RATE``) counts signed-in
users by account and visitors by address (DRF's ``get_ident``, which honours ``NUM_PROXIES``, the
same trusted-proxy rule as the login lockout). DRF views take the classes in ``throttle_classes``;
plain Django views call ``rating_throttled`` / ``allow_search``. Rates are read from Django's
settings on each request, not from DRF's class-level rates.
"""
from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle


class RatingRateThrottle(UserRateThrottle):
    scope = "rating"

    def get_rate(self) -> str:
        return settings.RATING_RATE

    def get_cache_key(self, request, view) -> str:
        """Counted per shopper (the recommender id), not per database row: SQLite hands a deleted
        account's primary key to the next sign-up, which would inherit the old account's count."""
        from accounts.models import recommender_id

        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return super().get_cache_key(request, view)
        return self.cache_format % {"scope": self.scope, "ident": recommender_id(user)}


class SearchRateThrottle(SimpleRateThrottle):
    scope = "search"

    def get_rate(self) -> str:
        return settings.SEARCH_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str:
        user = getattr(request, "user", None)
        ident = f"user-{user.pk}" if user is not None and user.is_authenticated else f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def rating_throttled(request) -> float | None:
    """For a Django view: None if this rating may go ahead (and count it), else the seconds to wait."""
    throttle = RatingRateThrottle()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0


def allow_search(request) -> tuple[bool, float | None]:
    """(allowed?, seconds to wait) for a plain Django view."""
    throttle = SearchRateThrottle()
    if throttle.allow_request(request, None):
        return True, None
    return False, throttle.wait()
