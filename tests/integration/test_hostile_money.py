"""Never pay twice, under attack: stops, stale resumes, nonsense answers, torn records, lost
predictions, bogus videos, dead uploads and redirects, each against the simulator over loopback.

Each test pins down one defect a hostile review reproduced; the docstring says what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import socket
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.batch import run_batch
from runner.simulator import OtherHost
from runner.store.ledger import parse

from .helpers import (
    FAST,
    cli_args,
    count_events,
    ledger_events,
    mp4_frames,
    run_config,
    served,
    start_cli,
    url_manifest,
    wait_for,
    write_manifest,
)

pytestmark = pytest.mark.timeout(120)


def per_prompt(sim: Any) -> Counter[str]:
    return Counter(str(c.input["prompt"]) for c in sim.stats.creates)


async def run(config: Any, manifest_path: Path) -> Any:
    return await run_batch(config, resume_command="again")


def submitting_before(output: Path, wall: float) -> int:
    """``submitting`` records the ledger holds with a time stamp at or before ``wall``."""
    count = 0
    for event in ledger_events(output):
        if event["event"] == "submitting":
            stamp = event["ts"].replace("Z", "+00:00")
            if datetime.fromisoformat(stamp).timestamp() <= wall + 0.001:
                count += 1
    return count


# -- 1. stop means stop ---------------------------------------------------------------------


async def test_a_stop_sends_no_create_that_was_still_waiting_for_the_request_budget(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: the whole create, budget wait included, was shielded from cancellation, so
    creates waiting for the budget went out long after SIGTERM (7 paid videos, 27 s later)."""
    sim = await simulator(runtime_mean=2.0, runtime_min=1.5, runtime_max=2.5)
    manifest_path = await url_manifest(tmp_path, sim, count=10)  # nothing to upload
    output = tmp_path / "out"
    # Three requests per 2 s: the creates queue up behind the request window.
    args = cli_args(manifest_path, sim.base_url, output, "--rate", "3/2", "--concurrency", "10")
    process = await start_cli(args)
    await wait_for(lambda: count_events(output, "submitted") >= 1)
    loop = asyncio.get_running_loop()
    signalled, signalled_wall = loop.time(), time.time()
    process.send_signal(signal.SIGTERM)
    _stdout, stderr = await process.communicate()
    exited = loop.time()
    assert process.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    # No create reached the server after the signal (beyond the moment one already on the
    # wire takes over loopback), and each had its write-ahead record before the signal.
    assert [c.t for c in sim.stats.creates if c.t > signalled + 0.5] == []
    assert len(sim.stats.creates) == submitting_before(output, signalled_wall)
    assert len(sim.stats.creates) < 10
    assert exited - signalled < 10  # a few seconds, not the budget's whole queue
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["counts"]["pending"] == 10 - len(sim.stats.creates)
    # The resume creates the rest, each exactly once.
    again = await start_cli(cli_args(manifest_path, sim.base_url, output, "--concurrency", "10"))
    _, stderr = await again.communicate()
    assert again.returncode == 0, stderr.decode()
    assert set(per_prompt(sim).values()) == {1} and len(sim.stats.creates) == 10


