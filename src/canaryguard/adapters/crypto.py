"""AES-256-GCM encryption with a key ring (the ``KeyRing`` port).

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``; the key id travels next to
it in the record, and the caller binds the record's identity as associated data, so a blob moved
to another record does not open. Keys come from ``CANARYGUARD_KEYS`` (``id:base64,...``, the last
one is the primary) or from a key file (JSON, mode 0600) that the embedded default creates.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from canaryguard.domain.errors import IntegrityError, InvalidInput

__all__ = ["KEYS_ENV", "AesGcmKeyRing"]

KEYS_ENV = "CANARYGUARD_KEYS"
_NONCE_BYTES = 12
_KEY_BYTES = 32
_TAG_BYTES = 16
_FILE_VERSION = 1


def _new_key_id() -> str:
    return f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"


class AesGcmKeyRing:
    """Named AES-256 keys; encrypts under the primary, decrypts under any."""

    def __init__(
        self, keys: Mapping[str, bytes], primary: str, *, path: Path | None = None
    ) -> None:
        if primary not in keys:
            raise InvalidInput(f"the primary key {primary!r} is not in the key ring")
        for key_id, key in keys.items():
            if len(key) != _KEY_BYTES:
                raise InvalidInput(f"key {key_id!r} is {len(key)} bytes; AES-256 needs 32")
        self._keys = dict(keys)
        self._ciphers = {key_id: AESGCM(key) for key_id, key in self._keys.items()}
        self._primary = primary
        self.path = path

    # -- the Cipher port -------------------------------------------------------------------
    @property
    def primary_key_id(self) -> str:
        return self._primary

    @property
    def can_rotate(self) -> bool:
        return self.path is not None

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: bytes, *, associated_data: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self._primary].encrypt(nonce, plaintext, associated_data)
        return self._primary, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, *, associated_data: bytes) -> bytes:
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise IntegrityError(
                f"the record is {len(blob)} bytes, too short to be sealed: it was cut"
            )
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise IntegrityError(
                f"no key {key_id!r} in the key ring (it has {', '.join(self._keys)}): "
                "was the record written with another key file?"
            )
        try:
            return cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], associated_data)
        except InvalidTag as exc:
            raise IntegrityError(
                "the record does not authenticate under its key: it was changed, "
                "copied from another record, or the key is wrong"
            ) from exc

    # -- sources ---------------------------------------------------------------------------
    @classmethod
    def generate(cls, *, path: Path | None = None) -> AesGcmKeyRing:
        key_id = _new_key_id()
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, key_id, path=path)

    @classmethod
    def from_env(cls, value: str) -> AesGcmKeyRing:
        """Parse ``id:base64key,id:base64key``; the last key is the primary."""
        keys: dict[str, bytes] = {}
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            key_id, sep, encoded = part.partition(":")
            if not sep or not key_id:
                raise InvalidInput(f"{KEYS_ENV}: each entry is id:base64key, got {part[:12]!r}...")
            keys[key_id] = _decode_key(encoded, f"{KEYS_ENV} key {key_id!r}")
        if not keys:
            raise InvalidInput(f"{KEYS_ENV} is set but holds no key")
        return cls(keys, list(keys)[-1])

    @classmethod
    def load(cls, path: Path) -> AesGcmKeyRing:
        """Read a key file, refusing one that other users can read."""
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInput(
                f"key file {path} is readable by others (mode {stat.filemode(mode)}); "
                f"run: chmod 600 {path}"
            )
        try:
            data = json.loads(path.read_text())
            keys = {
                key_id: _decode_key(encoded, f"{path}: key {key_id!r}")
                for key_id, encoded in data["keys"].items()
            }
            primary = data["primary"]
            if not isinstance(primary, str):
                raise TypeError(f"primary is {type(primary).__name__}, not the name of a key")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"key file {path} is not a canaryguard key file: {exc}") from exc
        return cls(keys, primary, path=path)

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[AesGcmKeyRing, bool]:
        """The key file at ``path``; created (mode 0600) when missing. Returns (ring, created)."""
        if path.exists():
            return cls.load(path), False
        ring = cls.generate(path=path)
        ring.save()
        return ring, True

    def rotate(self) -> str:
        """Add a new primary key (kept in the key file); old keys stay for decryption."""
        if self.path is None:
            raise InvalidInput(
                f"the keys come from {KEYS_ENV}: add a new id:key at its end and restart; "
                "rotating then re-encrypts every snapshot under it"
            )
        key_id = _new_key_id()
        while key_id in self._keys:
            key_id = _new_key_id()
        key = AESGCM.generate_key(bit_length=256)
        # on disk first: a key that only this process holds would seal snapshots that no
        # restart could open, so a failed save leaves the ring as it was
        self._write({**self._keys, key_id: key}, key_id)
        self._keys[key_id] = key
        self._ciphers[key_id] = AESGCM(key)
        self._primary = key_id
        return key_id

    def save(self) -> None:
        """Write the key file atomically with mode 0600."""
        self._write(self._keys, self._primary)

    def _write(self, keys: Mapping[str, bytes], primary: str) -> None:
        if self.path is None:
            raise InvalidInput("this key ring has no key file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {
                "version": _FILE_VERSION,
                "primary": primary,
                "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()},
            },
            indent=2,
        )
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


def _decode_key(encoded: str, what: str) -> bytes:
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid base64") from exc
    if len(key) != _KEY_BYTES:
        raise InvalidInput(f"{what} is {len(key)} bytes; AES-256 needs 32")
    return key
