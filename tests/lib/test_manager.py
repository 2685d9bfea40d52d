"""Session semantics through real HTTP requests: the manager's load and commit rules.

A tiny app exposes session operations; an instrumented memory store counts store
calls, so "no store write" is proven, not assumed.
"""

from __future__ import annotations

import json
import logging

import pytest
from tornado.web import Application, RequestHandler

from sessions import KeyRing, SessionManager, SessionMixin, SessionOptions, generate_key, hash_session_id
from sessions.testing import FakeClock
from tests.fixtures.support import (
    Client,
    CookieJar,
    CountingStore,
    FlakyStore,
    is_deletion,
    set_cookie_headers,
)


class Ops(SessionMixin, RequestHandler):
    async def get(self, op: str) -> None:
        if op == "noop":
            self.write("no session here")
            return
        session = await self.get_session()
        if op == "read":
            self.write({"data": dict(session), "new": session.is_new, "user": session.user_id})
        elif op == "flashes":
            self.write({"flashes": await self.pop_flashes()})
        else:
            self.send_error(404)

    async def post(self, op: str) -> None:
        session = await self.get_session()
        body = json.loads(self.request.body or b"{}")
        if op == "set":
            session.update(body)
        elif op == "delete":
            for name in body["keys"]:
                session.pop(name, None)
        elif op == "append":
            session[body["key"]].append(body["value"])
        elif op == "login":
            session.regenerate(keep_data=body.get("keep", True))
            session.user_id = body["user"]
        elif op == "logout":
            session.destroy()
        elif op == "flash":
            session.flash(body["message"], body.get("category", "info"))
        elif op == "redirect":
            session["redirected"] = True
            self.redirect("/op/read")
            return
        elif op == "crash":
            session["lost"] = True
            raise RuntimeError("handler bug")
        self.write({"data": dict(session)})


def build(store, clock=None, **options) -> Application:
    keys = KeyRing.from_text(generate_key())
    manager = SessionManager(store, keys, SessionOptions(**options), clock=clock or FakeClock())
    return Application([(r"/op/(\w+)", Ops)], session_manager=manager)


@pytest.fixture
def store():
    return CountingStore()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def options():
    return {}


@pytest.fixture
def app(store, clock, options):
    return build(store, clock, **options)


@pytest.fixture
def jar():
    return CookieJar()


@pytest.fixture
def call(http_client, base_url, jar):
    client = Client(http_client, base_url, jar=jar)

    async def call(method: str, op: str, body: dict | None = None, *, follow=True, cookies=True):
        data = json.dumps(body or {}) if method == "POST" else None
        return await client.fetch(f"/op/{op}", method, data, follow=follow, cookies=cookies)

    return call


def stored_key(app, jar) -> str:
    """The store key of the session the jar's cookie names (public API: open, hash)."""
    manager = app.settings["session_manager"]
    session_id = manager.keys.open(jar.cookies["sid"], "sid")
    assert session_id is not None
    return hash_session_id(session_id.decode())


def payload(response) -> dict:
    return json.loads(response.body)


# -- laziness and save-uninitialized --------------------------------------------------


@pytest.mark.gen_test
async def test_handler_without_session_never_touches_store(call, store):
    response = await call("GET", "noop")
    assert response.code == 200
    assert not store.calls
    assert "Set-Cookie" not in response.headers


@pytest.mark.gen_test
async def test_no_cookie_means_no_store_access_and_no_cookie(call, store):
    response = await call("GET", "read")
    assert payload(response) == {"data": {}, "new": True, "user": None}
    assert not store.calls
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Cookie"


@pytest.mark.gen_test
async def test_save_uninitialized_on_stores_empty_session(call, store, app):
    manager = app.settings["session_manager"]
    object.__setattr__(manager.options, "save_uninitialized", True)
    response = await call("GET", "read")
    assert store.calls["create"] == 1
    assert set_cookie_headers(response, "sid")


@pytest.mark.gen_test
async def test_first_write_creates_session_and_cookie(call, store, jar):
    response = await call("POST", "set", {"a": 1})
    assert store.calls["create"] == 1
    [header] = set_cookie_headers(response, "sid")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "sid" in jar.cookies
    assert payload(await call("GET", "read"))["data"] == {"a": 1}


