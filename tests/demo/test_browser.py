"""The account pages in a real browser: Debian's Chromium driven by Playwright.

``server.py`` runs as a real process (SQLite store in a temporary data directory,
bcrypt at its cheapest cost); Chromium is the system one (``executable_path``), never
a browser downloaded by ``playwright install``. Without Chromium or Playwright these
tests skip with the reason, unless ``REQUIRE_BROWSER=1`` (CI), which makes that a
failure. Screenshots of each page go to ``test-artifacts/screenshots/`` (git-ignored).

The fixtures (``browser``, ``live_server``, ``new_page``) and the form helpers are in
tests/fixtures/browser.py. The sync API runs in plain test functions (no event loop of pytest-tornado's is
running there); the server is a subprocess, so nothing else needs the loop.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.api import PASSWORD
from tests.fixtures.browser import log_in, register, shot

pytestmark = pytest.mark.browser


def flashes(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("p.flash").all_inner_texts()]


def path_of(page: Any) -> str:
    parts = urlsplit(page.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_register_login_flash_cookie_and_logout(new_page):
    page = new_page()
    page.goto("/register")
    shot(page, "01-register")
    page.fill("#email", "not an address")
    page.fill("#name", "Ana Lima")
    page.fill("#password", "short")
    page.click("#register-button")
    assert page.locator("#email-error").inner_text().startswith("email must be")
    assert page.input_value("#name") == "Ana Lima" and page.input_value("#password") == ""
    shot(page, "02-register-errors")
    page.fill("#email", "ana@example.com")
    page.fill("#password", PASSWORD)
    page.click("#register-button")
    page.wait_for_url("**/account")
    assert flashes(page) == ["Welcome, Ana Lima! Your account is ready."]
    assert page.inner_text("#nav-user") == "Ana Lima"
    page.context.close()

    # A fresh browser: the account page sends it to log in and back.
    page = new_page()
    page.goto("/account")
    assert path_of(page) == "/login?next=%2Faccount"
    log_in(page, "ana@example.com", "wrong password 123")
    assert page.locator("p.form-error").inner_text() == "email or password is incorrect"
    assert page.input_value("#email") == "ana@example.com" and page.input_value("#password") == ""
    shot(page, "03-login-error")
    log_in(page, "ana@example.com")
    page.wait_for_url("**/account")
    assert flashes(page) == ["Welcome back, Ana Lima."]
    shot(page, "04-account")
    page.reload()
    assert flashes(page) == []  # shown once

    # The session cookie is HttpOnly: the page's scripts cannot read it.
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["sid"]["httpOnly"] is True and cookies["sid"]["sameSite"] == "Lax"
    visible = page.evaluate("document.cookie")
    assert "sid=" not in visible and cookies["sid"]["value"] not in visible

    page.goto("/")
    assert page.inner_text("#nav-user") == "Ana Lima"
    shot(page, "05-home-logged-in")

    page.click("#nav-logout")
    page.wait_for_url("**/login?notice=logged-out")
    assert flashes(page) == ["You have logged out."]
    assert page.locator("#nav-login").is_visible() and page.locator("#nav-user").count() == 0
    assert "sid" not in {cookie["name"] for cookie in page.context.cookies()}
    shot(page, "06-logged-out")
    page.goto("/account")
    assert path_of(page) == "/login?next=%2Faccount"


def test_password_change_in_one_browser_ends_the_other(new_page):
    first = new_page()
    register(first, "bea@example.com", "Bea")
    second = new_page()
    second.goto("/login")
    log_in(second, "bea@example.com")
    second.wait_for_url("**/account")

    first.goto("/account/sessions")
    rows = first.locator("#sessions-table tbody tr")
    assert rows.count() == 2
    assert first.locator("tr.current .badge").inner_text() == "this session"
    assert first.locator("tr.other").count() == 1
    shot(first, "07-sessions")

    first.goto("/account")
    first.fill("#current", PASSWORD)
    first.fill("#new", "a brand new secret")
    first.click("#password-button")
    first.wait_for_url("**/account")
    assert flashes(first) == ["Your password is changed; 1 other browser is logged out."]
    shot(first, "08-password-changed")

    second.reload()
    assert path_of(second) == "/login?next=%2Faccount"
    assert second.locator("#nav-login").is_visible()
    shot(second, "09-other-browser-logged-out")

    first.goto("/account/sessions")
    assert first.locator("#sessions-table tbody tr").count() == 1
    first.click("#logout-all-button")
    first.wait_for_url("**/login?notice=logged-out-everywhere")
    assert flashes(first) == ["You have logged out on every device."]


def test_remember_me_brings_the_user_back_after_the_session_cookie_is_gone(new_page):
    page = new_page()
    register(page, "rita@example.com", "Rita")
    page.context.close()

    page = new_page()
    page.goto("/login")
    page.fill("#email", "rita@example.com")
    page.fill("#password", PASSWORD)
    page.check("#remember")
    page.click("#login-button")
    page.wait_for_url("**/account")
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["remember"]["httpOnly"] is True and cookies["remember"]["sameSite"] == "Lax"
    assert cookies["remember"]["expires"] > time.time() + 29 * 86400
    first_token = cookies["remember"]["value"]

    # The browser loses the session cookie (it ended, or the browser was restarted).
    page.context.clear_cookies(name="sid")
    page.goto("/account")
    assert path_of(page) == "/account" and page.inner_text("#nav-user") == "Rita"
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert "sid" in cookies and cookies["remember"]["value"] != first_token  # new session, rotated token
    shot(page, "10-remembered")

    # A sensitive action asks for the password first, then comes back.
    page.goto("/account/sessions")
    page.click("#logout-all-button")
    page.wait_for_url("**/account/reauthenticate?next=%2Faccount%2Fsessions")
    shot(page, "11-reauthenticate")
    page.fill("#password", PASSWORD)
    page.click("#reauth-button")
    page.wait_for_url("**/account/sessions")
    page.click("#logout-all-button")
    page.wait_for_url("**/login?notice=logged-out-everywhere")
    page.context.clear_cookies(name="sid")
    page.goto("/account")
    assert path_of(page) == "/login?next=%2Faccount"  # the token ended with everything else
