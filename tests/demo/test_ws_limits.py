"""The websocket limits that an outside attack on ``/ws`` found missing, through the demo's
real server class and Tornado's own websocket client:

* caps on open sockets per session, per user and per client address (429 at the
  handshake, counted from acceptance to close, parallel handshakes included);
* a bound on the data waiting for a client that does not read (1013 "slow consumer",
  the socket forgotten and its memory given back);
* keep-alive pings that only a pong echoing the server's own ping answers (unsolicited
  pongs keep nobody alive);
* chat that names its sender by user id, and refuses invisible and bidi characters;
* the credentials version checked exactly at the handshake.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
import weakref
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection

from sessions.tornado_internals import stream_backlog
from sessions.websocket import (
    DEFAULT_MAX_PER_SESSION,
    WRITE_OVERHEAD,
    SessionWebSocketMixin,
    SocketRegistry,
)
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.support import Client

PASSWORD = "correct horse battery"
#: The longest any "soon" may take here; every wait polls and stops as soon as it holds.
SOON = 5.0

app, http_server = demo_app_fixtures()


@pytest.fixture
def new_client(http_client: Any, base_url: str, http_server: Any, registry: Any) -> Any:
    return lambda **kw: Client(http_client, base_url, **kw)


# -- helpers ------------------------------------------------------------------------------


async def unread_socket(new_client, connect, registry, app):
    """A registered client's socket whose client stops reading: (client side, server side)."""
    ana = await registered(new_client)
    conn = await connect(ana, welcome=False)
    await until(lambda: len(registry) == 1)
    socket = server_socket(registry, await user_id(app))
    block_reading(conn)
    await asyncio.sleep(0.1)
    return conn, socket


async def call(client: Client, method: str, path: str, data: Any = None) -> Any:
    if client.xsrf_token() is None:
        await client.fetch("/auth/profile")
    payload = None if data is None else json.dumps(data)
    return await client.fetch(path, method, payload, headers={"Content-Type": "application/json"})


async def registered(new_client: Any, email: str = "ana@example.com", name: str = "Ana") -> Client:
    client = new_client()
    response = await call(client, "POST", "/auth/register", {"email": email, "name": name, "password": PASSWORD})
    assert response.code == 201, response.body
    return client  # type: ignore[no-any-return]


async def logged_in_again(new_client: Any, email: str = "ana@example.com") -> Client:
    """Another session (another browser) of an existing account."""
    client = new_client()
    response = await call(client, "POST", "/auth/login", {"email": email, "password": PASSWORD})
    assert response.code == 200, response.body
    return client  # type: ignore[no-any-return]


async def user_id(app: Any, email: str = "ana@example.com") -> str:
    return str((await app.settings["accounts"].users.by_email(email)).id)


async def receive(conn: WebSocketClientConnection, timeout: float = SOON) -> dict[str, Any]:
    raw = await asyncio.wait_for(conn.read_message(), timeout)
    assert raw is not None, f"closed: {conn.close_code} {conn.close_reason}"
    return json.loads(raw)  # type: ignore[no-any-return]


async def refused(connect: Any, client: Client) -> HTTPClientError:
    with pytest.raises(HTTPClientError) as info:
        await connect(client)
    return info.value


