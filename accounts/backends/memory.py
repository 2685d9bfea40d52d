"""Users in process memory (with the memory session store: tests and development)."""

from __future__ import annotations

import dataclasses

from sessions import Store

from ..users import EmailTaken, User, UserRepository


class MemoryUsers(UserRepository):
    def __init__(self) -> None:
        self._by_id: dict[str, User] = {}
        self._id_by_email: dict[str, str] = {}

    @classmethod
    def for_store(cls, store: Store) -> MemoryUsers:
        # One repository per store object, so every handler of the app sees the same users.
        existing = getattr(store, "_demo_users", None)
        if existing is None:
            existing = cls()
            store._demo_users = existing  # type: ignore[attr-defined]
        return existing  # type: ignore[no-any-return]

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
