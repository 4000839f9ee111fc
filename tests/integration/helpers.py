"""Helpers for integration tests: fast limits, manifests with real images, MP4 checks."""

from __future__ import annotations

import io
import json
import shutil
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
    request_timeout=5.0,
    download_timeout=10.0,
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
