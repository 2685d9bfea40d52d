"""Remember-me tokens: split selector/validator, rotated on every use, theft-detecting.

The cookie holds ``selector:validator``, sealed like every cookie of ours (so it is
also bound to its name and expires by itself). The store keeps, under the key
``sha256("remember|" + selector)``, a record of kind ``"remember"`` (:data:`KIND`):

* ``user_id``: the user, so "log out everywhere", a password change and theft
  detection (all :meth:`SessionManager.destroy_user_sessions`) end the user's tokens
  together with the sessions, through the same user index;
* ``meta``: what the app gave at issue (the client description: browser, address);
* ``data``: one item per validator, named by the SHA-256 of the validator (never the
  validator): ``"v:<hash>"`` for the current one, ``"p:<hash>"`` = rotation time for
  a previous one still inside the grace window;
* ``expires``: the token's own lifetime (30 days by default); pruned like sessions.

Using a token (no valid session, a token cookie) gives the request a new session for
the user and rotates the validator. Rotation is race-free without a compare-and-set:
a request first adds its new validator and marks the old one as previous, then
*takes* the old current item with the store's atomic :meth:`Store.take`. Exactly one
of several parallel requests gets it and sends the new cookie; the others remove
their unused validator and are let in on the "previous" mark, which exists because
every contender wrote it before taking. Later, the previous validator is accepted
for ``grace`` seconds only (a browser's requests that were in flight during the
rotation); a known selector with any other validator is theft: every session and
token of the user ends and an audit event is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from tornado.web import RequestHandler

from .cookies import CookieOptions, clear_cookie, log_rejected_cookie, set_cookie
from .events import audit_log, log_event, short_key
from .manager import SessionManager
from .session import Session
from .stores.base import Record, Store

#: The :attr:`Record.kind` of a remember-me token.
KIND = "remember"
DEFAULT_MAX_AGE = 30 * 24 * 3600
DEFAULT_GRACE = 60.0
#: Remember-me tokens (remembered browsers) one user keeps at most; a new one beyond ends the oldest.
DEFAULT_MAX_PER_USER = 20
_PART = re.compile(r"[A-Za-z0-9_-]{16,64}")


def token_key(selector: str) -> str:
    """The store key of a token: a hash, so a database copy holds no usable selector."""
    return hashlib.sha256(f"remember|{selector}".encode()).hexdigest()


def _digest(validator: str) -> str:
    return hashlib.sha256(validator.encode()).hexdigest()


def _find(record: Record, prefix: str, digest: str) -> str | None:
    """The item ``prefix + digest`` of the record, compared in constant time with each."""
    found = None
    for name in record.data:
        if name.startswith(prefix) and hmac.compare_digest(name[len(prefix) :], digest):
            found = name
    return found


@dataclass(frozen=True)
class RememberOptions:
    """``cookie`` defaults to the session cookie's attributes with ``max_age`` set."""

    cookie_name: str = "remember"
    max_age: int = DEFAULT_MAX_AGE
    grace: float = DEFAULT_GRACE
    cookie: CookieOptions | None = None
    #: Tokens per user at most: every "remember me" login stores one for max_age (30
    #: days), so without a cap a client could make the store hold any number of them.
    max_per_user: int = DEFAULT_MAX_PER_USER

    def __post_init__(self) -> None:
        if self.max_age <= 0 or self.grace < 0 or self.max_per_user < 1:
            raise ValueError("remember-me max_age and max_per_user must be positive and grace not negative")


@dataclass(frozen=True)
class Restored:
    """A session brought back by a token."""

    user_id: str
    #: False when this request raced a rotation and was let in on the previous validator.
    rotated: bool
    token_key: str
    meta: dict[str, str] = field(default_factory=dict)


