"""MongoDB session store on PyMongo's async API, usable with Motor too.

One document per session::

    {_id: <key, already a hash of the session ID>,
     data: {<escaped session key>: <JSON text>, ...},
     expires: <BSON date, idle deadline>, created: <date>, updated: <date>,
     user_id: <str | null, indexed>, meta: {...} (only when non-empty),
     kind: "session" | "remember" | ...}

Why this shape:

* Values stay JSON text, one field per session key, so a save is a single
  ``update_one`` with ``$set``/``$unset`` on ``data.<key>`` fields: concurrent
  requests that change different keys of one session both persist, and nothing is
  ever parsed or pickled here.
* Session keys are escaped (:func:`escape_mongo_field`: ``%`` ``.`` ``$`` NUL
  percent-encoded, the empty key stored as a lone ``%``) because Mongo update paths split on ``.`` and treat a
  leading ``$`` as an operator; a key such as ``"a.b"`` or ``"$where"`` must stay
  one opaque field and round-trip exactly.
* ``expires`` is a BSON date so that MongoDB's TTL monitor can delete expired
  documents. The TTL monitor runs about once a minute and some Mongo-compatible
  servers (FerretDB v1, some cloud "Mongo APIs") have no TTL indexes at all, so
  every read and conditional write also checks ``expires`` itself, and the
  ``interval`` expiry mode prunes from a background task.
* Rate-limit counters (:meth:`MongoStore.hit`) are documents of the same
  collection, ``{_id: "hits|<window slot>|<name>", hits, expires}``: the TTL index
  or prune task that expires sessions expires them too, with no index of their own.
  Their ``_id`` cannot collide with a session's (a 64-digit hex hash).
* BSON dates have millisecond precision: times read back are the stored float
  seconds truncated to the millisecond.
* A document written before records had a ``kind`` has none: it reads back as a
  session, or as the kind an older version put in its ``meta.kind`` (remember-me
  tokens), so no migration is needed.

Only the method subset shared by ``pymongo.AsyncMongoClient`` and Motor is used
(``find_one``, ``replace_one``, ``update_one``, ``find_one_and_update``,
``delete_one``, ``delete_many``, ``find().to_list``, ``create_index``,
``command``), so the store
accepts a client, database or collection of either driver.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

import pymongo
from bson.codec_options import CodecOptions
from bson.errors import BSONError
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from ..bus import EventBus
from .base import KEEP, Clock, Record, Store, StoreError, window_bounds
from .plumbing import DriverErrors, Lifecycle, split_legacy_kind
from .pruning import PruneLoop

__all__ = [
    "DEFAULT_COLLECTION", "DEFAULT_DATABASE", "ExpiryMode", "MongoStore", "escape_mongo_field", "unescape_mongo_field",
]  # fmt: skip

log = logging.getLogger(__name__)

ExpiryMode = Literal["auto", "native", "interval"]

DEFAULT_DATABASE = "tornado_sessions"
DEFAULT_COLLECTION = "sessions"
#: Short timeouts so that a database that is down turns a request into a 503
#: within about two seconds instead of the driver's 30 s default.
DEFAULT_TIMEOUT = 2.0

_EPOCH = datetime(1970, 1, 1)
#: Plain dicts and naive UTC dates, whatever codec the caller's client has: the
#: store turns dates into float seconds at once, and naive decoding is the fastest.
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions()
#: Everything the driver raises: network and server errors, and documents it
#: cannot encode (too large, invalid strings).

_T = TypeVar("_T")


def _bounded(method: Callable[..., Coroutine[Any, Any, _T]]) -> Callable[..., Coroutine[Any, Any, _T]]:
    """Run a store operation under ``pymongo.timeout(store.operation_timeout)``.

    Socket timeouts alone let one call add server selection, a new connection's
    handshake and the command: a hung server answered in three times the timeout.
    (Motor runs operations in threads, where this has no effect; its socket timeouts
    still apply.)
    """

    @functools.wraps(method)
    async def bounded(store: Any, *args: Any, **kwargs: Any) -> _T:
        with pymongo.timeout(store.operation_timeout):
            return await method(store, *args, **kwargs)

    return bounded

_errors = DriverErrors("mongodb", (PyMongoError, BSONError))
#: Server error codes meaning "an index on these keys already exists with other
#: options or another name" (IndexOptionsConflict, IndexKeySpecsConflict).
_INDEX_CONFLICT_CODES = frozenset({85, 86})

def escape_mongo_field(key: str) -> str:
    """Make a session key (or meta name) safe as one Mongo field name (reversible).

    ``%`` is encoded first so that decoding is exact; every other ``%`` in the
    result starts a three-character escape, which leaves a lone ``%`` free to
    stand for the empty key (an empty update path is invalid in Mongo).
    """
    if not key:
        return "%"
    if "%" in key or "." in key or "$" in key or "\x00" in key:
        return key.replace("%", "%25").replace(".", "%2E").replace("$", "%24").replace("\x00", "%00")
    return key


def unescape_mongo_field(field: str) -> str:
    """Invert :func:`escape_mongo_field`."""
    if "%" not in field:
        return field
    if field == "%":
        return ""
    return field.replace("%2E", ".").replace("%24", "$").replace("%00", "\x00").replace("%25", "%")


def _to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _to_timestamp(value: datetime) -> float:
    if value.tzinfo is None:  # BSON dates are UTC; the codec decodes them naive
        return (value - _EPOCH).total_seconds()
    return value.timestamp()


def _url_option_names(url: str) -> set[str]:
    """Lower-cased option names given in a connection URL's query string."""
    _, _, query = url.partition("?")
    return {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}


