"""The demo as a small product, over HTTP and as a process (issue 16).

Limits that say when to try again (pages and JSON), sign-up forms checked all at once
and counted only when they reach the store, error pages in the visitor's own state
and plain words (JSON under /api/ and /auth/), one vocabulary for browsers and times,
and a clean start: ``--help`` with every default, one line for a port in use, start
lines that say where the data and the key are. The browser side (phone widths,
axe-core, the password change in one pass) is tests/demo/test_browser_product.py.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accounts.ratelimit import wait_words
from accounts.wording import browser_label, format_when
from server import build_parser
from tests.fixtures.api import PASSWORD, body, call
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.stores import open_test_store
from tests.fixtures.support import FlakyStore, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory"])
def demo_store(request, tmp_path, io_loop):
    kind = getattr(request, "param", "memory")
    store = FlakyStore() if kind == "flaky" else open_test_store(kind, request, tmp_path)
    yield store
    io_loop.run_sync(store.close)


app, http_server = demo_app_fixtures()


async def post_form(client, path, fields, *, follow=True):
    if client.xsrf_token() is None:
        await client.fetch("/login")
    data = "&".join(f"{k}={v}" for k, v in {**fields, "_xsrf": client.xsrf_token()}.items())
    return await client.fetch(path, "POST", data, headers={"Content-Type": "application/x-www-form-urlencoded"},
                              follow=follow)


def field_errors(page: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r'<p class="field-error" id="(\w+)-error">(.*?)</p>', page)}


# -- 1. limits that explain themselves ---------------------------------------------------


def test_wait_words():
    assert wait_words(1) == "1 second" and wait_words(40) == "40 seconds"
    assert wait_words(60) == "1 minute" and wait_words(61) == "2 minutes" and wait_words(896) == "15 minutes"
    assert wait_words(3600) == "60 minutes" and wait_words(7200) == "2 hours"


@pytest.mark.gen_test
async def test_register_form_shows_every_error_at_once_and_mistakes_do_not_count(client, demo_config):
    limit = demo_config.register_limit_address.hits
    for _ in range(limit + 2):  # forms with mistakes, more than the limit
        response = await post_form(client, "/register", {"email": "nope", "name": "+", "password": "short"})
        assert response.code == 400
        errors = field_errors(response.body.decode())
        assert set(errors) == {"email", "name", "password"}, errors
    for i in range(limit):  # every real sign-up still gets in
        client.jar.cookies.clear()
        ok = await post_form(client, "/register", {"email": f"u{i}%40example.com", "name": f"U{i}",
                                                  "password": "long+enough+now"}, follow=False)
        assert ok.code == 303, ok.body[:300]
    client.jar.cookies.clear()
    refused = await post_form(client, "/register", {"email": "late%40example.com", "name": "L",
                                                   "password": "long+enough+now"})
    assert refused.code == 429 and int(refused.headers["Retry-After"]) > 0
    page = refused.body.decode()
    assert re.search(r"too many sign-ups from this address; please try again in \d+ (?:seconds?|minutes?)<", page)
    assert re.search(r'id="register-wait">You can sign up again <span class="wait">at \d{4}-\d\d-\d\d \d\d:\d\d UTC', page)


@pytest.mark.gen_test
async def test_json_register_names_every_field_and_the_429_says_when(client, demo_config):
    response = await call(client, "POST", "/auth/register", {"email": "nope", "name": "", "password": "short"})
    assert response.code == 400
    answer = body(response)
    assert answer["field"] == "email" and set(answer["errors"]) == {"email", "name", "password"}
    for i in range(demo_config.register_limit_address.hits):
        client.jar.cookies.pop("sid", None)
        ok = await call(client, "POST", "/auth/register", {"email": f"j{i}@example.com", "name": "J",
                                                           "password": PASSWORD})
        assert ok.code == 201
    client.jar.cookies.pop("sid", None)
    refused = await call(client, "POST", "/auth/register", {"email": "j9@example.com", "name": "J", "password": PASSWORD})
    answer = body(refused)
    assert refused.code == 429 and answer["retry_after"] == int(refused.headers["Retry-After"]) > 0
    assert answer["message"] == f"too many sign-ups from this address; please try again in {wait_words(answer['retry_after'])}"


@pytest.mark.gen_test
async def test_login_429_page_says_how_long_and_the_way_out(client, new_client):
    await post_form(client, "/register", {"email": "ana%40example.com", "name": "Ana", "password": "correct+horse+battery"})
    other = new_client()
    for _ in range(5):
        assert (await post_form(other, "/login", {"email": "ana%40example.com", "password": "wrong"})).code == 401
    refused = await post_form(other, "/login", {"email": "ana%40example.com", "password": "correct+horse+battery"})
    assert refused.code == 429
    page = html.unescape(refused.body.decode())
    assert re.search(r"too many login attempts; please try again in \d+ (?:seconds?|minutes?)<", page)
    assert "Remember me" in page and re.search(r"at \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    answer = await call(new_client(), "POST", "/auth/login", {"email": "ana@example.com", "password": PASSWORD})
    assert answer.code == 429 and body(answer)["retry_after"] > 0
    assert body(answer)["message"].startswith("too many login attempts; please try again in ")


# -- 4. the password change: post/redirect/get, only other browsers counted --------------


@pytest.mark.gen_test
async def test_password_change_counts_browsers_not_records(client, new_client):
    await post_form(client, "/register", {"email": "ana%40example.com", "name": "Ana", "password": "correct+horse+battery"})
    other = new_client()
    await post_form(other, "/login", {"email": "ana%40example.com", "password": "correct+horse+battery", "remember": "1"})
    # this browser is remembered too: its own token is not "another session"
    await post_form(client, "/logout", {})
    await post_form(client, "/login", {"email": "ana%40example.com", "password": "correct+horse+battery", "remember": "1"})
    done = await post_form(client, "/account/password", {"current": "correct+horse+battery", "new": "another+good+one"})
    assert done.code == 200
    assert "Your password is changed; 1 other browser is logged out." in html.unescape(done.body.decode())
    assert "remember" in client.jar.cookies  # still remembered (a fresh token)
    client.jar.cookies.pop("sid")
    again = await client.fetch("/account", follow=False)
    assert again.code == 200  # the fresh token brings it back


# -- 5. error pages in the visitor's own state ------------------------------------------


@pytest.mark.gen_test
async def test_error_pages_show_the_theme_and_login_of_the_visitor(client):
    page = (await client.fetch("/no-such-page")).body.decode()
    assert 'id="nav-login"' in page and 'data-theme="light"' in page
    await call(client, "PUT", "/api/preferences", {"theme": "dark"})
    await post_form(client, "/register", {"email": "ana%40example.com", "name": "Ana", "password": "correct+horse+battery"})
    response = await client.fetch("/no-such-page")
    page = response.body.decode()
    assert response.code == 404 and 'data-theme="dark"' in page and 'id="nav-user">Ana<' in page
    assert 'id="nav-logout"' in page and "There is no page at this address" in page
    assert "Cookie" in response.headers["Vary"] and response.headers["Cache-Control"] == "no-store"
    bad = await post_form(client, "/flash", {"message": "", "category": "info"})
    assert bad.code == 400 and 'id="nav-user">Ana<' in bad.body.decode() and 'data-theme="dark"' in bad.body.decode()


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/api/nope", "/auth/nope"])
async def test_unknown_api_and_auth_calls_get_the_json_error_body(client, path):
    response = await client.fetch(path)
    assert response.code == 404 and response.headers["Content-Type"].startswith("application/json")
    assert body(response) == {"error": "not_found", "status": 404, "message": "Not Found"}


@pytest.mark.gen_test
@pytest.mark.parametrize("demo_store", ["flaky"], indirect=True)
async def test_store_outage_page_in_plain_words(client, demo_store):
    await post_form(client, "/register", {"email": "ana%40example.com", "name": "Ana", "password": "correct+horse+battery"})
    await call(client, "PUT", "/api/preferences", {"theme": "dark"})
    demo_store.down = True
    response = await client.fetch("/account")
    page = html.unescape(response.body.decode())
    assert response.code == 503 and response.headers["Retry-After"]
    assert "We can't reach the session store right now; please try again in a minute." in page
    assert 'data-theme="dark"' in page and "Session Store Unavailable" not in page.split("<main", 1)[1]
    api = await call(client, "GET", "/auth/profile")
    assert api.code == 503 and body(api)["message"] == "we can't reach the session store right now; please try again in a minute"


# -- 7. one vocabulary -----------------------------------------------------------------


def test_one_way_to_name_browsers_and_times():
    safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
    assert browser_label(safari) == "Safari on macOS"
    assert format_when(1796111520) == "2026-12-01 07:52 UTC"
    assert format_when(1796111520, "Asia/Tokyo") == "2026-12-01 16:52 JST"


def test_live_page_wording_matches_the_sessions_page():
    script = (ROOT / "static" / "live.js").read_text()
    assert "toLocaleTimeString" not in script and "m.user_agent" not in script and "m.browser" in script
    assert "data-timezone" in script


# -- 6. a clean start ------------------------------------------------------------------------


def test_help_names_every_default_and_explains_the_brackets():
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert "default" in (parser.formatter_class("x")._get_help_string(action) % {"default": action.default}), action.dest
    assert "A name in brackets, such as [PORT], is the environment variable" in text


def server_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_STORE", "MONGODB_URL", "SESSION_KEYS", "PRODUCTION")}
    return env


def test_start_lines_say_where_the_data_and_key_are_and_a_busy_port_is_one_line(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--data-dir", str(data), "--bcrypt-cost", "4"],
        cwd=ROOT, env=server_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith(f"tornado-sessions demo on http://127.0.0.1:{port}/"), lines
        assert f"data: sessions and users in {data.resolve() / 'sessions.sqlite3'}" in lines[1], lines
        assert f"keys: development key in {data / 'dev-keys'}" in lines[2], lines
        busy = subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--data-dir", str(data)],
            cwd=ROOT, env=server_env(tmp_path), capture_output=True, text=True, timeout=60,
        )
        assert busy.returncode != 0 and "Traceback" not in busy.stderr
        last = busy.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: port {port} on 127.0.0.1 is in use") and "--port" in last
        assert [line for line in busy.stderr.splitlines() if "error" in line.lower()] == [last]
    finally:
        stop_process(proc)


def test_port_taken_by_another_program_in_multi_process_mode(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        busy = subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--data-dir", str(tmp_path / "d"),
             "--processes", "2"],
            cwd=ROOT, env=server_env(tmp_path), capture_output=True, text=True, timeout=60,
        )
    assert busy.returncode != 0 and "Traceback" not in busy.stderr and time.monotonic() - started < 60
    assert busy.stderr.strip().splitlines()[-1].startswith(f"error: port {port} on 127.0.0.1 is in use")


def test_the_sqlite_demo_installs_no_database_driver():
    setup = (ROOT / "setup.cfg").read_text()
    demo = re.search(r"^demo =\n((?:    .+\n)+)", setup, re.M)
    assert demo and not re.search(r"pymongo|motor|redis|psycopg", demo.group(1))
    script = (ROOT / "scripts" / "run-demo.sh").read_text()
    assert 'extras="demo"' in script and "PIP_QUIET=2" in script
    test_extra = re.search(r"^test =\n((?:    .+\n)+)", setup, re.M).group(1)
    for package in ("pymongo", "motor", "redis", "psycopg", "bcrypt", "prometheus_client", "playwright"):
        assert package in test_extra
    assert json.loads((ROOT / "package.json").read_text())["devDependencies"]["axe-core"]
