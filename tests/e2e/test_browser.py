"""The site in Debian's Chromium, driven by Playwright, against the real stack: gunicorn started by
bin/services, a real Kafka worker process, the session's MongoDB and Redis, the catalog loaded by
the real pipeline (tests/conftest.py::site_catalog).

The story: sign up, keep "Recommended for you" open, rate three products in another tab, and
watch the open page's list turn personal without a reload. Waiting is Playwright's auto-waiting
with a generous timeout, never a fixed sleep. Screenshots of the main pages go to test-artifacts/.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from bench.site_server import running_site
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 60_000  # generous: the machine is shared with Spark jobs
PASSWORD = "Browser-Test-Passphrase-31"


@pytest.fixture(scope="module")
def stack(site_catalog, tmp_path_factory):
    """gunicorn (bin/services start web) and one Kafka worker process, on the session's data."""
    work = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "DJANGO_CACHE_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
           "DATABASE_URL": f"sqlite:///{work / 'site.sqlite3'}",
           "KAFKA_WORKER_GROUP": f"e2e-workers-{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "INFO"}
    with running_site(env, workers=2, threads=4) as site:
        log = open(work / "worker.log", "w")
        worker = subprocess.Popen([sys.executable, "-m", "kafka_workers.worker"], cwd=ROOT, env=site.env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            yield site, worker, work / "worker.log"
        finally:
            worker.send_signal(signal.SIGTERM)  # the worker finishes its message and leaves the group
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: bin/setup installs Debian's chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_recommendations_update_without_reload(stack, browser, site_catalog):
    from playwright.sync_api import expect

    site, worker, worker_log = stack
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()

    # sign up: lands on "Recommended for you" with popular picks and the onboarding step
    page.goto("/accounts/signup/")
    username = f"e2e{uuid.uuid4().hex[:8]}"
    page.fill("#id_username", username)
    page.fill("#id_email", f"{username}@example.com")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/recommendations/")
    status = page.locator("#rec-status")
    expect(status).to_have_attribute("data-source", "popular")
    expect(page.locator("#onboarding")).to_be_visible()
    before = page.locator("#recs li").evaluate_all("els => els.map(e => e.dataset.product)")
    assert before == site_catalog.order()[:20]

    # watch this page: a reload or navigation would show up here and wipe the marker
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.evaluate("window.__e2eMarker = 'still the same page'")

    # rate three products in another tab of the same session
    rated = [site_catalog.order("Musical Instruments")[i] for i in (40, 41, 42)]
    other = context.new_page()
    for i, product in enumerate(rated):
        other.goto(f"/p/{product}/")
        if i == 0:
            _shot(other, "product")
        other.check("input[name=rating][value='5']")
        other.fill("textarea[name=text]", f"Browser test rating {i + 1}")
        other.click("#submit-rating")
        other.wait_for_url("**/recommendations/")
        expect(other.locator(".msg.success")).to_contain_text("You rated it 5 ★")

    # the open page picks up the worker's list by polling: personal, based on all three ratings
    expect(status).to_have_attribute("data-source", "personal")
    expect(status).to_contain_text("Based on your 3 ratings")
    expect(page.locator("#onboarding")).to_be_hidden()  # onboarding is done once the list is personal
    items = page.locator("#recs li")
    expect(items.first).to_contain_text("because you rated")
    after = items.evaluate_all("els => els.map(e => e.dataset.product)")
    reasons = items.evaluate_all("els => els.map(e => e.textContent)")
    assert navigations == [], f"the page navigated: {navigations}"
    assert page.evaluate("window.__e2eMarker") == "still the same page"
    assert after and after != before and not set(after) & set(rated)
    assert all(any(p in r for p in rated) for r in reasons), reasons  # each reason names a rated product
    _shot(page, "recommendations")

    # the other main pages, for the record
    other.goto("/")
    expect(other.locator("#products li").first).to_be_visible()
    _shot(other, "catalog")
    other.goto("/dashboard/")
    expect(other.locator("#metrics")).to_be_visible()
    expect(other.locator("img.plot").first).to_be_visible()
    assert other.locator("img.plot").evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
    _shot(other, "dashboard")
    context.close()

    anonymous = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    login = anonymous.new_page()
    login.goto("/accounts/login/")
    expect(login.locator("#id_username")).to_be_visible()
    _shot(login, "login")
    anonymous.close()

    assert worker.poll() is None, f"the worker died:\n{worker_log.read_text()[-2000:]}"
    for name in ("catalog", "product", "recommendations", "dashboard", "login"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name
