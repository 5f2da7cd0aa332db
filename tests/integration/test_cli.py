"""The ``collab`` command line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from server.cli import main
from server.identity import admin
from server.settings import Settings


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


def test_users_and_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    # The embedded database is migrated on first use: no 'collab migrate' needed first.
    assert (
        main(
            ["user", "add", "--email", "Ada@Example.com", "--name", "Ada", "--role", "admin", *data]
        )
        == 0
    )
    user_id = capsys.readouterr().out.split("\t")[0]
    assert (
        main(
            [
                "user",
                "add",
                "--email",
                "ada@example.com",
                "--name",
                "Ada",
                "--role",
                "viewer",
                *data,
            ]
        )
        == 1
    )
    assert "already exists" in capsys.readouterr().err
    assert main(["user", "list", *data]) == 0
    assert "ada@example.com" in capsys.readouterr().out
    assert (
        main(
            ["token", "issue", "--user", "ada@example.com", "--ttl", "15m", "--doc", "plan", *data]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    settings = Settings(data_dir=tmp_path)
    identity = admin.token_service(settings).verify(token)
    assert identity.user_id == user_id
    assert identity.may_open("plan")
    assert not identity.may_open("other")
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "issue", "--user", "nobody@example.com"], "no user"),
        (["token", "issue", "--user", "x@example.com", "--ttl", "5y"], "not a duration"),
        (["user", "add", "--email", "not-an-email", "--name", "N", "--role", "viewer"], "email"),
    ],
)
def test_operator_errors_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*argv, "--data-dir", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err
