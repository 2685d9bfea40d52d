"""Preferences: small, non-sensitive, kept client-side in an encrypted cookie."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from tornado.web import HTTPError

from sessions import CookieOptions
from sessions.events import log_event

from .base import BaseHandler, log

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


class PreferencesMixin(BaseHandler):
    _preferences: dict[str, str] | None = None

    @property
    def preferences_cookie(self) -> CookieOptions:
        return cookie_options_for(self.session_manager.options.cookie)

    def get_preferences(self) -> dict[str, str]:
        """Defaults overlaid with the cookie's values (opened once per request)."""
        if self._preferences is None:
            self.depends_on_cookies()
            stored = self.get_sealed_cookie(COOKIE_NAME, self.preferences_cookie)
            prefs = dict(DEFAULTS)
            if isinstance(stored, dict):
                try:
                    prefs.update(validate(stored))
                except HTTPError as exc:
                    log_event(log, logging.WARNING, "preferences_ignored", reason=exc.log_message)
            self._preferences = prefs
        return dict(self._preferences)

    def save_preferences(self, update: Any) -> dict[str, str]:
        prefs = {**self.get_preferences(), **validate(update)}
        options = self.preferences_cookie
        if options.effective_secure and self.request.protocol != "https":
            # A browser drops a Secure cookie set over plain HTTP: setting it would only
            # pretend. Behind a TLS proxy, list the proxy (--trusted-proxy).
            log_event(
                log,
                logging.WARNING,
                "cookie_not_set",
                cookie=options.full_name(COOKIE_NAME),
                reason="secure cookie on a plain-http request",
                remote=self.request.remote_ip,
            )
        else:
            self.set_sealed_cookie(COOKIE_NAME, prefs, options)
        self._preferences = prefs
        return dict(prefs)

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        if not self.rendering_error_page:
            namespace["theme"] = self.get_preferences()["theme"]
        return namespace


class PreferencesAPI(PreferencesMixin):
    def get(self) -> None:
        self.write(self.get_preferences())

    def put(self) -> None:
        try:
            update = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise HTTPError(400, "body must be JSON") from exc
        self.write(self.save_preferences(update))


class ThemeForm(PreferencesMixin):
    """POST /preferences/theme from the home page's switch."""

    def post(self) -> None:
        self.save_preferences({"theme": self.get_body_argument("theme", "")})
        self.redirect("/", status=303)
