"""One test per fault: the runner never pays twice and never keeps a broken video."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.batch import run_batch

from .conftest import NO_PROFILE_FAULTS
from .helpers import API_KEY, FAST, ledger_events, mp4_frames, run_config, write_manifest

pytestmark = pytest.mark.timeout(90)


def created_per_prompt(sim: Any) -> Counter[str]:
    return Counter(str(c.input["prompt"]) for c in sim.stats.creates)


async def run(config: Any, manifest_path: Path) -> Any:
    return await run_batch(config, resume_command="again")


async def test_create_timeout_after_the_server_created_it_is_reconciled(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(create_delay=1.0)  # every create answer comes after the client gave up
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    result = await run(
        run_config(manifest_path, sim.base_url, output, replace(FAST, request_timeout=0.3)),
        manifest_path,
    )
    assert result.exit_code == 0, result.text
    assert set(created_per_prompt(sim).values()) == {1}
    assert len(sim.stats.creates) == 3
    reconciled = [e for e in ledger_events(output) if e.get("reconciled")]
    assert {e["prediction_id"] for e in reconciled} == {c.prediction_id for c in sim.stats.creates}


async def test_5xx_on_create_is_reconciled_not_resent(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator(**{**NO_PROFILE_FAULTS, "create_fault_rate": 0.5, "seed": 3})
    manifest_path = write_manifest(tmp_path, count=6)
    output = tmp_path / "out"
    result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 0, result.text
    assert len(sim.stats.creates) == 6
    assert set(created_per_prompt(sim).values()) == {1}
    assert any(e.get("reconciled") for e in ledger_events(output))  # the fault did happen


async def test_transient_faults_on_every_endpoint_cost_no_duplicate_and_no_video(
    simulator: Any, tmp_path: Path
) -> None:
    """The realistic profile's faults, five to ten times as often: 500s, gateway pages and
    resets on polls, executions, presign, uploads, cancels and model lookups, creates that
    create but answer 500, cut CDN downloads. Every item ends with one create and one good
    video. Before: a create that answered late was looked up before its row was listed and
    created again."""
    sim = await simulator(
        fault_rate=0.25,
        create_fault_rate=0.25,
        truncate_downloads_rate=0.15,
        seed=11,
    )
    manifest_path = write_manifest(tmp_path, count=8)
    output = tmp_path / "out"
    # At a quarter of creates faulted, three in a row would trip the breaker (exit 7), which
    # test_hostile_money covers; here every fault must be recovered from.
    limits = replace(FAST, broken_after=100, download_timeout=60.0)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 0, result.text
    assert set(created_per_prompt(sim).values()) == {1} and len(sim.stats.creates) == 8
    for row in result.summary["items"]:
        assert row["status"] == "done"
        assert mp4_frames(output / row["path"])[0] > 24
    # The faults did happen, on more than the create: polls and at least one other endpoint.
    assert "get" in sim.stats.faults and len(sim.stats.faults) >= 2, sim.stats.faults
    assert any(e.get("reconciled") for e in ledger_events(output))


async def test_a_create_answered_late_waits_for_the_lagging_list_from_its_answer(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: the list's lag was counted from the moment the create was sent; a create a slow
    gateway held before the service made the prediction answered 500 after that time had
    passed, the first lookup came before the row was listed, and the item was created again."""
    sim = await simulator(create_queue_delay=0.6, create_fault_rate=1.0, executions_lag=0.3, seed=2)
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    limits = replace(FAST, reconcile_settle=0.5, broken_after=100)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 0, result.text
    assert len(sim.stats.creates) == 2 and set(created_per_prompt(sim).values()) == {1}
    reconciled = [e for e in ledger_events(output) if e.get("reconciled")]
    assert {e["prediction_id"] for e in reconciled} == {c.prediction_id for c in sim.stats.creates}


