"""The site's /metrics is for the operator's scraper, not the public: a bearer token when
METRICS_TOKEN is set, else clients on this host only (the address after trusted proxies)."""
from __future__ import annotations

from django.test import override_settings

from recsite.metrics import metrics_view


@override_settings(METRICS_TOKEN="", TRUSTED_PROXIES=0)
def test_without_a_token_only_loopback_clients_read_metrics(rf):
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="127.0.0.1")).status_code == 200
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="::1")).status_code == 200
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="203.0.113.7")).status_code == 403
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="")).status_code == 403


@override_settings(METRICS_TOKEN="", TRUSTED_PROXIES=1)
def test_behind_a_proxy_the_forwarded_client_counts_not_the_proxy(rf):
    outside = rf.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert metrics_view(outside).status_code == 403
    spoofed = rf.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.7")
    assert metrics_view(spoofed).status_code == 403
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="127.0.0.1",
                               HTTP_X_FORWARDED_FOR="127.0.0.1")).status_code == 200


@override_settings(METRICS_TOKEN="s3cret-scrape", TRUSTED_PROXIES=0)
def test_with_a_token_the_scraper_must_send_it_from_anywhere(rf):
    good = rf.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-scrape")
    response = metrics_view(good)
    assert response.status_code == 200 and b"recommender_http_requests" in response.content
    for header in ("", "Bearer wrong", "Bearer s3cret-scrape2", "s3cret-scrape"):
        assert metrics_view(rf.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=header)).status_code == 403
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="127.0.0.1")).status_code == 403  # the token rules
