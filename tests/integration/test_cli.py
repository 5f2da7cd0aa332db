"""The ``collab`` command line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from server.cli import main


def test_migrate_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    assert "relational schema" in first
    assert "applied 0001" in first
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    second = capsys.readouterr().out
    assert "already up to date" in second
    assert "indexes in place" in second
    assert (tmp_path / "content.sqlite3").exists()
    assert (tmp_path / "relational.sqlite3").exists()


def test_invalid_configuration_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLLAB_PORT", "not-a-port")
    assert main(["serve"]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_port_already_taken_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port), "--data-dir", str(tmp_path)])
    assert code == 2
    assert any("cannot listen" in record.getMessage() for record in caplog.records)


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "migrate", "load"):
        assert command in out
