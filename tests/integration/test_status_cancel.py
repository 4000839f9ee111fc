"""``status --json`` against the simulator's own record of a batch still running and of one
killed mid-run; ``cancel`` against the simulator's view of what still runs; a runner holding
the directory is refused (nothing sent) or stopped with ``--stop-runner``.

The runner is a real CLI process (``python -m runner run``) talking to the simulator over
loopback; ``status`` and ``cancel`` run in this process through ``runner.cli.command``.
"""

from __future__ import annotations

import io
import json
import shlex
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from runner.cli import command
from runner.jobs import JobState
from runner.store import ledger

from .helpers import API_KEY, cli_args, count_events, start_cli, wait_for, write_manifest

pytestmark = pytest.mark.timeout(180)

#: Predictions that outlast every test here: nothing ends on its own while a test looks.
LONG = {"runtime_mean": 60.0, "runtime_min": 50.0, "runtime_max": 70.0}


def processing(sim: Any) -> set[str]:
    """The simulator's own record of the predictions still running: made, not ended."""
    return {c.prediction_id for c in sim.stats.creates} - set(sim.stats.completions)


def ended_as(sim: Any, status: str) -> set[str]:
    return {pid for pid, c in sim.stats.completions.items() if c.status == status}


def cancels_sent(sim: Any) -> int:
    return sum(1 for _, endpoint in sim.stats.api_requests if endpoint == "cancel")


def states(output: Path) -> dict[str, ledger.KeyState]:
    """The ledger replayed by item id (each test item has one key)."""
    records, warnings = ledger.read(output / ledger.LEDGER_NAME)
    assert warnings == []
    return {s.item: s for s in ledger.replay(records).values()}