@pytest.mark.gen_test
async def test_read_only_request_writes_nothing_inside_touch_window(call, store):
    await call("POST", "set", {"a": 1})
    before = store.writes
    response = await call("GET", "read")
    assert payload(response)["data"] == {"a": 1}
    assert store.writes == before
    assert not set_cookie_headers(response, "sid")  # not rolling: no cookie re-sent


@pytest.mark.gen_test
async def test_touch_after_window_moves_expiry_once(call, store, clock):
    await call("POST", "set", {"a": 1})
    clock.now += 61
    await call("GET", "read")
    assert store.calls["touch"] == 1
    await call("GET", "read")  # inside the new window
    assert store.calls["touch"] == 1


@pytest.mark.gen_test
@pytest.mark.parametrize("options", [{"resave": True}])
async def test_resave_writes_unchanged_session(call, store, options):
    await call("POST", "set", {"a": 1})
    await call("GET", "read")
    assert store.calls["update"] == 1


@pytest.mark.gen_test
@pytest.mark.parametrize("options", [{"rolling": True}])
async def test_rolling_resends_cookie_on_every_response(call, options):
    await call("POST", "set", {"a": 1})
    response = await call("GET", "read")
    assert set_cookie_headers(response, "sid")


@pytest.mark.gen_test
async def test_unchanged_write_is_not_a_write(call, store):
    await call("POST", "set", {"a": 1})
    await call("POST", "set", {"a": 1})
    assert store.calls["update"] == 0


@pytest.mark.gen_test
async def test_in_place_mutation_and_deletion_are_saved(call):
    await call("POST", "set", {"items": [1], "gone": "x"})
    await call("POST", "append", {"key": "items", "value": 2})
    await call("POST", "delete", {"keys": ["gone"]})
    assert payload(await call("GET", "read"))["data"] == {"items": [1, 2]}


@pytest.mark.gen_test
async def test_removing_everything_destroys_the_session(app, call, store, jar):
    await call("POST", "set", {"a": 1})
    key = stored_key(app, jar)
    await call("POST", "delete", {"keys": ["a"]})
    assert await store.load(key) is None
    assert "sid" not in jar.cookies


# -- post-then-redirect, failures ------------------------------------------------------


@pytest.mark.gen_test
async def test_write_completes_before_redirect(call):
    response = await call("POST", "redirect", follow=False)
    assert response.code == 302
    assert payload(await call("GET", "read"))["data"] == {"redirected": True}


@pytest.mark.gen_test
async def test_handler_crash_does_not_commit(call, store):
    await call("POST", "set", {"a": 1})
    response = await call("POST", "crash")
    assert response.code == 500
    assert payload(await call("GET", "read"))["data"] == {"a": 1}


@pytest.mark.gen_test
@pytest.mark.parametrize("store", [FlakyStore()])
async def test_store_failure_is_a_clean_503_and_loses_nothing(call, store, caplog):
    await call("POST", "set", {"a": 1})
    store.down = True
    with caplog.at_level(logging.ERROR, logger="sessions"):
        on_load = await call("GET", "read")
        on_save = await call("POST", "set", {"b": 2})
    assert on_load.code == 503 and on_save.code == 503
    assert b"Traceback" not in on_load.body
    assert any("session store failed" in r.getMessage() for r in caplog.records)
    store.down = False
    assert payload(await call("GET", "read"))["data"] == {"a": 1}


@pytest.mark.gen_test
@pytest.mark.parametrize("store", [FlakyStore()])
async def test_store_failure_on_create_sets_no_cookie(call, store, jar):
    store.down = True
    response = await call("POST", "set", {"a": 1})
    assert response.code == 503
    assert not set_cookie_headers(response, "sid")
    assert "sid" not in jar.cookies


# -- identity: regenerate, destroy, fixation ------------------------------------------


@pytest.mark.gen_test
async def test_login_regenerates_id_and_deletes_old(app, call, store, jar):
    await call("POST", "set", {"cart": [1]})
    old_cookie = jar.cookies["sid"]
    old_key = stored_key(app, jar)
    await call("POST", "login", {"user": "alice"})
    assert jar.cookies["sid"] != old_cookie
    assert await store.load(old_key) is None
    data = payload(await call("GET", "read"))
    assert data == {"data": {"cart": [1]}, "new": False, "user": "alice"}


@pytest.mark.gen_test
async def test_regenerate_without_data(call):
    await call("POST", "set", {"cart": [1]})
    await call("POST", "login", {"user": "alice", "keep": False})
    assert payload(await call("GET", "read"))["data"] == {}


