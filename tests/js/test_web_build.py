"""The committed web assets (``server/web/static``) are what ``web/`` builds today, and the
server serves them with the right cache headers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx2
import pytest

from server.api.web import STATIC_DIR
from tests.conftest import StartServer
from tests.js.conftest import ROOT, node_executable

pytestmark = pytest.mark.interop


def test_a_rebuild_reproduces_the_committed_assets(js_node_modules: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [node_executable(), str(ROOT / "web" / "build.mjs"), "--outdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    built = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in STATIC_DIR.iterdir()}
    assert sorted(built) == sorted(committed), "run `make web` and commit server/web/static"
    for name, data in built.items():
        assert data == committed[name], f"{name} differs: run `make web` and commit it"


async def test_the_page_and_its_assets_are_served(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        for path in ("/", "/d/q3-plan", "/d/q3-plan/market"):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.headers["cache-control"] == "no-cache"
            assert page.headers["referrer-policy"] == "no-referrer"
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert '<div id="app">' in page.text
        asset = next(p.name for p in STATIC_DIR.iterdir() if p.suffix == ".js")
        got = await http.get(f"/static/{asset}")
        assert got.status_code == 200
        assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert got.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        missing = await http.get("/static/app-NOPE.js")
        assert missing.status_code == 404
        assert "immutable" not in missing.headers.get("cache-control", "")
        assert (await http.get("/d/bad id/x")).status_code == 404
        assert (await http.post("/")).status_code == 405
