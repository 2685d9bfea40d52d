"""The account pages (HTML forms) through real HTTP on the demo's real server class.

Register, log in, log out, profile, name and password changes, active sessions with
revoke and "log out everywhere"; inline errors that keep the typed values (never a
password), post/redirect/get with flash messages, login redirects that never leave
the site, XSRF on every form, and HTML escaping of what users type.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import pytest

from handlers.account_pages import browser_label, safe_next
from handlers.base import SECURITY_HEADERS
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.stores import open_test_store
from tests.fixtures.support import set_cookie_headers

PASSWORD = "correct horse battery"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


@pytest.fixture(params=["memory", "sqlite"])
def demo_store(request, tmp_path, io_loop):
    store = open_test_store(request.param, request, tmp_path)
    yield store
    io_loop.run_sync(store.close)


app, http_server = demo_app_fixtures()


# -- helpers ---------------------------------------------------------------------------


def text(response) -> str:
    return response.body.decode()


async def post_form(client, path, fields=None, *, xsrf=True, follow=True):
    """A browser form post: the XSRF token in the ``_xsrf`` field (no header)."""
    if client.xsrf_token() is None:
        await client.fetch("/login")  # any page hands out the XSRF cookie
    data = dict(fields or {})
    if xsrf:
        data["_xsrf"] = client.xsrf_token()
    return await client.fetch(path, "POST", urlencode(data), xsrf=False, follow=follow)


async def register(client, email="ana@example.com", name="Ana", password=PASSWORD, *, see_welcome=True):
    """Register and log in; with see_welcome the welcome flash is taken (shown) already."""
    response = await post_form(client, "/register", {"email": email, "name": name, "password": password}, follow=False)
    assert response.code == 303 and response.headers["Location"] == "/account", (response.code, response.body[:500])
    if see_welcome:
        await client.fetch("/account")
    return response


async def login(client, email="ana@example.com", password=PASSWORD, **fields):
    return await post_form(client, "/login", {"email": email, "password": password, **fields}, follow=False)


def flashes(page: str) -> list[tuple[str, str]]:
    return [(c, html.unescape(m)) for c, m in re.findall(r'<p class="flash flash-(\w+)" role="status">(.*?)</p>', page)]


def input_value(page: str, field_id: str) -> str:
    match = re.search(rf'<input id="{field_id}" [^>]*value="([^"]*)"', page)
    assert match, f"no input #{field_id}"
    return html.unescape(match.group(1))


def field_error(page: str, field_id: str) -> str | None:
    match = re.search(rf'<p class="field-error" id="{field_id}-error">(.*?)</p>', page)
    return html.unescape(match.group(1)) if match else None


def form_error(page: str) -> str | None:
    match = re.search(r'<p class="form-error" role="alert">(.*?)</p>', page)
    return html.unescape(match.group(1)) if match else None


def session_rows(page: str) -> list[tuple[str, str, str]]:
    """(class "current"/"other", handle, row html) of the sessions table."""
    return re.findall(r'<tr class="(current|other)" data-handle="([0-9a-f]{24})">(.*?)</tr>', page, re.S)


def logged_in_as(page: str) -> str | None:
    match = re.search(r'<strong id="nav-user">(.*?)</strong>', page)
    return html.unescape(match.group(1)) if match else None


# -- register ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_register_redirects_with_a_flash_and_the_account_shows_the_user(client):
    response = await register(client, email=" Ana@Example.COM ", see_welcome=False)
    assert set_cookie_headers(response, "sid")
    page = await client.fetch("/account")
    assert page.code == 200
    body = text(page)
    assert flashes(body) == [("success", "Welcome, Ana! Your account is ready.")]
    assert logged_in_as(body) == "Ana"
    assert '<dd id="profile-email">ana@example.com</dd>' in body and '<dd id="profile-name">Ana</dd>' in body
    assert re.search(r'<dd id="profile-created">\d{4}-\d\d-\d\d \d\d:\d\d UTC</dd>', body)
    assert 'action="/logout"' in body and 'name="_xsrf"' in body
    again = text(await client.fetch("/account"))
    assert flashes(again) == [] and logged_in_as(again) == "Ana"  # shown once


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "fields, status, field, message",
    [
        ({"email": "not-an-address", "name": "Ana", "password": PASSWORD}, 400, "email", "email must be"),
        ({"email": "ana@example.com", "name": "   ", "password": PASSWORD}, 400, "name", "name must be"),
        ({"email": "ana@example.com", "name": "Ana", "password": "short"}, 400, "password", "at least 10"),
        ({"email": "x" * 400 + "@example.com", "name": "Ana", "password": PASSWORD}, 400, "email", "at most"),
        ({"email": "ana@example.com", "name": "Ana", "password": "p" * 1025}, 400, "password", "at most"),
    ],
    ids=["email", "name", "short-password", "long-email", "long-password"],
)
async def test_register_errors_are_inline_and_keep_the_values(client, fields, status, field, message):
    response = await post_form(client, "/register", fields)
    assert response.code == status
    page = text(response)
    assert message in (field_error(page, field) or "")
    assert 'aria-invalid="true"' in page
    assert input_value(page, "email") == (fields["email"] if field != "email" or len(fields["email"]) < 300 else "")
    assert input_value(page, "name") == fields["name"]
    assert input_value(page, "password") == ""
    if len(fields["password"]) >= 10:
        assert fields["password"] not in page
    assert logged_in_as(page) is None and not set_cookie_headers(response, "sid")


@pytest.mark.gen_test
async def test_register_taken_email_is_409_inline(client, new_client):
    await register(client)
    other = new_client()
    response = await post_form(other, "/register", {"email": "ANA@example.com", "name": "Imposter", "password": PASSWORD})
    assert response.code == 409
    page = text(response)
    assert "exists already" in field_error(page, "email")
    assert input_value(page, "email") == "ANA@example.com" and input_value(page, "name") == "Imposter"


@pytest.mark.gen_test
async def test_invalid_utf8_field_is_a_400_inline_error(client):
    await client.fetch("/register")
    body = "email=%FF%FE&name=Ana&password=" + PASSWORD.replace(" ", "+") + "&_xsrf=" + client.xsrf_token()
    response = await client.fetch("/register", "POST", body, xsrf=False)
    assert response.code == 400 and "UTF-8" in field_error(text(response), "email")


# -- log in -----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_login_with_a_wrong_password_is_401_inline_and_keeps_the_email(client, new_client):
    await register(client)
    other = new_client()
    wrong = await login(other, password="wrong password 123")
    unknown = await login(other, email="nobody@example.com", password="wrong password 123")
    for response, email in ((wrong, "ana@example.com"), (unknown, "nobody@example.com")):
        assert response.code == 401
        page = text(response)
        assert form_error(page) == "email or password is incorrect"
        assert input_value(page, "email") == email and input_value(page, "password") == ""
        assert "wrong password 123" not in page
        assert response.headers["RateLimit-Limit"] and response.headers["RateLimit-Remaining"]
    assert other.jar.cookies.get("sid") is None


@pytest.mark.gen_test
async def test_login_regenerates_the_session_and_goes_to_next(client, new_client):
    await register(client)
    other = new_client(headers={"User-Agent": FIREFOX})
    await other.fetch("/")
    await post_form(other, "/counter")  # a visitor's session: its ID must not survive the login
    before = other.jar.cookies["sid"]
    page = await other.fetch("/account/sessions", follow=False)
    assert page.code == 302 and page.headers["Location"] == "/login?next=%2Faccount%2Fsessions"
    form = text(await other.fetch(page.headers["Location"]))
    assert '<input type="hidden" name="next" value="/account/sessions">' in form
    response = await login(other, next="/account/sessions")
    assert response.code == 303 and response.headers["Location"] == "/account/sessions"
    assert other.jar.cookies["sid"] != before
    landed = text(await other.fetch("/account/sessions"))
    assert flashes(landed) == [("success", "Welcome back, Ana.")] and logged_in_as(landed) == "Ana"
    assert re.search(r'id="count">1<', text(await other.fetch("/")))  # the visitor's data came along


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "target",
    ["//evil.test", "https://evil.test", "/\\evil.test", "\\\\evil.test", "http:/evil.test", "javascript:alert(1)",
     "/\t/evil.test", "evil.test", "/" + "a" * 600],
)
async def test_next_never_leaves_the_site(client, new_client, target):
    await register(client)
    other = new_client()
    form = text(await other.fetch("/login?" + urlencode({"next": target})))
    assert '<input type="hidden" name="next" value="/account">' in form
    response = await login(other, next=target)
    assert response.code == 303 and response.headers["Location"] == "/account"


def test_safe_next_accepts_only_paths_on_this_site():
    assert safe_next("/account/sessions?x=1#y") == "/account/sessions?x=1#y"
    assert safe_next("/") == "/"
    for bad in ("", None, "//evil.test", "https://evil.test", "/\\evil.test", "/\r\nX: y", "evil"):
        assert safe_next(bad) == "/account"


@pytest.mark.gen_test
async def test_login_and_register_pages_send_a_logged_in_user_to_the_account(client):
    await register(client)
    for path in ("/login", "/register"):
        response = await client.fetch(path, follow=False)
        assert response.code == 302 and response.headers["Location"] == "/account"
    response = await login(client)
    assert response.code == 303 and response.headers["Location"] == "/account"


@pytest.mark.gen_test
async def test_too_many_logins_is_429_with_headers_and_the_message(client, new_client):
    await register(client)
    other = new_client()
    for _ in range(5):  # the per-account limit (5 / 15 minutes)
        assert (await login(other, password="wrong password 123")).code == 401
    response = await login(other)  # even the right password: the account is cooling down
    assert response.code == 429
    assert int(response.headers["Retry-After"]) > 0 and response.headers["RateLimit-Remaining"] == "0"
    page = text(response)
    assert "too many login attempts" in form_error(page) and input_value(page, "email") == "ana@example.com"


# -- pages that need a login -----------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "method, path, back",
    [
        ("GET", "/account", "/account"),
        ("GET", "/account/sessions", "/account/sessions"),
        ("POST", "/account/name", "/account"),
        ("POST", "/account/password", "/account"),
        ("POST", "/account/logout-all", "/account/sessions"),
        ("POST", "/account/sessions/0123456789abcdef01234567/revoke", "/account/sessions"),
    ],
)
async def test_logged_out_visitors_are_sent_to_login(client, method, path, back):
    if method == "GET":
        response = await client.fetch(path, follow=False)
        assert response.code == 302
    else:
        response = await post_form(client, path, {"name": "x"}, follow=False)
        assert response.code == 303
    assert response.headers["Location"] == "/login?" + urlencode({"next": back})


@pytest.mark.gen_test
async def test_rename(client):
    await register(client)
    response = await post_form(client, "/account/name", {"name": "  Bea Ortiz "}, follow=False)
    assert response.code == 303 and response.headers["Location"] == "/account"
    page = text(await client.fetch("/account"))
    assert flashes(page) == [("success", "Your name is changed.")]
    assert logged_in_as(page) == "Bea Ortiz" and '<dd id="profile-name">Bea Ortiz</dd>' in page


@pytest.mark.gen_test
@pytest.mark.parametrize("name", ["   ", "n" * 81, "bell\x07"])
async def test_rename_errors_keep_the_value(client, name):
    await register(client)
    response = await post_form(client, "/account/name", {"name": name})
    assert response.code == 400
    page = text(response)
    assert field_error(page, "name") and input_value(page, "name") == name
    assert '<dd id="profile-name">Ana</dd>' in page and logged_in_as(page) == "Ana"


@pytest.mark.gen_test
async def test_password_change_ends_other_sessions_and_keeps_this_one(client, new_client):
    await register(client)
    other = new_client()
    assert (await login(other)).code == 303
    # Refusals come back by post/redirect/get (a reload re-posts nothing), the error beside its field.
    refused = await post_form(client, "/account/password", {"current": "not my password", "new": "x"}, follow=False)
    assert refused.code == 303 and refused.headers["Location"] == "/account"
    wrong = await post_form(client, "/account/password", {"current": "not my password", "new": "brand new secret"})
    assert wrong.code == 200 and wrong.effective_url.endswith("/account")
    assert "incorrect" in field_error(text(wrong), "current")
    assert "not my password" not in text(wrong) and input_value(text(wrong), "current") == ""
    short = await post_form(client, "/account/password", {"current": PASSWORD, "new": "short"})
    assert short.code == 200 and "at least 10" in field_error(text(short), "new")

    before = client.jar.cookies["sid"]
    response = await post_form(client, "/account/password", {"current": PASSWORD, "new": "brand new secret"}, follow=False)
    assert response.code == 303 and response.headers["Location"] == "/account"
    assert client.jar.cookies["sid"] != before  # this session lives on under a new ID
    page = text(await client.fetch("/account"))
    assert flashes(page) == [("success", "Your password is changed; 1 other browser is logged out.")]
    assert logged_in_as(page) == "Ana"

    ended = await other.fetch("/account", follow=False)
    assert ended.code == 302 and ended.headers["Location"] == "/login?next=%2Faccount"
    third = new_client()
    assert (await login(third)).code == 401
    assert (await login(third, password="brand new secret")).code == 303


# -- active sessions ---------------------------------------------------------------------


@pytest.mark.gen_test
async def test_sessions_page_lists_marks_and_revokes(client, new_client):
    client.extra["User-Agent"] = CHROME
    await register(client)
    other = new_client(headers={"User-Agent": FIREFOX})
    assert (await login(other)).code == 303
    page = text(await client.fetch("/account/sessions"))
    rows = session_rows(page)
    assert [kind for kind, _, _ in rows] == ["current", "other"]
    assert "this session" in rows[0][2] and "this session" not in rows[1][2]
    assert "Chrome on Windows" in rows[0][2] and "Firefox on Linux" in rows[1][2]
    assert "127.0.0.1" in rows[1][2]
    assert client.jar.cookies["sid"] not in page and other.jar.cookies["sid"] not in page
    other_handle = rows[1][1]
    assert f'action="/account/sessions/{other_handle}/revoke"' in page

    response = await post_form(client, f"/account/sessions/{other_handle}/revoke", follow=False)
    assert response.code == 303 and response.headers["Location"] == "/account/sessions"
    after = text(await client.fetch("/account/sessions"))
    assert flashes(after) == [("success", "Firefox on Linux is logged out.")]
    assert [kind for kind, _, _ in session_rows(after)] == ["current"]
    assert (await other.fetch("/account", follow=False)).headers["Location"] == "/login?next=%2Faccount"

    again = await post_form(client, f"/account/sessions/{other_handle}/revoke")
    assert again.code == 200 and flashes(text(again)) == [("warning", "That session had ended already.")]


@pytest.mark.gen_test
async def test_revoking_this_session_logs_out(client):
    await register(client)
    [(_, handle, _)] = session_rows(text(await client.fetch("/account/sessions")))
    response = await post_form(client, f"/account/sessions/{handle}/revoke", follow=False)
    assert response.code == 303 and response.headers["Location"] == "/login?notice=logged-out"
    assert "sid" not in client.jar.cookies
    assert (await client.fetch("/account", follow=False)).code == 302


@pytest.mark.gen_test
async def test_log_out_everywhere(client, new_client):
    await register(client)
    other = new_client()
    assert (await login(other)).code == 303
    response = await post_form(client, "/account/logout-all", follow=False)
    assert response.code == 303 and response.headers["Location"] == "/login?notice=logged-out-everywhere"
    assert response.headers["Clear-Site-Data"] == '"cookies", "storage"'
    page = text(await client.fetch(response.headers["Location"]))
    assert flashes(page) == [("info", "You have logged out on every device.")] and logged_in_as(page) is None
    for browser in (client, other):
        assert (await browser.fetch("/account", follow=False)).code == 302


@pytest.mark.gen_test
async def test_log_out(client):
    await register(client)
    response = await post_form(client, "/logout", follow=False)
    assert response.code == 303 and response.headers["Location"] == "/login?notice=logged-out"
    assert response.headers["Clear-Site-Data"] == '"cookies", "storage"'
    assert "sid" not in client.jar.cookies
    page = text(await client.fetch("/"))
    assert logged_in_as(page) is None and 'id="nav-login"' in page and 'id="nav-register"' in page
    notice = text(await client.fetch("/login?notice=logged-out"))
    assert flashes(notice) == [("info", "You have logged out.")]
    assert flashes(text(await client.fetch("/login?notice=<b>made-up</b>"))) == []


# -- XSRF, escaping, headers -------------------------------------------------------------


FORM_POSTS = [
    "/register",
    "/login",
    "/logout",
    "/account/name",
    "/account/password",
    "/account/logout-all",
    "/account/sessions/0123456789abcdef01234567/revoke",
]


@pytest.mark.gen_test
@pytest.mark.parametrize("path", FORM_POSTS)
async def test_every_form_post_without_xsrf_is_403(client, path):
    await register(client)
    fields = {"email": "ana@example.com", "name": "Mallory", "password": PASSWORD, "current": PASSWORD, "new": "x" * 12}
    response = await post_form(client, path, fields, xsrf=False)
    assert response.code == 403 and b"_xsrf" in response.body
    assert response.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    page = text(await client.fetch("/account"))
    assert logged_in_as(page) == "Ana"  # nothing happened


@pytest.mark.gen_test
async def test_user_names_are_html_escaped_everywhere(client):
    evil = "<script>alert(1)</script>"
    await register(client, name=evil)
    for path in ("/account", "/account/sessions", "/"):
        page = text(await client.fetch(path))
        assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
    await post_form(client, "/account/name", {"name": '"><img src=x onerror=alert(1)>'})
    page = text(await client.fetch("/account"))
    assert "<img" not in page and 'value="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/login", "/register", "/account", "/account/sessions", "/"])
async def test_pages_are_private_hardened_and_script_free(client, path):
    await register(client)
    if path in ("/login", "/register"):
        await post_form(client, "/logout")
    response = await client.fetch(path)
    assert response.code == 200
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["Cache-Control"] == "no-store" and "Cookie" in response.headers["Vary"]
    assert response.headers.get_list("Vary").count("Cookie") == 1
    page = text(response)
    assert "<script" not in page and "style=" not in page and "<style" not in page
    assert page.count("<form") == page.count('name="_xsrf"')


@pytest.mark.gen_test
async def test_error_pages_render_without_touching_the_session(client):
    await register(client)
    response = await client.fetch("/no-such-page")
    assert response.code == 404 and not response.headers.get_list("Set-Cookie")
    assert 'id="nav-login"' not in text(response) and 'href="/account"' in text(response)


@pytest.mark.gen_test
async def test_home_page_shows_who_is_logged_in(client):
    page = text(await client.fetch("/"))
    assert logged_in_as(page) is None and 'href="/register"' in page and 'href="/login"' in page
    await register(client, see_welcome=False)
    page = text(await client.fetch("/"))
    assert logged_in_as(page) == "Ana" and 'href="/account/sessions"' in page
    assert flashes(page) == [("success", "Welcome, Ana! Your account is ready.")]


@pytest.mark.gen_test
async def test_times_follow_the_time_zone_preference(client):
    await register(client)
    await client.fetch("/api/preferences", "PUT", '{"timezone": "Asia/Tokyo"}')
    page = text(await client.fetch("/account"))
    assert re.search(r'<dd id="profile-created">[\d: -]+JST</dd>', page)


def test_browser_label():
    assert browser_label(CHROME) == "Chrome on Windows"
    assert browser_label(FIREFOX) == "Firefox on Linux"
    assert browser_label("curl/8.5.0") == "curl"
    assert browser_label("") == "unknown"
    assert browser_label("x" * 100) == "x" * 40


# -- remember me and step-up on the pages ----------------------------------------------------


@pytest.mark.gen_test
async def test_remember_me_checkbox_brings_the_browser_back(client, new_client):
    await register(client)
    device = new_client()
    response = await login(device, remember="1")
    assert response.code == 303 and set_cookie_headers(response, "remember")
    device.jar.cookies.pop("sid")
    page = await device.fetch("/account")
    assert page.code == 200 and "ana@example.com" in text(page)
    sessions = text(await device.fetch("/account/sessions"))
    assert "remembered device" in sessions and "this device" in sessions
    # one row per browser: the login's session, its token and the restored session are one
    rows = session_rows(sessions)
    assert [kind for kind, _, _ in rows] == ["current", "other"]
    assert "remembered (no password)" in rows[0][2] and "with the password" in rows[1][2]


@pytest.mark.gen_test
async def test_sensitive_forms_of_a_restored_session_go_to_the_password_confirmation_and_back(client, new_client):
    await register(client)
    device = new_client()
    await login(device, remember="1")
    device.jar.cookies.pop("sid")
    await device.fetch("/account")  # restored from the token
    # The password change is the exception: its "current password" field is the confirmation, so
    # the form is checked at once (here a wrong current password comes back to the account page).
    response = await post_form(device, "/account/password", {"current": "not it at all", "new": "another good one"},
                               follow=False)
    assert response.code == 303 and response.headers["Location"] == "/account"
    for path, fields, back in (
        ("/account/logout-all", {}, "/account/sessions"),
    ):
        response = await post_form(device, path, fields, follow=False)
        assert response.code == 303
        assert response.headers["Location"] == "/account/reauthenticate?" + urlencode({"next": back})
    confirm = await device.fetch("/account/reauthenticate?next=%2Faccount%2Fsessions")
    assert "Please confirm your password first." in text(confirm) and 'name="next" value="/account/sessions"' in text(confirm)
    wrong = await post_form(device, "/account/reauthenticate", {"password": "not the password", "next": "/account/sessions"})
    assert wrong.code == 401 and field_error(text(wrong), "password") == "the password is incorrect"
    good = await post_form(device, "/account/reauthenticate", {"password": PASSWORD, "next": "https://evil.test/"}, follow=False)
    assert good.code == 303 and good.headers["Location"] == "/account"  # never off-site
    done = await post_form(device, "/account/logout-all", {}, follow=False)
    assert done.code == 303 and done.headers["Location"] == "/login?notice=logged-out-everywhere"
    assert (await client.fetch("/account", follow=False)).code == 302  # everyone is out
