"""Every private name of Tornado the library relies on, in one place.

Tornado offers no public way to do these few things; each is a one-line adapter
here, and ``tests/lib/test_tornado_internals.py`` pins the behaviour relied on, so a
Tornado release that renames one fails that test instead of a request.
"""

from __future__ import annotations

from typing import Any

from tornado import httputil
from tornado.httpserver import _ProxyAdapter
from tornado.web import RequestHandler
from tornado.websocket import WebSocketHandler

#: Tornado's ``xheaders`` request adapter, subclassed by :mod:`sessions.proxy`.
ProxyAdapter = _ProxyAdapter


def apply_forwarded_headers(connection_context: Any, headers: httputil.HTTPHeaders) -> None:
    """Let Tornado set ``remote_ip`` / ``protocol`` from these forwarded headers."""
    connection_context._apply_xheaders(headers)


def mark_private(handler: RequestHandler) -> None:
    """``Vary: Cookie`` (once) and ``Cache-Control: no-store`` on the response being built.

    Straight into the header map: the values are constants, so ``set_header``'s per-value
    checks buy nothing, and this runs on every request that loads a session.
    """
    headers = handler._headers
    vary = headers.get("Vary")
    if vary is None:
        headers["Vary"] = "Cookie"
    elif "cookie" not in vary.lower():
        headers["Vary"] = f"{vary}, Cookie"
    headers["Cache-Control"] = "no-store"


def is_finished(handler: RequestHandler) -> bool:
    """True once ``finish()`` has sent the response."""
    return bool(handler._finished)


def stream_backlog(handler: WebSocketHandler) -> int:
    """Bytes written to ``handler``'s websocket that the kernel has not taken yet.

    ``IOStream.writing()`` only says whether there are any. If a release renames the
    buffer this returns 0 (the write bound then counts only the per-write overhead).
    """
    stream = getattr(handler.ws_connection, "stream", None)
    buffer = getattr(stream, "_write_buffer", None)
    return len(buffer) if buffer is not None else 0
