"""Attack suite, part 1: fuzzed cookies and fuzzed JSON against every route (Hypothesis).

* Arbitrary bytes and text as the value of every cookie the app reads (session,
  remember-me, preferences, XSRF; the ``__Host-`` names in production mode), plus
  cookies of random names, on GET and POST of every route: never a 5xx, and never
  logged in (``GET /auth/profile`` with the same cookies, and with whatever cookies the
  fuzzed response set, is a 401).
* A real sealed session or remember-me cookie, tampered with (a character replaced,
  cut, extended, moved under another cookie's name): logged in only if the tampered
  value still opens to the very same value (base64 has spare bits), never otherwise.
* Arbitrary JSON (nested dicts and lists, weird Unicode and lone surrogates, ``$gt``
  keys, huge integers, NaN, deep nesting) as the body of every unsafe method of every
  route, with and without a valid XSRF token, logged in or not: never a 5xx.

Routes come from the app's own router (``Harness.route_methods``), so a new route is
fuzzed without touching this file. Stores and size: see tests/fixtures/attack_support.py
(``ATTACK_STORES``, ``ATTACK_EXAMPLES``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.attack_support import (
    PASSWORD,
    Harness,
    body,
    call,
    harness_for,
    hypothesis_settings,
    register,
    store_params,
)

MODES = [pytest.param(False, id="dev"), pytest.param(True, id="production")]


@pytest.fixture(scope="module", params=store_params())
def store_kind(request: Any) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=MODES)
def harness(request: Any, store_kind: str, tmp_path_factory: Any) -> Any:
    with harness_for(store_kind, request, tmp_path_factory.mktemp("fuzz"), production=request.param) as h:
        yield h


class Account:
    """A registered user and a logged-in browser, kept logged in between examples."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
        self.browser = h.client()
        h.run(register(self.browser, self.email))
        h.run(self.ensure_logged_in(fresh=True))  # with remember-me: a token cookie to tamper with too

    async def ensure_logged_in(self, *, fresh: bool = False) -> None:
        if not fresh and (await call(self.browser, "GET", "/auth/profile")).code == 200:
            return
        self.browser.jar.cookies.clear()
        response = await call(self.browser, "POST", "/auth/login",
                              {"email": self.email, "password": PASSWORD, "remember": True})
        assert response.code == 200, (response.code, response.body[:200])


@pytest.fixture(scope="module")
def account(harness: Harness) -> Account:
    return Account(harness)


# -- strategies -----------------------------------------------------------------------

#: Cookie header values must be Latin-1 without CR/LF (the client refuses to send more).
_HEADER_TEXT = st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n")


def _header_safe(raw: bytes) -> str:
    return raw.decode("latin-1").replace("\r", "").replace("\n", "")


cookie_values = st.one_of(
    st.binary(max_size=300).map(_header_safe),
    st.text(max_size=200).map(lambda t: _header_safe(t.encode("utf-8", "surrogatepass"))),
    st.text(_HEADER_TEXT, max_size=100),
    st.sampled_from(["", "2|", "x:y", "a" * 5000, "\x00", "ZXhhbXBsZQ", "eyJ9", '"quoted"', "a;b=c", "..",
                     "v1.AAAA.AAAA", "%00", "%ff%fe", "null", "[]", "{}"]),
)
cookie_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_-.$!~0123456789ABCXYZ"), min_size=1, max_size=20)


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


_keys = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["$gt", "$ne", "$where", "$regex", "__proto__", "constructor", "a.b", "\x00", "email",
                     "password", "name", "current", "new", "remember", "theme", "language", "timezone", "message"]),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**4000), max_value=10**4000),  # json.dumps stops at 4300 digits
    st.floats(),  # NaN and the infinities too: json.dumps writes them, Python's json reads them
    st.text(max_size=50),
    st.text(st.characters(exclude_categories=()), max_size=20),  # lone surrogates included
    st.text(max_size=3000),
    st.sampled_from(["", " ", "a" * 1025, "\u202e", "\ufeff", "ana@example.com", PASSWORD, "light", "dark",
                     "Europe/Paris", "../../etc/passwd", "<script>", "\ud800"]),
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)
#: Objects with the field names the API reads, so validation is reached past "unknown field".
api_objects = st.fixed_dictionaries(
    {},
    optional={name: json_values for name in ("email", "password", "name", "current", "new", "remember")},
)
json_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    api_objects.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(_keys, _scalars, max_size=3).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(1, 30_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting under the 64 KiB limit
    st.tuples(st.sampled_from(["email", "password", "name", "theme", "x"]), st.integers(4000, 60_000)).map(
        lambda kn: b'{"%s": %s}' % (kn[0].encode(), b"9" * kn[1])  # integers beyond Python's 4300-digit limit
    ),
    st.binary(max_size=200),
)


def assert_no_5xx(response: Any, what: Any) -> None:
    assert response.code < 500, (response.code, what, response.body[:300])


