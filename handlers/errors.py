"""Answers the demo gives without a route of its own: unknown URLs, oversized bodies.

* :class:`NotFoundHandler` is the application's ``default_handler_class``: any method
  on an unknown URL gets the app's own 404 (JSON under ``/api/`` and ``/auth/``), with
  the security headers, instead of Tornado's bare page.
* :class:`BodyLimitApplication` looks at ``Content-Length`` as soon as the headers
  are in, before any body is read: a request announcing more than
  ``max_body_bytes`` goes to :class:`PayloadTooLargeHandler`, which answers 413 with
  the app's error page and closes the connection without reading the body. (Tornado's
  own ``max_body_size`` would answer a bare 400 and close.)
"""

from __future__ import annotations

from typing import Any

import tornado.web
from tornado import httputil
from tornado.web import HTTPError, stream_request_body

from .account_base import AccountHandler
from .base import SecureHeadersMixin

ALL_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")


class NotFoundHandler(AccountHandler):
    """Every unknown URL, whatever the method: 404, the app's page (in the visitor's theme,
    with their navigation; a request without a session cookie reads no store)."""

    SUPPORTED_METHODS = ALL_METHODS

    def check_xsrf_cookie(self) -> None:  # nothing here changes state; 404 beats 403
        pass

    def prepare(self) -> None:
        raise HTTPError(404)


@stream_request_body
class PayloadTooLargeHandler(SecureHeadersMixin):
    """413 before the body is read; the connection closes after the answer."""

    SUPPORTED_METHODS = ALL_METHODS

    def initialize(self, limit: int) -> None:
        self.limit = limit

    def check_xsrf_cookie(self) -> None:  # the size is refused whoever asks
        pass

    def prepare(self) -> None:
        # Let Tornado read on without its own "Content-Length too long" 400 being
        # written after our answer; it stops when the connection closes.
        self.request.connection.set_max_body_size(2**63)  # type: ignore[union-attr]
        raise HTTPError(413, f"request body over the {self.limit}-byte limit")

    def data_received(self, chunk: bytes) -> None:
        pass


def announced_length(request: httputil.HTTPServerRequest) -> int | None:
    """The request's Content-Length as a number, or None when absent or not a plain integer."""
    value = request.headers.get("Content-Length")
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return int(first) if first.isdigit() else None


class BodyLimitApplication(tornado.web.Application):
    """An Application that answers 413 for bodies over ``max_body_bytes`` (a setting)."""

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        limit = self.settings.get("max_body_bytes")
        if limit is not None:
            length = announced_length(request)
            if length is not None and length > limit:
                return self.get_handler_delegate(request, PayloadTooLargeHandler, {"limit": limit})
        return super().find_handler(request, **kwargs)
