"""Opening the store: file modes, unreachable servers, changed admin presets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.adapters.store import open_store
from canaryguard.domain.errors import Unavailable
from canaryguard.wiring import Settings, open_canaryguard
from tests.servers import free_port


async def test_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'canaryguard.db'}")
    await store.close()
    assert stat.S_IMODE((tmp_path / "canaryguard.db").stat().st_mode) == 0o600


async def test_unreachable_postgresql_is_unavailable_with_a_clear_message() -> None:
    url = f"postgresql+psycopg://nobody:secret@127.0.0.1:{free_port()}/none"
    with pytest.raises(Unavailable, match="does not answer") as caught:
        await open_store(url)
    assert "secret" not in str(caught.value)


async def test_a_changed_admin_preset_gets_a_token_of_its_own(tmp_path: Path) -> None:
    app = await open_canaryguard(Settings(data_dir=tmp_path), keys=AesGcmKeyRing.generate())
    try:
        first, second = "a" * 40, "b" * 40
        await app.tokens.bootstrap_admin(preset=first)
        await app.tokens.bootstrap_admin(preset=second)
        assert await app.tokens.authenticate(first) is not None
        assert await app.tokens.authenticate(second) is not None
    finally:
        await app.close()
