"""The defects an outside attack found (issue 12), each tried again the way it was found.

Every test here failed on the code before the fix: restores racing "log out
everywhere" and theft, the password check as an oracle, two password changes at
once, store failures during account calls, the session cap, address binding on
every route, queued flashes and the session's size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest

from accounts.sessions import AuthSettings
from sessions.remember import is_token
from tests.fixtures.api import PASSWORD, body, call, login, register
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.stores import STORE_KINDS, open_test_store
from tests.fixtures.support import Client, FlakyStore

app, http_server = demo_app_fixtures()

#: Parallel restores of one token, as in the attack.
RESTORES = 15


@pytest.fixture
def demo_store(request, tmp_path, io_loop):
    kind = getattr(request, "param", "memory")
    store = FlakyStore() if kind == "flaky" else open_test_store(kind, request, tmp_path)
    yield store
    io_loop.run_sync(store.close)


def copies(client: Client, new_client, count: int, *, drop=("sid",)) -> list[Client]:
    """``count`` browsers holding this one's cookies (less ``drop``): one token replayed in parallel."""
    clones = []
    for _ in range(count):
        clone = new_client()
        clone.jar.cookies.update({k: v for k, v in client.jar.cookies.items() if k not in drop})
        clones.append(clone)
    return clones


async def remembered_device(new_client, email: str, password: str = PASSWORD) -> Client:
    device = new_client()
    response = await call(device, "POST", "/auth/login", {"email": email, "password": password, "remember": True})
    assert response.code == 200 and device.jar.cookies.get("remember")
    return device


async def logged_in(client: Client) -> bool:
    response = await call(client, "GET", "/auth/profile")
    assert response.code in (200, 401), response.body
    return response.code == 200


async def live_sessions(demo_store, user_id: str) -> int:
    return sum(not is_token(record) for _, record in await demo_store.list_user(user_id))


@pytest.fixture
def email():
    """A new address per test: the database stores' user tables outlive one test."""
    return f"ana-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def auth(request):
    """AuthSettings for the app (a test parametrizes it, indirect)."""
    return AuthSettings(**getattr(request, "param", {}))


@pytest.fixture
def demo_config(demo_config, auth):
    demo_config.auth = auth
    return demo_config


# -- 1. restores never outlive log out everywhere or theft ------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("demo_store", STORE_KINDS, indirect=True)
async def test_restores_racing_logout_everywhere_do_not_outlive_it(email, client, new_client, demo_store):
    await register(client, email=email)
    device = await remembered_device(new_client, email)
    restorers = copies(device, new_client, RESTORES)
    results = await asyncio.gather(
        call(client, "POST", "/auth/logout-all"),
        *(r.fetch("/api/counter") for r in restorers),
    )
    assert results[0].code == 200
    assert all(r.code < 500 for r in results)
    survivors = [r for r in restorers if await logged_in(r)]
    assert survivors == [], f"{len(survivors)} of {RESTORES} restored sessions outlived log out everywhere"
    assert not await logged_in(device)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("demo_store", STORE_KINDS, indirect=True)
async def test_restores_racing_theft_detection_do_not_outlive_it(email, client, new_client, demo_store):
    await register(client, email=email)
    device = await remembered_device(new_client, email)
    stolen = copies(device, new_client, 1)[0]  # the thief's copy of the first validator
    for _ in range(2):  # two rotations: the stolen validator is neither current nor previous
        device.jar.cookies.pop("sid", None)
        assert await logged_in(device)
    restorers = copies(device, new_client, RESTORES)
    results = await asyncio.gather(stolen.fetch("/api/counter"), *(r.fetch("/api/counter") for r in restorers))
    assert all(r.code < 500 for r in results)
    survivors = [r for r in restorers if await logged_in(r)]
    assert survivors == [], f"{len(survivors)} of {RESTORES} restored sessions outlived theft detection"
    assert not await logged_in(client) and not await logged_in(stolen)


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("demo_store", ["memory", "sqlite", "redis", "postgres"], indirect=True)
async def test_restores_racing_a_password_change_do_not_outlive_it(email, client, new_client, demo_store):
    """One store round trip per logged-in request must not open a window: race them many times."""
    await register(client, email=email)
    password = PASSWORD
    for round_ in range(5):
        device = await remembered_device(new_client, email, password)
        restorers = copies(device, new_client, 8)
        new_password = f"new password number {round_}"
        results = await asyncio.gather(
            call(client, "POST", "/auth/password", {"current": password, "new": new_password}),
            *(r.fetch("/api/counter") for r in restorers),
        )
        assert results[0].code == 200, results[0].body
        password = new_password
        survivors = [r for r in restorers if await logged_in(r)]
        assert survivors == [], f"round {round_}: {len(survivors)} restored sessions outlived the change"
        assert await logged_in(client)  # the browser that changed it stays


