"""Sealed values and key rings (sessions/keys.py).

Every test here runs the real AES-GCM code: a value that should not open must
come back as None, and nothing may raise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import sessions.keys as keys_module
from sessions.keys import KeyRing, MissingKeysError, generate_key, load_key_ring

ROOT = Path(__file__).resolve().parents[2]
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
NAME = "prefs"


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def ring(key) -> KeyRing:
    return KeyRing([key])


# -- round trip ----------------------------------------------------------------


def test_seal_then_open_returns_the_payload(ring):
    sealed = ring.seal(b'{"theme":"dark"}', NAME)
    assert ring.open(sealed, NAME) == b'{"theme":"dark"}'


def test_open_accepts_the_sealed_value_as_bytes(ring):
    sealed = ring.seal(b"payload", NAME)
    assert ring.open(sealed.encode("ascii"), NAME) == b"payload"


def test_empty_payload_round_trips(ring):
    assert ring.open(ring.seal(b"", NAME), NAME) == b""


def test_sealed_value_is_unpadded_base64url(ring):
    sealed = ring.seal(b"x" * 50, NAME)
    assert set(sealed) <= set(B64URL)


def test_sealing_twice_gives_different_values(ring):
    """A fresh nonce per seal: equal payloads don't give equal cookies."""
    assert ring.seal(b"same", NAME) != ring.seal(b"same", NAME)


def test_sealed_value_is_encrypted_not_just_encoded(ring):
    payload = b"secret-preference-value-1234"
    blob = b64decode(ring.seal(payload, NAME))
    assert payload not in blob


def test_sealed_value_names_version_and_key_that_sealed_it(key, ring):
    blob = b64decode(ring.seal(b"p", NAME))
    assert blob[0] == 1
    assert blob[1:5] == hashlib.sha256(key).digest()[:4]
    assert ring.key_ids == [hashlib.sha256(key).digest()[:4].hex()]


# -- tampering ------------------------------------------------------------------


# Payload lengths 5, 6, 7 give blobs whose base64 text ends with 4, 2 and 0 unused
# low bits in the last character: a change there must be caught too.
@pytest.mark.parametrize("payload_length", [5, 6, 7])
def test_every_single_character_change_is_rejected(ring, payload_length):
    sealed = ring.seal(b"p" * payload_length, NAME)
    assert ring.open(sealed, NAME) is not None
    accepted = []
    for position, original in enumerate(sealed):
        for replacement in B64URL:
            if replacement == original:
                continue
            changed = sealed[:position] + replacement + sealed[position + 1 :]
            if ring.open(changed, NAME) is not None:
                accepted.append((position, replacement))
    assert accepted == []


def test_every_bit_flip_in_the_decoded_blob_is_rejected(ring):
    blob = b64decode(ring.seal(b'{"lang":"en"}', NAME))
    accepted = []
    for index in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[index] ^= 1 << bit
            if ring.open(b64encode(bytes(flipped)), NAME) is not None:
                accepted.append((index, bit))
    assert accepted == []


def test_deleting_any_one_character_is_rejected(ring):
    sealed = ring.seal(b"payload", NAME)
    for position in range(len(sealed)):
        assert ring.open(sealed[:position] + sealed[position + 1 :], NAME) is None


def test_inserting_a_character_anywhere_is_rejected(ring):
    sealed = ring.seal(b"payload", NAME)
    for position in range(len(sealed) + 1):
        for extra in "A_":
            assert ring.open(sealed[:position] + extra + sealed[position:], NAME) is None


def test_every_truncation_is_rejected(ring):
    sealed = ring.seal(b"payload", NAME)
    for length in range(len(sealed)):
        assert ring.open(sealed[:length], NAME) is None


def test_standard_base64_spelling_of_a_value_is_rejected(ring):
    """'+' and '/' decode like '-' and '_'; only the canonical spelling opens."""
    for _ in range(20):
        sealed = ring.seal(os.urandom(30), NAME)
        if "-" in sealed or "_" in sealed:
            break
    else:  # pragma: no cover - 20 values without - or _ is ~impossible
        pytest.skip("no value with - or _")
    standard = sealed.replace("-", "+").replace("_", "/")
    assert ring.open(standard, NAME) is None


# -- name binding, keys, expiry ---------------------------------------------------


@pytest.mark.parametrize("other", ["prefs2", "Prefs", "__Host-prefs", "session", ""])
def test_value_sealed_for_one_name_is_rejected_under_another(ring, other):
    sealed = ring.seal(b'{"theme":"dark"}', NAME)
    assert ring.open(sealed, other) is None
    assert ring.open(sealed, NAME) is not None


