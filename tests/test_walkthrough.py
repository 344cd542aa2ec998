"""The README's run command on the embedded default: the scripted walkthrough."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from canaryguard.cli import app


def test_walkthrough_rolls_back_and_the_audit_chain_is_intact(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["walkthrough", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "rolled back" in result.output
    assert "audit chain: intact" in result.output
    assert (tmp_path / "data" / "keys.json").stat().st_mode & 0o077 == 0


def test_walkthrough_runs_again_on_the_same_data(tmp_path: Path) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["walkthrough", "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 0, result.output
    assert "payments-gateway/run-2" in result.output
