"""Every response hardened, and the demo-side defects of issue 6, through real HTTP.

The demo app (``server.make_app``) behind ``server.make_server`` (the real server
class: trusted proxies, body limit) on the memory store. A sweep sends odd methods to
every route and to odd paths and checks that nothing answers 5xx, that every answer
carries the security headers and no ``Server`` banner, and that no traceback is logged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import time

import pytest

import server
from handlers.base import SECURITY_HEADERS
from server import parse_config, session_options_for
from sessions import generate_key
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.support import Client, CountingStore, parse_set_cookie, set_cookie_headers

ROUTES = ["/", "/counter", "/flash", "/preferences/theme", "/health", "/ready", "/api/counter", "/api/preferences"]
# The account pages (handlers/account_pages.py).
ROUTES += ["/register", "/login", "/logout", "/account", "/account/name", "/account/password", "/account/sessions",
           "/account/sessions/0123456789abcdef01234567/revoke", "/account/logout-all"]
ROUTES += ["/ws", "/live"]  # the websocket handshake (403 without a session) and its page
ODD_PATHS = [
    "/no-such-page",
    "/api/no-such-call",
    "/api/x",
    "/api/",
    "/favicon.ico",
    "/static/style.css",
    "/static/nope.css",
    "/static/",
    "/static/style.css%00.txt",
    "/static/%00",
    "/static/%2e%2e/server.py",
    "/static/..%2fserver.py",
    "/static/%2e%2e/",
    "/static/style.css/",
    "/static/%5c..%5cserver.py",
    "/%ff%fe",
    "/api/%00",
    "/flash%00",
    "/" + "a" * 4000,
    "/static/" + "b" * 3000,
    "/api/" + "c" * 3000,
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]


@pytest.fixture
def demo_store():
    return CountingStore()


@pytest.fixture
def store(demo_store):
    return demo_store


app, http_server = demo_app_fixtures()


@pytest.fixture
def client(http_client, base_url, http_server):
    return Client(http_client, base_url)


def port_of(http_server) -> int:
    return next(iter(http_server._sockets.values())).getsockname()[1]


def assert_hardened(response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.code, response.effective_url[-80:])
    assert "Server" not in response.headers


def tracebacks(caplog) -> list[str]:
    return [r.getMessage()[:200] for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def body(response):
    return json.loads(response.body)


def raw_exchange(port: int, data: bytes, *, timeout: float = 5) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return reply


# -- the sweep ---------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("app_settings", [{}, {"serve_traceback": True}], ids=["plain", "serve_traceback"])
async def test_sweep_odd_methods_and_paths(client, caplog, app_settings):
    await client.fetch("/api/counter")  # an _xsrf cookie, so unsafe methods reach the handlers too
    caplog.clear()
    seen = []
    with caplog.at_level(logging.DEBUG):
        for path in ROUTES + ODD_PATHS:
            for method in METHODS:
                for xsrf in (True, False):
                    response = await client.fetch(path, method, xsrf=xsrf, follow=False)
                    seen.append((method, path[:40], response.code))
                    assert response.code < 500, (method, path[:80], response.code, response.body[:300])
                    assert_hardened(response)
                    assert b"Traceback" not in response.body
                    if response.code >= 400 and path.startswith("/api/") and method != "HEAD":
                        assert response.headers["Content-Type"].startswith("application/json"), (method, path)
                        assert body(response)["status"] == response.code
                        # the one JSON error shape: a short code and a text for a person
                        assert set(body(response)) <= {"error", "message", "status", "field", "retry_after"}
                        assert body(response)["error"].isidentifier() and body(response)["message"]
    assert not tracebacks(caplog), tracebacks(caplog)[:3]
    assert len(seen) == len(ROUTES + ODD_PATHS) * len(METHODS) * 2


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "raw_path",
    [b"/static/../server.py", b"/static/../../etc/passwd", b"/static/./style.css/..", b"/static//etc/passwd"],
)
async def test_static_dot_segments_sent_raw_are_4xx(http_server, io_loop, raw_path, caplog):
    request = b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = await io_loop.run_in_executor(None, raw_exchange, port_of(http_server), request)
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:200]
    assert b"\r\nServer:" not in reply and b"X-Content-Type-Options: nosniff" in reply
    assert b"import" not in reply  # not server.py's source
    assert not tracebacks(caplog)


# -- errors and static files: the app's own pages --------------------------------------------


@pytest.mark.gen_test
async def test_unknown_page_is_the_apps_html_404(client):
    response = await client.fetch("/no-such-page")
    assert response.code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"<h2>404 &middot; Page not found</h2>" in response.body and b'href="/favicon.ico"' in response.body
    assert b"There is no page at this address" in response.body
    assert_hardened(response)


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_unknown_api_call_is_json_404(client, method):
    await client.fetch("/api/counter")
    response = await client.fetch("/api/no-such-call", method)
    assert response.code == 404
    assert body(response) == {"error": "not_found", "status": 404, "message": "Not Found"}
    assert_hardened(response)


@pytest.mark.gen_test
async def test_static_files_and_favicon_carry_the_headers(client):
    css = await client.fetch("/static/style.css")
    assert css.code == 200 and b"--accent" in css.body
    assert_hardened(css)
    missing = await client.fetch("/static/nope.css")
    assert missing.code == 404 and b"<h2>404" in missing.body
    assert_hardened(missing)
    icon = await client.fetch("/favicon.ico")
    assert icon.code == 200 and icon.body[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert icon.headers["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert_hardened(icon)


@pytest.mark.gen_test
async def test_redirect_carries_the_headers(client):
    await client.fetch("/")
    response = await client.fetch("/counter", "POST", follow=False)
    assert response.code == 303  # see other: the browser follows with a GET
    assert_hardened(response)


@pytest.mark.gen_test
@pytest.mark.parametrize("app_settings", [{}, {"serve_traceback": True}], ids=["plain", "serve_traceback"])
async def test_nul_byte_in_static_path_is_404_not_500(client, caplog, app_settings):
    with caplog.at_level(logging.DEBUG):
        response = await client.fetch("/static/style.css%00.txt")
    assert response.code == 404
    assert b"Traceback" not in response.body and not tracebacks(caplog)
    assert_hardened(response)


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/health", "/ready", "/", "/api/counter"])
async def test_wrong_method_is_405_page_without_traceback(client, caplog, path):
    with caplog.at_level(logging.DEBUG):
        response = await client.fetch(path, "PATCH", xsrf=False) if path != "/health" else None
        response = response or await client.fetch(path, "POST")
    assert response.code in (403, 405)
    assert not tracebacks(caplog), tracebacks(caplog)
    assert_hardened(response)


@pytest.mark.gen_test
async def test_post_health_is_405_with_the_error_page(client, caplog):
    with caplog.at_level(logging.DEBUG):
        response = await client.fetch("/health", "POST")
    assert response.code == 405 and b"<h2>405" in response.body
    assert b'data-theme="light"' in response.body
    assert not tracebacks(caplog)


# -- bodies over the limit: 413, the app's answer, before the body is read -------------------


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("path", "kind"), [("/api/preferences", "json"), ("/flash", "html"), ("/no-such-page", "html")]
)
async def test_announced_oversize_body_is_413_without_reading_it(http_server, io_loop, path, kind, caplog):
    request = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n".encode()
    started = time.monotonic()
    reply = await io_loop.run_in_executor(None, raw_exchange, port_of(http_server), request)
    assert time.monotonic() - started < 3  # answered and closed: no wait for 10 MB
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), reply[:300]
    assert b"\r\nServer:" not in head and b"X-Frame-Options: DENY" in head
    assert b"400 Bad Request" not in reply  # nothing of Tornado's own answer after ours
    if kind == "json":
        assert json.loads(payload)["status"] == 413
    else:
        assert b"<h2>413" in payload
    assert not tracebacks(caplog)


@pytest.mark.gen_test
async def test_real_oversize_body_is_413_and_a_body_at_the_limit_is_not(client, http_server, io_loop):
    await client.fetch("/api/counter")
    response = await client.fetch("/api/preferences", "PUT", b" " * (server.MAX_BODY_BYTES + 1))
    assert response.code == 413
    assert body(response)["status"] == 413 and "limit" in body(response)["message"]
    at_limit = json.dumps({"theme": "dark"}).ljust(server.MAX_BODY_BYTES)
    response = await client.fetch("/api/preferences", "PUT", at_limit)
    assert response.code == 200 and body(response)["theme"] == "dark"
    # a body sent in full with its headers: still 413, never a reset before the answer
    raw = (
        f"POST /api/counter HTTP/1.1\r\nHost: x\r\nContent-Length: {200_000}\r\n\r\n".encode() + b"x" * 200_000
    )
    reply = await io_loop.run_in_executor(None, raw_exchange, port_of(http_server), raw)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]


# -- cookies, caching and logs --------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/api/preferences", "/"])
async def test_cookie_dependent_responses_are_not_shared_cacheable(client, path):
    response = await client.fetch(path)
    assert response.code == 200
    assert "no-store" in response.headers["Cache-Control"]
    assert "cookie" in response.headers["Vary"].lower()
    assert response.headers.get_list("Vary") == [response.headers["Vary"]]  # one Vary header


@pytest.mark.gen_test
async def test_client_controlled_json_key_cannot_forge_log_lines(client, caplog):
    await client.fetch("/api/counter")
    evil = '{"x\\nCRITICAL root forged line": "1", "theme\\r\\nmore": "dark"}'
    with caplog.at_level(logging.DEBUG):
        response = await client.fetch("/api/preferences", "PUT", evil)
    assert response.code == 400
    messages = [r.getMessage() for r in caplog.records]
    assert any("http_error" in m and "forged line" in m for m in messages), messages
    assert not [m for m in messages if "\n" in m or "\r" in m]


@pytest.mark.gen_test
@pytest.mark.parametrize("production", [True])
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1"]])
async def test_production_preferences_cookie_is_secure_and_host_prefixed(
    http_client, base_url, production, trusted_proxies, http_server
):
    client = Client(http_client, base_url, headers={"X-Forwarded-Proto": "https"})
    await client.fetch("/api/counter")
    response = await client.fetch("/api/preferences", "PUT", json.dumps({"theme": "dark"}))
    assert response.code == 200
    assert not set_cookie_headers(response, "prefs")
    [header] = set_cookie_headers(response, "__Host-prefs")
    _, _, attrs = parse_set_cookie(header)
    assert attrs["secure"] is True and attrs["path"] == "/" and "domain" not in attrs
    assert attrs["httponly"] is True and attrs["samesite"] == "Lax" and int(attrs["max-age"]) > 86400
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert body(await client.fetch("/api/preferences"))["theme"] == "dark"
    page = await client.fetch("/")
    assert b'class="theme-dark"' in page.body


@pytest.mark.gen_test
@pytest.mark.parametrize("production", [True])
async def test_production_preferences_over_plain_http_are_not_set_and_logged(client, production, caplog):
    client.extra = {"X-Forwarded-Proto": "https"}  # from the client itself: no trusted proxy, no effect
    # xsrf cookies are Secure in production too; give the client one so the PUT reaches the handler
    client.jar.cookies["__Host-xsrf"] = token = "tok" * 8
    with caplog.at_level(logging.WARNING):
        response = await client.fetch(
            "/api/preferences", "PUT", json.dumps({"theme": "dark"}), headers={"X-XSRFToken": token}
        )
    assert response.code == 200 and body(response)["theme"] == "dark"
    assert not response.headers.get_list("Set-Cookie")
    assert any('"event":"cookie_not_set"' in r.getMessage() for r in caplog.records)


@pytest.mark.gen_test
@pytest.mark.parametrize("production", [True])
async def test_production_over_plain_http_stores_no_session(client, store, production):
    client.jar.cookies["__Host-xsrf"] = token = "tok" * 8
    response = await client.fetch("/api/counter", "POST", headers={"X-XSRFToken": token})
    assert response.code == 200
    assert not response.headers.get_list("Set-Cookie")
    assert await store.live_keys() == []  # no orphan row for a cookie that was never sent


@pytest.mark.gen_test
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1"]])
async def test_security_log_names_the_forwarded_client(client, caplog, trusted_proxies):
    client.extra = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    with caplog.at_level(logging.WARNING, logger="sessions.security"):
        await client.fetch("/api/preferences", headers={"Cookie": "prefs=" + "A" * 60})
    [line] = [r.getMessage() for r in caplog.records if "cookie_rejected" in r.getMessage()]
    assert json.loads(line)["remote"] == "203.0.113.7"


# -- server.py configuration ---------------------------------------------------------------


@pytest.fixture
def keys_env(monkeypatch):
    monkeypatch.setenv("SESSION_KEYS", generate_key())
    for name in ("TRUSTED_PROXIES", "SESSION_STORE", "MONGODB_URL", "PRODUCTION", "DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_trusted_proxies_from_flags_env_and_default(keys_env, tmp_path):
    base = ["--store", "memory://", "--data-dir", str(tmp_path / "d")]
    assert parse_config(base)[1].trusted_proxies == []
    assert parse_config([*base, "--production"])[1].trusted_proxies == []  # production trusts nothing by itself
    _, config = parse_config([*base, "--trusted-proxy", "10.0.0.1", "--trusted-proxy", "10.0.0.2, ::1"])
    assert config.trusted_proxies == ["10.0.0.1", "10.0.0.2", "::1"]
    keys_env.setenv("TRUSTED_PROXIES", "127.0.0.1,10.0.0.9")
    assert parse_config(base)[1].trusted_proxies == ["127.0.0.1", "10.0.0.9"]
    assert parse_config([*base, "--trusted-proxy", "10.0.0.1"])[1].trusted_proxies == ["10.0.0.1"]  # flag wins
    with pytest.raises(SystemExit, match="not an IP address"):
        parse_config([*base, "--trusted-proxy", "proxy.internal"])


def test_production_session_options_trust_nothing():
    options = session_options_for(True)
    assert options.cookie.host_prefix and options.cookie.effective_secure
    assert not getattr(options, "trust_proxy", False)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_data_dir_is_created_private(keys_env, tmp_path):
    keys_env.delenv("SESSION_KEYS")
    data_dir = tmp_path / "fresh" / "var"
    _, config = parse_config(["--data-dir", str(data_dir), "--store", "memory://"])
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "dev-keys").stat().st_mode) == 0o600


def _private_data_dir(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o700)
    return data_dir


def _key_file(path, mode=0o600):
    path.write_text(generate_key() + "\n")
    path.chmod(mode)
    return path


def _parse_in(data_dir):
    return parse_config(["--data-dir", str(data_dir), "--store", "memory://"])


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_key_file_readable_by_others_is_refused(keys_env, tmp_path):
    keys_env.delenv("SESSION_KEYS")
    data_dir = _private_data_dir(tmp_path)
    key_file = _key_file(data_dir / "dev-keys", 0o644)
    with pytest.raises(SystemExit) as failure:
        _parse_in(data_dir)
    assert "chmod 600" in str(failure.value) and str(key_file) in str(failure.value)
    key_file.chmod(0o600)
    assert _parse_in(data_dir)[1].keys


@pytest.mark.skipif(os.name != "posix", reason="file modes")
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o755])
def test_data_dir_open_to_others_is_refused(keys_env, tmp_path, mode):
    """A world-writable data directory lets anyone plant the key file: refused, not a warning."""
    keys_env.delenv("SESSION_KEYS")
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    data_dir.chmod(mode)
    with pytest.raises(SystemExit) as failure:
        parse_config(["--data-dir", str(data_dir)])
    assert f"chmod 700 {data_dir}" in str(failure.value)
    assert not (data_dir / "dev-keys").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root to give a file away")
def test_key_file_owned_by_another_user_is_refused(keys_env, tmp_path):
    """Whoever planted the key file chose the cookie key."""
    keys_env.delenv("SESSION_KEYS")
    data_dir = _private_data_dir(tmp_path)
    key_file = _key_file(data_dir / "dev-keys")
    os.chown(key_file, 65534, 65534)
    with pytest.raises(SystemExit) as failure:
        _parse_in(data_dir)
    assert "belongs to user id 65534" in str(failure.value)
    os.chown(data_dir, 65534, 65534)  # a directory of someone else's
    os.chown(key_file, 0, 0)
    with pytest.raises(SystemExit, match="belongs to user id 65534"):
        _parse_in(data_dir)


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_key_file_that_is_a_symlink_is_refused(keys_env, tmp_path):
    keys_env.delenv("SESSION_KEYS")
    data_dir = _private_data_dir(tmp_path)
    (data_dir / "dev-keys").symlink_to(_key_file(tmp_path / "elsewhere"))
    with pytest.raises(SystemExit, match="not a regular file"):
        _parse_in(data_dir)


def test_every_log_line_is_one_line_whatever_the_message():
    """NEL (0x85), U+2028 and friends in a client's bytes cannot start a forged line."""
    from sessions.events import OneLineFormatter

    forged = '{"event":"login_success","user":"admin"}'
    formatter = OneLineFormatter("%(levelname)s %(message)s")
    for breaker in ("\n", "\r", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"):
        record = logging.LogRecord("tornado.general", logging.INFO, __file__, 1, "Malformed HTTP message: %r",
                                   (f"GET /{breaker}{forged}",), None)
        record.msg = "Malformed HTTP message: %s"
        line = formatter.format(record)
        assert len(line.splitlines()) == 1, repr(breaker)
    try:
        raise ValueError("boom\x85" + forged)
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert len(formatter.format(record).splitlines()) == 1  # a traceback too


def test_store_help_lists_the_registered_schemes(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    out = capsys.readouterr().out
    for scheme in ("memory://", "sqlite://", "mongodb://"):
        assert scheme in out
    assert "--trusted-proxy" in out and "TRUSTED_PROXIES" in out


def test_server_source_reads_no_backend_private_attribute():
    source = open(server.__file__).read()
    assert "expiry_mode_in_force" not in source and "trust_proxy" not in source


# -- server.py as a process: proxy, 413, cookies ---------------------------------------------


def test_server_process_behind_a_trusted_proxy(tmp_path):
    from tests.fixtures.server_process import Server

    key = generate_key()
    proc = Server(
        tmp_path, "--production", "--store", "memory://", "--trusted-proxy", "127.0.0.1", env={"SESSION_KEYS": key}
    ).start()
    try:
        status, headers, _ = proc.request("GET", "/api/counter", {"X-Forwarded-Proto": "https"})
        assert status == 200
        cookies = {n: parse_set_cookie(v) for n, v in headers if n.lower() == "set-cookie"}
        [(name, _, attrs)] = cookies.values()
        assert name == "__Host-xsrf" and attrs["secure"] is True
        status, headers, _ = proc.request("GET", "/no-such-page")
        assert status == 404 and not any(n.lower() == "server" for n, _ in headers)
        reply = raw_exchange(
            proc.port, b"PUT /api/preferences HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n"
        )
        assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    finally:
        proc.stop()


@pytest.mark.parametrize(
    "flags",
    [
        ["--remember-days", "0"],
        ["--remember-days", "-1"],
        ["--remember-grace", "-5"],
        ["--reauth-after", "-1"],
        ["--max-sessions", "0"],
        ["--bcrypt-cost", "3"],
        ["--login-limit", "many"],
        ["--processes", "-1"],
    ],
)
def test_bad_account_flags_are_refused_with_a_message_not_a_traceback(tmp_path, monkeypatch, flags):
    monkeypatch.setenv("SESSION_KEYS", generate_key())
    with pytest.raises(SystemExit) as info:
        parse_config(["--data-dir", str(tmp_path), "--store", "memory://", *flags])
    assert str(info.value).startswith("error:")
