"""What every demo handler shares: security headers and clean error pages."""

from __future__ import annotations

import logging
from typing import Any

from tornado.web import HTTPError, RequestHandler

from sessions import SessionMixin

log = logging.getLogger("demo")

#: helmet-like defaults; the demo loads nothing from other origins.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecureHeadersMixin(RequestHandler):
    def set_default_headers(self) -> None:
        self.clear_header("Server")
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        if self.settings.get("production"):
            self.set_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains")

    def wants_json(self) -> bool:
        return self.request.path.startswith("/api/") or "application/json" in self.request.headers.get(
            "Accept", ""
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON for the API, a small HTML page otherwise; never a traceback."""
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, HTTPError) and exc.log_message else reason
        if status_code >= 500:
            message = reason  # internal details stay in the log
        if status_code == 503:
            self.set_header("Retry-After", "5")
        if self.wants_json():
            self.finish({"error": reason, "status": status_code, "message": message})
        else:
            self.render("error.html", status=status_code, reason=reason, message=message)


class BaseHandler(SecureHeadersMixin, SessionMixin):
    """Demo pages and API calls: a session on demand, security headers, clean errors."""

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace["theme"] = "light"
        return namespace
