"""Passwords, rate limits and the account service, on real bcrypt and real stores."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import bcrypt
import pytest

from accounts.backends.memory import MemoryUsers
from accounts.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    SCHEME,
    PasswordHasher,
    PasswordPolicyError,
    check_policy,
)
from accounts.ratelimit import Limit, RateLimiter
from accounts.service import BAD_CREDENTIALS, AccountError, Accounts
from sessions.stores.memory import MemoryStore
from sessions.stores.sqlite import SQLiteStore


@pytest.fixture(scope="module")
def hasher():
    h = PasswordHasher(cost=4)
    yield h
    h.close()


# -- passwords ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_hash_round_trip_and_wrong_password(hasher):
    stored = await hasher.hash("correct horse battery")
    assert stored.startswith(SCHEME)
    assert await hasher.verify("correct horse battery", stored)
    assert not await hasher.verify("correct horse batterx", stored)


@pytest.mark.gen_test
async def test_long_passwords_are_not_truncated(hasher):
    """bcrypt alone reads 72 bytes: two passwords equal in their first 72 would match."""
    base = "p" * 72
    stored = await hasher.hash(base + "A")
    assert await hasher.verify(base + "A", stored)
    assert not await hasher.verify(base + "B", stored)
    assert not await hasher.verify(base, stored)
    multibyte = "é" * 300  # 600 bytes
    assert await hasher.verify(multibyte, await hasher.hash(multibyte))


def test_raw_bcrypt_would_have_truncated_or_raised():
    """Why the pre-hash exists: what bcrypt itself does with 73+ bytes."""
    try:
        salt = bcrypt.gensalt(4)
        same = bcrypt.hashpw(b"x" * 72 + b"A", salt) == bcrypt.hashpw(b"x" * 72 + b"B", salt)
    except ValueError:
        return  # bcrypt 5 refuses: also a reason to pre-hash
    assert same


@pytest.mark.parametrize("password", ["", "short", "x" * (MIN_LENGTH - 1), "x" * (MAX_LENGTH + 1)])
def test_policy_refuses_short_and_huge_passwords(password):
    with pytest.raises(PasswordPolicyError):
        check_policy(password)


@pytest.mark.gen_test
async def test_unknown_user_costs_a_bcrypt_check_too(hasher, monkeypatch):
    """Same work for "no such user" as for "wrong password": a check against a dummy hash
    of the same cost (the timing itself is the benchmark's business, not a test's)."""
    checked = []
    original = PasswordHasher._verify_sync

    def spy(password, stored):
        checked.append(stored)
        return original(password, stored)

    monkeypatch.setattr(PasswordHasher, "_verify_sync", staticmethod(spy))
    assert not await hasher.verify("whatever it is", None)
    [dummy] = checked
    assert dummy == hasher._dummy and dummy.startswith(SCHEME + "$2b$04$")


@pytest.mark.gen_test
async def test_hashing_runs_off_the_event_loop(hasher):
    threads = []
    original = hasher._hash_sync

    def spy(password):
        threads.append(threading.current_thread().name)
        return original(password)

    hasher._hash_sync = spy
    try:
        await hasher.hash("correct horse battery")
    finally:
        del hasher._hash_sync
    assert threads and threads[0].startswith("bcrypt") and threads[0] != threading.main_thread().name


@pytest.mark.gen_test
async def test_corrupt_stored_hash_is_no_match_not_an_error(hasher):
    for stored in ("", "bcrypt-sha256$garbage", "$2b$04$short", SCHEME + "$2b$04$" + "x" * 53):
        assert await hasher.verify("anything at all", stored) is False


def test_needs_rehash_follows_the_cost(hasher):
    assert PasswordHasher(cost=5).needs_rehash(hasher._dummy)
    assert not hasher.needs_rehash(hasher._dummy)


# -- rate limits ------------------------------------------------------------------------


def test_limit_parse():
    assert Limit.parse("20/300") == Limit(20, 300.0)
    for bad in ("20", "a/b", "0/10", "5/0", "/"):
        with pytest.raises(ValueError):
            Limit.parse(bad)


@pytest.mark.gen_test
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_limiter_counts_per_address_and_account(backend, tmp_path, clock):
    store = MemoryStore(clock=clock) if backend == "memory" else SQLiteStore(tmp_path / "s.db", clock=clock)
    clock.now = 1_800_000_000.0
    limiter = RateLimiter(store, "login", per_address=Limit(5, 60), per_account=Limit(3, 900))
    try:
        decisions = [await limiter.attempt("203.0.113.1", "ana@example.com") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        refused = decisions[-1]
        assert refused.limit == 3 and refused.remaining == 0 and refused.reset_after == 900
        assert refused.headers()["Retry-After"] == "900"
        # another account from the same address: only the address limit (5) is left
        other = await limiter.attempt("203.0.113.1", "bob@example.com")
        assert other.allowed and other.remaining == 0 and other.limit == 5
        assert not (await limiter.attempt("203.0.113.1", "bob@example.com")).allowed
        # the same account from elsewhere: still locked for this window
        assert not (await limiter.attempt("198.51.100.7", "ana@example.com")).allowed
        await limiter.succeeded("bob@example.com")  # clears bob's account counter only
        assert not (await limiter.attempt("198.51.100.7", "ana@example.com")).allowed
        clock.advance(900)
        assert (await limiter.attempt("198.51.100.7", "ana@example.com")).allowed
    finally:
        await store.close()


# -- the account service --------------------------------------------------------------


@pytest.fixture
def accounts(hasher, clock):
    store = MemoryStore(clock=clock)
    return Accounts(
        MemoryUsers(),
        hasher,
        RateLimiter(store, "login", per_address=Limit(50, 300), per_account=Limit(5, 900)),
        RateLimiter(store, "register", per_address=Limit(3, 3600)),
    )


@pytest.mark.gen_test
async def test_register_then_authenticate(accounts):
    user = await accounts.register(" Ana@Example.com ", " Ana ", "correct horse battery", "203.0.113.1")
    assert user.email == "ana@example.com" and user.name == "Ana"
    found, decision = await accounts.authenticate("ANA@example.com", "correct horse battery", "203.0.113.1")
    assert found.id == user.id and decision.allowed


@pytest.mark.gen_test
async def test_unknown_email_and_wrong_password_fail_alike(accounts):
    await accounts.register("ana@example.com", "Ana", "correct horse battery", "203.0.113.1")
    errors = []
    for email, password in (("nobody@example.com", "correct horse battery"), ("ana@example.com", "wrong password!")):
        with pytest.raises(AccountError) as info:
            await accounts.authenticate(email, password, "203.0.113.1")
        errors.append((info.value.status, info.value.message, info.value.field))
    assert errors[0] == errors[1] == (401, BAD_CREDENTIALS, None)


@pytest.mark.gen_test
async def test_register_refusals(accounts):
    await accounts.register("ana@example.com", "Ana", "correct horse battery", "198.51.100.1")
    cases = [
        (("ana@example.com", "Ana", "correct horse battery"), 409, "email"),
        (("not-an-email", "Ana", "correct horse battery"), 400, "email"),
    ]
    for (email, name, password), status, field in cases:
        with pytest.raises(AccountError) as info:
            await accounts.register(email, name, password, "198.51.100.1")
        assert (info.value.status, info.value.field) == (status, field)
    # A form with mistakes does not count against the limit (it never reaches the store): the
    # third counted sign-up from one address in an hour is still allowed, the fourth is not.
    await accounts.register("c@example.com", "C", "correct horse battery", "198.51.100.1")
    with pytest.raises(AccountError) as info:  # the fourth counted sign-up from one address in an hour
        await accounts.register("d@example.com", "D", "correct horse battery", "198.51.100.1")
    assert info.value.status == 429 and info.value.limit.headers()["Retry-After"]
    assert "try again in" in info.value.message


@pytest.mark.gen_test
async def test_concurrent_registrations_of_one_email_make_one_account(accounts):
    results = await asyncio.gather(
        *(accounts.register("race@example.com", "R", "correct horse battery", f"10.0.0.{i}") for i in range(3)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(r.status == 409 for r in results if isinstance(r, AccountError))


@pytest.mark.gen_test
async def test_change_password_needs_the_current_one(accounts):
    user = await accounts.register("ana@example.com", "Ana", "correct horse battery", "203.0.113.1")
    with pytest.raises(AccountError) as info:
        await accounts.change_password(user, "not the password", "another good password", "203.0.113.1")
    assert info.value.status == 403
    with pytest.raises(AccountError) as info:
        await accounts.change_password(user, "correct horse battery", "short", "203.0.113.1")
    assert info.value.status == 400 and info.value.field == "new"
    changed = await accounts.change_password(user, "correct horse battery", "another good password", "203.0.113.1")
    assert changed.credentials_version == 2
    await accounts.authenticate("ana@example.com", "another good password", "203.0.113.1")
    with pytest.raises(AccountError):
        await accounts.authenticate("ana@example.com", "correct horse battery", "203.0.113.1")


@pytest.mark.gen_test
async def test_hashing_threads_run_at_a_lower_priority():
    import os

    hasher = PasswordHasher(cost=4, niceness=7)
    try:
        def priority():
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        loop_priority = priority()
        thread_priority = await asyncio.get_running_loop().run_in_executor(hasher._pool, priority)
        assert thread_priority == loop_priority + 7
    finally:
        hasher.close()


def test_the_pool_follows_the_cpus_this_process_may_use(monkeypatch):
    import accounts.passwords as passwords

    monkeypatch.setattr(passwords.os, "sched_getaffinity", lambda pid: {0})
    assert passwords.usable_cpus() == 1
    hasher = PasswordHasher(cost=4)
    try:
        assert hasher._pool._max_workers == 1
    finally:
        hasher.close()


@pytest.mark.gen_test
async def test_password_change_check_is_rate_limited_and_audited(accounts, caplog):
    """A stolen session is no unlimited password oracle: the current-password check is a login attempt."""
    user = await accounts.register("oracle@example.com", "O", "correct horse battery", "203.0.113.1")
    statuses = []
    for _ in range(8):
        try:
            await accounts.change_password(user, "wrong guess 123", "another good password", "203.0.113.9")
        except AccountError as error:
            statuses.append(error.status)
    assert statuses[:5] == [403] * 5 and set(statuses[5:]) == {429}
    with pytest.raises(AccountError) as info:  # the right password is refused too while limited
        await accounts.change_password(user, "correct horse battery", "another good password", "203.0.113.9")
    assert info.value.status == 429 and info.value.limit is not None
    assert (await accounts.users.by_id(user.id)).credentials_version == 1


@pytest.mark.gen_test
async def test_two_password_changes_at_once_one_wins(accounts):
    user = await accounts.register("twice@example.com", "T", "correct horse battery", "203.0.113.1")
    results = await asyncio.gather(
        accounts.change_password(user, "correct horse battery", "first new password", "203.0.113.1"),
        accounts.change_password(user, "correct horse battery", "second new password", "203.0.113.2"),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, AccountError)]
    assert len(won) == 1 and len(lost) == 1 and lost[0].status == 409
    assert won[0].credentials_version == 2
    stored = await accounts.users.by_id(user.id)
    assert stored.credentials_version == 2 and stored.password_hash == won[0].password_hash


@pytest.mark.gen_test
async def test_revoke_logins_bumps_the_version(accounts):
    user = await accounts.register("bump@example.com", "B", "correct horse battery", "203.0.113.1")
    assert await accounts.revoke_logins(user.id) == 2
    await accounts.authenticate("bump@example.com", "correct horse battery", "203.0.113.1")


# -- the login service (accounts.sessions.AccountSessions), without HTTP ---------------------

from accounts.sessions import (  # noqa: E402 - the service half of this module
    DEVICE,
    AccountSessions,
    AuthSettings,
    Client,
    StepUpRequired,
    login_is_current,
)
from sessions import KeyRing, Record, RememberMe, Session, SessionManager, SessionOptions, generate_key  # noqa: E402
from sessions.session import FLASH_PREFIX  # noqa: E402

ANA = Client("203.0.113.1", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
PASSWORD = "correct horse battery"


class FakeBrowser:
    """What RememberMe needs of a handler: the request, its cookies, Set-Cookie headers."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.request = type("Request", (), {"protocol": "http", "remote_ip": ANA.ip})()

    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        return self.cookies.get(name, default)

    def add_header(self, name: str, value: str) -> None:
        cookie_name, _, rest = value.partition("=")
        cookie_value = rest.split(";", 1)[0]
        if cookie_value:
            self.cookies[cookie_name] = cookie_value
        else:
            self.cookies.pop(cookie_name, None)

    def clear_header(self, name: str) -> None:
        pass


