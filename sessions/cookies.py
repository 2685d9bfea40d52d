"""Cookie attributes as one typed object, and the size guard every Set-Cookie passes.

Browsers silently drop a cookie whose name + value exceed 4096 bytes; we raise
instead, so the bug shows up in the developer's traceback rather than as a user who
"randomly" loses their preferences.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

from tornado.web import RequestHandler

from .keys import KeyRing

security_log = logging.getLogger("sessions.security")

#: RFC 6265 section 6.1 minimum every browser honours, for name + value.
MAX_COOKIE_BYTES = 4096

SameSite = Literal["Strict", "Lax", "None"]


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

    def tornado_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "path": self.path,
            "domain": self.domain,
            "httponly": self.httponly,
            "secure": self.effective_secure,
        }
        if self.samesite:
            kwargs["samesite"] = self.samesite
        if self.max_age is not None:
            kwargs["max_age"] = self.max_age
        return kwargs


def set_cookie(handler: RequestHandler, name: str, value: str, options: CookieOptions) -> None:
    """Set ``name`` (prefixed per ``options``) on the response, refusing oversized cookies."""
    full = options.full_name(name)
    size = len(full.encode("utf-8")) + len(value.encode("utf-8"))
    if size > MAX_COOKIE_BYTES:
        raise CookieTooLargeError(
            f"cookie {full!r} would be {size} bytes (name + value); browsers drop cookies "
            f"over {MAX_COOKIE_BYTES}. Keep less in it, or move the data to the session."
        )
    handler.set_cookie(full, value, **options.tornado_kwargs())


def clear_cookie(handler: RequestHandler, name: str, options: CookieOptions) -> None:
    """Expire the cookie with the same attributes it was set with (or browsers keep it)."""
    kwargs = options.tornado_kwargs()
    kwargs.pop("max_age", None)
    handler.clear_cookie(options.full_name(name), **kwargs)


def get_cookie(handler: RequestHandler, name: str, options: CookieOptions) -> str | None:
    return handler.get_cookie(options.full_name(name))


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
    payload = keys.open(raw, full)
    if payload is None:
        log_rejected_cookie(handler, full, raw)
        return None
    try:
        return json.loads(payload)
    except ValueError:  # sealed by us, so only a bug gets here; still never a 500
        log_rejected_cookie(handler, full, raw, reason="bad json")
        return None


def log_rejected_cookie(
    handler: RequestHandler, name: str, raw: str, *, reason: str = "did not open"
) -> None:
    """One structured line per cookie we refused: tampered, swapped, expired or unknown key."""
    security_log.warning(
        "event=cookie_rejected cookie=%s reason=%r length=%d remote=%s path=%s",
        name,
        reason,
        len(raw),
        handler.request.remote_ip,
        handler.request.path,
    )
