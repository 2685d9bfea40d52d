"""The idle deadline over the demo's ``/ws`` (issue 14 section 3), with real short timeouts.

The demo app on its real server class with an idle timeout of 3 s, a warning 2 s before
it and (where it matters) an absolute timeout of 4 s; Tornado's websocket client. Every
wait is a future bounded by a timeout, never a sleep standing in for an event:

* the welcome carries both deadlines; ``expiring`` arrives before the idle deadline;
* ``activity`` is answered ``deadlines`` with a later idle deadline, never past the
  absolute one, and at the absolute deadline the socket closes all the same;
* without activity the socket closes with 1008 "session expired" at the idle deadline,
  and the session is gone for HTTP too;
* ``activity`` more often than the touch interval costs one store touch, not one each;
* ``--idle-timeout`` / ``--absolute-timeout`` / ``--expiry-warning`` (and their
  environment variables) reach the session options and the ``websocket_expiry_warning``
  setting, and contradicting values are refused with a message naming the flags.

The deadlines are the store's wall-clock seconds (``time.time``): the memory store and
the manager use the real clock here, since the expiry timer sleeps in real time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

import server
from server import check_timeouts, session_options_for
from sessions import generate_key
from sessions.websocket import activity_touch_interval
from tests.fixtures.api import register
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.support import Client, CountingStore

IDLE = 3.0
WARNING = 2.0
#: Clock reading and message delivery on a busy machine.
SLACK = 0.5

app, http_server = demo_app_fixtures()


@pytest.fixture
def demo_store():
    return CountingStore()  # the real clock: the expiry timer sleeps in real time


@pytest.fixture
def absolute_timeout():
    return 60.0


@pytest.fixture
def demo_config(demo_config, absolute_timeout):
    demo_config.session_options = session_options_for(False, idle_timeout=IDLE, absolute_timeout=absolute_timeout)
    demo_config.expiry_warning = WARNING
    demo_config.ws_recheck_interval = 60.0  # the socket's own timer closes it, not the re-check
    return demo_config


@pytest.fixture
def new_client(http_client, base_url, http_server, registry):
    return lambda **kw: Client(http_client, base_url, **kw)


@pytest.fixture
def connect(base_url):
    """Open /ws with a client's cookies; the welcome message is returned with the socket."""
    opened: list[WebSocketClientConnection] = []
    url = base_url.replace("http://", "ws://", 1) + "/ws"

    async def connect(client: Client) -> tuple[WebSocketClientConnection, dict[str, Any]]:
        conn = await websocket_connect(HTTPRequest(url, headers=client.jar.header(), connect_timeout=5,
                                                   request_timeout=5))
        opened.append(conn)
        welcome = await receive(conn)
        assert welcome["type"] == "welcome", welcome
        return conn, welcome

    yield connect
    for conn in opened:
        conn.close()