async def until(condition: Any, timeout: float = SOON, what: str = "the condition") -> None:
    """Poll ``condition()`` until it holds (a bounded wait; fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.02)


async def drain(conn: WebSocketClientConnection, timeout: float = SOON) -> list[str | bytes]:
    """Read everything until the server's close; the messages read."""
    messages: list[str | bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(conn.read_message(), max(0.01, deadline - time.monotonic()))
        if raw is None:
            return messages
        messages.append(raw)


async def still_open(conn: WebSocketClientConnection, ping_id: str = "alive") -> None:
    conn.write_message(json.dumps({"type": "ping", "id": ping_id}))
    message = await receive(conn)
    while message.get("type") != "pong":
        message = await receive(conn)
    assert message == {"type": "pong", "id": ping_id}


def server_socket(registry: SocketRegistry, uid: str) -> SessionWebSocketMixin:
    [socket] = registry.sockets_of_user(uid)
    assert isinstance(socket, SessionWebSocketMixin)
    return socket


def pong_frame(payload: bytes) -> bytes:
    """A masked client → server pong frame (RFC 6455 5.5.3), written raw: nothing asked for it."""
    mask = os.urandom(4)
    return bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def block_reading(conn: WebSocketClientConnection) -> None:
    """Make Tornado's client stop reading its socket: its queue holds one message and the
    next one (the pong to this ping) blocks its read loop, pings from the server included."""
    conn.write_message(json.dumps({"type": "ping", "id": "block"}))


# -- the caps -----------------------------------------------------------------------------

SMALL_CAPS = {"websocket_max_per_session": 2, "websocket_max_per_user": 3, "websocket_max_per_address": 4}


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("app_settings", [SMALL_CAPS])
async def test_each_cap_refuses_with_429_and_a_close_frees_a_slot(new_client, connect, registry, app, caplog):
    ana = await registered(new_client)
    first = [await connect(ana), await connect(ana)]
    error = await refused(connect, ana)  # a third for this session
    assert error.code == 429 and "Too Many Websockets" in str(error)
    assert any("websocket_refused" in r.getMessage() and "too many websockets for this session" in r.getMessage()
               for r in caplog.records)

    phone = await logged_in_again(new_client)
    await connect(phone)  # the user's third socket
    error = await refused(connect, phone)  # the session has room, the user has not
    assert error.code == 429
    assert any("too many websockets for this user" in r.getMessage() for r in caplog.records)

    bob = await registered(new_client, email="bob@example.com", name="Bob")
    await connect(bob)  # the address's fourth socket
    assert (await refused(connect, bob)).code == 429  # bob has room, 127.0.0.1 has not
    assert any("too many websockets from this address" in r.getMessage() for r in caplog.records)
    assert registry.slot_count() == 4 and len(registry) == 4  # refusals hold no slot

    # Closing one of ana's first sockets frees a slot for that session (and user, address).
    first[0].close()
    await until(lambda: registry.slot_count() == 3, what="the slot to be given back")
    await still_open(await connect(ana))
    assert (await refused(connect, ana)).code == 429  # and only one


@pytest.mark.gen_test(timeout=30)
async def test_parallel_handshakes_stop_at_the_session_cap_and_chat_reaches_each_socket_once(
        new_client, connect, registry, app):
    """The attack opened 150 sockets for one session and a chat line went out 150 times."""
    ana = await registered(new_client)
    results = await asyncio.gather(*(connect(ana) for _ in range(DEFAULT_MAX_PER_SESSION + 6)),
                                   return_exceptions=True)
    sockets = [r for r in results if isinstance(r, WebSocketClientConnection)]
    errors = [r for r in results if not isinstance(r, WebSocketClientConnection)]
    assert len(sockets) == DEFAULT_MAX_PER_SESSION
    assert len(errors) == 6 and all(isinstance(e, HTTPClientError) and e.code == 429 for e in errors), errors
    uid = await user_id(app)
    assert registry.slot_count(user_id=uid) == DEFAULT_MAX_PER_SESSION

    bob = await registered(new_client, email="bob@example.com", name="Bob")
    bobs = await connect(bob)
    bobs.write_message(json.dumps({"type": "chat", "text": "hello everyone"}))
    for conn in sockets:
        assert (await receive(conn))["text"] == "hello everyone"
    assert (await receive(bobs))["text"] == "hello everyone"
    for conn in sockets:  # once each: the next message is the answer to a ping
        conn.write_message(json.dumps({"type": "ping", "id": "next"}))
        assert await receive(conn) == {"type": "pong", "id": "next"}


@pytest.mark.gen_test(timeout=30)
async def test_a_refused_handshake_after_the_slot_was_taken_gives_it_back(new_client, connect, registry, app):
    ana = await registered(new_client)
    await connect(ana)
    accounts = app.settings["accounts"]
    user = await accounts.users.by_email("ana@example.com")
    await accounts.change_password(user, PASSWORD, "another good password", "127.0.0.1")
    for _ in range(DEFAULT_MAX_PER_SESSION + 2):  # 403 (stale login) each time, never 429
        assert (await refused(connect, ana)).code == 403
    await until(lambda: registry.slot_count() == len(registry), what="only open sockets to hold slots")


# -- slow consumers -------------------------------------------------------------------------

BULK = "x" * 60_000


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("app_settings", [{"websocket_max_write_buffer": 256 * 1024}])
async def test_a_client_that_never_reads_is_closed_past_the_bound_and_forgotten(
        new_client, connect, registry, app, caplog):
    conn, socket = await unread_socket(new_client, connect, registry, app)
    ref = weakref.ref(socket)

    sent, peak = 0, 0
    for _ in range(2000):  # at most 120 MB: far more than the kernel's buffers hold
        if not socket.send_json({"type": "bulk", "data": BULK}):
            break
        sent += 1
        peak = max(peak, socket.pending_write_bytes)
        if sent % 10 == 0:
            await asyncio.sleep(0)  # let the loop finish what the kernel took
    else:
        raise AssertionError("2000 messages queued for a client that reads nothing")
    assert peak <= 256 * 1024  # never over the bound
    assert registry.sockets() == []  # forgotten at once
    assert not socket.send_json({"type": "late"})  # and sends nothing more
    assert any("websocket_slow_consumer" in r.getMessage() for r in caplog.records)
    del socket

    # The client reads again: what was queued, then the close frame.
    messages = await drain(conn, timeout=30)
    assert conn.close_code == 1013 and conn.close_reason == "slow consumer"
    assert 1 <= len(messages) <= sent + 2
    await until(lambda: registry.slot_count() == 0, what="the slot to be given back")

    def collected() -> bool:
        gc.collect()
        return ref() is None

    await until(collected, what="the handler (and its buffers) to be freed")


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("app_settings", [{"websocket_max_write_buffer": None}])
async def test_the_backlog_measure_follows_what_the_client_has_not_taken(new_client, connect, registry, app):
    """Pins ``stream_backlog`` (Tornado's private ``IOStream._write_buffer``): it grows
    while the client does not read and falls back to 0 once it has read everything."""
    conn, socket = await unread_socket(new_client, connect, registry, app)
    assert stream_backlog(socket) == 0
    sent = 0
    while stream_backlog(socket) < 3 * len(BULK):
        assert sent < 2000, "the kernel took 120 MB?"
        for _ in range(10):
            assert socket.send_json({"type": "bulk", "n": sent, "data": BULK})
            sent += 1
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    backlog = stream_backlog(socket)
    assert backlog >= 3 * len(BULK)  # still waiting: the client reads nothing
    assert socket.pending_write_bytes >= backlog + WRITE_OVERHEAD  # and the writes are unfinished

    received = 0
    while received < sent + 2:  # welcome, the pong, then every bulk message
        raw = await asyncio.wait_for(conn.read_message(), SOON)
        assert raw is not None
        received += 1
    assert json.loads(raw)["n"] == sent - 1  # nothing dropped without a bound
    await until(lambda: socket.pending_write_bytes == 0, what="every write to finish")
    assert stream_backlog(socket) == 0
    assert registry.sockets() == [socket]


# -- keep-alive pings ------------------------------------------------------------------------

FAST_PINGS = {"websocket_ping_interval": 0.1, "websocket_ping_timeout": 0.3}


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("app_settings", [FAST_PINGS])
async def test_a_client_answering_the_pings_stays_open(new_client, connect, registry):
    ana = await registered(new_client)
    conn = await connect(ana)  # Tornado's client answers pings by itself while it reads
    for i in range(10):  # 1.5 s: five timeouts' worth
        await asyncio.sleep(0.15)
        await still_open(conn, f"alive {i}")
    assert len(registry) == 1


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("app_settings", [FAST_PINGS])
async def test_unsolicited_pongs_do_not_keep_a_silent_client_alive(new_client, connect, registry, app, caplog):
    ana = await registered(new_client)
    conn = await connect(ana, welcome=False)
    await until(lambda: len(registry) == 1)
    block_reading(conn)
    assert conn.protocol is not None and conn.protocol.stream is not None
    stream = conn.protocol.stream
    started = time.monotonic()
    while registry.sockets() and time.monotonic() - started < SOON:
        for payload in (b"", b"\x00" * 8, os.urandom(8)):  # what Tornado sends, and guesses
            stream.write(pong_frame(payload))
        await asyncio.sleep(0.02)
    assert registry.sockets() == [], "unsolicited pongs kept a silent client open"
    assert time.monotonic() - started < 2.0  # within interval + timeout, with slack
    assert any("websocket_ping_timeout" in r.getMessage() for r in caplog.records)

    messages = await drain(conn)  # it reads again: welcome, pong, then the close
    assert [json.loads(m)["type"] for m in messages] == ["welcome", "pong"]
    assert conn.close_code == 1000 and conn.close_reason == "ping timed out"
    await until(lambda: registry.slot_count() == 0, what="the slot to be given back")


# -- chat -------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_chat_names_the_sender_by_id_so_equal_names_are_told_apart(new_client, connect, app):
    alice = await registered(new_client, email="alice@example.com", name="Alice")
    impostor = await registered(new_client, email="mallory@example.com", name="Alice")
    alice_socket, impostor_socket = await connect(alice), await connect(impostor)
    alice_id, impostor_id = await user_id(app, "alice@example.com"), await user_id(app, "mallory@example.com")
    assert alice_id != impostor_id

    impostor_socket.write_message(json.dumps({"type": "chat", "text": "I am Alice"}))
    seen = await receive(alice_socket)
    assert seen == {"type": "chat", "from": {"id": impostor_id, "name": "Alice"}, "text": "I am Alice"}
    assert await receive(impostor_socket) == seen
    alice_socket.write_message(json.dumps({"type": "chat", "text": "no, I am"}))
    assert (await receive(impostor_socket))["from"] == {"id": alice_id, "name": "Alice"}
    assert (await receive(alice_socket))["from"]["id"] == alice_id

    script = (await alice.fetch("/static/live.js")).body.decode()
    assert "sender(message.from)" in script and "(you)" in script  # the page shows who


@pytest.mark.gen_test(timeout=30)
async def test_chat_refuses_invisible_bidi_and_separator_characters(new_client, connect):
    ana = await registered(new_client)
    conn = await connect(ana)
    for bad in (
        "\u202eevil.exe",  # right-to-left override (Cf)
        "zero\u200bwidth",  # zero-width space (Cf)
        "\ufeffbom",  # Cf
        "joined\u200dhere",  # ZWJ (Cf)
        "line\u2028sep",  # Zl
        "para\u2029sep",  # Zp
        "tab\there",  # Cc: only newline is kept
        "bell\x07", "del\x7f", "n\x85el", "\x1bESC",  # Cc
        "lone \ud800 surrogate",  # Cs (JSON can carry it)
        "private \ue000",  # Co
        "unassigned \u0378",  # Cn
        "tag \U000e0041",  # Cf
    ):
        conn.write_message(json.dumps({"type": "chat", "text": bad}))
        reply = await receive(conn)
        assert reply["type"] == "error" and reply["field"] == "text", (bad, reply)
        assert reply["error"].startswith("chat text must be")
    for good in ("two\nlines", "café ☕ 日本語 👍 🇫🇷", "שלום and مرحبا"):
        conn.write_message(json.dumps({"type": "chat", "text": good}))
        reply = await receive(conn)
        assert reply["type"] == "chat" and reply["text"] == good, (good, reply)


@pytest.mark.gen_test(timeout=30)
async def test_chat_refuses_blank_looking_and_zalgo_text(new_client, connect):
    ana = await registered(new_client)
    conn = await connect(ana)
    for bad in ("\u3164\u3164", " \u2800 ", "\u115f\u1160", "a" + "\u0301" * 5, "\u0301\u0301"):
        conn.write_message(json.dumps({"type": "chat", "text": bad}))
        reply = await receive(conn)
        assert reply["type"] == "error" and reply["field"] == "text", (bad, reply)
    conn.write_message(json.dumps({"type": "chat", "text": "cafe\u0301 ok"}))  # one accent is fine
    assert (await receive(conn))["type"] == "chat"


@pytest.mark.gen_test(timeout=30)
async def test_one_user_with_many_sockets_cannot_flood_the_chat(new_client, connect):
    """The chat rate is per user, not per socket: more sockets buy no more broadcasts."""
    from handlers.live import CHAT_BURST, CHAT_RATE

    ana = await registered(new_client)
    observer = await connect(await registered(new_client, "bo@example.com", "Bo"))
    senders = [await connect(ana) for _ in range(4)]
    started = time.monotonic()
    for round_ in range(CHAT_BURST):
        for conn in senders:
            conn.write_message(json.dumps({"type": "chat", "text": f"spam {round_}"}))
    seen = 0
    while True:
        try:
            message = await receive(observer, timeout=0.5)
        except TimeoutError:
            break
        seen += message["type"] == "chat"
    allowed = CHAT_BURST + CHAT_RATE * (time.monotonic() - started) + 1
    assert 1 <= seen <= allowed, (seen, allowed)  # 40 attempts, without the rate: 40 broadcasts
    refused = 0
    for conn in senders:
        while True:
            try:
                message = await receive(conn, timeout=0.3)
            except TimeoutError:
                break
            refused += message["type"] == "error" and message["error"].startswith("too many chat messages")
    assert refused >= 4 * CHAT_BURST - allowed


# -- the credentials version ----------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_a_session_without_a_credentials_version_is_refused(new_client, connect, app, caplog):
    ana = await registered(new_client)
    await still_open(await connect(ana))  # with its "cv": accepted
    manager = app.settings["session_manager"]
    [(key, record)] = await manager.store.list_user(await user_id(app), kind="session")
    assert "cv" in record.meta
    meta = {k: v for k, v in record.meta.items() if k != "cv"}
    assert await manager.store.update(key, set_items={}, unset_keys=(), expires=record.expires,
                                      updated=record.updated, meta=meta)
    caplog.set_level(logging.INFO, "sessions")
    assert (await refused(connect, ana)).code == 403
    assert any("stale login" in r.getMessage() for r in caplog.records)
