"""Helpers for integration tests: fast limits, manifests with real images, MP4 checks."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from runner.config import Limits, RunConfig
from runner.manifest import Manifest, load_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests"
API_KEY = "test-key-not-secret"

#: The client's time constants compressed like the test simulator's (seconds, not minutes).
FAST = Limits(
    concurrency=10,
    rate_limit=1000,
    rate_window=1.0,
    poll_min=0.02,
    expected_runtime=0.3,
    item_timeout=60.0,
    cancel_grace=1.0,
    request_timeout=5.0,
    download_timeout=10.0,
    transfer_stall=5.0,
    reconcile_settle=0.5,
    lost_after=3.0,
    unreachable_after=5.0,
    unreachable_at_start=2.0,
    fault_wait=0.02,
)


def write_manifest(tmp_path: Path, count: int = 6, **item_extra: Any) -> Path:
    """A manifest of ``count`` items over the example images, each with its own prompt."""
    images = sorted((EXAMPLE / "images").glob("*.png"))
    folder = tmp_path / "batch"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["batch: t", "model: minimax-i2v-01", "items:"]
    for n in range(count):
        image = images[n % len(images)]
        shutil.copy(image, folder / "images" / image.name)
        lines += [
            f"  - id: item-{n:03d}",
            f"    image: images/{image.name}",
            f"    prompt: scene number {n} slowly comes alive, zoom in",
        ]
        lines += [f"    {key}: {json.dumps(value)}" for key, value in item_extra.items()]
    path = folder / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def url_manifest(tmp_path: Path, sim: Any, count: int) -> Path:
    """A manifest of ``count`` items whose image is a URL (one image uploaded to the
    simulator's storage by the test), so a run starts creating at once, uploading nothing."""
    import aiohttp

    image = sorted((EXAMPLE / "images").glob("*.png"))[0]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{sim.base_url}/v1/upload/presign",
            json={"content_type": "image/png", "file_type": "image"},
            headers={"X-API-Key": API_KEY},
        ) as answer:
            slot = await answer.json()
        async with session.put(
            slot["presigned_url"], data=image.read_bytes(), headers=slot["required_headers"]
        ) as put:
            assert put.status == 200
    folder = tmp_path / "batch"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["batch: t", "model: minimax-i2v-01", "items:"]
    for n in range(count):
        lines += [
            f"  - id: item-{n:03d}",
            f"    image: {slot['public_url']}",
            f"    prompt: scene number {n} slowly comes alive, zoom in",
        ]
    path = folder / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_config(
    manifest_path: Path, base_url: str, output: Path, limits: Limits = FAST, **extra: Any
) -> RunConfig:
    return RunConfig(
        manifest_path=manifest_path,
        output_dir=output,
        api_base=base_url,
        api_key=API_KEY,
        limits=limits,
        **extra,
    )


def load(path: Path) -> Manifest:
    return load_manifest(path)


def ledger_events(output: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (output / "ledger.jsonl").read_text().splitlines()
        if line.strip()
    ]


def mp4_frames(path: Path) -> tuple[int, np.ndarray]:
    """Frame count and the first frame (RGB array) of an MP4, decoded with PyAV."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return len(frames), frames[0]


def resembles(frame: np.ndarray, image_path: Path, others: list[Path]) -> bool:
    """Whether ``frame`` is closer to ``image_path`` than to every image in ``others``."""

    def distance(path: Path) -> float:
        with Image.open(path) as img:
            resized = img.convert("RGB").resize((frame.shape[1], frame.shape[0]))
        return float(np.abs(np.asarray(resized, dtype=np.int16) - frame.astype(np.int16)).mean())

    own = distance(image_path)
    return all(own < distance(other) for other in others if other != image_path)


def png_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (96, 96)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def cli_args(
    manifest: Path, base_url: str, output: Path, *extra: str, verbose: bool = False
) -> list[str]:
    """``python -m runner [-v] run`` with the test simulator's compressed time constants."""
    return [
        sys.executable, "-m", "runner", *(["-v"] if verbose else []), "run", str(manifest),
        "--api-base", base_url, "--output", str(output),
        "--poll-min", "0.05", "--rate", "1000/1", "--expected-runtime", "1", "--concurrency", "4",
        "--reconcile-wait", "0.5", "--unreachable-wait", "2",
        *extra,
    ]  # fmt: skip


async def start_cli(
    args: list[str],
    *,
    key: str = API_KEY,
    preexec_fn: Callable[[], None] | None = None,
) -> asyncio.subprocess.Process:
    """Start the CLI with ``key`` in EACHLABS_API_KEY, capturing stdout and stderr."""
    env = {**os.environ, "EACHLABS_API_KEY": key}
    return await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=preexec_fn,
    )


def count_events(output: Path, event: str) -> int:
    """How many ``event`` records the ledger in ``output`` holds now (0 if there is none)."""
    try:
        text = (output / "ledger.jsonl").read_text()
    except FileNotFoundError:
        return 0
    return text.count(f'"event":"{event}"')


async def wait_for(condition: Callable[[], bool], *, within: float = 30.0) -> None:
    """Poll ``condition`` every 5 ms until it holds; AssertionError after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


def served(sim: Any, endpoint: str) -> int:
    """Requests to ``endpoint`` the simulator served, not counting those it faulted on purpose
    (under the realistic profile a faulted request is asked again)."""
    asked = sum(1 for _, name in sim.stats.api_requests if name == endpoint)
    return asked - sim.stats.faults.get(endpoint, 0)
