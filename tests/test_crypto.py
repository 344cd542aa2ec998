"""The AES-256-GCM key ring: sources, files, errors."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.domain.errors import IntegrityError, InvalidInput

AAD = b"record-1"


def test_encrypt_then_decrypt_round_trips() -> None:
    ring = AesGcmKeyRing.generate()
    key_id, blob = ring.encrypt(b"hello", associated_data=AAD)
    assert ring.decrypt(key_id, blob, associated_data=AAD) == b"hello"


def test_same_plaintext_encrypts_differently_each_time() -> None:
    ring = AesGcmKeyRing.generate()
    assert ring.encrypt(b"x", associated_data=AAD)[1] != ring.encrypt(b"x", associated_data=AAD)[1]


def test_other_associated_data_does_not_open() -> None:
    ring = AesGcmKeyRing.generate()
    key_id, blob = ring.encrypt(b"hello", associated_data=AAD)
    with pytest.raises(IntegrityError):
        ring.decrypt(key_id, blob, associated_data=b"record-2")


def test_key_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, created = AesGcmKeyRing.load_or_create(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    AesGcmKeyRing.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        AesGcmKeyRing.load(path)


def test_malformed_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(InvalidInput, match="not a canaryguard key file"):
        AesGcmKeyRing.load(path)


def test_rotation_keeps_old_keys_for_decryption(tmp_path: Path) -> None:
    ring, _ = AesGcmKeyRing.load_or_create(tmp_path / "keys.json")
    old_id, blob = ring.encrypt(b"old", associated_data=AAD)
    new_id = ring.rotate()
    reloaded = AesGcmKeyRing.load(tmp_path / "keys.json")
    assert reloaded.primary_key_id == new_id
    assert reloaded.decrypt(old_id, blob, associated_data=AAD) == b"old"


def test_env_keys_last_one_is_primary() -> None:
    a, b = base64.b64encode(b"a" * 32).decode(), base64.b64encode(b"b" * 32).decode()
    ring = AesGcmKeyRing.from_env(f"old:{a}, new:{b}")
    assert (ring.key_ids, ring.primary_key_id) == (["old", "new"], "new")


def test_env_key_of_the_wrong_length_is_refused() -> None:
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(InvalidInput, match="16 bytes; AES-256 needs 32"):
        AesGcmKeyRing.from_env(f"k1:{short}")


def test_env_key_that_is_not_base64_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not valid base64"):
        AesGcmKeyRing.from_env("k1:***")


def test_env_keys_cannot_rotate_in_place() -> None:
    ring = AesGcmKeyRing.from_env("k1:" + base64.b64encode(b"k" * 32).decode())
    with pytest.raises(InvalidInput, match="add a new id:key"):
        ring.rotate()


def test_key_file_holds_no_plaintext_secret_in_other_fields(tmp_path: Path) -> None:
    ring, _ = AesGcmKeyRing.load_or_create(tmp_path / "keys.json")
    data = json.loads((tmp_path / "keys.json").read_text())
    assert set(data) == {"version", "primary", "keys"}
    assert data["primary"] == ring.primary_key_id


def test_truncated_blob_is_an_integrity_error() -> None:
    ring = AesGcmKeyRing.generate()
    key_id, _ = ring.encrypt(b"x", associated_data=AAD)
    with pytest.raises(IntegrityError, match="too short"):
        ring.decrypt(key_id, b"\x00" * 7, associated_data=AAD)


def test_a_rotation_whose_key_file_cannot_be_written_keeps_the_old_primary(
    tmp_path: Path,
) -> None:
    ring, _ = AesGcmKeyRing.load_or_create(tmp_path / "keys.json")
    old = ring.primary_key_id
    (tmp_path / "keys.tmp").mkdir()  # the atomic write's temporary file cannot be made
    with pytest.raises(IsADirectoryError):
        ring.rotate()
    key_id, _ = ring.encrypt(b"after", associated_data=AAD)
    assert (ring.primary_key_id, key_id) == (old, old)
    assert AesGcmKeyRing.load(tmp_path / "keys.json").primary_key_id == old


def test_a_key_file_whose_primary_is_no_name_is_refused(tmp_path: Path) -> None:
    ring, _ = AesGcmKeyRing.load_or_create(tmp_path / "keys.json")
    data = json.loads((tmp_path / "keys.json").read_text())
    data["primary"] = [ring.primary_key_id]
    (tmp_path / "keys.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match="not a canaryguard key file"):
        AesGcmKeyRing.load(tmp_path / "keys.json")
