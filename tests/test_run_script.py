"""The README's run command: serve on the embedded default and the CLI tour, end to end."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_run_script_serves_and_walks_through_a_canary_and_its_rollback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    env.update(
        CANARYGUARD_RUN_ONCE="1",
        CANARYGUARD_DATA_DIR=str(tmp_path / "data"),
        CANARYGUARD_PORT=str(free_port()),
        COLUMNS="160",
    )
    result = subprocess.run(
        [str(ROOT / "scripts" / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "canary started" in result.stdout
    assert "rolled back" in result.stdout
    assert "audit chain intact" in result.stdout
    assert (tmp_path / "data" / "admin-token").exists()
