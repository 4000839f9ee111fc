"""What the runner knows about the Hailuo image-to-video models, from the API contract.

The live schema from ``GET /v1/model`` is the authority where it is reachable; this table gives
the image field each model takes, the camera vocabulary of Director models, the built-in price,
and the schemas the built-in simulator serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "minimax-i2v-01"

#: The vendor page's fixed price per run of the Hailuo I2V models, in USD.
HAILUO_I2V_PRICE_USD = 0.43

#: Camera moves a Director prompt may name in square brackets, up to 3 per bracket.
DIRECTOR_CAMERA_MOVES = (
    "Truck left",
    "Truck right",
    "Pan left",
    "Pan right",
    "Push in",
    "Pull out",
    "Pedestal up",
    "Pedestal down",
    "Tilt up",
    "Tilt down",
    "Zoom in",
    "Zoom out",
    "Shake",
    "Tracking shot",
    "Static shot",
)


@dataclass(frozen=True)
class ModelInfo:
    """One model: its slug, title, image field, price, and the request schema the simulator
    serves for it (built from the published pages only: no limit or format they do not give)."""

    slug: str
    title: str
    image_field: str
    price_usd: float
    director: bool = False
    properties: tuple[tuple[str, dict[str, Any]], ...] = ()
    required: tuple[str, ...] = ()

    def request_schema(self) -> dict[str, Any]:
        """The JSON Schema of this model's ``input``, as ``GET /v1/model`` serves it."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: dict(rule) for name, rule in self.properties},
        }
        if self.required:
            schema["required"] = list(self.required)
        return schema

    def describe(self) -> dict[str, Any]:
        """The model object of ``GET /v1/model`` and ``GET /v1/models``."""
        return {
            "title": self.title,
            "slug": self.slug,
            "version": "0.0.1",
            "output_type": "array",
            "request_schema": self.request_schema(),
        }


def _i2v(slug: str, title: str, *, director: bool = False) -> ModelInfo:
    """An I2V-01 model: the contract's table (and the minimax-i2v-01 page: ``prompt_optimizer``
    defaults to true); ``prompt`` and ``first_frame_image`` required."""
    return ModelInfo(
        slug=slug,
        title=title,
        image_field="first_frame_image",
        price_usd=HAILUO_I2V_PRICE_USD,
        director=director,
        properties=(
            ("prompt", {"type": "string"}),
            ("first_frame_image", {"type": "string"}),
            ("prompt_optimizer", {"type": "boolean", "default": True}),
        ),
        required=("prompt", "first_frame_image"),
    )


def _seed_director(slug: str, title: str) -> ModelInfo:
    """The Director seed page's model: the three inputs its example sends, typed as the example
    has them; the page says nothing of defaults or of which inputs are required."""
    return ModelInfo(
        slug=slug,
        title=title,
        image_field="first_frame_image",
        price_usd=HAILUO_I2V_PRICE_USD,
        director=True,
        properties=(
            ("prompt", {"type": "string"}),
            ("prompt_optimizer", {"type": "boolean"}),
            ("first_frame_image", {"type": "string"}),
        ),
    )


def _v2(slug: str, title: str) -> ModelInfo:
    """A Hailuo 02 model: the contract's table (``image_url``, ``duration`` 6 or 10,
    ``resolution`` 768P or 512P; no defaults published); ``prompt`` and ``image_url`` required."""
    return ModelInfo(
        slug=slug,
        title=title,
        image_field="image_url",
        price_usd=HAILUO_I2V_PRICE_USD,
        properties=(
            ("prompt", {"type": "string"}),
            ("image_url", {"type": "string"}),
            ("prompt_optimizer", {"type": "boolean"}),
            ("duration", {"type": "integer", "enum": [6, 10]}),
            ("resolution", {"type": "string", "enum": ["768P", "512P"]}),
        ),
        required=("prompt", "image_url"),
    )


MODELS: dict[str, ModelInfo] = {
    m.slug: m
    for m in (
        _i2v("minimax-i2v-01", "Minimax Hailuo I2V-01"),
        _i2v("minimax-i2v-01-director", "Hailuo I2V-01 Director", director=True),
        _i2v("minimax-i2v-01-live", "Hailuo I2V-01 Live"),
        _i2v("hailuo-i2v-live", "Hailuo I2V Live"),
        _seed_director("hailuo-i2v-0-1", "Hailuo I2V Director (0.1)"),
        _v2("minimax-hailuo-v2-standard-image-to-video", "Hailuo 02 Standard Image to Video"),
        _v2("minimax-hailuo-v2-pro-image-to-video", "Hailuo 02 Pro Image to Video"),
    )
}


def image_field(slug: str) -> str:
    """The input field that carries the image URL for ``slug``.

    Hailuo v2 models take ``image_url``; every other Hailuo I2V model, and any slug the runner
    does not know, takes ``first_frame_image``.
    """
    info = MODELS.get(slug)
    if info is not None:
        return info.image_field
    return "image_url" if slug.startswith("minimax-hailuo-v2-") else "first_frame_image"


def is_director(slug: str) -> bool:
    """Whether prompts for ``slug`` use the Director bracket syntax for camera moves."""
    info = MODELS.get(slug)
    return info.director if info is not None else "director" in slug