async def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await command(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def status_json(output: Path) -> dict[str, Any]:
    code, out, err = await cli("status", str(output), "--json")
    assert code == 0, err
    status: dict[str, Any] = json.loads(out)
    return status


def in_flight(status: dict[str, Any]) -> set[str]:
    return {row["prediction_id"] for row in status["in_flight"]}


def resume_command(args: list[str]) -> str:
    """What the lock file must name: the command line after ``python -m runner``."""
    return shlex.join(["i2v-runner", *args[3:]])


def fast_cancel(sim: Any, output: Path, *extra: str) -> list[str]:
    return [
        "cancel", str(output), "--api-base", sim.base_url, "--rate", "1000/1",
        "--poll-min", "0.05", "--wait", "1", *extra,
    ]  # fmt: skip


async def test_status_of_a_running_batch_matches_the_simulator_then_cancel_stops_it(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EACHLABS_API_KEY", API_KEY)
    sim = await simulator(**LONG, cancel_ignored_rate=0.0)
    manifest = write_manifest(tmp_path, count=6)
    output = tmp_path / "out"
    args = cli_args(manifest, sim.base_url, output)  # --concurrency 4
    runner = await start_cli(args)
    try:
        await wait_for(lambda: count_events(output, "submitted") == 4)
        status = await status_json(output)
        assert in_flight(status) == processing(sim) and len(processing(sim)) == 4
        assert status["counts"]["running"] == 4 and status["states"]["submitted"] == 4
        assert status["lock"]["held"] is True
        owner = status["lock"]["owner"]
        assert (owner["pid"], owner["host"]) == (runner.pid, socket.gethostname())
        assert owner["command"] == resume_command(args)
        assert status["last_event"]["seconds_ago"] < 60

        # summary.json is kept current during the run, not only written at its end
        def live_counts() -> dict[str, int]:
            try:
                counts: dict[str, int] = json.loads((output / "summary.json").read_text())["counts"]
            except FileNotFoundError:
                return {}
            return counts

        await wait_for(lambda: live_counts().get("running") == 4)
        assert live_counts() == {"total": 6, "done": 0, "failed": 0, "pending": 2, "running": 4}
        status = await status_json(output)
        assert status["counts"] == {"total": 6, "done": 0, "failed": 0, "pending": 2, "running": 4}

        # a runner holds the directory: cancel refuses, naming it, and sends nothing
        code, _, err = await cli(*fast_cancel(sim, output))
        assert code == 4
        assert f"pid {runner.pid} on {socket.gethostname()}" in err and "--stop-runner" in err
        assert cancels_sent(sim) == 0 and sim.stats.cancels == 0
        assert processing(sim) == in_flight(status)

        # told to stop it: SIGTERM, the runner lets go, then every prediction is cancelled
        code, out, err = await cli(*fast_cancel(sim, output, "--stop-runner"))
        assert await runner.wait() == 130
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
    assert code == 0, out + err
    assert f"stopped the runner: pid {runner.pid}" in out
    assert processing(sim) == set()
    cancelled = ended_as(sim, "cancelled")
    assert cancelled == in_flight(status)
    replayed = states(output)
    assert {s.prediction_id for s in replayed.values()} == cancelled
    assert {(s.state, s.error_code) for s in replayed.values()} == {(JobState.FAILED, "cancelled")}
    assert out.count("  cancelled: recorded failed") == 4

    after = await status_json(output)
    assert after["lock"]["held"] is False
    assert after["last_command"] == resume_command(args)  # the cancel kept the run's command
    assert after["in_flight"] == [] and after["counts"]["failed"] == 4
    assert after["retry_command"] == f"{resume_command(args)} --retry-failed"


async def test_status_of_a_killed_batch_then_cancel_records_what_succeeded_meanwhile(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EACHLABS_API_KEY", API_KEY)
    sim = await simulator(runtime_mean=3.0, runtime_min=2.5, runtime_max=3.5)
    manifest = write_manifest(tmp_path, count=4)
    output = tmp_path / "out"
    args = cli_args(manifest, sim.base_url, output)
    runner = await start_cli(args)
    await wait_for(lambda: count_events(output, "submitted") == 4)
    runner.send_signal(signal.SIGKILL)
    await runner.wait()

    before = processing(sim)
    status = await status_json(output)
    after = processing(sim)
    # predictions only end now (nothing creates any more): what status read lies in between
    assert after <= in_flight(status) <= before and len(in_flight(status)) == 4
    assert in_flight(status) == {s.prediction_id for s in states(output).values()}
    assert status["lock"]["held"] is False
    assert status["lock"]["owner"]["pid"] == runner.pid
    assert status["resume_command"] == resume_command(args)

    # the predictions succeed on the server while no runner watches them
    await wait_for(lambda: processing(sim) == set(), within=60)
    code, out, err = await cli(*fast_cancel(sim, output))
    assert code == 0, out + err
    assert out.count("  succeeded: it ended in success") == 4
    assert sim.stats.cancels == 0  # nothing was running any more: nothing to cancel
    replayed = states(output)
    assert {s.state for s in replayed.values()} == {JobState.SUCCEEDED}
    assert all(s.output_url for s in replayed.values())

    # the next run downloads the paid videos and creates nothing again
    created = len(sim.stats.creates)
    rerun = await start_cli(args)
    _, stderr = await rerun.communicate()
    assert rerun.returncode == 0, stderr.decode()
    assert len(sim.stats.creates) == created
    assert all((output / f"{item}.mp4").is_file() for item in replayed)


async def test_cancels_that_do_not_take_are_left_running_for_the_next_run(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EACHLABS_API_KEY", API_KEY)
    sim = await simulator(**LONG, cancel_ignored_rate=0.5)
    manifest = write_manifest(tmp_path, count=4)
    output = tmp_path / "out"
    args = cli_args(manifest, sim.base_url, output)
    runner = await start_cli(args)
    await wait_for(lambda: count_events(output, "submitted") == 4)
    runner.send_signal(signal.SIGKILL)
    await runner.wait()
    assert in_flight(await status_json(output)) == processing(sim)

    code, out, err = await cli(*fast_cancel(sim, output))
    still = processing(sim)
    assert code == (1 if still else 0), out + err
    replayed = states(output)
    left = {s.prediction_id for s in replayed.values() if s.state is JobState.SUBMITTED}
    cancelled = {s.prediction_id for s in replayed.values() if s.error_code == "cancelled"}
    assert left == still  # exactly those the simulator says still run
    assert cancelled == ended_as(sim, "cancelled")
    assert left | cancelled == {c.prediction_id for c in sim.stats.creates}
    assert out.count("  running: 1 s after the cancel") == len(still)
    assert in_flight(await status_json(output)) == still
