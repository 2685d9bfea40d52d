"""The account pages in a real browser: Debian's Chromium driven by Playwright.

``server.py`` runs as a real process (SQLite store in a temporary data directory,
bcrypt at its cheapest cost); Chromium is the system one (``executable_path``), never
a browser downloaded by ``playwright install``. Without Chromium or Playwright these
tests skip with the reason, unless ``REQUIRE_BROWSER=1`` (CI), which makes that a
failure. Screenshots of each page go to ``test-artifacts/screenshots/`` (git-ignored).

The sync API runs in plain test functions (no event loop of pytest-tornado's is
running there); the server is a subprocess, so nothing else needs the loop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery"
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.browser


def unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_BROWSER", "").strip() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (REQUIRE_BROWSER=1: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        unavailable("no chromium on PATH (Debian: apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install 'playwright>=1.40'; never `playwright install`)")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root in a container, where Chromium's sandbox cannot start.
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """``server.py`` on a free port with a fresh SQLite store; its base URL."""
    data_dir = tmp_path_factory.mktemp("browser-data")
    key = subprocess.run(
        [sys.executable, "-m", "sessions.keygen"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_STORE", "MONGODB_URL", "PRODUCTION", "DEBUG")}
    env["SESSION_KEYS"] = key
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--data-dir", str(data_dir),
             "--bcrypt-cost", "4"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server.py did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def new_page(browser, live_server):
    """Pages in fresh browser contexts (separate cookie jars), closed after the test."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(base_url=live_server, viewport={"width": 1000, "height": 760})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def flashes(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("p.flash").all_inner_texts()]


def register(page: Any, email: str, name: str, password: str = PASSWORD) -> None:
    page.goto("/register")
    page.fill("#email", email)
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#register-button")
    page.wait_for_url("**/account")


def log_in(page: Any, email: str, password: str = PASSWORD) -> None:
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-button")


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
    assert flashes(first) == ["Your password is changed; 1 other session ended."]
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
