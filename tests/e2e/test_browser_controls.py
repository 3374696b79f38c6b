"""The shopper controls in Debian's Chromium, against the real stack of tests/e2e/test_browser.py
(gunicorn, a real Kafka worker, the session's pipeline-loaded catalog).

The story: sign up, rate two products, say "not interested" to the first recommendation on the
open "Recommended for you" page (it goes and does not come back after another rating), change
and then remove a rating on the product page, and delete the account with the password.
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import uuid

import pytest

from tests.e2e.test_browser import WAIT_MS, _shot, browser, stack  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.integration]
PASSWORD = "Browser-Controls-Passphrase-47"


def _listed(page) -> list[str]:
    return page.locator("#recs li").evaluate_all("els => els.map(e => e.dataset.product)")


def _reload_until(page, url: str, text: str, tries: int = 120) -> None:
    """Reload a page (no polling script on it) until the worker's change shows; bounded."""
    for _ in range(tries):
        page.goto(url)
        if text in page.locator("#rate").inner_text():
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"{url} never showed {text!r}")


def test_not_interested_remove_rating_and_delete_account(stack, browser, site_catalog):
    from playwright.sync_api import expect

    site, worker, worker_log = stack
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/accounts/signup/")
    username = f"ctl{uuid.uuid4().hex[:8]}"
    page.fill("#id_username", username)
    page.fill("#id_email", f"{username}@example.com")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/welcome/")  # sign-up leads to onboarding; this story skips it
    page.goto("/recommendations/")

    first, second = site_catalog.order("Musical Instruments")[50], site_catalog.order("Musical Instruments")[51]
    other = context.new_page()
    for product in (first, second):
        other.goto(f"/p/{product}/")
        other.check("input[name=rating][value='5']")
        other.click("#submit-rating")
        other.wait_for_url("**/recommendations/")
    status = page.locator("#rec-status")
    expect(status).to_contain_text("Based on your 2 ratings")  # the open page polled the new list

    # "Not interested" on the first card: the list comes back without it
    unwanted = _listed(page)[0]
    card = page.locator(f"#recs li[data-product='{unwanted}']")
    expect(card.locator("form.not-interested button")).to_be_visible()  # also on cards the poll re-rendered
    # readable on the white card (the header's link buttons are white)
    assert card.locator("form.not-interested button").evaluate("b => getComputedStyle(b).color") != "rgb(255, 255, 255)"
    _shot(page, "controls-recommendations")
    card.locator("form.not-interested button").click()
    page.wait_for_url("**/recommendations/")
    expect(page.locator(".msg.success")).to_contain_text("will not recommend that product to you again")
    expect(page.locator(f"#recs li[data-product='{unwanted}']")).to_have_count(0)
    assert _listed(page) and unwanted not in _listed(page)

    # take it back from the header's "Hidden products": the page lists it with its button
    other.click("#nav-hidden")
    other.wait_for_url("**/hidden/")
    hidden = other.locator(f"#hidden li[data-product='{unwanted}']")
    for _ in range(120):  # the worker may not have stored the exclusion yet: the page reads MongoDB
        if hidden.count():
            break
        other.wait_for_timeout(500)
        other.reload()
    _shot(other, "controls-hidden")
    hidden.locator("form.interested-again button").click()
    other.wait_for_url("**/hidden/")
    expect(other.locator(".msg.success")).to_contain_text("may be recommended to you again")
    for _ in range(120):
        if other.locator("#nothing-hidden").count():
            break
        other.wait_for_timeout(500)
        other.reload()
    expect(other.locator("#nothing-hidden")).to_be_visible()

    # change, then remove, the first rating on its product page
    other.goto(f"/p/{first}/")
    expect(other.locator("#rate")).to_contain_text("You rated this 5 ★.")
    other.check("input[name=rating][value='2']")
    other.click("#submit-rating")
    other.wait_for_url("**/recommendations/")
    _reload_until(other, f"/p/{first}/", "You rated this 2 ★.")  # once the worker has it
    _shot(other, "controls-product")
    other.click("#remove-rating button")
    other.wait_for_url(f"**/p/{first}/")
    expect(other.locator(".msg.success")).to_contain_text("Your rating was removed")
    expect(status).to_contain_text("Based on your 1 ratings")  # the open page again, by polling
    expect(page.locator(f"#recs li[data-product='{unwanted}']")).to_have_count(0)
    other.goto(f"/p/{first}/")
    expect(other.locator("#rate")).not_to_contain_text("You rated this")

    # delete the account
    other.click("#nav-delete-account")
    other.wait_for_url("**/accounts/delete/")
    other.fill("#id_password", PASSWORD)
    other.check("#id_confirm")
    _shot(other, "controls-delete-account")
    other.click("#delete-account button[type=submit]")
    expect(other.locator("#account-deleted")).to_be_visible()
    other.goto("/recommendations/")
    other.wait_for_url("**/accounts/login/**")
    context.close()
    assert worker.poll() is None, f"the worker died:\n{worker_log.read_text()[-2000:]}"
