"""One path from check to video: the plan a dry run prints is the plan a run carries out, and
the library runs the same checks as the CLI."""

from __future__ import annotations

import dataclasses
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner import ManifestError, run_batch
from runner.cli import command
from runner.events import (
    Event,
    ItemChanged,
    Paused,
    RequestRefused,
    RequestSent,
    Said,
    SpendChanged,
)
from runner.jobs import JobState
from runner.report import EXIT_INTERNAL

from .helpers import FAST, ledger_events, run_config, write_manifest

#: The ledger's events that change an item's state (uploads are not one).
_STATES = {state.value for state in JobState}

pytestmark = pytest.mark.timeout(60)


async def cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await command(list(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def plan_row(text: str, name: str) -> int:
    """The count of one row of the printed plan (``  to download      1``)."""
    [line] = [line for line in text.splitlines() if line.strip().startswith(name)]
    return int(line.strip().removeprefix(name).split()[0])


async def test_a_dry_run_plans_what_the_run_then_does_for_a_video_changed_on_disk(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved video changed in place (same size, other bytes) is fetched again by the run.
    Before, the dry run looked at sizes only and promised "already done" while the run, which
    checks the sha256, downloaded it: two plans."""
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    first = await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert first.exit_code == 0, first.text
    video = output / "item-000.mp4"
    data = bytearray(video.read_bytes())
    data[-1] ^= 0xFF  # the same size, another sha256
    video.write_bytes(bytes(data))

    monkeypatch.setenv("EACHLABS_API_KEY", "test-key-not-secret")
    code, text = await cli(
        "run", str(manifest_path), "--dry-run", "--api-base", sim.base_url, "--output", str(output)
    )
    assert code == 0, text
    assert plan_row(text, "to download") == 1
    assert plan_row(text, "already done") == 1
    downloads = sim.stats.downloads
    again = await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert again.exit_code == 0, again.text
    assert sim.stats.downloads == downloads + 1  # exactly what the dry run said


async def test_the_library_runs_the_checks_and_refuses_a_bad_batch_spending_nothing(
    simulator: Any, tmp_path: Path
) -> None:
    """Before, ``runner.run_batch`` skipped every check the CLI makes: a prompt asking for a
    camera move the model does not have was submitted and paid for."""
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    text = manifest_path.read_text().replace("zoom in", "[Moonwalk] zoom in", 1)
    manifest_path.write_text(text.replace("minimax-i2v-01", "minimax-i2v-01-director"))
    output = tmp_path / "out"
    with pytest.raises(ManifestError) as caught:
        await run_batch(run_config(manifest_path, sim.base_url, output, FAST), resume_command="x")
    assert any("Moonwalk" in str(problem) for problem in caught.value.problems)
    assert sim.stats.creates == [] and sim.stats.uploads == 0
    # At most the model schema cache was written (as by ``validate``): no ledger, no video.
    assert not (output / "ledger.jsonl").exists() and not list(output.glob("*.mp4"))


async def test_subscribers_hear_every_record_the_spend_and_the_lines_of_the_log(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    heard: list[Event] = []
    result = await run_batch(
        run_config(manifest_path, sim.base_url, output), resume_command="x", on_event=heard.append
    )
    assert result.exit_code == 0, result.text
    states = [r["event"] for r in ledger_events(output) if r["event"] in _STATES]
    changed = [e for e in heard if isinstance(e, ItemChanged)]
    assert [(e.item_id, e.state.value) for e in changed] == [
        (r["item"], r["event"]) for r in ledger_events(output) if r["event"] in _STATES
    ]
    assert len(states) == 3 * 4  # submitting, submitted, succeeded, downloaded
    spend = [e for e in heard if isinstance(e, SpendChanged)]
    assert spend[-1] == SpendChanged(Decimal("1.29"), Decimal(0))
    said = [e.text for e in heard if isinstance(e, Said)]
    assert any(text.startswith("item-001: submitted as ") for text in said)


async def test_subscribers_hear_every_request_the_server_saw_its_429s_and_the_pauses(
    simulator: Any, tmp_path: Path
) -> None:
    """The window's events match what the server counted: one ``RequestSent`` per API request
    it received, one ``RequestRefused`` per 429 (an account capped at 1 in flight refuses the
    runner's second create), and a ``Paused`` for each 429's Retry-After."""
    sim = await simulator(concurrency=1, retry_after=0.05)
    manifest_path = write_manifest(tmp_path, count=3)
    heard: list[Event] = []
    limits = dataclasses.replace(FAST, concurrency=2)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out", limits),
        resume_command="x",
        on_event=heard.append,
    )
    assert result.exit_code == 0, result.text
    sent = [e for e in heard if isinstance(e, RequestSent)]
    refused = [e for e in heard if isinstance(e, RequestRefused)]
    paused = [e for e in heard if isinstance(e, Paused)]
    assert len(sent) == len(sim.stats.api_requests)
    assert sim.stats.refused_cap > 0
    assert len(refused) == sim.stats.refused_cap + sim.stats.refused_rate
    assert all(e.what.startswith("POST /v1/prediction") for e in refused)
    assert len(paused) == len(refused) and all(e.seconds == 0.05 for e in paused)


async def test_a_bug_mid_run_ends_in_one_line_and_a_summary_and_the_same_command_finishes(
    simulator: Any, tmp_path: Path
) -> None:
    """An error nobody foresaw (here: the observer hook raises when the first prediction ends)
    does not escape as a traceback: the run stops as ``internal`` (exit 70) with a summary, and
    its ledger lets the next run finish the batch without paying for any video twice."""
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"

    def buggy(prediction_id: str, at: float) -> None:
        raise RuntimeError("observer bug")

    result = await run_batch(
        run_config(manifest_path, sim.base_url, output), resume_command="x", observer=buggy
    )
    assert result.exit_code == EXIT_INTERNAL
    summary = json.loads((output / "summary.json").read_text())
    assert summary["stopped"]["kind"] == "internal"
    assert "RuntimeError: observer bug" in summary["stopped"]["message"]
    assert "observer bug" in result.text and "Traceback" not in result.text
    again = await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert again.exit_code == 0, again.text
    assert sorted(create.input["prompt"] for create in sim.stats.creates) == [
        f"scene number {n} slowly comes alive, zoom in" for n in range(3)
    ]