async def test_a_list_read_before_the_settle_time_is_read_again_however_long_the_polls(
    simulator: Any, session: Any, tmp_path: Path
) -> None:
    """Before: the settle time was judged when the candidates had been polled, not when the
    list was read; a slow poll of someone else's prediction let a list read before the item's
    row showed decide "absent", and the item was created again."""
    sim = await simulator(
        create_fault_rate=1.0,  # every create makes its prediction and answers 500
        executions_lag=0.3,
        fault_first=1,  # the first poll (of the stranger below) hangs 0.6 s, then 504
        fault_endpoints=frozenset({"get"}),
        fault_kinds=frozenset({"timeout"}),
        fault_hang=0.6,
    )
    stranger = {"prompt": "somebody else's kite", "first_frame_image": "https://x.test/k.png"}
    body = {"model": "minimax-i2v-01", "version": "0.0.1", "input": stranger}
    same_account = {"X-API-Key": API_KEY}  # another client of the run's account (its key)
    async with session.post(f"{sim.base_url}/v1/prediction", json=body, headers=same_account):
        pass  # made, whatever it answers
    await anyio.sleep(0.4)  # listed by now
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, reconcile_settle=0.2, broken_after=100)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 0, result.text
    assert sim.stats.faults == {"get": 1}  # the slow poll did happen
    mine = [c for c in sim.stats.creates if c.input != stranger]
    assert len(mine) == 1
    [event] = [e for e in ledger_events(output) if e.get("reconciled")]
    assert event["prediction_id"] == mine[0].prediction_id


async def test_a_lost_create_is_found_though_the_executions_list_is_down_for_a_while(
    simulator: Any, tmp_path: Path
) -> None:
    """Before: one failed lookup (three tries) past the settle time left the item undecided,
    though the list answered a moment later (it answered 500s in production in July 2026)."""
    sim = await simulator(
        create_bad_answer="500",  # created, answered 500: only the executions list can tell
        fault_first=6,  # the list's first six answers are 500s: two lookups of three tries
        fault_endpoints=frozenset({"executions"}),
        fault_kinds=frozenset({"500"}),
    )
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    limits = replace(FAST, reconcile_settle=0.2)
    result = await run(run_config(manifest_path, sim.base_url, output, limits), manifest_path)
    assert result.exit_code == 0, result.text
    assert sim.stats.faults == {"executions": 6} and len(sim.stats.creates) == 1
    [event] = [e for e in ledger_events(output) if e.get("reconciled")]
    assert event["prediction_id"] == sim.stats.creates[0].prediction_id


async def test_an_ambiguous_create_the_server_cannot_settle_waits_for_the_operator(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(create_delay=1.0, executions_enabled=False)
    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output, replace(FAST, request_timeout=0.3))
    first = await run(config, manifest_path)
    assert first.exit_code == 1
    [row] = first.summary["items"]
    assert row["status"] == "running" and row["error"].startswith("ambiguous")
    again = await run(config, manifest_path)  # still undecidable: still not resent
    assert again.exit_code == 1 and len(sim.stats.creates) == 1
    # Only the explicit flag submits it again, accepting that it may pay twice.
    forced = await run(replace(config, resubmit_ambiguous=True, limits=FAST), manifest_path)
    assert forced.exit_code == 0, forced.text
    assert len(sim.stats.creates) == 2


@pytest.mark.parametrize("cdn_range", [True, False], ids=["range-resume", "restart"])
async def test_truncated_downloads_are_resumed_and_verified(
    simulator: Any, tmp_path: Path, cdn_range: bool
) -> None:
    sim = await simulator(
        **{**NO_PROFILE_FAULTS, "truncate_downloads_rate": 0.5}, seed=5, cdn_range=cdn_range
    )
    manifest_path = write_manifest(tmp_path, count=4)
    output = tmp_path / "out"
    result = await run(run_config(manifest_path, sim.base_url, output), manifest_path)
    assert result.exit_code == 0, result.text
    assert sim.stats.downloads > 4  # some were cut short and fetched again
    for row in result.summary["items"]:
        assert mp4_frames(output / row["path"])[0] > 24
    assert not list(output.glob("*.part"))


