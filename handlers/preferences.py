"""Preferences: small, non-sensitive, kept client-side in an encrypted cookie.

:class:`Preferences` is the helper a handler holds for them; the handlers that
change them (``PUT /api/preferences``, the theme switch) are in :mod:`handlers.pages`.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import available_timezones

from tornado.web import HTTPError

from sessions import CookieOptions
from sessions.events import log_event

if TYPE_CHECKING:
    from .base import BaseHandler

log = logging.getLogger("demo")

COOKIE_NAME = "prefs"
#: A year: preferences outlive sessions.
COOKIE_MAX_AGE = 365 * 24 * 3600


@lru_cache(maxsize=8)
def cookie_options_for(session_cookie: CookieOptions) -> CookieOptions:
    """The preferences cookie follows the session cookie's policy (Secure, ``__Host-``,
    SameSite, path, domain) and lives a year."""
    return session_cookie.with_(max_age=COOKIE_MAX_AGE, httponly=True)


#: The development policy (the production one adds Secure and ``__Host-``).
COOKIE_OPTIONS = cookie_options_for(CookieOptions(samesite="Lax"))
DEFAULTS: dict[str, str] = {"theme": "light", "language": "en", "timezone": "UTC"}
THEMES = ("light", "dark")
_LANGUAGE_MAX = 16
_TIMEZONES = available_timezones() | {"UTC"}


def validate(update: Any) -> dict[str, str]:
    """The accepted subset of a preferences update; HTTPError(400) says what is wrong."""
    if not isinstance(update, dict):
        raise HTTPError(400, "preferences must be a JSON object")
    unknown = set(update) - set(DEFAULTS)
    if unknown:
        raise HTTPError(400, f"unknown preference(s): {', '.join(sorted(map(str, unknown)))[:200]}")
    clean: dict[str, str] = {}
    for name, value in update.items():
        if not isinstance(value, str):
            raise HTTPError(400, f"{name} must be a string")
        if name == "theme" and value not in THEMES:
            raise HTTPError(400, f"theme must be one of {', '.join(THEMES)}")
        if name == "language" and not (0 < len(value) <= _LANGUAGE_MAX and value.replace("-", "").isalnum()):
            raise HTTPError(400, "language must be a short tag such as en or pt-BR")
        if name == "timezone" and value not in _TIMEZONES:
            raise HTTPError(400, "timezone must be an IANA name such as Europe/Paris")
        clean[name] = value
    return clean


class Preferences:
    """One request's preferences cookie: defaults overlaid with the sealed cookie's values.

    A helper the handler holds (``BaseHandler.preferences``), not a base class: it
    reads and writes the cookie through the handler's sealed-cookie methods.
    """

    def __init__(self, handler: BaseHandler) -> None:
        self.handler = handler
        self.values: dict[str, str] | None = None

    @property
    def cookie(self) -> CookieOptions:
        return cookie_options_for(self.handler.session_manager.options.cookie)

    def get(self) -> dict[str, str]:
        """Defaults overlaid with the cookie's values (opened once per request)."""
        if self.values is None:
            handler = self.handler
            handler.depends_on_cookies()
            stored = handler.get_sealed_cookie(COOKIE_NAME, self.cookie)
            prefs = dict(DEFAULTS)
            if isinstance(stored, dict):
                try:
                    prefs.update(validate(stored))
                except HTTPError as exc:
                    log_event(log, logging.WARNING, "preferences_ignored", reason=exc.log_message)
            self.values = prefs
        return dict(self.values)

    def save(self, update: Any) -> dict[str, str]:
        """Validate ``update`` (HTTPError 400), merge it and set the sealed cookie."""
        prefs = {**self.get(), **validate(update)}
        options = self.cookie
        request = self.handler.request
        if options.effective_secure and request.protocol != "https":
            # A browser drops a Secure cookie set over plain HTTP: setting it would only
            # pretend. Behind a TLS proxy, list the proxy (--trusted-proxy).
            log_event(
                log,
                logging.WARNING,
                "cookie_not_set",
                cookie=options.full_name(COOKIE_NAME),
                reason="secure cookie on a plain-http request",
                remote=request.remote_ip,
            )
        else:
            self.handler.set_sealed_cookie(COOKIE_NAME, prefs, options)
        self.values = prefs
        return dict(prefs)
