"""Session events through MongoDB: a change stream where the server offers one, else polling.

Events are documents of one collection beside the sessions (``<sessions>_events``)::

    {_id: ObjectId, body: <the encoded event>, created: <date>, seq: <int, polling only>}

**Change stream** (replica sets and sharded clusters): every bus watches the
collection for inserts and the server pushes each new document; a publisher only
inserts. Whether the server offers change streams is read from ``hello`` (a
``setName``: a replica set member; ``msg: "isdbgrid"``: mongos); if ``watch()`` is
refused all the same, the bus falls back to polling and says so in the log.

**Polling** (a standalone ``mongod``; FerretDB v1, which has no change streams):
a publisher takes the next number of a counter document (``{_id: "seq", n}``,
``$inc``: the server orders publishers) and inserts the event with it. Each bus
reads the events numbered after the last one it has handled every ``interval``
seconds (0.1), starting from the counter's value when it starts, so old events
are not replayed. ObjectIds would not do as positions: they are made by the
clients, so one process's can be smaller than another's already read. A number
taken but not inserted yet (the publisher is between its two round trips) leaves
a gap: the reader delivers what follows and keeps waiting for the gap up to
``gap_grace`` seconds (a publisher that died between the two steps leaves one for
good), then moves past it.

In both modes events older than ``retention`` seconds (60) are deleted (the server
may have no TTL indexes), by each bus at most once per ``retention / 6`` seconds.

The bus uses the store's client (its pool and timeouts); a change stream holds
one pooled connection for its cursor.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from .listening import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN, ListeningBus, one_line

__all__ = ["MongoBus"]

log = logging.getLogger("sessions")

Mode = Literal["auto", "change_stream", "poll"]

DEFAULT_INTERVAL = 0.1
DEFAULT_RETENTION = 60.0
DEFAULT_GAP_GRACE = 2.0
_BATCH = 500
_COUNTER = "seq"


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class MongoBus(ListeningBus):
    """Events in ``collection`` (PyMongo async or Motor); see the module documentation.

    ``mode`` "auto" detects change streams; "poll" never tries them (and
    "change_stream" refuses to fall back).
    """

    name = "mongodb events"

    def __init__(
        self,
        collection: Any,
        *,
        mode: Mode = "auto",
        interval: float = DEFAULT_INTERVAL,
        retention: float = DEFAULT_RETENTION,
        gap_grace: float = DEFAULT_GAP_GRACE,
        origin: str | None = None,
        retry_min: float = DEFAULT_RETRY_MIN,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        super().__init__(origin=origin, retry_min=retry_min, retry_max=retry_max)
        if mode not in ("auto", "change_stream", "poll"):
            raise ValueError(f"mode must be auto, change_stream or poll, not {mode!r}")
        if interval <= 0 or retention <= 0 or gap_grace < 0:
            raise ValueError("interval and retention must be positive, gap_grace not negative")
        self.collection = collection
        self.mode = mode
        self.interval = float(interval)
        self.retention = float(retention)
        self.gap_grace = float(gap_grace)
        #: "change_stream" or "poll" once known (the first connection or publish).
        self.mode_in_force: Literal["change_stream", "poll"] | None = None
        self._why = ""
        if mode == "poll":
            self._set_mode("poll", "mode='poll'")
        self._stream: Any = None
        self._indexed = False
        self._pruned = 0.0
        #: Polling: every event numbered up to here is handled (or given up); None before the start.
        self._floor: int | None = None
        self._seen: set[int] = set()
        self._gap_since: float | None = None

    @property
    def pushes(self) -> bool:  # type: ignore[override]
        return self.mode_in_force == "change_stream"

    def describe(self) -> str:
        where = self.collection.full_name
        if self.mode_in_force == "change_stream":
            return f"{self.name} (on {where}, pushed by the server)"
        if self.mode_in_force == "poll":
            why = f": {self._why}" if self._why else ""
            return (f"{self.name} (polling {where} every {self.interval:g} s, kept {self.retention:g} s; "
                    f"no change streams{why})")  # fmt: skip
        return f"{self.name} (on {where}; change stream or polling, not connected yet)"

    # -- mode --------------------------------------------------------------------------

    async def _settle_mode(self) -> Literal["change_stream", "poll"]:
        if self.mode_in_force is not None:
            return self.mode_in_force
        hello = await self.collection.database.command("hello")
        if self.mode == "change_stream" or "setName" in hello or hello.get("msg") == "isdbgrid":
            return self._set_mode("change_stream")
        return self._set_mode("poll", "the server is not a replica set or mongos")

    def _set_mode(self, mode: Literal["change_stream", "poll"], why: str = "") -> Literal["change_stream", "poll"]:
        self.mode_in_force, self._why = mode, why
        self.name = "mongodb change stream" if mode == "change_stream" else "mongodb events poll"
        return mode

    async def _ensure_indexes(self) -> None:
        if not self._indexed:
            await self.collection.create_index("created")
            if self.mode_in_force == "poll":
                await self.collection.create_index("seq")
            self._indexed = True

    # -- ListeningBus ------------------------------------------------------------------

    async def _connect(self) -> None:
        if await self._settle_mode() == "change_stream":
            try:
                stream = await _maybe_await(
                    self.collection.watch([{"$match": {"operationType": "insert"}}], max_await_time_ms=1000)
                )
                # Motor starts the stream lazily; one getMore makes a refusal show here.
                first = await stream.try_next()
                self._stream = stream
                if first is not None:
                    self._receive_change(first)
            except OperationFailure as exc:
                if self.mode == "change_stream":
                    raise
                self._set_mode("poll", f"watch() refused: {one_line(exc)}")
                log.info("session events: %s", self.describe())
            else:
                await self._ensure_indexes()
                return
        await self._ensure_indexes()
        if self._floor is None:  # a first start reads from here; a reconnect goes on where it was
            counter = await self.collection.find_one({"_id": _COUNTER})
            self._floor = int(counter["n"]) if counter else 0

    async def _listen(self) -> None:
        if self.mode_in_force == "change_stream":
            await self._follow_stream()
        else:
            while True:
                began = time.monotonic()
                await self._poll()
                await self._prune()
                # A read every ``interval``, however long the read took.
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    async def _follow_stream(self) -> None:
        stream = self._stream
        if stream is None:
            raise ConnectionError("no change stream")
        while True:
            change = await stream.try_next()  # waits up to max_await_time_ms on the server
            if change is not None:
                self._receive_change(change)
            else:
                await self._prune()

    def _receive_change(self, change: Any) -> None:
        self._receive(_body((change.get("fullDocument") or {}).get("body")))

    async def _poll(self) -> None:
        while True:
            floor = self._floor or 0
            cursor = self.collection.find({"seq": {"$gt": floor}}, {"seq": 1, "body": 1}).sort("seq", 1)
            docs = await cursor.to_list(_BATCH)
            for doc in docs:
                seq = doc.get("seq")
                if not isinstance(seq, int) or seq in self._seen:
                    continue
                self._seen.add(seq)
                self._receive(_body(doc.get("body")))
            self._advance()
            if len(docs) < _BATCH or self._seen.issuperset(d.get("seq") for d in docs):
                return

    def _advance(self) -> None:
        """Move the floor over every number handled; past a gap that outlived its grace."""
        floor = self._floor or 0
        while floor + 1 in self._seen:
            floor += 1
            self._seen.discard(floor)
        if self._seen:
            now = time.monotonic()
            if self._gap_since is None:
                self._gap_since = now
            elif now - self._gap_since >= self.gap_grace:
                log.debug("session events: gave up waiting for event %d (never inserted)", floor + 1)
                floor = min(self._seen) - 1
                self._gap_since = None
                self._floor = floor
                self._advance()
                return
        else:
            self._gap_since = None
        self._floor = floor

    async def _prune(self) -> None:
        now = time.time()
        if now - self._pruned >= self.retention / 6:
            self._pruned = now
            cutoff = datetime.fromtimestamp(now - self.retention, UTC)
            await self.collection.delete_many({"created": {"$lt": cutoff}})

    async def _disconnect(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await _maybe_await(stream.close())

    async def _send(self, text: str) -> None:
        created = datetime.now(UTC)
        if await self._settle_mode() == "change_stream":
            await self.collection.insert_one({"body": text, "created": created})
            return
        for attempt in (1, 2):
            try:
                counter = await self.collection.find_one_and_update(
                    {"_id": _COUNTER}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
                )
                break
            except DuplicateKeyError:  # two first publishers created the counter at once
                if attempt == 2:
                    raise
        await self.collection.insert_one({"seq": int(counter["n"]), "body": text, "created": created})


def _body(value: Any) -> str | bytes:
    """A stored body as text for the decoder (anything else decodes as malformed)."""
    return value if isinstance(value, str | bytes) else ""
