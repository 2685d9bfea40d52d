"""Websocket clients authenticated by the session cookie (``sessions.websocket``), through
the demo's ``/ws`` on the real server class, with Tornado's own websocket client.

The handshake: accepted with a logged-in cookie; refused (403) without one, with a
tampered one, for an anonymous visitor, for a foreign Origin; no store write. The
revocation: the socket of a session that ends closes with 1008 at once in this process
(logout, revoke, log out everywhere, password change, login as someone else), and an
expired session's socket is closed by the periodic re-check. The limits: 1009 for an
oversize message, 1008 for a flood, an error message (and an open socket) for bad JSON.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from server import WS_MAX_MESSAGE_BYTES
from tests.fixtures.api import PASSWORD, body, call, login, register
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.support import Client, CountingStore

#: How long an "at once" close may take (the re-check runs every 60 s in these tests).
AT_ONCE = 1.0


@pytest.fixture
def demo_store(clock):
    return CountingStore(clock=clock)


@pytest.fixture
def recheck():
    """The registry's re-check interval: long, so that a close within AT_ONCE is the in-process path."""
    return 60.0


@pytest.fixture
def demo_config(demo_config, recheck):
    demo_config.ws_recheck_interval = recheck
    return demo_config


app, http_server = demo_app_fixtures()


@pytest.fixture
def new_client(http_client, base_url, http_server, registry):
    return lambda **kw: Client(http_client, base_url, **kw)


async def receive(conn: WebSocketClientConnection, timeout: float = 2.0) -> dict:
    raw = await asyncio.wait_for(conn.read_message(), timeout)
    assert raw is not None, f"closed: {conn.close_code} {conn.close_reason}"
    return json.loads(raw)


