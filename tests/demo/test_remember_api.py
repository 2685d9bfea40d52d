"""Remember-me and step-up through the demo's JSON API (the demo's real server class)."""

from __future__ import annotations

import json
import logging

import pytest

from tests.fixtures.api import PASSWORD, body, call, login, register
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.stores import open_test_store
from tests.fixtures.support import parse_set_cookie, set_cookie_headers


@pytest.fixture
def demo_store(request, tmp_path, io_loop, clock):
    store = open_test_store(getattr(request, "param", "memory"), request, tmp_path)
    store.clock = clock  # the manager takes the store's clock: tests move time
    yield store
    io_loop.run_sync(store.close)


app, http_server = demo_app_fixtures()


async def remembered(client, new_client):
    """A user registered by ``client``, logged in with remember-me by a new client."""
    await register(client)
    device = new_client()
    response = await call(device, "POST", "/auth/login", {"email": "ana@example.com", "password": PASSWORD, "remember": True})
    assert response.code == 200
    return device, response


def forget_session(device):
    device.jar.cookies.pop("sid", None)


@pytest.mark.gen_test
async def test_login_with_remember_sets_a_sealed_long_lived_httponly_cookie(client, new_client):
    device, response = await remembered(client, new_client)
    [header] = set_cookie_headers(response, "remember")
    _, value, attrs = parse_set_cookie(header)
    assert attrs["httponly"] is True and attrs["samesite"] == "Lax" and attrs["max-age"] == str(30 * 86400)
    assert ":" not in value  # selector and validator are inside the sealed value
    plain = await login(new_client())  # without "remember": no token
    assert not set_cookie_headers(plain, "remember")


@pytest.mark.gen_test
async def test_the_token_restores_a_session_after_the_session_cookie_is_gone(client, new_client, app):
    device, _ = await remembered(client, new_client)
    first_token = device.jar.cookies["remember"]
    forget_session(device)
    response = await call(device, "GET", "/auth/profile")
    assert response.code == 200 and body(response)["user"]["email"] == "ana@example.com"
    assert device.jar.cookies.get("sid") and device.jar.cookies["remember"] != first_token  # rotated
    listed = body(await call(device, "GET", "/auth/sessions"))["sessions"]
    kinds = sorted(s["kind"] for s in listed)
    # register's session, the login's (its cookie is gone, the record lives until its
    # idle timeout), the restored one, and the token
    assert kinds == ["remembered_device", "session", "session", "session"]
    assert sum(s["current"] for s in listed) == 2  # this browser's session and its token


@pytest.mark.gen_test
async def test_sessions_are_listed_one_row_per_browser(client, new_client, clock):
    """The login's session, the token issued with it and the session it restores are one browser."""
    device, _ = await remembered(client, new_client)
    clock.advance(5)
    forget_session(device)
    assert (await call(device, "GET", "/auth/profile")).code == 200  # restored
    answer = body(await call(device, "GET", "/auth/sessions"))
    listed, devices = answer["sessions"], answer["devices"]
    assert sum(s["this_browser"] for s in listed) == 3  # login session, token, restored session
    by_how = sorted(s["signed_in_with"] for s in listed if s["kind"] == "session")
    assert by_how == ["password", "password", "remember_me"]
    assert len(devices) == 2
    this, other = devices
    assert this["current"] and this["remembered"] and this["sessions"] == 2 and len(this["records"]) == 3
    assert this["signed_in_with"] == "remember_me" and this["last_seen"] >= other["last_seen"]
    assert not other["current"] and not other["remembered"] and other["signed_in_with"] == "password"
    assert {s["device"] for s in listed} == {this["handle"], other["handle"]}
    # The other browser's row ends at once (after step-up: this one was restored by a token).
    assert (await call(device, "POST", "/auth/reauthenticate", {"password": PASSWORD})).code == 200
    assert (await call(device, "DELETE", f"/auth/sessions/{other['handle']}")).code == 200
    assert (await call(client, "GET", "/auth/profile")).code == 401
    # This browser's row is a log out: its sessions and its token end together.
    assert (await call(device, "DELETE", f"/auth/sessions/{this['handle']}")).code == 200
    assert (await call(device, "GET", "/auth/profile")).code == 401
    assert "remember" not in device.jar.cookies


