"""Users in Redis (standalone or Cluster; ``redis://``, ``redis+cluster://``), by default next to the sessions.

With ``share`` (a :class:`RedisStore`), the repository uses the store's ``client``,
``prefix`` and ``ensure_connected``, which the store documents for such companions;
otherwise it opens a client of its own from the URL (a ``RedisStore`` of its own,
for the same timeouts and cluster discovery) and closes it in :meth:`close`.

Key layout, under the key prefix (the session store's) (``sess:`` by default)::

    <prefix>account:{<id>}           hash: one user
        email, name, password_hash   text
        created                      float Unix seconds, as text
        credentials_version          integer
    <prefix>email:{<sha256(email)>}  string "<id> <claimed_ms>": the address's owner

``account:`` and ``email:`` keep these keys apart from the store's own families
(``<prefix>{<session>}``, ``<prefix>user:{<user id>}`` — the index of a user's
sessions, which is why a user's record is not called ``user:`` — and
``<prefix>hits:...``). The email key is named by a hash of the normalised address,
so that any address, braces included, makes a fixed-size key with a harmless hash
tag. ``<claimed_ms>`` is the server's time (``TIME``) when the address was claimed.

Email uniqueness across slots. In a cluster the user's hash and the email key are
in different slots, so no single command or script can write both. Registration is
therefore three steps, each atomic on its own key:

1. *Claim* the address: create the email key only if it does not exist (the
   ``SET NX`` of a script). Redis runs commands on one key one at a time, so of
   any number of concurrent sign-ups with one address exactly one claims it; the
   others get :class:`EmailTaken`. This step is the uniqueness guarantee.
2. *Create* the user hash, only if that id is not taken (a script).
3. If step 2 fails or refuses, *release* the claim: delete the email key only if
   it still holds this claim (compare-and-delete script), so a claim somebody else
   made meanwhile is never dropped. A step 2 that failed with an error (a timeout
   can come after the server ran it) is undone first, and the claim is released
   only once the undo succeeded: a user is never left without its claim.

Why that is correct: a user hash is created only by the holder of its address's
claim, after claiming, so two users can never hold one address; and a reader
(:meth:`RedisUsers.by_email`) follows email key → id → hash and checks that the
hash names that email, so it never sees a half-registered user (a claim whose hash
does not exist yet reads as "no such user"). The only thing a crash between the
steps can leave is a claim without a user (steps 1 done, 2 or 3 not). Such an
orphan would lock the address out for good, so a sign-up that meets a claim whose
user does not exist and which is older than ``claim_grace`` seconds (60 by
default; each step takes milliseconds, bounded by the client's 2 s timeout) takes
it over with a compare-and-set on the claim's exact value, so two such sign-ups
cannot both win. A registration stalled for longer than ``claim_grace`` between
steps 1 and 2 might lose its claim this way; the add then checks its claim after
step 2, and removes its user and answers EmailTaken if it lost it.

Changes to a user are scripts on the user's own key that do nothing when the hash
is missing, so a change never creates a partial user; ``set_password`` writes the
hash and ``HINCRBY``\\ s ``credentials_version`` in one script.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from sessions import Store, StoreError
from sessions.stores.plumbing import DriverErrors
from sessions.stores.redis import DEFAULT_PREFIX, RedisStore

from ..users import EmailTaken, User, UserRepository

__all__ = ["DEFAULT_CLAIM_GRACE", "RedisUsers"]

#: Seconds after which a claimed address whose user never appeared may be taken over.
DEFAULT_CLAIM_GRACE = 60.0

_ERRORS = (RedisError, RedisClusterException, OSError, UnicodeError, TimeoutError)
#: The library's translation, incl. redis-py's cluster AttributeError on a closed connection.
_DRIVER = DriverErrors("redis users", _ERRORS, driver_bugs=(AttributeError,), driver_package="redis")
_T = TypeVar("_T")

#: CLAIM: KEYS[1] email key; ARGV: id, grace_ms, expected ('' for "must not exist",
#: else the exact claim value to take over when it is older than grace_ms).
#: Returns {1, new value} when claimed, {0, current value or false} when not.
_CLAIM = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local value = ARGV[1] .. ' ' .. string.format('%d', now)
local current = redis.call('GET', KEYS[1])
if not current then
  if ARGV[3] ~= '' then return {0, false} end
  redis.call('SET', KEYS[1], value)
  return {1, value}
end
if ARGV[3] ~= '' and current == ARGV[3] then
  local claimed = tonumber(string.match(current, ' (%d+)$'))
  if claimed and now - claimed > tonumber(ARGV[2]) then
    redis.call('SET', KEYS[1], value)
    return {1, value}
  end
end
return {0, current}
"""

