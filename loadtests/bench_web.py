"""The web editor's numbers (issue 13): ``python -m loadtests.bench_web``.

Starts a ``collab serve`` on embedded defaults with two users (command-line ``collab user
add`` / ``collab token issue`` in its data directory), then runs ``loadtests/web_editor.mjs``
in Node, which drives Debian's Chromium with ``playwright-core``:

* keystroke latency: a key pressed in one browser context to the character in the other
  context's editor (200 keystrokes, 40 ms apart), p50/p99;
* time to an editable section of a 300 KB document, in a fresh browser context (5 runs);
* the bundle's size (``server/web/static``, raw and gzip -9).

Needs ``make install`` (the npm workspace) and ``/usr/bin/chromium``. Markdown to stdout,
JSON to ``loadtests/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtests.bench_core import RESULTS_DIR, machine
from loadtests.harness import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "server" / "web" / "static"
SCRIPT = Path(__file__).resolve().parent / "web_editor.mjs"
USERS = (
    ("ada", "ada@example.com", "Ada Lovelace", "admin"),
    ("bo", "bo@example.com", "Bo Li", "manager"),
    ("cy", "cy@example.com", "Cy Viewer", "viewer"),
)
# Authentication on (real users); the harness keeps rate limits out of the way.
SERVER_ENV = {"COLLAB_INSECURE_DEV": "false", "COLLAB_SNAPSHOT_IDLE_SECONDS": "0.2"}


def collab_cli(data_dir: Path, *args: str) -> str:
    """Run ``collab ARGS --data-dir DATA_DIR``; its standard output (RuntimeError if it fails)."""
    proc = subprocess.run(
        [sys.executable, "-m", "server", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLLAB_LOG_LEVEL": "warning"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"collab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


def add_users(data_dir: Path) -> dict[str, str]:
    """The users of :data:`USERS` in a data directory; a 24 h token for each, by short name."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for short, email, name, role in USERS:
        collab_cli(data_dir, "user", "add", "--email", email, "--name", name, "--role", role)
        tokens[short] = collab_cli(data_dir, "token", "issue", "--user", email).splitlines()[-1]
    return tokens


def bundle_sizes() -> dict[str, dict[str, int]]:
    sizes = {}
    for path in sorted(STATIC.iterdir()):
        if path.suffix in {".js", ".css"}:
            data = path.read_bytes()
            sizes[path.suffix[1:]] = {"bytes": len(data), "gzip": len(gzip.compress(data, 9))}
    return sizes


def render(result: dict[str, Any], command: str) -> str:
    keys = result["keystroke_latency"]
    big = result["editable_big_section"]
    bundle = result["bundle"]
    kb = 1024
    return "\n".join(
        [
            f"**Command:** `{command}`",
            "",
            "| measure | value |",
            "|---|---|",
            f"| keystroke to the other browser's editor, p50 / p99 / max "
            f"({keys['keystrokes']} keys, {keys['key_delay_ms']} ms apart) "
            f"| {keys['p50_ms']} / {keys['p99_ms']} / {keys['max_ms']} ms |",
            f"| time to an editable section of {big['bytes'] // kb} KB, median / max "
            f"({big['runs']} fresh contexts) | {big['median_ms']} / {big['max_ms']} ms |",
            f"| bundle: JavaScript (minified / gzip -9) | {bundle['js']['bytes'] / kb:.0f} KB / "
            f"{bundle['js']['gzip'] / kb:.0f} KB |",
            f"| bundle: CSS (minified / gzip -9) | {bundle['css']['bytes'] / kb:.1f} KB / "
            f"{bundle['css']['gzip'] / kb:.1f} KB |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write the JSON result")
    args = parser.parse_args(argv)
    command = "python -m loadtests.bench_web"
    node = shutil.which("node")
    if node is None:
        print("bench_web: node is not on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        data_dir = Path(tmp)
        tokens = add_users(data_dir)
        with ServerProcess(data_dir, env=SERVER_ENV) as server:
            env = {
                **os.environ,
                "COLLAB_HTTP_URL": server.http_url,
                "COLLAB_TOKENS": json.dumps(tokens),
            }
            proc = subprocess.run(
                [node, str(SCRIPT)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
                env=env,
            )
    if proc.returncode != 0:
        print(f"bench_web: the run failed:\n{proc.stdout}\n{proc.stderr}", file=sys.stderr)
        return 3
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["bundle"] = bundle_sizes()
    print(render(result, command))
    out = args.out or RESULTS_DIR / (
        "bench_web-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": "web editor (issue 13)", "command": command, "machine": machine()}
    out.write_text(json.dumps({**document, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