# -- 2. the password check is no oracle ---------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_password_change_attempts_are_rate_limited_and_audited(email, client, caplog):
    await register(client, email=email)
    caplog.set_level(logging.INFO, logger="sessions.audit")
    codes = []
    for i in range(8):
        response = await call(client, "POST", "/auth/password", {"current": f"wrong guess {i:04}", "new": "another good one"})
        codes.append(response.code)
    assert codes[:5] == [403] * 5 and set(codes[5:]) == {429}, codes
    response = await call(client, "POST", "/auth/password", {"current": PASSWORD, "new": "another good one"})
    assert response.code == 429 and response.headers.get("Retry-After")
    failures = [r for r in caplog.records if '"password_check_failure"' in r.getMessage()]
    assert len(failures) == 5
    assert (await login(Client(client.http, client.base), email=email, password=PASSWORD)).code in (200, 429)


@pytest.mark.gen_test(timeout=30)
async def test_password_form_is_rate_limited_too(email, client):
    await register(client, email=email)
    codes = []
    for i in range(7):
        response = await client.fetch(
            "/account/password", "POST", f"current=wrong+guess+{i:04}&new=another+good+one&_xsrf={client.xsrf_token()}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        # Refusals come back by post/redirect/get: the page after the redirect names the refusal
        # (its status, 403 or 429, is the one the error beside the form stands for).
        page = response.body.decode()
        codes.append(429 if "too many password attempts" in page else 403 if "password is incorrect" in page
                     else response.code)
    assert 429 in codes and codes.count(403) <= 5, codes


# -- 3. two password changes at once ------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("demo_store", STORE_KINDS, indirect=True)
async def test_two_password_changes_at_once_one_wins(email, client, new_client, demo_store):
    await register(client, email=email)
    other = new_client()
    assert (await login(other, email=email)).code == 200
    first, second = await asyncio.gather(
        call(client, "POST", "/auth/password", {"current": PASSWORD, "new": "first new password"}),
        call(other, "POST", "/auth/password", {"current": PASSWORD, "new": "second new password"}),
    )
    codes = sorted([first.code, second.code])
    assert codes[0] == 200 and codes[1] in (401, 409), codes
    winner, loser = (client, other) if first.code == 200 else (other, client)
    new_password = "first new password" if winner is client else "second new password"
    assert await logged_in(winner) and not await logged_in(loser)
    assert (await login(new_client(), email=email, password=new_password)).code == 200
    assert (await login(new_client(), email=email)).code == 401


# -- 5. store failures during account calls are 503s ----------------------------------------------


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("demo_store", ["flaky"], indirect=True)
async def test_store_failure_during_account_calls_is_a_503_with_retry_after(email, client, demo_store, caplog):
    await register(client, email=email)
    demo_store.down = True
    calls = [
        ("POST", "/auth/login", {"email": email, "password": PASSWORD}),
        ("POST", "/auth/register", {"email": "bo@example.com", "name": "Bo", "password": PASSWORD}),
        ("POST", "/auth/reauthenticate", {"password": PASSWORD}),
    ]
    for method, path, data in calls:
        response = await call(client, method, path, data)
        assert response.code == 503, (path, response.code, response.body)
        assert response.headers.get("Retry-After")
        assert json.loads(response.body)["status"] == 503
        assert json.loads(response.body)["error"] == "store_unavailable"
        assert json.loads(response.body)["retry_after"] == int(response.headers["Retry-After"])
    for path in ("/login", "/register"):
        response = await client.fetch(
            # a valid form: one with mistakes is refused (400) before it reaches the store
            path, "POST", f"email=ana%40example.com&name=A&password=long+enough+now&_xsrf={client.xsrf_token()}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.code == 503 and response.headers.get("Retry-After"), (path, response.code)
    assert "Traceback" not in caplog.text
    demo_store.down = False
    assert (await login(client, email=email)).code == 200


# -- 6. the session cap is a cap -------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("demo_store", ["memory", "sqlite"], indirect=True)
@pytest.mark.parametrize("auth", [{"max_sessions": 2}], indirect=True)
async def test_session_cap_holds_for_parallel_logins(email, client, new_client, demo_store, demo_config):
    user = await register(client, email=email)
    cap = demo_config.auth.max_sessions
    # five: the per-account login limit counts parallel attempts before any succeeds
    responses = await asyncio.gather(*(login(new_client(), email=email) for _ in range(5)))
    assert all(r.code == 200 for r in responses)
    assert await live_sessions(demo_store, user["id"]) <= cap


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("demo_store", ["memory", "sqlite"], indirect=True)
async def test_session_cap_holds_for_restores_on_any_route(email, client, new_client, demo_store, demo_config):
    user = await register(client, email=email)
    device = await remembered_device(new_client, email)
    for _ in range(4 * demo_config.auth.max_sessions):
        device.jar.cookies.pop("sid", None)
        response = await device.fetch("/api/counter")  # not an account route: the cap holds anyway
        assert response.code == 200 and device.jar.cookies.get("sid")
    assert await live_sessions(demo_store, user["id"]) <= demo_config.auth.max_sessions


# -- 7. --bind-ip on every route and the handshake ----------------------------------------------------


@pytest.fixture
def trusted_proxies():
    return ["127.0.0.1"]  # the tests choose the client address with X-Forwarded-For


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("auth", [{"bind_ip": True}], indirect=True)
async def test_bind_ip_ends_a_session_used_from_another_address_on_any_route(email, new_client, base_url):
    home = new_client(headers={"X-Forwarded-For": "198.51.100.1"})
    await register(home, email=email)
    assert (await home.fetch("/api/counter", "POST")).code == 200
    thief = new_client(headers={"X-Forwarded-For": "203.0.113.66"})
    thief.jar.cookies.update(home.jar.cookies)
    counter = await thief.fetch("/api/counter")
    assert json.loads(counter.body)["count"] == 0  # not the user's session
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(
        base_url.replace("http", "ws") + "/ws",
        headers={**thief.jar.header(), "X-Forwarded-For": "203.0.113.66", "Origin": base_url},
    )
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(request)
    assert info.value.code == 403
    assert not await logged_in(home)  # the session ended: the cookie was used elsewhere


# -- 12. what a client can grow ----------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_flash_queued_before_login_is_not_shown_after_it(email, client):
    await client.fetch("/auth/profile")
    response = await client.fetch(
        "/flash", "POST", f"message=phish+here&category=info&_xsrf={client.xsrf_token()}",
        headers={"Content-Type": "application/x-www-form-urlencoded"}, follow=False,
    )
    assert response.code == 303
    await register(client, email=email)
    assert body(await call(client, "GET", "/api/flash"))["flashes"] == []


@pytest.mark.gen_test(timeout=60)
async def test_flash_queue_is_bounded(email, client, demo_store):
    await client.fetch("/auth/profile")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for i in range(130):
        response = await client.fetch(
            "/flash", "POST", f"message=m{i}&category=info&_xsrf={client.xsrf_token()}", headers=form, follow=False
        )
        assert response.code == 303
    flashes = body(await call(client, "GET", "/api/flash"))["flashes"]
    assert len(flashes) == 100
    assert flashes[0]["message"] == "m30" and flashes[-1]["message"] == "m129"  # the oldest went first


# -- 10. a SQLite file deleted under the running server --------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_sign_ups_into_a_deleted_sqlite_file_are_refused_not_lost(tmp_path):
    from accounts.backends.sqlite import SQLiteUsers
    from accounts.users import User, new_user_id
    from sessions import StoreError

    path = tmp_path / "demo.db"
    users = SQLiteUsers(str(path))
    first = User(new_user_id(), "one@example.com", "One", "bcrypt-sha256$x", 0.0)
    await users.add(first)
    path.unlink()
    with pytest.raises(StoreError, match="removed"):
        await users.add(User(new_user_id(), "two@example.com", "Two", "bcrypt-sha256$x", 0.0))
    with pytest.raises(StoreError):
        await users.by_id(first.id)
    await users.close()


@pytest.mark.gen_test(timeout=30)
async def test_reads_from_a_moved_sqlite_file_are_refused_until_it_is_back(tmp_path):
    """A file moved away must not keep answering from the old copy while /ready says 503."""
    from sessions import Record, StoreError
    from sessions.stores.sqlite import SQLiteStore

    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    now = store.clock()
    await store.create("k" * 64, Record({"count": "3"}, now, now, now + 600))
    path.rename(tmp_path / "elsewhere.db")
    with pytest.raises(StoreError):
        await store.load("k" * 64)
    (tmp_path / "elsewhere.db").rename(path)
    assert (await store.load("k" * 64)).data == {"count": "3"}
    await store.close()
