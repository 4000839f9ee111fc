"""A CSV catalog run against the simulator over loopback: what the simulator is asked to create
comes from the catalog's columns, the metadata reaches results.jsonl, and a catalog with one bad
row creates nothing."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner.batch import run_batch
from runner.cli import command

from .helpers import API_KEY, EXAMPLE, run_config

pytestmark = pytest.mark.timeout(90)

MODEL = "minimax-hailuo-v2-standard-image-to-video"  # takes an integer "duration" of 6 or 10


def write_catalog(tmp_path: Path, count: int, bad_row: int | None = None) -> Path:
    """A CMS-style export (CRLF, a BOM, quoted commas and newlines, an extra column) of
    ``count`` rows over the example images; row ``bad_row`` names an image that is not there."""
    images = sorted((EXAMPLE / "images").glob("*.png"))
    folder = tmp_path / "shoot"
    (folder / "stills").mkdir(parents=True)
    buffer = io.StringIO()
    table = csv.writer(buffer, lineterminator="\r\n")
    table.writerow(["sku", "still", "caption", "secs", "client", "notes"])
    for n in range(count):
        image = images[n % len(images)]
        shutil.copy(image, folder / "stills" / image.name)
        still = "stills/missing.png" if n == bad_row else f"stills/{image.name}"
        caption = f"scene {n}, slowly\ncomes alive"
        table.writerow([f"SKU-{n}", still, caption, 6 if n % 2 else 10, f"client {n}", "x, y"])
    path = folder / "export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode())
    return path


def manifest_for(catalog: Path) -> Path:
    manifest = catalog.parent / "m.yaml"
    manifest.write_text(
        f"batch: shoot\nmodel: {MODEL}\nitems_from: {catalog.name}\n"
        "columns: {id: sku, image: still, prompt: caption, input.duration: secs, "
        "meta.client: client}\n"
    )
    return manifest


async def test_a_csv_catalog_creates_what_its_columns_say(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator()
    catalog = write_catalog(tmp_path, count=4)
    output = tmp_path / "out"
    result = await run_batch(
        run_config(manifest_for(catalog), sim.base_url, output), resume_command="x"
    )
    assert result.exit_code == 0, result.text
    with catalog.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_prompt = {create.input["prompt"]: create for create in sim.stats.creates}
    assert sorted(by_prompt) == sorted(row["caption"] for row in rows)
    for row in rows:
        create = by_prompt[row["caption"]]
        assert create.model == MODEL
        assert create.input["duration"] == int(row["secs"])
        assert "notes" not in create.input and "client" not in create.input
        still = (catalog.parent / row["still"]).read_bytes()
        assert create.image_sha256 == hashlib.sha256(still).hexdigest()
    results = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert {r["id"]: r["meta"] for r in results} == {
        row["sku"]: {"client": row["client"]} for row in rows
    }
    assert all(r["status"] == "done" for r in results)


async def test_a_catalog_with_one_bad_row_submits_nothing(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EACHLABS_API_KEY", API_KEY)
    sim = await simulator()
    catalog = write_catalog(tmp_path, count=5, bad_row=3)
    out, err = io.StringIO(), io.StringIO()
    code = await command(
        ["run", str(catalog), "--api-base", sim.base_url, "--output", str(tmp_path / "out")],
        out=out,
        err=err,
    )
    assert code == 2, err.getvalue()
    assert sim.stats.creates == []
    # the catalog named directly, with its default columns: none match this export's header
    assert f"{catalog}:1:1" in err.getvalue()

    code = await command(
        [
            "run",
            str(manifest_for(catalog)),
            "--api-base",
            sim.base_url,
            "--output",
            str(tmp_path / "out"),
        ],
        out=out,
        err=err,
    )
    assert code == 2
    assert sim.stats.creates == []
    # the bad row: the header is line 1 and each row before it takes two lines (its caption's
    # newline), so row 3 (from 0) starts on line 2 + 2 * 3; the still is the second column
    assert f'{catalog}:{2 + 2 * 3}:2: item 4 (id "SKU-3"), field "image"' in err.getvalue()


def test_validate_reads_a_jsonl_catalog_from_stdin(tmp_path: Path) -> None:
    """``validate -`` with default field names, images relative to the current directory."""
    images = sorted((EXAMPLE / "images").glob("*.png"))[:3]
    lines = [
        json.dumps(
            {
                "id": image.stem,
                "image": f"../{image.parent.name}/{image.name}",
                "prompt": f"the {image.stem} comes alive",
            }
        )
        for image in images
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = [
        sys.executable,
        "-m",
        "runner",
        "validate",
        "-",
        "--simulate",
        "--output",
        str(tmp_path / "out"),
    ]

    def validate(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            input=text,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=EXAMPLE / "images",
            check=False,
        )

    good = validate("\n".join(lines) + "\n")
    assert good.returncode == 0, good.stderr
    assert f"{len(images)} item" in good.stdout + good.stderr
    bad = validate("\n".join([lines[0], "[1, 2]", lines[2]]) + "\n")
    assert bad.returncode == 2
    assert "<stdin>:2:1: item 2: each line must be a JSON object" in bad.stderr
    assert not (tmp_path / "out" / "ledger.jsonl").exists()
