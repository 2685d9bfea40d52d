"""Users in process memory (``memory://``: tests and development).

The users live in the repository object itself: the demo keeps one per application
(``DemoConfig.build_accounts``), so every handler sees the same users, and they are
gone when the process ends, like the memory session store's sessions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..users import EmailTaken, User, UserRepository


class MemoryUsers(UserRepository):
    def __init__(self) -> None:
        self._by_id: dict[str, User] = {}
        self._id_by_email: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, *, share: Any = None) -> MemoryUsers:
        """``memory://`` (nothing after the scheme); ``share`` is not needed: a dict of its own."""
        if url.rstrip("/") != "memory:":
            raise ValueError(f"not a memory user storage URL: {url!r} (use memory://)")
        return cls()

    async def add(self, user: User) -> None:
        if user.email in self._id_by_email:
            raise EmailTaken(user.email)
        self._by_id[user.id] = user
        self._id_by_email[user.email] = user.id

    async def by_email(self, email: str) -> User | None:
        user_id = self._id_by_email.get(email)
        return None if user_id is None else self._by_id.get(user_id)

    async def by_id(self, user_id: str) -> User | None:
        return self._by_id.get(user_id)

    async def set_name(self, user_id: str, name: str) -> bool:
        user = self._by_id.get(user_id)
        if user is None:
            return False
        self._by_id[user_id] = dataclasses.replace(user, name=name)
        return True

    async def set_password(
        self, user_id: str, password_hash: str | None, *, expected_version: int | None = None
    ) -> int | None:
        user = self._by_id.get(user_id)
        if user is None or expected_version not in (None, user.credentials_version):
            return None
        version = user.credentials_version + 1
        self._by_id[user_id] = dataclasses.replace(
            user, password_hash=password_hash or user.password_hash, credentials_version=version
        )
        return version

    async def set_password_hash_if(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        user = self._by_id.get(user_id)
        if user is None or user.password_hash != old_hash:
            return False
        self._by_id[user_id] = dataclasses.replace(user, password_hash=new_hash)
        return True
