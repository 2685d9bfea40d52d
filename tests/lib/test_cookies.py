"""Cookie options, the size guard and sealed JSON cookies (sessions/cookies.py).

Option validation is tested on the object; what browsers receive is tested on the
Set-Cookie headers a real Tornado server emits (pytest-tornado ``app`` fixture).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from types import SimpleNamespace

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.web import Application, RequestHandler

from sessions.cookies import (
    MAX_COOKIE_BYTES,
    CookieOptions,
    CookieTooLargeError,
    clear_cookie,
    get_sealed_json,
    set_cookie,
    set_sealed_json,
)
from sessions.keys import KeyRing
from tests.fixtures.support import parse_set_cookie

SECURITY_LOGGER = "sessions.security"

# -- CookieOptions ---------------------------------------------------------------


def test_defaults_are_httponly_lax_path_root_browser_session():
    options = CookieOptions()
    assert (options.path, options.httponly, options.samesite) == ("/", True, "Lax")
    assert (options.secure, options.max_age, options.domain, options.host_prefix) == (
        False,
        None,
        None,
        False,
    )


@pytest.mark.parametrize("samesite", ["Strict", "Lax", None])
def test_samesite_accepts_strict_lax_and_unset(samesite):
    assert CookieOptions(samesite=samesite).samesite == samesite


@pytest.mark.parametrize("samesite", ["lax", "strict", "none", "", "Relaxed", "None "])
def test_samesite_rejects_other_values(samesite):
    with pytest.raises(ValueError, match="samesite"):
        CookieOptions(samesite=samesite)


def test_samesite_none_requires_secure():
    with pytest.raises(ValueError, match="Secure"):
        CookieOptions(samesite="None")


def test_samesite_none_with_secure_is_accepted():
    assert "; SameSite=None" in CookieOptions(samesite="None", secure=True).attributes()


def test_samesite_none_with_host_prefix_is_accepted():
    """__Host- forces Secure, so SameSite=None is allowed with it."""
    assert CookieOptions(samesite="None", host_prefix=True).effective_secure


def test_host_prefix_forces_secure():
    options = CookieOptions(host_prefix=True, secure=False)
    assert options.effective_secure
    assert "; Secure" in options.attributes()


def test_host_prefix_refuses_domain():
    with pytest.raises(ValueError, match="__Host-"):
        CookieOptions(host_prefix=True, domain="example.com")


@pytest.mark.parametrize("path", ["/app", "", "/app/"])
def test_host_prefix_refuses_path_other_than_root(path):
    with pytest.raises(ValueError, match="__Host-"):
        CookieOptions(host_prefix=True, path=path)


def test_full_name_adds_host_prefix():
    assert CookieOptions(host_prefix=True).full_name("sid") == "__Host-sid"


def test_full_name_does_not_double_the_host_prefix():
    assert CookieOptions(host_prefix=True).full_name("__Host-sid") == "__Host-sid"


def test_full_name_without_host_prefix_is_unchanged():
    assert CookieOptions().full_name("sid") == "sid"


@pytest.mark.parametrize("max_age", [-1, 0])
def test_max_age_must_be_positive(max_age):
    """Tornado silently drops Max-Age=0, which would turn it into a session cookie."""
    with pytest.raises(ValueError, match="max_age"):
        CookieOptions(max_age=max_age)


def test_options_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CookieOptions().secure = True  # type: ignore[misc]


def test_with_returns_a_changed_copy():
    base = CookieOptions()
    changed = base.with_(max_age=60, samesite="Strict")
    assert (changed.max_age, changed.samesite) == (60, "Strict")
    assert (base.max_age, base.samesite) == (None, "Lax")


def test_with_validates_the_result():
    with pytest.raises(ValueError):
        CookieOptions(samesite="None", secure=True).with_(secure=False)


def test_attributes_leave_out_unset_max_age_and_samesite():
    attributes = CookieOptions(samesite=None).attributes()
    assert "Max-Age" not in attributes and "SameSite" not in attributes
    assert attributes == "; Path=/; HttpOnly"


# -- set_cookie size guard, on a handler built as Tornado's own tests do ----------


def make_handler(cookie_header: str | None = None) -> RequestHandler:
    """A real RequestHandler on a real request; only the socket is a stand-in."""
    headers = HTTPHeaders({"Host": "app.test"})
    if cookie_header is not None:
        headers["Cookie"] = cookie_header
    connection = SimpleNamespace(
        context=SimpleNamespace(remote_ip="203.0.113.7", protocol="http"),
        set_close_callback=lambda callback: None,
    )
    request = HTTPServerRequest(
        start_line=RequestStartLine("GET", "/page", "HTTP/1.1"), headers=headers, connection=connection
    )
    return RequestHandler(Application(), request)


def test_set_cookie_at_exactly_4096_bytes_succeeds():
    handler = make_handler()
    set_cookie(handler, "n", "v" * (MAX_COOKIE_BYTES - 1), CookieOptions())


def test_set_cookie_over_4096_bytes_raises_clear_error():
    handler = make_handler()
    with pytest.raises(CookieTooLargeError, match="4096"):
        set_cookie(handler, "n", "v" * MAX_COOKIE_BYTES, CookieOptions())


def test_cookie_too_large_error_is_a_value_error():
    assert issubclass(CookieTooLargeError, ValueError)


def test_size_guard_counts_the_host_prefix():
    handler = make_handler()
    options = CookieOptions(host_prefix=True)
    value = "v" * (MAX_COOKIE_BYTES - len("__Host-n"))
    set_cookie(handler, "n", value, options)
    with pytest.raises(CookieTooLargeError):
        set_cookie(handler, "n", value + "v", options)


def test_size_guard_counts_bytes_not_characters():
    handler = make_handler()
    with pytest.raises(CookieTooLargeError):
        set_cookie(handler, "n", "é" * 2048, CookieOptions())  # 2048 chars, 4096 bytes


def test_set_sealed_json_refuses_a_value_too_large_for_a_cookie():
    handler = make_handler()
    keys = KeyRing([os.urandom(32)])
    with pytest.raises(CookieTooLargeError):
        set_sealed_json(handler, "prefs", {"blob": "x" * 3500}, keys, CookieOptions())


def test_get_cookie_reads_the_prefixed_name():
    handler = make_handler("__Host-sid=abc; sid=plain")
    assert handler.get_cookie(CookieOptions(host_prefix=True).full_name("sid")) == "abc"
    assert handler.get_cookie(CookieOptions().full_name("sid")) == "plain"


def test_get_sealed_json_of_absent_cookie_is_none_and_not_logged(caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    handler = make_handler("other=1")
    assert get_sealed_json(handler, "prefs", KeyRing([os.urandom(32)]), CookieOptions()) is None
    assert [r for r in caplog.records if r.name == SECURITY_LOGGER] == []


def test_get_sealed_json_logs_rejection_with_cookie_name_and_client(caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    handler = make_handler("prefs=garbage")
    assert get_sealed_json(handler, "prefs", KeyRing([os.urandom(32)]), CookieOptions()) is None
    (record,) = [r for r in caplog.records if r.name == SECURITY_LOGGER]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    event = json.loads(message)
    assert event["event"] == "cookie_rejected" and event["cookie"] == "prefs"
    assert event["remote"] == "203.0.113.7" and event["path"] == "/page"
    assert event["reason"] == "malformed"
    assert "garbage" not in message  # the raw value is not logged


def test_get_sealed_json_rejects_sealed_value_that_is_not_json(caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    keys = KeyRing([os.urandom(32)])
    handler = make_handler("prefs=" + keys.seal(b"{not json", "prefs"))
    assert get_sealed_json(handler, "prefs", keys, CookieOptions()) is None
    assert any("bad json" in r.getMessage() for r in caplog.records if r.name == SECURITY_LOGGER)


# -- through a real server ---------------------------------------------------------

VARIANTS = {
    "default": CookieOptions(),
    "strict": CookieOptions(samesite="Strict", secure=True, max_age=3600),
    "host": CookieOptions(host_prefix=True, max_age=600),
    "cross": CookieOptions(samesite="None", secure=True, httponly=False),
    "scoped": CookieOptions(domain="example.test", path="/sub", samesite=None, max_age=90),
}


class PrefsHandler(RequestHandler):
    """GET reads the sealed ``prefs`` cookie, PUT sets it, DELETE clears it."""

    def initialize(self, keys: KeyRing) -> None:
        self.keys = keys

    def get(self, variant: str) -> None:
        self.write({"value": get_sealed_json(self, "prefs", self.keys, VARIANTS[variant])})

    def put(self, variant: str) -> None:
        set_sealed_json(self, "prefs", json.loads(self.request.body), self.keys, VARIANTS[variant])
        self.write({"ok": True})

    def delete(self, variant: str) -> None:
        clear_cookie(self, "prefs", VARIANTS[variant])


class RawHandler(RequestHandler):
    """Sets a plain cookie ``n`` of the requested size; 413 if the guard refuses it."""

    def get(self) -> None:
        try:
            set_cookie(self, "n", "v" * int(self.get_argument("size")), CookieOptions())
        except CookieTooLargeError as exc:
            self.set_status(413)
            self.write({"error": str(exc)})


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing([os.urandom(32)])


@pytest.fixture
def app(keys):
    return Application([(r"/prefs/(\w+)", PrefsHandler, {"keys": keys}), (r"/raw", RawHandler)])


async def put_prefs(http_client, base_url, variant, value) -> list[str]:
    response = await http_client.fetch(f"{base_url}/prefs/{variant}", method="PUT", body=json.dumps(value))
    assert response.code == 200
    return response.headers.get_list("Set-Cookie")


async def get_prefs(http_client, base_url, variant, cookie_header):
    response = await http_client.fetch(
        f"{base_url}/prefs/{variant}", headers={"Cookie": cookie_header}, raise_error=False
    )
    assert response.code == 200
    return json.loads(response.body)["value"]


@pytest.mark.gen_test
async def test_default_cookie_attributes(http_client, base_url):
    (header,) = await put_prefs(http_client, base_url, "default", {"theme": "dark"})
    name, _, attrs = parse_set_cookie(header)
    assert name == "prefs"
    assert attrs == {"httponly": True, "path": "/", "samesite": "Lax"}


@pytest.mark.gen_test
async def test_strict_secure_cookie_attributes(http_client, base_url):
    (header,) = await put_prefs(http_client, base_url, "strict", {"theme": "dark"})
    _, _, attrs = parse_set_cookie(header)
    assert attrs == {"httponly": True, "path": "/", "samesite": "Strict", "secure": True, "max-age": "3600"}


@pytest.mark.gen_test
async def test_host_prefixed_cookie_is_secure_path_root_without_domain(http_client, base_url):
    (header,) = await put_prefs(http_client, base_url, "host", {"theme": "dark"})
    name, _, attrs = parse_set_cookie(header)
    assert name == "__Host-prefs"
    assert attrs["secure"] is True and attrs["path"] == "/" and "domain" not in attrs
    assert attrs["max-age"] == "600"


@pytest.mark.gen_test
async def test_samesite_none_cookie_is_secure_and_can_drop_httponly(http_client, base_url):
    (header,) = await put_prefs(http_client, base_url, "cross", {"theme": "dark"})
    _, _, attrs = parse_set_cookie(header)
    assert attrs["samesite"] == "None" and attrs["secure"] is True
    assert "httponly" not in attrs


@pytest.mark.gen_test
async def test_domain_and_path_are_emitted(http_client, base_url):
    (header,) = await put_prefs(http_client, base_url, "scoped", {"theme": "dark"})
    _, _, attrs = parse_set_cookie(header)
    assert attrs == {"domain": "example.test", "path": "/sub", "httponly": True, "max-age": "90"}


@pytest.mark.gen_test
async def test_sealed_value_in_cookie_is_not_readable_json(http_client, base_url):
    (header,) = await put_prefs(http_client, base_url, "default", {"theme": "dark-secret"})
    _, value, _ = parse_set_cookie(header)
    assert "dark-secret" not in value and "theme" not in value


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.gen_test
async def test_sealed_json_round_trip(http_client, base_url, variant):
    prefs = {"theme": "dark", "lang": "fr", "tz": "Europe/Paris", "n": [1, 2.5, None, True], "é": "ü"}
    (header,) = await put_prefs(http_client, base_url, variant, prefs)
    name, value, _ = parse_set_cookie(header)
    assert await get_prefs(http_client, base_url, variant, f"{name}={value}") == prefs


@pytest.mark.gen_test
async def test_absent_cookie_reads_as_none_without_security_log(http_client, base_url, caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    assert await get_prefs(http_client, base_url, "default", "unrelated=1") is None
    assert [r for r in caplog.records if r.name == SECURITY_LOGGER] == []


def rejected(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == SECURITY_LOGGER and r.levelno == logging.WARNING and "cookie_rejected" in r.getMessage()
    ]


@pytest.mark.gen_test
async def test_tampered_cookie_reads_as_none_and_is_logged(http_client, base_url, caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    (header,) = await put_prefs(http_client, base_url, "default", {"theme": "dark"})
    _, value, _ = parse_set_cookie(header)
    middle = len(value) // 2
    tampered = value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]
    assert await get_prefs(http_client, base_url, "default", f"prefs={tampered}") is None
    assert len(rejected(caplog)) == 1
    event = json.loads(rejected(caplog)[0].getMessage())
    assert event["cookie"] == "prefs" and event["reason"] == "bad_tag"


@pytest.mark.gen_test
async def test_cookie_swapped_to_another_name_reads_as_none_and_is_logged(http_client, base_url, caplog):
    """A value sealed for ``prefs`` pasted into ``__Host-prefs`` does not open."""
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    (header,) = await put_prefs(http_client, base_url, "default", {"theme": "dark"})
    _, value, _ = parse_set_cookie(header)
    assert await get_prefs(http_client, base_url, "host", f"__Host-prefs={value}") is None
    assert len(rejected(caplog)) == 1
    event = json.loads(rejected(caplog)[0].getMessage())
    assert event["cookie"] == "__Host-prefs" and event["reason"] == "bad_tag"


@pytest.mark.gen_test
async def test_value_sealed_for_another_cookie_name_reads_as_none(http_client, base_url, keys, caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    foreign = keys.seal(b'{"theme":"dark"}', "session")
    assert await get_prefs(http_client, base_url, "default", f"prefs={foreign}") is None
    assert len(rejected(caplog)) == 1


@pytest.mark.gen_test
async def test_expired_cookie_reads_as_none_and_is_logged(http_client, base_url, keys, caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    expired = keys.seal(b'{"theme":"dark"}', "prefs", max_age=-10)
    assert await get_prefs(http_client, base_url, "default", f"prefs={expired}") is None
    assert len(rejected(caplog)) == 1


@pytest.mark.gen_test
async def test_cookie_from_unknown_key_reads_as_none_and_is_logged(http_client, base_url, caplog):
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    stranger = KeyRing([os.urandom(32)]).seal(b'{"theme":"dark"}', "prefs")
    assert await get_prefs(http_client, base_url, "default", f"prefs={stranger}") is None
    assert len(rejected(caplog)) == 1


@pytest.mark.parametrize(
    "raw",
    ["", "x", "!!!!", '"quoted"', "%FF%FE", "A" * 5000, "é"],
    ids=["empty", "short", "symbols", "quoted", "percent", "oversized", "non-ascii"],
)
@pytest.mark.gen_test
async def test_malformed_cookie_reads_as_none_never_500(http_client, base_url, raw):
    assert await get_prefs(http_client, base_url, "default", f"prefs={raw}") is None


@pytest.mark.gen_test
async def test_clear_cookie_expires_it_with_the_same_attributes(http_client, base_url):
    response = await http_client.fetch(f"{base_url}/prefs/host", method="DELETE")
    (header,) = response.headers.get_list("Set-Cookie")
    name, value, attrs = parse_set_cookie(header)
    assert name == "__Host-prefs" and value in ("", '""')
    assert attrs["secure"] is True and attrs["path"] == "/" and attrs["httponly"] is True
    assert attrs["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT" and attrs["max-age"] == "0"


def test_setting_a_cookie_twice_sends_only_the_last_value():
    handler = make_handler()
    set_cookie(handler, "a", "first", CookieOptions())
    set_cookie(handler, "b", "other", CookieOptions())
    set_cookie(handler, "a", "second", CookieOptions())
    headers = handler._headers.get_list("Set-Cookie")
    assert sorted(parse_set_cookie(h)[:2] for h in headers) == [("a", "second"), ("b", "other")]


@pytest.mark.parametrize("name, value", [("bad name", "v"), ("n;x", "v"), ("n", "a;b"), ("n", "a b"), ("n", 'q"')])
def test_set_cookie_refuses_names_and_values_that_would_break_the_header(name, value):
    with pytest.raises(ValueError):
        set_cookie(make_handler(), name, value, CookieOptions())


@pytest.mark.parametrize("path", ["/a;Domain=evil.test", "/a\nX: y"])
def test_cookie_options_refuse_attribute_injection(path):
    with pytest.raises(ValueError):
        CookieOptions(path=path)


@pytest.mark.gen_test
async def test_cookie_of_exactly_4096_bytes_is_emitted_whole(http_client, base_url):
    response = await http_client.fetch(f"{base_url}/raw?size={MAX_COOKIE_BYTES - 1}")
    (header,) = response.headers.get_list("Set-Cookie")
    name, value, _ = parse_set_cookie(header)
    assert len(name) + len(value) == MAX_COOKIE_BYTES


@pytest.mark.gen_test
async def test_cookie_of_4097_bytes_is_refused_and_not_emitted(http_client, base_url):
    response = await http_client.fetch(f"{base_url}/raw?size={MAX_COOKIE_BYTES}", raise_error=False)
    assert response.code == 413
    assert "4096" in json.loads(response.body)["error"]
    assert response.headers.get_list("Set-Cookie") == []