@pytest.mark.gen_test
async def test_a_restored_session_must_reauthenticate_for_sensitive_actions(client, new_client, caplog):
    device, _ = await remembered(client, new_client)
    forget_session(device)
    assert (await call(device, "GET", "/auth/profile")).code == 200
    for method, path, data in (
        ("POST", "/auth/logout-all", None),
        ("POST", "/auth/password", {"current": PASSWORD, "new": "another good one"}),
    ):
        response = await call(device, method, path, data)
        assert response.code == 403 and body(response) == {
            "error": "reauthentication_required", "message": "reauthentication required", "status": 403
        }
    listed = body(await call(device, "GET", "/auth/sessions"))["sessions"]
    others = [s for s in listed if s["kind"] == "session" and not s["current"]]
    assert len(others) == 2
    assert (await call(device, "DELETE", f"/auth/sessions/{others[0]['handle']}")).code == 403
    wrong = await call(device, "POST", "/auth/reauthenticate", {"password": "not the password"})
    assert wrong.code == 401
    assert (await call(device, "POST", "/auth/reauthenticate", {"password": PASSWORD})).code == 200
    for other in others:
        assert (await call(device, "DELETE", f"/auth/sessions/{other['handle']}")).code == 200
    assert (await call(client, "GET", "/auth/profile")).code == 401
    assert (await call(device, "POST", "/auth/logout-all")).code == 200


@pytest.mark.gen_test
async def test_an_old_login_must_reauthenticate_too(client, clock):
    await register(client)
    clock.advance(901)
    # (the session's idle timeout is 30 min: it is still alive, but its login is old)
    assert (await call(client, "POST", "/auth/password", {"current": PASSWORD, "new": "another good one"})).code == 403
    assert (await call(client, "POST", "/auth/reauthenticate", {"password": PASSWORD})).code == 200
    assert (await call(client, "POST", "/auth/password", {"current": PASSWORD, "new": "another good one"})).code == 200


@pytest.mark.gen_test
async def test_logout_deletes_the_token(client, new_client):
    device, _ = await remembered(client, new_client)
    token = device.jar.cookies["remember"]
    response = await call(device, "POST", "/auth/logout")
    assert "remember" not in device.jar.cookies
    assert response.headers["Clear-Site-Data"] == '"cookies", "storage"'
    replay = new_client()
    replay.jar.cookies["remember"] = token
    assert (await call(replay, "GET", "/auth/profile")).code == 401


@pytest.mark.gen_test
async def test_the_previous_token_after_the_grace_window_is_theft_and_ends_everything(client, new_client, clock, caplog):
    caplog.set_level(logging.WARNING, logger="sessions.audit")
    device, _ = await remembered(client, new_client)
    stolen = device.jar.cookies["remember"]
    forget_session(device)
    assert (await call(device, "GET", "/auth/profile")).code == 200  # rotates
    clock.advance(61)
    thief = new_client()
    thief.jar.cookies["remember"] = stolen
    assert (await call(thief, "GET", "/auth/profile")).code == 401
    assert (await call(device, "GET", "/auth/profile")).code == 401  # the user's sessions ended
    assert (await call(client, "GET", "/auth/profile")).code == 401
    assert any(json.loads(r.getMessage())["event"] == "remember_theft" for r in caplog.records if r.name == "sessions.audit")


@pytest.mark.gen_test
async def test_tampered_or_garbage_tokens_are_ignored_without_500(client, new_client):
    device, _ = await remembered(client, new_client)
    token = device.jar.cookies["remember"]
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "garbage", "x" * 5000, token + token):
        probe = new_client()
        probe.jar.cookies["remember"] = bad
        response = await call(probe, "GET", "/auth/profile")
        assert response.code == 401
    forget_session(device)
    assert (await call(device, "GET", "/auth/profile")).code == 200  # the real token still works


@pytest.mark.gen_test
async def test_revoking_a_remembered_device(client, new_client):
    device, _ = await remembered(client, new_client)
    listed = body(await call(client, "GET", "/auth/sessions"))["sessions"]
    token = next(s for s in listed if s["kind"] == "remembered_device")
    assert (await call(client, "DELETE", f"/auth/sessions/{token['handle']}")).code == 200
    forget_session(device)
    assert (await call(device, "GET", "/auth/profile")).code == 401


@pytest.mark.gen_test
async def test_password_change_deletes_every_token(client, new_client):
    device, _ = await remembered(client, new_client)
    assert (await call(client, "POST", "/auth/password", {"current": PASSWORD, "new": "another good one"})).code == 200
    forget_session(device)
    assert (await call(device, "GET", "/auth/profile")).code == 401


@pytest.mark.gen_test
@pytest.mark.parametrize("remember", [1, "yes", None, [], {}])
async def test_remember_must_be_a_boolean(client, remember):
    await register(client)
    payload = {"email": "ana@example.com", "password": PASSWORD, "remember": remember}
    assert (await call(client, "POST", "/auth/login", payload)).code == 400


