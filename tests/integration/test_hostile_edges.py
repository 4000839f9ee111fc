"""Crashes and hangs that must become clear errors, and an API that cannot be reached.

Each failure gets a one-line error naming the cause, a documented exit code, summary.json
written where it can be, the ledger intact, and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.batch import run_batch
from runner.simulator import OtherHost
from runner.store.ledger import parse

from .conftest import NO_PROFILE_FAULTS
from .helpers import (
    FAST,
    cli_args,
    count_events,
    mp4_frames,
    run_config,
    served,
    start_cli,
    wait_for,
    write_manifest,
)

pytestmark = pytest.mark.timeout(120)


async def run(config: Any, manifest_path: Path) -> Any:
    return await run_batch(config, resume_command="again")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """Make ``paths`` unwritable even for root (``chattr +i``); skip where that is impossible."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a directory read-only for root")
    done: list[Path] = []
    try:
        for path in paths:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("this file system does not support chattr +i")
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True)


# -- the output directory ---------------------------------------------------------------------


async def test_a_finished_batch_in_a_read_only_directory_just_reports_done(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    assert (await run(config, manifest_path)).exit_code == 0
    requests = len(sim.stats.api_requests)
    with immutable(*output.iterdir(), output):
        result = await run(config, manifest_path)
    assert result.exit_code == 0, result.text
    assert "all items are done" in result.text
    # Only the checks' model schema lookup: nothing to create, poll or download.
    assert [e for _, e in sim.stats.api_requests[requests:]] == ["model"]


async def test_a_read_only_directory_with_work_left_stops_before_any_request(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    output.mkdir()
    with immutable(output):
        process = await start_cli(cli_args(manifest_path, sim.base_url, output, "--offline"))
        _, stderr = await process.communicate()
    assert process.returncode == 5, stderr.decode()
    assert "Read-only" in stderr.decode() or "not permitted" in stderr.decode()
    assert b"Traceback" not in stderr
    assert sim.stats.api_requests == [] and sim.stats.creates == []


async def test_an_output_option_naming_a_file_is_a_clear_error(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "a-file"
    output.write_text("not a directory\n")
    process = await start_cli(cli_args(manifest_path, sim.base_url, output))
    _, stderr = await process.communicate()
    assert process.returncode in (2, 5), stderr.decode()
    assert "not a directory" in stderr.decode()
    assert b"Traceback" not in stderr
    assert sim.stats.creates == []


async def test_a_directory_in_the_place_of_one_video_fails_that_item_only(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    (output / "item-001.mp4").mkdir(parents=True)
    config = run_config(manifest_path, sim.base_url, output)
    result = await run(config, manifest_path)
    assert result.exit_code == 1, result.text
    rows = {row["id"]: row for row in result.summary["items"]}
    assert rows["item-001"]["status"] == "failed" and "item-001.mp4" in rows["item-001"]["error"]
    assert rows["item-000"]["status"] == rows["item-002"]["status"] == "done"
    (output / "item-001.mp4").rmdir()
    again = await run(config, manifest_path)
    assert again.exit_code == 0, again.text
    assert len(sim.stats.creates) == 3  # fetched again, not rendered again
    assert mp4_frames(output / "item-001.mp4")[0] > 24


async def test_a_summary_that_cannot_be_written_is_said_with_exit_5(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    (output / "summary.json").mkdir(parents=True)
    result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 5
    assert "summary.json" in result.text
    records, warnings = parse((output / "ledger.jsonl").read_text())
    assert warnings == [] and sum(r["event"] == "downloaded" for r in records) == 2


# -- Retry-After, unreachable API, hung CDN ---------------------------------------------------


async def test_a_huge_retry_after_is_capped_and_logged(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: ``Retry-After: 99999`` stalled every request for 28 hours, silently."""
    sim = await simulator(concurrency=1, retry_after=99999.0)
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    limits = replace(FAST, max_retry_after=0.2)
    with caplog.at_level(logging.WARNING, logger="runner"):
        with anyio.fail_after(60):
            result = await run(
                run_config(manifest_path, sim.base_url, output, limits), manifest_path
            )
    assert result.exit_code in (0, 6), result.text
    assert any("Retry-After" in r.getMessage() for r in caplog.records)


async def test_a_server_that_keeps_asking_to_wait_too_long_stops_the_run_with_exit_6(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(rate_limit=1, rate_window=1000.0, retry_after=99999.0)
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    limits = replace(FAST, max_retry_after=0.05)
    with anyio.fail_after(60):
        result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 6, result.text
    assert result.summary["counts"]["failed"] == 0


async def test_an_api_that_cannot_be_reached_at_start_stops_early_leaving_items_pending(
    tmp_path: Path,
) -> None:
    """Before: the run started and failed its items one by one as NETWORK_ERROR."""
    manifest_path = write_manifest(tmp_path, count=4)
    output = tmp_path / "out"
    base = f"http://127.0.0.1:{closed_port()}"
    limits = replace(FAST, unreachable_at_start=0.5)
    with anyio.fail_after(60):
        result = await run(run_config(manifest_path, base, output, limits), manifest_path)
    assert result.exit_code == 6, result.text
    assert result.summary["counts"]["pending"] == 4
    assert result.summary["counts"]["failed"] == 0


@pytest.mark.parametrize(
    ("outage", "patience", "code"),
    [(0.8, 20.0, 0), (None, 0.5, 6)],
    ids=["a-moment-is-waited-for", "for-good-stops-with-6"],
)
async def test_an_api_lost_mid_batch_is_waited_for_then_given_up_with_nothing_failed(
    simulator: Any, tmp_path: Path, outage: float | None, patience: float, code: int
) -> None:
    """Before: items failed NETWORK_ERROR one by one while the API was away. Now every request
    waits for it (back-off), and past ``unreachable_after`` the run stops, exit 6."""
    sim = await simulator(runtime_mean=0.6, runtime_min=0.5, runtime_max=0.7)
    manifest_path = write_manifest(tmp_path, count=6)
    output = tmp_path / "out"
    limits = replace(FAST, concurrency=2, unreachable_after=patience)
    config = run_config(manifest_path, sim.base_url, output, limits)

    async def go_away() -> None:
        await wait_for(lambda: count_events(output, "submitted") >= 2)
        await sim.set_reachable(False)
        if outage is not None:
            await anyio.sleep(outage)
            await sim.set_reachable(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(go_away)
        with anyio.fail_after(60):
            result = await run(config, manifest_path)
    assert result.exit_code == code, result.text
    assert result.summary["counts"]["failed"] == 0
    if code == 0:
        assert len(sim.stats.creates) == 6
    else:
        assert result.summary["stopped"]["kind"] == "api_unavailable"


async def test_a_hung_cdn_is_given_up_on_with_the_item_and_reason_logged(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 300 s × 5 attempts per item, with only stamina's own line in the log: the whole
    transfer was not bounded, and a failing attempt did not say which item or why."""
    sim = await simulator(cdn_stall=True)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, transfer_stall=0.2, download_timeout=1.5)
    started = anyio.current_time()
    with caplog.at_level(logging.WARNING, logger="runner"), anyio.fail_after(60):
        result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    elapsed = anyio.current_time() - started
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["error_code"] == "DOWNLOAD_FAILED"
    attempts = [r.getMessage() for r in caplog.records if "download attempt" in r.getMessage()]
    assert attempts and all(m.startswith("item-000: ") and "no data" in m for m in attempts)
    # One bound for the whole transfer, retries included: not 5 times the per-attempt time.
    assert elapsed < 3 * limits.download_timeout


# -- the key canary ----------------------------------------------------------------------------


async def test_the_key_appears_in_no_byte_written_and_reaches_no_other_host(
    simulator: Any, tmp_path: Path
) -> None:
    """Every byte the runner writes (output directory, stdout, stderr with -v) and every request
    the CDN/upload host and a redirect target received is searched for the key, over a normal
    batch with failures and one whose polls are redirected to another host."""
    canary = "sk-canary-2f9c41d7e0"
    blobs: list[bytes] = []
    async with OtherHost() as other:
        healthy = await simulator(**NO_PROFILE_FAULTS, failure_rate=0.3, seed=4)
        hostile = await simulator(redirect_polls_to=other.base_url)
        for name, sim in (("healthy", healthy), ("hostile", hostile)):
            manifest_path = write_manifest(tmp_path / name, count=4)
            output = tmp_path / name / "out"
            process = await start_cli(
                cli_args(manifest_path, sim.base_url, output, verbose=True), key=canary
            )
            stdout, stderr = await process.communicate()
            assert process.returncode in (0, 1), stderr.decode()
            blobs += [stdout, stderr, *(p.read_bytes() for p in output.rglob("*") if p.is_file())]
        assert count_events(tmp_path / "healthy" / "out", "downloaded") >= 1
        seen_elsewhere = [*other.requests, *healthy.stats.cdn_requests, *hostile.stats.cdn_requests]
    assert healthy.stats.cdn_requests, "the run never used the CDN or upload host"
    for blob in blobs:
        assert canary.encode() not in blob
    for request in seen_elsewhere:
        assert canary not in json.dumps(request.__dict__, default=str)


# -- what the server says about a prediction ---------------------------------------------------


@pytest.mark.parametrize("reported", [float("nan"), float("inf"), -5.0], ids=["nan", "inf", "neg"])
async def test_an_unusable_cost_is_counted_as_unknown_and_said(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, reported: float
) -> None:
    """Before: costs of nan, 1e999 or negative were taken: ``spent $nan``, NaN in summary.json,
    and a negative cost lowered what the budget counted."""
    sim = await simulator(reported_cost=reported)
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="runner"):
        result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 0, result.text
    text = (output / "summary.json").read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"summary.json holds {constant}")

    summary = json.loads(text, parse_constant=refuse)
    assert summary["cost_usd"] >= 0
    assert all(row["cost"] is None for row in summary["items"])
    assert "nan" not in result.text.lower()
    assert any("counted as unknown" in r.getMessage() for r in caplog.records)


async def test_a_prediction_id_that_is_not_a_plain_id_never_goes_into_a_url(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: an id like ``../../v1/upload/presign?x=`` from a create answer was used in the
    poll's URL path."""
    sim = await simulator(create_answer_id="../../v1/upload/presign?x=")
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 0, result.text  # the real prediction was found by reconciling
    assert len(sim.stats.creates) == 1
    assert served(sim, "presign") == 1  # the one upload: no request went to the presign path


async def test_polls_refused_with_a_4xx_fail_the_item_with_the_real_cause(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a poll error was retried for ever, logged only at debug, and recorded as a
    timeout 30 minutes later."""
    sim = await simulator(poll_error_status=400)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    with anyio.fail_after(30):
        result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["error_code"] == "POLL_ERROR" and "HTTP 400" in row["error"]
    assert row["prediction_id"]  # kept: a later run asks about it again


async def test_polls_failing_with_5xx_are_logged_and_recorded_with_their_cause(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await simulator(poll_error_status=503)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, item_timeout=1.0)
    with caplog.at_level(logging.WARNING, logger="runner"), anyio.fail_after(30):
        result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["error_code"] == "POLL_ERROR" and "HTTP 503" in row["error"]
    assert any("poll failed" in r.getMessage() for r in caplog.records)


async def test_an_upload_refused_by_the_upload_host_fails_with_its_cause_at_once(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: an upload 4xx was retried 5 times and recorded as NETWORK_ERROR."""
    sim = await simulator(upload_refuse_status=403)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    with anyio.fail_after(30):
        result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["error_code"] == "UPLOAD_REFUSED" and "403" in row["error"]
    assert [r.method for r in sim.stats.cdn_requests].count("PUT") == 1
    assert sim.stats.creates == []


async def test_ledger_lines_with_wrong_types_are_reported_by_number_and_the_run_goes_on(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a valid JSON line with ``"path": 123`` crashed the resume with a TypeError."""
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    assert (await run(config, manifest_path)).exit_code == 0
    key = json.loads((output / "ledger.jsonl").read_text().splitlines()[-1])["key"]
    bad = [
        {"ts": "2026-11-23T06:00:00Z", "item": "item-001", "key": key, "event": "downloaded",
         "path": 123, "bytes": 5, "sha256": "x"},
        {"ts": "2026-11-23T06:00:01Z", "item": "item-001", "key": key, "event": "succeeded",
         "output_url": 7, "cost": {}},
    ]  # fmt: skip
    with (output / "ledger.jsonl").open("a") as ledger:
        lines = len((output / "ledger.jsonl").read_text().splitlines())
        ledger.writelines(json.dumps(record) + "\n" for record in bad)
    with caplog.at_level(logging.WARNING, logger="runner"):
        result = await run(config, manifest_path)
    assert result.exit_code == 0, result.text
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"ledger line {lines + 1}: corrupt record skipped") for m in messages)
    assert any(m.startswith(f"ledger line {lines + 2}: corrupt record skipped") for m in messages)
    assert len(sim.stats.creates) == 2
