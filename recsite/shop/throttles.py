"""Per-user rate limit on ratings, shared by every endpoint that accepts one.

Each rating costs a Kafka event, a fold-in and four MongoDB writes, and floods skewed the public
lists; ``RATING_RATE`` (``"30/min"`` by default, DRF's rate syntax) holds for the rating page and
the API together (one counter per user). DRF views take ``RatingRateThrottle`` in
``throttle_classes``; plain Django views call ``rating_throttled``.
"""
from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import UserRateThrottle


class RatingRateThrottle(UserRateThrottle):
    scope = "rating"

    def get_rate(self) -> str:
        return settings.RATING_RATE  # read per request: settings, not DRF's class-level rates


def rating_throttled(request) -> float | None:
    """For a Django view: None if this rating may go ahead (and count it), else the seconds to wait."""
    throttle = RatingRateThrottle()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0