async def closed(conn: WebSocketClientConnection, timeout: float = AT_ONCE) -> tuple[int | None, list[dict]]:
    """Read until the server closes the socket; its close code and the messages before it."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"still open after {timeout} s; got {messages}")
        try:
            raw = await asyncio.wait_for(conn.read_message(), remaining)
        except TimeoutError:
            raise AssertionError(f"still open after {timeout} s; got {messages}") from None
        if raw is None:
            return conn.close_code, messages
        messages.append(json.loads(raw))


async def still_open(conn: WebSocketClientConnection) -> None:
    """A ping answered: the socket is open and serving."""
    conn.write_message(json.dumps({"type": "ping", "id": "alive"}))
    message = await receive(conn)
    while message["type"] != "pong":  # notices may come first
        message = await receive(conn)
    assert message == {"type": "pong", "id": "alive"}


async def logged_in(new_client, email="ana@example.com", name="Ana"):
    client = new_client()
    await register(client, email=email, name=name)
    return client


async def refused(connect, client=None, **kw) -> int:
    with pytest.raises(HTTPClientError) as info:
        await connect(client, **kw)
    return info.value.code


# -- the handshake ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_logged_in_cookie_is_accepted_and_ping_gets_pong(new_client, connect, ws_url):
    ana = await logged_in(new_client)
    conn = await websocket_connect(HTTPRequest(ws_url, headers=ana.jar.header()))
    try:
        welcome = await receive(conn)
        assert welcome["type"] == "welcome" and welcome["user"]["name"] == "Ana" and welcome["worker"] is None
        conn.write_message(json.dumps({"type": "ping"}))
        assert await receive(conn) == {"type": "pong"}
        conn.write_message(json.dumps({"type": "ping", "id": 7}))
        assert await receive(conn) == {"type": "pong", "id": 7}
        assert "Set-Cookie" not in conn.headers  # the handshake sets no cookie
    finally:
        conn.close()


@pytest.mark.gen_test
async def test_refused_without_cookie_with_tampered_cookie_and_for_anonymous_visitors(new_client, connect, caplog):
    assert await refused(connect) == 403
    assert await refused(connect, headers={"Cookie": "sid=not-a-sealed-value"}) == 403

    ana = await logged_in(new_client)
    good = ana.jar.cookies["sid"]
    tampered = good[:-4] + ("AAAA" if good[-4:] != "AAAA" else "BBBB")
    assert await refused(connect, headers={"Cookie": f"sid={tampered}"}) == 403
    assert any("cookie_rejected" in r.getMessage() for r in caplog.records)

    visitor = new_client()  # an anonymous session with data in the store
    await visitor.fetch("/api/counter")
    assert (await visitor.fetch("/api/counter", "POST")).code == 200
    assert "sid" in visitor.jar.cookies
    assert await refused(connect, visitor) == 403

    # a cookie of a session that has ended
    old = Client(ana.http, ana.base)
    old.jar.cookies.update(ana.jar.cookies)
    await call(ana, "POST", "/auth/logout")
    assert await refused(connect, old) == 403


@pytest.mark.gen_test
async def test_origin_same_host_passes_foreign_is_refused(new_client, connect, base_url):
    ana = await logged_in(new_client)
    host = base_url.split("://", 1)[1]
    conn = await connect(ana, headers={"Origin": f"http://{host}"})
    await still_open(conn)
    for origin in ("https://evil.example", f"http://{host}.evil.example", "null", f"http://sub.{host}"):
        assert await refused(connect, ana, headers={"Origin": origin}) == 403, origin
    # Sec-Fetch-Site from a browser does not excuse a foreign Origin
    assert await refused(connect, ana, headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}) == 403


@pytest.mark.gen_test
@pytest.mark.parametrize("app_settings", [{"websocket_allowed_origins": ["https://App.Example.com/"]}])
async def test_an_allow_list_replaces_the_same_host_rule(new_client, connect, base_url):
    ana = await logged_in(new_client)
    conn = await connect(ana, headers={"Origin": "https://app.example.com"})
    await still_open(conn)
    host = base_url.split("://", 1)[1]
    assert await refused(connect, ana, headers={"Origin": f"http://{host}"}) == 403
    assert await refused(connect, ana, headers={"Origin": "https://app.example.com.evil.test"}) == 403
    # a client that sends no Origin (not a browser) is not origin-checked
    await still_open(await connect(ana))


@pytest.mark.gen_test
async def test_the_handshake_writes_nothing_to_the_store(new_client, connect, demo_store, clock):
    ana = await logged_in(new_client)
    clock.advance(120)  # past touch_after: an HTTP request would write the new expiry now
    writes, loads = demo_store.writes, demo_store.calls["load"]
    conn = await connect(ana)
    await still_open(conn)
    assert demo_store.writes == writes
    assert demo_store.calls["load"] == loads + 1  # the session, once
    # while an HTTP request in the same state does write (the touch): the test can fail
    await call(ana, "GET", "/auth/profile")
    assert demo_store.writes > writes


@pytest.mark.gen_test
async def test_a_stale_login_is_refused(new_client, connect, app):
    """A session from before a password change (another process did not end it) is no login."""
    ana = await logged_in(new_client)
    old = Client(ana.http, ana.base)
    old.jar.cookies.update(ana.jar.cookies)
    accounts = app.settings["accounts"]
    user = await accounts.users.by_email("ana@example.com")
    await accounts.change_password(user, PASSWORD, "a brand new password", "127.0.0.1")
    assert await refused(connect, old) == 403


@pytest.mark.gen_test
@pytest.mark.parametrize("app_settings", [{"socket_registry": None}])
async def test_without_a_registry_the_handshake_fails_loudly(new_client, connect, caplog):
    ana = await logged_in(new_client)
    assert await refused(connect, ana) == 500
    assert any("socket_registry" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


@pytest.mark.gen_test
async def test_non_websocket_requests_to_ws_are_4xx(new_client, http_server):
    ana = await logged_in(new_client)
    assert (await ana.fetch("/ws")).code == 400  # logged in, but no Upgrade
    assert (await new_client().fetch("/ws")).code == 403
    assert (await ana.fetch("/ws", "POST")).code == 405


# -- revocation -----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_logout_closes_that_sessions_sockets_at_once_and_no_others(new_client, connect):
    ana = await logged_in(new_client)
    phone = new_client()
    await login(phone)
    mine, mine_too, theirs = await connect(ana), await connect(ana), await connect(phone)
    started = time.monotonic()
    assert (await call(ana, "POST", "/auth/logout")).code == 200
    assert (await closed(mine))[0] == 1008
    assert (await closed(mine_too))[0] == 1008
    assert mine.close_reason == "session ended"
    assert time.monotonic() - started < AT_ONCE
    await still_open(theirs)  # the same user's other session keeps its socket


@pytest.mark.gen_test
async def test_revoke_from_another_session_closes_it_and_tells_the_others(new_client, connect):
    ana = await logged_in(new_client)
    laptop = new_client()
    await login(laptop)
    laptop_socket, ana_socket = await connect(laptop), await connect(ana)
    listed = body(await call(ana, "GET", "/auth/sessions"))["sessions"]
    [other] = [s for s in listed if not s["current"] and s.get("kind", "session") == "session"]
    assert (await call(ana, "DELETE", f"/auth/sessions/{other['handle']}")).code == 200
    code, _ = await closed(laptop_socket)
    assert code == 1008
    assert await receive(ana_socket) == {"type": "notice", "event": "revoked"}
    await still_open(ana_socket)


@pytest.mark.gen_test
async def test_a_login_elsewhere_is_announced_live(new_client, connect):
    ana = await logged_in(new_client)
    conn = await connect(ana)
    await login(new_client(), headers={"User-Agent": "TestBrowser/1.0"})
    notice = await receive(conn)
    assert notice == {"type": "notice", "event": "login", "ip": "127.0.0.1", "user_agent": "TestBrowser/1.0",
                      "browser": "TestBrowser/1.0"}  # named as on /account/sessions
    bob = await logged_in(new_client, email="bob@example.com", name="Bob")
    await login(bob, email="bob@example.com")  # someone else's login is not announced to ana
    await still_open(conn)
    assert conn.read_message().done() is False


@pytest.mark.gen_test
async def test_logout_everywhere_closes_every_socket_of_the_user(new_client, connect):
    ana = await logged_in(new_client)
    devices = [new_client() for _ in range(2)]
    for device in devices:
        await login(device)
    sockets = [await connect(c) for c in (ana, *devices)]
    bob = await logged_in(new_client, email="bob@example.com", name="Bob")
    bobs = await connect(bob)
    assert (await call(devices[-1], "POST", "/auth/logout-all")).code == 200
    for conn in sockets:
        code, messages = await closed(conn)
        assert code == 1008
        assert {"type": "notice", "event": "logout_everywhere"} in messages
    await still_open(bobs)


@pytest.mark.gen_test
async def test_password_change_closes_the_other_sessions_sockets_not_this_browsers(new_client, connect, registry):
    ana = await logged_in(new_client)
    other = new_client()
    await login(other)
    mine, theirs = await connect(ana), await connect(other)
    response = await call(ana, "POST", "/auth/password", {"current": PASSWORD, "new": "another good one"})
    assert response.code == 200 and body(response)["other_sessions_ended"] >= 1
    assert (await closed(theirs))[0] == 1008
    await still_open(mine)
    # this browser's socket now follows the new session ID: logging out closes it
    assert len(registry) == 1
    assert (await call(ana, "POST", "/auth/logout")).code == 200
    code, _ = await closed(mine)
    assert code == 1008 and len(registry) == 0


@pytest.mark.gen_test
async def test_logging_in_as_someone_else_in_the_same_browser_closes_the_socket(new_client, connect):
    await logged_in(new_client, email="bob@example.com", name="Bob")
    ana = await logged_in(new_client)
    conn = await connect(ana)
    assert (await login(ana, email="bob@example.com")).code == 200  # the session is renamed, now Bob's
    code, _ = await closed(conn)
    assert code == 1008 and conn.close_reason == "session changed user"


@pytest.mark.gen_test
@pytest.mark.parametrize("recheck", [0.05])
async def test_the_recheck_closes_sockets_of_expired_sessions(new_client, connect, app, clock):
    ana = await logged_in(new_client)
    conn = await connect(ana)
    await asyncio.sleep(0.2)  # several re-checks pass while the session is live
    await still_open(conn)
    clock.advance(app.settings["session_manager"].options.idle_timeout + 1)
    code, _ = await closed(conn, timeout=1.0)
    assert code == 1008 and conn.close_reason in ("session expired", "session ended")


@pytest.mark.gen_test
@pytest.mark.parametrize("recheck", [0.05])
async def test_the_recheck_closes_sockets_of_sessions_ended_behind_our_back(new_client, connect, app):
    """As another process does it: straight in the store, no listener told."""
    ana = await logged_in(new_client)
    conn = await connect(ana)
    manager = app.settings["session_manager"]
    listed = await manager.store.list_user((await app.settings["accounts"].users.by_email("ana@example.com")).id)
    for key, _ in listed:
        await manager.store.destroy(key)
    code, _ = await closed(conn, timeout=1.0)
    assert code == 1008 and conn.close_reason == "session ended"


# -- limits and messages -------------------------------------------------------------------


@pytest.mark.gen_test
async def test_an_oversize_message_closes_with_1009(new_client, connect):
    ana = await logged_in(new_client)
    conn = await connect(ana)
    conn.write_message(json.dumps({"type": "chat", "text": "x" * (WS_MAX_MESSAGE_BYTES - 100)}))
    assert (await receive(conn))["type"] == "error"  # under the limit: answered (too long a chat)
    conn.write_message("x" * (WS_MAX_MESSAGE_BYTES + 1))
    code, _ = await closed(conn)
    assert code == 1009


@pytest.mark.gen_test
async def test_a_flood_closes_with_1008(new_client, connect, registry):
    ana = await logged_in(new_client)
    conn = await connect(ana)
    for i in range(60):  # the burst is 40
        conn.write_message(json.dumps({"type": "ping", "id": i}))
    code, messages = await closed(conn)
    assert code == 1008 and conn.close_reason == "message rate exceeded"
    assert 35 <= len(messages) <= 45 and all(m["type"] == "pong" for m in messages)
    assert len(registry) == 0


@pytest.mark.gen_test
async def test_a_steady_client_under_the_rate_is_not_closed(new_client, connect):
    ana = await logged_in(new_client)
    conn = await connect(ana)
    for _ in range(4):  # 48 messages in 1.2 s: more than the burst (40), within the rate
        for i in range(12):
            conn.write_message(json.dumps({"type": "ping", "id": i}))
            assert (await receive(conn))["id"] == i
        await asyncio.sleep(0.3)  # 6 tokens back
    await still_open(conn)


@pytest.mark.gen_test
async def test_malformed_messages_get_an_error_and_the_socket_stays_open(new_client, connect):
    ana = await logged_in(new_client)
    conn = await connect(ana)
    for message, error in (
        ("{not json", "malformed JSON"),
        ("[1, 2]", "a message must be a JSON object"),
        ('"ping"', "a message must be a JSON object"),
        ("[" * 2000 + "]" * 2000, None),  # deep nesting: malformed or not an object, never a crash
        (b"\x00\x01", "send text messages (JSON), not binary"),
        ('{"type": "dance"}', "unknown message type"),
        ("{}", "unknown message type"),
    ):
        conn.write_message(message, binary=isinstance(message, bytes))
        reply = await receive(conn)
        assert reply["type"] == "error", (message, reply)
        if error:
            assert reply["error"] == error
    await still_open(conn)


@pytest.mark.gen_test
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_bug_in_a_message_handler_closes_with_1011(new_client, connect, monkeypatch, caplog, asynchronous):
    from handlers.live import LiveSocket

    def broken(self, data):
        raise ZeroDivisionError("bug")

    async def broken_async(self, data):
        await asyncio.sleep(0)
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(LiveSocket, "on_json", broken_async if asynchronous else broken)
    ana = await logged_in(new_client)
    conn = await connect(ana)
    conn.write_message(json.dumps({"type": "ping"}))
    code, _ = await closed(conn)
    assert code == 1011 and conn.close_reason == "internal error"
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


@pytest.mark.gen_test
async def test_chat_reaches_every_socket_with_display_names_and_is_validated(new_client, connect, app):
    ana = await logged_in(new_client)
    bob = await logged_in(new_client, email="bob@example.com", name="Bob <b>")
    ana_socket, bob_socket = await connect(ana), await connect(bob)
    bob_socket.write_message(json.dumps({"type": "chat", "text": "  hello, Ana  "}))
    bob_id = (await app.settings["accounts"].users.by_email("bob@example.com")).id
    expected = {"type": "chat", "from": {"id": bob_id, "name": "Bob <b>"}, "text": "hello, Ana"}
    assert await receive(ana_socket) == expected
    assert await receive(bob_socket) == expected
    for bad in ("", "   ", "x" * 501, 42, None, ["hi"], "bell\x07"):
        ana_socket.write_message(json.dumps({"type": "chat", "text": bad}))
        reply = await receive(ana_socket)
        assert reply["type"] == "error" and reply["field"] == "text", bad
    ana_socket.write_message(json.dumps({"type": "chat", "text": "y" * 500}))
    assert (await receive(bob_socket))["text"] == "y" * 500


# -- the page --------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_the_live_page_needs_a_login_and_loads_its_script(new_client):
    anonymous = new_client()
    response = await anonymous.fetch("/live", follow=False)
    assert response.code == 302 and response.headers["Location"] == "/login?next=%2Flive"
    ana = await logged_in(new_client)
    response = await ana.fetch("/live")
    assert response.code == 200
    page = response.body.decode()
    assert 'src="/static/live.js?v=' in page and 'id="live-state"' in page and "<script>" not in page
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    script = await ana.fetch("/static/live.js")
    assert script.code == 200 and b"1008" in script.body