@pytest.fixture
def service(accounts, clock):
    store = accounts.login_limiter.store
    manager = SessionManager(store, KeyRing.from_text(generate_key()), SessionOptions())
    return AccountSessions(accounts, manager, RememberMe(manager), AuthSettings(reauth_after=900))


async def stored_session(service: AccountSessions, session: Session, key: str) -> Session:
    """Store ``session`` as the manager would at commit, and return it as the next request loads it."""
    now = service.manager.clock()
    record = Record({}, now, now, now + 1800, session.user_id, dict(session.meta))
    await service.manager.store.create(key, record)
    return Session(f"id-{key}", key, stored={}, created=now, last_access=now, expires=now + 1800,
                   user_id=session.user_id, meta=dict(session.meta))


async def logged_in(service: AccountSessions, user, key: str, *, browser: FakeBrowser | None = None, remember=False):
    session = service.manager.new_session(service.manager.clock())
    await service.log_in(session, user, ANA, remember=remember, cookies=browser)
    return await stored_session(service, session, key)


@pytest.mark.gen_test
async def test_login_is_current_only_for_the_exact_credentials_version(accounts, service):
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    session = await logged_in(service, user, "k1")
    assert login_is_current(session, user)
    assert not login_is_current(session, None)  # the user is gone
    newer = dataclasses.replace(user, credentials_version=2)
    assert not login_is_current(session, newer)  # issued before a password change
    session.meta.credentials_version = None
    assert not login_is_current(session, user)  # no version at all
    session.meta.credentials_version = 0
    assert not login_is_current(session, user)  # an older one is not "at least"


