"""Key ring and sealed values: AES-256-GCM with the cookie name as associated data.

A sealed value is one base64url string (no padding) of::

    version (1 byte = 1) | key id (4 bytes) | nonce (12) | AES-GCM(expiry (8, big-endian
    Unix seconds, 0 = none) | payload) with its 16-byte tag

The key id is the first four bytes of SHA-256 of the key, so a value names the key
that sealed it and the ring opens it with that key alone: rotating keys (put the new
key first, keep the old ones while their cookies live) logs nobody out. The name the
value is sealed for goes into the associated data, so a value copied from one cookie
into another fails to open. Anything that does not open returns None: callers treat
the cookie as absent and log a security event, never raise. :meth:`KeyRing.unseal`
also says why a value did not open (for the security log and metrics labels), and
whether it opened with an older key (so the caller can seal it again with the
primary one).

Run ``python -m sessions.keygen`` to print a new key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
import struct
import time
from pathlib import Path
from typing import Literal, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
_HEADER = struct.Struct(">B4s12s")  # version, key id, nonce
_EXPIRY = struct.Struct(">Q")
_AAD_PREFIX = b"tornado-sessions/v1\x00"
KEY_BYTES = 32
#: base64url (standard base64's "+/" also accepted), optional padding, nothing else:
#: the decoder silently skips other characters, so a garbled key must fail here.
_KEY_TEXT = re.compile(r"[A-Za-z0-9_\-+/]+={0,2}")
#: Longest sealed text we try to open: a cookie can't be larger than the browser limit.
MAX_SEALED_LENGTH = 4096
#: Opened values a key ring remembers (a few hundred bytes each).
OPEN_CACHE_SIZE = 4096


class InvalidKeyError(ValueError):
    """A configured key is malformed (wrong length, not base64)."""


class MissingKeysError(RuntimeError):
    """Production mode without configured keys."""


#: Why a sealed value did not open.
OpenFailure = Literal["malformed", "oversized", "unknown_key", "bad_tag", "expired"]


class Unsealed(NamedTuple):
    """The outcome of :meth:`KeyRing.unseal`: a payload, or the reason there is none."""

    payload: bytes | None
    failure: OpenFailure | None = None
    #: Opened with a key other than the primary: seal it again to retire the old key.
    rotated: bool = False


_MALFORMED = Unsealed(None, "malformed")
_OVERSIZED = Unsealed(None, "oversized")
_UNKNOWN_KEY = Unsealed(None, "unknown_key")
_BAD_TAG = Unsealed(None, "bad_tag")
_EXPIRED = Unsealed(None, "expired")


def generate_key() -> str:
    """A new random 256-bit key as base64url text (what SESSION_KEYS holds)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def _b64decode(text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode("ascii")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def _parse_key(text: str) -> bytes:
    text = text.strip()
    if not _KEY_TEXT.fullmatch(text):
        raise InvalidKeyError("a session key must be base64url text; make one with:  python -m sessions.keygen")
    try:
        raw = _b64decode(text)
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidKeyError("a session key must be base64url text") from exc
    if len(raw) != KEY_BYTES:
        raise InvalidKeyError(
            f"a session key must decode to {KEY_BYTES} bytes, got {len(raw)}; make one with:  python -m sessions.keygen"
        )
    return raw


class KeyRing:
    """Keys for sealing: the first seals, every one opens."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise MissingKeysError("a key ring needs at least one key")
        self._ciphers: dict[bytes, AESGCM] = {}
        self._order: list[bytes] = []
        for key in keys:
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise InvalidKeyError(
                    f"a session key must be {KEY_BYTES} random bytes; for base64url text (SESSION_KEYS) "
                    "use KeyRing.from_text(...), and make a key with:  python -m sessions.keygen"
                )
            kid = hashlib.sha256(key).digest()[:4]
            if kid not in self._ciphers:
                self._ciphers[kid] = AESGCM(key)
                self._order.append(kid)
        self._primary_id = self._order[0]
        self._primary = self._ciphers[self._primary_id]
        #: (sealed, name) -> (payload, expiry, rotated) of values that opened: a browser
        #: sends the same session cookie with every request, and decrypting it is the
        #: costliest step of a session read. Only values that opened are kept, so junk
        #: cannot fill it; the expiry is still checked on every hit.
        self._opened: dict[tuple[str | bytes, str], tuple[bytes, int, bool]] = {}

    @classmethod
    def from_text(cls, text: str) -> KeyRing:
        """Parse a comma- or whitespace-separated list of base64url keys (newest first)."""
        parts = [p for p in text.replace(",", " ").split() if p]
        return cls([_parse_key(p) for p in parts])

    @property
    def key_ids(self) -> list[str]:
        """Hex ids of the keys, primary first (for logs; never the keys)."""
        return [kid.hex() for kid in self._order]

    def seal(self, payload: bytes, name: str, *, max_age: float | None = None) -> str:
        """Encrypt ``payload`` for the cookie ``name``, expiring after ``max_age`` seconds."""
        expiry = 0 if max_age is None else int(time.time() + max_age)
        nonce = os.urandom(12)
        body = self._primary.encrypt(
            nonce, _EXPIRY.pack(expiry) + payload, _AAD_PREFIX + name.encode("utf-8")
        )
        blob = _HEADER.pack(VERSION, self._primary_id, nonce) + body
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def open(self, sealed: str | bytes | None, name: str) -> bytes | None:
        """The payload, or None if the value is not one we sealed for ``name`` or expired."""
        return self.unseal(sealed, name).payload

    def unseal(self, sealed: str | bytes | None, name: str) -> Unsealed:
        """Open ``sealed`` and say how it went: payload, failure reason, older key."""
        if not sealed:
            return _MALFORMED
        if len(sealed) > MAX_SEALED_LENGTH:
            return _OVERSIZED
        cache_key = (sealed, name)
        hit = self._opened.get(cache_key)
        if hit is not None:
            payload, expiry, rotated = hit
            if expiry and expiry <= time.time():
                return _EXPIRED
            return Unsealed(payload, None, rotated)
        if isinstance(sealed, str):
            try:
                sealed = sealed.encode("ascii")
            except UnicodeEncodeError:
                return _MALFORMED
        try:
            blob = _b64decode(sealed)
        except (ValueError, binascii.Error):
            return _MALFORMED
        # The decoder skips stray characters and ignores trailing bits; only the one
        # canonical spelling of a value is accepted, so no two cookies open alike.
        if base64.urlsafe_b64encode(blob).rstrip(b"=") != sealed:
            return _MALFORMED
        if len(blob) < _HEADER.size + _EXPIRY.size + 16:
            return _MALFORMED
        version, kid, nonce = _HEADER.unpack_from(blob)
        if version != VERSION:
            return _MALFORMED
        cipher = self._ciphers.get(kid)
        if cipher is None:
            return _UNKNOWN_KEY
        try:
            plain = cipher.decrypt(nonce, blob[_HEADER.size :], _AAD_PREFIX + name.encode("utf-8"))
        except InvalidTag:
            return _BAD_TAG
        (expiry,) = _EXPIRY.unpack_from(plain)
        if expiry and expiry <= time.time():
            return _EXPIRED
        payload = plain[_EXPIRY.size :]
        rotated = kid != self._primary_id
        if len(self._opened) >= OPEN_CACHE_SIZE:
            del self._opened[next(iter(self._opened))]  # oldest first
        self._opened[cache_key] = (payload, expiry, rotated)
        return Unsealed(payload, None, rotated)


def load_key_ring(
    env_value: str | None, *, key_file: Path | None, production: bool
) -> tuple[KeyRing, str]:
    """Build the ring from SESSION_KEYS, or (development only) a generated local key file.

    Returns the ring and a short description of where the keys came from.
    """
    if env_value and env_value.strip():
        return KeyRing.from_text(env_value), "SESSION_KEYS"
    if production:
        raise MissingKeysError(
            "production mode needs SESSION_KEYS (newest key first, comma-separated). "
            "Make a key with:  python -m sessions.keygen"
        )
    if key_file is None:
        raise MissingKeysError("no SESSION_KEYS and no development key file configured")
    if key_file.exists() or key_file.is_symlink():
        info = key_file.lstat()
        mode = info.st_mode & 0o777
        if not stat.S_ISREG(info.st_mode):
            raise MissingKeysError(f"the key file {key_file} is not a regular file (a symbolic link?); remove it")
        if os.name == "posix" and info.st_uid != os.geteuid():
            raise MissingKeysError(
                f"the key file {key_file} belongs to user id {info.st_uid}, not to the user running the server "
                f"({os.geteuid()}): whoever planted it chose the cookie key. Remove it (a new one is generated) "
                "or set SESSION_KEYS"
            )
        if os.name == "posix" and mode & 0o077:
            raise MissingKeysError(
                f"the key file {key_file} is readable or writable by other users (mode {mode:o}); "
                f"anyone who can read it can forge every cookie. Run:  chmod 600 {key_file}"
            )
        return KeyRing.from_text(key_file.read_text()), str(key_file)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_key() + "\n")
    return KeyRing.from_text(key_file.read_text()), f"{key_file} (generated)"

