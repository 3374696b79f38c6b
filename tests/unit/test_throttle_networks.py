"""The rate limits' notion of one client: an IPv4 address, or an IPv6 /64 (what one host is given)."""
from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from recsite.client_address import address_key
from shop.throttles import SearchRateThrottle


def test_an_ipv6_address_counts_as_its_64_and_an_ipv4_one_as_itself():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("198.51.100.7") == "198.51.100.7"
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"  # IPv4 seen through an IPv6 socket
    assert address_key("not an address") == "not an address"


def test_a_visitors_searches_count_per_ipv6_network():
    def key(address: str) -> str:
        request = RequestFactory().get("/search/", REMOTE_ADDR=address)
        request.user = AnonymousUser()
        return SearchRateThrottle().get_cache_key(request, None)

    assert key("2001:db8:1:2::1") == key("2001:db8:1:2::2")
    assert key("2001:db8:1:2::1") != key("2001:db8:1:3::1")


def test_the_api_wide_limit_counts_a_visitor_per_ipv6_network():
    """``API_USER_RATE``: DRF's UserRateThrottle counted each IPv6 address, so one host had 2**64 budgets."""
    from rest_framework.settings import api_settings
    from rest_framework.throttling import UserRateThrottle

    from shop import api

    classes = [*api_settings.DEFAULT_THROTTLE_CLASSES, *api.post_rating.cls.throttle_classes]
    user_rate = [c for c in classes if issubclass(c, UserRateThrottle) and c.scope == "user"]
    assert len(user_rate) == 2, classes

    def key(throttle_class, address: str) -> str:
        request = RequestFactory().get("/api/search/", REMOTE_ADDR=address)
        request.user = AnonymousUser()
        return throttle_class().get_cache_key(request, None)

    for throttle_class in user_rate:
        assert key(throttle_class, "2001:db8:1:2::1") == key(throttle_class, "2001:db8:1:2:ffff::2")
        assert key(throttle_class, "2001:db8:1:2::1") != key(throttle_class, "2001:db8:1:3::1")
        assert key(throttle_class, "::ffff:198.51.100.7") == key(throttle_class, "198.51.100.7")
