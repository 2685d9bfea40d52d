"""Websockets against server.py as a real process: across worker processes, and in a real
browser (the /live page).

* ``--processes 2``: a socket on one worker is closed (1008) within the re-check
  interval after its session logs out through the other worker, whose in-process
  listeners cannot reach it: only the re-check against the shared SQLite store can.
* Chromium (Debian's, driven by Playwright; never ``playwright install``; the fixtures
  of ``tests/fixtures/browser.py``): ``/live`` connects, answers pings, and shows "session
  ended" when the same user logs out everywhere from a second browser context. Skipped
  when Chromium or Playwright is missing, unless ``REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tests.fixtures.api import call, register
from tests.fixtures.browser import log_in as browser_log_in
from tests.fixtures.browser import register as browser_register
from tests.fixtures.browser import shot
from tests.fixtures.server_process import Server
from tests.fixtures.support import Client

#: Long on purpose: the other worker must hear the logout through the store's bus, not its re-check.
RECHECK = 60
#: How soon the other worker closes its socket (SQLite bus: read every <= 100 ms).
BUS_WITHIN = 1.0


@pytest.fixture
def multi_server(tmp_path):
    server = Server(
        tmp_path, "--processes", "2", "--bcrypt-cost", "4", "--ws-recheck", str(RECHECK)
    ).start()
    yield server
    server.stop()
    assert server.proc is not None and server.proc.poll() is not None


async def welcome_of(conn) -> dict:
    raw = await asyncio.wait_for(conn.read_message(), 5)
    assert raw is not None, (conn.close_code, conn.close_reason)
    message = json.loads(raw)
    assert message["type"] == "welcome"
    return message


async def close_code_within(conn, seconds: float) -> tuple[int | None, float]:
    """Wait for the server to close ``conn``; its close code and how long it took."""
    started = time.monotonic()
    while True:
        remaining = seconds - (time.monotonic() - started)
        if remaining <= 0:
            raise AssertionError(f"socket still open after {seconds} s")
        try:
            raw = await asyncio.wait_for(conn.read_message(), remaining)
        except TimeoutError:
            raise AssertionError(f"socket still open after {seconds} s") from None
        if raw is None:
            return conn.close_code, time.monotonic() - started


@pytest.mark.gen_test(timeout=60)
async def test_logout_through_one_worker_closes_sockets_on_the_other(multi_server):
    base = f"http://127.0.0.1:{multi_server.port}"
    http = AsyncHTTPClient()
    ana = Client(http, base)
    await register(ana)
    # The kernel picks the worker of each connection: open sockets until both have one.
    # An extra socket is closed at once: each worker allows 8 per session.
    by_worker: dict[int, object] = {}
    for _ in range(60):
        try:
            conn = await websocket_connect(HTTPRequest(base.replace("http", "ws", 1) + "/ws", headers=ana.jar.header()))
        except HTTPClientError as exc:
            assert exc.code == 429, exc  # that worker's cap, until it sees the close
            await asyncio.sleep(0.05)
            continue
        worker = (await welcome_of(conn))["worker"]
        assert worker in (0, 1)
        if worker in by_worker:
            conn.close()
        else:
            by_worker[worker] = conn
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2, "every socket landed on one worker"
    try:
        assert (await call(ana, "POST", "/auth/logout")).code == 200
        results = {w: await close_code_within(conn, BUS_WITHIN + 2) for w, conn in by_worker.items()}
        assert all(code == 1008 for code, _ in results.values()), results
        # one of them (the worker that served the logout) closed at once; the other
        # through the store's event bus, well before the (60 s) re-check
        assert max(took for _, took in results.values()) <= BUS_WITHIN, results
    finally:
        for conn in by_worker.values():
            conn.close()


@pytest.fixture
def single_server(tmp_path):
    server = Server(tmp_path, "--store", "memory://", "--bcrypt-cost", "4").start()
    yield server
    server.stop()


@pytest.mark.gen_test(timeout=30)
async def test_stopping_the_server_closes_open_sockets_with_1001(single_server):
    base = f"http://127.0.0.1:{single_server.port}"
    ana = Client(AsyncHTTPClient(), base)
    await register(ana)
    conn = await websocket_connect(HTTPRequest(base.replace("http", "ws", 1) + "/ws", headers=ana.jar.header()))
    await welcome_of(conn)
    single_server.proc.send_signal(signal.SIGTERM)
    code, _ = await close_code_within(conn, 5)
    assert code == 1001 and conn.close_reason == "server shutting down"
    assert await asyncio.get_running_loop().run_in_executor(None, single_server.proc.wait, 10) == 0


# -- a real browser (tests/fixtures/browser.py: Debian's Chromium, server.py on SQLite) --


@pytest.mark.browser
def test_live_page_connects_and_ends_when_the_user_logs_out_everywhere_elsewhere(new_page):
    page = new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    browser_register(page, "live@example.com", "Liv")
    page.click("#nav-live")
    page.wait_for_url("**/live")
    page.wait_for_selector('#live-state[data-state="connected"]', timeout=5000)
    page.wait_for_selector("#live-latency[data-pongs]", timeout=5000)  # the first ping answered
    assert page.text_content("#live-latency").endswith(" ms")
    page.click("#live-ping")
    page.wait_for_selector('#live-latency[data-pongs="2"]', timeout=5000)
    assert page.text_content("#live-worker") == "single process"
    page.fill("#chat-text", "hello from the browser")
    page.click("#chat-send")
    page.wait_for_selector("#chat-log li:has-text('hello from the browser')", timeout=5000)

    other = new_page()  # the same user in a second browser context (its own cookies)
    other.goto("/login?next=/account/sessions")
    browser_log_in(other, "live@example.com")
    other.wait_for_url("**/account/sessions")
    page.wait_for_selector("#live-notices li:has-text('New login')", timeout=5000)
    shot(page, "live-connected")
    other.click("#logout-all-button")
    other.wait_for_url("**/login?notice=logged-out-everywhere")

    page.wait_for_selector('#live-state[data-state="ended"]', timeout=3000)
    assert page.text_content("#live-state") == "session ended, log in again"
    assert page.is_visible("#live-ended")
    assert page.locator("#live-notices li:has-text('Log out everywhere')").count() == 1
    shot(page, "live-ended")
    page.wait_for_timeout(1500)  # no reconnect after 1008
    assert page.get_attribute("#live-state", "data-state") == "ended"
    assert problems == [], problems  # no CSP violation, no script error
