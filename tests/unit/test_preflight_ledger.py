"""The preflight reads the output directory's ledger and schema cache: odd contents there are
warnings (or ignored), never a crash or a hang."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from runner.checks.preflight import preflight
from runner.checks.schema import CACHE_NAME, read_cache
from runner.cli import command
from runner.config import CheckConfig
from runner.errors import LedgerError
from runner.manifest import load_manifest
from runner.store.plan import Action

pytestmark = pytest.mark.timeout(20)


def batch(tmp_path: Path) -> tuple[Path, str]:
    """A one-item manifest and the key of its item."""
    Image.new("RGB", (96, 96), (20, 120, 40)).save(tmp_path / "deer.png")
    manifest = tmp_path / "m.yaml"
    prompt = "a deer slowly walks through the misty forest as the fog drifts between the pines"
    manifest.write_text(f"items:\n  - id: deer\n    image: deer.png\n    prompt: {prompt}\n")
    return manifest, load_manifest(manifest).items[0].key


def ledger_of(output: Path, key: str, *fields: dict[str, object]) -> None:
    """A ledger in ``output`` of records about ``key``, one per ``fields``."""
    output.mkdir(exist_ok=True)
    base = {"ts": "2026-11-22T06:00:00.000Z", "item": "deer", "key": key}
    lines = [json.dumps({**base, **extra}) + "\n" for extra in fields]
    (output / "ledger.jsonl").write_text("".join(lines))


async def test_records_of_the_wrong_types_are_warned_about_and_the_plan_still_made(
    tmp_path: Path,
) -> None:
    manifest, key = batch(tmp_path)
    out = tmp_path / "out"
    ledger_of(
        out,
        key,
        {"event": "submitting", "attempt": 1},
        {"event": "submitted", "prediction_id": "p-1"},
        {"event": "succeeded", "prediction_id": "p-1", "output_url": "https://c/x.mp4"},
        {"event": "downloaded", "path": 123, "bytes": 5, "sha256": "ab"},
        {"event": "downloaded", "path": "deer.mp4", "bytes": "12", "sha256": "ab"},
        {"event": "succeeded", "prediction_id": "p-1", "output_url": 7, "cost": {}},
        {"event": "submitted", "prediction_id": "../x"},
    )
    report = await preflight(manifest, CheckConfig(offline=True), output_dir=out)
    ledger_warnings = [str(p) for p in report.warnings if p.where.endswith("ledger.jsonl")]
    assert ledger_warnings == [
        f"{out / 'ledger.jsonl'}: ledger line 4: corrupt record skipped "
        "(field 'path' must be a string)",
        f"{out / 'ledger.jsonl'}: ledger line 5: corrupt record skipped "
        "(field 'bytes' must be a whole number of at least 0)",
        f"{out / 'ledger.jsonl'}: ledger line 6: corrupt record skipped "
        "(field 'output_url' must be a string)",
        f"{out / 'ledger.jsonl'}: ledger line 7: corrupt record skipped "
        "(field 'prediction_id' must be a plain prediction id)",
    ]
    assert report.plan is not None
    assert [step.action for step in report.plan.steps] == [Action.DOWNLOAD]


async def test_validate_with_a_path_outside_the_output_directory_in_the_ledger(
    tmp_path: Path,
) -> None:
    manifest, key = batch(tmp_path)
    out = tmp_path / "out"
    ledger_of(
        out,
        key,
        {"event": "submitted", "prediction_id": "p-1"},
        {"event": "succeeded", "prediction_id": "p-1", "output_url": "https://c/x.mp4"},
        {"event": "downloaded", "path": "/etc/hostname", "bytes": 5, "sha256": "ab"},
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["validate", str(manifest), "--offline", "--output", str(out)]
    assert await command(argv, out=stdout, err=stderr) == 0
    assert "must be the name of a file in the output directory" in stderr.getvalue()
    assert "to download       1" in stdout.getvalue()


async def test_a_ledger_that_is_a_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    manifest, _ = batch(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "ledger.jsonl")
    report = await preflight(manifest, CheckConfig(offline=True), output_dir=out)
    assert [p.message for p in report.errors] == [
        f"cannot read the ledger {out / 'ledger.jsonl'}: it is a FIFO (named pipe), "
        "not a regular file"
    ]


def test_a_schema_cache_that_is_a_fifo_or_too_deep_is_ignored(tmp_path: Path) -> None:
    fifo = tmp_path / CACHE_NAME
    os.mkfifo(fifo)
    assert read_cache(fifo) == {}
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert read_cache(deep) == {}


async def test_a_ledger_the_run_could_not_read_is_reported_as_read_not_read_again(
    tmp_path: Path,
) -> None:
    """The checks report the run's one reading of the ledger. Before, a ledger the run could
    not read was read a second time by the checks: if that read worked, the checks passed and
    the run went on as if the directory were new, stopping with a false "another runner"."""
    manifest, key = batch(tmp_path)
    out = tmp_path / "out"
    ledger_of(out, key, {"event": "submitting", "attempt": 1})  # readable now
    unreadable = LedgerError(f"cannot read the ledger {out / 'ledger.jsonl'}: I/O error")
    report = await preflight(manifest, CheckConfig(offline=True), output_dir=out, resume=unreadable)
    assert [p.message for p in report.errors] == [str(unreadable)]
    assert report.plan is None