def _is_motor(obj: object, kind: str) -> bool:
    """True when ``obj`` is a Motor client/database/collection (without importing Motor needlessly).

    Checked by class rather than by attribute, because Motor (like PyMongo)
    answers any unknown attribute with a sub-collection.
    """
    if not type(obj).__module__.startswith("motor"):
        return False
    try:
        import motor.motor_asyncio as motor_asyncio
    except ImportError:  # pragma: no cover - a motor object without motor installed
        return False
    cls = getattr(motor_asyncio, f"AsyncIOMotor{kind}")
    return isinstance(obj, cls)


class MongoStore(Store):
    """Sessions in one MongoDB collection.

    ``target`` is a connection URL, a ``pymongo.AsyncMongoClient``, a Motor
    ``AsyncIOMotorClient``, or a database or collection of either. When given a
    URL the store builds (and on :meth:`close` closes) its own client with short
    timeouts; options in the URL win over the timeout arguments. A client,
    database or collection passed in stays the caller's to close.

    ``database`` defaults to the URL's database, else ``"tornado_sessions"``;
    ``database`` and ``collection`` are ignored when ``target`` is a collection.

    ``expiry_mode``:

    * ``"native"``: a TTL index on ``expires`` (``expireAfterSeconds=0``) lets the
      server delete expired sessions; the store fails if the server refuses it.
    * ``"interval"``: a plain index on ``expires`` and a background task that
      deletes expired sessions every ``prune_interval`` seconds, for servers
      without TTL indexes.
    * ``"auto"`` (default): try native, fall back to interval when the server
      rejects the TTL index; the mode in force is logged and exposed as
      :attr:`expiry_mode_in_force`.

    In every mode reads ignore expired documents, so expiry is exact however
    late the deletion runs. Indexes are created on first use, or earlier with
    :meth:`setup`; creating them is idempotent and safe from several processes.
    """

    name = "mongodb"

    def __init__(
        self,
        target: str | Any,
        *,
        database: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        expiry_mode: ExpiryMode = "auto",
        prune_interval: float = 60.0,
        server_selection_timeout: float | None = None,
        connect_timeout: float | None = None,
        socket_timeout: float | None = None,
        client_options: Mapping[str, Any] | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock=clock)
        if expiry_mode not in ("auto", "native", "interval"):
            raise ValueError(f"expiry_mode must be auto, native or interval, not {expiry_mode!r}")
        if prune_interval <= 0:
            raise ValueError("prune_interval must be positive")
        #: The whole of one operation (server selection, connecting, the command and any
        #: retry) within this many seconds: PyMongo's client-side operation timeout.
        self.operation_timeout = float(DEFAULT_TIMEOUT if socket_timeout is None else socket_timeout)
        self.expiry_mode: ExpiryMode = expiry_mode
        #: "native" or "interval" once :meth:`setup` has run; None before.
        self.expiry_mode_in_force: Literal["native", "interval"] | None = None
        self.prune_interval = float(prune_interval)
        self._owned_client: AsyncMongoClient[dict[str, Any]] | None = None

        if isinstance(target, str):
            options = _url_option_names(target)
            kwargs: dict[str, Any] = {"appname": "tornado-sessions"}
            for name, value in (
                ("serverSelectionTimeoutMS", server_selection_timeout),
                ("connectTimeoutMS", connect_timeout),
                ("socketTimeoutMS", socket_timeout),
            ):
                if value is not None or name.lower() not in options:
                    kwargs[name] = int(1000 * (DEFAULT_TIMEOUT if value is None else value))
            # A retried operation after a socket timeout waits a second timeout: a hung
            # server would answer in twice the promised time. One try, then a 503 (the
            # client retries); a URL or client_options may turn retries back on.
            for name in ("retryReads", "retryWrites"):
                if name.lower() not in options:
                    kwargs[name] = False
            kwargs.update(client_options or {})
            client = AsyncMongoClient(target, **kwargs)
            self._owned_client = client
            db = client[database] if database else client.get_default_database(DEFAULT_DATABASE)
            coll = db[collection]
        elif isinstance(target, AsyncMongoClient) or _is_motor(target, "Client"):
            db = target[database] if database else target.get_default_database(DEFAULT_DATABASE)
            coll = db[collection]
        elif isinstance(target, AsyncDatabase) or _is_motor(target, "Database"):
            coll = target[collection]
        elif isinstance(target, AsyncCollection) or _is_motor(target, "Collection"):
            coll = target
        else:
            raise TypeError(
                "MongoStore needs a mongodb:// URL or an async client, database or "
                f"collection (pymongo.AsyncMongoClient or Motor), not {type(target).__name__}"
            )

        self._collection = coll.with_options(codec_options=_CODEC)
        self._lifecycle = Lifecycle(self.name, self._prepare)
        self._pruner: PruneLoop | None = None

    # -- public extras -------------------------------------------------------

    @property
    def expires_natively(self) -> bool:
        """Always: a TTL index, or this store's own prune task in interval mode."""
        return True

    def describe(self) -> str:
        mode = self.expiry_mode_in_force or f"{self.expiry_mode}, not set up yet"
        detail = {"native": "TTL index", "interval": f"pruned every {self.prune_interval:g} s by the store"}
        return f"{self.name} {self._collection.full_name} (expiry: {detail.get(mode, mode)})"

    @property
    def collection(self) -> Any:
        """The sessions collection (pymongo or Motor), e.g. for admin tooling."""
        return self._collection

    @property
    def database(self) -> Any:
        """The database holding the sessions, so an app can keep its other collections beside them."""
        return self._collection.database

    @_errors.ready_first
    @_bounded
    async def setup(self) -> None:
        """Create the indexes and choose the expiry mode now rather than on first use.

        Raises StoreError when the server cannot be reached (a later call retries).
        """

    # -- Store interface -----------------------------------------------------

    @_errors.ready_first
    @_bounded
    async def load(self, key: str) -> Record | None:
        # Fetch by _id alone and check expiry here: an _id-only query is the fastest
        # path on MongoDB (and the only one FerretDB's SQLite backend pushes down),
        # and an expired document is never returned either way.
        doc = await self._collection.find_one({"_id": key})
        if doc is None:
            return None
        record = self._record(doc)
        if record.expires <= self.clock():
            return None
        return record

    @_errors.ready_first
    @_bounded
    async def create(self, key: str, record: Record) -> None:
        doc: dict[str, Any] = {
            "_id": key,
            "data": {escape_mongo_field(k): v for k, v in record.data.items()},
            "expires": _to_datetime(record.expires),
            "created": _to_datetime(record.created),
            "updated": _to_datetime(record.updated),
            "user_id": record.user_id,
            "kind": record.kind,
        }
        if record.meta:
            doc["meta"] = {escape_mongo_field(k): v for k, v in record.meta.items()}
        # Replace whatever is stored under this key (a regenerated session reusing a
        # key must not keep stale fields); one round trip either way.
        await self._collection.replace_one({"_id": key}, doc, upsert=True)

    @_errors.ready_first
    @_bounded
    async def update(
        self,
        key: str,
        *,
        set_items: Mapping[str, str],
        unset_keys: Iterable[str],
        expires: float,
        updated: float,
        user_id: str | None = KEEP,
        meta: Mapping[str, str] = KEEP,
    ) -> bool:
        """One conditional ``update_one``; a key both set and unset ends up unset, as in the other stores."""
        removed = {f"data.{escape_mongo_field(k)}": "" for k in unset_keys}
        changes: dict[str, Any] = {
            field: v
            for field, v in ((f"data.{escape_mongo_field(k)}", v) for k, v in set_items.items())
            if field not in removed
        }
        changes["expires"] = _to_datetime(expires)
        changes["updated"] = _to_datetime(updated)
        if user_id is not KEEP:
            changes["user_id"] = user_id
        spec: dict[str, Any] = {"$set": changes}
        if meta is not KEEP:
            if meta:
                changes["meta"] = {escape_mongo_field(k): v for k, v in meta.items()}
            else:
                removed["meta"] = ""
        if removed:
            spec["$unset"] = removed
        result = await self._collection.update_one(
            {"_id": key, "expires": {"$gt": _to_datetime(self.clock())}}, spec
        )
        return result.matched_count == 1

    @_errors.ready_first
    @_bounded
    async def take(self, key: str, names: Iterable[str]) -> dict[str, str] | None:
        """One ``find_one_and_update``: the server unsets the fields and hands back their old values.

        A single-document write is atomic on MongoDB, so of two concurrent takes of one
        field only the first sees it.
        """
        wanted = {escape_mongo_field(name) for name in names}
        fields = {f"data.{field}": "" for field in wanted}
        if not fields:
            return {} if await self.load(key) is not None else None
        before = await self._collection.find_one_and_update(
            {"_id": key, "expires": {"$gt": _to_datetime(self.clock())}},
            {"$unset": fields},
            # No projection: FerretDB v1 does not implement one on findAndModify, and a
            # session document is small.
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            return None
        return {unescape_mongo_field(k): v for k, v in (before.get("data") or {}).items() if k in wanted}

    @_errors.ready_first
    @_bounded
    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        result = await self._collection.update_one(
            {"_id": key, "expires": {"$gt": _to_datetime(self.clock())}},
            {"$set": {"expires": _to_datetime(expires), "updated": _to_datetime(updated)}},
        )
        return result.matched_count == 1

    @_errors.ready_first
    @_bounded
    async def destroy(self, key: str) -> None:
        await self._collection.delete_one({"_id": key})

    @_errors.ready_first
    @_bounded
    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        """Delete through the ``user_id`` index; expired, unpruned sessions go too."""
        result = await self._collection.delete_many(self._user_query(user_id, keep=keep))
        return result.deleted_count

    @_errors.ready_first
    @_bounded
    async def list_user(self, user_id: str, *, kind: str | None = None) -> list[tuple[str, Record]]:
        now = self.clock()
        cursor = self._collection.find({"user_id": user_id, "expires": {"$gt": _to_datetime(now)}})
        docs = await cursor.to_list(None)
        # A user has a handful of sessions: sorting here needs no extra index.
        items = [(doc["_id"], self._record(doc)) for doc in docs]
        items = [(k, r) for k, r in items if r.expires > now and kind in (None, r.kind)]
        items.sort(key=lambda item: (item[1].created, item[1].updated, item[0]), reverse=True)
        return items

    @_errors.ready_first
    @_bounded
    async def hit(self, name: str, window: float) -> tuple[int, float]:
        """One upserting ``find_one_and_update`` with ``$inc``: atomic on the server."""
        slot, end = window_bounds(self.clock(), window)
        doc = await self._collection.find_one_and_update(
            {"_id": f"hits|{slot}|{name}"},
            {"$inc": {"hits": 1}, "$setOnInsert": {"expires": _to_datetime(end)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None  # an upsert that returns the document after always has one
        return int(doc["hits"]), end

    @_errors.ready_first
    @_bounded
    async def reset_hits(self, name: str, window: float) -> None:
        slot, _ = window_bounds(self.clock(), window)
        await self._collection.delete_one({"_id": f"hits|{slot}|{name}"})

    @_errors.ready_first
    @_bounded
    async def prune(self) -> int:
        result = await self._collection.delete_many({"expires": {"$lte": _to_datetime(self.clock())}})
        return result.deleted_count

    @_errors.ready_first
    @_bounded
    async def alive(self, keys: Iterable[str]) -> set[str]:
        """One ``find`` with ``$in`` on ``_id`` and ``expires`` after now, projecting ``_id`` only."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        query = {"_id": {"$in": wanted}, "expires": {"$gt": _to_datetime(self.clock())}}
        docs = await self._collection.find(query, {"_id": 1}).to_list(len(wanted))
        return {doc["_id"] for doc in docs}

    def event_bus(self) -> EventBus:
        """A change stream where the server offers one, else a polled events collection, both
        on ``<collection>_events`` (:mod:`sessions.buses.mongo`)."""
        from ..buses.mongo import MongoBus

        return MongoBus(self._collection.database[f"{self._collection.name}_events"])

    @_errors
    @_bounded
    async def ping(self) -> None:
        await self._collection.database.command("ping")

    async def close(self) -> None:
        """Stop the prune task and close the client if this store built it; later calls fail."""
        self._lifecycle.close()
        pruner, self._pruner = self._pruner, None
        if pruner is not None:
            await pruner.stop()
        client, self._owned_client = self._owned_client, None
        if client is not None:
            await client.close()

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _user_query(user_id: str, *, keep: str | None = None) -> dict[str, Any]:
        """The filter of destroy_user (the user_id index serves it); tests explain it."""
        query: dict[str, Any] = {"user_id": user_id}
        if keep is not None:
            query["_id"] = {"$ne": keep}
        return query

    @staticmethod
    def _record(doc: Mapping[str, Any]) -> Record:
        kind, meta = split_legacy_kind(
            doc.get("kind"), {unescape_mongo_field(k): v for k, v in (doc.get("meta") or {}).items()}
        )
        return Record(
            data={unescape_mongo_field(k): v for k, v in (doc.get("data") or {}).items()},
            created=_to_timestamp(doc["created"]),
            updated=_to_timestamp(doc["updated"]),
            expires=_to_timestamp(doc["expires"]),
            user_id=doc.get("user_id"),
            meta=meta,
            kind=kind,
        )

    async def _prepare(self) -> None:
        """Once, before the first operation (see :class:`Lifecycle`): indexes, expiry mode, prune task."""
        await self._create_indexes()
        if self.expiry_mode_in_force == "interval" and self._pruner is None:
            self._pruner = PruneLoop(self.prune, self.prune_interval, name=f"mongo-prune:{self._collection.full_name}")
            self._pruner.start()

    async def _create_indexes(self) -> None:
        """Create the user_id and expires indexes and settle the expiry mode.

        ``create_index`` is idempotent for an identical spec, so several processes
        starting at once all succeed.
        """
        coll = self._collection
        await coll.create_index("user_id")
        mode: ExpiryMode = self.expiry_mode
        refused = ""
        if mode in ("auto", "native"):
            try:
                await coll.create_index("expires", expireAfterSeconds=0)
            except OperationFailure as exc:
                # The server answered but refused: no TTL support (FerretDB v1 says
                # NotImplemented), or an existing non-TTL index on expires.
                if mode == "native":
                    raise StoreError(
                        f"expiry_mode='native' but the server refused a TTL index on "
                        f"{coll.full_name}.expires: {exc}; use expiry_mode='interval' or 'auto'"
                    ) from exc
                mode = "interval"
                refused = f"; the server refused a TTL index: {(exc.details or {}).get('errmsg', exc)}"
            else:
                mode = "native"
        if mode == "interval":
            try:
                await coll.create_index("expires")
            except OperationFailure as exc:
                if exc.code not in _INDEX_CONFLICT_CODES:
                    raise
                # An index on expires already exists (a TTL one, say): prune uses it.
        self.expiry_mode_in_force = "native" if mode == "native" else "interval"
        detail = "TTL index" if mode == "native" else f"pruned every {self.prune_interval:g} s{refused}"
        log.info("MongoDB session store on %s: expiry mode %s (%s)", coll.full_name, mode, detail)