async def test_missing_file_with_an_expired_url_is_fetched_again_via_a_fresh_url(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(url_ttl=0.5)
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    assert (await run(config, manifest_path)).exit_code == 0
    lost = output / "item-000.mp4"
    lost.unlink()
    await anyio.sleep(0.6)  # the recorded URL has expired now
    result = await run(config, manifest_path)
    assert result.exit_code == 0, result.text
    assert mp4_frames(lost)[0] > 24
    assert len(sim.stats.creates) == 2  # fetched again, not rendered again


async def test_a_corrupt_final_file_is_downloaded_again(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    first = await run(config, manifest_path)
    video = output / "item-001.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    result = await run(config, manifest_path)
    assert result.exit_code == 0
    sha = {row["id"]: row["sha256"] for row in first.summary["items"]}
    assert {row["id"]: row["sha256"] for row in result.summary["items"]} == sha
    assert len(sim.stats.creates) == 2 and sim.stats.downloads >= 3  # fetched, not rendered


async def test_torn_last_ledger_line_is_ignored_with_a_warning(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    await run(config, manifest_path)
    with (output / "ledger.jsonl").open("a") as ledger:
        ledger.write('{"ts": "2026-11-22T06:00:00Z", "item": "item-0')
    with caplog.at_level(logging.WARNING, logger="runner"):
        result = await run(config, manifest_path)
    assert result.exit_code == 0
    assert len(sim.stats.creates) == 2
    assert any("torn last line ignored" in r.getMessage() for r in caplog.records)
    lines = (output / "ledger.jsonl").read_text().splitlines()
    assert lines[-1].startswith('{"ts": "2026-11-22T06:00:00Z", "item": "item-0')  # never rewritten


async def test_a_corrupt_middle_line_is_reported_with_its_number(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    await run(config, manifest_path)
    path = output / "ledger.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(3, "\x00\x00 not json\n")
    path.write_text("".join(lines))
    with caplog.at_level(logging.WARNING, logger="runner"):
        result = await run(config, manifest_path)
    assert result.exit_code == 0
    assert len(sim.stats.creates) == 2
    assert any("ledger line 4: corrupt record skipped" in r.getMessage() for r in caplog.records)


async def test_editing_one_prompt_renders_only_that_item_and_reordering_nothing(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=3)
    output = tmp_path / "out"
    config = run_config(manifest_path, sim.base_url, output)
    first = await run(config, manifest_path)
    text = manifest_path.read_text()
    items = text.split("  - id: ")
    reordered = items[0] + "  - id: " + "  - id: ".join([items[3], items[1], items[2]])
    reordered = reordered.replace("scene number 2 slowly", "scene number 2 quickly")
    manifest_path.write_text(reordered if reordered.endswith("\n") else reordered + "\n")
    result = await run(config, manifest_path)
    assert result.exit_code == 0, result.text
    assert len(sim.stats.creates) == 4
    assert sim.stats.creates[-1].input["prompt"] == "scene number 2 quickly comes alive, zoom in"
    before = {row["id"]: row["sha256"] for row in first.summary["items"]}
    after = {row["id"]: row["sha256"] for row in result.summary["items"]}
    assert after["item-000"] == before["item-000"] and after["item-001"] == before["item-001"]
    assert mp4_frames(output / "item-002.mp4")[0] > 24


async def test_retry_failed_submits_the_failed_items_and_only_those(
    simulator: Any, tmp_path: Path
) -> None:
    flaky = await simulator(**NO_PROFILE_FAULTS, failure_rate=0.5, seed=11)
    manifest_path = write_manifest(tmp_path, count=6)
    output = tmp_path / "out"
    first = await run(run_config(manifest_path, flaky.base_url, output), manifest_path)
    failed = {row["id"] for row in first.summary["items"] if row["status"] == "failed"}
    assert first.exit_code == 1 and 0 < len(failed) < 6
    healthy = await simulator()
    plain = await run(run_config(manifest_path, healthy.base_url, output), manifest_path)
    assert plain.exit_code == 1 and healthy.stats.creates == []
    retried = await run(
        run_config(manifest_path, healthy.base_url, output, retry_failed=True), manifest_path
    )
    assert retried.exit_code == 0, retried.text
    retried_prompts = {str(c.input["prompt"]) for c in healthy.stats.creates}
    assert retried_prompts == {
        f"scene number {int(item_id.split('-')[1])} slowly comes alive, zoom in"
        for item_id in failed
    }