def test_value_sealed_by_an_unknown_key_is_rejected(ring):
    stranger = KeyRing([os.urandom(32)])
    assert ring.open(stranger.seal(b"p", NAME), NAME) is None


def test_value_claiming_our_key_id_but_sealed_with_another_key_is_rejected(key, ring):
    """Forge the header with our key id and encrypt with a different key."""
    nonce = os.urandom(12)
    body = AESGCM(os.urandom(32)).encrypt(
        nonce, struct.pack(">Q", 0) + b"p", b"tornado-sessions/v1\x00" + NAME.encode()
    )
    forged = b64encode(bytes([1]) + hashlib.sha256(key).digest()[:4] + nonce + body)
    assert ring.open(forged, NAME) is None


def test_expired_value_is_rejected(ring):
    assert ring.open(ring.seal(b"p", NAME, max_age=-10), NAME) is None


def test_zero_max_age_value_is_already_expired(ring):
    assert ring.open(ring.seal(b"p", NAME, max_age=0), NAME) is None


def test_value_within_max_age_opens(ring):
    assert ring.open(ring.seal(b"p", NAME, max_age=60), NAME) == b"p"


def test_expiry_is_inside_the_sealed_value(key, ring):
    """The expiry is encrypted with the payload (8-byte big-endian Unix seconds)."""
    before = time.time()
    blob = b64decode(ring.seal(b"p", NAME, max_age=3600))
    plain = AESGCM(key).decrypt(blob[5:17], blob[17:], b"tornado-sessions/v1\x00" + NAME.encode())
    (expiry,) = struct.unpack(">Q", plain[:8])
    assert before + 3600 - 1 <= expiry <= time.time() + 3600
    assert plain[8:] == b"p"


def test_value_stops_opening_once_max_age_has_passed(ring, monkeypatch):
    now = time.time()
    sealed = ring.seal(b"p", NAME, max_age=60)
    monkeypatch.setattr(keys_module, "time", SimpleNamespace(time=lambda: now + 59))
    assert ring.open(sealed, NAME) == b"p"
    monkeypatch.setattr(keys_module, "time", SimpleNamespace(time=lambda: now + 61))
    assert ring.open(sealed, NAME) is None


def test_value_without_max_age_never_expires(ring, monkeypatch):
    sealed = ring.seal(b"p", NAME)
    far = time.time() + 100 * 365 * 86400
    monkeypatch.setattr(keys_module, "time", SimpleNamespace(time=lambda: far))
    assert ring.open(sealed, NAME) == b"p"


# -- malformed input: None, never an exception ------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        b"",
        "A",
        "AAAA",
        "!!!!",
        "not a sealed value",
        "%00%01",
        "é" * 60,
        "\x00" * 60,
        b"\xff" * 60,
        "A" * 1_000_000,
        b"A" * 1_000_000,
        "é" * 1_000_000,
    ],
    ids=lambda v: repr(v[:12] if v else v),
)
def test_malformed_input_returns_none(ring, value):
    assert ring.open(value, NAME) is None