async def receive(conn: WebSocketClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(conn.read_message(), timeout)
    assert raw is not None, f"closed: {conn.close_code} {conn.close_reason}"
    return json.loads(raw)


async def receive_type(conn: WebSocketClientConnection, kind: str, timeout: float) -> tuple[dict[str, Any], float]:
    """The next message of type ``kind`` (others skipped) and when it arrived (Unix seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await receive(conn, max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message, time.time()


async def closed(conn: WebSocketClientConnection, timeout: float) -> tuple[int | None, str | None, float, list]:
    """Read until the server closes: the close code and reason, when, and the messages before."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(conn.read_message(), max(0.01, deadline - time.monotonic()))
        if raw is None:
            return conn.close_code, conn.close_reason, time.time(), messages
        messages.append(json.loads(raw))


async def activity(conn: WebSocketClientConnection) -> dict[str, Any]:
    conn.write_message(json.dumps({"type": "activity"}))
    message, _ = await receive_type(conn, "deadlines", 2.0)
    return message


async def logged_in(new_client) -> Client:
    client = new_client()
    await register(client)
    return client


# -- the protocol over /ws ----------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_the_welcome_carries_the_deadlines_and_expiring_comes_before_the_idle_one(new_client, connect):
    client = await logged_in(new_client)
    before = time.time()
    conn, welcome = await connect(client)
    idle, absolute = welcome["idle_deadline"], welcome["absolute_deadline"]
    assert before - SLACK <= idle <= before + IDLE + SLACK
    assert idle + 0.01 < absolute <= before + 60 + SLACK
    assert welcome["user"]["name"] == "Ana"

    expiring, at = await receive_type(conn, "expiring", IDLE + SLACK)
    assert expiring == {"type": "expiring", "idle_deadline": idle, "absolute_deadline": absolute}
    assert idle - WARNING - 0.05 <= at < idle  # about WARNING seconds ahead, never after
    code, reason, _, _ = await closed(conn, IDLE + SLACK)  # and the socket still closes after it
    assert (code, reason) == (1008, "session expired")


@pytest.mark.gen_test(timeout=20)
async def test_without_activity_the_socket_closes_1008_at_the_idle_deadline(new_client, connect):
    client = await logged_in(new_client)
    conn, welcome = await connect(client)
    code, reason, at, messages = await closed(conn, IDLE + 2 * SLACK)
    assert (code, reason) == (1008, "session expired")
    assert at >= welcome["idle_deadline"] - 0.05  # not before it
    assert [m["type"] for m in messages] == ["expiring"]
    # The session itself is over: HTTP agrees with the socket.
    response = await client.fetch("/auth/profile", headers={"Accept": "application/json"})
    assert response.code == 401


@pytest.mark.gen_test(timeout=20)
async def test_activity_moves_the_idle_deadline_and_keeps_the_socket_open(new_client, connect):
    client = await logged_in(new_client)
    conn, welcome = await connect(client)
    first, _ = await receive_type(conn, "expiring", IDLE + SLACK)  # a second after the last touch
    sent = time.time()
    answer = await activity(conn)
    assert answer["absolute_deadline"] == welcome["absolute_deadline"]
    assert answer["idle_deadline"] > first["idle_deadline"]
    assert sent + IDLE - SLACK <= answer["idle_deadline"] <= time.time() + IDLE + 0.01
    # The next warning is about the new deadline, and the socket outlives the first one.
    second, at = await receive_type(conn, "expiring", IDLE + SLACK)
    assert second["idle_deadline"] == answer["idle_deadline"]
    assert answer["idle_deadline"] - WARNING - 0.05 <= at < answer["idle_deadline"]
    code, reason, at, _ = await closed(conn, IDLE + SLACK)
    assert (code, reason) == (1008, "session expired")
    assert at >= answer["idle_deadline"] - 0.05 > first["idle_deadline"]


@pytest.mark.gen_test(timeout=20)
async def test_activity_more_often_than_the_touch_interval_touches_the_store_once(new_client, connect, demo_store, app):
    manager = app.settings["session_manager"]
    assert activity_touch_interval(manager) >= 1.0  # what makes two quick activities one touch
    client = await logged_in(new_client)
    conn, _ = await connect(client)
    await receive_type(conn, "expiring", IDLE + SLACK)
    touches = demo_store.calls["touch"]
    answers = [await activity(conn) for _ in range(4)]  # well within one interval
    assert demo_store.calls["touch"] == touches + 1
    assert len({a["idle_deadline"] for a in answers}) == 1  # only the first one moved it


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("absolute_timeout", [4.0])
async def test_activity_never_moves_the_deadline_past_the_absolute_one(new_client, connect):
    client = await logged_in(new_client)
    conn, welcome = await connect(client)
    absolute = welcome["absolute_deadline"]
    assert welcome["idle_deadline"] < absolute
    await receive_type(conn, "expiring", IDLE + SLACK)
    answer = await activity(conn)  # now + 3 s would be past created + 4 s
    assert answer["idle_deadline"] == absolute and answer["absolute_deadline"] == absolute
    warning, _ = await receive_type(conn, "expiring", 2.0)  # the capped deadline is within the warning
    assert warning["idle_deadline"] == absolute
    conn.write_message(json.dumps({"type": "activity"}))  # activity cannot keep it open
    code, reason, at, messages = await closed(conn, 2 * SLACK + 2.0)
    assert (code, reason) == (1008, "session expired")
    assert at >= absolute - 0.05
    assert all(m.get("idle_deadline", absolute) <= absolute for m in messages)


@pytest.mark.gen_test(timeout=20)
async def test_ping_and_chat_are_no_activity(new_client, connect):
    """Only an explicit ``activity`` extends the session (socket traffic does not)."""
    client = await logged_in(new_client)
    conn, welcome = await connect(client)
    conn.write_message(json.dumps({"type": "ping", "id": 1}))
    conn.write_message(json.dumps({"type": "chat", "text": "still here"}))
    code, reason, at, messages = await closed(conn, IDLE + 2 * SLACK)
    assert (code, reason) == (1008, "session expired")
    assert at < welcome["idle_deadline"] + 2 * SLACK
    assert {"pong", "chat", "expiring"} <= {m["type"] for m in messages}


@pytest.mark.gen_test
async def test_the_live_page_has_the_countdown_and_an_accessible_csp_clean_notice(new_client, app):
    client = await logged_in(new_client)
    response = await client.fetch("/live")
    assert response.code == 200
    html = response.body.decode()
    csp = response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "default-src 'self'" in csp
    assert "<script>" not in html and " style=" not in html and "<style" not in html  # no inline code or styles
    assert 'data-server-time="' in html
    assert 'id="live-alerts" class="live-alerts" aria-live="assertive"' in html
    assert '<button type="button" id="live-stay">Stay signed in</button>' in html
    assert 'id="live-idle"' in html and 'id="live-absolute"' in html
    assert "Your session expired" in html and 'href="/login?next=%2Flive"' in html
    script = await client.fetch("/static/live.js")
    assert script.code == 200
    for needle in (b'"activity"', b'"expiring"', b'"deadlines"', b'"session expired"'):
        assert needle in script.body


# -- the flags -----------------------------------------------------------------------------


@pytest.fixture
def flag_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SESSION_KEYS", generate_key())
    for name in ("IDLE_TIMEOUT", "ABSOLUTE_TIMEOUT", "EXPIRY_WARNING", "SESSION_STORE", "MONGODB_URL", "PRODUCTION"):
        monkeypatch.delenv(name, raising=False)
    return ["--store", "memory://", "--data-dir", str(tmp_path / "data")]


def test_the_timeout_flags_default_and_reach_the_options_and_the_setting(flag_env):
    _, config = server.parse_config(flag_env)
    options = config.session_options
    assert (options.idle_timeout, options.absolute_timeout, config.expiry_warning) == (1800, 43200, 120)
    assert options.touch_after == 60

    _, config = server.parse_config([*flag_env, "--idle-timeout", "60", "--expiry-warning", "20"])
    options = config.session_options
    assert (options.idle_timeout, options.absolute_timeout, config.expiry_warning) == (60, 43200, 20)
    assert options.touch_after == 6  # a tenth of a short idle timeout, so that it can move at all
    application = server.make_app(config)
    assert application.settings["websocket_expiry_warning"] == 20
    manager = application.settings["session_manager"]
    assert (manager.options.idle_timeout, manager.options.absolute_timeout) == (60, 43200)


def test_the_timeout_flags_read_their_environment_variables(flag_env, monkeypatch):
    monkeypatch.setenv("IDLE_TIMEOUT", "600")
    monkeypatch.setenv("ABSOLUTE_TIMEOUT", "3600")
    monkeypatch.setenv("EXPIRY_WARNING", "30")
    _, config = server.parse_config(flag_env)
    assert (config.session_options.idle_timeout, config.session_options.absolute_timeout) == (600, 3600)
    assert config.expiry_warning == 30
    _, config = server.parse_config([*flag_env, "--expiry-warning", "45"])  # the flag wins
    assert config.expiry_warning == 45


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--idle-timeout", "0"], "--idle-timeout must be a positive number of seconds"),
        (["--absolute-timeout", "-5"], "--absolute-timeout must be a positive number of seconds"),
        (["--expiry-warning", "0"], "--expiry-warning must be a positive number of seconds"),
        (["--idle-timeout", "nan"], "--idle-timeout must be a positive number of seconds"),
        (["--absolute-timeout", "inf"], "--absolute-timeout must be a positive number of seconds"),
        (["--idle-timeout", "7200", "--absolute-timeout", "3600"], "must not be longer than --absolute-timeout"),
        (["--idle-timeout", "60"], "--expiry-warning (120 s) must be shorter than --idle-timeout (60 s)"),
        (["--idle-timeout", "60", "--expiry-warning", "60"], "must be shorter than --idle-timeout"),
    ],
)
def test_inconsistent_timeouts_are_refused_with_a_clear_message(flag_env, flags, message):
    with pytest.raises(SystemExit) as info:
        server.parse_config([*flag_env, *flags])
    assert message in str(info.value.code)
    assert str(info.value.code).startswith("error: ")


def test_a_timeout_that_is_no_number_is_an_argparse_error(flag_env, monkeypatch, capsys):
    monkeypatch.setenv("IDLE_TIMEOUT", "half an hour")
    with pytest.raises(SystemExit) as info:
        server.parse_config(flag_env)
    assert info.value.code == 2
    assert "argument --idle-timeout: invalid float value: 'half an hour'" in capsys.readouterr().err


def test_check_timeouts_accepts_the_edges():
    check_timeouts(60, 60, 59.5)  # idle equal to absolute; warning just under idle
    with pytest.raises(ValueError, match="--expiry-warning"):
        check_timeouts(60, 60, 60)