class RememberMe:
    """Issue, use, rotate and forget remember-me tokens in the session store."""

    def __init__(
        self,
        manager: SessionManager,
        options: RememberOptions | None = None,
        *,
        on_theft: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        """``on_theft(user_id)`` runs when theft is detected, before the user's sessions and
        tokens are deleted: invalidate the user's logins there at once (bump a credentials
        version that every request checks). Deleting records alone cannot stop a restore
        that checked its token just before the deletion and creates its session after it."""
        self.manager = manager
        self.options = options or RememberOptions()
        self.on_theft = on_theft
        base = self.options.cookie or manager.options.cookie
        self.cookie = base.with_(max_age=self.options.max_age)
        self.cookie_full_name = self.cookie.full_name(self.options.cookie_name)

    @property
    def store(self) -> Store:
        return self.manager.store

    # -- issuing -----------------------------------------------------------------------
    def can_send(self, handler: RequestHandler) -> bool:
        """False for a Secure token cookie on a plain-HTTP request: it would travel in clear."""
        return not self.cookie.effective_secure or handler.request.protocol == "https"

    async def issue(
        self, handler: RequestHandler, user_id: str, meta: Mapping[str, str] | None = None
    ) -> str | None:
        """Create a token for ``user_id`` and set its cookie; returns the token's store key.

        Over plain HTTP with a Secure cookie policy nothing is issued (None): the token
        would cross the network in clear text, and the browser would drop it anyway.
        """
        if not self.can_send(handler):
            log_event(audit_log, logging.WARNING, "remember_not_issued", reason="secure cookie over plain http")
            return None
        now = self.manager.clock()
        selector, validator = secrets.token_urlsafe(18), secrets.token_urlsafe(32)
        key = token_key(selector)
        record = Record(
            data={f"v:{_digest(validator)}": json.dumps(now)},
            created=now,
            updated=now,
            expires=now + self.options.max_age,
            user_id=user_id,
            meta=dict(meta or {}),
            kind=KIND,
        )
        await self.store.create(key, record)
        self._set_cookie(handler, selector, validator)
        log_event(audit_log, logging.INFO, "remember_issued", user=user_id, token=short_key(key))
        await self.manager.end_oldest(user_id, kind=KIND, keep=self.options.max_per_user)
        return key

    def _set_cookie(self, handler: RequestHandler, selector: str, validator: str) -> None:
        value = f"{selector}:{validator}"
        sealed = self.manager.keys.seal(value.encode(), self.cookie_full_name, max_age=self.options.max_age)
        set_cookie(handler, self.options.cookie_name, sealed, self.cookie)

    def clear_cookie(self, handler: RequestHandler) -> None:
        clear_cookie(handler, self.options.cookie_name, self.cookie)

    # -- using -------------------------------------------------------------------------
    def _read_cookie(self, handler: RequestHandler) -> tuple[str, str] | None:
        raw = handler.get_cookie(self.cookie_full_name)
        if raw is None:
            return None
        opened = self.manager.keys.unseal(raw, self.cookie_full_name)
        if opened.payload is None:
            log_rejected_cookie(handler, self.cookie_full_name, raw, reason=opened.failure or "malformed")
            self.clear_cookie(handler)
            return None
        selector, _, validator = opened.payload.decode("utf-8", "replace").partition(":")
        if not _PART.fullmatch(selector) or not _PART.fullmatch(validator):
            log_rejected_cookie(handler, self.cookie_full_name, raw, reason="bad token format")
            self.clear_cookie(handler)
            return None
        return selector, validator

    async def restore(self, handler: RequestHandler) -> Restored | None:
        """Check the request's token; rotate it; None (cookie cleared) when it gives no one."""
        if not self.can_send(handler):  # a token replayed over plain HTTP is not used (nor rotated)
            return None
        parts = self._read_cookie(handler)
        if parts is None:
            return None
        selector, validator = parts
        key = token_key(selector)
        record = await self.store.load(key)
        remote = handler.request.remote_ip
        if record is None or not is_token(record) or record.user_id is None:
            log_event(audit_log, logging.INFO, "remember_unknown", token=short_key(key), remote=remote)
            self.clear_cookie(handler)
            return None
        digest = _digest(validator)
        now = self.manager.clock()
        if _find(record, "v:", digest) is not None:
            won = await self._rotate(handler, key, record, selector, digest, now)
            if won is None:  # the token ended meanwhile
                self.clear_cookie(handler)
                return None
            return Restored(record.user_id, won, key, dict(record.meta))
        previous_item = _find(record, "p:", digest)
        previous = record.data[previous_item] if previous_item is not None else None
        if previous is not None and now - float(json.loads(previous)) <= self.options.grace:
            return Restored(record.user_id, False, key, dict(record.meta))
        await self._theft(handler, key, record.user_id)
        return None

    async def _rotate(
        self, handler: RequestHandler, key: str, record: Record, selector: str, digest: str, now: float
    ) -> bool | None:
        """Rotate the validator; True if this request won (and sent the new cookie)."""
        new_validator = secrets.token_urlsafe(32)
        new_item = f"v:{_digest(new_validator)}"
        # Only the validator being replaced stays usable for the grace window: every
        # older one goes now, however recent its own rotation was.
        stale = [name for name in record.data if name.startswith("p:") and name != f"p:{digest}"]
        added = await self.store.update(
            key,
            set_items={new_item: json.dumps(now), f"p:{digest}": json.dumps(now)},
            unset_keys=stale,
            expires=record.expires,
            updated=now,
        )
        if not added:
            return None
        taken = await self.store.take(key, [f"v:{digest}"])
        if taken is None:
            return None
        if taken:
            self._set_cookie(handler, selector, new_validator)
            log_event(audit_log, logging.INFO, "remember_rotated", token=short_key(key), user=record.user_id)
            return True
        # Another request took the old validator first: it sent the new cookie; ours is unused.
        await self.store.take(key, [new_item])
        return False

    async def _theft(self, handler: RequestHandler, key: str, user_id: str) -> None:
        log_event(
            audit_log, logging.WARNING, "remember_theft", user=user_id, token=short_key(key),
            remote=handler.request.remote_ip,
        )
        if self.on_theft is not None:
            await self.on_theft(user_id)
        await self.manager.destroy_user_sessions(user_id)  # sessions and tokens alike
        self.clear_cookie(handler)

    # -- forgetting --------------------------------------------------------------------
    async def forget(self, handler: RequestHandler) -> None:
        """Logout: delete this browser's token (if any) and clear its cookie."""
        raw = handler.get_cookie(self.cookie_full_name)
        if raw is None:
            return
        opened = self.manager.keys.open(raw, self.cookie_full_name)
        if opened is not None:
            selector = opened.decode("utf-8", "replace").partition(":")[0]
            if _PART.fullmatch(selector):
                await self.manager.end_session(token_key(selector))
        self.clear_cookie(handler)

    async def apply(self, handler: RequestHandler, session: Session) -> Restored | None:
        """Give a fresh, anonymous session the user of a valid token (called by the glue)."""
        restored = await self.restore(handler)
        if restored is None:
            return None
        now = self.manager.clock()
        session.user_id = restored.user_id
        # What the app stored with the token about the credentials (e.g. a credentials
        # version, "cv") comes along, so the app can refuse a token issued under a
        # password that has changed since.
        session.meta.update({k: v for k, v in restored.meta.items() if k not in ("ip", "ua")})
        session.meta.update(
            login=f"{now:.0f}",
            restored=KIND,
            ip=handler.request.remote_ip or "",
            ua=handler.request.headers.get("User-Agent", "")[:200],
        )
        log_event(
            audit_log, logging.INFO, "session_restored", user=restored.user_id, token=short_key(restored.token_key),
            rotated=restored.rotated, remote=handler.request.remote_ip,
        )
        return restored


def is_token(record: Record) -> bool:
    """True for a remember-me token among a user's records (``store.list_user``)."""
    return record.kind == KIND