@pytest.mark.gen_test
async def test_log_in_regenerates_keeps_the_visitors_data_and_records_the_client(accounts, service, clock):
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    session = service.manager.new_session(clock())
    session["count"] = 3
    session.flash("for the visitor")
    device = await service.log_in(session, user, ANA)
    assert session.user_id == user.id and session["count"] == 3  # (the new ID comes at commit)
    assert not any(key.startswith(FLASH_PREFIX) for key in session)  # queued before the login: dropped
    meta = session.meta
    assert meta.ip == ANA.ip and meta.user_agent == ANA.user_agent and meta.login_at == round(clock())
    assert meta.credentials_version == "1" and meta[DEVICE] == device and meta.restored is None
    # Another user's session data never comes along.
    bob = await accounts.register("bob@example.com", "Bob", PASSWORD, "203.0.113.2")
    await service.log_in(session, bob, ANA)
    assert session.user_id == bob.id and "count" not in session


@pytest.mark.gen_test
async def test_a_stale_login_is_ended_on_sight(accounts, service):
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    session = await logged_in(service, user, "k1")
    signed_in = await service.signed_in(session)
    assert signed_in is not None and (signed_in.id, signed_in.name) == (user.id, user.name)
    await accounts.revoke_logins(user.id)  # log out everywhere elsewhere: version 2
    # A session whose profile is not cached (from before the cache, or restored in this
    # request) reads the user and is ended on sight.
    for name in ("email", "name", "user_created"):
        session.meta.pop(name, None)
    assert await service.signed_in(session) is None and session.destroyed


