"""``collab serve`` under a low open-file limit says so at start; a SIGTERM right after its
listening line stops it in order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE as on Linux")


def test_a_low_open_file_limit_is_warned_about_at_start(tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"]
    serve += ["--data-dir", str(tmp_path / "data")]
    # The shell lowers the soft limit and becomes the server (no preexec_fn in a process
    # that may have threads).
    command = ["sh", "-c", 'ulimit -Sn 1000 && exec "$@"', "sh", *serve]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLLAB_INSECURE_DEV": "true"},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # ends when the process does, if it never listens
            lines.append(line)
            if "collab listening on" in line:
                break
    finally:
        process.terminate()  # at once: before uvicorn's own handlers may be in place
        rest, _ = process.communicate(timeout=30)
    output = "".join(lines) + rest
    code = process.returncode
    assert code == 0, output
    assert "collab listening on" in output, output
    assert "the open-file limit is 1000" in output, output
