"""A real H.264 MP4 made from one image: the simulator's stand-in for the video model.

The clip is a slow camera move over the still image, chosen from the prompt's words, so a video
can be told apart from another and its first frame looks like the image it came from (a client
can check that it downloaded the right file). Pure and CPU-bound: call it in a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
from PIL import Image

#: Fraction of the frame the crop window keeps at the end of a zoom (the zoom's depth).
ZOOM_DEPTH = 0.8
#: Fraction of the frame the crop window keeps while panning or tilting; the window starts
#: centred, so the first frame is this share of the image, not far from the whole of it.
PAN_WINDOW = 0.85

#: Prompt phrases and the motion they ask for; the earliest phrase in the prompt wins.
MOTION_WORDS: tuple[tuple[str, str], ...] = (
    ("zoom in", "zoom_in"),
    ("push in", "zoom_in"),
    ("zoom out", "zoom_out"),
    ("pull out", "zoom_out"),
    ("pan left", "left"),
    ("truck left", "left"),
    ("pan right", "right"),
    ("truck right", "right"),
    ("tilt up", "up"),
    ("pedestal up", "up"),
    ("tilt down", "down"),
    ("pedestal down", "down"),
)
DEFAULT_MOTION = "zoom_in"


class RenderError(Exception):
    """The image could not be decoded, or the video could not be encoded."""


def motion_for(prompt: str) -> str:
    """The camera motion a prompt asks for (see MOTION_WORDS); a gentle zoom in by default."""
    text = " ".join(prompt.lower().split())
    best: tuple[int, str] | None = None
    for phrase, motion in MOTION_WORDS:
        at = text.find(phrase)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, motion)
    return best[1] if best else DEFAULT_MOTION


def frame_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the longer side is ``max_side``, both even and at least 2.

    Like the real model, the output resolution is the model's, whatever the input's size;
    H.264 in yuv420p needs even dimensions.
    """
    if width <= 0 or height <= 0 or max_side < 2:
        raise ValueError(f"cannot fit a {width}x{height} image within {max_side} px")
    scale = max_side / max(width, height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def crop_box(motion: str, t: float, width: int, height: int) -> tuple[float, float, float, float]:
    """The crop window at progress ``t`` (0..1) of ``motion`` over a ``width`` x ``height`` frame.

    A zoom in starts at the whole frame; a zoom out ends there; pans and tilts move a centred
    PAN_WINDOW crop towards one edge.
    """
    if motion == "zoom_out":
        return crop_box("zoom_in", 1.0 - t, width, height)
    if motion == "zoom_in":
        keep = 1.0 - (1.0 - ZOOM_DEPTH) * t
        w, h = width * keep, height * keep
        return (width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2
    w, h = width * PAN_WINDOW, height * PAN_WINDOW
    x, y = (width - w) / 2, (height - h) / 2  # the centred start
    x += {"left": -x * t, "right": x * t}.get(motion, 0.0)
    y += {"up": -y * t, "down": y * t}.get(motion, 0.0)
    return x, y, x + w, y + h


def _frames(image: Image.Image, motion: str, count: int) -> Iterator[Image.Image]:
    width, height = image.size
    for i in range(count):
        t = i / (count - 1) if count > 1 else 0.0
        box = crop_box(motion, t, width, height)
        yield image.resize((width, height), Image.Resampling.BILINEAR, box=box)


def render_mp4(
    image_bytes: bytes, prompt: str, *, seconds: float, fps: int = 24, max_side: int
) -> bytes:
    """Encode a ``seconds``-long H.264 MP4 (yuv420p, ``fps``) panning over the image.

    The frame is the image fitted within ``max_side`` (even sides); the motion comes from
    ``motion_for(prompt)``. Raises RenderError if the bytes are not a usable image or the
    encoder fails.
    """
    try:
        return _render(image_bytes, prompt, seconds, fps, max_side)
    except (OSError, ValueError, av.error.FFmpegError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc


def _render(image_bytes: bytes, prompt: str, seconds: float, fps: int, max_side: int) -> bytes:
    with Image.open(io.BytesIO(image_bytes)) as source:
        source.load()
        rgb = source.convert("RGB")
    size = frame_size(rgb.width, rgb.height, max_side)
    fitted = rgb.resize(size, Image.Resampling.BICUBIC)
    count = max(2, round(seconds * fps))
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for frame in _frames(fitted, motion_for(prompt), count):
            picture = av.VideoFrame.from_image(frame)  # type: ignore[no-untyped-call]
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()