@pytest.mark.gen_test
async def test_old_cookie_after_regenerate_is_a_fresh_session(call, jar):
    await call("POST", "set", {"secret": 1})
    old = dict(jar.cookies)
    await call("POST", "login", {"user": "alice"})
    jar.cookies = old
    assert payload(await call("GET", "read")) == {"data": {}, "new": True, "user": None}


@pytest.mark.gen_test
async def test_logout_destroys_and_clears_cookie(call, store, jar):
    await call("POST", "set", {"a": 1})
    response = await call("POST", "logout")
    [header] = set_cookie_headers(response, "sid")
    assert jar.is_deletion(header)
    assert await store.live_keys() == []
    assert "sid" not in jar.cookies


@pytest.mark.gen_test
async def test_unknown_session_id_is_never_adopted(call, store, app, jar):
    manager = app.settings["session_manager"]
    forged_id = "attacker-chosen-id"
    jar.cookies["sid"] = manager.keys.seal(forged_id.encode(), "sid")
    await call("POST", "set", {"a": 1})
    assert await store.load(hash_session_id(forged_id)) is None
    assert await store.live_keys() == [stored_key(app, jar)]
    assert stored_key(app, jar) != hash_session_id(forged_id)
    assert manager.keys.open(jar.cookies["sid"], "sid") != forged_id.encode()


@pytest.mark.gen_test
async def test_tampered_cookie_is_absent_and_logged(call, store, jar, caplog):
    await call("POST", "set", {"a": 1})
    value = jar.cookies["sid"]
    jar.cookies["sid"] = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    with caplog.at_level(logging.WARNING, logger="sessions.security"):
        response = await call("GET", "read")
    assert response.code == 200
    assert payload(response)["new"] is True
    assert any("cookie_rejected" in r.getMessage() for r in caplog.records)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "garbage", ["", "x", "%%%", "A" * 5000, "AQ" * 60, "\u00e9t\u00e9", "' OR 1=1 --", '{"$gt": ""}']
)
async def test_garbage_cookies_never_500(http_client, base_url, garbage, store):
    response = await http_client.fetch(
        f"{base_url}/op/read", headers={"Cookie": f"sid={garbage}"}, raise_error=False
    )
    assert response.code in (200, 400)
    assert not store.writes


# -- expiry ------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_idle_timeout_ends_session(call, clock, store):
    await call("POST", "set", {"a": 1})
    clock.now += 30 * 60 + 1
    assert payload(await call("GET", "read"))["new"] is True
    assert await store.live_keys() == []  # the expired record is gone


@pytest.mark.gen_test
@pytest.mark.parametrize("options", [{"absolute_timeout": 3600, "idle_timeout": 1800}])
async def test_absolute_timeout_ends_active_session(call, clock, options):
    await call("POST", "set", {"a": 1})
    for _ in range(2):  # active every 20 minutes: the idle timeout never hits
        clock.now += 20 * 60
        await call("POST", "set", {"a": clock.now})
    assert payload(await call("GET", "read"))["new"] is False
    clock.now += 21 * 60  # 61 minutes after creation, 21 after the last request
    assert payload(await call("GET", "read"))["new"] is True


# -- concurrency and flash -------------------------------------------------------------


@pytest.mark.gen_test
async def test_concurrent_requests_changing_different_keys_both_persist(call, http_client, base_url, jar):
    import asyncio

    await call("POST", "set", {"base": 0})
    headers = jar.header()

    async def set_key(i: int):
        return await http_client.fetch(
            f"{base_url}/op/set", method="POST", body=json.dumps({f"k{i}": i}), headers=headers
        )

    await asyncio.gather(*(set_key(i) for i in range(10)))
    data = payload(await call("GET", "read"))["data"]
    assert data == {"base": 0, **{f"k{i}": i for i in range(10)}}


@pytest.mark.gen_test
async def test_request_racing_logout_does_not_resurrect_session(app, call, store, jar):
    await call("POST", "set", {"a": 1})
    key = stored_key(app, jar)
    manager = app.settings["session_manager"]

    class Handler:  # what a second, slower request holds: a loaded session
        request = type("R", (), {"remote_ip": "127.0.0.1", "path": "/", "headers": {}})()

        def get_cookie(self, name):
            return jar.cookies.get(name)

        def add_header(self, name, value):
            assert name == "Set-Cookie"
            assert is_deletion(value), "must not re-set the cookie of a destroyed session"
            self.cleared = True

    slow = Handler()
    session = await manager.load(slow)
    await call("POST", "logout")
    session["b"] = 2
    plan = manager.plan(slow, session)
    assert plan is not None
    await manager.execute(slow, session, plan)
    assert slow.cleared
    assert await store.load(key) is None
    assert await store.live_keys() == []


