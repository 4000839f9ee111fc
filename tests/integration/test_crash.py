"""Kill the CLI with SIGKILL mid-batch, again and again, then resume: nothing is paid twice."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    API_KEY,
    count_events,
    ledger_events,
    load,
    mp4_frames,
    served,
    write_manifest,
)

pytestmark = pytest.mark.timeout(600)

#: Kills per crash test: 5 in the default suite, more under ``make stress`` (CRASH_KILLS=30).
KILLS = int(os.environ.get("CRASH_KILLS", "5"))


def cli_args(manifest: Path, base_url: str, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "runner", "-q", "run", str(manifest),
        "--api-base", base_url, "--output", str(output),
        "--poll-min", "0.05", "--rate", "1000/1", "--expected-runtime", "1", "--concurrency", "4",
        "--reconcile-wait", "0.5",
    ]  # fmt: skip


def sent_at_least(output: Path, target: int) -> bool:
    return count_events(output, "submitting") >= target


def past(deadline: float) -> bool:
    return asyncio.get_running_loop().time() > deadline


async def run_cli(args: list[str], *, kill_when: Callable[[], bool] | None = None) -> int:
    """Run the CLI; with ``kill_when``, SIGKILL it as soon as that becomes true (if it does)."""
    env = {**os.environ, "EACHLABS_API_KEY": API_KEY}
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    if kill_when is not None:
        while process.returncode is None and not kill_when():  # noqa: ASYNC110 (polls a file)
            await asyncio.sleep(0.005)
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
    _, stderr = await process.communicate()
    assert process.returncode is not None
    assert b"Traceback" not in stderr, stderr.decode()
    return process.returncode


async def test_sigkill_at_random_moments_then_resume_creates_each_item_once(
    simulator: Any, tmp_path: Path
) -> None:
    # A slow create answer widens the window between "the server created it" and "submitted".
    sim = await simulator(create_delay=0.15, runtime_mean=1.0, runtime_min=0.8, runtime_max=1.4)
    manifest_path = write_manifest(tmp_path, count=max(20, 4 * KILLS))
    manifest = load(manifest_path)
    output = tmp_path / "out"
    args = cli_args(manifest_path, sim.base_url, output)
    rng = random.Random(7)
    kills = 0
    for round_ in range(KILLS):
        if round_ % 2 == 0:
            # Right after a create was sent: the server makes the prediction, the answer is lost.
            target = count_events(output, "submitting") + rng.randint(1, 3)
            code = await run_cli(args, kill_when=partial(sent_at_least, output, target))
        else:
            deadline = asyncio.get_running_loop().time() + rng.uniform(0.3, 1.5)
            code = await run_cli(args, kill_when=partial(past, deadline))
        kills += code == -signal.SIGKILL
        for path in output.glob("*.mp4"):  # a file with a final name is always complete
            assert mp4_frames(path)[0] > 24
    assert kills >= KILLS - 1
    assert await run_cli(args) == 0

    created = Counter((c.model, c.input["prompt"], c.image_sha256) for c in sim.stats.creates)
    duplicates = {key: n for key, n in created.items() if n > 1}
    assert duplicates == {}
    assert len(created) == len(manifest.items)
    events = ledger_events(output)
    # Some kills fell between a create and its answer, and were settled by reconciliation.
    assert any(e.get("reconciled") for e in events)
    submitted = {e["prediction_id"] for e in events if e["event"] == "submitted"}
    assert {c.prediction_id for c in sim.stats.creates} == submitted
    for item in manifest.items:
        assert mp4_frames(output / f"{item.id}.mp4")[0] > 24
    assert not list(output.glob("*.part"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_sigint_or_sigterm_stops_cleanly_with_130_and_the_resume_command(
    simulator: Any, tmp_path: Path, signum: signal.Signals
) -> None:
    sim = await simulator(runtime_mean=1.0, runtime_min=0.8, runtime_max=1.4)
    manifest_path = write_manifest(tmp_path, count=12)
    output = tmp_path / "out"
    args = cli_args(manifest_path, sim.base_url, output)
    env = {**os.environ, "EACHLABS_API_KEY": API_KEY}
    args.remove("-q")
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    while count_events(output, "submitted") < 2:  # noqa: ASYNC110 (polls a file)
        await asyncio.sleep(0.005)
    process.send_signal(signum)
    stdout, stderr = await process.communicate()
    assert process.returncode == 130, stderr.decode()
    assert "to resume: i2v-runner" in stdout.decode()
    assert API_KEY not in stdout.decode() + stderr.decode()
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["done"] < 12
    created_before = len(sim.stats.creates)
    assert created_before < 12  # it stopped submitting
    assert await run_cli(args) == 0
    assert len(sim.stats.creates) == 12
    created = Counter(str(c.input["prompt"]) for c in sim.stats.creates)
    assert set(created.values()) == {1}


async def test_a_second_runner_on_the_same_output_exits_at_once_touching_nothing(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(runtime_mean=1.0, runtime_min=0.8, runtime_max=1.4)
    manifest_path = write_manifest(tmp_path, count=8)
    output = tmp_path / "out"
    args = cli_args(manifest_path, sim.base_url, output)
    env = {**os.environ, "EACHLABS_API_KEY": API_KEY}
    first = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    while count_events(output, "submitted") < 1:  # noqa: ASYNC110 (polls a file)
        await asyncio.sleep(0.005)
    ledger_before = (output / "ledger.jsonl").read_bytes()
    second = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await second.communicate()
    assert second.returncode == 4
    assert "another runner is already working in" in stderr.decode()
    # it refused before its own checks: the only schema lookup is the first runner's
    assert served(sim, "model") == 1
    assert (output / "ledger.jsonl").read_bytes().startswith(ledger_before)
    assert await first.wait() == 0
    created = Counter(str(c.input["prompt"]) for c in sim.stats.creates)
    assert set(created.values()) == {1} and len(created) == 8
