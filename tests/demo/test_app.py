"""The demo app through HTTP: pages, JSON API, cookie attributes, XSRF, bad input.

Runs over every store the demo can use: memory, SQLite and (when a server is
available) MongoDB.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.stores import STORE_KINDS, open_test_store
from tests.fixtures.support import Client, set_cookie_headers


@pytest.fixture(params=STORE_KINDS)
def demo_store(request, tmp_path, io_loop):
    store = open_test_store(request.param, request, tmp_path)
    yield store
    io_loop.run_sync(store.close)


app, http_server = demo_app_fixtures()


def body(response):
    return json.loads(response.body)


@pytest.mark.gen_test
async def test_health_never_touches_session_or_sets_cookie(client, demo_store):
    response = await client.fetch("/health")
    assert response.code == 200 and body(response) == {"status": "ok", "worker": None}  # one process
    assert "Set-Cookie" not in response.headers
    assert "Server" not in response.headers


@pytest.mark.gen_test
async def test_ready_reports_store(client, demo_store):
    response = await client.fetch("/ready")
    assert response.code == 200
    assert body(response) == {"status": "ok", "store": demo_store.name}


@pytest.mark.gen_test
async def test_counter_api_flow(client):
    first = await client.fetch("/api/counter")
    assert body(first) == {"count": 0}
    assert set_cookie_headers(first, "_xsrf") and not set_cookie_headers(first, "sid")
    for expected in (1, 2, 3):
        response = await client.fetch("/api/counter", "POST")
        assert response.code == 200 and body(response) == {"count": expected}
    assert body(await client.fetch("/api/counter")) == {"count": 3}


@pytest.mark.gen_test
async def test_state_changing_call_without_xsrf_is_403(client):
    await client.fetch("/api/counter")
    response = await client.fetch("/api/counter", "POST", xsrf=False)
    assert response.code == 403
    assert body(response)["status"] == 403


@pytest.mark.gen_test
async def test_session_cookie_attributes_in_development(client):
    await client.fetch("/api/counter")
    response = await client.fetch("/api/counter", "POST")
    [header] = set_cookie_headers(response, "sid")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Secure" not in header


@pytest.mark.gen_test
@pytest.mark.parametrize("production", [True])
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1"]])  # the test client plays the TLS proxy
async def test_session_cookie_is_secure_host_prefixed_in_production(
    http_client, base_url, app, production, trusted_proxies
):
    client = Client(http_client, base_url, headers={"X-Forwarded-Proto": "https"})
    first = await client.fetch("/api/counter")
    [xsrf] = set_cookie_headers(first, "__Host-xsrf")
    assert "Secure" in xsrf
    response = await client.fetch("/api/counter", "POST")
    [header] = set_cookie_headers(response, "__Host-sid")
    assert "Secure" in header and "HttpOnly" in header and "Path=/" in header
    assert "Domain" not in header
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.gen_test
@pytest.mark.parametrize("production", [True])
async def test_production_never_sends_secure_cookie_over_plain_http(client, production):
    await client.fetch("/api/counter")
    response = await client.fetch("/api/counter", "POST", headers={"X-XSRFToken": "x"})
    assert not set_cookie_headers(response, "__Host-sid")


@pytest.mark.gen_test
async def test_post_redirect_get_finds_the_data(client):
    await client.fetch("/")
    response = await client.fetch("/counter", "POST", body="_xsrf=" + client.jar.cookies["_xsrf"], follow=False)
    assert response.code == 303 and response.headers["Location"] == "/"
    page = await client.fetch("/")
    assert re.search(rb'id="count">1<', page.body)


@pytest.mark.gen_test
async def test_flash_message_shown_exactly_once(client):
    await client.fetch("/")
    token = client.jar.cookies["_xsrf"]
    page = await client.fetch("/flash", "POST", body=f"_xsrf={token}&message=Hello+there&category=success")
    assert b'class="flash flash-success"' in page.body and b"Hello there" in page.body
    again = await client.fetch("/")
    assert b"Hello there" not in again.body


@pytest.mark.gen_test
@pytest.mark.parametrize("form", ["message=&category=info", "message=hi&category=evil", "message=" + "x" * 300])
async def test_bad_flash_form_is_400_html(client, form):
    await client.fetch("/")
    response = await client.fetch("/flash", "POST", body=f"_xsrf={client.jar.cookies['_xsrf']}&{form}")
    assert response.code == 400
    assert b"<h2>400" in response.body


@pytest.mark.gen_test
async def test_preferences_round_trip_in_encrypted_cookie(client, demo_store):
    await client.fetch("/api/counter")
    response = await client.fetch("/api/preferences", "PUT", json.dumps({"theme": "dark", "timezone": "Europe/Paris"}))
    assert body(response) == {"theme": "dark", "language": "en", "timezone": "Europe/Paris"}
    [header] = set_cookie_headers(response, "prefs")
    assert "HttpOnly" in header and "Max-Age=" in header
    assert "dark" not in client.jar.cookies["prefs"]  # encrypted, not just signed
    assert body(await client.fetch("/api/preferences"))["theme"] == "dark"
    page = await client.fetch("/")
    assert b'class="theme-dark"' in page.body


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[1, 2]",
        '"dark"',
        '{"theme": "neon"}',
        '{"theme": {"$gt": ""}}',
        '{"theme": 1}',
        '{"admin": true}',
        '{"language": "' + "x" * 100 + '"}',
        '{"timezone": "Mars/Olympus"}',
        "\xff\xfe",
        "[" * 50000,
    ],
)
async def test_bad_preferences_are_400_json_and_change_nothing(client, payload, caplog):
    await client.fetch("/api/counter")
    await client.fetch("/api/preferences", "PUT", json.dumps({"theme": "dark"}))
    with caplog.at_level(logging.WARNING):
        response = await client.fetch("/api/preferences", "PUT", payload)
    assert response.code == 400
    assert body(response)["status"] == 400 and body(response)["message"]
    assert any(r.levelno >= logging.WARNING for r in caplog.records)
    assert body(await client.fetch("/api/preferences"))["theme"] == "dark"


@pytest.mark.gen_test
async def test_tampered_preferences_cookie_falls_back_to_defaults(client, caplog):
    await client.fetch("/api/counter")
    await client.fetch("/api/preferences", "PUT", json.dumps({"theme": "dark"}))
    value = client.jar.cookies["prefs"]
    client.jar.cookies["prefs"] = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    with caplog.at_level(logging.WARNING, logger="sessions.security"):
        response = await client.fetch("/api/preferences")
    assert response.code == 200 and body(response)["theme"] == "light"
    assert any("cookie_rejected" in r.getMessage() for r in caplog.records)


@pytest.mark.gen_test
async def test_cookie_swapped_between_names_is_rejected(client):
    await client.fetch("/api/counter")
    await client.fetch("/api/counter", "POST")
    await client.fetch("/api/preferences", "PUT", json.dumps({"theme": "dark"}))
    client.jar.cookies["sid"], client.jar.cookies["prefs"] = client.jar.cookies["prefs"], client.jar.cookies["sid"]
    assert body(await client.fetch("/api/counter")) == {"count": 0}
    assert body(await client.fetch("/api/preferences"))["theme"] == "light"


@pytest.mark.gen_test
@pytest.mark.parametrize("cookie", ["sid=" + "A" * 5000, "sid=%00%01", "sid=../../etc", 'prefs="{\\"$gt\\": 1}"'])
async def test_malformed_cookies_are_treated_as_absent(client, cookie):
    response = await client.fetch("/api/counter", headers={"Cookie": cookie})
    assert response.code == 200 and body(response) == {"count": 0}


@pytest.mark.gen_test
async def test_security_headers_on_pages(client):
    response = await client.fetch("/")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Vary"] == "Cookie"
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.gen_test
async def test_unknown_page_is_404_html(client):
    response = await client.fetch("/nope")
    assert response.code == 404
