"""The commit plan, atomic flash, key rotation re-seal, and the store registry and clock.

Real HTTP requests through a tiny app on the library alone; instrumented real stores
prove what was (not) written.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from tornado.web import Application, RequestHandler

import sessions.tracking as session_module
from sessions import (
    CookieOptions,
    KeyRing,
    SessionManager,
    SessionMixin,
    SessionOptions,
    generate_key,
    hash_session_id,
    open_store,
    register_store,
)
from sessions.stores.memory import MemoryStore
from sessions.stores.sqlite import SQLiteStore
from tests.fixtures.support import Client, CountingStore, set_cookie_headers


class Ops(SessionMixin, RequestHandler):
    async def get(self, op: str) -> None:
        session = await self.get_session()
        if op == "flashes":
            self.write({"flashes": await self.pop_flashes(self.get_argument("category", None))})
        else:
            self.write({"data": dict(session), "user": session.user_id})

    async def post(self, op: str) -> None:
        session = await self.get_session()
        body = json.loads(self.request.body or b"{}")
        if op == "set":
            session.update(body)
        elif op == "flash":
            for message in body["messages"]:
                session.flash(message, body.get("category", "info"))
        elif op == "flash-and-pop":
            session.flash("same request")
            self.write({"flashes": await self.pop_flashes()})
            return
        elif op == "login":
            session.regenerate()
            session.user_id = body["user"]
            session.meta.update({"ip": self.request.remote_ip, "ua": self.request.headers.get("User-Agent", "")})
        self.write({"data": dict(session)})


def build(store, keys=None, **options) -> Application:
    manager = SessionManager(store, keys or KeyRing.from_text(generate_key()), SessionOptions(**options))
    return Application([(r"/op/([\w-]+)", Ops)], session_manager=manager)


@pytest.fixture
def store(clock):
    return CountingStore(clock=clock)


@pytest.fixture
def options():
    return {}


@pytest.fixture
def app(store, options):
    return build(store, **options)


@pytest.fixture
def client(http_client, base_url):
    return Client(http_client, base_url)


def body(response) -> dict:
    return json.loads(response.body)


# -- one plan, values encoded once ----------------------------------------------------


@pytest.mark.gen_test
async def test_a_write_encodes_each_changed_value_once(client, monkeypatch):
    await client.fetch("/op/set", "POST", json.dumps({"a": 1}))
    encoded: list[object] = []
    real = session_module._ENCODER.encode

    class Counting:
        def encode(self, value):
            encoded.append(value)
            return real(value)

    monkeypatch.setattr(session_module, "_ENCODER", Counting())
    await client.fetch("/op/set", "POST", json.dumps({"a": 2, "b": "text", "c": [1, 2]}))
    # __setitem__ checks each value once; the plan reuses that text for immutable values
    # and encodes the list once more (it could have been mutated in place since). Before
    # the plan, deciding and committing each encoded every changed value again.
    assert sorted(map(repr, encoded)) == sorted(map(repr, [2, "text", [1, 2], [1, 2]]))


@pytest.mark.gen_test
async def test_plan_is_none_for_a_read_only_request_and_the_manager_agrees(app, client, store):
    await client.fetch("/op/set", "POST", json.dumps({"a": [1]}))
    manager = app.settings["session_manager"]

    class Handler:
        request = type("R", (), {"remote_ip": "127.0.0.1", "path": "/", "headers": {}, "protocol": "http"})()

        def get_cookie(self, name):
            return client.jar.cookies.get(name)

    handler = Handler()
    session = await manager.load(handler)
    assert manager.plan(handler, session) is None
    session["a"].append(2)
    plan = manager.plan(handler, session)
    assert plan is not None and plan.write == "update" and plan.items == {"a": "[1,2]"} and plan.cookie == "keep"
    session.destroy()
    plan = manager.plan(handler, session)
    assert plan.write == "destroy" and plan.drop_key == session.key and plan.cookie == "clear"


# -- Secure cookies over plain HTTP: nothing stored ---------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("options", [{"cookie": CookieOptions(secure=True)}, {"cookie": CookieOptions(host_prefix=True)}])
async def test_nothing_is_stored_for_a_cookie_that_cannot_be_sent(client, store, options, caplog):
    caplog.set_level(logging.WARNING, logger="sessions")
    for _ in range(3):
        response = await client.fetch("/op/set", "POST", json.dumps({"a": 1}))
        assert response.code == 200
        assert "Set-Cookie" not in response.headers
    assert store.writes == 0 and await store.live_keys() == []
    assert any("secure_cookie_over_http" in r.getMessage() for r in caplog.records)


# -- key rotation: the session cookie is sealed again by the primary key ------------


@pytest.mark.gen_test
async def test_cookie_sealed_by_an_older_key_is_resealed_once(client, app, store):
    old, new = generate_key(), generate_key()
    old_ring, rotated_ring = KeyRing.from_text(old), KeyRing.from_text(f"{new},{old}")
    manager = app.settings["session_manager"]
    manager.keys = old_ring
    await client.fetch("/op/set", "POST", json.dumps({"a": 1}))
    sealed_old = client.jar.cookies["sid"]

    manager.keys = rotated_ring  # the operator put a new key first
    response = await client.fetch("/op/read")
    assert set_cookie_headers(response, "sid")
    sealed_new = client.jar.cookies["sid"]
    assert sealed_new != sealed_old
    assert KeyRing.from_text(new).open(sealed_new, "sid") == old_ring.open(sealed_old, "sid")
    assert store.writes == 1  # re-sealing writes nothing to the store
    response = await client.fetch("/op/read")
    assert not set_cookie_headers(response, "sid")  # once is enough
    assert body(response)["data"] == {"a": 1}

    manager.keys = KeyRing.from_text(new)  # the old key retired: the browser is still in
    assert body(await client.fetch("/op/read"))["data"] == {"a": 1}


# -- flash: each message shown once, also to parallel requests --------------------


class SlowLoadStore(MemoryStore):
    """Holds every load until all parallel requests have loaded: the worst interleaving."""

    def __init__(self, parties: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.parties = parties
        self.waiting = 0
        self.release = asyncio.Event()

    async def load(self, key):
        record = await super().load(key)
        self.waiting += 1
        if self.waiting >= self.parties:
            self.release.set()
        await asyncio.wait_for(self.release.wait(), 5)
        return record


@pytest.mark.gen_test
async def test_parallel_requests_show_each_flash_once(http_client, base_url, app):
    parties = 6
    store = SlowLoadStore(parties)
    manager = app.settings["session_manager"]
    manager.store = store
    client = Client(http_client, base_url)
    store.parties = 10**6  # set-up requests pass straight through
    store.release.set()
    await client.fetch("/op/flash", "POST", json.dumps({"messages": ["one", "two", "three"]}))
    store.release.clear()
    store.waiting, store.parties = 0, parties
    responses = await asyncio.gather(*(client.fetch("/op/flashes") for _ in range(parties)))
    shown = [message for r in responses for _, message in body(r)["flashes"]]
    assert sorted(shown) == ["one", "three", "two"]  # each once, across all six pages
    store.parties = 10**6
    store.release.set()
    assert body(await client.fetch("/op/flashes"))["flashes"] == []


@pytest.mark.gen_test
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_flash_round_trip_and_categories_over_real_stores(http_client, base_url, app, backend, tmp_path, clock):
    store = MemoryStore(clock=clock) if backend == "memory" else SQLiteStore(tmp_path / "s.db", clock=clock)
    app.settings["session_manager"].store = store
    client = Client(http_client, base_url)
    try:
        await client.fetch("/op/flash", "POST", json.dumps({"messages": ["saved"], "category": "success"}))
        await client.fetch("/op/flash", "POST", json.dumps({"messages": ["careful"], "category": "warning"}))
        await client.fetch("/op/set", "POST", json.dumps({"keep": 1}))
        warnings = body(await client.fetch("/op/flashes?category=warning"))["flashes"]
        assert warnings == [["warning", "careful"]]
        assert body(await client.fetch("/op/flashes"))["flashes"] == [["success", "saved"]]
        assert body(await client.fetch("/op/flashes"))["flashes"] == []
        assert body(await client.fetch("/op/read"))["data"] == {"keep": 1}
        # a flash queued and popped in one request is shown by it and never stored
        assert body(await client.fetch("/op/flash-and-pop", "POST"))["flashes"] == [["info", "same request"]]
        assert body(await client.fetch("/op/flashes"))["flashes"] == []
    finally:
        await store.close()


# -- metadata goes with the session ------------------------------------------------


@pytest.mark.gen_test
async def test_session_meta_is_stored_at_login(client, store, app):
    await client.fetch("/op/set", "POST", json.dumps({"visits": 1}))
    await client.fetch("/op/login", "POST", json.dumps({"user": "alice"}), headers={"User-Agent": "Test \"Browser\" $x.y"})
    [(key, record)] = await store.list_user("alice")
    assert record.meta == {"ip": "127.0.0.1", "ua": "Test \"Browser\" $x.y"}
    sid = app.settings["session_manager"].keys.open(client.jar.cookies["sid"], "sid").decode()
    assert hash_session_id(sid) == key


# -- one clock ---------------------------------------------------------------------


def test_manager_uses_the_store_clock_unless_given(clock):
    store = MemoryStore(clock=clock)
    assert SessionManager(store, KeyRing.from_text(generate_key())).clock is clock
    other = lambda: 0.0  # noqa: E731
    assert SessionManager(store, KeyRing.from_text(generate_key()), clock=other).clock is other


# -- the store registry --------------------------------------------------------------


def test_open_store_builds_each_registered_backend(tmp_path, clock):
    memory = open_store("memory://", clock=clock)
    assert isinstance(memory, MemoryStore) and memory.clock is clock
    sqlite = open_store(f"sqlite:///{tmp_path}/x.db", timeout=1.5, clock=clock)
    assert isinstance(sqlite, SQLiteStore) and sqlite.clock is clock and sqlite._timeout == 1.5
    assert not memory.expires_natively and not sqlite.expires_natively
    assert "pruned by the app" in sqlite.describe()


def test_open_store_rejects_unknown_options_and_schemes(tmp_path):
    with pytest.raises(ValueError, match="no option 'colour'"):
        open_store("memory://", colour="blue")
    with pytest.raises(ValueError, match="no option 'prune_every'"):
        open_store(f"sqlite:///{tmp_path}/x.db", prune_every=3)
    with pytest.raises(ValueError, match="unknown store URL"):
        open_store("cassandra://localhost")
    with pytest.raises(ValueError, match="unknown store URL"):
        open_store("not a url")
    with pytest.raises(ValueError, match="memory://"):
        open_store("memory://somewhere")


def test_mongo_store_declares_native_expiry():
    store = open_store("mongodb://127.0.0.1:1/db", expiry_mode="interval", server_selection_timeout=0.2)
    assert store.expires_natively is True
    assert "not set up yet" in store.describe()


def test_register_store_adds_a_scheme():
    made = []

    def factory(url: str, *, flavour: str = "plain") -> MemoryStore:
        made.append((url, flavour))
        return MemoryStore()

    register_store("test-only", factory)
    assert isinstance(open_store("test-only://x", flavour="salted"), MemoryStore)
    assert made == [("test-only://x", "salted")]
    with pytest.raises(ValueError, match="no option 'spice'"):
        open_store("test-only://x", spice=1)


# -- the commit starts eagerly ----------------------------------------------------


@pytest.mark.gen_test
async def test_the_commit_runs_inside_a_task_so_drivers_timeouts_work():
    """redis-py and others wrap calls in asyncio.timeout(), which needs a current Task."""
    from sessions.tornado import start_eagerly

    seen = []

    async def commit_like_a_driver():
        async with asyncio.timeout(5):
            seen.append(asyncio.current_task() is not None)
            await asyncio.sleep(0)

    await start_eagerly(commit_like_a_driver())
    assert seen == [True]


@pytest.mark.gen_test
async def test_start_eagerly_continues_work_that_waits_and_passes_results_and_errors():
    from sessions.tornado import start_eagerly

    steps = []
    gate = asyncio.get_running_loop().create_future()

    async def slow():
        steps.append("started")
        value = await gate
        steps.append(value)
        await asyncio.sleep(0)
        steps.append("after yield")
        raise ValueError("boom")

    future = start_eagerly(slow())
    await asyncio.sleep(0)  # 3.11: a Task, started on the next loop turn; 3.12+: already running
    assert steps == ["started"] and not future.done()
    gate.set_result("resumed")
    with pytest.raises(ValueError, match="boom"):
        await future
    assert steps == ["started", "resumed", "after yield"]

    async def fails_at_once():
        raise KeyError("now")

    with pytest.raises(KeyError):
        await start_eagerly(fails_at_once())


@pytest.mark.gen_test
async def test_a_waiting_commit_still_precedes_the_response(http_client, base_url, app):
    """SQLite's commit waits on its worker thread: the redirect must still find the session."""
    import tempfile

    tmp = tempfile.mkdtemp()
    store = SQLiteStore(f"{tmp}/s.db")
    app.settings["session_manager"].store = store
    client = Client(http_client, base_url)
    try:
        for i in range(5):
            await client.fetch("/op/set", "POST", json.dumps({f"k{i}": i}))
        assert body(await client.fetch("/op/read"))["data"] == {f"k{i}": i for i in range(5)}
    finally:
        await store.close()


@pytest.mark.gen_test
async def test_destroy_user_sessions_keeps_an_empty_looking_session(app, client, store):
    """A logged-in session with no data keys is a falsy mapping: it must still be kept."""
    await client.fetch("/op/login", "POST", json.dumps({"user": "zoe"}))
    other = Client(client.http, client.base)
    await other.fetch("/op/login", "POST", json.dumps({"user": "zoe"}))
    manager = app.settings["session_manager"]
    sid = manager.keys.open(client.jar.cookies["sid"], "sid").decode()
    session = await manager.load(type("H", (), {"get_cookie": lambda self, n: client.jar.cookies.get(n),
                                                "request": type("R", (), {"remote_ip": "127.0.0.1"})()})())
    assert len(session) == 0 and not session and session.id == sid
    assert await manager.destroy_user_sessions("zoe", keep=session) == 1
    assert [k for k, _ in await store.list_user("zoe")] == [session.key]