@pytest.mark.gen_test
async def test_a_logged_in_request_reads_the_session_alone(accounts, service, monkeypatch):
    """The profile and credentials version travel in the session: no user read per request."""
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    session = await logged_in(service, user, "k1")
    reads = []
    real = accounts.users.by_id

    async def counting(user_id):
        reads.append(user_id)
        return await real(user_id)

    monkeypatch.setattr(accounts.users, "by_id", counting)
    for _ in range(3):
        signed_in = await service.signed_in(session)
        assert signed_in is not None and signed_in.email == user.email and signed_in.credentials_version == 1
    assert reads == []
    assert await service.still_current(session) and reads == [user.id]  # the check after a create
    await accounts.revoke_logins(user.id)
    assert not await service.still_current(session)


@pytest.mark.gen_test
async def test_step_up_after_reauth_after_or_on_a_restored_session(accounts, service, clock):
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    session = await logged_in(service, user, "k1")
    assert service.is_fresh(session)
    clock.advance(901)
    assert not service.is_fresh(session)
    with pytest.raises(StepUpRequired) as refused:
        service.require_fresh(session)
    assert refused.value.status == 403 and refused.value.code == "reauthentication_required"
    with pytest.raises(AccountError) as wrong:
        await service.reauthenticate(session, user, "not the password", ANA.ip)
    assert wrong.value.status == 401 and wrong.value.field == "password"
    await service.reauthenticate(session, user, PASSWORD, ANA.ip)
    assert service.is_fresh(session)
    session.meta.restored = "remember"  # what a remember-me restore marks
    assert not service.is_fresh(session)
    await service.reauthenticate(session, user, PASSWORD, ANA.ip)
    assert service.is_fresh(session) and session.meta.restored is None