#: RELEASE: KEYS[1] email key; ARGV[1] the claim value. Deletes only that claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: CREATE: KEYS[1] user hash; ARGV: field/value pairs. 0 when the id is taken.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

#: DELETE_IF_EMAIL: KEYS[1] user hash; ARGV[1] email. Undo of a create that lost its claim.
_DELETE_IF_EMAIL = """
if redis.call('HGET', KEYS[1], 'email') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: SET_NAME: KEYS[1] user hash; ARGV[1] name. 0 when there is no such user.
_SET_NAME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1])
return 1
"""

#: SET_HASH_IF: KEYS[1] user hash; ARGV[1] the expected hash, ARGV[2] the new one. 1 when replaced.
_SET_HASH_IF = """
if redis.call('HGET', KEYS[1], 'password_hash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'password_hash', ARGV[2])
return 1
"""

#: SET_PASSWORD: KEYS[1] user hash; ARGV[1] hash ('' keeps it), ARGV[2] the expected
#: version ('' for any). The new version, or false (no user, or the version moved on).
_SET_PASSWORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[2] ~= '' then
  local current = redis.call('HGET', KEYS[1], 'credentials_version') or '1'
  if current ~= ARGV[2] then return false end
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'password_hash', ARGV[1]) end
return redis.call('HINCRBY', KEYS[1], 'credentials_version', 1)
"""


def _text(value: str | bytes) -> str:
    """Replies are bytes unless the client decodes responses; this works with both."""
    return value.decode() if isinstance(value, bytes) else value


def _owner(claim: str) -> str:
    """The user id in an email key's value ``"<id> <claimed_ms>"``."""
    return claim.rpartition(" ")[0]