async def not_logged_in(h: Harness, cookies: str, what: Any) -> None:
    """``GET /auth/profile`` with exactly these cookies logs nobody in."""
    response = await h.http.fetch(
        h.base_url + "/auth/profile",
        headers={"Cookie": cookies, **h.client().extra},
        raise_error=False,
        follow_redirects=False,
    )
    assert_no_5xx(response, what)
    # 401: nobody is logged in; 400/431: the header itself was refused (a NUL, too large)
    assert response.code in (400, 401, 431), ("logged in by fuzzed cookies?", what, response.code, response.body[:300])


# -- fuzzed cookies -----------------------------------------------------------------------


def test_arbitrary_cookies_never_5xx_and_never_log_in(harness: Harness) -> None:
    h = harness
    routes = sorted({(m, p) for m, p, _ in h.route_methods() if m in ("GET", "POST")})
    known = h.cookie_names

    @hypothesis_settings(150)
    @given(
        route=st.sampled_from(routes),
        fuzzed=st.dictionaries(st.sampled_from(known), cookie_values, min_size=1, max_size=len(known)),
        extra=st.dictionaries(cookie_names, cookie_values, max_size=3),
        with_xsrf=st.booleans(),
    )
    def attack(route: tuple[str, str], fuzzed: dict[str, str], extra: dict[str, str], with_xsrf: bool) -> None:
        method, path = route

        async def run() -> None:
            cookies = {**extra, **fuzzed}
            headers = dict(h.client().extra)
            if with_xsrf and h.xsrf_cookie not in fuzzed:  # a valid pair, so POSTs reach the handlers
                token = "2|00000000|" + "ab" * 16 + "|1700000000"
                cookies[h.xsrf_cookie] = token
                headers["X-XSRFToken"] = token
            headers["Cookie"] = cookie_header(cookies)
            what = (method, path, cookies)
            response = await h.http.fetch(
                h.base_url + path, method=method, headers=headers, body=b"" if method == "POST" else None,
                raise_error=False, follow_redirects=False,
            )
            assert_no_5xx(response, what)
            await not_logged_in(h, headers["Cookie"], what)
            jar = h.client()
            jar.jar.cookies.update(cookies)
            jar.jar.update(response)  # whatever the fuzzed request gave back
            await not_logged_in(h, jar.jar.cookie_header(), ("cookies set in reply to", what))

        h.run(run())

    attack()


def test_tampered_real_cookies_never_log_in_as_anyone(harness: Harness, account: Account) -> None:
    h = harness
    names = [h.session_cookie, h.remember.cookie_full_name]

    @hypothesis_settings(100)
    @given(
        source=st.sampled_from(names),
        target=st.sampled_from(h.cookie_names),
        edit=st.sampled_from(["replace", "cut", "append", "insert", "swapcase", "none"]),
        position=st.integers(min_value=0, max_value=10_000),
        char=st.sampled_from("AZaz09-_.|:=+/%\x00é"),
    )
    def attack(source: str, target: str, edit: str, position: int, char: str) -> None:
        async def run() -> None:
            await account.ensure_logged_in()
            original = account.browser.jar.cookies.get(source)
            if original is None:
                return
            i = position % (len(original) + 1)
            value = {
                "replace": original[:i] + char + original[i + 1 :],
                "cut": original[:i],
                "append": original + char,
                "insert": original[:i] + char + original[i:],
                "swapcase": original[:i] + original[i : i + 1].swapcase() + original[i + 1 :],
                "none": original,
            }[edit]
            if target == source and h.keys.open(value, target) == h.keys.open(original, source):
                return  # the very same sealed content (spare base64 bits, or no change): not a forgery
            if target == h.remember.cookie_full_name and h.keys.open(value, target) is not None:
                return  # the real token under its own name
            await not_logged_in(h, f"{target}={value}", (source, target, edit, i, char))

        h.run(run())

    attack()


# -- fuzzed JSON -----------------------------------------------------------------------------


@pytest.mark.parametrize("harness", [False], ids=["dev"], indirect=True)  # JSON is read alike in both modes
def test_arbitrary_json_on_every_route_never_5xx(harness: Harness, account: Account) -> None:
    h = harness
    routes = sorted({(m, p) for m, p, _ in h.route_methods() if m != "GET"})
    assert ("POST", "/auth/login") in routes and ("PUT", "/api/preferences") in routes

    @hypothesis_settings(250)
    @given(
        route=st.sampled_from(routes),
        payload=json_bodies,
        logged_in=st.booleans(),
        xsrf=st.booleans(),
        content_type=st.sampled_from(["application/json"] * 4 + ["application/json; charset=latin-1", "text/plain",
                                                                  "application/x-www-form-urlencoded"]),
    )
    def attack(route: tuple[str, str], payload: bytes, logged_in: bool, xsrf: bool, content_type: str) -> None:
        method, path = route

        async def run() -> None:
            if logged_in:
                await account.ensure_logged_in()
                client = h.client()
                client.jar.cookies.update(account.browser.jar.cookies)
            else:
                client = h.client()
                await client.fetch("/auth/profile")  # the XSRF cookie
            response = await client.fetch(
                path, method, payload, headers={"Content-Type": content_type}, xsrf=xsrf, follow=False,
            )
            assert_no_5xx(response, (method, path, logged_in, xsrf, content_type, payload[:300]))
            if response.code == 200 and path == "/auth/login":
                assert body(response)["user"]["email"], response.body

        h.run(run())

    attack()