# -- found by attacking the running server ----------------------------------------------


@pytest.mark.gen_test
async def test_a_token_issued_by_a_login_that_raced_a_password_change_does_not_survive_it(client, new_client, app):
    """Simulate the race's outcome: a remember-me login made with the old password
    lands just after the change (its token was not there to be deleted)."""
    await register(client)
    attacker = new_client()
    await call(attacker, "POST", "/auth/login", {"email": "ana@example.com", "password": PASSWORD, "remember": True})
    token = attacker.jar.cookies["remember"]
    accounts = app.settings["accounts"]
    user = await accounts.users.by_email("ana@example.com")
    await accounts.users.set_password(user.id, await accounts.hasher.hash("another good one"))  # no session ended
    thief = new_client()
    thief.jar.cookies["remember"] = token
    assert (await call(thief, "GET", "/auth/profile")).code == 401
    assert "remember" not in thief.jar.cookies  # cleared, and the token is gone from the store
    again = new_client()
    again.jar.cookies["remember"] = token
    assert (await call(again, "GET", "/auth/profile")).code == 401


@pytest.mark.gen_test
async def test_a_rotated_token_reaches_the_browser_even_when_the_request_is_refused(client, new_client, clock):
    device, _ = await remembered(client, new_client)
    forget_session(device)
    before = device.jar.cookies["remember"]
    response = await call(device, "POST", "/auth/logout-all")  # restores, rotates, then 403 (step-up)
    assert response.code == 403
    assert set_cookie_headers(response, "remember") and device.jar.cookies["remember"] != before
    clock.advance(120)  # long past the grace window: the browser's cookie is the new one
    forget_session(device)
    assert (await call(device, "GET", "/auth/profile")).code == 200
    assert (await call(client, "GET", "/auth/profile")).code == 200  # no false theft alarm


@pytest.mark.gen_test
async def test_restores_count_against_the_session_cap(client, new_client, demo_config):
    device, _ = await remembered(client, new_client)
    for _ in range(demo_config.auth.max_sessions + 3):
        forget_session(device)
        assert (await call(device, "GET", "/auth/profile")).code == 200
    listed = body(await call(device, "GET", "/auth/sessions"))["sessions"]
    assert sum(s["kind"] == "session" for s in listed) <= demo_config.auth.max_sessions


@pytest.mark.gen_test
@pytest.mark.parametrize("production, trusted_proxies", [(True, ["127.0.0.1"])])
async def test_no_token_is_issued_or_used_over_plain_http_in_production(new_client, production, trusted_proxies):
    https = new_client(headers={"X-Forwarded-Proto": "https"})
    await https.fetch("/auth/profile")
    await https.fetch("/auth/register", "POST", json.dumps({"email": "ana@example.com", "name": "Ana", "password": PASSWORD}),
                      headers={"Content-Type": "application/json"})
    plain = new_client()
    plain.jar.cookies.update({k: v for k, v in https.jar.cookies.items() if k != "__Host-sid"})
    response = await plain.fetch(
        "/auth/login", "POST", json.dumps({"email": "ana@example.com", "password": PASSWORD, "remember": True}),
        headers={"Content-Type": "application/json", "X-XSRFToken": https.jar.cookies["__Host-xsrf"]},
    )
    assert response.code == 200 and not set_cookie_headers(response, "__Host-remember")
    secure = new_client(headers={"X-Forwarded-Proto": "https"})
    secure.jar.cookies.update(https.jar.cookies)
    secure.jar.cookies.pop("__Host-sid", None)
    response = await secure.fetch(
        "/auth/login", "POST", json.dumps({"email": "ana@example.com", "password": PASSWORD, "remember": True}),
        headers={"Content-Type": "application/json"},
    )
    [header] = set_cookie_headers(response, "__Host-remember")
    assert "Secure" in header
    replay = new_client()  # the token replayed over plain HTTP is neither used nor rotated
    replay.jar.cookies["__Host-remember"] = secure.jar.cookies["__Host-remember"]
    response = await replay.fetch("/auth/profile")
    assert response.code == 401 and not set_cookie_headers(response, "__Host-remember")


@pytest.mark.gen_test
@pytest.mark.parametrize("email", ["\ud800", "a\ud800@example.com", "ana@example.com\udfff"])
async def test_lone_surrogates_are_a_400_not_a_500(client, email):
    raw = json.dumps({"email": email, "password": PASSWORD})  # json.dumps escapes them as \\udxxx
    assert "\\ud" in raw
    response = await call(client, "POST", "/auth/login", raw)
    assert response.code == 400
