"""The auth JSON API through real HTTP on the demo's real server class.

Register, login, logout, logout everywhere, profile, password, active sessions,
flash; rate limits; and the ways a client tries to break them: fixation, operator
payloads, wrong types and content types, missing XSRF, forged forwarding headers.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from sessions import hash_session_id
from tests.fixtures.api import PASSWORD, body, call, login, register
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.stores import STORE_KINDS
from tests.fixtures.support import Client, set_cookie_headers

app, http_server = demo_app_fixtures()


def sid(client):
    return client.jar.cookies.get("sid")


# -- the whole flow, over every store ------------------------------------------------


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("demo_store", STORE_KINDS, indirect=True)
async def test_register_login_profile_logout_over_every_store(client, new_client, demo_store):
    user = await register(client, email=" Ana@Example.COM ")
    assert user["email"] == "ana@example.com" and user["name"] == "Ana" and "password" not in json.dumps(user)
    assert body(await call(client, "GET", "/auth/profile"))["user"]["id"] == user["id"]

    other = new_client()
    response = await login(other, email="ANA@example.com")
    assert response.code == 200 and body(response)["user"]["id"] == user["id"]
    assert response.headers["RateLimit-Limit"] and response.headers["RateLimit-Remaining"]

    listed = body(await call(other, "GET", "/auth/sessions"))["sessions"]
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
    assert all(s["ip"] == "127.0.0.1" for s in listed)

    response = await call(other, "POST", "/auth/logout")
    assert response.code == 200 and response.headers["Clear-Site-Data"] == '"cookies", "storage"'
    assert sid(other) is None
    assert (await call(other, "GET", "/auth/profile")).code == 401
    assert (await call(client, "GET", "/auth/profile")).code == 200  # the other session lives on


# -- login rules ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_login_regenerates_the_session_and_keeps_the_visitors_data(client, app):
    await register(client)
    await call(client, "POST", "/auth/logout")
    await client.fetch("/api/counter")
    await client.fetch("/api/counter", "POST")  # a visitor with a counter
    before = sid(client)
    manager = app.settings["session_manager"]
    old_id = manager.keys.open(before, "sid").decode()
    assert (await login(client)).code == 200
    after = sid(client)
    new_id = manager.keys.open(after, "sid").decode()
    assert new_id != old_id  # fixation: the pre-login ID is not the logged-in one
    assert await manager.store.load(hash_session_id(old_id)) is None
    assert body(await client.fetch("/api/counter"))["count"] == 1  # the visitor's data came along
    # replaying the pre-login cookie gets nobody's session
    attacker = Client(client.http, client.base)
    attacker.jar.cookies["sid"] = before
    assert (await call(attacker, "GET", "/auth/profile")).code == 401


@pytest.mark.gen_test
async def test_unknown_email_and_wrong_password_answer_alike(client, new_client):
    await register(client)
    answers = []
    for email, password in (("nobody@example.com", PASSWORD), ("ana@example.com", "wrong password!!")):
        response = await login(new_client(), email=email, password=password)
        answers.append((response.code, body(response)))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and answers[0][1]["message"] == "email or password is incorrect"
    assert answers[0][1]["error"] == "invalid_credentials" and answers[0][1]["status"] == 401


@pytest.mark.gen_test
async def test_login_rate_limit_answers_429_with_headers(client, new_client, demo_config, caplog):
    caplog.set_level(logging.WARNING, logger="sessions.audit")
    await register(client)
    attacker = new_client()
    codes = []
    for _ in range(demo_config.login_limit_account.hits + 1):
        response = await login(attacker, password="wrong password!!")
        codes.append(response.code)
    assert codes[:-1] == [401] * demo_config.login_limit_account.hits and codes[-1] == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) == int(response.headers["Retry-After"])
    assert body(response)["error"] == "rate_limited" and body(response)["status"] == 429
    assert body(response)["retry_after"] == int(response.headers["Retry-After"]) and body(response)["message"]
    # locked even with the right password, until the window ends
    assert (await login(new_client())).code == 429
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sessions.audit"]
    assert any(e["event"] == "rate_limited" for e in events)
    assert any(e["event"] == "login_failure" and "ana" not in json.dumps(e) for e in events)


@pytest.mark.gen_test
async def test_a_forged_forwarded_for_does_not_dodge_the_address_limit(client, new_client, demo_config):
    """The test client is an untrusted peer: X-Forwarded-For must not give it fresh counters."""
    await register(client)
    limit = demo_config.login_limit_address.hits
    codes = []
    for i in range(limit + 1):
        response = await login(
            new_client(), email=f"user{i}@example.com", headers={"X-Forwarded-For": f"198.51.100.{i}"}
        )
        codes.append(response.code)
    assert codes[-1] == 429 and codes[:-1] == [401] * limit


@pytest.mark.gen_test
async def test_a_successful_login_resets_only_its_own_account(client, new_client, demo_config):
    await register(client)
    await register(new_client(), email="bob@example.com", name="Bob")
    for _ in range(demo_config.login_limit_account.hits - 1):
        assert (await login(new_client(), email="bob@example.com", password="wrong password!!")).code == 401
    assert (await login(new_client())).code == 200  # ana logs in
    assert (await login(new_client(), email="bob@example.com", password="wrong password!!")).code == 401
    assert (await login(new_client(), email="bob@example.com")).code == 429  # bob's count stood


@pytest.mark.gen_test
async def test_session_cap_ends_the_oldest(client, new_client, app, demo_config):
    await register(client)
    cap = demo_config.auth.max_sessions
    clients = [new_client() for _ in range(cap)]
    for c in clients:
        assert (await login(c)).code == 200
    # the registration's session was the oldest: it ended; the others live
    assert (await call(client, "GET", "/auth/profile")).code == 401
    for c in clients:
        assert (await call(c, "GET", "/auth/profile")).code == 200
    assert len(body(await call(clients[-1], "GET", "/auth/sessions"))["sessions"]) == cap


# -- sessions, revoke, everywhere, password -------------------------------------------


@pytest.mark.gen_test
async def test_revoke_one_session_by_its_handle(client, new_client, app):
    await register(client)
    other = new_client()
    await login(other)
    listed = body(await call(client, "GET", "/auth/sessions"))["sessions"]
    [theirs] = [s for s in listed if not s["current"]]
    manager = app.settings["session_manager"]
    their_key = hash_session_id(manager.keys.open(sid(other), "sid").decode())
    assert theirs["handle"] not in (their_key, sid(other)) and their_key[:24] != theirs["handle"]
    assert (await call(client, "DELETE", f"/auth/sessions/{theirs['handle']}")).code == 200
    assert (await call(other, "GET", "/auth/profile")).code == 401
    assert (await call(client, "DELETE", f"/auth/sessions/{theirs['handle']}")).code == 404
    assert (await call(client, "DELETE", "/auth/sessions/not-a-handle")).code == 404
    # another user's handle is not ours to revoke
    bob = new_client()
    await register(bob, email="bob@example.com", name="Bob")
    [bobs] = body(await call(bob, "GET", "/auth/sessions"))["sessions"]
    assert (await call(client, "DELETE", f"/auth/sessions/{bobs['handle']}")).code == 404
    assert (await call(bob, "GET", "/auth/profile")).code == 200


@pytest.mark.gen_test
async def test_logout_everywhere_ends_every_session_of_the_user_only(client, new_client):
    await register(client)
    mine = [new_client() for _ in range(3)]
    for c in mine:
        await login(c)
    bob = new_client()
    await register(bob, email="bob@example.com", name="Bob")
    response = await call(client, "POST", "/auth/logout-all")
    assert response.code == 200 and body(response)["ended"] == 4
    assert response.headers["Clear-Site-Data"] == '"cookies", "storage"'
    for c in [client, *mine]:
        assert (await call(c, "GET", "/auth/profile")).code == 401
    assert (await call(bob, "GET", "/auth/profile")).code == 200


@pytest.mark.gen_test
async def test_password_change_keeps_this_session_and_ends_the_others(client, new_client):
    await register(client)
    other = new_client()
    await login(other)
    before = sid(client)
    bad = await call(client, "POST", "/auth/password", {"current": "not it at all", "new": "another good one"})
    assert bad.code == 403 and body(bad)["field"] == "current"
    short = await call(client, "POST", "/auth/password", {"current": PASSWORD, "new": "short"})
    assert short.code == 400 and body(short)["field"] == "new"
    response = await call(client, "POST", "/auth/password", {"current": PASSWORD, "new": "another good one"})
    assert response.code == 200 and body(response)["other_sessions_ended"] == 1
    assert sid(client) != before  # regenerated
    assert (await call(client, "GET", "/auth/profile")).code == 200
    assert (await call(other, "GET", "/auth/profile")).code == 401
    assert (await login(new_client())).code == 401
    assert (await login(new_client(), password="another good one")).code == 200


@pytest.mark.gen_test
async def test_profile_rename_and_flash(client):
    await register(client)
    response = await call(client, "PUT", "/auth/profile", {"name": "  Ana Lima  "})
    assert body(response)["user"]["name"] == "Ana Lima"
    assert (await call(client, "PUT", "/auth/profile", {"name": ""})).code == 400
    assert body(await call(client, "GET", "/api/flash")) == {"flashes": []}


@pytest.mark.gen_test
async def test_register_twice_is_409_and_logged_out_calls_are_401(client, new_client):
    await register(client)
    response = await call(new_client(), "POST", "/auth/register", {"email": "ana@example.com", "name": "A", "password": PASSWORD})
    assert response.code == 409 and body(response)["field"] == "email"
    anonymous = new_client()
    for method, path, data in (
        ("GET", "/auth/profile", None),
        ("PUT", "/auth/profile", {"name": "x"}),
        ("POST", "/auth/password", {"current": PASSWORD, "new": "another good one"}),
        ("GET", "/auth/sessions", None),
        ("POST", "/auth/logout-all", None),
        ("DELETE", "/auth/sessions/" + "0" * 24, None),
    ):
        response = await call(anonymous, method, path, data)
        assert response.code == 401, (method, path)
        assert body(response)["status"] == 401


# -- what a hostile client sends ---------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "payload",
    [
        {"email": {"$gt": ""}, "password": PASSWORD},
        {"email": "ana@example.com", "password": {"$ne": None}},
        {"email": ["ana@example.com"], "password": PASSWORD},
        {"email": "ana@example.com", "password": 12345678901},
        {"email": "ana@example.com", "password": None},
        {"email": "ana@example.com"},
        {"email": "ana@example.com", "password": PASSWORD, "admin": True},
        {"email": "a" * 10_000 + "@example.com", "password": PASSWORD},
        {"email": "ana@example.com", "password": "p" * 2000},
        [],
        "ana",
        None,
    ],
)
async def test_bad_login_payloads_are_400(client, payload):
    await register(client)
    response = await call(client, "POST", "/auth/login", payload)
    assert response.code == 400 and body(response)["status"] == 400


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "raw, content_type",
    [
        ('{"email": "ana@example.com", "password": "x"', "application/json"),
        ("[" * 50_000, "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        ('{"email": "ana@example.com", "password": "correct horse battery"}', "text/plain"),
        ("email=ana%40example.com&password=x", "application/x-www-form-urlencoded"),
        ("", "application/json"),
    ],
)
async def test_malformed_bodies_and_wrong_content_types_are_400(client, raw, content_type):
    response = await call(client, "POST", "/auth/login", raw, headers={"Content-Type": content_type})
    assert response.code == 400, response.body


@pytest.mark.gen_test
async def test_an_oversized_body_is_413(client):
    response = await call(client, "POST", "/auth/register", "x" * (65 * 1024))
    assert response.code == 413


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/auth/login", "/auth/register", "/auth/logout", "/auth/password"])
async def test_unsafe_calls_without_or_with_a_wrong_xsrf_token_are_403(client, path):
    await client.fetch("/auth/profile")
    for headers in ({}, {"X-XSRFToken": "2|00000000|" + "0" * 32 + "|1700000000"}):
        response = await client.fetch(
            path, "POST", json.dumps({"email": "a@b.co", "password": PASSWORD}),
            headers={"Content-Type": "application/json", **headers}, xsrf=False,
        )
        assert response.code == 403


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE", "OPTIONS", "HEAD", "GET"])
async def test_odd_methods_on_auth_routes_are_4xx_not_500(client, method):
    for path in ("/auth/login", "/auth/register", "/auth/logout", "/auth/logout-all", "/auth/password", "/api/flash"):
        response = await call(client, method, path, "{}" if method in ("PATCH", "PUT") else None)
        assert 400 <= response.code < 500 or (method == "GET" and path == "/api/flash"), (method, path, response.code)


@pytest.mark.gen_test
async def test_concurrent_logins_of_one_user_each_get_their_own_session(client, new_client):
    await register(client)
    others = [new_client() for _ in range(5)]
    responses = await asyncio.gather(*(login(c) for c in others))
    assert [r.code for r in responses] == [200] * 5
    assert len({sid(c) for c in others}) == 5


@pytest.mark.gen_test
@pytest.mark.parametrize("production, trusted_proxies", [(True, ["127.0.0.1"])])
async def test_production_cookies_after_login(client, production, trusted_proxies):
    secure = Client(client.http, client.base, headers={"X-Forwarded-Proto": "https"})
    await secure.fetch("/auth/profile")
    response = await secure.fetch(
        "/auth/register", "POST", json.dumps({"email": "ana@example.com", "name": "Ana", "password": PASSWORD}),
        headers={"Content-Type": "application/json"},
    )
    assert response.code == 201
    [header] = set_cookie_headers(response, "__Host-sid")
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Domain" not in header
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.gen_test
async def test_audit_lines_are_json_and_hold_no_secret(client, new_client, caplog):
    caplog.set_level(logging.INFO, logger="sessions.audit")
    await register(client)
    await login(new_client(), password="wrong password!!")
    visitor = new_client()
    await visitor.fetch("/api/counter")
    await visitor.fetch("/api/counter", "POST")  # a session before login: regenerated at login
    await login(visitor)
    await call(client, "POST", "/auth/logout-all")
    lines = [r.getMessage() for r in caplog.records if r.name == "sessions.audit"]
    events = [json.loads(line)["event"] for line in lines]
    for expected in ("login_success", "login_failure", "session_regenerated", "logout_everywhere", "logout"):
        assert expected in events, expected
    for line in lines:
        assert PASSWORD not in line and "wrong password" not in line and "ana@example.com" not in line
        assert "\n" not in line
