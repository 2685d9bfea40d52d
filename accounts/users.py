"""Users: the model, the repository interface, and opening a repository by URL.

User storage opens from its own URL, through a registry of its own, as the session
store does with :func:`sessions.open_store`: :func:`open_user_repository` takes
``memory://``, ``sqlite:///path``, ``mongodb://...``, ``redis://...`` (and
``redis+cluster://...``) or ``postgresql://...``. The demo server defaults it to
the session store's URL, so the demo needs one database, not two; it may then pass
the session store as ``share`` so that the users ride on the store's connection,
through the hooks the stores document as public for companions (the Mongo store's
``database``, the Redis store's ``client``/``prefix``/``ensure_connected``, the
PostgreSQL store's ``run_query``). Each backend is one small module in
:mod:`accounts.backends`.
"""

from __future__ import annotations

import abc
import pkgutil
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sessions import Store

MAX_EMAIL = 254
MAX_NAME = 80
#: A pragmatic address check: one @, something on both sides, a dot in the domain,
#: no spaces or control characters. Deliverability is the mail server's business.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


class EmailTaken(Exception):
    """A user with this (normalised) email exists already."""


class InvalidUserInput(ValueError):
    """An email or display name that cannot be stored; the message is for the user."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    password_hash: str
    created: float
    #: Changes with the password: sessions and tokens made under an older version end.
    credentials_version: int = 1

    def public(self) -> dict[str, object]:
        """What the API shows about a user (never the hash)."""
        return {"id": self.id, "email": self.email, "name": self.name, "created": self.created}


def new_user_id() -> str:
    return secrets.token_hex(16)


def normalize_email(email: str) -> str:
    """NFKC, trimmed, lower-cased: ``" Ana@Example.COM"`` and ``"ana@example.com"`` are one user."""
    text = unicodedata.normalize("NFKC", email).strip().lower()
    if len(text) > MAX_EMAIL or not _EMAIL.fullmatch(text) or not text.isprintable():
        raise InvalidUserInput("email must be an address such as ana@example.com")
    return text


def clean_name(name: str) -> str:
    """A display name: trimmed, 1 to 80 printable characters."""
    text = unicodedata.normalize("NFC", name).strip()
    if not 0 < len(text) <= MAX_NAME or not text.isprintable():
        raise InvalidUserInput(f"name must be 1-{MAX_NAME} printable characters")
    return text


class UserRepository(abc.ABC):
    """Users by id and by normalised email (unique)."""

    async def setup(self) -> None:
        """Create tables or indexes now rather than on first use."""
        return None

    @abc.abstractmethod
    async def add(self, user: User) -> None:
        """Store a new user; EmailTaken when the email is in use (atomically: a unique index)."""

    @abc.abstractmethod
    async def by_email(self, email: str) -> User | None:
        """The user with this normalised email."""

    @abc.abstractmethod
    async def by_id(self, user_id: str) -> User | None:
        """The user with this id."""

    @abc.abstractmethod
    async def set_name(self, user_id: str, name: str) -> bool:
        """Change the display name; False when there is no such user."""

    @abc.abstractmethod
    async def set_password(
        self, user_id: str, password_hash: str | None, *, expected_version: int | None = None
    ) -> int | None:
        """Bump the credentials version (and store ``password_hash`` unless None), atomically.

        With ``expected_version``, only while the stored version is still that one: of two
        password changes made from the same version, exactly one wins. Returns the new
        version, or None when there is no such user or the version has moved on.
        ``password_hash=None`` bumps the version alone (log out everywhere, token theft):
        every session and token issued under the old version stops counting as a login.
        """

    @abc.abstractmethod
    async def set_password_hash_if(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Replace the stored hash with ``new_hash`` only while it is still ``old_hash`` (atomically).

        For upgrading a hash at login (a new bcrypt cost): the credentials version stays
        as it is, so no login ends, and a password changed meanwhile is never overwritten.
        False when there is no such user or the hash has changed.
        """

    async def close(self) -> None:
        return None


#: URL scheme -> a factory ``factory(url, *, share=None, **options)`` or its ``"module:attr"`` path.
BACKENDS: dict[str, str | Callable[..., UserRepository]] = {}


def register_user_backend(schemes: str | Iterable[str], factory: str | Callable[..., UserRepository]) -> None:
    """Make :func:`open_user_repository` use ``factory`` (imported on first use if a path) for these schemes."""
    BACKENDS.update(dict.fromkeys([schemes] if isinstance(schemes, str) else schemes, factory))


def user_schemes() -> list[str]:
    """The URL schemes :func:`open_user_repository` knows, for help texts."""
    return sorted(BACKENDS)


def open_user_repository(url: str, *, share: Store | None = None, **options: Any) -> UserRepository:
    """The user repository a URL names, e.g. ``sqlite:///var/sessions.sqlite3``.

    ``share``: a session store on the same database whose connection the users may
    use (only through the store's public API); without it the repository opens its
    own connection from the URL. Raises ValueError for an unknown scheme, TypeError for
    an option the backend does not take.
    """
    scheme, sep, _ = url.partition("://")
    factory = BACKENDS.get(scheme.lower()) if sep else None
    if factory is None:
        raise ValueError(f"unknown user storage URL {url!r}: use one of {', '.join(s + '://' for s in user_schemes())}")
    if isinstance(factory, str):
        factory = pkgutil.resolve_name(factory)
    repository: UserRepository = factory(url, share=share, **options)
    return repository


register_user_backend("memory", "accounts.backends.memory:MemoryUsers.from_url")
register_user_backend("sqlite", "accounts.backends.sqlite:SQLiteUsers.from_url")
register_user_backend(("mongodb", "mongodb+srv"), "accounts.backends.mongo:MongoUsers.from_url")
register_user_backend(("redis", "rediss", "redis+cluster", "rediss+cluster"), "accounts.backends.redis:RedisUsers.from_url")
register_user_backend(("postgresql", "postgres"), "accounts.backends.postgres:PostgresUsers.from_url")
