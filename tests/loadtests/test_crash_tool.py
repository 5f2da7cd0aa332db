"""The crash tool of loadtests/ runs, checks what it should, and refuses unbounded runs."""

from __future__ import annotations

import pytest

from loadtests import crash


@pytest.mark.slow
def test_a_small_crash_run_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code = crash.main(["--rooms", "4", "--writers", "1", "--watchers", "1", "--edits", "400"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "nothing lost" in out
    assert "rooms missing something: 0" in out


def test_unbounded_runs_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert crash.main(["--rooms", "100000"]) == 2
    assert crash.main(["--rounds", "0"]) == 2
    assert "--rooms must be" in capsys.readouterr().err


def test_covers_compares_state_vectors() -> None:
    assert crash.covers({1: 5, 2: 3}, {1: 5})
    assert not crash.covers({1: 4}, {1: 5})
    assert not crash.covers({}, {7: 1})
