"""The rate limits' notion of one client: an IPv4 address, or an IPv6 /64 (what one host is given)."""
from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from accounts.throttle import address_key
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
