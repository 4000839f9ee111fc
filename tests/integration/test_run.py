"""The whole path against the simulator over loopback: manifest → predictions → MP4s → ledger."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.batch import run_batch
from runner.errors import LockedError
from runner.store.outdir import output_lock

from .helpers import (
    API_KEY,
    FAST,
    ledger_events,
    load,
    mp4_frames,
    resembles,
    run_config,
    write_manifest,
)

pytestmark = pytest.mark.timeout(90)


def beyond_the_checks(sim: Any) -> int:
    """API requests other than the checks' model schema lookup (one per model, every run)."""
    return sum(1 for _, endpoint in sim.stats.api_requests if endpoint != "model")


async def test_batch_renders_every_item_and_a_rerun_does_nothing(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=6)
    manifest = load(manifest_path)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)

    result = await run_batch(config, resume_command="again")

    assert result.exit_code == 0, result.text
    assert result.summary["counts"] == {
        "total": 6,
        "done": 6,
        "failed": 0,
        "pending": 0,
        "running": 0,
    }
    images = sorted((manifest_path.parent / "images").glob("*.png"))
    for item in manifest.items:
        video = output / f"{item.id}.mp4"
        frames, first = mp4_frames(video)
        assert frames > 24
        assert item.image_path is not None and resembles(first, item.image_path, images)
    events = ledger_events(output)
    for item in manifest.items:
        mine = [e["event"] for e in events if e["item"] == item.id and e["event"] != "uploaded"]
        assert mine == ["submitting", "submitted", "succeeded", "downloaded"]
    submitted = [e for e in events if e["event"] == "submitted"]
    assert all(e["prediction_id"] and e["ts"] and e["key"] for e in submitted)
    rows = {row["id"]: row for row in json.loads((output / "summary.json").read_text())["items"]}
    assert all(
        row["status"] == "done" and row["cost"] == 0.43 and len(row["sha256"]) == 64
        for row in rows.values()
    )
    assert len(sim.stats.creates) == 6
    assert sim.stats.uploads == len({item.image_sha256 for item in manifest.items})

    before = (
        len(sim.stats.creates),
        sim.stats.presigns,
        sim.stats.uploads,
        sim.stats.downloads,
        beyond_the_checks(sim),
    )
    again = await run_batch(config, resume_command="again")
    after = (
        len(sim.stats.creates),
        sim.stats.presigns,
        sim.stats.uploads,
        sim.stats.downloads,
        beyond_the_checks(sim),
    )
    assert again.exit_code == 0
    assert after == before
    assert "all items are done" in again.text


async def test_in_flight_never_exceeds_the_concurrency(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator(concurrency=3)
    manifest_path = write_manifest(tmp_path, count=9)
    config = run_config(manifest_path, sim.base_url, tmp_path / "out", replace(FAST, concurrency=3))
    result = await run_batch(config, resume_command="x")
    assert result.exit_code == 0, result.text
    assert sim.stats.max_in_flight == 3
    assert sim.stats.refused_cap == 0


async def test_a_429_at_the_cap_is_waited_out_never_an_item_failure(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(concurrency=2)
    manifest_path = write_manifest(tmp_path, count=6)
    config = run_config(manifest_path, sim.base_url, tmp_path / "out", replace(FAST, concurrency=5))
    result = await run_batch(config, resume_command="x")
    assert result.exit_code == 0, result.text
    assert sim.stats.refused_cap > 0
    assert sim.stats.max_in_flight <= 2
    assert len(sim.stats.creates) == 6


async def test_requests_stay_within_the_rate_limit_in_every_window(
    simulator: Any, tmp_path: Path
) -> None:
    limit, window = 12, 0.5
    sim = await simulator(rate_limit=limit, rate_window=window)
    manifest_path = write_manifest(tmp_path, count=6)
    limits = replace(FAST, rate_limit=limit, rate_window=window)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out", limits),
        resume_command="x",
    )
    assert result.exit_code == 0, result.text
    times = sorted(t for t, _ in sim.stats.api_requests)
    assert len(times) > limit  # the budget was actually exercised
    busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    assert busiest <= limit
    assert sim.stats.refused_rate == 0


@pytest.mark.parametrize(
    "shape", ["list", "string", "json_string", "object_url", "object_video_url"]
)
async def test_every_output_shape_downloads(simulator: Any, tmp_path: Path, shape: str) -> None:
    sim = await simulator(output_shape=shape)
    manifest_path = write_manifest(tmp_path, count=1)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out"),
        resume_command="x",
    )
    assert result.exit_code == 0, result.text


@pytest.mark.parametrize(
    ("error_shape", "legacy", "message"),
    [("full", False, "PROVIDER_FAILED"), ("dispatch", False, None), ("logs", True, None)],
)
async def test_failures_are_recorded_with_the_server_message(
    simulator: Any, tmp_path: Path, error_shape: str, legacy: bool, message: str | None
) -> None:
    sim = await simulator(failure_rate=1.0, error_shape=error_shape, legacy_statuses=legacy)
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    result = await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert result.exit_code == 1
    rows = result.summary["items"]
    assert [row["status"] for row in rows] == ["failed", "failed"]
    assert all(row["error"] for row in rows)
    if message:
        assert all(row["error_code"] == message for row in rows)
    assert len(sim.stats.creates) == 2  # a non-retryable failure is not resubmitted
    assert "--retry-failed" in result.text
    # A later run leaves failed items alone unless asked.
    again = await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert again.exit_code == 1 and len(sim.stats.creates) == 2


