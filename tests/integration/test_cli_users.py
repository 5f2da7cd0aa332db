"""``collab user list / get / update / reactivate / delete`` (docs/administration.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.cli import main
from server.identity import admin
from server.settings import Settings


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_user_subcommands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    for email, role, department in (
        ("ada@example.com", "admin", "it"),
        ("bob@example.com", "viewer", "sales"),
        ("cy@example.com", "viewer", "it"),
    ):
        argv = ["user", "add", "--email", email, "--name", email[:3], "--role", role]
        assert _run([*argv, "--department", department, *data], capsys)[0] == 0
    code, out, _ = _run(["user", "list", "--role", "viewer", "--department", "it", *data], capsys)
    assert code == 0
    assert [line.split("\t")[1] for line in out.splitlines()] == ["cy@example.com"]
    code, out, _ = _run(
        ["user", "update", "bob@example.com", "--name", "Robert", "--no-department", *data],
        capsys,
    )
    assert (code, out.split("\t")[2]) == (0, "Robert")
    code, out, _ = _run(["user", "get", "bob@example.com", *data], capsys)
    assert out.split("\t")[5] == "-"  # no department any more
    settings = Settings(data_dir=tmp_path)

    async def suspend() -> None:
        async with await admin.open_stores(settings) as stores:
            user = await admin.find_user(stores, "bob@example.com")
            await stores.users.suspend(user.id)

    asyncio.run(suspend())
    code, out, _ = _run(["user", "list", "--status", "suspended", *data], capsys)
    assert "bob@example.com" in out
    code, out, _ = _run(["user", "reactivate", "bob@example.com", *data], capsys)
    assert (code, out.strip().split("\t")[-1]) == (0, "active")
    code, out, _ = _run(["user", "delete", "cy@example.com", *data], capsys)
    assert (code, out.strip().split("\t")[-1]) == (0, "deleted")
    code, out, _ = _run(["user", "list", *data], capsys)
    assert "cy@example.com" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["user", "get", "nobody@example.com"], "no user"),
        (["user", "update", "nobody@example.com", "--name", "x"], "no user"),
        (["user", "update", "ada@example.com"], "nothing to change"),
        (["user", "reactivate", "not-an-id"], "no user"),
        (["user", "delete", "nobody@example.com"], "no user"),
    ],
)
def test_user_subcommand_errors_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    data = ["--data-dir", str(tmp_path)]
    add = ["user", "add", "--email", "ada@example.com", "--name", "Ada", "--role", "admin"]
    assert main([*add, *data]) == 0
    capsys.readouterr()
    code, _, err = _run([*argv, *data], capsys)
    assert code == 1
    assert message in err
    code, out, _ = _run(["user", "get", "ada@example.com", *data], capsys)
    assert "\tAda\tadmin\tactive" in out  # unchanged
