"""Check before spending, through the real CLI against the simulator over loopback.

The corpus (``tests/corpus/*.yaml``) holds broken manifests, each ending in comment lines that
say what it must produce::

    # args: --budget 0.50            extra arguments of `i2v-runner run` (optional)
    # expect: {m}:3:12: item 1 (id "deer"), field "image": image file ... not found (...)

Every ``expect`` line is one error line, exactly as printed after ``error: `` (with ``{m}`` the
manifest's path, ``{images}`` the images folder and ``{sim}`` the simulator's base URL); the
run must print exactly those errors, exit 2, and the simulator must have seen no create, no
presign and no upload. The images the corpus names are made by the ``images`` fixture.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from runner.api.client import EachlabsClient
from runner.api.ratelimit import RateLimiter
from runner.batch import run_batch
from runner.checks.preflight import preflight
from runner.cli import command
from runner.config import CheckConfig, RunConfig

from .helpers import API_KEY, FAST, served, write_manifest

pytestmark = pytest.mark.timeout(60)

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "example.yaml"


# --- the images the corpus names -----------------------------------------------------------


def png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def png_header(width: int, height: int, padding: int = 0) -> bytes:
    """A PNG signature and IHDR (with a right CRC), then ``padding`` zero bytes."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0" * padding


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of good and bad images shared by every case (the 21 MB one is written once)."""
    folder = tmp_path_factory.mktemp("corpus-images")
    (folder / "good.png").write_bytes(png((96, 96), (200, 40, 40)))
    (folder / "good2.png").write_bytes(png((96, 64), (40, 200, 40)))
    (folder / "tiny.png").write_bytes(png((32, 32), (40, 40, 200)))
    (folder / "wide.png").write_bytes(png((1000, 200), (90, 90, 90)))
    (folder / "huge.png").write_bytes(png_header(9000, 9000))
    (folder / "big.png").write_bytes(png_header(640, 480, padding=21 * 1024 * 1024))
    (folder / "notes.png").write_text("shopping list: eggs, milk, bread\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "folder.png").mkdir()
    os.mkfifo(folder / "fifo.png")
    return folder.resolve()


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    path: Path
    args: list[str]
    expect: list[str]


def corpus() -> Iterator[Case]:
    for path in sorted(CORPUS.glob("*.yaml")):
        args: list[str] = []
        expect: list[str] = []
        for line in path.read_text().splitlines():
            if line.startswith("# args: "):
                args += shlex.split(line.removeprefix("# args: "))
            elif line.startswith("# expect: "):
                expect.append(line.removeprefix("# expect: "))
        yield Case(path, args, expect)


CASES = list(corpus())


def test_the_corpus_has_at_least_25_cases_each_with_its_errors() -> None:
    assert len(CASES) >= 25
    assert all(case.expect for case in CASES), [c.path.name for c in CASES if not c.expect]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [
            line.removeprefix("error: ")
            for line in self.err.splitlines()
            if line.startswith("error: ")
        ]


async def cli(*argv: str) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    code = await command(list(argv), out=out, err=err)
    return Outcome(code, out.getvalue(), err.getvalue())


def fill(text: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        text = text.replace("{" + name + "}", value)
    return text


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text(API_KEY)
    return path


def assert_nothing_spent(sim: Any) -> None:
    assert (len(sim.stats.creates), sim.stats.presigns, sim.stats.uploads) == (0, 0, 0)


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
async def test_each_broken_manifest_exits_2_with_its_errors_and_spends_nothing(
    simulator: Any, tmp_path: Path, images: Path, case: Case
) -> None:
    sim = await simulator()
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "images").symlink_to(images)
    manifest = folder / case.path.name
    manifest.write_text(case.path.read_text().replace("{sim}", sim.base_url))
    names = {"m": str(manifest), "images": str(images), "sim": sim.base_url}

    got = await cli(
        "run", str(manifest), "--api-base", sim.base_url, "--api-key-file",
        str(key_file(tmp_path)), "--output", str(tmp_path / "out"), *case.args,
    )  # fmt: skip

    assert got.code == 2, got.err
    assert got.errors == [fill(line, names) for line in case.expect], got.err
    assert "nothing was uploaded or submitted" in got.err
    assert_nothing_spent(sim)


# --- validate, dry run, budget ---------------------------------------------------------------


async def test_validate_prints_the_plan_and_spends_nothing(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator()
    out = tmp_path / "out"
    got = await cli("validate", str(EXAMPLE), "--api-base", sim.base_url, "--output", str(out))
    assert got.code == 0, got.err
    assert got.err == ""
    assert "  to submit         6   6 images to upload" in got.out
    assert "  model minimax-i2v-01: 6 items, schema fetched" in got.out
    assert "  estimated cost: 6 × $0.43 = $2.58" in got.out
    assert got.out.rstrip().endswith("0 errors, 0 warnings: ready to run")
    assert_nothing_spent(sim)
    # One model lookup for six items, cached with its time in the output directory.
    assert {endpoint for _, endpoint in sim.stats.api_requests} == {"model"}
    assert served(sim, "model") == 1
    cache = json.loads((out / "model-schemas.json").read_text())
    assert cache["models"]["minimax-i2v-01"]["fetched_at"].endswith("Z")
    assert sorted(p.name for p in out.iterdir()) == ["model-schemas.json"]


async def test_an_image_url_on_a_private_address_is_warned_about_before_spending(
    simulator: Any, tmp_path: Path
) -> None:
    """The real service cannot fetch from this machine or a private network: the create would
    fail INPUT_DOWNLOAD_ERROR. Say so before the run."""
    sim = await simulator()
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "model: minimax-i2v-01\nitems:\n"
        "  - id: lan\n    image: http://192.168.1.20/photo.png\n"
        "    prompt: a deer slowly walks through the misty forest at dawn\n"
    )
    got = await cli(
        "validate", str(manifest), "--api-base", sim.base_url, "--output", str(tmp_path / "out")
    )
    assert got.code == 0, got.err
    assert (
        'item 1 (id "lan"), field "image": the API\'s servers cannot fetch an image from a '
        "private network address (192.168.1.20)" in got.err
    )
    strict = await cli(
        "validate",
        str(manifest),
        "--api-base",
        sim.base_url,
        "--strict",
        "--output",
        str(tmp_path / "out"),
    )
    assert strict.code == 2


async def test_dry_run_after_a_run_shows_everything_done_and_the_spend(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest = write_manifest(tmp_path, count=3)
    out = tmp_path / "out"
    common = ["--api-base", sim.base_url, "--api-key-file", str(key_file(tmp_path))]
    common += ["--output", str(out), "--poll-min", "0.02", "--rate", "1000/1"]
    first = await cli("-q", "run", str(manifest), *common)
    assert first.code == 0, first.err
    creates = len(sim.stats.creates)

    again = await cli("run", str(manifest), *common, "--dry-run")
    assert again.code == 0, again.err
    assert "  already done      3" in again.out
    assert "  estimated cost: $0.00 (nothing to submit)" in again.out
    assert "  spent before: $1.29 recorded; batch total ≈ $1.29" in again.out
    assert len(sim.stats.creates) == creates


async def test_a_budget_below_the_estimate_refuses_to_start(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator()
    out = tmp_path / "out"
    got = await cli(
        "run", str(EXAMPLE), "--api-base", sim.base_url, "--api-key-file",
        str(key_file(tmp_path)), "--output", str(out), "--budget", "1",
    )  # fmt: skip
    assert got.code == 2
    assert got.errors == [
        f"{EXAMPLE}: the estimate $2.58 for 6 items to submit exceeds --budget $1.00; "
        "--budget-partial would submit the first 2 items"
    ]
    assert "  budget: $1.00 does not cover the batch total ≈ $2.58" in got.out
    assert_nothing_spent(sim)
    assert not (out / "ledger.jsonl").exists()


async def test_a_dry_run_with_budget_partial_says_what_fits(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator()
    got = await cli(
        "run", str(EXAMPLE), "--api-base", sim.base_url, "--output", str(tmp_path / "out"),
        "--budget", "1", "--budget-partial", "--dry-run",
    )  # fmt: skip
    assert got.code == 0, got.err
    assert (
        "  budget: $1.00 fits the first 2 of 6 items to submit; the other 4 stay pending "
        "(--budget-partial)" in got.out
    )
    assert_nothing_spent(sim)


async def test_offline_uses_the_cached_schema_and_makes_no_request(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    out = tmp_path / "out"
    args = ["validate", str(EXAMPLE), "--api-base", sim.base_url, "--output", str(out)]
    assert (await cli(*args)).code == 0
    requests = len(sim.stats.api_requests)
    cached = await cli(*args, "--offline")
    assert cached.code == 0, cached.err
    assert "  model minimax-i2v-01: 6 items, schema cached at 20" in cached.out
    assert len(sim.stats.api_requests) == requests

    empty = await cli(*args[:-1], str(tmp_path / "elsewhere"), "--offline")
    assert empty.code == 0
    assert "schema not checked" in empty.out
    assert 'model "minimax-i2v-01": --offline, and no schema of it is cached in' in empty.err


async def test_an_unreachable_api_falls_back_to_a_warning_not_an_error(tmp_path: Path) -> None:
    got = await cli(
        "validate", str(EXAMPLE), "--api-base", "http://127.0.0.1:9", "--output",
        str(tmp_path / "out"),
    )  # fmt: skip
    assert got.code == 0, got.err
    assert "fetching its schema failed (cannot connect to http://127.0.0.1:9" in got.err


async def test_check_urls_checks_the_head_of_each_url_image(
    simulator: Any, tmp_path: Path, images: Path
) -> None:
    routes = web.RouteTableDef()

    @routes.get("/{name}")
    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = (images / name).read_bytes() if name.endswith(".png") else b"<html>nope</html>"
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        host = f"http://127.0.0.1:{port}"
        manifest = tmp_path / "urls.yaml"
        lines = ["items:"]
        for n, name in enumerate(["good.png", "tiny.png", "notes.png", "page.html", "wide.png"]):
            lines += [
                f"  - id: i{n}",
                f"    image: {host}/{name}",
                "    prompt: a deer walks slowly through the misty forest as the fog drifts",
            ]
        manifest.write_text("\n".join(lines) + "\n")
        sim = await simulator()
        base = ["validate", str(manifest), "--api-base", sim.base_url, "--output", str(tmp_path)]
        assert (await cli(*base)).code == 0  # URLs are not fetched unless asked
        got = await cli(*base, "--check-urls")
    finally:
        await runner.cleanup()
    assert got.code == 2
    where = f'{manifest}:{{line}}:12: item {{n}} (id "i{{i}}"), field "image"'
    assert got.errors == [
        where.format(line=6, n=2, i=1) + ": the URL is 32x32 px; each side must be 64-8192 px",
        where.format(line=9, n=3, i=2)
        + ": the URL is not a PNG, JPEG, WebP or GIF image by its content: it looks like text",
        where.format(line=12, n=4, i=3)
        + ": the URL is not a PNG, JPEG, WebP or GIF image by its content: it is an HTML page",
    ]
    assert "the URL is 1000x200 px, an aspect ratio of 5.00:1" in got.err  # a warning


# --- the budget during a run (the scheduler's part) ------------------------------------------


async def test_budget_partial_submits_exactly_the_items_that_fit_and_stops_cleanly(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=6)
    output = tmp_path / "out"
    config = RunConfig(
        manifest_path=manifest_path,
        output_dir=output,
        api_base=sim.base_url,
        api_key=API_KEY,
        limits=FAST,
        budget_usd=1.00,  # two runs at $0.43 fit, a third would make $1.29
        budget_partial=True,
    )
    result = await run_batch(config, resume_command="again")

    prompts = sorted(c.input["prompt"] for c in sim.stats.creates)
    assert prompts == [
        "scene number 0 slowly comes alive, zoom in",
        "scene number 1 slowly comes alive, zoom in",
    ]
    counts = result.summary["counts"]
    assert (counts["done"], counts["pending"], counts["failed"]) == (2, 4, 0)
    assert result.summary["cost_usd"] == pytest.approx(0.86)
    assert result.exit_code == 1 and not result.summary["interrupted"]


async def test_model_lookups_go_through_the_request_budget_the_run_shares(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest = write_manifest(tmp_path, count=2, model="minimax-i2v-01-live")
    budget = RateLimiter(60, 60.0)
    async with aiohttp.ClientSession() as session:
        client = EachlabsClient(session, sim.base_url, API_KEY, budget, request_timeout=5.0)
        report = await preflight(manifest, CheckConfig(), output_dir=tmp_path / "o", client=client)
    assert report.errors == []
    # One model, looked up once (asked again only if the simulator faulted on purpose), and
    # every request the simulator saw went through the budget.
    assert served(sim, "model") == 1
    assert budget.sent == len(sim.stats.api_requests)


async def test_validate_with_simulate_checks_against_the_in_process_simulator(
    tmp_path: Path,
) -> None:
    got = await cli("validate", str(EXAMPLE), "--simulate", "--output", str(tmp_path / "out"))
    assert got.code == 0, got.err
    assert "  model minimax-i2v-01: 6 items, schema fetched" in got.out


async def test_budget_partial_without_a_budget_is_a_usage_error() -> None:
    got = await cli("validate", str(EXAMPLE), "--offline", "--budget-partial")
    assert got.code == 2
    assert got.err == "error: --budget-partial needs --budget USD\n"
