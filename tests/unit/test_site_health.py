"""The site's /healthz with production settings: a poll from this host (bin/services, a local
supervisor) reaches the MongoDB check whatever Host it names and over plain HTTP; a load balancer
elsewhere is not redirected to HTTPS; the host check and the redirect stay for everything else."""
from __future__ import annotations

import pytest
from django.test import override_settings

from shop import views

OUTSIDE = "203.0.113.7"
PRODUCTION = dict(DEBUG=False, ALLOWED_HOSTS=["shop.example.com"], SECURE_SSL_REDIRECT=True, TRUSTED_PROXIES=0)


class _Db:
    def command(self, name: str) -> dict:
        assert name == "ping"
        return {"ok": 1.0}


@pytest.fixture(autouse=True)
def mongo_answers(monkeypatch):
    monkeypatch.setattr(views.mongo, "get_db", lambda: _Db())


@override_settings(**PRODUCTION)
def test_a_poll_from_this_host_is_answered_whatever_host_it_names(client):
    for host in ("127.0.0.1:18000", "shop.example.com", "localhost"):
        response = client.get("/healthz", REMOTE_ADDR="127.0.0.1", HTTP_HOST=host)
        assert response.status_code == 200 and response.json() == {"ok": True}, (host, response)
    assert client.get("/healthz", REMOTE_ADDR="::1", HTTP_HOST="[::1]:18000").status_code == 200


@override_settings(**PRODUCTION)
def test_a_load_balancer_polling_over_plain_http_is_not_redirected(client):
    response = client.get("/healthz", REMOTE_ADDR=OUTSIDE, HTTP_HOST="shop.example.com")
    assert response.status_code == 200 and response.json() == {"ok": True}


@override_settings(**PRODUCTION)
def test_the_host_check_and_the_redirect_stay_for_everything_else(client):
    assert client.get("/healthz", REMOTE_ADDR=OUTSIDE, HTTP_HOST="127.0.0.1:18000").status_code == 400
    assert client.get("/", REMOTE_ADDR="127.0.0.1", HTTP_HOST="evil.example").status_code == 400
    assert client.get("/", REMOTE_ADDR="127.0.0.1", HTTP_HOST="shop.example.com").status_code == 301
    with override_settings(TRUSTED_PROXIES=1):  # a proxy on this host: its client is the one that counts
        proxied = client.get("/healthz", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=OUTSIDE,
                             HTTP_HOST="evil.example")
        assert proxied.status_code == 400


@override_settings(**PRODUCTION)
def test_mongodb_down_is_still_a_503_to_the_poll(client, monkeypatch):
    def down():
        raise ConnectionError("refused")

    monkeypatch.setattr(views.mongo, "get_db", down)
    response = client.get("/healthz", REMOTE_ADDR="127.0.0.1", HTTP_HOST="127.0.0.1:18000")
    assert response.status_code == 503 and response.json() == {"ok": False, "error": "ConnectionError"}
