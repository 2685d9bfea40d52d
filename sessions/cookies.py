"""Cookie attributes as one typed object, and the size guard every Set-Cookie passes.

Browsers silently drop a cookie whose name + value exceed 4096 bytes; we raise
instead, so the bug shows up in the developer's traceback rather than as a user who
"randomly" loses their preferences.

Set-Cookie headers are written here rather than through Tornado's ``set_cookie``,
which builds an ``http.cookies.Morsel`` per cookie: on a login, that cost as much as
sealing the cookie. Names and sealed values are plain tokens and the attributes
come from a validated :class:`CookieOptions`, so the header is a format string.
Setting a cookie twice in one response sends only the last value, as Tornado does.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from tornado.web import RequestHandler

from .events import log_event, security_log
from .keys import KeyRing

#: RFC 6265 section 6.1 minimum every browser honours, for name + value.
MAX_COOKIE_BYTES = 4096

SameSite = Literal["Strict", "Lax", "None"]

#: RFC 6265 cookie-name token and cookie-value characters (no quotes, no separators).
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"
#: The handler attribute holding this response's cookie headers, by cookie name.
_PENDING = "_sessions_set_cookies"


class CookieTooLargeError(ValueError):
    """Setting this cookie would exceed the browser limit; the browser would drop it."""


@dataclass(frozen=True, slots=True)
class CookieOptions:
    """Attributes of one cookie. ``host_prefix`` forces Secure, Path=/ and no Domain."""

    max_age: int | None = None  # seconds; None = a browser-session cookie
    path: str = "/"
    domain: str | None = None
    secure: bool = False
    httponly: bool = True
    samesite: SameSite | None = "Lax"
    host_prefix: bool = False

    def __post_init__(self) -> None:
        if self.samesite not in (None, "Strict", "Lax", "None"):
            raise ValueError(f"samesite must be Strict, Lax, None or unset, not {self.samesite!r}")
        if self.samesite == "None" and not (self.secure or self.host_prefix):
            raise ValueError("SameSite=None requires Secure (browsers reject it otherwise)")
        if self.host_prefix and (self.domain is not None or self.path != "/"):
            raise ValueError("__Host- cookies must have Path=/ and no Domain")
        for text in (self.path, self.domain or ""):
            if ";" in text or not text.isprintable():
                raise ValueError(f"cookie path and domain must be printable and have no ';': {text!r}")
        # Tornado drops a Max-Age of 0 (it would become a browser-session cookie).
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError("max_age must be > 0 seconds (None: a browser-session cookie)")

    @property
    def effective_secure(self) -> bool:
        return self.secure or self.host_prefix

    def full_name(self, name: str) -> str:
        """The name as sent to the browser (with ``__Host-`` when asked)."""
        return f"__Host-{name}" if self.host_prefix and not name.startswith("__Host-") else name

    def with_(self, **changes: Any) -> CookieOptions:
        return replace(self, **changes)

    def attributes(self, *, max_age: int | None = None, clear: bool = False) -> str:
        """The ``; Attr`` part of a Set-Cookie header for these options."""
        parts = [f"; Path={self.path}"]
        if self.domain:
            parts.append(f"; Domain={self.domain}")
        if clear:
            parts.append(f"; Expires={_EXPIRED}; Max-Age=0")
        elif max_age is not None:
            parts.append(f"; Max-Age={max_age}")
        if self.httponly:
            parts.append("; HttpOnly")
        if self.effective_secure:
            parts.append("; Secure")
        if self.samesite:
            parts.append(f"; SameSite={self.samesite}")
        return "".join(parts)



def set_cookie(handler: RequestHandler, name: str, value: str, options: CookieOptions) -> None:
    """Set ``name`` (prefixed per ``options``) on the response, refusing oversized cookies."""
    full = options.full_name(name)
    size = len(full.encode("utf-8")) + len(value.encode("utf-8"))
    if size > MAX_COOKIE_BYTES:
        raise CookieTooLargeError(
            f"cookie {full!r} would be {size} bytes (name + value); browsers drop cookies "
            f"over {MAX_COOKIE_BYTES}. Keep less in it, or move the data to the session."
        )
    if not _NAME.fullmatch(full) or not _VALUE.fullmatch(value):
        raise ValueError(f"cookie {full!r}: the name must be a token and the value plain cookie characters")
    _put_header(handler, full, f"{full}={value}{options.attributes(max_age=options.max_age)}")


def clear_cookie(handler: RequestHandler, name: str, options: CookieOptions) -> None:
    """Expire the cookie with the same attributes it was set with (or browsers keep it)."""
    full = options.full_name(name)
    _put_header(handler, full, f"{full}={options.attributes(clear=True)}")


def restore_cookie_headers(handler: RequestHandler) -> None:
    """Add this response's cookie headers again after ``clear()`` emptied the headers.

    Tornado keeps the cookies of its own ``set_cookie`` across ``clear()`` (which
    ``send_error`` calls): an error page still carries them. Ours must too; a rotated
    remember-me token lost on a 403 would look like theft the next time.
    """
    pending: dict[str, str] | None = getattr(handler, _PENDING, None)
    for value in (pending or {}).values():
        handler.add_header("Set-Cookie", value)


def _put_header(handler: RequestHandler, name: str, header: str) -> None:
    pending: dict[str, str] | None = getattr(handler, _PENDING, None)
    if pending is None:
        pending = {}
        setattr(handler, _PENDING, pending)
    if name in pending:  # set again in this response: only the last one goes out
        handler.clear_header("Set-Cookie")
        pending[name] = header
        for value in pending.values():
            handler.add_header("Set-Cookie", value)
        return
    pending[name] = header
    handler.add_header("Set-Cookie", header)


def set_sealed_json(
    handler: RequestHandler, name: str, value: Any, keys: KeyRing, options: CookieOptions
) -> None:
    """Store a JSON value in an encrypted cookie bound to its name, expiring with max_age."""
    payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    sealed = keys.seal(payload, options.full_name(name), max_age=options.max_age)
    set_cookie(handler, name, sealed, options)


def get_sealed_json(
    handler: RequestHandler, name: str, keys: KeyRing, options: CookieOptions
) -> Any | None:
    """The JSON value of an encrypted cookie; None (and a security log line) if it won't open."""
    full = options.full_name(name)
    raw = handler.get_cookie(full)
    if raw is None:
        return None
    opened = keys.unseal(raw, full)
    if opened.payload is None:
        log_rejected_cookie(handler, full, raw, reason=opened.failure or "malformed")
        return None
    payload = opened.payload
    try:
        return json.loads(payload)
    except ValueError:  # sealed by us, so only a bug gets here; still never a 500
        log_rejected_cookie(handler, full, raw, reason="bad json")
        return None


def log_rejected_cookie(handler: RequestHandler, name: str, raw: str, *, reason: str) -> None:
    """One JSON line per cookie we refused, with why: malformed, oversized, unknown_key,
    bad_tag (tampered, or copied from another cookie), expired, bad json."""
    log_event(
        security_log,
        logging.WARNING,
        "cookie_rejected",
        cookie=name,
        reason=reason,
        length=len(raw),
        remote=handler.request.remote_ip,
        path=handler.request.path,
    )
