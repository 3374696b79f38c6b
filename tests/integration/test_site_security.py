"""Abuse of the site's credential and rating endpoints (issue 11, items 1-6), against the real
servers: Redis behind the lockout and the throttles, FerretDB behind the catalog, Kafka behind the
ratings, and gunicorn (bin/services) for the request-size limit.

Every test sends its requests from its own client address, so the per-address counters of one
test (they live in the session's shared cache prefix) never meet another's.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid

import pytest
from django.test.utils import override_settings
from django.utils.html import escape

from core import mongo, rating_history, stored_lists
from core.events import RatingEvent
from realtime_support import rt_catalog  # noqa: F401  (fixture)
from tests.conftest import ROOT
from tests.site_catalog import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

_octet = itertools.count(10)


def _address() -> str:
    """A client address of this test's own (TEST-NET-2)."""
    n = next(_octet)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


def _site_login(client, username: str, password: str, address: str, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address,
                       **extra)


def _token(client, username: str, password: str, address: str, **extra):
    return client.post("/api/token/", {"username": username, "password": password}, REMOTE_ADDR=address, **extra)


def _admin_login(client, username: str, password: str, address: str, **extra):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password,
                                                      "next": "/admin/"}, REMOTE_ADDR=address, **extra)


# --- 1. one lockout for every credential endpoint; tokens expire ----------------------------------

def test_token_endpoint_locks_out_password_guessing(site_cache, client, make_user):
    from django.conf import settings

    user, address = make_user(), _address()
    for _ in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        assert _token(client, user.username, "wrong-guess", address).status_code == 400
    right = _token(client, user.username, PASSWORD, address)
    assert right.status_code == 429, right.content
    assert "token" not in right.json()


_network = itertools.count(1)


def test_guesses_from_one_ipv6_network_count_together(site_cache, client, make_user):
    """An IPv6 client is given a /64 and may use any address in it: its guesses count per /64, not
    per address, and another network still gets in."""
    from django.conf import settings

    user, net = make_user(), f"2001:db8:{next(_network):x}:1"
    for i in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        assert _token(client, user.username, "wrong-guess", f"{net}::{i + 1:x}").status_code == 400
    assert _token(client, user.username, PASSWORD, f"{net}::ffff").status_code == 429
    assert _token(client, user.username, PASSWORD, f"2001:db8:{next(_network):x}:2::1").status_code == 200


def test_every_credential_endpoint_shares_one_lockout(site_cache, client, make_user):
    from django.conf import settings

    user, address = make_user(staff=True), _address()
    tries = [_site_login, _token, _admin_login]
    for i in range(settings.LOGIN_THROTTLE_ATTEMPTS):  # failures spread over the three endpoints
        response = tries[i % 3](client, user.username, f"guess-{i}", address)
        assert response.status_code in (200, 400), response.status_code  # the admin answers 200 + errors
    for attempt in tries:  # now the right password is refused on each of them
        response = attempt(client, user.username, PASSWORD, address)
        assert response.status_code == 429, f"{attempt.__name__}: {response.status_code}"
    assert "_auth_user_id" not in client.session
    # elsewhere the account still works on every endpoint
    assert _token(client, user.username, PASSWORD, _address()).status_code == 200
    assert _admin_login(client, user.username, PASSWORD, _address()).status_code == 302


def test_api_tokens_expire_and_a_new_one_is_issued(site_cache, client, make_user):
    from knox.models import AuthToken

    user, address = make_user(), _address()
    first = _token(client, user.username, PASSWORD, address).json()["token"]
    assert client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {first}").status_code != 401
    _expire(first)
    for _ in range(2):  # says so while the token is kept, not once
        expired = client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {first}")
        assert expired.status_code == 401 and "expired" in expired.json()["detail"], expired.content
    second = _token(client, user.username, PASSWORD, address).json()["token"]
    assert second != first and not AuthToken.objects.filter(token_key=first[:15]).exists()  # the sign-in deleted it
    assert client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {second}").status_code != 401


def _expire(key: str) -> None:
    """The token ``key`` as it is once ``API_TOKEN_TTL`` has passed."""
    from django.utils import timezone
    from knox.models import AuthToken

    assert AuthToken.objects.filter(token_key=key[:15]).update(expiry=timezone.now() - _seconds(1)) == 1


def _seconds(n: int):
    from datetime import timedelta

    return timedelta(seconds=n)


def test_the_token_endpoint_ignores_the_credentials_sent_with_it(site_cache, client, make_user):
    """A client asking for a new token sends its old one, as the schema told generated clients to:
    ``/api/token/`` answered an expired token 401 "get a new one from /api/token/", a revoked one
    401 "Invalid token.", and a session cookie without a CSRF token 403. The password decides."""
    from django.test import Client

    user, address = make_user(), _address()
    old = _token(client, user.username, PASSWORD, address).json()["token"]
    _expire(old)
    renewed = _token(client, user.username, PASSWORD, address, HTTP_AUTHORIZATION=f"Token {old}")
    assert renewed.status_code == 200, renewed.content
    assert renewed.json()["token"] != old
    revoked = "0" * 64  # what a token deleted by a password change looks like: no such key
    assert _token(client, user.username, PASSWORD, address, HTTP_AUTHORIZATION=f"Token {revoked}").status_code == 200
    browser = Client(enforce_csrf_checks=True)  # a signed-in session, no CSRF token
    browser.force_login(user)
    assert _token(browser, user.username, PASSWORD, address).status_code == 200
    assert _token(browser, user.username, "wrong-guess", address).status_code == 400  # still a password check


def test_the_schema_asks_no_credentials_for_a_token(site_cache, client):
    """The schema listed ``/api/token/`` with ``security: [tokenAuth, cookieAuth]``, so generated
    clients sent their old token with the password."""
    schema = json.loads(client.get("/api/schema/?format=json").content)
    operation = schema["paths"]["/api/token/"]["post"]
    assert not [requirement for requirement in operation.get("security", []) if requirement], operation
    assert not [requirement for requirement in schema.get("security", []) if requirement]


def test_a_token_answer_is_described_and_not_stored_by_caches(site_cache, client, make_user):
    """The schema's answer (DRF's ``AuthToken``) lacked the ``expires`` that every answer carries;
    and the answer is a credential, which no browser or proxy cache may keep."""
    schema = json.loads(client.get("/api/schema/?format=json").content)
    answer = schema["paths"]["/api/token/"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"token", "expires"} <= set(schema["components"]["schemas"][answer["$ref"].rsplit("/", 1)[-1]]["properties"])
    user = make_user()
    response = _token(client, user.username, PASSWORD, _address())
    assert response.status_code == 200 and set(response.json()) == {"token", "expires"}
    assert "no-store" in response.get("Cache-Control", ""), response.headers


