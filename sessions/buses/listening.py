"""What every bus with a listening connection of its own shares.

:class:`ListeningBus` holds the parts of an :class:`~sessions.bus.EventBus` that do
not depend on the server:

* its **origin**: events it publishes carry it, and events that come back with it
  are not delivered (this process handled them when it published). It is
  :func:`~sessions.bus.process_id` (worked out per process, after a fork too) unless told otherwise, which is how a test runs
  two "processes" in one.
* a **listener task** that connects, listens until the connection fails, then
  reconnects with exponential backoff (with jitter, up to ``retry_max`` seconds) and
  calls ``on_resync`` after every reconnect: events sent while it was cut off are
  lost, and the receiver re-checks what it holds. A first connection that fails at
  :meth:`start` is retried the same way (and ``on_resync`` runs once it succeeds).
* **publish** that raises :class:`~sessions.bus.MalformedEvent` for an event over
  the size limit (the caller's bug) and only logs a server failure.
* **receive**: a malformed or oversized message is dropped with a log line, a
  receiver that raises is logged; neither stops the listener.

A subclass implements four coroutines: :meth:`_connect` (open the listening
connection and subscribe, returning only once events published from now on will
be heard), :meth:`_listen` (hand every message to :meth:`_receive`; return or raise
when the connection is lost), :meth:`_disconnect` and :meth:`_send`.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable

from ..bus import BusEvent, Deliver, EventBus, MalformedEvent, process_id
from ..stores.pruning import stop_task

__all__ = ["ListeningBus", "one_line"]

log = logging.getLogger("sessions")

#: First and longest wait between reconnection attempts (seconds).
DEFAULT_RETRY_MIN = 0.1
DEFAULT_RETRY_MAX = 5.0


def one_line(exc: BaseException) -> str:
    """An exception as one log-friendly line: its type and text, no line breaks."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ListeningBus(EventBus):
    """An event bus with a listening connection of its own that reconnects by itself."""

    def __init__(
        self,
        *,
        origin: str | None = None,
        retry_min: float = DEFAULT_RETRY_MIN,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        if retry_min <= 0 or retry_max < retry_min:
            raise ValueError("retry_min must be positive and retry_max at least retry_min")
        #: Published events carry it; received events carrying it are not delivered.
        self._origin = origin
        self.retry_min = float(retry_min)
        self.retry_max = float(retry_max)
        #: True while the listening connection is up.
        self.connected = False
        #: How many times the listener reconnected (for tests and metrics).
        self.reconnects = 0
        self._deliver: Deliver | None = None
        self._on_resync: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -- EventBus ----------------------------------------------------------------

    @property
    def origin(self) -> str:
        """What this bus's events carry: the given origin, else this process's id (asked each
        time, so a bus made before ``fork()`` still tells the workers apart)."""
        return self._origin if self._origin is not None else process_id()

    @origin.setter
    def origin(self, value: str) -> None:
        self._origin = value

    async def start(self, deliver: Deliver, on_resync: Callable[[], None]) -> None:
        """Connect and subscribe, then listen in a task; a server that is down is retried there."""
        if self._started:
            return
        if self._closed:
            raise RuntimeError(f"the {self.name} bus is closed")
        self._started = True
        self._deliver, self._on_resync = deliver, on_resync
        try:
            await self._connect()
        except Exception as exc:  # a driver's error, whatever it is: retried in the background
            log.warning("session events: %s; cannot connect (%s), retrying in the background",
                        self.describe(), one_line(exc))  # fmt: skip
            await self._disconnect_quietly()
        else:
            self.connected = True
            log.info("session events: %s", self.describe())
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"event-bus:{self.name}")

    async def publish(self, event: BusEvent) -> None:
        """Send ``event`` under this bus's origin; MalformedEvent when it is too large, a log line
        when the server fails (the receivers' periodic re-check is the safety net)."""
        if event.origin != self.origin:
            event = dataclasses.replace(event, origin=self.origin)
        text = event.encode()
        try:
            await self._send(text)
        except Exception as exc:  # an outage: never the caller's problem
            log.warning("session event %s not published (%s): %s", event.kind, self.name, one_line(exc))

    async def close(self) -> None:
        """Stop the listener and close its connection (idempotent)."""
        self._closed = True
        task, self._task = self._task, None
        await stop_task(task)
        self.connected = False
        await self._disconnect_quietly()

    # -- for subclasses ------------------------------------------------------------

    def _receive(self, text: str | bytes) -> None:
        """Decode one message and deliver it unless it is this bus's own; drop a bad one."""
        try:
            event = BusEvent.decode(text)
        except MalformedEvent as exc:
            log.warning("session event dropped (%s): %s", self.name, exc)
            return
        if event.origin == self.origin or self._deliver is None:
            return
        try:
            self._deliver(event)
        except Exception:  # a receiver's bug must not stop the listener
            log.exception("session event receiver failed on %s", event.kind)

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Open the listening connection; return once later events will be heard."""

    @abc.abstractmethod
    async def _listen(self) -> None:
        """Pass every message to :meth:`_receive` until the connection fails (raise) or ends."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the listening connection (it may be half open or already gone)."""

    @abc.abstractmethod
    async def _send(self, text: str) -> None:
        """Send one encoded event; driver errors are raised (publish logs them)."""

    # -- the listener ----------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self.connected:
                try:
                    await self._connect()
                except Exception as exc:
                    await self._disconnect_quietly()
                    delay = self._delay(failures)
                    failures += 1
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "session events (%s): reconnecting failed (%s); next try in %.2f s",
                            self.name, one_line(exc), delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    continue
                self.connected = True
                self.reconnects += 1
                log.info("session events: reconnected: %s; re-checking what may have been missed", self.describe())
                self._resync()
            since = time.monotonic()
            try:
                await self._listen()
                reason = "the listener stopped"
            except Exception as exc:
                reason = one_line(exc)
            self.connected = False
            log.warning("session events (%s): connection lost (%s); reconnecting", self.name, reason)
            await self._disconnect_quietly()
            if time.monotonic() - since > self.retry_max:
                failures = 0  # a long-lived connection: reconnect at once
            else:  # one that fails again and again right after connecting backs off
                await asyncio.sleep(self._delay(failures))
                failures += 1

    def _delay(self, failures: int) -> float:
        """Exponential backoff with jitter: about retry_min, doubling, at most retry_max."""
        growth: float = 2.0 ** min(failures, 30)
        return min(self.retry_max, self.retry_min * growth) * random.uniform(0.5, 1.0)

    def _resync(self) -> None:
        if self._on_resync is None:
            return
        try:
            self._on_resync()
        except Exception:
            log.exception("session events: on_resync failed")

    async def _disconnect_quietly(self) -> None:
        try:
            await self._disconnect()
        except Exception as exc:  # closing a broken connection may fail too
            log.debug("session events (%s): closing the connection failed: %s", self.name, one_line(exc))
