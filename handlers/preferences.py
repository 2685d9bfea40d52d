"""Preferences: small, non-sensitive, kept client-side in an encrypted cookie."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import available_timezones

from tornado.web import HTTPError

from sessions import CookieOptions

from .base import BaseHandler, log

COOKIE_NAME = "prefs"
#: A year: preferences outlive sessions.
COOKIE_OPTIONS = CookieOptions(max_age=365 * 24 * 3600, httponly=True, samesite="Lax")
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

    def get_preferences(self) -> dict[str, str]:
        """Defaults overlaid with the cookie's values (opened once per request)."""
        if self._preferences is None:
            stored = self.get_sealed_cookie(COOKIE_NAME, COOKIE_OPTIONS)
            prefs = dict(DEFAULTS)
            if isinstance(stored, dict):
                try:
                    prefs.update(validate(stored))
                except HTTPError:
                    log.warning("ignoring invalid stored preferences")
            self._preferences = prefs
        return dict(self._preferences)

    def save_preferences(self, update: Any) -> dict[str, str]:
        prefs = {**self.get_preferences(), **validate(update)}
        self.set_sealed_cookie(COOKIE_NAME, prefs, COOKIE_OPTIONS)
        self._preferences = prefs
        return dict(prefs)

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
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
        self.redirect("/")
