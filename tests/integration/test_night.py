"""The night shift against the time-compressed simulator (runs of about a second): a deadline
that fits only part of the batch sends no create after the point where its item could not
finish, every item it created ends done (none cancelled, none lost), the run ends soon after
the deadline and its grace with exit 75, and the next run finishes the rest with no create
sent twice. The CLI's per-run cap ends the same way and prints the next night's command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner import run_batch
from runner.cli import command
from runner.night import Night
from runner.report import EXIT_NOT_FINISHED

from .helpers import API_KEY, FAST, run_config, write_manifest

pytestmark = pytest.mark.timeout(120)

RUNTIME = {"runtime_mean": 1.0, "runtime_min": 0.8, "runtime_max": 1.2}
LIMITS = dataclasses.replace(FAST, concurrency=2, expected_runtime=1.0, poll_min=0.05)
NIGHT = 4.0  # seconds: room for about three waves of two
GRACE = 1.0


def prompts(sim: Any) -> Counter[str]:
    """How many predictions the simulator made for each prompt (each item has its own)."""
    return Counter(str(create.input["prompt"]) for create in sim.stats.creates)


async def test_a_deadline_creates_only_what_can_finish_and_the_next_run_does_the_rest(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(concurrency=2, **RUNTIME)
    manifest = write_manifest(tmp_path, count=12)
    output = tmp_path / "out"
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = datetime.now(UTC) + timedelta(seconds=NIGHT)
    night = Night(deadline=deadline, grace=GRACE)
    config = run_config(manifest, sim.base_url, output, LIMITS, night=night)
    result = await run_batch(config)
    ended = loop.time()

    assert result.exit_code == EXIT_NOT_FINISHED, result.text
    assert result.summary["night"]["stopped_by"] == "deadline"
    created = prompts(sim)
    assert 0 < len(created) < 12
    # No create went after the point where even the fastest run could not have finished.
    assert all(create.t + RUNTIME["runtime_min"] <= began + NIGHT for create in sim.stats.creates)
    # Every item created tonight ended done, none cancelled or lost; the rest was never sent.
    rows = result.summary["items"]
    assert sum(1 for row in rows if row["status"] == "done") == len(created)
    assert sum(1 for row in rows if row["status"] == "pending") == 12 - len(created)
    assert sim.stats.cancels == 0
    assert all(done.status == "success" for done in sim.stats.completions.values())
    # It ended by the deadline and its grace (with room for a slow machine), not later.
    assert ended <= began + NIGHT + GRACE + 3.0
    assert "next night:" in result.text

    again = await run_batch(run_config(manifest, sim.base_url, output, LIMITS))
    assert again.exit_code == 0, again.text
    assert len(list(output.glob("*.mp4"))) == 12
    assert set(prompts(sim).values()) == {1}  # no item created twice
    assert len(prompts(sim)) == 12


async def test_max_items_from_the_command_line_exits_75_with_the_next_nights_command(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(**RUNTIME)
    manifest = write_manifest(tmp_path, count=5)
    output = tmp_path / "out"
    monkeypatch.setenv("EACHLABS_API_KEY", API_KEY)
    args = [
        "run", str(manifest), "--api-base", sim.base_url, "--output", str(output),
        "--poll-min", "0.05", "--rate", "1000/1", "--expected-runtime", "1",
        "--no-progress", "--max-items", "2",
    ]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    code = await command(args, out=out, err=err)
    assert code == EXIT_NOT_FINISHED, out.getvalue() + err.getvalue()
    assert len(sim.stats.creates) == 2
    summary = json.loads((output / "summary.json").read_text())
    assert summary["night"]["stopped_by"] == "max_items"
    assert summary["counts"] == {"total": 5, "done": 2, "failed": 0, "pending": 3, "running": 0}
    text = out.getvalue() + err.getvalue()
    assert "next night: i2v-runner run" in text and "--max-items 2" in text
    # The morning's status says so, and its JSON carries the summary's night.
    shown = io.StringIO()
    assert await command(["status", str(output)], out=shown, err=io.StringIO()) == 0
    assert "the last run stopped for the night (max_items)" in shown.getvalue()
    shown = io.StringIO()
    assert await command(["status", str(output), "--json"], out=shown, err=io.StringIO()) == 0
    assert json.loads(shown.getvalue())["night"] == {"stopped_by": "max_items", "deadline": None}
    # The same command the next night takes the next two.
    code = await command(args, out=io.StringIO(), err=io.StringIO())
    assert code == EXIT_NOT_FINISHED
    assert len(sim.stats.creates) == 4
    assert set(prompts(sim).values()) == {1}


async def test_the_plan_says_what_fits_tonight(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(**RUNTIME)
    manifest = write_manifest(tmp_path, count=40)
    monkeypatch.setenv("EACHLABS_API_KEY", API_KEY)
    out = io.StringIO()
    code = await command(
        [
            "run", str(manifest), "--dry-run", "--api-base", sim.base_url,
            "--output", str(tmp_path / "out"), "--expected-runtime", "200", "--max-wall", "15m",
        ],
        out=out,
        err=io.StringIO(),
    )  # fmt: skip
    assert code == 0
    (line,) = [line for line in out.getvalue().splitlines() if "tonight" in line]
    # 10 slots, runs fitted at ~313 s + a poll step + a download: three waves in 15 minutes
    # (the fourth would start at ~645 s and end past 900), at $0.43 each.
    assert "about 30 of 40 items to submit finish, ≈ $12.90" in line
    assert "the other 10 take about 1 more night" in line
    assert sim.stats.creates == []