# --- 2. behind a proxy ----------------------------------------------------------------------------

PROXY = "172.30.255.2"  # the TLS proxy every request comes through, on compose's network "edge"
PROXY_NETS = (ipaddress.ip_network("172.30.255.0/28"),)  # DJANGO_TRUSTED_PROXY_NETS as compose sets it


def test_behind_a_proxy_nobody_locks_out_someone_else(site_cache, client, make_user):
    victim, attacker, real = make_user(), _address(), _address()
    with override_settings(TRUSTED_PROXIES=1, TRUSTED_PROXY_NETS=PROXY_NETS):
        from django.conf import settings

        for i in range(settings.LOGIN_THROTTLE_ATTEMPTS + 2):
            # the attacker also forges an X-Forwarded-For entry; the proxy appends the real address
            forged = f"203.0.113.{i + 1}, {attacker}"
            response = _site_login(client, victim.username, "guess", PROXY, HTTP_X_FORWARDED_FOR=forged)
        assert response.status_code == 429, "forging X-Forwarded-For escaped the lockout"
        ok = _site_login(client, victim.username, PASSWORD, PROXY, HTTP_X_FORWARDED_FOR=real)
        assert ok.status_code == 302, "the victim was locked out by someone else behind the same proxy"


def test_one_password_across_many_usernames_is_limited(site_cache, client, make_user):
    sprayed = f"Spring-{uuid.uuid4().hex[:6]}!"
    with override_settings(LOGIN_THROTTLE_ADDRESS_ATTEMPTS=8, LOGIN_THROTTLE_PASSWORD_ATTEMPTS=6):
        address = _address()
        codes = [_site_login(client, f"nobody-{i}-{uuid.uuid4().hex[:4]}", f"pw-{i}", address).status_code
                 for i in range(10)]
        assert codes[:8] == [400] * 8 and codes[8:] == [429, 429], codes  # one address, many usernames
        target = make_user(password=sprayed)
        codes = [_site_login(client, f"nobody-{i}-{uuid.uuid4().hex[:4]}", sprayed, _address()).status_code
                 for i in range(6)]
        assert codes == [400] * 6, codes
        # the 7th try of that password, from yet another address, is refused before any check
        assert _site_login(client, target.username, sprayed, _address()).status_code == 429


def test_proxy_settings_follow_one_env_var():
    def settings_with(**env: str) -> dict:
        full = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        full.update(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
                    DJANGO_ALLOWED_HOSTS="shop.example.com",
                    DJANGO_EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", **env)
        code = ("import json, django; django.setup(); from django.conf import settings as s; "
                "from rest_framework.settings import api_settings as a; "
                "print(json.dumps([getattr(s, 'SECURE_PROXY_SSL_HEADER', None), a.NUM_PROXIES, "
                "getattr(s, 'TRUSTED_PROXIES', None)]))")
        done = subprocess.run([sys.executable, "-c", code], env={**full, "DJANGO_SETTINGS_MODULE": "recsite.settings",
                                                                  "PYTHONPATH": f"{ROOT / 'recsite'}:{ROOT}"},
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert settings_with() == [None, 0, 0]  # no proxy: X-Forwarded-* are client-made, never trusted
    assert settings_with(DJANGO_TRUSTED_PROXIES="1") == [["HTTP_X_FORWARDED_PROTO", "https"], 1, 1]


# --- 3. Redis down: credential checks fail closed -------------------------------------------------

def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_credential_checks_fail_closed_when_redis_is_down(site_cache, client, make_user):
    from django.conf import settings

    user, address = make_user(), _address()
    dead = f"redis://127.0.0.1:{_dead_port()}/0"
    caches = {name: {**conf, "LOCATION": dead} for name, conf in settings.CACHES.items()}
    with override_settings(CACHES=caches):
        for attempt in (_site_login, _token):
            response = attempt(client, user.username, PASSWORD, address)
            assert response.status_code == 503, f"{attempt.__name__}: {response.status_code}"
        assert "_auth_user_id" not in client.session
    assert _token(client, user.username, PASSWORD, address).status_code == 200  # Redis back: fine again


def test_delete_account_page_says_why_it_refused(site_cache, client, make_user):
    """The password check before a deletion is a credential check: with Redis down it answers 503,
    and the page must say "unavailable", not "too many failed attempts" (nobody failed)."""
    from django.conf import settings
    from django.contrib.auth.models import User

    from accounts.throttle import LockoutUnavailable

    user = make_user()
    client.force_login(user)
    dead = f"redis://127.0.0.1:{_dead_port()}/0"
    with override_settings(CACHES={name: {**conf, "LOCATION": dead} for name, conf in settings.CACHES.items()}):
        response = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}, REMOTE_ADDR=_address())
    page = response.content.decode()
    assert response.status_code == 503 and escape(LockoutUnavailable.message) in page, response.status_code
    assert "Too many failed attempts" not in page
    assert User.objects.filter(pk=user.pk).exists()


def test_the_api_deletion_refusals_say_when_to_retry(site_cache, client, make_user):
    """The API's account deletion answered its lockout 429 and its Redis-down 503 without
    Retry-After, while ``/api/token/`` in the same state sends one: an app cannot tell when to retry."""
    from django.conf import settings

    user, address = make_user(), _address()
    client.force_login(user)

    def delete(password: str):
        return client.post("/api/account/delete/", {"password": password}, content_type="application/json",
                           REMOTE_ADDR=address)

    for i in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        assert delete(f"guess-{i}").status_code == 403
    refused = delete("guess-past-the-limit")
    assert refused.status_code == 429 and "detail" in refused.json(), refused.content
    assert int(refused.get("Retry-After", "0")) > 0, refused.headers
    assert _token(client, user.username, PASSWORD, address).status_code == 429  # the same state there
    dead = f"redis://127.0.0.1:{_dead_port()}/0"
    with override_settings(CACHES={name: {**conf, "LOCATION": dead} for name, conf in settings.CACHES.items()}):
        down = client.post("/api/account/delete/", {"password": PASSWORD}, content_type="application/json",
                           REMOTE_ADDR=_address())
    assert down.status_code == 503 and int(down.get("Retry-After", "0")) > 0, (down.status_code, down.headers)