async def test_a_second_sigterm_still_writes_the_summary_and_keeps_the_ledger_consistent(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: the second SIGTERM (coreutils ``timeout`` sends one to the group) killed the
    runner outright: exit 143, no summary.json."""
    sim = await simulator(create_delay=3.0)  # a create's answer is held: it is on the wire
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    process = await start_cli(cli_args(manifest_path, sim.base_url, output))
    await wait_for(lambda: count_events(output, "submitting") >= 1)
    process.send_signal(signal.SIGTERM)
    await anyio.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = await process.communicate()
    assert process.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] is True
    records, warnings = parse((output / "ledger.jsonl").read_text())
    assert warnings == [] and records
    # The create cut off on the wire is settled by the next run, never sent blindly again.
    again = await start_cli(cli_args(manifest_path, sim.base_url, output))
    _, stderr = await again.communicate()
    assert again.returncode == 0, stderr.decode()
    assert set(per_prompt(sim).values()) == {1} and len(sim.stats.creates) == 3


# -- 2. a resume after a pause asks before it gives up ---------------------------------------


async def test_a_resume_after_a_long_pause_polls_first_and_downloads_late_successes(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: --item-timeout was counted from the ledger's submitted time before the first
    poll, so after a pause every prediction was cancelled and failed though it had succeeded,
    and --retry-failed then paid again."""
    sim = await simulator(runtime_mean=0.6, runtime_min=0.5, runtime_max=0.7)
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    process = await start_cli(cli_args(manifest_path, sim.base_url, output))
    await wait_for(lambda: count_events(output, "submitted") >= 3)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    await wait_for(lambda: len(sim.stats.completions) == 3)
    await anyio.sleep(0.5)  # the pause: longer than the item timeout below
    config = run_config(manifest_path, sim.base_url, output, replace(FAST, item_timeout=0.3))
    result = await run(config, manifest_path)
    assert result.exit_code == 0, result.text
    assert result.summary["counts"]["done"] == 3
    assert len(sim.stats.creates) == 3
    assert [name for _, name in sim.stats.api_requests].count("cancel") == 0


# -- 3. an ambiguous create is never followed by a blind new one -----------------------------


async def test_an_empty_create_answer_with_a_lagging_executions_list_creates_once(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a create answered ``200 {}`` whose prediction showed in executions only later
    was called absent at once and created again: 30 creates for one item in 0.1 s."""
    sim = await simulator(create_bad_answer="empty", executions_lag=0.5)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, reconcile_settle=3.0)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 0, result.text
    assert len(sim.stats.creates) == 1
    assert any(e.get("reconciled") for e in ledger_events(output))


async def test_a_server_answering_every_create_with_html_stops_the_batch(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: HTML answers to creates gave 60 creates in 90 s, without end."""
    sim = await simulator(create_bad_answer="html", executions_lag=0.2)
    manifest_path = write_manifest(tmp_path, count=8)
    output = tmp_path / "out"
    limits = replace(FAST, reconcile_settle=1.0, concurrency=2)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 7, result.text
    assert result.summary["stopped"]["kind"] == "api_broken"
    assert "without a usable prediction id" in result.text
    assert max(per_prompt(sim).values()) == 1  # never twice for one item
    assert len(sim.stats.creates) <= limits.broken_after + limits.concurrency
    # What was created was found and kept; the rest waits, pending, for a healthy server.
    counts = result.summary["counts"]
    assert counts["done"] == len(sim.stats.creates)
    assert counts["pending"] == 8 - len(sim.stats.creates) and counts["failed"] == 0


async def test_creates_that_make_nothing_are_capped_by_max_attempts(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a persistent 500 on create gave 30 creates in 30 s for one item, without end."""
    sim = await simulator(create_bad_answer="500", create_bad_answer_creates=False)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, reconcile_settle=0.3, max_attempts=2, broken_after=100)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 1, result.text
    [row] = result.summary["items"]
    assert row["status"] == "failed" and row["error_code"] == "CREATE_FAILED"
    assert [name for _, name in sim.stats.api_requests].count("create") == 2


# -- 4. a torn write-ahead record stops the create -------------------------------------------


def _file_size_limit(limit: int) -> Any:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


async def test_a_full_disk_never_lets_a_create_out_without_its_whole_record(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a short write of the ``submitting`` record was ignored, the create went out,
    and the resume, finding a torn line, created again (4 creates for 3 items)."""
    sim = await simulator(runtime_mean=0.5, runtime_min=0.4, runtime_max=0.6)
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    args = cli_args(manifest_path, sim.base_url, output, "--offline")
    # Room for the uploads and part of the creates' records, not for all of them.
    process = await start_cli(args, preexec_fn=_file_size_limit(1000))
    stdout, stderr = await process.communicate()
    assert process.returncode == 5, stderr.decode()
    assert b"Traceback" not in stderr
    assert "cannot append to the ledger" in stderr.decode() + stdout.decode()
    complete = sum(
        1 for e in parse((output / "ledger.jsonl").read_text())[0] if e["event"] == "submitting"
    )
    assert len(sim.stats.creates) <= complete
    again = await start_cli(args)
    _, stderr = await again.communicate()
    assert again.returncode == 0, stderr.decode()
    assert set(per_prompt(sim).values()) == {1} and len(sim.stats.creates) == 3


# -- 5. a transient 404 does not abandon a paid prediction -----------------------------------


async def test_polls_answered_404_for_a_while_are_waited_out(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: five 404s in a row marked a prediction NOT_FOUND, failed."""
    sim = await simulator(poll_not_found_for=0.6)
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    limits = replace(FAST, lost_after=10.0)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 0, result.text
    assert len(sim.stats.creates) == 3


async def test_a_prediction_given_up_as_lost_is_asked_for_again_by_the_next_run(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a resume never polled a prediction failed as not found again, and
    --retry-failed created a second one."""
    sim = await simulator(poll_not_found_for=2.0, executions_lag=100.0)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, lost_after=0.3)
    config = run_config(manifest_path, sim.base_url, output, limits)
    first = await run(config, manifest_path)
    assert first.exit_code == 1
    [row] = first.summary["items"]
    assert row["error_code"] == "LOST" and row["prediction_id"]
    await anyio.sleep(2.0)  # the server knows it again now
    second = await run(replace(config, retry_failed=True), manifest_path)
    assert second.exit_code == 0, second.text
    assert len(sim.stats.creates) == 1  # asked first, found it done, paid nothing more


# -- 6. downloads are bounded and checked ----------------------------------------------------


async def test_a_huge_download_is_refused_not_saved(simulator: Any, tmp_path: Path) -> None:
    """Before: a 5 GB body starting with an ftyp header was saved as a video (exit 0)."""
    sim = await simulator(cdn_body_bytes=64 * 1024 * 1024)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, max_video_bytes=1024 * 1024)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["error_code"] == "DOWNLOAD_FAILED" and "MB" in row["error"]
    assert not list(output.glob("*.mp4")) and not list(output.glob("*.part"))


async def test_a_body_that_only_starts_like_an_mp4_is_not_kept(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: only the first 8 bytes were checked: ``ftyp`` and zeros passed as a video."""
    sim = await simulator(cdn_body_bytes=4096)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["error_code"] == "DOWNLOAD_FAILED" and "MP4" in row["error"]
    assert not list(output.glob("*.mp4"))


# -- 7. an uploaded image URL that died is uploaded again ------------------------------------


async def test_an_expired_upload_is_uploaded_again_not_reused(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: the dead public URL was reused for ever; each retry was a create failing with
    'Failed to download input image'."""
    sim = await simulator(storage_ttl=0.5)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    assert (await run(config, manifest_path)).exit_code == 0
    await anyio.sleep(0.6)  # the uploaded image is gone from storage now
    text = manifest_path.read_text().replace("scene number 0 slowly", "scene number 0 gently")
    manifest_path.write_text(text)
    result = await run(config, manifest_path)
    assert result.exit_code == 0, result.text
    assert served(sim, "presign") == 2
    assert mp4_frames(output / "item-000.mp4")[0] > 24


# -- 8. the key never follows a redirect -----------------------------------------------------


async def test_a_poll_redirected_to_another_host_never_takes_the_key_there(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a 302 on a poll carried X-API-Key to the other host (38 polls)."""
    async with OtherHost() as other:
        sim = await simulator(redirect_polls_to=other.base_url)
        manifest_path = write_manifest(tmp_path, count=1)
        output = tmp_path / "out"
        result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
        assert other.requests == []
    assert result.exit_code == 1
    [row] = result.summary["items"]
    assert row["status"] == "failed" and row["error_code"] == "POLL_ERROR"
    assert "another" in row["error"]


async def test_a_create_redirected_to_another_host_stops_the_batch_creating_nothing(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a 307 on a create carried the key to the other host, whose answer was taken."""
    async with OtherHost() as other:
        sim = await simulator(redirect_creates_to=other.base_url)
        manifest_path = write_manifest(tmp_path, count=3)
        output = tmp_path / "out"
        result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
        assert other.requests == []
    assert result.exit_code == 7, result.text
    assert sim.stats.creates == []
    assert result.summary["counts"]["pending"] == 3


# -- 10, 11. no credentials from --api-base; never write through a planted link --------------


async def test_credentials_in_the_api_base_appear_in_no_output(tmp_path: Path) -> None:
    """Before: ``http://user:pw@host`` put ``user:pw@`` into the ledger, summary and stderr."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    base = f"http://someone:pa55w0rd-canary@127.0.0.1:{port}"
    process = await start_cli(cli_args(manifest_path, base, output, "--offline", verbose=True))
    stdout, stderr = await process.communicate()
    assert process.returncode == 6, stderr.decode()
    written = b"".join(p.read_bytes() for p in output.rglob("*") if p.is_file())
    for blob in (stdout, stderr, written):
        assert b"pa55w0rd-canary" not in blob and b"someone:" not in blob


async def test_a_symlink_planted_at_the_partial_file_is_never_written_through(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: a link at ``<id>.mp4.part`` pointing outside was appended to (14 B grew to
    62 KB)."""
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    output.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"do not touch!\n")
    (output / "item-000.mp4.part").symlink_to(outside)
    result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 0, result.text
    assert outside.read_bytes() == b"do not touch!\n"
    assert mp4_frames(output / "item-000.mp4")[0] > 24