@pytest.mark.gen_test
async def test_flash_is_shown_exactly_once(call):
    await call("POST", "set", {"keep": 1})
    await call("POST", "flash", {"message": "Saved!", "category": "success"})
    await call("POST", "flash", {"message": "Second"})
    first = payload(await call("GET", "flashes"))["flashes"]
    assert first == [["success", "Saved!"], ["info", "Second"]]
    assert payload(await call("GET", "flashes"))["flashes"] == []
    assert payload(await call("GET", "read"))["data"] == {"keep": 1}


@pytest.mark.gen_test
async def test_destroy_user_sessions_ends_every_session_of_user(app, call, http_client, base_url, store):
    manager = app.settings["session_manager"]
    jars = [CookieJar() for _ in range(3)]
    for jar in jars:
        for op, body in (("set", {"x": 1}), ("login", {"user": "alice"})):
            await Client(http_client, base_url, jar=jar).fetch(f"/op/{op}", "POST", json.dumps(body))
    await call("POST", "login", {"user": "bob"})
    assert await manager.destroy_user_sessions("alice") == 3
    for jar in jars:
        response = await http_client.fetch(f"{base_url}/op/read", headers=jar.header())
        assert payload(response)["new"] is True
    assert payload(await call("GET", "read"))["user"] == "bob"


@pytest.mark.gen_test
async def test_a_plan_only_when_there_is_work(app, call, jar, clock):
    await call("POST", "set", {"a": [1]})
    manager = app.settings["session_manager"]

    class Handler:
        request = type("R", (), {"remote_ip": "127.0.0.1", "path": "/", "headers": {}})()

        def get_cookie(self, name):
            return jar.cookies.get(name)

    handler = Handler()
    session = await manager.load(handler)
    assert manager.plan(handler, session) is None
    _ = session["a"]  # a read of a mutable value alone is not a change
    assert manager.plan(handler, session) is None
    session["a"].append(2)
    assert manager.plan(handler, session) is not None

    fresh = await manager.load(handler)
    clock.now += manager.options.touch_after
    assert manager.plan(handler, fresh) is not None  # touch is due


# -- limits ---------------------------------------------------------------------------


class _SizeHandler(SessionMixin, RequestHandler):
    async def post(self):
        session = await self.get_session()
        session["blob"] = "x" * int(self.get_argument("n"))
        self.write({"ok": True})

    async def get(self):
        session = await self.get_session()
        self.write({"blob": len(session.get("blob", ""))})


@pytest.mark.gen_test
async def test_a_session_over_max_session_bytes_is_a_413_and_keeps_what_was_stored(http_client):
    from tornado.httpserver import HTTPServer

    from sessions.stores.memory import MemoryStore
    from tests.fixtures.support import free_port

    manager = SessionManager(MemoryStore(), KeyRing.from_text(generate_key()), SessionOptions(max_session_bytes=2000))
    app = Application([(r"/s", _SizeHandler)], session_manager=manager)
    server = HTTPServer(app)
    port = free_port()
    server.listen(port, "127.0.0.1")
    try:
        jar = CookieJar()
        base = f"http://127.0.0.1:{port}/s"
        ok = await http_client.fetch(base + "?n=1000", method="POST", body="", raise_error=False)
        assert ok.code == 200
        jar.update(ok)
        big = await http_client.fetch(base + "?n=5000", method="POST", body="", headers=jar.header(), raise_error=False)
        assert big.code == 413
        kept = await http_client.fetch(base, headers=jar.header())
        assert json.loads(kept.body) == {"blob": 1000}  # the refused request stored nothing
        smaller = await http_client.fetch(base + "?n=600", method="POST", body="", headers=jar.header(), raise_error=False)
        assert smaller.code == 200
        assert json.loads((await http_client.fetch(base, headers=jar.header())).body) == {"blob": 600}
    finally:
        server.stop()


