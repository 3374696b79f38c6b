"""The site in Debian's Chromium, driven by Playwright, against the real stack: gunicorn started by
bin/services, a real Kafka worker process, the session's MongoDB and Redis, the catalog loaded by
the real pipeline (tests/conftest.py::site_catalog).

The story: an anonymous visitor's home page (popular products with titles and images, or the local
placeholder: the browser is offline but for the site), sign up, rate picks on the onboarding step,
see the first personal list, keep it open, rate two products in another tab, and watch the open
page's list change without a reload. Waiting is Playwright's auto-waiting
with a generous timeout, never a fixed sleep. Screenshots of the main pages go to test-artifacts/.
"""
from __future__ import annotations

import os
import re
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


_ASIN = re.compile(r"^[A-Z0-9]{10}$")


def _offline(context) -> None:
    """Only the site answers: the data's image URLs (Amazon's servers) fail, as they do offline."""
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort("internetdisconnected"))


def _check_cards(page, selector: str) -> list[str]:
    """Each card has a readable title (never a bare id) and an image that shows (or the placeholder)."""
    from playwright.sync_api import expect

    cards = page.locator(f"{selector} li.card")
    expect(cards.first).to_be_visible()
    titles = cards.locator(".title").all_inner_texts()
    assert titles and all(t.strip() and not _ASIN.match(t.strip()) for t in titles), titles
    imgs = page.locator(f"{selector} li.card img.thumb")
    assert imgs.count() == cards.count()
    assert all(v == "lazy" for v in imgs.evaluate_all("els => els.map(e => e.loading)"))
    page.wait_for_function("""sel => [...document.querySelectorAll(sel + " img.thumb")]
        .filter(i => i.getBoundingClientRect().top < innerHeight)
        .every(i => i.complete && i.naturalWidth > 0)""", arg=selector)
    return cards.evaluate_all("els => els.map(e => e.dataset.product)")


def test_storefront_from_a_fresh_sign_up(stack, browser, site_catalog):
    """Anonymous home, sign-up, onboarding, the first list, then a rating changes the open list."""
    from playwright.sync_api import expect

    site, worker, worker_log = stack
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    _offline(context)
    page = context.new_page()

    # an anonymous visitor's home page: popular products with titles and images or placeholders
    page.goto("/")
    popular = _check_cards(page, "#home-popular")
    assert popular == site_catalog.order()[:len(popular)] and len(popular) == 8
    _shot(page, "home")

    # a product whose image URL cannot load (offline) shows the local placeholder instead
    with_image = next(p for p in site_catalog.order("Gift Cards")
                      if "http" in (_product_image(p) or ""))
    page.goto(f"/p/{with_image}/")
    hero = page.locator("#product-image")
    expect(hero).to_have_attribute("src", "/static/shop/placeholder.svg")
    assert hero.evaluate("i => i.complete && i.naturalWidth > 0")
    expect(page.locator("h1")).not_to_have_text(with_image)

    # sign up: lands on the onboarding step
    page.goto("/accounts/signup/")
    username = f"e2e{uuid.uuid4().hex[:8]}"
    page.fill("#id_username", username)
    page.fill("#id_email", f"{username}@example.com")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/welcome/")
    offered = _check_cards(page, "#onboarding-form")
    picks = [site_catalog.order("Gift Cards")[0], site_catalog.order("Musical Instruments")[0],
             site_catalog.order("Musical Instruments")[2]]
    assert set(picks) <= set(offered)
    for product in picks:
        page.select_option(f"select[name='rate_{product}']", "5")
    _shot(page, "onboarding")
    page.click("#onboarding-submit")
    page.wait_for_url("**/recommendations/")
    expect(page.locator(".msg.success")).to_contain_text("You rated 3 products")

    # the first personal list, made from the picks by the real worker, shows up without a reload
    status = page.locator("#rec-status")
    expect(status).to_have_attribute("data-source", "personal")
    expect(status).to_contain_text("Based on your 3 ratings")
    items = page.locator("#recs li.card")
    expect(items.first).to_contain_text("because you rated")
    first = _check_cards(page, "#recs")
    assert first and not set(first) & set(picks)
    _check_reasons(page, set(picks))
    _shot(page, "recommendations-first")

    # watch this page: a reload or navigation would show up here and wipe the marker
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.evaluate("window.__e2eMarker = 'still the same page'")

    # rate two more products in another tab of the same session
    rated = [site_catalog.order("Musical Instruments")[i] for i in (40, 41)]
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

    # the open page picks up the worker's new list by polling: based on all five ratings
    expect(status).to_contain_text("Based on your 5 ratings")
    after = _check_cards(page, "#recs")
    assert navigations == [], f"the page navigated: {navigations}"
    assert page.evaluate("window.__e2eMarker") == "still the same page"
    assert after and after != first and not set(after) & (set(rated) | set(picks))
    _check_reasons(page, set(rated) | set(picks))
    _shot(page, "recommendations")

    # search by a word of a title finds the product: the title's rarest word among the catalog's titles
    words = re.findall(r"[A-Za-z]{4,}", site_catalog.titles[with_image])
    word = min(words, key=lambda w: sum(w.lower() in t.lower() for t in site_catalog.titles.values()))
    other.goto(f"/?q={word}")
    expect(other.locator(f"#products li[data-product='{with_image}']")).to_be_visible()
    _shot(other, "search")

    # the other main pages, for the record
    other.goto("/?page=2")
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
    for name in ("home", "onboarding", "recommendations-first", "catalog", "product", "recommendations",
                 "dashboard", "login"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name


def _check_reasons(page, rated: set[str]) -> None:
    """Every reason links to one of the user's rated products and names it by its title."""
    reasons = page.locator("#recs .reason a").evaluate_all(
        "els => els.map(a => [new URL(a.href).pathname, a.textContent.trim()])")
    assert reasons and len(reasons) == page.locator("#recs li.card").count()
    for path, text in reasons:
        product = path.strip("/").split("/")[-1]
        assert product in rated, (path, rated)
        assert text and product not in text and not _ASIN.match(text), text


def _product_image(product_id: str) -> str | None:
    from core import catalog

    return (catalog.get_product(product_id) or {}).get("image")