# --- 4. request size ------------------------------------------------------------------------------

def test_django_refuses_big_bodies_with_413(site_cache, client):
    from django.conf import settings

    limit = getattr(settings, "REQUEST_MAX_BODY_BYTES", 256 * 1024)
    body = json.dumps({"username": "x" * (limit + 10), "password": "y"}).encode()
    big = client.post("/api/token/", data=body, content_type="application/json", REMOTE_ADDR=_address())
    assert big.status_code == 413
    form = client.post("/accounts/login/", {"username": "x" * (limit + 10), "password": "y"},
                       REMOTE_ADDR=_address())
    assert form.status_code == 413


def _raw_exchange(port: int, head: bytes, body_parts, wait_s: float = 5.0) -> tuple[bytes, float]:
    """Send a request head and body parts over a raw socket (stopping early if the server answers);
    return what the server answered and how long it took, without ever finishing a huge body."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        t0 = time.monotonic()
        s.sendall(head)
        s.setblocking(False)
        answer = b""
        for part in body_parts:
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                s.sendall(part)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
        s.setblocking(True)
        s.settimeout(wait_s)
        try:
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer, time.monotonic() - t0


def test_gunicorn_refuses_big_and_chunked_bodies_fast(mongo_db, kafka_topics, redis_url):
    from bench.site_server import running_site

    env = {**os.environ, "DJANGO_CACHE_PREFIX": f"size-test-{secrets.token_hex(4)}", "REQUEST_MAX_BODY_BYTES": "65536"}
    with running_site(env, workers=1, threads=2) as site:
        port = int(site.url.rsplit(":", 1)[1])
        # announces 2 GB, sends 64 KB and waits: the answer must not wait for the rest
        head = (b"POST /api/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2000000000\r\n\r\n")
        answer, took = _raw_exchange(port, head, [b"{" + b" " * 65535])
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"\r\nContent-Type: application/json\r\n" in answer, answer[:300]  # the API's error body
        assert took < 3, took
        # no Content-Length: chunks until the limit is passed, then refused without the last chunk
        head = (b"POST /api/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (8192, b" " * 8192)
        answer, took = _raw_exchange(port, head, [chunk] * 64)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # a small chunked body still works like any other (here: bad credentials, 400)
        small = json.dumps({"username": "nobody", "password": "x"}).encode()
        head = (b"POST /api/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        answer, _ = _raw_exchange(port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small), [])
        assert answer.startswith(b"HTTP/1.1 400"), answer[:300]


def test_dashboard_scrapes_workers_once_for_a_burst_and_names_them_to_staff_only(site_cache, mongo_db, client,
                                                                                 make_user, monkeypatch):
    """The dashboard is public and a scrape waits up to 2 s per worker that does not answer: one
    scrape serves a burst of hits, and the workers' internal URLs are shown to staff only."""
    from django.conf import settings

    from core import freshness
    from shop import dashboard

    hidden, scrapes = "http://10.99.0.7:9410/metrics", []

    def summary(urls=None) -> dict:
        scrapes.append(urls)
        return {"n": 0, "p50_ms": None, "p99_ms": None, "since": None, "workers": 1, "unreachable": [hidden]}

    monkeypatch.setattr(freshness, "summary", summary)
    monkeypatch.setattr(dashboard, "FRESHNESS_CACHE_S", 3600)  # no clock in the test
    own_prefix = {name: {**conf, "KEY_PREFIX": f"{conf.get('KEY_PREFIX', '')}-dash-{uuid.uuid4().hex[:8]}"}
                  for name, conf in settings.CACHES.items()}  # a cold cache, whatever ran before
    with override_settings(CACHES=own_prefix):
        anonymous = [client.get("/dashboard/") for _ in range(2)]
        assert [r.status_code for r in anonymous] == [200, 200]
        assert len(scrapes) == 1, scrapes
        page = anonymous[1].content.decode()
        assert hidden not in page and "10.99.0.7" not in page
        assert "Not answering: 1 worker" in page
        client.force_login(make_user(staff=True))
        staff = client.get("/dashboard/").content.decode()
        assert hidden in staff and len(scrapes) == 1


# --- 5. rating floods and trending ----------------------------------------------------------------

@pytest.fixture
def rating_client(rt_catalog, site_cache, make_user, client):
    user = make_user()
    client.force_login(user)
    return client, user, rt_catalog.products


def test_ratings_per_user_are_rate_limited_across_page_and_api(rating_client):
    client, user, products = rating_client
    with override_settings(RATING_RATE="6/min"):
        codes = []
        for i in range(4):
            codes.append(client.post(f"/p/{products[i]}/rate/", {"rating": "5"}).status_code)
            codes.append(client.post("/api/ratings/", json.dumps({"product_id": products[i], "rating": 4}),
                                     content_type="application/json").status_code)
    assert codes[:6] == [302, 202] * 3, codes
    assert codes[6:] == [429, 429], codes
    from shop.models import RatingSubmission
    assert RatingSubmission.objects.filter(user=user).count() == 6


