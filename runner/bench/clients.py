"""The clients ``make bench`` compares: two reference clients and this runner, each a
coroutine ``(base, items, seen, work) -> failed``."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from runner.batch import check_and_run
from runner.bench import IMAGES, ITEMS, KEY, LIMITS, SCALE, SETUP_TRIES, SLOTS
from runner.checks.preflight import Report
from runner.config import RunConfig
from runner.display import Mode, RunView, ViewSettings


async def upload_images(base: str) -> list[str]:
    """Put the example images on the simulator once, so every client uses the same URLs."""
    urls = []
    async with aiohttp.ClientSession() as session:  # the key goes to the API only, not the PUT
        for path in sorted(IMAGES.glob("*.png")):
            for _ in range(SETUP_TRIES):  # the realistic profile faults a few of these
                try:
                    async with session.post(
                        f"{base}/v1/upload/presign",
                        json={"content_type": "image/png", "file_type": "image"},
                        headers={"X-API-Key": KEY},
                    ) as response:
                        slot = await response.json()
                    headers = dict(slot["required_headers"])
                    async with session.put(
                        slot["presigned_url"], data=path.read_bytes(), headers=headers
                    ) as put:
                        put.raise_for_status()
                except (aiohttp.ClientError, KeyError, TypeError):
                    continue
                urls.append(slot["public_url"])
                break
            else:
                raise RuntimeError(f"could not upload {path.name} in {SETUP_TRIES} tries")
    return urls


def requests_for(urls: list[str], count: int = ITEMS) -> list[dict[str, Any]]:
    """``count`` items over the images at ``urls``, each with its own prompt."""
    return [
        {
            "id": f"item-{n:03d}",
            "prompt": f"scene {n} slowly comes alive as the light changes",
            "image": urls[n % len(urls)],
        }
        for n in range(count)
    ]


# -- the reference clients ---------------------------------------------------------------------


async def reference_client(
    base: str, items: list[dict[str, Any]], seen: dict[str, float], *, poll: float, backoff: bool
) -> int:
    """A semaphore of 10 around create-then-poll; returns how many items failed."""
    gate = asyncio.Semaphore(SLOTS)
    failed = 0
    loop = asyncio.get_running_loop()

    async def one(session: aiohttp.ClientSession, item: dict[str, Any]) -> None:
        nonlocal failed
        body = {
            "model": "minimax-i2v-01",
            "version": "0.0.1",
            "input": {"prompt": item["prompt"], "first_frame_image": item["image"]},
        }
        async with gate:
            wait = poll
            while True:
                async with session.post(f"{base}/v1/prediction/", json=body) as response:
                    created = await response.json(content_type=None)
                if created.get("status") == "success":
                    break
                if not backoff:  # the seed page raises: the item is lost
                    failed += 1
                    return
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30.0 / SCALE)
            prediction_id = created["predictionID"]
            while True:
                await asyncio.sleep(poll)
                async with session.get(f"{base}/v1/prediction/{prediction_id}") as response:
                    result = await response.json(content_type=None)
                status = result.get("status")
                if status in ("success", "error"):
                    seen[prediction_id] = loop.time()
                    failed += status == "error"
                    return
                if backoff and response.status == 429:
                    await asyncio.sleep(poll * 4)

    async with (
        aiohttp.ClientSession(
            headers={"X-API-Key": KEY}, connector=aiohttp.TCPConnector(limit=SLOTS * 2)
        ) as session,
        asyncio.TaskGroup() as tg,
    ):
        for item in items:
            tg.create_task(one(session, item))
    return failed


async def seed_loop(base: str, items: list[dict[str, Any]], seen: dict[str, float], _: Path) -> int:
    return await reference_client(base, items, seen, poll=1.0 / SCALE, backoff=False)


async def sdk_poller(
    base: str, items: list[dict[str, Any]], seen: dict[str, float], _: Path
) -> int:
    return await reference_client(base, items, seen, poll=0.5 / SCALE, backoff=True)


class _Terminal(io.StringIO):
    """Where the live view draws in the bench: a buffer that says it is a terminal, so rich
    animates it as it would a real one (redraws, the log above the view)."""

    def isatty(self) -> bool:
        return True


async def this_runner(
    base: str, items: list[dict[str, Any]], seen: dict[str, float], work: Path
) -> int:
    """The runner as the library runs it: no display."""
    return await _run_ours(base, items, seen, work, view=False)


async def this_runner_watched(
    base: str, items: list[dict[str, Any]], seen: dict[str, float], work: Path
) -> int:
    """The runner as a terminal user runs it: the CLI's live view subscribed and drawing."""
    return await _run_ours(base, items, seen, work, view=True)


def bench_manifest(items: list[dict[str, Any]], work: Path) -> Path:
    """The manifest of ``items`` (``requests_for``'s) in ``work``."""
    manifest = work / "bench.yaml"
    lines = ["batch: bench", "model: minimax-i2v-01", "items:"]
    for item in items:
        lines += [
            f"  - id: {item['id']}",
            f"    image: {item['image']}",
            f"    prompt: {item['prompt']}",
        ]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


async def _run_ours(
    base: str, items: list[dict[str, Any]], seen: dict[str, float], work: Path, *, view: bool
) -> int:
    manifest = bench_manifest(items, work)
    config = RunConfig(
        manifest_path=manifest, output_dir=work / "out", api_base=base, api_key=KEY, limits=LIMITS
    )

    def observe(prediction_id: str, at: float) -> None:
        seen.setdefault(prediction_id, at)

    mode = Mode.LIVE if view else Mode.QUIET
    screen = _Terminal()
    async with RunView(ViewSettings(), mode, _Terminal(), screen) as shown:

        def start(report: Report) -> None:
            shown.start(report, config.limits, None)

        outcome = await check_and_run(
            config, show=start, on_event=shown.on_event, observer=observe, resume_command=""
        )
        assert outcome.result is not None, "the bench's batch passes its checks"
        shown.finish(outcome.result)
    if view and f"/{len(items)} done" not in screen.getvalue():
        raise RuntimeError("the live view drew nothing: the bench would not measure it")
    counts = outcome.result.summary["counts"]
    return int(counts["failed"] + counts["pending"] + counts["running"])


Client = Callable[[str, list[dict[str, Any]], dict[str, float], Path], Awaitable[int]]
