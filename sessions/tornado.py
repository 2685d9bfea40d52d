"""The RequestHandler mixin: lazy session loading and a commit that precedes the response.

Usage::

    app = tornado.web.Application(handlers, session_manager=SessionManager(store, keys))

    class Counter(SessionMixin, tornado.web.RequestHandler):
        async def post(self):
            session = await self.get_session()
            session["count"] = session.get("count", 0) + 1
            self.write({"count": session["count"]})

Nothing touches the store until a handler awaits ``get_session()``, and a request
without a session cookie never touches it at all. With a ``remember_me`` application
setting (:class:`sessions.remember.RememberMe`), a request that has no valid session
but a remember-me cookie gets a new session for that user. The commit runs inside
``finish()``, so the store write completes before a single byte of the response
(a redirect included) is sent. A store failure becomes a clean 503.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from tornado.httputil import parse_cookie
from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler

from .cookies import CookieOptions, get_sealed_json, restore_cookie_headers, set_sealed_json
from .events import log_event, security_log
from .manager import CommitPlan, MisconfiguredError, SessionManager, SessionTooLarge
from .session import Session
from .stores.base import StoreError
from .tornado_internals import is_finished, mark_private

log = logging.getLogger("sessions")


def manager_from_settings(settings: dict[str, Any]) -> SessionManager:
    """The application's ``session_manager`` setting, or an error that says how to give one."""
    manager = settings.get("session_manager")
    if not isinstance(manager, SessionManager):
        raise MisconfiguredError(
            "the Tornado application has no session_manager setting (a SessionManager); build it with "
            "tornado.web.Application(handlers, session_manager=SessionManager(store, keys)). "
            + (f"It is a {type(manager).__name__}." if manager is not None else "")
        )
    return manager


def check_application(app: Any) -> SessionManager:
    """Fail at startup, not at the first request, when ``app`` lacks a usable session manager."""
    return manager_from_settings(app.settings)


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    """Run the commit in a Task, started eagerly where Python can (3.12+).

    A commit to the memory store (and the response write after it) usually finishes
    without waiting for anything; an eager Task runs it at once instead of one loop
    round trip later. It must be a real Task either way: drivers such as redis-py use
    ``asyncio.timeout()``, which works only inside one, so there is no hand-made
    shortcut on 3.11.
    """
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):  # pragma: no cover - exercised on 3.12+
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return loop.create_task(coro)


class CookieReaderMixin(RequestHandler):
    """Tornado's ``get_cookie`` without the per-request ``SimpleCookie``.

    Tornado builds an ``http.cookies.Morsel`` for every request cookie on first
    access, which costs about as much as opening the sealed session cookie; the
    values are those of ``tornado.httputil.parse_cookie`` either way. Shared by the
    session glue for requests and for websocket handshakes.
    """

    _cookie_values: dict[str, str] | None = None

    def get_cookie(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        jar = self._cookie_values
        if jar is None:
            header = self.request.headers.get("Cookie")
            jar = self._cookie_values = parse_cookie(header) if header else {}
        return jar.get(name, default)


class SessionMixin(CookieReaderMixin, RequestHandler):
    """Adds ``get_session()`` and sealed-cookie helpers; commits in ``finish()``."""

    _session: Session | None = None
    _session_commit: asyncio.Future[None] | None = None
    _session_committed: bool = False

    def clear(self) -> None:
        """Tornado's ``clear()`` (also run by ``send_error``), keeping the cookies set so far."""
        super().clear()
        restore_cookie_headers(self)

    @property
    def session_manager(self) -> SessionManager:
        return manager_from_settings(self.application.settings)

    async def get_session(self) -> Session:
        """Load (once per request) and return this request's session."""
        if self._session is None:
            try:
                session = await self.session_manager.load(self)
                remember = self.settings.get("remember_me")
                if remember is not None and session.is_new:
                    await remember.apply(self, session)  # a remember-me token may bring the user back
                self._session = session
            except StoreError as exc:
                log.error("session store failed on load: %s", exc)
                raise HTTPError(503, reason="Session Store Unavailable") from exc
            mark_private(self)  # a response built from a session is this browser's alone
        return self._session

    async def pop_flashes(self, category: str | None = None) -> list[tuple[str, str]]:
        """Take this session's flash messages (of one category): each is shown exactly once,
        even to parallel requests."""
        session = await self.get_session()
        try:
            return await self.session_manager.pop_flashes(session, category)
        except StoreError as exc:
            log.error("session store failed taking flashes: %s", exc)
            raise HTTPError(503, reason="Session Store Unavailable") from exc

    @property
    def session(self) -> Session:
        """The session loaded by ``await self.get_session()`` earlier in this request."""
        if self._session is None:
            raise RuntimeError("await self.get_session() before using self.session")
        return self._session

    # -- sealed cookies (preferences and the like) ---------------------------------
    def get_sealed_cookie(self, name: str, options: CookieOptions | None = None) -> Any | None:
        manager = self.session_manager
        return get_sealed_json(self, name, manager.keys, options or manager.options.cookie)

    def set_sealed_cookie(self, name: str, value: Any, options: CookieOptions | None = None) -> None:
        manager = self.session_manager
        set_sealed_json(self, name, value, manager.keys, options or manager.options.cookie)

    # -- commit before the response ----------------------------------------------
    def finish(self, chunk: Any = None) -> asyncio.Future[None]:
        if self._session_commit is not None and not self._session_committed:
            if chunk is not None:
                self.write(chunk)
            return self._session_commit  # Tornado's own finish() call while we commit
        session = self._session
        if session is None or self.get_status() >= 500 or is_finished(self):
            return super().finish(chunk)
        try:
            plan = self.session_manager.plan(self, session)
        except SessionTooLarge as exc:
            # Nothing of this request is stored; what was stored before stays.
            log_event(security_log, logging.WARNING, "session_too_large", detail=str(exc),
                      path=self.request.path, remote=self.request.remote_ip)
            self._session = None
            self.clear()
            self.send_error(413, reason="Session Too Large")
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if plan is None:
            return super().finish(chunk)
        if chunk is not None:
            self.write(chunk)
        commit = start_eagerly(self._commit_then_finish(session, plan))
        if not commit.done():
            self._session_commit = commit
        return commit

    async def _commit_then_finish(self, session: Session, plan: CommitPlan) -> None:
        try:
            await self.session_manager.execute(self, session, plan)
        except StoreError as exc:
            log.error("session store failed on save: %s", exc)
            self._session_committed = True
            self.clear()
            self.send_error(503, reason="Session Store Unavailable")
            return
        except Exception:
            log.exception("session commit failed")
            self._session_committed = True
            self.clear()
            self.send_error(500)
            return
        self._session_committed = True
        if not is_finished(self):
            try:
                await super().finish()
            except StreamClosedError:  # the client went away; nothing left to tell it
                log.debug("client closed the connection before the response was sent")
