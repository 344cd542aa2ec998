"""The README's run command (the demo) and the CLI tour, end to end, on the embedded default."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_promotes_a_good_canary_and_rolls_back_a_bad_one_by_itself(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    env.update(CANARYGUARD_DATA_DIR=str(tmp_path / "data"), COLUMNS="160")
    result = subprocess.run(
        [str(ROOT / "scripts" / "run"), "--duration", "60"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "promotions: 1" in result.stdout
    assert "automatic rollbacks: 1 after" in result.stdout
    assert (tmp_path / "data" / "admin-token").exists()  # the data stays for `status`


def test_tour_script_serves_and_walks_through_a_canary_and_its_rollback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    env.update(
        CANARYGUARD_RUN_ONCE="1",
        CANARYGUARD_DATA_DIR=str(tmp_path / "data"),
        CANARYGUARD_PORT=str(free_port()),
        COLUMNS="160",
    )
    result = subprocess.run(
        [str(ROOT / "scripts" / "tour")],
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
