"""Remember-me tokens over every store: issue, restore, rotate, grace, theft, forget.

The tokens live in the session store through its ordinary interface, so the same
suite runs over memory, SQLite, MongoDB, Redis and PostgreSQL unchanged.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httputil import HTTPHeaders

from sessions import KeyRing, RememberMe, RememberOptions, SessionManager, generate_key
from sessions.remember import KIND, is_token, token_key
from tests.fixtures.stores import STORE_KINDS, open_test_store
from tests.fixtures.support import CookieJar


class Browser:
    """Just enough of a RequestHandler for the token code: cookies in, Set-Cookie out."""

    def __init__(self, jar: CookieJar, remote: str = "203.0.113.9") -> None:
        self.jar = jar
        self.headers: list[str] = []
        self.request = type("R", (), {"remote_ip": remote, "path": "/", "headers": HTTPHeaders({"User-Agent": "T"})})()

    def get_cookie(self, name, default=None):
        return self.jar.cookies.get(name, default)

    def add_header(self, name, value):
        assert name == "Set-Cookie"
        self.headers.append(value)

    def clear_header(self, name):
        self.headers.clear()

    def done(self) -> None:
        self.jar.update(self.headers)


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path, io_loop, clock):
    store = open_test_store(request.param, request, tmp_path)
    store.clock = clock
    yield store
    io_loop.run_sync(store.close)


@pytest.fixture
def remember(store, clock):
    manager = SessionManager(store, KeyRing.from_text(generate_key()))
    return RememberMe(manager, RememberOptions(grace=60))


async def issue(remember, user="u1"):
    jar = CookieJar()
    browser = Browser(jar)
    await remember.issue(browser, user, {"ua": "Firefox"})
    browser.done()
    return jar


async def use(remember, jar):
    browser = Browser(jar)
    restored = await remember.restore(browser)
    browser.done()
    return restored


@pytest.mark.gen_test
async def test_a_token_brings_the_user_back_and_rotates(remember, store):
    jar = await issue(remember)
    first = jar.cookies["remember"]
    restored = await use(remember, jar)
    assert restored.user_id == "u1" and restored.rotated and restored.meta == {"ua": "Firefox"}
    assert jar.cookies["remember"] != first  # a new validator in a new cookie
    again = await use(remember, jar)
    assert again.user_id == "u1" and again.rotated


@pytest.mark.gen_test
async def test_only_a_hash_of_the_validator_is_stored(remember, store):
    jar = await issue(remember)
    selector, validator = remember.manager.keys.open(jar.cookies["remember"], "remember").decode().split(":")
    record = await store.load(token_key(selector))
    assert record is not None and is_token(record) and record.user_id == "u1"
    assert record.kind == KIND and record.meta == {"ua": "Firefox"}  # the kind is no meta item
    stored = json.dumps([record.data, record.meta])
    assert validator not in stored and selector not in stored


@pytest.mark.gen_test
async def test_a_record_of_another_kind_under_a_token_key_restores_no_one(remember, store):
    jar = await issue(remember)
    selector = remember.manager.keys.open(jar.cookies["remember"], "remember").decode().split(":")[0]
    key = token_key(selector)
    record = await store.load(key)
    assert record is not None
    record.kind = "session"
    await store.create(key, record)  # the same items, user and meta: only the kind differs
    assert await use(remember, jar) is None
    assert "remember" not in jar.cookies  # cleared
    assert [r.kind for _, r in await store.list_user("u1")] == ["session"]  # and no theft


@pytest.mark.gen_test
async def test_the_previous_validator_works_in_the_grace_window_then_is_theft(remember, store, clock):
    jar = await issue(remember)
    stale = CookieJar()
    stale.cookies.update(jar.cookies)  # a parallel request still carrying the old cookie
    assert (await use(remember, jar)).rotated
    clock.advance(30)
    late = await use(remember, stale)
    assert late is not None and late.user_id == "u1" and not late.rotated
    clock.advance(31)  # past the 60 s grace window
    assert await use(remember, stale) is None
    assert "remember" not in stale.cookies  # cleared
    assert await use(remember, jar) is None  # theft ended every token of the user
    assert await store.list_user("u1") == []


@pytest.mark.gen_test
async def test_a_wrong_validator_for_a_known_selector_ends_every_session_and_token(remember, store):
    jar = await issue(remember)
    other = await issue(remember)  # another device of the same user
    from sessions.stores.base import Record

    now = remember.manager.clock()
    await store.create("a" * 64, Record({"x": "1"}, now, now, now + 600, user_id="u1"))  # a session
    selector = remember.manager.keys.open(jar.cookies["remember"], "remember").decode().split(":")[0]
    forged = CookieJar()
    forged.cookies["remember"] = remember.manager.keys.seal(f"{selector}:{'A' * 43}".encode(), "remember")
    assert await use(remember, forged) is None
    assert await store.list_user("u1") == []
    assert await use(remember, other) is None


@pytest.mark.gen_test
async def test_parallel_uses_of_one_cookie_all_get_in_and_one_rotates(remember, store):
    jar = await issue(remember)
    jars = []
    for _ in range(5):
        copy = CookieJar()
        copy.cookies.update(jar.cookies)
        jars.append(copy)
    results = await asyncio.gather(*(use(remember, j) for j in jars))
    assert all(r is not None and r.user_id == "u1" for r in results)
    assert sum(r.rotated for r in results) == 1
    winner = next(j for j, r in zip(jars, results, strict=True) if r.rotated)
    assert (await use(remember, winner)).rotated  # the new cookie works
    [(_, record)] = await store.list_user("u1")
    assert sum(name.startswith("v:") for name in record.data) == 1  # the losers cleaned up


@pytest.mark.gen_test
async def test_tampered_unknown_and_expired_tokens_are_ignored(remember, store, clock):
    jar = await issue(remember)
    tampered = CookieJar()
    value = jar.cookies["remember"]
    tampered.cookies["remember"] = value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
    assert await use(remember, tampered) is None
    unknown = CookieJar()
    unknown.cookies["remember"] = remember.manager.keys.seal(f"{'S' * 24}:{'V' * 43}".encode(), "remember")
    assert await use(remember, unknown) is None
    garbage = CookieJar()
    garbage.cookies["remember"] = remember.manager.keys.seal(b"no-colon-here", "remember")
    assert await use(remember, garbage) is None
    assert (await store.list_user("u1"))  # none of that was theft: the token lives
    clock.advance(remember.options.max_age + 1)
    assert await use(remember, jar) is None


@pytest.mark.gen_test
async def test_forget_deletes_this_browsers_token_only(remember, store):
    jar = await issue(remember)
    other = await issue(remember)
    browser = Browser(jar)
    await remember.forget(browser)
    browser.done()
    assert "remember" not in jar.cookies
    assert await use(remember, other) is not None
    assert len(await store.list_user("u1")) == 1


@pytest.mark.gen_test
async def test_destroying_the_users_sessions_ends_the_tokens(remember, store):
    jar = await issue(remember)
    await remember.manager.destroy_user_sessions("u1")
    assert await use(remember, jar) is None



@pytest.mark.gen_test
async def test_grace_window_accepts_the_previous_validator_only(remember, store):
    """A validator two rotations old is theft even inside the grace window."""
    jar = await issue(remember)
    two_old = CookieJar()
    two_old.cookies.update(jar.cookies)
    assert (await use(remember, jar)).rotated
    previous = CookieJar()
    previous.cookies.update(jar.cookies)
    assert (await use(remember, jar)).rotated  # second rotation, within seconds
    late = await use(remember, previous)  # the previous validator: still a parallel request
    assert late is not None and not late.rotated
    assert await use(remember, two_old) is None  # two rotations old: theft
    assert await store.list_user("u1") == []


@pytest.mark.gen_test
async def test_theft_runs_the_revocation_hook_before_deleting(store):
    order = []
    manager = SessionManager(store, KeyRing.from_text(generate_key()))

    async def revoke(user_id):
        order.append(("revoke", user_id, len(await store.list_user(user_id))))

    remember = RememberMe(manager, RememberOptions(grace=60), on_theft=revoke)
    jar = await issue(remember)
    stale = CookieJar()
    stale.cookies.update(jar.cookies)
    await use(remember, jar)
    await use(remember, jar)
    assert await use(remember, stale) is None
    assert order == [("revoke", "u1", 1)]  # called while the token still existed
    assert await store.list_user("u1") == []


@pytest.mark.gen_test
async def test_a_user_keeps_at_most_max_per_user_tokens_the_oldest_end(store, clock):
    """Each "remember me" login stores a token for 30 days: without a cap a client could pile them up."""
    manager = SessionManager(store, KeyRing.from_text(generate_key()))
    remember = RememberMe(manager, RememberOptions(max_per_user=3))
    jars = []
    for _ in range(5):
        jars.append(await issue(remember))
        clock.advance(1)
    assert len(await store.list_user("u1", kind="remember")) == 3
    assert [await use(remember, jar) is not None for jar in jars] == [False, False, True, True, True]
    with pytest.raises(ValueError):
        RememberOptions(max_per_user=0)