async def test_retryable_failures_are_resubmitted_up_to_max_attempts(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(retryable_failure_rate=1.0)
    manifest_path = write_manifest(tmp_path, count=2)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out", replace(FAST, max_attempts=3)),
        resume_command="x",
    )
    assert result.exit_code == 1
    assert Counter(c.input["prompt"] for c in sim.stats.creates) == {
        "scene number 0 slowly comes alive, zoom in": 3,
        "scene number 1 slowly comes alive, zoom in": 3,
    }


async def test_a_refused_key_stops_submitting_with_exit_3(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator(api_keys=frozenset({"the-right-key"}))
    manifest_path = write_manifest(tmp_path, count=3)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out"),
        resume_command="x",
    )
    assert result.exit_code == 3
    assert len(sim.stats.creates) == 0
    assert "the API key is missing or invalid" in result.text  # the real 401 says only {}


async def test_an_exhausted_balance_stops_submitting_but_finishes_what_runs(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(balance_usd=0.43 * 2)
    manifest_path = write_manifest(tmp_path, count=4)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out"),
        resume_command="x",
    )
    assert result.exit_code == 3
    counts = result.summary["counts"]
    assert (
        counts["done"] >= 1 and counts["done"] == len(sim.stats.creates) and counts["pending"] >= 1
    )


async def test_a_second_runner_on_the_same_directory_is_refused(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    output.mkdir()
    with output_lock(output), pytest.raises(LockedError, match="another runner"):
        await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert not (output / "ledger.jsonl").exists()
    assert len(sim.stats.api_requests) == 0


async def test_the_key_is_never_written_anywhere(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator(failure_rate=0.5)
    manifest_path = write_manifest(tmp_path, count=4)
    output = tmp_path / "out"
    result = await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert API_KEY not in result.text
    for path in output.iterdir():
        if path.suffix in (".jsonl", ".json"):
            assert API_KEY not in path.read_text()


async def test_retry_after_on_429_is_honoured_and_creates_wait_for_a_free_slot(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(concurrency=2, retry_after=0.2)
    manifest_path = write_manifest(tmp_path, count=5)
    config = run_config(manifest_path, sim.base_url, tmp_path / "out", replace(FAST, concurrency=4))
    result = await run_batch(config, resume_command="x")
    assert result.exit_code == 0, result.text
    assert len(sim.stats.creates) == 5 and sim.stats.max_in_flight <= 2
    # A 429 pauses every create (and, with Retry-After, every request): refusals stay few,
    # not one per poll interval per waiting item.
    assert 0 < sim.stats.refused_cap <= 6


async def test_a_prediction_past_its_deadline_is_cancelled_and_failed(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(
        runtime_mean=30.0, runtime_min=30.0, runtime_max=30.0, cancel_ignored_rate=0.0
    )
    manifest_path = write_manifest(tmp_path, count=2)
    config = run_config(
        manifest_path, sim.base_url, tmp_path / "out", replace(FAST, item_timeout=0.5)
    )
    result = await run_batch(config, resume_command="x")
    assert result.exit_code == 1
    assert [(row["status"], row["error_code"]) for row in result.summary["items"]] == [
        ("failed", "timeout"),
        ("failed", "timeout"),
    ]
    assert {c.status for c in sim.stats.completions.values()} == {"cancelled"}
    assert result.summary["cost_usd"] == 0


async def test_a_cancel_the_server_ignores_still_gets_its_video_downloaded(
    simulator: Any, tmp_path: Path
) -> None:
    """Cancel is best effort: a prediction that finishes anyway is billed, so it is kept."""
    sim = await simulator(
        runtime_mean=1.0, runtime_min=1.0, runtime_max=1.0, cancel_ignored_rate=1.0
    )
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    limits = replace(FAST, item_timeout=0.3, cancel_grace=10.0)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, output, limits),
        resume_command="x",
    )
    assert result.exit_code == 0, result.text
    assert [name for _, name in sim.stats.api_requests].count("cancel") >= 1  # asked, ignored
    assert {c.status for c in sim.stats.completions.values()} == {"success"}
    for row in result.summary["items"]:
        assert mp4_frames(output / row["path"])[0] > 24


async def test_a_cancel_still_running_after_the_grace_is_left_for_a_later_run(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(
        runtime_mean=30.0, runtime_min=30.0, runtime_max=30.0, cancel_ignored_rate=1.0
    )
    manifest_path = write_manifest(tmp_path, count=1)
    limits = replace(FAST, item_timeout=0.3, cancel_grace=0.3)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out", limits),
        resume_command="x",
    )
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["error_code"] == "timeout" and "a later run asks again" in row["error"]
    assert row["prediction_id"]


@pytest.mark.parametrize(
    "factor", [100.0, 0.01], ids=["prior-100x-too-long", "prior-100x-too-short"]
)
async def test_a_prior_wrong_by_100x_costs_polls_not_a_stall(
    simulator: Any, tmp_path: Path, factor: float
) -> None:
    sim = await simulator(runtime_mean=0.3, runtime_min=0.3, runtime_max=0.3)
    manifest_path = write_manifest(tmp_path, count=6)
    limits = replace(FAST, poll_min=0.05, expected_runtime=0.3 * factor)
    started = anyio.current_time()
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out", limits),
        resume_command="x",
    )
    elapsed = anyio.current_time() - started
    assert result.exit_code == 0, result.text
    # a stall would wait for the prior (30 s): the batch takes a few run times at most
    assert elapsed < 10 * 0.3 + 5.0
    polls = sum(1 for _, name in sim.stats.api_requests if name == "get")
    assert polls / 6 < 20  # a few extra polls each, not a poll every poll_min for 30 s
