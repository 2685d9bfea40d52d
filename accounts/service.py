"""Account operations shared by the JSON API and the HTML pages.

The handlers parse and validate input, then call these; one code path decides who
may register, log in or change a password, so the two front ends cannot drift.
Every failure is an :class:`AccountError` carrying the HTTP status, a short machine
code and a message fit for the user; the rules that matter for security are here:

* an unknown email and a wrong password give the same error, after the same work
  (a bcrypt check against a dummy hash when there is no such user);
* every attempt is counted before any password is checked, per client address and
  per account, in the store that all processes share;
* a new password must meet the policy; the current one is asked for to change it;
* a hash made at another bcrypt cost is replaced at the next successful login
  (conditionally: only while it is still the hash just verified).

What a login does to the session (regenerate, metadata, remember-me, step-up) is
:class:`accounts.sessions.AccountSessions`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass

from sessions import StoreError
from sessions.events import audit_log, log_event

from .passwords import PasswordHasher, PasswordPolicyError, check_policy
from .ratelimit import Decision, RateLimiter, wait_words
from .users import (
    EmailTaken,
    InvalidUserInput,
    User,
    UserRepository,
    clean_name,
    new_user_id,
    normalize_email,
)

BAD_CREDENTIALS = "email or password is incorrect"
log = logging.getLogger("demo")


class AccountError(Exception):
    """A refused account operation: HTTP status, a message for the user, the field at fault.

    ``code`` is the short machine-readable name of the refusal (the JSON API's
    ``error``); None lets the front end name it by the status. ``errors`` maps every
    field at fault to its message when a form had several problems at once (``field``
    and ``message`` are then the first of them).
    """

    def __init__(
        self, status: int, message: str, *, field: str | None = None, limit: Decision | None = None,
        code: str | None = None, errors: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.limit = limit
        self.code = code
        self.errors = errors or ({field: message} if field else {})

    @classmethod
    def invalid(cls, errors: dict[str, str]) -> AccountError:
        """A 400 naming every field at fault (the first one is ``field``)."""
        field, message = next(iter(errors.items()))
        return cls(400, message, field=field, errors=dict(errors))


def rate_limited(what: str, decision: Decision) -> AccountError:
    """The 429 for ``decision``: what was refused and when to try again, in words."""
    return AccountError(429, f"{what}; please try again in {wait_words(decision.reset_after)}", limit=decision)


def registration_errors(email: str, name: str, password: str) -> tuple[dict[str, str], str, str]:
    """Every problem of a sign-up form at once (field -> message), and the cleaned email and name."""
    errors: dict[str, str] = {}
    try:
        email = normalize_email(email)
    except InvalidUserInput as exc:
        errors["email"] = str(exc)
    try:
        name = clean_name(name)
    except InvalidUserInput as exc:
        errors["name"] = str(exc)
    try:
        check_policy(password)
    except PasswordPolicyError as exc:
        errors["password"] = str(exc)
    return errors, email, name


def account_label(email: str) -> str:
    """An account named in audit lines: a hash of the typed address, never the text."""
    return hashlib.sha256(email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class Accounts:
    users: UserRepository
    hasher: PasswordHasher
    login_limiter: RateLimiter
    register_limiter: RateLimiter

    async def register(self, email: str, name: str, password: str, address: str) -> User:
        """A new user. Every field is checked first, all at once (AccountError 400 naming each);
        only a valid form counts against the sign-up limit (429), since only it reaches the store."""
        errors, email, name = registration_errors(email, name, password)
        if errors:
            raise AccountError.invalid(errors)
        decision = await self.register_limiter.attempt(address)
        if not decision.allowed:
            raise rate_limited("too many sign-ups from this address", decision)
        user = User(new_user_id(), email, name, await self.hasher.hash(password), time.time())
        try:
            await self.users.add(user)
        except EmailTaken:
            raise AccountError(409, "an account with this email exists already", field="email") from None
        return user

    async def authenticate(self, email: str, password: str, address: str) -> tuple[User, Decision]:
        """The user, or AccountError(401) for an unknown email or a wrong password alike."""
        try:
            normal = normalize_email(email)
        except InvalidUserInput:
            normal = None
        decision = await self.login_limiter.attempt(address, normal or email.strip().lower())
        if not decision.allowed:
            raise rate_limited("too many login attempts", decision)
        user = await self.users.by_email(normal) if normal else None
        if not await self.hasher.verify(password, user.password_hash if user else None) or user is None:
            log_event(audit_log, logging.WARNING, "login_failure", account=account_label(email), remote=address)
            raise AccountError(401, BAD_CREDENTIALS, limit=decision, code="invalid_credentials")
        await self.login_limiter.succeeded(normal or "")
        return await self.upgrade_hash(user, password), decision

    async def upgrade_hash(self, user: User, password: str) -> User:
        """Re-hash a just-verified password made at another cost; the version (and every login) stays.

        The write is conditional on the stored hash still being the one verified, so a
        password changed meanwhile is never overwritten. A failure to write is logged and
        the login goes on: the upgrade is tried again at the next one.
        """
        if not self.hasher.needs_rehash(user.password_hash):
            return user
        new_hash = await self.hasher.hash(password)
        try:
            replaced = await self.users.set_password_hash_if(user.id, user.password_hash, new_hash)
        except StoreError as exc:
            log_event(log, logging.WARNING, "password_rehash_failed", user=user.id, error=str(exc)[:200])
            return user
        if not replaced:
            return user
        log_event(audit_log, logging.INFO, "password_rehashed", user=user.id, cost=self.hasher.cost)
        return dataclasses.replace(user, password_hash=new_hash)

    async def verify_password(self, user: User, password: str) -> bool:
        return await self.hasher.verify(password, user.password_hash)

    async def check_password(self, user: User, password: str, address: str) -> Decision:
        """A password typed by a logged-in user (step-up, password change), counted like a login.

        Raises AccountError 429 when the address or the account is over the login limit
        and 403 when the password is wrong: without the count, a stolen session would be
        an unlimited password oracle.
        """
        decision = await self.login_limiter.attempt(address, user.email)
        if not decision.allowed:
            raise rate_limited("too many password attempts", decision)
        stored = await self.users.by_id(user.id)  # the hash is never kept in a session
        if stored is None or not await self.hasher.verify(password, stored.password_hash):
            raise AccountError(403, "the current password is incorrect", field="current", limit=decision)
        await self.login_limiter.succeeded(user.email)
        return decision

    async def change_password(self, user: User, current: str, new: str, address: str) -> User:
        """Check ``current`` (rate-limited), then store ``new`` only if nobody changed it meanwhile.

        The write is conditional on the credentials version the caller's login was
        checked against: of two changes at once, one wins and the other gets 409.
        """
        try:
            check_policy(new)
        except PasswordPolicyError as exc:
            raise AccountError(400, str(exc), field="new") from None
        stored = await self.users.by_id(user.id)
        if stored is None or stored.credentials_version != user.credentials_version:
            raise AccountError(409, "the password was changed meanwhile; log in again")
        await self.check_password(user, current, address)
        password_hash = await self.hasher.hash(new)
        version = await self.users.set_password(user.id, password_hash, expected_version=user.credentials_version)
        if version is None:
            raise AccountError(409, "the password was changed meanwhile; log in again")
        return dataclasses.replace(user, password_hash=password_hash, credentials_version=version)

    async def revoke_logins(self, user_id: str) -> int | None:
        """End every login of the user at once (log out everywhere, token theft).

        Bumps the credentials version: sessions and remember-me tokens carry the version
        they were issued under, and one issued under an older version is no login, even
        if a request that raced the revocation creates it afterwards. Returns the new
        version (None: no such user).
        """
        return await self.users.set_password(user_id, None)

    async def rename(self, user: User, name: str) -> User:
        try:
            name = clean_name(name)
        except InvalidUserInput as exc:
            raise AccountError(400, str(exc), field="name") from None
        await self.users.set_name(user.id, name)
        refreshed = await self.users.by_id(user.id)
        if refreshed is None:
            raise AccountError(404, "no such user")
        return refreshed
