"""The process is prepared for many connections at start: its descriptor table is grown once,
to the open-file limit (capped), instead of by doubling while clients arrive."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from server.ops.process import reserve_descriptors

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="FDSize is read from /proc")


def _run(body: str) -> str:
    """``body`` in a fresh interpreter (a table not grown yet); its printed lines."""
    script = textwrap.dedent(
        """
        import os, resource
        from server.ops.process import reserve_descriptors

        def lower(soft):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        def table():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("FDSize:"):
                        return int(line.split()[1])
        """
    ) + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_table_grows_to_the_limit_at_once_and_no_descriptor_stays_open() -> None:
    out = _run(
        """
        lower(3000)
        before = table()
        opened = sorted(os.listdir("/proc/self/fd"))
        size = reserve_descriptors()
        print(before, size, table(), sorted(os.listdir("/proc/self/fd")) == opened)
        """
    )
    before, size, after, same_open = out.split()
    assert int(before) < 3000
    assert int(size) == 3000
    assert int(after) >= 3000
    assert same_open == "True"


def test_the_cap_bounds_the_table_under_a_high_limit() -> None:
    out = _run(
        """
        print(reserve_descriptors(cap=1000), table())
        """
    )
    size, after = map(int, out.split())
    assert size == 1000
    assert 1000 <= after < 2048


def test_a_descriptor_already_open_at_the_top_is_left_alone() -> None:
    out = _run(
        """
        lower(900)
        keep = os.open("/dev/null", os.O_RDONLY)
        os.dup2(keep, 899)
        size = reserve_descriptors()
        os.fstat(899)  # raises if it was closed
        print(size)
        """
    )
    assert int(out) == 900


def test_nothing_to_reserve_under_a_zero_cap() -> None:
    assert reserve_descriptors(cap=0) == 0