class RedisUsers(UserRepository):
    """Users in Redis hashes next to a :class:`RedisStore`'s sessions, on its client.

    The client stays the store's: :meth:`close` leaves it open. Works on a
    standalone server and on a Redis Cluster (every script touches one key).
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str,
        claim_grace: float = DEFAULT_CLAIM_GRACE,
        connect: Callable[[], Awaitable[None]] | None = None,
        owner: Store | None = None,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the key prefix may not contain '{{' or '}}': {prefix!r}")
        if claim_grace <= 0:
            raise ValueError("claim_grace must be positive")
        self.client = client
        self.prefix = prefix
        self.claim_grace = float(claim_grace)
        self._connect = connect
        self._owner = owner  # the connection opened for this repository alone
        script = client.register_script
        self._claim, self._release, self._create = script(_CLAIM), script(_RELEASE), script(_CREATE)
        self._delete_if_email = script(_DELETE_IF_EMAIL)
        self._set_name, self._set_password = script(_SET_NAME), script(_SET_PASSWORD)
        self._set_hash_if = script(_SET_HASH_IF)

    @classmethod
    def for_store(cls, store: Store, *, claim_grace: float = DEFAULT_CLAIM_GRACE) -> RedisUsers:
        """Users beside ``store``'s sessions, on its client and prefix (its public companion hooks)."""
        if not isinstance(store, RedisStore):
            raise TypeError(f"RedisUsers needs a RedisStore, not {type(store).__name__}")
        return cls(store.client, prefix=store.prefix, claim_grace=claim_grace, connect=store.ensure_connected)

    @classmethod
    def from_url(
        cls, url: str, *, share: Store | None = None, prefix: str = DEFAULT_PREFIX,
        claim_grace: float = DEFAULT_CLAIM_GRACE,
    ) -> RedisUsers:  # fmt: skip
        if share is not None:
            return cls.for_store(share, claim_grace=claim_grace)
        own = RedisStore(url, prefix=prefix)
        return cls(own.client, prefix=prefix, claim_grace=claim_grace, connect=own.ensure_connected, owner=own)

    # -- keys --------------------------------------------------------------------

    def user_key(self, user_id: str) -> str:
        """The hash of one user."""
        return f"{self.prefix}account:{{{user_id}}}"

    def email_key(self, email: str) -> str:
        """The claim on one (normalised) address, named by its SHA-256."""
        return f"{self.prefix}email:{{{hashlib.sha256(email.encode()).hexdigest()}}}"

    # -- UserRepository ------------------------------------------------------------

    async def setup(self) -> None:
        """Check the server answers; scripts load themselves on first use."""
        await self._call("setup", self.client.ping)

    async def add(self, user: User) -> None:
        claim = await self._claim_email(user)
        fields = [
            "email", user.email, "name", user.name, "password_hash", user.password_hash,
            "created", repr(float(user.created)), "credentials_version", str(int(user.credentials_version)),
        ]  # fmt: skip
        user_key = self.user_key(user.id)
        try:
            created = await self._call("add", lambda: self._create(keys=[user_key], args=fields))
        except StoreError:
            # Outcome unknown (a timeout can come after the server ran the script): undo
            # the user, then release the claim. If Redis cannot even do that, the claim
            # stays: with its user it is a normal registration, without one an orphan
            # that the next sign-up takes over after claim_grace.
            try:
                await self._call("add", lambda: self._delete_if_email(keys=[user_key], args=[user.email]))
            except StoreError:
                pass
            else:
                await self._release_quietly(user.email, claim)
            raise
        if not int(created):
            await self._release_quietly(user.email, claim)
            raise ValueError(f"a user with id {user.id!r} exists already")
        # Still ours? Only a registration stalled past claim_grace can have lost it.
        current = await self._call("add", lambda: self.client.get(self.email_key(user.email)))
        if current is None or _text(current) != claim:
            await self._call("add", lambda: self._delete_if_email(keys=[user_key], args=[user.email]))
            raise EmailTaken(user.email)

    async def by_email(self, email: str) -> User | None:
        claim = await self._call("by_email", lambda: self.client.get(self.email_key(email)))
        if claim is None:
            return None
        user = await self.by_id(_owner(_text(claim)))
        # A claim whose user is not (yet) stored, or a stale one: no such user.
        return user if user is not None and user.email == email else None

    async def by_id(self, user_id: str) -> User | None:
        fields: Mapping[Any, Any] = await self._call("by_id", lambda: self.client.hgetall(self.user_key(user_id)))
        return self._user(user_id, fields)

    async def set_name(self, user_id: str, name: str) -> bool:
        key = self.user_key(user_id)
        return bool(int(await self._call("set_name", lambda: self._set_name(keys=[key], args=[name]))))

    async def set_password(
        self, user_id: str, password_hash: str | None, *, expected_version: int | None = None
    ) -> int | None:
        key = self.user_key(user_id)
        args = [password_hash or "", "" if expected_version is None else str(int(expected_version))]
        version = await self._call("set_password", lambda: self._set_password(keys=[key], args=args))
        return None if version is None else int(version)

    async def set_password_hash_if(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        key = self.user_key(user_id)
        replaced = await self._call("set_password_hash_if", lambda: self._set_hash_if(keys=[key], args=[old_hash, new_hash]))
        return bool(int(replaced))

    async def close(self) -> None:
        """Close the client opened from the URL; a shared one stays the session store's."""
        if self._owner is not None:
            owner, self._owner = self._owner, None
            await owner.close()

    # -- internals ---------------------------------------------------------------

    async def _claim_email(self, user: User) -> str:
        """Steps 1 (and an orphan's take-over): the claim value now ours, else EmailTaken."""
        key = self.email_key(user.email)
        grace_ms = str(int(self.claim_grace * 1000))
        reply = await self._call("add", lambda: self._claim(keys=[key], args=[user.id, grace_ms, ""]))
        if int(reply[0]):
            return _text(reply[1])
        current = _text(reply[1])
        owner = await self._call("add", lambda: self.client.hget(self.user_key(_owner(current)), "email"))
        if owner is not None and _text(owner) == user.email:
            raise EmailTaken(user.email)
        # The claim has no user: being registered right now, or left by a crash.
        reply = await self._call("add", lambda: self._claim(keys=[key], args=[user.id, grace_ms, current]))
        if int(reply[0]):
            return _text(reply[1])
        raise EmailTaken(user.email)

    async def _release_quietly(self, email: str, claim: str) -> None:
        """Step 3; if even that fails, the orphan is taken over after claim_grace."""
        try:
            await self._call("add", lambda: self._release(keys=[self.email_key(email)], args=[claim]))
        except StoreError:
            pass

    async def _call(self, op: str, command: Callable[[], Awaitable[_T]]) -> _T:
        """Run one command; driver errors become StoreError."""
        try:
            if self._connect is not None:
                await self._connect()
            return await command()
        except Exception as exc:
            if not _DRIVER.is_failure(exc):
                raise
            raise _DRIVER.translate(op, exc) from exc

    @staticmethod
    def _user(user_id: str, fields: Mapping[Any, Any]) -> User | None:
        if not fields:
            return None
        values = {_text(k): _text(v) for k, v in fields.items()}
        try:
            return User(
                user_id, values["email"], values["name"], values["password_hash"], float(values["created"]),
                int(values.get("credentials_version", "1")),
            )  # fmt: skip
        except (KeyError, ValueError) as exc:
            raise StoreError(f"redis users: malformed user record for {user_id!r}") from exc
