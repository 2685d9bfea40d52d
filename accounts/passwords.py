"""Password hashing with bcrypt, off the event loop, with no silent truncation.

bcrypt reads at most 72 bytes of its input (bcrypt 5 raises beyond that), so a long
passphrase would either fail or lose its tail. Every password is therefore first
hashed with SHA-256 and base64-encoded (44 ASCII bytes, no NUL), and that string is
what bcrypt hashes: every character of a long passphrase counts, and nothing is cut
("bcrypt-sha256", as passlib and Django's BCryptSHA256 do it). Stored hashes carry
the scheme name so that a later change of scheme can be recognised.

bcrypt at cost 12 takes about a quarter of a second of CPU; it runs in a small
thread pool (the bcrypt package releases the GIL while hashing), never on the event
loop, so one login does not stall every other request of the process. The pool has
one thread per CPU this process may run on (not per CPU of the machine), and its
threads run at a lower priority (``nice``, Linux): when logins and page loads compete
for a core, the page loads win and the logins wait, instead of every reader's latency
tail growing with the login rate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import bcrypt

SCHEME = "bcrypt-sha256$"
DEFAULT_COST = 12
MIN_LENGTH = 10
#: Longer is refused before any hashing: a 1 MB "password" is a request to stall us.
MAX_LENGTH = 1024
#: How much lower than the event loop the hashing threads run (Linux thread nice).
HASHING_NICENESS = 10


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: taskset, cgroups), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _lower_priority(niceness: int) -> None:
    """Thread initializer: make this hashing thread yield the CPU to request handling."""
    with contextlib.suppress(AttributeError, OSError, PermissionError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class PasswordPolicyError(ValueError):
    """The password is too short or too long; the message says which, for the user."""


def check_policy(password: str) -> None:
    """Raise PasswordPolicyError when ``password`` is not acceptable as a new password."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"the password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"the password must be at most {MAX_LENGTH} characters long")


def _prehash(password: str) -> bytes:
    digest = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
    return base64.b64encode(digest)  # 44 bytes: under bcrypt's 72, and no NUL bytes


class PasswordHasher:
    """Hash and verify passwords in a thread pool; verify unknown users against a dummy hash."""

    def __init__(
        self,
        cost: int = DEFAULT_COST,
        *,
        workers: int | None = None,
        niceness: int = HASHING_NICENESS,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        if not 4 <= cost <= 31:
            raise ValueError("bcrypt cost must be between 4 and 31")
        self.cost = cost
        #: Called with the seconds each hash or check took in the pool (for metrics).
        self.observe = observe
        self._pool = ThreadPoolExecutor(
            max_workers=workers or min(4, usable_cpus()),
            thread_name_prefix="bcrypt",
            initializer=_lower_priority,
            initargs=(niceness,),
        )
        # Same cost as real hashes: checking an unknown email takes as long as a wrong password.
        self._dummy = self._hash_sync(base64.b64encode(os.urandom(18)).decode())

    def _hash_sync(self, password: str) -> str:
        return SCHEME + bcrypt.hashpw(_prehash(password), bcrypt.gensalt(self.cost)).decode("ascii")

    def _timed(self, fn: Callable[..., object], *args: object) -> object:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)

    @staticmethod
    def _verify_sync(password: str, stored: str) -> bool:
        if not stored.startswith(SCHEME):
            return False
        try:
            return bcrypt.checkpw(_prehash(password), stored[len(SCHEME) :].encode("ascii"))
        except ValueError:  # a corrupt stored hash: no match, never a 500
            return False

    async def hash(self, password: str) -> str:
        """The stored form of a new password (call :func:`check_policy` first)."""
        stored = await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, self._hash_sync, password)
        return str(stored)

    async def verify(self, password: str, stored: str | None) -> bool:
        """True when ``password`` matches ``stored``; with None (no such user) hashes anyway, then False."""
        if len(password) > MAX_LENGTH:
            return False
        target = stored if stored is not None else self._dummy
        matched = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._timed, self._verify_sync, password, target
        )
        return bool(matched) and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with another cost (rehash it at the next login)."""
        try:
            cost = int(stored[len(SCHEME) :].split("$")[2])
        except (IndexError, ValueError):
            return True
        return cost != self.cost

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
