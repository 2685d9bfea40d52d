"""The demo as a product, in Chromium: phone widths, axe-core in both themes, the 429 wait
shown, the one-pass password change, error pages in the user's own state.

axe-core is the npm package (package.json / package-lock.json at the top of the
checkout; ``npm ci`` installs it into the git-ignored node_modules/, which this module
does itself when npm is on PATH). It is injected into each page with Playwright's
``add_script_tag`` in a context made with ``bypass_csp=True``: the app's CSP allows no
injected script, and that is the point of it; the pages themselves run under their CSP
everywhere else. Rules: WCAG 2.0 / 2.1, levels A and AA.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.api import PASSWORD
from tests.fixtures.browser import ROOT, TIMEOUT_MS, log_in, register, unavailable

pytestmark = pytest.mark.browser

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PHONE = {"width": 375, "height": 667}
NARROW = {"width": 320, "height": 640}
DESKTOP = {"width": 1000, "height": 760}


@pytest.fixture(scope="module")
def live_server_args() -> list[str]:
    # Every test here signs up from 127.0.0.1: room for all of them (the sign-up limit itself
    # is tested over HTTP in tests/demo/test_product.py).
    return ["--register-limit", "50/3600"]


@pytest.fixture(scope="module")
def axe_script() -> Path:
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("axe-core is not installed and npm is not on PATH (run: npm ci)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    return AXE


@pytest.fixture
def open_page(browser, live_server):
    """Pages in fresh contexts: ``open_page(viewport=..., axe=True)`` (axe: CSP bypassed for injection)."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None, *, axe: bool = False) -> Any:
        context = browser.new_context(base_url=live_server, viewport=viewport or DESKTOP, bypass_csp=axe)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.problems = []  # console errors and CSP reports, for the pages not made for axe
        page.on("console", lambda m: m.type == "error" and not expected_status(m.text) and page.problems.append(m.text))
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        return page

    yield make
    for context in contexts:
        context.close()


def expected_status(text: str) -> bool:
    """Chromium logs every 4xx page load (a 404 page, a 401 form) as a console error: not a problem."""
    return text.startswith("Failed to load resource: the server responded with a status of 4")


def set_theme(page: Any, theme: str) -> None:
    page.goto("/")
    button = page.locator(f"form[action='/preferences/theme'] button[value='{theme}']")
    if button.is_enabled():
        button.click()
        page.wait_for_url("**/")
    assert page.locator("html").get_attribute("data-theme") == theme


def axe_violations(page: Any, script: Path) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(script))
    result = page.evaluate(
        "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}})).violations",
        WCAG_AA,
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5],
         "summary": v["nodes"][0].get("failureSummary", "")[:300]}
        for v in result
    ]


def scrolls_sideways(page: Any) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no horizontal scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def sign_up(page: Any, email: str, name: str = "Ana Lima") -> None:
    register(page, email, name)


# The pages of the demo: (name, path, needs a login)
LOGGED_OUT = [("home", "/"), ("login", "/login"), ("register", "/register"), ("not-found", "/no-such-page"),
              ("logged-out", "/login?notice=logged-out")]
LOGGED_IN = [("home", "/"), ("account", "/account"), ("sessions", "/account/sessions"), ("live", "/live"),
             ("reauthenticate", "/account/reauthenticate?next=%2Faccount"), ("not-found", "/no-such-page")]


def form_pages(page: Any) -> list[tuple[str, Any]]:
    """Pages in a state worth checking besides their plain GET: forms with errors."""
    def register_errors() -> None:
        page.goto("/register")
        page.fill("#email", "not an address")
        page.click("#register-button")

    def login_error() -> None:
        page.goto("/login")
        page.fill("#email", "nobody@example.com")
        page.fill("#password", "wrong password 123")
        page.click("#login-button")

    return [("register-errors", register_errors), ("login-error", login_error)]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_wcag_aa_violation_on_any_page(open_page, axe_script, theme):
    found: dict[str, list[dict[str, Any]]] = {}
    page = open_page(axe=True)
    set_theme(page, theme)
    for name, path in LOGGED_OUT:
        page.goto(path)
        found[f"out:{name}"] = axe_violations(page, axe_script)
    for name, action in form_pages(page):
        action()
        found[f"out:{name}"] = axe_violations(page, axe_script)
    sign_up(page, f"axe-{theme}@example.com")
    second = open_page(axe=True)  # a second browser, so that the sessions page lists two
    second.goto("/login")
    log_in(second, f"axe-{theme}@example.com")
    second.wait_for_url("**/account")
    for name, path in LOGGED_IN:
        page.goto(path)
        if name == "live":
            page.wait_for_selector("#live-state[data-state='connected']")
        found[f"in:{name}"] = axe_violations(page, axe_script)
    page.goto("/account")  # an error beside a field (post/redirect/get)
    page.fill("#current", "not the password")
    page.fill("#new", "short")
    page.click("#password-button")
    page.wait_for_url("**/account")
    found["in:password-errors"] = axe_violations(page, axe_script)
    bad = {name: violations for name, violations in found.items() if violations}
    assert not bad, json.dumps(bad, indent=1)
    assert len(found) == len(LOGGED_OUT) + len(LOGGED_IN) + 3