def test_search_limit_follows_the_shopper_not_a_recycled_primary_key(rt_catalog, site_cache, client):
    """Searches are counted per shopper (the recommender id), like ratings: an account that gets the
    primary key of a deleted one (here given explicitly; a rolled-back test transaction or a reset
    sequence hands it out again) must not inherit that account's count."""
    from django.contrib.auth.models import User

    from accounts.models import Profile

    def account(**fields) -> User:
        user = User.objects.create_user(f"s{uuid.uuid4().hex[:10]}", "", PASSWORD, **fields)
        Profile.objects.create(user=user)
        return user

    with override_settings(SEARCH_RATE="2/min"):
        gone = account()
        client.force_login(gone)
        codes = [client.get("/api/search/", {"q": "guitar"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429], codes
        pk = gone.pk
        gone.delete()
        client.force_login(account(id=pk))
        assert client.get("/api/search/", {"q": "guitar"}).status_code == 200


def test_onboarding_picks_count_against_the_rating_limit(rating_client, ratings_probe):
    """Onboarding publishes one rating per pick, so each pick is charged to ``RATING_RATE``: a POST
    with more picks than the user has left is refused whole (429, nothing published), one that fits
    is published, and its picks then count like any other rating."""
    from shop.models import RatingSubmission

    client, user, products = rating_client
    with override_settings(RATING_RATE="6/min"):
        assert client.post(f"/p/{products[0]}/rate/", {"rating": "5"}).status_code == 302  # 5 left
        mark = ratings_probe.mark()
        refused = client.post("/welcome/", {f"rate_{p}": "4" for p in products[1:7]})  # 6 picks
        assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1, refused.status_code
        assert "Too many ratings" in refused.content.decode()
        assert ratings_probe.count_since(mark) == 0
        assert RatingSubmission.objects.filter(user=user).count() == 1
        accepted = client.post("/welcome/", {f"rate_{p}": "4" for p in products[1:6]})  # 5 picks: they fit
        assert accepted.status_code == 302 and ratings_probe.count_since(mark) == 5
        assert client.post(f"/p/{products[7]}/rate/", {"rating": "5"}).status_code == 429
    assert RatingSubmission.objects.filter(user=user).count() == 6
    with override_settings(RATING_RATE="3/min"):  # more picks than the limit itself: waiting never helps
        over = client.post("/welcome/", {f"rate_{p}": "4" for p in products[8:12]})
        assert over.status_code == 400 and "Retry-After" not in over, over.status_code
        assert "at most 3 products at once" in over.content.decode()
    assert RatingSubmission.objects.filter(user=user).count() == 6


def test_onboarding_failing_part_way_says_which_picks_were_saved(rating_client, monkeypatch):
    """A rating published cannot be taken back: if the broker fails after the first pick, the page
    must not say that none was saved."""
    from core.breaker import Unavailable
    from shop import products as products_cache
    from shop import views

    client, user, products = rating_client
    published = []

    def first_only(user, product_id, stars, *args, **kwargs):
        if published:
            raise Unavailable("the broker went away")
        published.append(product_id)

    monkeypatch.setattr(views, "submit_rating", first_only)
    answer = client.post("/welcome/", {f"rate_{products[0]}": "5", f"rate_{products[1]}": "4"})
    page = answer.content.decode()
    assert answer.status_code == 503 and published == [products[0]]
    assert "Only 1 of your 2 ratings were saved" in page, page
    headline = products_cache.headline(products_cache.summaries([products[0]])[products[0]])
    assert escape(headline) in page


def test_one_account_reposting_five_stars_cannot_top_trending(rt_catalog):
    from kafka_workers.tasks import refresh_trending

    db, p = rt_catalog.db, rt_catalog.products
    db[mongo.RATINGS].delete_many({})
    now = time.time()
    for i in range(30):  # the flood: one account, one product, 30 five-star events
        e = RatingEvent(user_id="flooder", product_id=p[5], rating=5, ts=now - i).to_dict()
        assert rating_history.store_rating(e, db=db)
    for user in ("fan-1", "fan-2"):  # two people liking another product
        assert rating_history.store_rating(RatingEvent(user_id=user, product_id=p[6], rating=5, ts=now - 30).to_dict(), db=db)
    refresh_trending(limit=10)
    trending = stored_lists.get_popular("all", "trending", db=db)
    assert [i["product_id"] for i in trending] == [p[6], p[5]]
    assert trending[1]["score"] == pytest.approx(1.0, abs=0.01)  # counted once


# --- 6. defaults ----------------------------------------------------------------------------------

def test_debug_is_off_unless_set():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    done = subprocess.run([sys.executable, str(ROOT / "recsite" / "manage.py"), "check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "DJANGO_SECRET_KEY must be set" in done.stderr, done.stdout + done.stderr


def test_password_change_and_reset_revoke_api_tokens(site_cache, client, make_user, mailoutbox):
    import re

    user, address = make_user(), _address()
    token = _token(client, user.username, PASSWORD, address).json()["token"]
    client.force_login(user)
    new = "Another-Long-Passphrase-42"
    done = client.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": new,
                                                       "new_password2": new})
    assert done.status_code == 302
    assert client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401

    client.logout()
    token = _token(client, user.username, new, address).json()["token"]
    assert client.post("/accounts/password_reset/", {"email": user.email}, REMOTE_ADDR=address).status_code == 302
    link = re.search(r"/accounts/reset/[^/\s]+/[^/\s]+/", mailoutbox[-1].body).group(0)
    form_url = client.get(link)["Location"]
    reset = "Reset-Passphrase-Works-77"
    assert client.post(form_url, {"new_password1": reset, "new_password2": reset}).status_code == 302
    assert client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401


def test_password_reset_mails_are_throttled(site_cache, client, make_user, mailoutbox):
    """Many addresses asking for one mailbox all get the usual "done" page (a refusal would let them
    lock its owner out), but the mailbox gets at most ``PASSWORD_RESET_MAILS_PER_EMAIL`` mails; one
    address asking for many mailboxes is refused."""
    from django.conf import settings

    user = make_user()
    cap = getattr(settings, "PASSWORD_RESET_MAILS_PER_EMAIL", 10)
    answers = [client.post("/accounts/password_reset/", {"email": user.email}, REMOTE_ADDR=_address())
               for _ in range(cap + 2)]  # many addresses, one victim's mailbox
    done = (302, "/accounts/password_reset/done/")
    assert [(a.status_code, a.get("Location")) for a in answers] == [done] * (cap + 2)
    assert len(mailoutbox) == cap and {tuple(m.to) for m in mailoutbox} == {(user.email,)}
    limit, address = settings.ACCOUNT_THROTTLE_ATTEMPTS, _address()  # one address, many mailboxes
    codes = [client.post("/accounts/password_reset/", {"email": f"{uuid.uuid4().hex[:8]}@example.com"},
                         REMOTE_ADDR=address).status_code for _ in range(limit + 1)]
    assert codes == [302] * limit + [429], codes


def test_reset_requests_for_someone_else_do_not_lock_the_owner_out(site_cache, client, make_user, mailoutbox):
    """Posting the victim's e-mail address from one address uses up that address's requests, not the
    e-mail's: the victim asking from their own address is answered and mailed as usual."""
    from django.conf import settings

    victim, attacker, limit = make_user(), _address(), settings.ACCOUNT_THROTTLE_ATTEMPTS
    codes = [client.post("/accounts/password_reset/", {"email": victim.email}, REMOTE_ADDR=attacker).status_code
             for _ in range(limit + 1)]
    assert codes == [302] * limit + [429], codes
    assert "Too many requests from here" in client.post("/accounts/password_reset/", {"email": victim.email},
                                                        REMOTE_ADDR=attacker).content.decode()
    own = client.post("/accounts/password_reset/", {"email": victim.email}, REMOTE_ADDR=_address())
    assert own.status_code == 302 and own["Location"] == "/accounts/password_reset/done/"
    assert len(mailoutbox) == limit + 1 and mailoutbox[-1].to == [victim.email]


def test_signups_are_throttled_per_address(site_cache, client):
    from django.conf import settings

    address, limit = _address(), getattr(settings, "ACCOUNT_THROTTLE_ATTEMPTS", 5)
    codes = []
    for _ in range(limit + 1):
        name = f"bulk{uuid.uuid4().hex[:8]}"
        codes.append(client.post("/accounts/signup/", {"username": name, "email": f"{name}@example.com",
                                                        "password1": PASSWORD, "password2": PASSWORD},
                                 REMOTE_ADDR=address).status_code)
        client.logout()
    assert codes[:-1] == [302] * limit and codes[-1] == 429, codes


def test_password_change_old_password_guessing_is_locked_out(site_cache, client, make_user):
    """Someone holding a stolen session must not guess the old password freely either."""
    from django.conf import settings

    user, address = make_user(), _address()
    client.force_login(user)
    new = "Another-Long-Passphrase-42"
    for i in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        wrong = client.post("/accounts/password_change/", {"old_password": f"guess-{i}", "new_password1": new,
                                                            "new_password2": new}, REMOTE_ADDR=address)
        assert wrong.status_code == 200 and "incorrectly" in wrong.content.decode()
    right = client.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": new,
                                                        "new_password2": new}, REMOTE_ADDR=address)
    assert right.status_code == 429
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_an_empty_deletion_post_is_a_failed_password_check(site_cache, client, make_user):
    """An empty POST to /accounts/delete/ built an unbound form (``request.POST or None``), which has
    no errors, and counted as a right password: it cleared the (user, address) failures, so a stolen
    session guessed the old password 4 times per empty POST, about 50 times per address, not 5."""
    from django.conf import settings

    user, address = make_user(), _address()
    client.force_login(user)
    new = "Another-Long-Passphrase-42"

    def guess(i: int):
        return client.post("/accounts/password_change/", {"old_password": f"guess-{i}", "new_password1": new,
                                                           "new_password2": new}, REMOTE_ADDR=address)

    for i in range(settings.LOGIN_THROTTLE_ATTEMPTS - 1):
        assert guess(i).status_code == 200
    empty = client.post("/accounts/delete/", b"", content_type="application/x-www-form-urlencoded",
                        REMOTE_ADDR=address)
    assert empty.status_code == 400  # the password is required: a failed check, the limit's last
    assert guess(99).status_code == 429


