"""Users in a MongoDB database, collection ``users`` (``mongodb://``: by default the session store's).

With ``share`` (a :class:`MongoStore`), the collection lives in the store's database
through its public ``database`` property ("so an app can keep its other collections
beside them"); otherwise the repository opens its own client from the URL (a
``MongoStore`` of its own, for the same short timeouts) and closes it in :meth:`close`.

``_id`` is the user id; a unique index on ``email`` makes registration atomic (two
sign-ups with one address: one gets DuplicateKeyError, answered as 409). Queries
take plain strings only: the handlers validate types before anything gets here.
"""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from sessions import Store, StoreError
from sessions.stores.mongo import MongoStore

from ..users import EmailTaken, User, UserRepository

COLLECTION = "users"


class MongoUsers(UserRepository):
    def __init__(self, database: Any, collection: str = COLLECTION, *, owner: Store | None = None) -> None:
        self._users = database[collection]
        self._ready = False
        self._owner = owner  # the connection opened for this repository alone

    @classmethod
    def from_url(
        cls, url: str, *, share: Store | None = None, database: str | None = None, collection: str = COLLECTION
    ) -> MongoUsers:
        if share is not None:
            if not isinstance(share, MongoStore):
                raise TypeError(f"MongoUsers can share a MongoStore's connection, not a {type(share).__name__}")
            return cls(share.database, collection)
        own = MongoStore(url, database=database)
        return cls(own.database, collection, owner=own)

    async def close(self) -> None:
        if self._owner is not None:
            owner, self._owner = self._owner, None
            await owner.close()

    async def setup(self) -> None:
        try:
            await self._users.create_index("email", unique=True)
        except PyMongoError as exc:
            raise StoreError(f"mongodb users: {exc}") from exc
        self._ready = True

    async def _ensure(self) -> None:
        if not self._ready:
            await self.setup()

    @staticmethod
    def _user(doc: dict[str, Any] | None) -> User | None:
        if doc is None:
            return None
        return User(
            doc["_id"], doc["email"], doc["name"], doc["password_hash"], float(doc["created"]),
            int(doc.get("credentials_version", 1)),
        )

    async def _call(self, op: Any) -> Any:
        try:
            await self._ensure()
            return await op()
        except DuplicateKeyError:
            raise
        except PyMongoError as exc:
            raise StoreError(f"mongodb users: {type(exc).__name__}: {exc}") from exc

    async def add(self, user: User) -> None:
        doc = {
            "_id": user.id, "email": user.email, "name": user.name, "password_hash": user.password_hash,
            "created": user.created, "credentials_version": user.credentials_version,
        }
        try:
            await self._call(lambda: self._users.insert_one(doc))
        except DuplicateKeyError as exc:
            raise EmailTaken(user.email) from exc

    async def by_email(self, email: str) -> User | None:
        return self._user(await self._call(lambda: self._users.find_one({"email": str(email)})))

    async def by_id(self, user_id: str) -> User | None:
        return self._user(await self._call(lambda: self._users.find_one({"_id": str(user_id)})))

    async def set_name(self, user_id: str, name: str) -> bool:
        result = await self._call(lambda: self._users.update_one({"_id": str(user_id)}, {"$set": {"name": name}}))
        return bool(result.matched_count == 1)

    async def set_password_hash_if(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        result = await self._call(
            lambda: self._users.update_one(
                {"_id": str(user_id), "password_hash": str(old_hash)}, {"$set": {"password_hash": new_hash}}
            )
        )
        return bool(result.matched_count == 1)

    async def set_password(
        self, user_id: str, password_hash: str | None, *, expected_version: int | None = None
    ) -> int | None:
        query: dict[str, Any] = {"_id": str(user_id)}
        if expected_version is not None:
            version: dict[str, Any] = {"credentials_version": int(expected_version)}
            # Users stored before the field existed are at version 1.
            query["$or"] = [version, {"credentials_version": {"$exists": False}}] if expected_version == 1 else [version]
        change: dict[str, Any] = {"$inc": {"credentials_version": 1}}
        if password_hash is not None:
            change["$set"] = {"password_hash": password_hash}
        doc = await self._call(
            lambda: self._users.find_one_and_update(query, change, return_document=ReturnDocument.AFTER)
        )
        return None if doc is None else int(doc["credentials_version"])
