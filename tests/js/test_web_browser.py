"""The web editor in Chromium (``web/test/editor.test.mjs``) against a real server.

Debian's ``chromium`` is driven by ``playwright-core`` with its executable path; no browser is
ever downloaded. When it is missing and the tests run as root, it is installed with
``apt-get install -y chromium``; otherwise the test fails and says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.js.conftest import ROOT, JsServer, RunNode, assert_all_passed

pytestmark = [pytest.mark.interop, pytest.mark.timeout(400)]

CHROMIUM = "/usr/bin/chromium"
APT_TIMEOUT_S = 900


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing and we are root."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("Chromium is missing: install Debian's package (apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False, env=env
        )
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr}")
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("apt-get installed chromium but it is not on PATH")
    return found


def test_web_editor_in_chromium(js_server: JsServer, run_node: RunNode, chromium: str) -> None:
    env = js_server.env() | {"COLLAB_CHROMIUM": chromium}
    proc = run_node(ROOT / "web" / "test" / "editor.test.mjs", env, timeout=360)
    assert_all_passed(proc)