@pytest.mark.gen_test
async def test_password_change_keeps_this_session_ends_the_others_and_is_conditional(accounts, service):
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    mine = await logged_in(service, user, "k1")
    await logged_in(service, user, "k2")
    ended = await service.change_password(mine, user, PASSWORD, "another good one", ANA.ip)
    assert ended == 1 and mine.meta.credentials_version == "2"
    assert [key for key, _ in await service.manager.store.list_user(user.id)] == ["k1"]
    with pytest.raises(AccountError) as conflict:  # a second change made from the same (old) version
        await service.change_password(mine, user, PASSWORD, "a third good one", ANA.ip)
    assert conflict.value.status == 409


@pytest.mark.gen_test
async def test_log_out_everywhere_bumps_the_version_then_ends_everything(accounts, service):
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    mine = await logged_in(service, user, "k1")
    other = await logged_in(service, user, "k2")
    assert await service.log_out_everywhere(mine, user) == 2
    assert mine.destroyed and await service.manager.store.list_user(user.id) == []
    assert (await accounts.users.by_id(user.id)).credentials_version == 2
    assert not login_is_current(other, await accounts.users.by_id(user.id))


@pytest.mark.gen_test
async def test_a_session_and_its_remember_me_token_are_one_browser(accounts, service):
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    browser = FakeBrowser()
    mine = await logged_in(service, user, "k1", browser=browser, remember=True)
    other = await logged_in(service, user, "k2")
    own_token = service.own_token_key(browser)
    assert own_token is not None
    entries = await service.active(user, mine, own_token=own_token)
    assert sorted(e["kind"] for e in entries) == ["remembered_device", "session", "session"]
    assert sum(e["this_browser"] for e in entries) == 2
    devices = await service.devices(user, mine, own_token=own_token)
    assert len(devices) == 2
    this, that = devices
    assert this["current"] and this["remembered"] and this["sessions"] == 1 and this["signed_in_with"] == "password"
    assert not that["current"] and not that["remembered"]
    # Ending the other browser needs a recent password; ending this one is a log out.
    service.manager.clock.advance(901)  # type: ignore[attr-defined]
    with pytest.raises(StepUpRequired):
        await service.revoke(user, mine, that["handle"], cookies=browser)
    assert await service.revoke(user, mine, this["handle"], cookies=browser) is True
    assert mine.destroyed and "remember" not in browser.cookies
    # The token is gone; this session's own record goes at this request's commit (destroy()).
    assert {key for key, _ in await service.manager.store.list_user(user.id)} == {"k1", "k2"}
    await service.manager.end_session("k1")  # that commit
    assert await service.revoke(user, other, this["handle"]) is False  # gone already


@pytest.mark.gen_test
async def test_a_login_upgrades_a_hash_made_at_another_cost():
    """Registered at cost 4, the server now at 5: the login stores a cost-5 hash, same version."""
    store = MemoryStore()
    users = MemoryUsers()
    cheap, dearer = PasswordHasher(cost=4), PasswordHasher(cost=5)
    try:
        limits = dict(per_address=Limit(50, 300), per_account=Limit(50, 900))
        before = Accounts(users, cheap, RateLimiter(store, "login", **limits), RateLimiter(store, "register", per_address=Limit(9, 60)))
        user = await before.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
        assert dearer.needs_rehash(user.password_hash)
        after = dataclasses.replace(before, hasher=dearer)
        logged, _ = await after.authenticate("ana@example.com", PASSWORD, ANA.ip)
        stored = await users.by_id(user.id)
        assert stored.password_hash == logged.password_hash != user.password_hash
        assert stored.password_hash.split("$")[3] == "05" and not dearer.needs_rehash(stored.password_hash)
        assert stored.credentials_version == user.credentials_version  # no login ended
        again, _ = await after.authenticate("ana@example.com", PASSWORD, ANA.ip)  # still logs in
        assert again.password_hash == stored.password_hash  # and is not rehashed twice
        # A hash changed meanwhile (a password change) is never overwritten by the upgrade.
        await users.set_password(user.id, "bcrypt-sha256$changed")
        assert await after.upgrade_hash(user, PASSWORD) == user
        assert (await users.by_id(user.id)).password_hash == "bcrypt-sha256$changed"
    finally:
        cheap.close()
        dearer.close()


@pytest.mark.gen_test
async def test_a_version_bump_whose_deletion_failed_ends_the_login_within_the_cache_time(accounts, service, clock):
    """Second line of defence: sessions that a failed deletion left behind stop counting."""
    user = await accounts.register("ana@example.com", "Ana", PASSWORD, ANA.ip)
    session = await logged_in(service, user, "k1")
    await accounts.revoke_logins(user.id)  # bumped; the deletion through the index never ran
    clock.advance(service.settings.version_cache_seconds + 1)
    assert await service.signed_in(session) is None and session.destroyed
