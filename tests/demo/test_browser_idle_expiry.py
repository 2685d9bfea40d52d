"""The idle-expiry notice of ``/live`` in a real browser (Debian's Chromium, Playwright).

``server.py`` runs as a real process with ``--idle-timeout 4 --expiry-warning 3``, so
the whole story takes a few seconds: the countdown ticks, "Stay signed in" appears a
second after the last touch, a click sends ``activity`` and the notice goes while the
deadline moves, and without another click the page says the session expired, with a
link to log in again. The browser and page fixtures (and the skip / ``REQUIRE_BROWSER=1``
rule) are tests/fixtures/browser.py's; this module starts its own server (the timeout
flags) as that module's ``live_server`` does. Screenshots go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures.browser import register, shot

pytestmark = pytest.mark.browser

IDLE, WARNING = 4, 3


@pytest.fixture(scope="module")
def live_server_args():
    """``server.py`` with a 4 s idle timeout and the warning 3 s ahead."""
    return ["--idle-timeout", str(IDLE), "--expiry-warning", str(WARNING)]


def deadline_of(page: Any) -> float:
    return float(page.get_attribute("#live-idle", "data-deadline"))


def test_the_countdown_the_stay_signed_in_notice_and_the_expired_message(new_page):
    page = new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    register(page, "idle@example.com", "Idle Ida")
    page.goto("/live")
    page.wait_for_selector('#live-state[data-state="connected"]')

    # The countdown: both deadlines, ticking every second.
    page.wait_for_selector("#live-idle[data-deadline]")
    idle_text = page.inner_text("#live-idle")
    assert " left (at " in idle_text, idle_text
    assert " left (at " in page.inner_text("#live-absolute")  # 12 h by default
    page.wait_for_function(
        "text => document.getElementById('live-idle').textContent !== text", arg=idle_text, timeout=3000
    )

    # A second after the last touch the server says "expiring": a notice with a real button,
    # inside the page's assertive live region.
    notice = page.locator("#live-expiring")
    notice.wait_for(state="visible", timeout=(IDLE - WARNING + 2) * 1000)
    assert "this session ends at" in page.inner_text("#live-expiring-text")
    stay = page.locator("#live-stay")
    assert stay.is_visible() and stay.evaluate("b => b.tagName === 'BUTTON' && b.type === 'button'")
    assert page.locator("#live-alerts").get_attribute("aria-live") == "assertive"
    assert notice.evaluate("n => n.closest('[aria-live]') !== null")
    assert page.locator("#live-idle").evaluate("e => e.classList.contains('soon')")
    shot(page, "idle-01-expiring")

    # "Stay signed in": the server touches the session and answers "deadlines"; the notice
    # goes and the countdown jumps to the later deadline (until the next warning, 1 s on).
    before = deadline_of(page)
    stay.click()
    page.wait_for_function(
        """before => Number(document.getElementById('live-idle').dataset.deadline) > before
                     && document.getElementById('live-expiring').hidden""",
        arg=before, timeout=3000, polling=50,
    )
    after = deadline_of(page)
    assert before < after <= before + IDLE
    shot(page, "idle-02-stayed")

    # No more clicks: warned again about the new deadline, then the socket closes with
    # 1008 "session expired" and the page says so, with the way back.
    notice.wait_for(state="visible", timeout=(IDLE - WARNING + 2) * 1000)
    expired = page.locator("#live-expired")
    expired.wait_for(state="visible", timeout=(WARNING + 3) * 1000)
    assert time.time() >= after - 1  # not before the deadline (clocks of one machine; a second of slack)
    assert page.inner_text("#live-expired").strip() == "Your session expired \u2014 log in again."
    assert page.get_attribute("#live-expired a", "href") == "/login?next=%2Flive"
    assert page.inner_text("#live-state") == "session expired, log in again"
    assert notice.is_hidden() and page.locator("#live-ended").is_hidden()
    assert page.is_disabled("#chat-send")
    assert page.inner_text("#live-idle") == "expired"
    shot(page, "idle-03-expired")
    assert problems == [], problems  # no CSP violation, no script error

    # The link leads to the login form, which comes back to /live.
    page.click("#live-expired a")
    page.wait_for_url("**/login?next=%2Flive")
