"""Attack suite, part 2: the account lifecycle as a Hypothesis state machine, steps concurrent.

1-2 users, 2-3 browsers each (each its own cookie jar), against the demo app on a real
port. Rules: login (with or without remember-me), restore (drop the session cookie,
keep the token, make a request), logout, log out everywhere, password change (after the
step-up), revoke another session, theft (replay a rotated-away token from a copy of the
jar), websocket connect, flash (set, then read in parallel); and a rule that runs 2-5
of those at once (``asyncio.gather``).

Checked after every step (``INVARIANT <name>`` in the failure message):

* ``no-5xx``: no response was a 5xx.
* ``nothing-outlives-kill``: a session or token whose origin (the login that typed the
  password; for a restored session, the login that issued its token) completed before
  a log out everywhere, a password change or a detected theft of its user *began*
  does not log anybody in afterwards (``GET /auth/profile`` with only that cookie),
  except the session the password change itself handed out; nor does one ended by its
  own logout or revoke. Concurrent origins are not judged: either order is allowed.
* ``websocket-closed``: a socket whose session must be dead is closed.
* ``cap``: no user has more than ``MAX_SESSIONS`` live sessions in the store
  (``store.list_user``, tokens not counted).
* ``flash-once``: every flash message is shown at most once (exactly once when its
  step ran alone).
* ``one-password-change``: of the password changes that presented the same current
  password, at most one succeeds.
* ``theft-refused``: a replayed rotated-away token (two rotations old, or one rotation
  old after the grace window) logs nobody in.
* ``login-works``: a login alone, with the current password, succeeds.

Stores and size: tests/fixtures/attack_support.py (``ATTACK_STORES``, ``ATTACK_EXAMPLES``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.websocket
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from tornado.httpclient import HTTPRequest

from handlers.account_base import session_handle
from sessions.manager import hash_session_id
from sessions.remember import is_token, token_key
from tests.fixtures.attack_support import (
    MAX_SESSIONS,
    PASSWORD,
    Harness,
    body,
    examples,
    harness_for,
    hypothesis_settings,
    store_params,
)
from tests.fixtures.support import Client, parse_set_cookie

OPS = ["login", "login_remember", "restore", "logout", "logout_all", "password", "revoke", "theft", "websocket", "flash"]
RACY = ["restore", "restore", "login_remember", "login", "logout_all", "password", "theft"]
RESTORE_ROUTES = [("GET", "/auth/profile"), ("GET", "/api/counter"), ("POST", "/api/counter"), ("GET", "/account")]


@dataclass
class Cred:
    """A session or remember-me token some browser was given."""

    kind: str  # "session" | "token"
    key: str  # its store key
    user: int
    value: str  # the latest cookie value
    origin: tuple[int, int]  # ticks of the request that typed the password behind it
    how: str
    history: list[str] = field(default_factory=list)  # token values, oldest first
    dead: bool = False  # seen dead by a probe (a dead key never comes back)


@dataclass
class Kill:
    user: int
    start: int
    end: int
    what: str


@dataclass
class User:
    id: str
    email: str
    passwords: list[str]  # possibly current (several only after a race the model cannot order)


class Violation(AssertionError):
    pass


def fail(invariant_name: str, message: str) -> None:
    raise Violation(f"INVARIANT {invariant_name}: {message}")


class Lifecycle(RuleBasedStateMachine):
    harness: Harness  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.h = self.harness
        self.ticks = itertools.count()
        self.users: list[User] = []
        self.browsers: list[tuple[int, Client]] = []  # (user index, client)
        self.creds: dict[str, Cred] = {}
        self.kills: list[Kill] = []
        self.killed_keys: dict[str, str] = {}  # key -> what ended it (logout, revoke)
        self.sockets: list[tuple[Any, str, str]] = []  # (connection, session key, label)
        self.flashes_seen: collections.Counter[str] = collections.Counter()
        self.flash_counter = itertools.count()
        self.password_counter = itertools.count()
        self.log: list[str] = []

    # -- HTTP with bookkeeping -------------------------------------------------------------
    def tick(self) -> int:
        return next(self.ticks)

    async def req(
        self, b: int, method: str, path: str, data: Any = None, *, kind: str = "other", form: bool = False,
    ) -> Any:
        _, client = self.browsers[b]
        if client.xsrf_token() is None:
            await client.fetch("/auth/profile")
        sent_token = client.jar.cookies.get(self.h.remember.cookie_full_name)
        if form:
            payload, headers = urlencode(data or {}), {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            payload = None if data is None else json.dumps(data)
            headers = {"Content-Type": "application/json"}
        before = self.session_key(client.jar.cookies.get(self.h.session_cookie))
        start = self.tick()
        response = await client.fetch(path, method, payload, headers=headers, follow=False)
        end = self.tick()
        self.check_status(response, f"browser {b} {method} {path}")
        await self.observe(b, response, kind, sent_token, (start, end))
        after = self.session_key(client.jar.cookies.get(self.h.session_cookie))
        if kind in ("login", "password") and response.code < 300 and before and after and before != after:
            # A login or password change keeps the session under a new ID: its sockets follow it.
            self.sockets = [(conn, after if key == before else key, label) for conn, key, label in self.sockets]
        return response, (start, end)

    def check_status(self, response: Any, what: str) -> None:
        if response.code >= 500:
            fail("no-5xx", f"{what} answered {response.code}: {response.body[:300]!r}")

    async def observe(self, b: int, response: Any, kind: str, sent_token: str | None, span: tuple[int, int]) -> None:
        """Record every session and token cookie a response hands out, with its origin."""
        h = self.h
        for header in response.headers.get_list("Set-Cookie"):
            name, value, _ = parse_set_cookie(header)
            if not value or h.client().jar.is_deletion(header):
                continue
            if name == h.session_cookie:
                opened = h.keys.open(value, name)
                if opened is None:
                    continue
                key = hash_session_id(opened.decode())
                if key in self.creds:
                    self.creds[key].value = value
                    continue
                record = await h.store.load(key)
                if record is None or record.user_id is None:
                    continue
                user = self.user_index(record.user_id)
                if kind in ("login", "password"):
                    origin, how = span, f"{kind} by browser {b}"
                else:  # brought back by the token the request carried
                    token = self.token_cred(sent_token)
                    origin = token.origin if token else span
                    how = f"restored by browser {b} from {token.how if token else 'an unknown token'}"
                self.creds[key] = Cred("session", key, user, value, origin, how)
            elif name == h.remember.cookie_full_name:
                opened = h.keys.open(value, name)
                if opened is None:
                    continue
                key = token_key(opened.decode().partition(":")[0])
                if key in self.creds:
                    self.creds[key].value = value
                    self.creds[key].history.append(value)
                    continue
                record = await h.store.load(key)
                if record is None or record.user_id is None:
                    continue
                cred = Cred("token", key, self.user_index(record.user_id), value, span,
                            f"token from {kind} by browser {b}", history=[value])
                self.creds[key] = cred

    def token_cred(self, value: str | None) -> Cred | None:
        if value is None:
            return None
        opened = self.h.keys.open(value, self.h.remember.cookie_full_name)
        return self.creds.get(token_key(opened.decode().partition(":")[0])) if opened else None

    def session_key(self, value: str | None) -> str | None:
        opened = self.h.keys.open(value, self.h.session_cookie) if value else None
        return hash_session_id(opened.decode()) if opened else None

    def user_index(self, user_id: str) -> int:
        return next(i for i, u in enumerate(self.users) if u.id == user_id)

    # -- operations (each may run alone or beside others) -------------------------------
    async def op_login(self, b: int, remember: bool, alone: bool) -> None:
        u = self.users[self.browsers[b][0]]
        for password in list(u.passwords):
            response, _ = await self.req(b, "POST", "/auth/login",
                                         {"email": u.email, "password": password, "remember": remember}, kind="login")
            if response.code == 200:
                return
        if alone:
            fail("login-works", f"browser {b} could not log in with any of {u.passwords}: {response.code}")

    async def op_restore(self, b: int, pick: int) -> None:
        _, client = self.browsers[b]
        if self.h.remember.cookie_full_name not in client.jar.cookies:
            await self.op_login(b, True, False)  # a token to restore from first
            if self.h.remember.cookie_full_name not in client.jar.cookies:
                return
        client.jar.cookies.pop(self.h.session_cookie, None)
        method, path = RESTORE_ROUTES[pick % len(RESTORE_ROUTES)]
        await self.req(b, method, path)

    async def op_logout(self, b: int) -> None:
        _, client = self.browsers[b]
        sid = self.session_key(client.jar.cookies.get(self.h.session_cookie))
        token = self.token_cred(client.jar.cookies.get(self.h.remember.cookie_full_name))
        response, _ = await self.req(b, "POST", "/auth/logout")
        if response.code == 200:
            for key in (sid, token.key if token else None):
                if key is not None:
                    self.killed_keys[key] = f"logout of browser {b}"

    async def step_up(self, b: int) -> bool:
        u = self.users[self.browsers[b][0]]
        for password in list(u.passwords):
            response, _ = await self.req(b, "POST", "/auth/reauthenticate", {"password": password})
            if response.code == 200:
                return True
        return False

    async def op_logout_all(self, b: int) -> None:
        if not await self.step_up(b):
            return
        response, (start, end) = await self.req(b, "POST", "/auth/logout-all")
        if response.code == 200:
            self.kills.append(Kill(self.browsers[b][0], start, end, f"log out everywhere by browser {b}"))

    async def op_password(self, b: int, changes: list[tuple[str, bool]]) -> None:
        user = self.browsers[b][0]
        u = self.users[user]
        if not await self.step_up(b):
            return
        current = u.passwords[0]
        new = f"new password number {next(self.password_counter)}"
        response, (start, end) = await self.req(b, "POST", "/auth/password", {"current": current, "new": new},
                                                kind="password")
        changes.append((current, response.code == 200))
        if response.code == 200:
            self.kills.append(Kill(user, start, end, f"password change by browser {b}"))
            self.new_passwords.setdefault(user, []).append(new)

    async def op_revoke(self, b: int, pick: int) -> None:
        response, _ = await self.req(b, "GET", "/auth/sessions")
        if response.code != 200:
            return
        others = [s["handle"] for s in body(response)["sessions"] if not s["current"]]
        if not others:
            return
        handle = others[pick % len(others)]
        if not await self.step_up(b):
            return
        response, _ = await self.req(b, "DELETE", f"/auth/sessions/{handle}")
        if response.code == 200:
            for key in self.creds:
                if session_handle(key) == handle:
                    self.killed_keys[key] = f"revoke by browser {b}"

    async def op_theft(self, b: int, token_alive: set[str], thefts: list[tuple[int, str]]) -> None:
        _, client = self.browsers[b]
        token = self.token_cred(client.jar.cookies.get(self.h.remember.cookie_full_name))
        if token is None or len(token.history) < 2:
            return
        if len(token.history) >= 3:
            replayed, how = token.history[-3], "two rotations old, inside the grace window"
        else:
            self.h.clock.advance(self.h.remember.options.grace + 1)
            replayed, how = token.history[-2], "one rotation old, after the grace window"
        attacker = self.h.client()
        attacker.jar.cookies[self.h.remember.cookie_full_name] = replayed
        start = self.tick()
        response = await attacker.fetch("/auth/profile", follow=False)
        end = self.tick()
        self.check_status(response, "theft replay")
        if response.code == 200:
            fail("theft-refused", f"a copy of browser {b}'s token, {how}, logged the attacker in")
        if token.key in token_alive:
            thefts.append((token.user, f"theft of browser {b}'s token ({how})"))
            self.theft_spans.append((token.user, start, end, f"theft of browser {b}'s token ({how})"))

    async def op_websocket(self, b: int) -> None:
        _, client = self.browsers[b]
        key = self.session_key(client.jar.cookies.get(self.h.session_cookie))
        request = HTTPRequest(
            f"ws://127.0.0.1:{self.h.port}/ws",
            headers={**client.extra, **client.jar.header(), "Origin": self.h.base_url},
        )
        try:
            conn = await tornado.websocket.websocket_connect(request)
        except tornado.websocket.WebSocketError:
            return
        except Exception as exc:  # an HTTP refusal of the handshake
            code = getattr(exc, "code", None)
            if code is not None and code >= 500:
                fail("no-5xx", f"websocket handshake of browser {b} answered {code}")
            return
        welcome = await conn.read_message()
        if welcome is None:
            return
        if key is not None:
            self.sockets.append((conn, key, f"socket of browser {b}"))
        else:
            conn.close()

    async def op_flash(self, b: int, alone: bool) -> None:
        message = f"flash {uuid.uuid4().hex[:8]} {next(self.flash_counter)}"
        response, _ = await self.req(b, "POST", "/flash", {"message": message, "category": "info"}, form=True)
        reads = await asyncio.gather(*(self.req(b, "GET", "/api/flash") for _ in range(3)))
        shown = 0
        for read, _ in reads:
            if read.code == 200:
                for flash in body(read)["flashes"]:
                    self.flashes_seen[flash["message"]] += 1
                    shown += flash["message"] == message
        if shown > 1 or self.flashes_seen[message] > 1:
            fail("flash-once", f"{message!r} was shown {self.flashes_seen[message]} times to 3 parallel reads")
        if alone and response.code == 303 and shown != 1:
            fail("flash-once", f"{message!r} (set by browser {b} alone) was shown {shown} times, not once")

    # -- running a batch ----------------------------------------------------------------
    async def run_batch(self, ops: list[tuple[str, int, int, bool]]) -> None:
        alone = len(ops) == 1
        self.log.append(("alone: " if alone else "together: ") + ", ".join(
            f"{name}(browser {b % len(self.browsers)} of user {self.browsers[b % len(self.browsers)][0]}"
            f"{', pick ' + str(pick) if name in ('restore', 'revoke') else ''})" for name, b, pick, _ in ops))
        self.new_passwords: dict[int, list[str]] = {}
        self.theft_spans: list[tuple[int, int, int, str]] = []
        changes: list[tuple[str, bool]] = []
        thefts: list[tuple[int, str]] = []
        token_alive = {key for key, c in self.creds.items() if c.kind == "token" and await self.h.store.load(key)}
        coros = []
        for name, b, pick, _flag in ops:
            b %= len(self.browsers)
            coros.append({
                "login": lambda b=b: self.op_login(b, False, alone),
                "login_remember": lambda b=b: self.op_login(b, True, alone),
                "restore": lambda b=b, pick=pick: self.op_restore(b, pick),
                "logout": lambda b=b: self.op_logout(b),
                "logout_all": lambda b=b: self.op_logout_all(b),
                "password": lambda b=b: self.op_password(b, changes),
                "revoke": lambda b=b, pick=pick: self.op_revoke(b, pick),
                "theft": lambda b=b: self.op_theft(b, token_alive, thefts),
                "websocket": lambda b=b: self.op_websocket(b),
                "flash": lambda b=b: self.op_flash(b, alone),
            }[name]())
        results = await asyncio.gather(*coros, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        # The model, whatever else went wrong.
        for user, news in self.new_passwords.items():
            self.users[user].passwords = news + self.users[user].passwords if len(news) > 1 else news
        by_current = collections.Counter(current for current, ok in changes if ok)
        for _current, count in by_current.items():
            if count > 1:
                errors.insert(0, Violation(
                    f"INVARIANT one-password-change: {count} concurrent password changes that all presented "
                    f"the same current password succeeded"))
        # A theft counts as an end of everything only when nothing else in the batch could
        # have ended that token first (then the replay legitimately finds no token).
        enders = {"logout", "logout_all", "password", "revoke", "theft"}
        for user, start, end, what in self.theft_spans:
            others = [n for n, ob, _, _ in ops if n in enders and self.browsers[ob % len(self.browsers)][0] == user]
            if len(others) == 1:  # only this theft
                self.kills.append(Kill(user, start, end, what))
        if errors:
            raise errors[0]

    # -- rules ----------------------------------------------------------------------------
    @initialize(n_users=st.integers(1, 2), per_user=st.integers(2, 3))
    def setup_users(self, n_users: int, per_user: int) -> None:
        async def setup() -> None:
            for i in range(n_users):
                email = f"attack-{uuid.uuid4().hex[:12]}@example.com"
                for _ in range(per_user):
                    self.browsers.append((i, self.h.client()))
                b = len(self.browsers) - per_user
                client = self.browsers[b][1]
                await client.fetch("/auth/profile")  # the XSRF cookie
                start = self.tick()
                response = await client.fetch(
                    "/auth/register", "POST",
                    json.dumps({"email": email, "name": f"User {i}", "password": PASSWORD}),
                    headers={"Content-Type": "application/json"},
                )
                end = self.tick()
                assert response.code == 201, response.body
                self.users.append(User(body(response)["user"]["id"], email, [PASSWORD]))
                await self.observe(b, response, "login", None, (start, end))

        self.h.run(setup())
        self.log.append(f"{n_users} user(s), {per_user} browsers each; the first browser of each registered")

    def step(self, *ops: tuple[str, int, int, bool]) -> None:
        self.checked(self.run_batch(list(ops)))

    def checked(self, coro: Any) -> None:
        """Run ``coro``; a violation carries the steps that led to it (races do not always
        replay, so Hypothesis's own shrunk report may be missing or longer)."""
        try:
            self.h.run(coro)
        except Violation as exc:
            steps = "\n".join(f"  {i}. {line}" for i, line in enumerate(self.log, 1))
            raise Violation(f"{exc}\nsteps of this run :\n{steps}") from None

    browser = st.integers(0, 5)
    pick = st.integers(0, 7)

    @rule(b=browser, remember=st.booleans())
    def login(self, b: int, remember: bool) -> None:
        self.step(("login_remember" if remember else "login", b, 0, False))

    @rule(b=browser, pick=pick)
    def restore(self, b: int, pick: int) -> None:
        self.step(("restore", b, pick, False))

    @rule(b=browser)
    def logout(self, b: int) -> None:
        self.step(("logout", b, 0, False))

    @rule(b=browser)
    def logout_everywhere(self, b: int) -> None:
        self.step(("logout_all", b, 0, False))

    @rule(b=browser)
    def change_password(self, b: int) -> None:
        self.step(("password", b, 0, False))

    @rule(b=browser, pick=pick)
    def revoke(self, b: int, pick: int) -> None:
        self.step(("revoke", b, pick, False))

    @rule(b=browser)
    def theft(self, b: int) -> None:
        self.step(("theft", b, 0, False))

    @rule(b=browser)
    def websocket(self, b: int) -> None:
        self.step(("websocket", b, 0, False))

    @rule(b=browser)
    def flash(self, b: int) -> None:
        self.step(("flash", b, 0, False))

    @rule(ops=st.lists(st.tuples(st.sampled_from(OPS), browser, pick, st.booleans()), min_size=2, max_size=5))
    def together(self, ops: list[tuple[str, int, int, bool]]) -> None:
        self.step(*ops)

    @rule(ops=st.lists(st.tuples(st.sampled_from(RACY), browser, pick, st.booleans()), min_size=2, max_size=5))
    def race(self, ops: list[tuple[str, int, int, bool]]) -> None:
        """The races the design names: restores and logins against the ends of everything."""
        self.step(*ops)

    # -- invariants ---------------------------------------------------------------------
    def must_be_dead(self, cred: Cred) -> str | None:
        if cred.key in self.killed_keys:
            return self.killed_keys[cred.key]
        for kill in self.kills:
            if kill.user == cred.user and cred.origin[1] < kill.start:
                return kill.what
        return None

    async def probe(self, cred: Cred) -> bool:
        """True when the cookie alone logs somebody in."""
        name = self.h.session_cookie if cred.kind == "session" else self.h.remember.cookie_full_name
        prober = self.h.client()
        prober.jar.cookies[name] = cred.value
        response = await prober.fetch("/auth/profile", follow=False)
        self.check_status(response, "probe")
        return bool(response.code == 200)

    async def check_all(self) -> None:
        for cred in list(self.creds.values()):
            if cred.dead:
                continue
            why = self.must_be_dead(cred)
            if why is None:
                continue
            if await self.probe(cred):
                fail("nothing-outlives-kill",
                     f"the {cred.kind} of user {cred.user} ({cred.how}) still logs in after {why}")
            cred.dead = True
        for conn, key, label in list(self.sockets):
            cred = self.creds.get(key)
            why = (self.must_be_dead(cred) if cred else None) or self.killed_keys.get(key)
            if why is None:
                continue
            while True:
                try:
                    message = await asyncio.wait_for(conn.read_message(), 2)
                except TimeoutError:
                    fail("websocket-closed", f"the {label} is still open 2 s after {why}")
                if message is None:
                    break
            self.sockets.remove((conn, key, label))
        for i, u in enumerate(self.users):
            sessions = [key for key, record in await self.h.store.list_user(u.id) if not is_token(record)]
            if len(sessions) > MAX_SESSIONS:
                fail("cap", f"user {i} has {len(sessions)} live sessions (cap {MAX_SESSIONS})")

    @invariant()
    def invariants_hold(self) -> None:
        if self.users:
            self.checked(self.check_all())

    def teardown(self) -> None:
        for conn, _, _ in self.sockets:
            conn.close()


@pytest.fixture(scope="module", params=store_params())
def harness(request: Any, tmp_path_factory: Any) -> Any:
    with harness_for(request.param, request, tmp_path_factory.mktemp("lifecycle")) as h:
        yield h


def test_account_lifecycle_under_concurrent_attack(harness: Harness) -> None:
    machine = type("AccountLifecycle", (Lifecycle,), {"harness": harness})
    run_state_machine_as_test(machine, settings=hypothesis_settings(30, stateful_step_count=examples(20)))
