"""Kill the CLI with SIGKILL mid-batch, again and again, then resume: nothing is paid twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .helpers import API_KEY, ledger_events, load, mp4_frames, write_manifest

pytestmark = pytest.mark.timeout(120)


def cli_args(manifest: Path, base_url: str, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "runner", "-q", "run", str(manifest),
        "--api-base", base_url, "--output", str(output),
        "--poll-min", "0.05", "--rate", "1000/1", "--expected-runtime", "0.5",
    ]  # fmt: skip


async def run_cli(args: list[str], *, kill_after: float | None = None) -> int:
    env = {**os.environ, "EACHLABS_API_KEY": API_KEY}
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    if kill_after is None:
        await process.communicate()
        assert process.returncode is not None
        return process.returncode
    try:
        await asyncio.wait_for(process.wait(), timeout=kill_after)
    except TimeoutError:
        process.send_signal(signal.SIGKILL)
    await process.communicate()
    assert process.returncode is not None
    return process.returncode


async def test_sigkill_at_random_moments_then_resume_creates_each_item_once(
    simulator: Any, tmp_path: Path
) -> None:
    # A slow create answer widens the window between "the server created it" and "submitted".
    sim = await simulator(create_delay=0.15, runtime_mean=0.8, runtime_min=0.5, runtime_max=1.2)
    manifest_path = write_manifest(tmp_path, count=8)
    manifest = load(manifest_path)
    output = tmp_path / "out"
    args = cli_args(manifest_path, sim.base_url, output)
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        code = await run_cli(args, kill_after=rng.uniform(0.6, 2.0))
        if code == -signal.SIGKILL:
            kills += 1
        for path in output.glob("*.mp4"):  # a file with a final name is always complete
            assert mp4_frames(path)[0] > 24
    assert kills >= 3
    assert await run_cli(args) == 0

    created = Counter((c.model, c.input["prompt"], c.image_sha256) for c in sim.stats.creates)
    duplicates = {key: n for key, n in created.items() if n > 1}
    assert duplicates == {}
    assert len(created) == len(manifest.items)
    submitted = {e["prediction_id"] for e in ledger_events(output) if e["event"] == "submitted"}
    assert {c.prediction_id for c in sim.stats.creates} == submitted
    for item in manifest.items:
        assert mp4_frames(output / f"{item.id}.mp4")[0] > 24
    assert not list(output.glob("*.part"))
