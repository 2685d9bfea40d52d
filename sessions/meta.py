"""Typed metadata about a session itself (not session data): who, from where, how.

Stored beside the session's data as a small text map (every store keeps
``Record.meta: dict[str, str]``); :class:`SessionMeta` is that map with the keys the
library and applications share spelled once, as typed properties. Unknown keys an
application adds stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Longest user agent kept (a header is no place for a novel).
MAX_USER_AGENT = 200

_IP, _UA, _LOGIN, _RESTORED, _REAUTH, _CREDENTIALS = "ip", "ua", "login", "restored", "reauth", "cv"


def _time(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


class SessionMeta(dict[str, str]):
    """A session's metadata: a ``dict[str, str]`` (as stored) with typed accessors."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        super().__init__(values or {})

    def _set(self, key: str, value: str | None) -> None:
        if value is None:
            self.pop(key, None)
        else:
            self[key] = value

    @property
    def ip(self) -> str | None:
        """The client address that created the session (``request.remote_ip``)."""
        return self.get(_IP)

    @ip.setter
    def ip(self, value: str | None) -> None:
        self._set(_IP, value)

    @property
    def user_agent(self) -> str | None:
        return self.get(_UA)

    @user_agent.setter
    def user_agent(self, value: str | None) -> None:
        self._set(_UA, None if value is None else value[:MAX_USER_AGENT])

    @property
    def login_at(self) -> float | None:
        """When the user signed in (Unix seconds): by password, or by a remember-me restore."""
        return _time(self.get(_LOGIN))

    @login_at.setter
    def login_at(self, value: float | None) -> None:
        self._set(_LOGIN, None if value is None else f"{value:.0f}")

    @property
    def restored(self) -> str | None:
        """How a session without a password login came to be (``"remember"``), else None."""
        return self.get(_RESTORED)

    @restored.setter
    def restored(self, value: str | None) -> None:
        self._set(_RESTORED, value)

    @property
    def reauth_at(self) -> float | None:
        """When the password was last confirmed for sensitive actions (step-up)."""
        return _time(self.get(_REAUTH))

    @reauth_at.setter
    def reauth_at(self, value: float | None) -> None:
        self._set(_REAUTH, None if value is None else f"{value:.0f}")

    @property
    def credentials_version(self) -> str | None:
        """The user's credentials version when this login (or its token) was issued."""
        return self.get(_CREDENTIALS)

    @credentials_version.setter
    def credentials_version(self, value: str | int | None) -> None:
        self._set(_CREDENTIALS, None if value is None else str(value))

    def client(self, ip: str | None, user_agent: str | None) -> None:
        """Record the client (address and browser) in one call."""
        self.ip = ip or ""
        self.user_agent = user_agent or ""
