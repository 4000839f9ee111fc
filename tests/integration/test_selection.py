"""Picking what runs (``--only``, ``--limit``, ``--retry-failed=CODES``) and ``--on-finish``,
against the simulator: what the server was asked to create is the measure."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from runner import ManifestError, run_batch
from runner.manifest import load_manifest

from .helpers import API_KEY, cli_args, run_config, start_cli, write_manifest

pytestmark = pytest.mark.timeout(60)


def prompt(n: int) -> str:
    return f"scene number {n} slowly comes alive, zoom in"


def created(sim: Any) -> list[str]:
    return sorted(str(create.input["prompt"]) for create in sim.stats.creates)


async def test_only_and_limit_work_on_a_part_and_the_summary_still_covers_the_batch(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=6)
    output = tmp_path / "out"
    part = await run_batch(
        run_config(manifest_path, sim.base_url, output, only=("item-00[0-3]",), limit=2),
        resume_command="x",
    )
    assert part.exit_code == 0, part.text  # the part asked for is done
    assert created(sim) == [prompt(0), prompt(1)]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["counts"]["total"] == 6 and summary["counts"]["done"] == 2
    assert summary["selection"] == {"items": 2, "done": 2, "left_out": 4}
    assert [row["id"] for row in summary["items"] if row.get("left_out")] == [
        f"item-{n:03d}" for n in range(2, 6)
    ]
    results = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert [row["status"] for row in results] == ["done"] * 2 + ["pending"] * 4  # the batch
    rest = await run_batch(run_config(manifest_path, sim.base_url, output), resume_command="x")
    assert rest.exit_code == 0, rest.text
    assert created(sim) == sorted(prompt(n) for n in range(6))  # each once, over both runs
    assert rest.summary["selection"] is None


async def test_an_only_that_matches_no_item_is_refused_before_spending(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    with pytest.raises(ManifestError) as caught:
        await run_batch(
            run_config(manifest_path, sim.base_url, tmp_path / "out", only=("item-9*",)),
            resume_command="x",
        )
    assert any("--only 'item-9*' matches no item" in str(p) for p in caught.value.problems)
    assert sim.stats.creates == [] and sim.stats.uploads == 0


async def test_retry_failed_with_codes_submits_only_the_failures_with_those_codes(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=3)
    keys = [item.key for item in load_manifest(manifest_path).items]
    output = tmp_path / "out"
    output.mkdir()
    failures = [("item-000", "PROVIDER_FAILED"), ("item-001", "CONTENT_POLICY")]
    records = [
        {"ts": "2026-11-22T06:00:00.000Z", "item": item, "key": keys[n], "event": "failed",
         "error": "it failed", "error_code": code}
        for n, (item, code) in enumerate(failures)
    ]  # fmt: skip
    (output / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = await run_batch(
        run_config(
            manifest_path, sim.base_url, output, retry_failed=frozenset({"provider_failed"})
        ),
        resume_command="x",
    )
    assert created(sim) == [prompt(0), prompt(2)]  # not item-001's CONTENT_POLICY
    statuses = {row["id"]: row["status"] for row in result.summary["items"]}
    assert statuses == {"item-000": "done", "item-001": "failed", "item-002": "done"}
    assert result.exit_code == 1


async def test_on_finish_runs_with_the_summary_and_the_exit_code_but_never_the_key(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(failure_rate=1.0)  # every item fails: exit 1
    manifest_path = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    heard = tmp_path / "heard.json"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, open({str(heard)!r}, 'w'))\n"
    )
    args = cli_args(manifest_path, sim.base_url, output, "--on-finish", f"{sys.executable} {hook}")
    process = await start_cli(args)
    _, err = await process.communicate()
    assert process.returncode == 1, err.decode()
    told = json.loads(heard.read_text())
    summary = output / "summary.json"
    assert told["argv"] == [str(summary)] and summary.is_file()
    assert told["env"]["I2V_EXIT_CODE"] == "1"
    assert told["env"]["I2V_SUMMARY"] == str(summary)
    assert told["env"]["I2V_OUTPUT_DIR"] == str(output)
    assert "EACHLABS_API_KEY" not in told["env"]
    assert API_KEY not in heard.read_text()
