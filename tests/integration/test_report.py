"""The results of a real batch rendered by the simulator: ``results.jsonl``/``results.csv``
checked against the ledger and the videos on disk, ``i2v-runner report DIR`` without the
manifest, and ``report.html`` opened in headless Chromium (installed by the ``chromium``
fixture when missing; the tests are skipped, with the reason, only if it cannot be)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner import run_batch
from runner.cli import command
from runner.events import Said

from .conftest import NO_PROFILE_FAULTS
from .helpers import EXAMPLE, ledger_events, run_config, write_manifest

ROOT = Path(__file__).resolve().parents[2]
#: Installing Chromium with apt-get on a fresh machine takes a minute or two, once a session.
INSTALL_TIMEOUT = 900
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
#: Shown as text on its card, never as markup.
HOSTILE_PROMPT = "a <b>bold</b> deer & a fox walk slowly through the misty forest, zoom in"


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _install_chromium() -> str:
    """Install Debian's ``chromium`` with apt-get (once more after ``apt-get update`` if the
    package lists are missing); why it could not be, or "" if it was."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "chromium is not installed and there is no apt-get to install it with"
    if os.geteuid() != 0:
        return "chromium is not installed and `apt-get install chromium` needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"]
    why = ""
    for step in ([*install, "chromium"], [apt, "update"], [*install, "chromium"]):
        try:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(step)}` took more than 10 minutes"
        if done.returncode == 0 and step[1] == "install":
            return ""
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines()
            why = f"`{' '.join(step)}` failed: {lines[-1] if lines else done.returncode}"
    return why


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless-capable Chromium, installed with apt-get if missing."""
    found = _find_chromium()
    if found is None:
        why = _install_chromium()
        found = _find_chromium()
        if found is None:
            pytest.skip(f"headless Chromium is not available: {why or 'not found after install'}")
    return found


async def browse(chromium: str, profile: Path, *args: str) -> str:
    """Run headless Chromium with ``args``; its stdout. A failure shows its stderr."""
    process = await asyncio.create_subprocess_exec(
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


class Dom(HTMLParser):
    """The cards of a rendered contact sheet: attributes of each card's tags, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, Any]] = []
        self.totals: dict[str, str] = {}
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "article":
            self.cards.append({"attrs": found, "tags": [], "text": ""})
        elif self.cards:
            self.cards[-1]["tags"].append((tag, found))
        if tag == "dd" and ("data-count" in found or "data-cost-usd" in found):
            self._field = found.get("data-count") or "cost"
            self.totals[f"{self._field}@"] = found.get("data-cost-usd", "")

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self.totals[self._field] = data
            self._field = None
        elif self.cards:
            self.cards[-1]["text"] += data


def dom_of(html: str) -> Dom:
    dom = Dom()
    dom.feed(html)
    return dom


def mixed_batch(tmp_path: Path) -> Path:
    """Four items: two rendered, one whose image URL the service cannot reach (it fails after
    creation, ``INPUT_DOWNLOAD_ERROR``) and one left pending by ``--budget-partial``."""
    folder = tmp_path / "batch"
    (folder / "images").mkdir(parents=True)
    for name in ("forest-deer.png", "lighthouse.png", "balloon.png"):
        shutil.copy(EXAMPLE / "images" / name, folder / "images" / name)
    path = folder / "manifest.yaml"
    path.write_text(
        "batch: mixed\nmodel: minimax-i2v-01\nitems:\n"
        "  - id: deer\n    image: images/forest-deer.png\n"
        "    prompt: a deer slowly walks through the misty forest as fog drifts, zoom in\n"
        "    meta: {client: acme, shot: 1}\n"
        "  - id: hostile\n    image: images/lighthouse.png\n"
        f"    prompt: {json.dumps(HOSTILE_PROMPT)}\n"
        "    meta: {note: '<script>alert(1)</script>'}\n"
        "  - id: unreachable\n    image: http://127.0.0.1:9/gone.png\n"
        "    prompt: the lighthouse beam sweeps across the sea at sunset, pan right\n"
        "  - id: later\n    image: images/balloon.png\n"
        "    prompt: a striped balloon rises slowly above the fields, pan left\n"
    )
    return path


@pytest.mark.timeout(INSTALL_TIMEOUT)
async def test_the_contact_sheet_in_headless_chromium(
    simulator: Any, tmp_path: Path, chromium: str
) -> None:
    sim = await simulator()
    output = tmp_path / "out"
    config = run_config(
        mixed_batch(tmp_path), sim.base_url, output, budget_usd=1.29, budget_partial=True
    )
    result = await run_batch(config, resume_command="x")
    summary = json.loads((output / "summary.json").read_text())
    assert summary["counts"] == {"total": 4, "done": 2, "failed": 1, "pending": 1, "running": 0}
    assert result.exit_code == 1

    page = output / "report.html"
    dom = dom_of(await browse(chromium, tmp_path / "profile", "--dump-dom", page.as_uri()))
    by_id = {card["attrs"]["data-id"]: card for card in dom.cards}
    assert list(by_id) == [row["id"] for row in summary["items"]]  # a card per item, in order
    videos = posters = 0
    for row in summary["items"]:
        card = by_id[row["id"]]
        assert card["attrs"]["data-status"] == row["status"]
        assert "hidden" not in card["attrs"]
        for tag, attrs in card["tags"]:
            for name in ("src", "poster"):
                link = attrs.get(name, "")
                if link and not link.startswith(("http://", "https://")):
                    assert (output / link).is_file(), f"{row['id']}: {tag} {name}={link}"
            if tag == "video":
                videos += 1
                posters += bool(attrs.get("poster"))
                assert attrs["src"] == row["path"] and attrs["preload"] == "none"
        if row["status"] == "failed":
            assert row["error"] in card["text"]
    assert videos == posters == summary["counts"]["done"]
    for name, count in summary["counts"].items():
        assert int(dom.totals[name]) == count, name
    assert Decimal(dom.totals["cost@"]) == Decimal(str(summary["cost_usd"]))
    hostile = by_id["hostile"]
    assert HOSTILE_PROMPT in hostile["text"] and "<script>alert(1)</script>" in hostile["text"]
    assert not [tag for tag, _ in hostile["tags"] if tag in ("b", "script")]

    failed_only = await browse(
        chromium, tmp_path / "profile", "--dump-dom", f"{page.as_uri()}#failed"
    )
    shown = [c["attrs"]["data-id"] for c in dom_of(failed_only).cards if "hidden" not in c["attrs"]]
    assert shown == [row["id"] for row in summary["items"] if row["status"] == "failed"]

    shot = tmp_path / "sheet.png"
    await browse(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        page.as_uri(),
    )
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colors = image.convert("RGB").resize((64, 100)).getcolors(64 * 100)
    assert colors is None or len(colors) > 50, "the screenshot is (nearly) blank"


def succeeded_records(output: Path) -> dict[str, dict[str, Any]]:
    return {r["item"]: r for r in ledger_events(output) if r["event"] == "succeeded"}


async def test_results_agree_with_the_ledger_the_videos_and_the_summary(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(**NO_PROFILE_FAULTS, failure_rate=0.4, seed=3)
    manifest = write_manifest(tmp_path, count=5, meta={"client": "acme", "tags": ["x"]})
    output = tmp_path / "out"
    await run_batch(run_config(manifest, sim.base_url, output), resume_command="x")
    summary = {row["id"]: row for row in json.loads((output / "summary.json").read_text())["items"]}
    rows = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    table = list(csv.DictReader(io.StringIO((output / "results.csv").read_text(), newline="")))
    succeeded = succeeded_records(output)
    assert [row["id"] for row in rows] == [row["id"] for row in table] == list(summary)
    assert any(row["status"] == "failed" for row in rows), "seed 3 fails some items"
    for row, line in zip(rows, table, strict=True):
        same = summary[row["id"]]
        for name in ("status", "prediction_id", "sha256", "cost", "error"):
            assert row[name] == same[name], name
        assert row["meta"] == {"client": "acme", "tags": ["x"]}
        assert json.loads(line["meta"]) == row["meta"] and line["status"] == row["status"]
        if row["status"] == "done":
            video = (output / row["video"]).read_bytes()
            assert hashlib.sha256(video).hexdigest() == row["sha256"] == line["sha256"]
            assert row["predict_time"] == succeeded[row["id"]]["predict_time"]
            assert Decimal(line["cost"]) == Decimal(str(succeeded[row["id"]]["cost"]))
        else:
            assert row["video"] is None and line["video"] == ""
    served = len(sim.stats.api_requests)

    # `report DIR` makes the same files again from the directory alone: no manifest, no key.
    made = {name: (output / name).read_bytes() for name in ("results.jsonl", "results.csv")}
    made["report.html"] = (output / "report.html").read_bytes()
    for name in made:
        (output / name).unlink()
    shutil.rmtree(output / "report")
    manifest.unlink()
    env = {name: value for name, value in os.environ.items() if not name.startswith("EACHLABS")}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runner", "report", str(output),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    for name, data in made.items():
        assert (output / name).read_bytes() == data, name
    assert "report.html: 5 items" in stdout.decode()
    assert len(sim.stats.api_requests) == served


async def test_adding_meta_to_a_done_item_renders_nothing_again(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    config = run_config(manifest, sim.base_url, output)
    assert (await run_batch(config, resume_command="x")).exit_code == 0
    creates = len(sim.stats.creates)
    text = manifest.read_text().replace(
        "  - id: item-001\n", "  - id: item-001\n    meta: {reviewed: true, score: 4.5}\n"
    )
    manifest.write_text(text)
    assert (await run_batch(config, resume_command="x")).exit_code == 0
    assert len(sim.stats.creates) == creates
    rows = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert [row["meta"] for row in rows] == [None, {"reviewed": True, "score": 4.5}]
    items = json.loads((output / "items.json").read_text())["items"]
    assert items[1]["meta"] == {"reviewed": True, "score": 4.5}


async def test_a_report_that_cannot_be_written_is_said_and_leaves_the_exit_code(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest = write_manifest(tmp_path, count=2)
    output = tmp_path / "out"
    (output / "report.html").mkdir(parents=True)  # in the way of the contact sheet
    heard: list[Any] = []
    config = run_config(manifest, sim.base_url, output)
    result = await run_batch(config, resume_command="x", on_event=heard.append)
    assert result.exit_code == 0 and result.summary["counts"]["done"] == 2
    said = [e.text for e in heard if isinstance(e, Said) and e.level == logging.WARNING]
    assert any("report.html" in text and "a directory is in the way" in text for text in said)
    rows = (output / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2  # written before the sheet was tried


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("none", "is not a directory"),
        ("empty", "holds no items.json"),
        ("no-ledger", "but no ledger.jsonl"),
        ("garbled", "is not a snapshot of a batch"),
    ],
)
async def test_report_of_a_directory_without_a_batch_is_a_clear_error(
    tmp_path: Path, setup: str, message: str
) -> None:
    folder = tmp_path / "out"
    if setup != "none":
        folder.mkdir()
    if setup == "no-ledger":
        (folder / "items.json").write_text(
            json.dumps({"version": 1, "batch": "b", "manifest": "/m.yaml", "items": []})
        )
    if setup == "garbled":
        (folder / "items.json").write_text("{not json")
    out, err = io.StringIO(), io.StringIO()
    assert await command(["report", str(folder)], out=out, err=err) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (folder / "report.html").exists()