# --- 4. concurrent attempts: counted before the slow check, not after ------------------------------

# The attempts must overlap while their passwords are hashed: production's hasher, not the tests' MD5.
SLOW_HASH = pytest.mark.production_password_hasher
N_CONCURRENT = 12  # bin/services' gunicorn: WEB_WORKERS=3 x WEB_THREADS=4


def _burst(attempt) -> list:
    """``attempt(i)`` in N_CONCURRENT threads released together; what each returned (or raised)."""
    import threading

    from django.db import connections

    barrier, results = threading.Barrier(N_CONCURRENT), [None] * N_CONCURRENT

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as exc:  # noqa: BLE001 - reported by the caller's assertion
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@SLOW_HASH
@pytest.mark.django_db(transaction=True)
def test_concurrent_guesses_get_no_more_password_checks_than_the_limit(site_cache, make_user):
    """The lockout was read before the password hashing and counted after it: 12 guesses at once
    all reached the password check (limit 5)."""
    from django.conf import settings
    from django.test import Client

    user, address = make_user(), _address()
    codes = _burst(lambda i: Client().post("/accounts/login/", {"username": user.username, "password": f"guess-{i}"},
                                           REMOTE_ADDR=address).status_code)
    limit = settings.LOGIN_THROTTLE_ATTEMPTS
    assert sorted(codes) == [400] * limit + [429] * (N_CONCURRENT - limit), codes
    assert _site_login(Client(), user.username, PASSWORD, _address()).status_code == 302  # elsewhere: fine


def _authenticate(username: str, address: str):
    """Django's ``authenticate`` with a request from ``address``: the backend every login form, the
    admin and ``/api/token/`` go through (``accounts.backends.ProfileBackend``), without a session
    write (concurrent ones lock the test's SQLite). The user, or None."""
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    return authenticate(RequestFactory().post("/accounts/login/", REMOTE_ADDR=address), username=username,
                        password=PASSWORD)