def test_flash_queue_drops_the_oldest_beyond_the_limit():
    from sessions.session import MAX_FLASHES, Session, state_of

    session = Session(None, None, created=0, last_access=0, expires=1)
    for i in range(MAX_FLASHES + 20):
        session.flash(f"m{i}")
    state = state_of(session)
    stored, unsaved = state.flash_names(session)
    messages = state.drop_flashes(session, stored + unsaved, {})
    assert len(messages) == MAX_FLASHES and messages[0][1] == "m20" and messages[-1][1] == f"m{MAX_FLASHES + 19}"


class _NativeStore(CountingStore):
    @property
    def expires_natively(self) -> bool:
        return True


@pytest.mark.gen_test
@pytest.mark.parametrize("options", [{"prune_interval": 0.05}])
async def test_stores_that_do_not_expire_natively_are_pruned_without_an_app_timer(app, store, call):
    import asyncio

    manager = app.settings["session_manager"]
    await call("GET", "read")
    assert store.calls["prune"] == 0  # a read never touches the store
    await call("POST", "set", {"a": 1})  # the first write prunes, in the background
    await manager.close()  # waits for it
    assert store.calls["prune"] == 1
    await call("POST", "set", {"a": 2})  # within the interval: no second prune
    await manager.close()
    assert store.calls["prune"] == 1
    await asyncio.sleep(0.06)
    await call("POST", "set", {"a": 3})
    await manager.close()
    assert store.calls["prune"] == 2


def test_no_prune_for_native_stores_or_when_turned_off():
    native = _NativeStore()
    manager = SessionManager(native, KeyRing.from_text(generate_key()), SessionOptions(prune_interval=0.05))
    assert manager.pruner is None
    off = SessionManager(CountingStore(), KeyRing.from_text(generate_key()), SessionOptions(prune_interval=None))
    assert off.pruner is None


def test_misconfiguration_fails_at_once_with_the_fix_in_the_message():
    from sessions.manager import MisconfiguredError
    from sessions.stores.memory import MemoryStore
    from sessions.tornado import check_application

    with pytest.raises(MisconfiguredError, match="KeyRing.from_text"):
        SessionManager(MemoryStore(), generate_key())  # a raw key, not a ring
    with pytest.raises(MisconfiguredError, match="open_store"):
        SessionManager("sqlite:///x.db", KeyRing.from_text(generate_key()))
    with pytest.raises(MisconfiguredError, match="session_manager=SessionManager"):
        check_application(Application([]))
    with pytest.raises(ValueError, match="python -m sessions.keygen"):
        KeyRing.from_text("c2hvcnQ")  # base64url, but 5 bytes
    with pytest.raises(ValueError, match="python -m sessions.keygen"):
        KeyRing([b"too short"])


def test_keygen_has_a_real_help_and_prints_keys():
    import subprocess
    import sys

    help_text = subprocess.run([sys.executable, "-m", "sessions.keygen", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "SESSION_KEYS" in help_text.stdout and "usage" in help_text.stdout
    keys = subprocess.run([sys.executable, "-m", "sessions.keygen", "-n", "2"], capture_output=True, text=True)
    lines = keys.stdout.split()
    assert len(lines) == 2 and all(KeyRing.from_text(line) for line in lines)


def test_a_missing_driver_names_the_extra_to_install(monkeypatch):
    import sys

    from sessions import open_store

    for name in [n for n in sys.modules if n == "redis" or n.startswith("redis.")] or ["redis"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "sessions.stores.redis", raising=False)
    with pytest.raises(ImportError, match=r"tornado-sessions\[redis\]"):
        open_store("redis://127.0.0.1:1/0")


@pytest.mark.gen_test
async def test_a_creation_check_that_fails_ends_the_new_session_and_clears_the_cookie(app, call, jar, store):
    manager = app.settings["session_manager"]
    seen = []

    async def still_current(session):
        seen.append(session.user_id)
        return session.user_id != "revoked"

    manager.creation_checks.append(still_current)
    response = await call("POST", "login", {"user": "ana"})
    assert response.code == 200 and seen == ["ana"]
    assert json.loads((await call("GET", "read")).body)["user"] == "ana"
    response = await call("POST", "login", {"user": "revoked"})
    assert seen == ["ana", "revoked"]
    assert any(is_deletion(h) for h in set_cookie_headers(response, "sid"))
    assert json.loads((await call("GET", "read")).body)["user"] is None  # nothing stored
    assert await store.list_user("revoked") == []
    await call("POST", "set", {"visitor": 1})  # no user: no check runs
    assert seen == ["ana", "revoked"]
