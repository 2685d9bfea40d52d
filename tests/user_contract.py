"""The user repository contract: one suite over every backend (accounts/backends/).

Subclass :class:`UserRepositoryContract` with a ``users`` fixture yielding a fresh,
empty repository (see tests/test_users.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from accounts.users import EmailTaken, User, UserRepository, new_user_id


def make_user(email: str = "ana@example.com", name: str = "Ana", **changes: object) -> User:
    fields: dict[str, object] = {
        "id": new_user_id(), "email": email, "name": name, "password_hash": "bcrypt-sha256$x",
        "created": round(time.time(), 3), "credentials_version": 1,
    }
    fields.update(changes)
    return User(**fields)  # type: ignore[arg-type]


class UserRepositoryContract:
    @pytest.mark.gen_test
    async def test_add_then_find_by_email_and_id(self, users: UserRepository) -> None:
        user = make_user(name="Zoë 'quoted' \"name\"")
        await users.add(user)
        assert await users.by_email("ana@example.com") == user
        assert await users.by_id(user.id) == user
        assert await users.by_email("bob@example.com") is None
        assert await users.by_id(new_user_id()) is None

    @pytest.mark.gen_test
    async def test_email_is_unique(self, users: UserRepository) -> None:
        await users.add(make_user())
        with pytest.raises(EmailTaken):
            await users.add(make_user(name="Other"))

    @pytest.mark.gen_test
    async def test_concurrent_sign_ups_with_one_email_make_one_user(self, users: UserRepository) -> None:
        attempts = [make_user(name=f"n{i}") for i in range(10)]
        results = await asyncio.gather(*(users.add(u) for u in attempts), return_exceptions=True)
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, EmailTaken) for r in results if r is not None)

    @pytest.mark.gen_test
    async def test_set_name(self, users: UserRepository) -> None:
        user = make_user()
        await users.add(user)
        assert await users.set_name(user.id, "Ana Lima") is True
        assert (await users.by_id(user.id)).name == "Ana Lima"
        assert await users.set_name(new_user_id(), "x") is False

    @pytest.mark.gen_test
    async def test_set_password_bumps_the_credentials_version(self, users: UserRepository) -> None:
        user = make_user()
        await users.add(user)
        assert await users.set_password(user.id, "bcrypt-sha256$new") == 2
        assert await users.set_password(user.id, "bcrypt-sha256$newer") == 3
        stored = await users.by_id(user.id)
        assert stored.password_hash == "bcrypt-sha256$newer" and stored.credentials_version == 3
        assert stored.email == user.email and stored.name == user.name
        assert await users.set_password(new_user_id(), "x") is None

    @pytest.mark.gen_test
    async def test_password_change_is_conditional_on_the_version(self, users: UserRepository) -> None:
        """Two changes made from the same version: exactly one wins, the other writes nothing."""
        user = make_user()
        await users.add(user)
        results = await asyncio.gather(
            *(users.set_password(user.id, f"bcrypt-sha256$racer{i}", expected_version=1) for i in range(6))
        )
        assert sorted(results, key=lambda r: r or 0) == [None] * 5 + [2]
        winner = results.index(2)
        stored = await users.by_id(user.id)
        assert stored.password_hash == f"bcrypt-sha256$racer{winner}" and stored.credentials_version == 2
        assert await users.set_password(user.id, "bcrypt-sha256$late", expected_version=1) is None
        assert (await users.by_id(user.id)).password_hash == f"bcrypt-sha256$racer{winner}"
        assert await users.set_password(user.id, "bcrypt-sha256$next", expected_version=2) == 3

    @pytest.mark.gen_test
    async def test_bumping_the_version_alone_keeps_the_password(self, users: UserRepository) -> None:
        user = make_user()
        await users.add(user)
        assert await users.set_password(user.id, None) == 2
        stored = await users.by_id(user.id)
        assert stored.password_hash == user.password_hash and stored.credentials_version == 2
        assert await users.set_password(new_user_id(), None) is None

    @pytest.mark.gen_test
    async def test_lookups_take_values_not_operators(self, users: UserRepository) -> None:
        await users.add(make_user())
        for probe in ('{"$gt": ""}', "' OR '1'='1", "%", "*", ".*", "ana@example.com\x00"):
            assert await users.by_email(probe) is None
            assert await users.by_id(probe) is None

    @pytest.mark.gen_test
    async def test_set_password_hash_if_replaces_only_the_expected_hash(self, users: UserRepository) -> None:
        """A login's rehash: the hash changes, the version does not, and a changed password is kept."""
        user = make_user()
        await users.add(user)
        assert await users.set_password_hash_if(user.id, "bcrypt-sha256$other", "bcrypt-sha256$lost") is False
        assert await users.set_password_hash_if(user.id, user.password_hash, "bcrypt-sha256$rehashed") is True
        stored = await users.by_id(user.id)
        assert stored.password_hash == "bcrypt-sha256$rehashed" and stored.credentials_version == 1
        # the old hash is no longer the stored one: a second upgrade from it writes nothing
        assert await users.set_password_hash_if(user.id, user.password_hash, "bcrypt-sha256$late") is False
        assert (await users.by_id(user.id)).password_hash == "bcrypt-sha256$rehashed"
        assert await users.set_password_hash_if(new_user_id(), user.password_hash, "x") is False