@pytest.mark.parametrize("viewport", [PHONE, NARROW], ids=["375", "320"])
def test_every_page_fits_a_phone_without_sideways_scrolling(open_page, viewport):
    page = open_page(viewport)
    widths: dict[str, int] = {}
    for name, path in LOGGED_OUT:
        page.goto(path)
        widths[f"out:{name}"] = scrolls_sideways(page)
    for name, action in form_pages(page):
        action()
        widths[f"out:{name}"] = scrolls_sideways(page)
    email = f"phone-{viewport['width']}@example.com"
    sign_up(page, email, "Maria da Conceição Albuquerque")
    other = open_page(viewport)
    other.goto("/login")
    log_in(other, email)
    other.wait_for_url("**/account")
    for name, path in LOGGED_IN:
        page.goto(path)
        widths[f"in:{name}"] = scrolls_sideways(page)
    assert {name: w for name, w in widths.items() if w > 0} == {}
    # The sessions table became cards: every button inside the page's width.
    page.goto("/account/sessions")
    width = page.evaluate("window.innerWidth")
    for box in [b.bounding_box() for b in page.locator("#sessions-table button").all()]:
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    assert page.locator("#sessions-table tbody tr").count() == 2
    assert not page.problems and not other.problems, page.problems + other.problems


def test_the_429_page_says_when_to_try_again(open_page):
    page = open_page()
    register(page, "wait@example.com", "Wanda")
    page.context.clear_cookies()
    page.goto("/login")
    for _ in range(5):  # the per-account limit: 5 in 15 minutes
        log_in(page, "wait@example.com", "wrong password 123")
        assert page.locator("p.form-error").inner_text() == "email or password is incorrect"
    log_in(page, "wait@example.com")  # the right password, over the limit: still refused
    error = page.locator("p.form-error").inner_text()
    # Minutes, or seconds near the end of the limiter's fixed 15-minute window.
    assert re.fullmatch(r"too many login attempts; please try again in \d+ (?:seconds?|minutes?)", error), error
    wait = page.locator("#login-wait").inner_text()
    assert " UTC" in wait and "Remember me" in wait
    assert page.locator("html").get_attribute("data-theme") == "light"


def test_sign_up_errors_all_at_once(open_page):
    page = open_page()
    page.goto("/register")
    page.fill("#email", "not an address")
    page.fill("#name", "   ")
    page.fill("#password", "short")
    page.click("#register-button")
    errors = {f: page.locator(f"#{f}-error").inner_text() for f in ("email", "name", "password")}
    assert errors["email"].startswith("email must be") and errors["name"].startswith("name must be")
    assert "at least 10" in errors["password"]
    assert page.input_value("#email") == "not an address" and page.input_value("#password") == ""
    page.keyboard.press("Tab")  # keyboard: the skip link comes first
    assert page.evaluate("document.activeElement.className") == "skip-link"


def test_password_change_in_one_pass_from_a_remembered_browser(open_page):
    first = open_page()
    register(first, "once@example.com", "Olga")
    page = open_page()
    page.goto("/login")
    page.fill("#email", "once@example.com")
    page.fill("#password", PASSWORD)
    page.check("#remember")
    page.click("#login-button")
    page.wait_for_url("**/account")
    page.context.clear_cookies(name="sid")  # the session ended; the token brings the browser back
    page.goto("/account")
    assert page.inner_text("#nav-user") == "Olga"
    old_token = {c["name"]: c["value"] for c in page.context.cookies()}["remember"]

    page.fill("#current", "not the password")  # a mistake: back to the form by post/redirect/get
    page.fill("#new", "a brand new secret")
    page.click("#password-button")
    page.wait_for_url("**/account")
    assert "incorrect" in page.locator("#current-error").inner_text()
    page.reload()  # a reload posts nothing again
    assert page.locator("#current-error").count() == 0

    page.fill("#current", PASSWORD)  # typed once: no detour to "Confirm your password"
    page.fill("#new", "a brand new secret")
    page.click("#password-button")
    page.wait_for_url("**/account")
    assert [t.strip() for t in page.locator("p.flash").all_inner_texts()] == [
        "Your password is changed; 1 other browser is logged out."
    ]
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies["remember"] != old_token  # still remembered, with a fresh token
    page.context.clear_cookies(name="sid")
    page.goto("/account")
    assert page.inner_text("#nav-user") == "Olga"  # the new token works
    first.goto("/account")
    assert "/login" in first.url  # the other browser is out


def test_error_pages_follow_the_theme_and_the_login(open_page):
    page = open_page()
    set_theme(page, "dark")
    page.goto("/no-such-page")
    assert page.locator("html").get_attribute("data-theme") == "dark"
    assert page.locator("#nav-login").is_visible() and page.locator("#nav-user").count() == 0
    assert "There is no page at this address" in page.inner_text("#error-message")
    register(page, "lost@example.com", "Lou")
    response = page.goto("/no-such-page")
    assert response.status == 404
    assert page.inner_text("#nav-user") == "Lou" and page.locator("html").get_attribute("data-theme") == "dark"
    assert page.locator("#nav-logout").is_visible()
    answer = page.request.get("/auth/no-such-call")
    assert answer.status == 404 and answer.json()["error"] == "not_found"
    assert not page.problems, page.problems
