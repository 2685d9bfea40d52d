"""Liveness and readiness: never touch the session, set no cookie."""

from __future__ import annotations

import logging

import tornado.process
from tornado.web import RequestHandler

from sessions import StoreError
from sessions.events import log_event

from .base import SecureHeadersMixin, log


class HealthHandler(SecureHeadersMixin, RequestHandler):
    def check_xsrf_cookie(self) -> None:  # nothing here changes state
        pass

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        # Which worker answered (server.py --processes N: 0..N-1; None with one process).
        self.write({"status": "ok", "worker": tornado.process.task_id()})

    head = get  # health checkers and curl -I ask with HEAD


class ReadyHandler(SecureHeadersMixin, RequestHandler):
    """200 when the session store answers, 503 otherwise (for load balancers)."""

    def check_xsrf_cookie(self) -> None:  # nothing here changes state
        pass

    async def get(self) -> None:
        store = self.settings["session_manager"].store
        self.set_header("Cache-Control", "no-store")
        try:
            await store.ping()
        except StoreError as exc:
            log_event(log, logging.WARNING, "store_not_ready", store=store.name, error=str(exc))
            self.set_status(503)
            self.set_header("Retry-After", "5")  # as every other 503 of the app
            self.write({"status": "unavailable", "store": store.name})
            return
        self.write({"status": "ok", "store": store.name})

    head = get
