"""Users: the model, the repository interface, and choosing a backend.

Users live in the same backend as the sessions (SQLite by default, MongoDB, Redis or
PostgreSQL when the session store is one of those), so the demo needs one database,
not two. :func:`open_user_repository` picks the backend that matches a session
store; each backend is one small module in :mod:`accounts.backends`.
"""

from __future__ import annotations

import abc
import importlib
import re
import secrets
import unicodedata
from dataclasses import dataclass

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

    async def close(self) -> None:
        return None


#: Session store class name -> "module:factory" of its user backend (factory(store)).
_BACKENDS = {
    "MemoryStore": "accounts.backends.memory:MemoryUsers.for_store",
    "SQLiteStore": "accounts.backends.sqlite:SQLiteUsers.for_store",
    "MongoStore": "accounts.backends.mongo:MongoUsers.for_store",
    "RedisStore": "accounts.backends.redis:RedisUsers.for_store",
    "PostgresStore": "accounts.backends.postgres:PostgresUsers.for_store",
}


def open_user_repository(store: Store) -> UserRepository:
    """The user repository that lives in the same backend as ``store``."""
    for cls in type(store).__mro__:
        target = _BACKENDS.get(cls.__name__)
        if target is not None:
            module_name, _, attribute = target.partition(":")
            factory = importlib.import_module(module_name)
            for part in attribute.split("."):
                factory = getattr(factory, part)
            repository: UserRepository = factory(store)  # type: ignore[operator]
            return repository
    raise ValueError(f"no user repository for the {store.name} store")
