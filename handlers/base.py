"""What every demo handler shares: security headers and clean error pages.

Every response the demo sends (pages, the JSON API, errors of any status, static
files, redirects, unknown URLs) comes from a handler built on
:class:`SecureHeadersMixin`, so it carries the same security headers and no
``Server`` banner, and its errors are the app's own page (JSON under ``/api/`` and
for the auth API) that needs neither a session nor a preferences cookie to render.

Every JSON error has one shape (:func:`error_body`)::

    {"error": "<code>", "message": "<text for a person>", "status": <HTTP status>}

plus ``"field"`` (the input at fault) on validation errors, ``"errors"`` (every
field at fault, field -> message) when a form had several problems at once, and
``"retry_after"`` (seconds, as the ``Retry-After`` header) on 429 and 503. ``error``
is a short machine code: by status (:data:`ERROR_CODES`) unless the refusal names
its own (``invalid_credentials``, ``reauthentication_required``). The same shape
answers every error under ``/api/`` and ``/auth/`` (unknown URLs included).

The HTML error page is an ordinary page of the site: the visitor's theme, their
login state and navigation (the handler learns who is asking before it renders,
unless the store is what failed), a title and a sentence in plain words
(:data:`ERROR_WORDS`), and a way on.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from tornado.escape import xhtml_escape
from tornado.web import HTTPError, RequestHandler

from accounts.ratelimit import Decision
from accounts.service import AccountError
from sessions import SessionMixin, StoreError
from sessions.events import audit_log, event_line, log_event

from .preferences import Preferences

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
HSTS = "max-age=31536000; includeSubDomains"
#: The theme of pages rendered without reading the preferences cookie (errors).
DEFAULT_THEME = "light"


#: The ``error`` code of a JSON error by HTTP status, unless the refusal names its own.
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    503: "store_unavailable",
}
#: Seconds a client should wait after a 503 (the store is down).
STORE_RETRY_AFTER = 5
STORE_DOWN = "we can't reach the session store right now; please try again in a minute"
#: The error page's title and sentence by status (a refusal's own message, when it has
#: one a person can act on, replaces the sentence).
ERROR_WORDS: dict[int, tuple[str, str]] = {
    400: ("That request did not work", "Something in the request was not right."),
    403: ("Not allowed", "This form has expired or came from another site: go back, reload the page and try again."),
    404: ("Page not found", "There is no page at this address. The link may be mistyped, or the page has moved."),
    405: ("That does not work here", "This address does not accept that kind of request."),
    413: ("Too much at once", "The request was larger than this site accepts."),
    429: ("Too many attempts", "Please wait a little and try again."),
    500: ("Something went wrong", "Something went wrong on our side. Please try again; if it keeps happening, "
                                  "tell whoever runs this site."),
    503: ("Temporarily unavailable", STORE_DOWN[0].upper() + STORE_DOWN[1:] + "."),
}


class APIError(HTTPError):
    """An HTTPError that names its JSON ``error`` code and the input ``field`` at fault."""

    def __init__(self, status: int, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(status, message.replace("%", "%%"))
        self.code = code
        self.field = field


def error_body(
    status: int, message: str, *, code: str | None = None, field: str | None = None, retry_after: int | None = None
) -> dict[str, object]:
    """The one JSON error shape of the app (see the module docstring)."""
    body: dict[str, object] = {"error": code or ERROR_CODES.get(status, f"http_{status}"), "message": message,
                               "status": status}
    if field:
        body["field"] = field
    if retry_after is not None:
        body["retry_after"] = retry_after
    return body


def http_error_message(exc: BaseException | None) -> str | None:
    """The text of an ``HTTPError``'s log message with its arguments applied."""
    if not isinstance(exc, HTTPError) or not exc.log_message:
        return None
    try:
        return exc.log_message % tuple(exc.args) if exc.args else exc.log_message.replace("%%", "%")
    except (TypeError, ValueError):
        return exc.log_message