def test_value_with_a_non_ascii_character_is_rejected(ring):
    sealed = ring.seal(b"payload", NAME)
    for position in (0, len(sealed) // 2, len(sealed) - 1):
        assert ring.open(sealed[:position] + "é" + sealed[position + 1 :], NAME) is None


@pytest.mark.parametrize("suffix", ["=", "==", "===", "\n", " ", "."])
def test_value_with_padding_or_junk_appended_is_rejected(ring, suffix):
    sealed = ring.seal(b"payload", NAME)
    assert ring.open(sealed + suffix, NAME) is None


def test_correctly_padded_spelling_is_rejected(ring):
    """'=' padding decodes to the same bytes, but is not the canonical spelling."""
    sealed = ring.seal(b"payload!", NAME)
    assert len(sealed) % 4, "payload chosen so the value needs padding"
    assert ring.open(sealed + "=" * (-len(sealed) % 4), NAME) is None


def test_valid_base64_of_random_bytes_is_rejected(ring):
    for size in (0, 1, 20, 40, 41, 100, 3000):
        assert ring.open(b64encode(os.urandom(size)), NAME) is None


def test_genuine_value_longer_than_a_cookie_can_be_is_rejected(ring):
    """Oversized is treated as absent, even if it would decrypt."""
    sealed = ring.seal(b"x" * 3100, NAME)
    assert len(sealed) > 4096
    assert ring.open(sealed, NAME) is None
    assert ring.open(ring.seal(b"x" * 3000, NAME), NAME) == b"x" * 3000


def test_huge_value_is_rejected_quickly(ring):
    start = time.perf_counter()
    assert ring.open("A" * 1_000_000, NAME) is None
    assert time.perf_counter() - start < 0.5


# -- rotation ------------------------------------------------------------------


def test_rotation_new_ring_opens_values_sealed_by_the_old_key():
    old, new = os.urandom(32), os.urandom(32)
    sealed_before = KeyRing([old]).seal(b"p", NAME)
    assert KeyRing([new, old]).open(sealed_before, NAME) == b"p"


def test_rotation_new_ring_seals_with_the_new_key():
    old, new = os.urandom(32), os.urandom(32)
    rotated = KeyRing([new, old])
    sealed = rotated.seal(b"p", NAME)
    assert b64decode(sealed)[1:5] == hashlib.sha256(new).digest()[:4]
    assert KeyRing([new]).open(sealed, NAME) == b"p"
    assert KeyRing([old]).open(sealed, NAME) is None


def test_rotation_retired_key_no_longer_opens():
    old, new = os.urandom(32), os.urandom(32)
    sealed_before = KeyRing([old]).seal(b"p", NAME)
    assert KeyRing([new]).open(sealed_before, NAME) is None


def test_key_ids_list_primary_first():
    old, new = os.urandom(32), os.urandom(32)
    ring = KeyRing([new, old])
    assert ring.key_ids == [hashlib.sha256(k).digest()[:4].hex() for k in (new, old)]


# -- size ----------------------------------------------------------------------


def test_sealed_100_byte_json_payload_is_at_most_200_characters(ring):
    prefs = {"theme": "dark", "lang": "en-GB", "tz": "Europe/London", "font": ""}
    filler = 100 - len(json.dumps(prefs, separators=(",", ":")))
    prefs["font"] = "x" * filler
    payload = json.dumps(prefs, separators=(",", ":")).encode()
    assert len(payload) == 100
    sealed = ring.seal(payload, NAME, max_age=86400)
    assert len(sealed) <= 200
    assert json.loads(ring.open(sealed, NAME)) == prefs


# -- generate_key / from_text ----------------------------------------------------


def test_generate_key_is_43_characters_of_base64url_for_32_random_bytes():
    text = generate_key()
    assert len(text) == 43 and set(text) <= set(B64URL)
    assert len(b64decode(text)) == 32
    assert generate_key() != text


def test_from_text_accepts_generated_keys_newest_first():
    new, old = generate_key(), generate_key()
    sealed_old = KeyRing.from_text(old).seal(b"p", NAME)
    ring = KeyRing.from_text(f"{new},{old}")
    assert ring.open(sealed_old, NAME) == b"p"
    assert ring.key_ids[0] == KeyRing.from_text(new).key_ids[0]


@pytest.mark.parametrize("separator", [",", " ", ", ", "\n", " ,\t"])
def test_from_text_splits_on_commas_and_whitespace(separator):
    a, b = generate_key(), generate_key()
    assert len(KeyRing.from_text(f" {a}{separator}{b} ").key_ids) == 2


def test_from_text_accepts_padded_key():
    key = generate_key()
    assert KeyRing.from_text(key + "=").key_ids == KeyRing.from_text(key).key_ids


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 64])
def test_from_text_rejects_wrong_length_key_with_clear_error(size):
    text = b64encode(os.urandom(size)) or "AAAA"
    with pytest.raises(ValueError, match="32 bytes"):
        KeyRing.from_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "!" * 43,
        "é" * 43,
        "key:" + "A" * 39,
        "A" * 42 + "*",
        "A" * 20 + ".!#~" + "A" * 23,  # junk the base64 decoder would silently skip
        "A" * 43 + "!!!!",
        "A" * 43 + "=====",
    ],
)
def test_from_text_rejects_non_base64_key_with_clear_error(text):
    with pytest.raises(ValueError, match="base64"):
        KeyRing.from_text(text)


def test_from_text_rejects_one_bad_key_among_good_ones():
    with pytest.raises(ValueError):
        KeyRing.from_text(f"{generate_key()},not-a-key")


@pytest.mark.parametrize("text", ["", "   ", ",", " , \n"])
def test_from_text_with_no_keys_raises_missing_keys(text):
    with pytest.raises(MissingKeysError):
        KeyRing.from_text(text)


def test_key_ring_refuses_raw_keys_of_wrong_length():
    with pytest.raises(ValueError):
        KeyRing([os.urandom(16)])


# -- load_key_ring ------------------------------------------------------------------


