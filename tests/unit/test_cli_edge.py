"""The command's edge: an error nobody foresaw is one line and exit 70, never a stack dump."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

import runner.batch
from runner.cli import command
from runner.report import EXIT_INTERNAL


async def test_a_bug_before_the_run_is_one_line_and_exit_70_with_the_traceback_at_debug(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [RuntimeError("a\n  b")])

    monkeypatch.setattr(runner.batch, "check_and_run", broken)  # the CLI loads it when run
    out, err = io.StringIO(), io.StringIO()
    with caplog.at_level(logging.DEBUG, logger="runner"):
        code = await command(["validate", str(tmp_path / "m.yaml")], out=out, err=err)
    assert code == EXIT_INTERNAL
    assert err.getvalue().count("\n") == 1  # one line
    assert err.getvalue().startswith("error: internal error (RuntimeError: a b); this is a bug")
    assert "Traceback" not in out.getvalue() + err.getvalue()
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.levelno == logging.DEBUG and record.exc_info[0] is ExceptionGroup
