"""Production settings: secrets and hosts from the environment, ``check --deploy`` clean, and the
real WSGI server (gunicorn, started by bin/services) serving hashed static files with DEBUG off."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import httpx
import pytest

from bench.site_server import running_site
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
                "DJANGO_ALLOWED_HOSTS": "shop.example.com,127.0.0.1", "DJANGO_TRUSTED_PROXIES": "1",
                "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", **extra})
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "recsite" / "manage.py"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean():
    done = _manage(_production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = _production_env()
    del env["DJANGO_SECRET_KEY"]
    done = _manage(env, "check")
    assert done.returncode != 0 and "DJANGO_SECRET_KEY must be set" in done.stderr


def test_production_refuses_to_start_without_a_mail_backend():
    """With DEBUG off, no backend named must stop the site, not "mail" every link into its log."""
    env = _production_env()
    del env["DJANGO_EMAIL_BACKEND"]
    done = _manage(env, "check")
    assert done.returncode != 0 and "DJANGO_EMAIL_BACKEND must be set" in done.stderr


def test_the_smtp_server_and_login_come_from_the_environment():
    env = _production_env(DJANGO_EMAIL_HOST="smtp.example.com", DJANGO_EMAIL_PORT="587",
                          DJANGO_EMAIL_HOST_USER="shop", DJANGO_EMAIL_HOST_PASSWORD="pw", DJANGO_EMAIL_USE_TLS="1",
                          DJANGO_DEFAULT_FROM_EMAIL="shop@example.com")
    done = _manage(env, "shell", "-c", "from django.conf import settings as s; print([s.EMAIL_BACKEND, s.EMAIL_HOST, "
                   "s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_HOST_PASSWORD, s.EMAIL_USE_TLS, s.DEFAULT_FROM_EMAIL])")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(["django.core.mail.backends.smtp.EmailBackend", "smtp.example.com",
                                                        587, "shop", "pw", True, "shop@example.com"])


def test_gunicorn_serves_the_site_with_debug_off(site_catalog, tmp_path):
    env = _production_env(DJANGO_CACHE_PREFIX=f"deploy-test-{secrets.token_hex(4)}",
                          DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}")
    with running_site(env, workers=1, threads=2) as site:
        assert "gunicorn" in site.log() and "Booting worker" in site.log()
        plain = httpx.get(f"{site.url}/", follow_redirects=False)
        assert plain.status_code == 301 and plain.headers["location"] == f"https://127.0.0.1:{site.url.rsplit(':', 1)[1]}/"
        https = {"X-Forwarded-Proto": "https"}  # what the TLS-terminating proxy in front sends
        page = httpx.get(f"{site.url}/", headers=https)
        assert page.status_code == 200 and "max-age=31536000" in page.headers["strict-transport-security"]
        css = re.search(r'href="(/static/shop/site\.[0-9a-f]{12}\.css)"', page.text)
        assert css, "the page does not link the hashed stylesheet"
        static = httpx.get(site.url + css.group(1), headers=https)
        assert static.status_code == 200 and static.headers["content-type"].startswith("text/css")
        assert "immutable" in static.headers["cache-control"]  # whitenoise: hashed names cache forever
        login = httpx.get(f"{site.url}/accounts/login/", headers=https)
        assert "secure" in login.headers["set-cookie"].lower()  # the CSRF cookie only travels over HTTPS
        missing = httpx.get(f"{site.url}/p/NO-SUCH/", headers=https)
        assert missing.status_code == 404 and "Traceback" not in missing.text
        wrong_host = httpx.get(f"{site.url}/", headers={**https, "Host": "evil.example"})
        assert wrong_host.status_code == 400


def test_production_site_started_by_bin_services_answers_its_health_poll_and_takes_no_ones_https_word(tmp_path):
    """DJANGO_DEBUG=0 without 127.0.0.1 in DJANGO_ALLOWED_HOSTS and no trusted proxy: bin/services'
    plain-HTTP /healthz poll was a 400 (start failed after 30 s) or, with 127.0.0.1 allowed, a 301
    counted as healthy; and gunicorn took 127.0.0.1's X-Forwarded-Proto for HTTPS."""
    env = _production_env(DJANGO_ALLOWED_HOSTS="shop.example.com", DJANGO_TRUSTED_PROXIES="0",
                          DJANGO_CACHE_PREFIX=f"deploy-test-{secrets.token_hex(4)}",
                          DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}")
    with running_site(env, workers=1, threads=2) as site:
        health = httpx.get(f"{site.url}/healthz", follow_redirects=False)
        assert health.status_code == 200 and health.json() == {"ok": True}
        said_https = httpx.get(f"{site.url}/", headers={"Host": "shop.example.com", "X-Forwarded-Proto": "https"},
                               follow_redirects=False)
        assert said_https.status_code == 301 and said_https.headers["location"] == "https://shop.example.com/"
        assert httpx.get(f"{site.url}/", follow_redirects=False).status_code == 400  # the host check stays
