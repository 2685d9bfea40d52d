"""Login and registration rate limits, counted in the session store.

Counters live in the store (:meth:`sessions.Store.hit`), so every server process
shares them: with four workers an attacker gets the same number of guesses as with
one. Two limits apply to a login: per client address (every attempt counts) and per
account (every attempt on that account counts; a successful login clears that
account's counter, and only that one's). Account names are hashed before they reach
the store, so the counter table holds no email addresses.

The per-account limit is also a way to lock a victim out for one window by guessing
wrong on purpose; the window is short (15 minutes by default) for that reason, and
the per-address limit is what stops a single client guessing across many accounts.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from sessions import Store


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``hits`` in each fixed window of ``window`` seconds."""

    hits: int
    window: float

    def __post_init__(self) -> None:
        if self.hits < 1 or self.window <= 0:
            raise ValueError("a limit needs hits >= 1 and a positive window")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``"20/300"``: 20 hits per 300 seconds (for flags and environment variables)."""
        hits, sep, window = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(hits), float(window))
        except ValueError:
            raise ValueError(f"a limit is HITS/SECONDS, such as 20/300, not {text!r}") from None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of counting one attempt, with what the RateLimit headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the (most restrictive) window ends

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (IETF draft), plus ``Retry-After`` when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_after)
        return headers


def wait_words(seconds: float) -> str:
    """How long to wait, as a person would say it: "40 seconds", "1 minute", "15 minutes", "1 hour"."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 90:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(minutes / 60)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def _account_name(action: str, account: str) -> str:
    digest = hashlib.sha256(account.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{action}:acct:{digest}"


class RateLimiter:
    """Counts attempts per client address and per account for one kind of action."""

    def __init__(self, store: Store, action: str, *, per_address: Limit, per_account: Limit | None = None) -> None:
        self.store = store
        self.action = action
        self.per_address = per_address
        self.per_account = per_account

    async def attempt(self, address: str, account: str | None = None) -> Decision:
        """Count one attempt; the decision of the most restrictive limit."""
        now = self.store.clock()
        checks = [(f"{self.action}:ip:{address}", self.per_address)]
        if account is not None and self.per_account is not None:
            checks.append((_account_name(self.action, account), self.per_account))
        decisions = []
        for name, limit in checks:
            count, ends = await self.store.hit(name, limit.window)
            reset_after = max(1, math.ceil(ends - now))
            decisions.append(Decision(count <= limit.hits, limit.hits, max(0, limit.hits - count), reset_after))
        refused = [d for d in decisions if not d.allowed]
        if refused:
            return max(refused, key=lambda d: d.reset_after)
        return min(decisions, key=lambda d: (d.remaining, -d.reset_after))

    async def succeeded(self, account: str) -> None:
        """Clear this account's counter (a correct password ends its run of failures)."""
        if self.per_account is not None:
            await self.store.reset_hits(_account_name(self.action, account), self.per_account.window)
