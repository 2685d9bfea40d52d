"""Passwords, rate limits and the account service, on real bcrypt and real stores."""

from __future__ import annotations

import asyncio
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
    with pytest.raises(AccountError) as info:  # the fourth sign-up from one address in an hour
        await accounts.register("c@example.com", "C", "correct horse battery", "198.51.100.1")
    assert info.value.status == 429 and info.value.limit.headers()["Retry-After"]


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