@SLOW_HASH
@pytest.mark.django_db(transaction=True)
def test_concurrent_right_logins_past_the_limit_all_get_in(site_cache, make_user):
    """Every attempt counts as failed until its password proves right: 12 right logins at once for
    one user from one address (limit 5) got 7 refusals, the attempts still being hashed counted
    against them. Over the limit only because of attempts in flight, an attempt waits for them
    (``LOGIN_THROTTLE_WAIT``, made long here so that a slow machine cannot decide the test), as
    many as are in flight: 12 at once past a limit of 6 all get in."""
    user, address = make_user(), _address()
    with override_settings(LOGIN_THROTTLE_WAIT=120, LOGIN_THROTTLE_ATTEMPTS=N_CONCURRENT // 2):
        users = _burst(lambda i: _authenticate(user.username, address))
    assert users == [user] * N_CONCURRENT, users


@SLOW_HASH
@pytest.mark.django_db(transaction=True)
def test_concurrent_right_logins_from_one_address_past_its_limit_all_get_in(site_cache, make_user):
    """The same for the address's count over all usernames (a NAT: many people, one address):
    12 right logins of 3 people at once past an address limit of 6 all get in."""
    people, address = [make_user() for _ in range(3)], _address()
    with override_settings(LOGIN_THROTTLE_WAIT=120, LOGIN_THROTTLE_ADDRESS_ATTEMPTS=N_CONCURRENT // 2):
        users = _burst(lambda i: _authenticate(people[i % 3].username, address))
    assert users == [people[i % 3] for i in range(N_CONCURRENT)], users


def _failed(username: str, address: str, n: int) -> None:
    """``n`` wrong passwords for ``username`` from ``address``, checked and finished."""
    from accounts import throttle

    for _ in range(n):
        with throttle.attempt(username, f"guess-{uuid.uuid4().hex}", address):
            pass  # a check that did not say right: failed


@pytest.fixture
def no_polling(monkeypatch):
    """The lockout's own sleeps (it polls only while it waits, ``accounts.throttle``): in the
    test's own thread they fail, so a test that must not wait fails instead of waiting; in other
    threads they happen as usual and the list holds them. Sleeps of other code (a client library's
    background thread an earlier test started) are neither."""
    import sys
    import threading

    sleeps, sleep = [], time.sleep

    def no_sleep_here(seconds: float) -> None:
        if sys._getframe(1).f_globals.get("__name__") == "accounts.throttle":
            if threading.current_thread() is threading.main_thread():
                raise AssertionError("the lockout waited")
            sleeps.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", no_sleep_here)
    return sleeps


def test_past_finished_failures_a_flood_is_refused_without_waiting(site_cache, no_polling):
    """Past the limit of finished failures every attempt is refused at once, concurrent ones too:
    each attempt was marked in flight before it was counted and unmarked after its refusal gave the
    count back, so a flood's own marks made its attempts wait (up to ~0.9 s each). Mark and count
    are one step now, taken only by an attempt that gets in."""
    from django.conf import settings

    from accounts import throttle

    user, address = f"victim-{uuid.uuid4().hex[:8]}", _address()
    _failed(user, address, settings.LOGIN_THROTTLE_ATTEMPTS)

    def flood(i: int) -> list:
        refusals = []
        for _ in range(20):
            try:
                with throttle.attempt(user, f"flood-{uuid.uuid4().hex}", address):
                    refusals.append("let in")
            except throttle.Refused as refusal:
                refusals.append(type(refusal).__name__)
        return refusals

    assert _burst(flood) == [["Locked"] * 20] * N_CONCURRENT
    assert no_polling == []  # no thread waited


def test_only_as_many_requests_wait_as_attempts_are_in_flight(site_cache, no_polling):
    """One guess in flight at the limit made every other request past it wait: 11 requests held a
    worker each for as long as the guess was hashed (gunicorn has 12). Only as many may wait as
    are in flight (no more could get in), the others are refused at once."""
    import threading

    from django.conf import settings

    from accounts import throttle

    user, address = f"victim-{uuid.uuid4().hex[:8]}", _address()
    _failed(user, address, settings.LOGIN_THROTTLE_ATTEMPTS - 1)
    outcome = []

    def waiter() -> None:
        try:
            with throttle.attempt(user, "waiter", address):
                outcome.append("let in")
        except throttle.Refused as refusal:
            outcome.append(type(refusal).__name__)

    with override_settings(LOGIN_THROTTLE_WAIT=120):
        with throttle.attempt(user, "the last guess", address):  # in flight, then wrong
            thread = threading.Thread(target=waiter)
            thread.start()
            while not no_polling and thread.is_alive():  # until it waits (not the test's own sleep)
                thread.join(0.01)
            with pytest.raises(throttle.Locked):  # no room to wait: refused at once
                with throttle.attempt(user, "one more", address):
                    pass
        thread.join(120)
    assert outcome == ["Locked"]  # the guess in flight failed: the waiter is refused too


def test_a_resolution_in_a_later_window_gives_back_to_its_own(site_cache, monkeypatch):
    """A right password resolved after its count window ended gave its count back to the new
    window, lowering that one's failures: 4 right logins of the attacker's own accounts taken at a
    window's end let 14 guesses in from one address (limit 10). The attempt names the window it was
    counted in, and gives back there."""
    from accounts import throttle

    window, address = [0], _address()
    monkeypatch.setattr(throttle, "_window_id", lambda seconds: window[0])  # the clock's window, moved by hand
    with override_settings(LOGIN_THROTTLE_ADDRESS_ATTEMPTS=10):
        own = [throttle.attempt(f"me-{i}-{uuid.uuid4().hex[:6]}", PASSWORD, address) for i in range(4)]
        taken = [checked.__enter__() for checked in own]
        window[0] = 1  # the window ends with the four in flight
        for i in range(10):
            _failed(f"victim-{i}-{uuid.uuid4().hex[:6]}", address, 1)
        for checked, right in zip(own, taken):
            right.right = True
            checked.__exit__(None, None, None)
        with pytest.raises(throttle.Locked):
            _failed(f"victim-{uuid.uuid4().hex[:6]}", address, 1)


def test_an_attempt_in_flight_expires_on_its_own_however_busy_its_key(site_cache, monkeypatch, no_polling):
    """An attempt in flight was a counter whose expiry (``IN_FLIGHT_TTL``) every attempt on the key
    renewed: one left by a worker killed mid-check stayed in flight as long as the key was busy (a
    NAT address, a sprayed password: the whole window), so at the limit every later attempt was
    made to wait for it instead of being refused. Each attempt now expires ``IN_FLIGHT_TTL`` after
    it got in, by itself."""
    from accounts import throttle

    monkeypatch.setattr(throttle, "IN_FLIGHT_TTL", 2)
    address = _address()
    with override_settings(LOGIN_THROTTLE_ADDRESS_ATTEMPTS=3):
        killed = throttle.attempt(f"killed-{uuid.uuid4().hex[:6]}", "k", address)  # kept: collected, it resolves
        killed.__enter__()  # never resolved: the address's count 1, in flight 1
        until = time.monotonic() + 3 * throttle.IN_FLIGHT_TTL
        while time.monotonic() < until:  # the address stays busy: an attempt in flight at every moment
            with throttle.attempt(f"busy-{uuid.uuid4().hex[:6]}", "b", address) as checked:
                time.sleep(0.2)
                checked.right = True  # gives its count back
        _failed(f"guesser-{uuid.uuid4().hex[:6]}", address, 2)  # the address's count at its limit, 3
        with pytest.raises(throttle.Locked):  # three failures, none in flight: refused, not made to wait
            with throttle.attempt(f"next-{uuid.uuid4().hex[:6]}", "n", address):
                pass


def test_a_killed_waiter_does_not_hold_its_place_while_others_wait(site_cache, monkeypatch):
    """Waiters were a counter that every waiter's poll kept alive: a request killed mid-wait (its
    give-up never sent) stayed counted while anyone else waited on the key, so later requests found
    no room to wait and were refused at once, though they could have got in. Each waiter now
    expires ``WAITER_TTL`` after its own last poll."""
    import threading

    from django.conf import settings

    from accounts import throttle

    class Killed(BaseException):
        pass

    user, address = f"victim-{uuid.uuid4().hex[:8]}", _address()
    _failed(user, address, settings.LOGIN_THROTTLE_ATTEMPTS - 2)
    real_run, real_sleep, killed = throttle._run, time.sleep, []

    def dying_run(script, keys, args):  # the killed request's give-up is never sent
        if script == throttle._GIVE_UP and threading.current_thread().name == "killed":
            return 0
        return real_run(script, keys, args)

    def dying_sleep(seconds):  # the killed request dies in its first wait
        if threading.current_thread().name == "killed":
            killed.append(seconds)
            raise Killed()
        real_sleep(seconds)

    def try_login(name: str, outcome: list) -> None:
        try:
            with throttle.attempt(user, PASSWORD, address) as checked:
                checked.right = True
                outcome.append("let in")
        except throttle.Refused as refusal:
            outcome.append(type(refusal).__name__)
        except Killed:
            outcome.append("killed")

    monkeypatch.setattr(throttle, "_run", dying_run)
    monkeypatch.setattr(throttle.time, "sleep", dying_sleep)
    waiting, late = [], []
    with override_settings(LOGIN_THROTTLE_WAIT=120):
        guesses = [throttle.attempt(user, PASSWORD, address) for _ in range(2)]
        in_flight = [guess.__enter__() for guess in guesses]  # two right logins being checked
        dead = threading.Thread(target=try_login, args=("killed", []), name="killed")
        dead.start()
        dead.join(120)
        assert killed, "the killed request never waited"
        alive = threading.Thread(target=try_login, args=("alive", waiting))
        alive.start()  # waits, polling, beside the dead one's place
        real_sleep(3 * throttle.WAITER_TTL)
        late_one = threading.Thread(target=try_login, args=("late", late))
        late_one.start()  # one place left (two in flight, one live waiter): it waits
        real_sleep(1)
        for guess, checked in zip(guesses, in_flight):
            checked.right = True
            guess.__exit__(None, None, None)
        alive.join(120)
        late_one.join(120)
    assert (waiting, late) == (["let in"], ["let in"])


def _check_password(client, endpoint: str, username: str, password: str, address: str) -> int:
    """One password check at ``endpoint`` (signed in already where it needs it); the status."""
    if endpoint == "login":
        return _site_login(client, username, password, address).status_code
    if endpoint == "token":
        return _token(client, username, password, address).status_code
    if endpoint == "admin":
        return _admin_login(client, username, password, address).status_code
    if endpoint == "password_change":  # the new password is refused (too short): the old one stays
        return client.post("/accounts/password_change/", {"old_password": password, "new_password1": "x",
                                                           "new_password2": "x"}, REMOTE_ADDR=address).status_code
    if endpoint == "delete_page":  # no tick: nothing is deleted whatever the password
        return client.post("/accounts/delete/", {"password": password}, REMOTE_ADDR=address).status_code
    assert endpoint == "delete_api"  # the right password deletes the (empty) account
    return client.post("/api/account/delete/", {"password": password}, content_type="application/json",
                       REMOTE_ADDR=address).status_code


def _counted(username: str, password: str, address: str) -> tuple[list[int], list[int]]:
    """The failures counted and the attempts marked in flight under this check's three keys, in the
    current window (``accounts.throttle``)."""
    from django.core.cache import caches

    from accounts import throttle

    keys = throttle._window_keys(throttle._login_keys(username, password, address))
    redis, now = caches["throttle"].client.get_client(), time.time()
    return ([int(n or 0) for n in redis.mget([count for count, _, _ in keys])],
            [redis.zcount(flight, now, "+inf") for _, flight, _ in keys])


def _in_flight(username: str, password: str, address: str) -> list[int]:
    return _counted(username, password, address)[1]


@pytest.mark.parametrize("endpoint", ["login", "token", "admin", "password_change", "delete_page", "delete_api"])
def test_every_password_check_resolves_its_attempt(site_cache, client, make_user, endpoint):
    """Each attempt is marked in flight until its check resolves it, right or wrong
    (``accounts.throttle``); a check that left its mark would make an attacker at the limit wait
    (``LOGIN_THROTTLE_WAIT``) instead of being refused at once, and hold a worker meanwhile."""
    user, address = make_user(staff=endpoint == "admin"), _address()
    if endpoint in ("password_change", "delete_page", "delete_api"):
        client.force_login(user)
    for password, status in (("wrong-guess", {"login": 400, "token": 400, "admin": 200, "password_change": 200,
                                              "delete_page": 400, "delete_api": 403}),
                             (PASSWORD, {"login": 302, "token": 200, "admin": 302, "password_change": 200,
                                         "delete_page": 400, "delete_api": 200})):
        assert _check_password(client, endpoint, user.username, password, address) == status[endpoint]
        assert _in_flight(user.username, password, address) == [0, 0, 0], password
    assert _counted(user.username, "wrong-guess", address)[0][0] == 0  # the right password cleared the user's count


@pytest.mark.parametrize("endpoint", ["login", "password_change", "delete_page", "delete_api"])
def test_a_password_check_that_raises_resolves_its_attempt(site_cache, make_user, endpoint):
    """A check that raises (here a corrupt stored hash: Django's hasher fails on it) is resolved as
    a failure all the same: the password change and both deletions left their in-flight mark
    behind, making every refusal past the limit wait ``LOGIN_THROTTLE_WAIT`` for up to a minute."""
    from django.test import Client

    user, address = make_user(), _address()
    user.password = "pbkdf2_sha256$not-a-number$salt$hash"
    user.save(update_fields=["password"])
    client = Client(raise_request_exception=False)
    if endpoint != "login":
        client.force_login(user)
    password = f"any-{uuid.uuid4().hex}"  # not PASSWORD: its failure would count against every test's logins
    assert _check_password(client, endpoint, user.username, password, address) == 500
    assert _in_flight(user.username, password, address) == [0, 0, 0]


@SLOW_HASH
@pytest.mark.django_db(transaction=True)
def test_concurrent_api_deletions_get_no_more_password_checks_than_the_limit(site_cache, make_user):
    """The API's account deletion read the lockout before its password check and counted after it,
    as the login did: 12 wrong passwords at once were all checked (limit 5)."""
    from django.conf import settings
    from django.test import Client

    user, address = make_user(), _address()
    signed_in = Client()
    signed_in.force_login(user)  # once: the threads share its session (concurrent logins lock SQLite)

    def delete(i: int) -> int:
        client = Client()
        client.cookies = signed_in.cookies
        return client.post("/api/account/delete/", {"password": f"guess-{i}"}, content_type="application/json",
                           REMOTE_ADDR=address).status_code

    codes = _burst(delete)
    limit = settings.LOGIN_THROTTLE_ATTEMPTS
    assert sorted(codes) == [403] * limit + [429] * (N_CONCURRENT - limit), codes


def _table_locked(error) -> bool:
    """Whether ``error`` (or what it was raised from) is SQLite's "database table is locked"."""
    while isinstance(error, BaseException):
        if "database table is locked" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


@SLOW_HASH
@pytest.mark.django_db(transaction=True)
def test_concurrent_signups_from_one_address_make_no_more_accounts_than_the_limit(site_cache, caplog):
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    address, tag = _address(), uuid.uuid4().hex[:8]

    def signup(i: int) -> int:
        # Not raised: Django's test clients all hear one signal for a view's exception, so one refused
        # with 429 could raise its neighbour's error. The status code is the request's own.
        name = f"burst{tag}{i}"
        return Client(raise_request_exception=False).post(
            "/accounts/signup/", {"username": name, "email": f"{name}@example.com", "password1": PASSWORD,
                                  "password2": PASSWORD}, REMOTE_ADDR=address).status_code

    codes = _burst(signup)
    limit = settings.ACCOUNT_THROTTLE_ATTEMPTS
    assert codes.count(429) == N_CONCURRENT - limit, codes
    # The test database (SQLite in memory, shared cache) does not wait for a lock as a file does: a
    # sign-up writing while another one does may fail there, in its account's insert (a 500) or in the
    # session's save after it (a 400: Django's SessionInterrupted), each logged with its error. It had
    # passed the limit all the same. Every other answer is a 302.
    locked = sorted(r.status_code for r in caplog.records
                    if hasattr(r, "status_code") and r.exc_info and _table_locked(r.exc_info[1]))
    assert sorted(code for code in codes if code not in (302, 429)) == locked, (codes, locked)
    assert User.objects.filter(username__startswith=f"burst{tag}").count() <= limit


def test_failed_sign_ups_and_right_passwords_give_their_count_back(site_cache, client, make_user):
    """Counted first, an attempt is given back when it turns out not to count: a sign-up form with
    errors (no account made), a right password (successes never count against the limits)."""
    from django.conf import settings

    address, limit = _address(), settings.ACCOUNT_THROTTLE_ATTEMPTS
    for _ in range(limit + 2):
        bad = client.post("/accounts/signup/", {"username": f"x{uuid.uuid4().hex[:8]}", "email": "not-an-address",
                                                "password1": PASSWORD, "password2": PASSWORD}, REMOTE_ADDR=address)
        assert bad.status_code == 400
    name = f"ok{uuid.uuid4().hex[:8]}"
    made = client.post("/accounts/signup/", {"username": name, "email": f"{name}@example.com",
                                             "password1": PASSWORD, "password2": PASSWORD}, REMOTE_ADDR=address)
    assert made.status_code == 302
    user, address = make_user(), _address()
    with override_settings(LOGIN_THROTTLE_ADDRESS_ATTEMPTS=3, LOGIN_THROTTLE_PASSWORD_ATTEMPTS=3):
        for _ in range(5):  # more right passwords than either wider limit
            assert _token(client, user.username, PASSWORD, address).status_code == 200


def test_admin_password_change_shares_the_lockout(site_cache, client, make_user):
    """/admin/password_change/ checked the old password in Django's own view, outside the lockout:
    12 wrong guesses were all checked."""
    from django.conf import settings

    user, address = make_user(staff=True), _address()
    client.force_login(user)
    new = "Another-Long-Passphrase-42"

    def change(old: str, address: str):
        return client.post("/admin/password_change/", {"old_password": old, "new_password1": new,
                                                        "new_password2": new}, REMOTE_ADDR=address)

    for i in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        wrong = change(f"guess-{i}", address)
        assert wrong.status_code == 200 and "incorrectly" in wrong.content.decode()
    assert change(PASSWORD, address).status_code == 429
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    done = change(PASSWORD, _address())  # elsewhere the admin's own page still changes it
    assert done.status_code == 302 and done["Location"] == "/admin/password_change/done/"
    user.refresh_from_db()
    assert user.check_password(new)


def test_a_count_outlives_its_window_by_the_longest_wait(site_cache):
    """A count expired its window's length after its first attempt, while attempts of that window
    could still be waiting on it (a waiter keeps its window's keys until its deadline): timed at a
    window's end, every waiter then found the count gone and got in, twice the limit in one
    window (a review's script: 9 wrong guesses hashed with a limit of 5)."""
    from django.conf import settings
    from django.core.cache import caches

    from accounts import throttle

    redis = caches["throttle"].client.get_client()
    with throttle.attempt(f"a-{uuid.uuid4().hex[:6]}", "a", _address()) as checked:
        count = checked.keys[0]
        assert redis.ttl(count) > settings.LOGIN_THROTTLE_WINDOW + settings.LOGIN_THROTTLE_WAIT


def test_a_right_password_clears_the_user_address_count_whatever_the_keys_order(site_cache, monkeypatch):
    """The resolution cleared the first key it was given, the (username, address) count only while
    ``_login_keys`` listed it first; listed otherwise, a right login would clear the address's
    count for everyone behind it. The attempt names the count to clear."""
    from django.core.cache import caches

    from accounts import throttle

    ordered = throttle._login_keys
    monkeypatch.setattr(throttle, "_login_keys", lambda *args: dict(reversed(ordered(*args).items())))
    user, address = f"u-{uuid.uuid4().hex[:6]}", _address()
    _failed(user, address, 2)  # the user's own failures: cleared by a right password, not lowered
    for i in range(3):
        _failed(f"other-{i}-{uuid.uuid4().hex[:6]}", address, 1)  # the address's failures: 5 in all
    with throttle.attempt(user, PASSWORD, address) as checked:
        checked.right = True
    redis = caches["throttle"].client.get_client()
    counts = {key: int(n or 0) for key, n in zip(checked.keys[::2], redis.mget(list(checked.keys[::2])))}
    user_address = next(key for key in counts if throttle._USER_ADDRESS in key)
    assert counts[user_address] == 0
    assert [n for key, n in counts.items() if "cred-a:" in key] == [5]