def test_load_key_ring_uses_keys_from_the_environment(tmp_path):
    env = f"{generate_key()},{generate_key()}"
    key_file = tmp_path / "session.key"
    ring, source = load_key_ring(env, key_file=key_file, production=False)
    assert source == "SESSION_KEYS"
    assert ring.key_ids == KeyRing.from_text(env).key_ids
    assert not key_file.exists()


def test_load_key_ring_uses_environment_keys_in_production(tmp_path):
    env = generate_key()
    ring, _ = load_key_ring(env, key_file=None, production=True)
    assert KeyRing.from_text(env).open(ring.seal(b"p", NAME), NAME) == b"p"


def test_load_key_ring_rejects_malformed_environment_keys(tmp_path):
    with pytest.raises(ValueError):
        load_key_ring("not-a-key", key_file=tmp_path / "k", production=False)


@pytest.mark.parametrize("env", [None, "", "  \n"])
def test_production_without_keys_refuses_and_says_how_to_make_one(tmp_path, env):
    key_file = tmp_path / "session.key"
    with pytest.raises(MissingKeysError) as info:
        load_key_ring(env, key_file=key_file, production=True)
    assert "python -m sessions.keygen" in str(info.value)
    assert "SESSION_KEYS" in str(info.value)
    assert not key_file.exists()


def test_production_ignores_a_development_key_file(tmp_path):
    key_file = tmp_path / "session.key"
    key_file.write_text(generate_key() + "\n")
    with pytest.raises(MissingKeysError):
        load_key_ring(None, key_file=key_file, production=True)


def test_development_generates_a_private_key_file_on_first_run(tmp_path):
    key_file = tmp_path / "var" / "nested" / "session.key"
    ring, source = load_key_ring(None, key_file=key_file, production=False)
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "generated" in source
    assert ring.key_ids == KeyRing.from_text(key_file.read_text()).key_ids


def test_development_reuses_the_key_file_on_second_run(tmp_path):
    key_file = tmp_path / "session.key"
    first, _ = load_key_ring(None, key_file=key_file, production=False)
    content = key_file.read_text()
    second, source = load_key_ring(None, key_file=key_file, production=False)
    assert key_file.read_text() == content
    assert "generated" not in source
    assert second.open(first.seal(b"p", NAME), NAME) == b"p"


def test_development_without_key_file_or_keys_raises(tmp_path):
    with pytest.raises(MissingKeysError):
        load_key_ring(None, key_file=None, production=False)


# -- python -m sessions.keygen ------------------------------------------------------


def test_command_prints_a_key_that_from_text_accepts():
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "sessions.keygen"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stderr == ""  # no RuntimeWarning about sessions.keys in sys.modules
        outputs.append(done.stdout.strip())
    for text in outputs:
        ring = KeyRing.from_text(text)
        assert ring.open(ring.seal(b"p", NAME), NAME) == b"p"
    assert outputs[0] != outputs[1]


# -- why a value did not open ------------------------------------------------------


def test_unseal_names_each_failure(ring, key):
    sealed = ring.seal(b"payload", NAME)
    assert ring.unseal(sealed, NAME) == (b"payload", None, False)
    assert ring.unseal("", NAME).failure == "malformed"
    assert ring.unseal("not base64 !", NAME).failure == "malformed"
    assert ring.unseal("A" * 5000, NAME).failure == "oversized"
    blob = bytearray(b64decode(sealed))
    blob[-1] ^= 1
    assert ring.unseal(b64encode(bytes(blob)), NAME).failure == "bad_tag"
    assert ring.unseal(sealed, "another-name").failure == "bad_tag"
    stranger = KeyRing([os.urandom(32)]).seal(b"payload", NAME)
    assert ring.unseal(stranger, NAME).failure == "unknown_key"
    expired = ring.seal(b"payload", NAME, max_age=-5)
    assert ring.unseal(expired, NAME).failure == "expired"
    assert ring.open(expired, NAME) is None


def test_unseal_says_when_an_older_key_opened_the_value():
    old, new = os.urandom(32), os.urandom(32)
    by_old = KeyRing([old]).seal(b"p", NAME)
    rotated = KeyRing([new, old])
    assert rotated.unseal(by_old, NAME) == (b"p", None, True)
    assert rotated.unseal(by_old, NAME).rotated is True  # the cached answer says so too
    assert rotated.unseal(rotated.seal(b"p", NAME), NAME).rotated is False


def test_invalid_key_error_is_exported_and_a_value_error():
    from sessions import InvalidKeyError

    assert issubclass(InvalidKeyError, ValueError)
    with pytest.raises(InvalidKeyError):
        KeyRing.from_text("too-short")