class SecureHeadersMixin(RequestHandler):
    #: True while the error page renders: templates must not read cookies then.
    rendering_error_page = False

    def set_default_headers(self) -> None:
        # Straight into the header map: these are constants, so set_header's per-value
        # type and character checks (about 1.5 µs each, on every response) buy nothing.
        headers = self._headers
        del headers["Server"]
        for name, value in SECURITY_HEADERS.items():
            headers[name] = value
        if self.settings.get("production"):
            headers["Strict-Transport-Security"] = HSTS

    def wants_json(self) -> bool:
        path = self.request.path
        return path.startswith(("/api/", "/auth/")) or "application/json" in self.request.headers.get("Accept", "")

    def error_page_theme(self) -> str:
        """The theme of this visitor's error page (handlers that read cookies override it)."""
        return DEFAULT_THEME

    def error_page_user(self) -> tuple[Any, bool]:
        """(the logged-in user, whether that is known) for the error page's navigation."""
        return None, False

    def depends_on_cookies(self) -> None:
        """This response is built from the request's cookies: no shared cache may keep it."""
        self.set_header("Cache-Control", "no-store")
        vary = self._headers.get("Vary")
        if vary is None:
            self.set_header("Vary", "Cookie")
        elif "cookie" not in vary.lower():
            self.set_header("Vary", f"{vary}, Cookie")

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace["theme"] = DEFAULT_THEME
        namespace["user_known"] = True  # the error page says when it could not learn who is asking
        namespace["flashes"] = ()  # base.html shows them; pages that pop flashes pass their own
        return namespace

    def rate_limit_headers(self, decision: Decision | None) -> None:
        """``RateLimit-*`` (and ``Retry-After`` when refused) for a counted attempt."""
        if decision is not None:
            for name, value in decision.headers().items():
                self.set_header(name, value)
            if not decision.allowed:
                log_event(
                    audit_log, logging.WARNING, "rate_limited", path=self.request.path, remote=self.request.remote_ip
                )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON (:func:`error_body`) for the API, the site's own page otherwise; never a traceback.

        The page shows the visitor's theme and login state when they are known (see
        :meth:`error_page_user`); it renders without them too, so an error raised while
        loading either still gets it.
        """
        reason = self._reason
        error = kwargs.get("exc_info", (None, None, None))[1]
        code = field = None
        errors: dict[str, str] | None = None
        retry_after: int | None = None
        specific = False  # a message a person can act on (else the page's standard sentence)
        if isinstance(error, AccountError):
            message, code, field = error.message, error.code, error.field
            errors = error.errors if len(error.errors) > 1 else None
            specific = True
            self.rate_limit_headers(error.limit)
            if error.limit is not None and not error.limit.allowed:
                retry_after = error.limit.reset_after
        else:
            message = http_error_message(error) or reason
            code, field = getattr(error, "code", None), getattr(error, "field", None)
            specific = isinstance(error, HTTPError) and bool(error.log_message) and status_code not in (403, 404, 405)
        if status_code >= 500:
            message, code, field, errors = reason, None, None, None  # internal details stay in the log
            specific = False
        if status_code == 503:
            retry_after = STORE_RETRY_AFTER
            message = STORE_DOWN
            self.set_header("Retry-After", str(retry_after))
        self.set_header("Cache-Control", "no-store")
        if self.wants_json():
            body = error_body(status_code, message, code=code, field=field, retry_after=retry_after)
            if errors:
                body["errors"] = errors
            self.finish(body)
            return
        title, sentence = ERROR_WORDS.get(status_code, (reason, ""))
        if specific:
            sentence = message[:1].upper() + message[1:] + ("" if message.endswith((".", "!", "?")) else ".")
        user, known = self.error_page_user()
        self.rendering_error_page = True
        try:
            theme = self.error_page_theme()
            if theme != DEFAULT_THEME or known:
                self.depends_on_cookies()
            page = self.render_string(
                "error.html", status=status_code, reason=reason, title=title, message=sentence, theme=theme,
                current_user=user, user_known=known, retry_after=retry_after,
            )
        except Exception:  # a broken template must not turn an error into a traceback page
            log.exception("error page failed to render")
            page = f"<!doctype html><title>{status_code}</title><h1>{status_code} {xhtml_escape(reason)}</h1>".encode()
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(page)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """A store that fails anywhere (sessions, users, rate limits) is a 503 with Retry-After, not a
        500; a refused account operation that reaches here answers with its own status."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 500 and isinstance(error, StoreError):
            status_code, kwargs["reason"] = 503, "Session Store Unavailable"
        elif status_code == 500 and isinstance(error, AccountError):
            status_code = error.status
        super().send_error(status_code, **kwargs)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """One JSON line per error: client-controlled values (path, messages) are quoted."""
        request = self.request
        fields = {"method": request.method, "path": request.path, "remote": request.remote_ip}
        if isinstance(value, AccountError):  # a refusal, audited where it was decided
            return
        if isinstance(value, StoreError):  # expected in an outage: one line, no traceback
            log_event(log, logging.ERROR, "store_unavailable", error=str(value)[:300], **fields)
            return
        if isinstance(value, HTTPError):
            if value.log_message:
                level = logging.WARNING if value.status_code < 500 else logging.ERROR
                log_event(log, level, "http_error", status=value.status_code, message=http_error_message(value), **fields)
            return
        log.error("%s", event_line("uncaught_exception", error=repr(value), **fields), exc_info=(typ, value, tb))  # type: ignore[arg-type]


class BaseHandler(SecureHeadersMixin, SessionMixin):
    """Demo pages and API calls: a session on demand, the preferences cookie, security headers,
    clean errors."""

    _preferences: Preferences | None = None

    @property
    def preferences(self) -> Preferences:
        """This request's preferences cookie (opened once, on first use)."""
        if self._preferences is None:
            self._preferences = Preferences(self)
        return self._preferences

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        if not self.rendering_error_page:
            namespace["theme"] = self.preferences.get()["theme"]
        return namespace

    def error_page_theme(self) -> str:
        """The preferences cookie's theme: it is opened with the key ring alone, no store."""
        try:
            return self.preferences.get()["theme"]
        except Exception:  # the page must render whatever went wrong
            return DEFAULT_THEME
