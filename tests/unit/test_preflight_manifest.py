"""What the manifest gives the preflight: prices, each field's place, problems without raising."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from runner.diagnostics import Place
from runner.errors import ManifestError
from runner.manifest import load_manifest, read_manifest


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    for name in ("deer.png", "fox.png"):
        (tmp_path / "images" / name).write_bytes(b"\x89PNG " + name.encode())
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


TWO_MODELS = """
model: minimax-i2v-01
{prices}
items:
  - id: deer
    image: images/deer.png
    prompt: a deer walks
  - id: fox
    image: images/fox.png
    prompt: a fox runs
    model: custom-model
"""


@pytest.mark.parametrize(
    ("prices", "deer", "fox"),
    [
        ("", 0.43, 0.43),
        ("price_usd: 0.5", 0.5, 0.5),
        ("price_usd: 1", 1.0, 1.0),
        ("price_usd: {custom-model: 0.9}", 0.43, 0.9),
        ("price_usd: {minimax-i2v-01: 0.4, custom-model: 0}", 0.4, 0.0),
    ],
)
def test_each_item_gets_its_price(tmp_path: Path, prices: str, deer: float, fox: float) -> None:
    manifest = load_manifest(write(tmp_path, TWO_MODELS.format(prices=prices)))
    assert [item.price_usd for item in manifest.items] == [Decimal(str(deer)), Decimal(str(fox))]


def test_an_unknown_model_without_a_price_says_its_price_is_a_guess(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_MODELS.format(prices=""))
    (warning,) = load_manifest(path).warnings
    assert warning.where == f'{path}:10:12: item 2 (id "fox"), field "model"'
    assert warning.message.endswith(
        "the server decides; its price is estimated at $0.43 a run (set price_usd to change that)"
    )
    priced = write(tmp_path, TWO_MODELS.format(prices="price_usd: {custom-model: 0.9}"))
    (warning,) = load_manifest(priced).warnings
    assert warning.message == 'unknown model "custom-model"; the server decides'


@pytest.mark.parametrize(
    ("prices", "where", "message"),
    [
        ("price_usd: -1", '2:12: field "price_usd"', "must be a price of at least 0 USD, not -1"),
        (
            "price_usd: cheap",
            '2:12: field "price_usd"',
            "must be a price in USD (a number), not a string",
        ),
        (
            "price_usd: [0.4]",
            '2:12: field "price_usd"',
            "must be a price in USD, or a mapping of model slug to price, not a list",
        ),
        (
            "price_usd: {custom-model: true}",
            '2:27: field "price_usd.custom-model"',
            "must be a price in USD (a number), not a boolean",
        ),
        (
            "price_usd: {custom-model: .nan}",
            '2:27: field "price_usd.custom-model"',
            "must be a price of at least 0 USD, not nan",
        ),
    ],
)
def test_a_bad_price_is_an_error_at_its_place(
    tmp_path: Path, prices: str, where: str, message: str
) -> None:
    path = write(tmp_path, TWO_MODELS.format(prices=prices))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert [(p.where, p.message) for p in info.value.problems] == [(f"{path}:{where}", message)]


def test_a_priced_model_no_item_uses_is_a_warning_with_the_near_miss(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_MODELS.format(prices="price_usd: {custom-modle: 0.9}"))
    warnings = [w for w in load_manifest(path).warnings if "price_usd" in w.where]
    assert [(w.where, w.message) for w in warnings] == [
        (
            f'{path}:2:13: field "price_usd.custom-modle"',
            'no item uses this model; did you mean "custom-model"?',
        )
    ]


def test_items_know_where_each_field_was_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        model: minimax-i2v-01
        defaults: {prompt_optimizer: false, input: {seed: 1}}
        items:
          - id: deer
            image: images/deer.png
            prompt: a deer walks
            input: {style: calm}
          - image: images/fox.png
            prompt: a fox runs
            prompt_optimizer: true
            input: {seed: 2}
        """,
    )
    deer, fox = load_manifest(path).items
    assert str(deer.place()) == f'{path}:4:5: item 1 (id "deer")'
    assert str(deer.place("prompt")) == f'{path}:6:13: item 1 (id "deer"), field "prompt"'
    assert str(deer.place("model")) == f'{path}:1:8: item 1 (id "deer"), field "model"'
    assert deer.input_place("first_frame_image") == deer.place("image")
    assert str(deer.input_place("prompt_optimizer")) == (
        f'{path}:2:30: item 1 (id "deer"), field "defaults.prompt_optimizer"'
    )
    assert str(deer.input_place("seed")) == (
        f'{path}:2:51: item 1 (id "deer"), field "defaults.input.seed"'
    )
    assert str(deer.input_place("style")) == f'{path}:7:20: item 1 (id "deer"), field "input.style"'
    assert deer.input_place("unheard-of") == deer.place()
    assert str(fox.input_place("seed")) == f'{path}:11:19: item 2 (id "fox"), field "input.seed"'
    assert str(fox.input_place("prompt_optimizer")) == (
        f'{path}:10:23: item 2 (id "fox"), field "prompt_optimizer"'
    )
    assert deer.place("prompt") == Place(str(path), 6, 13, item=0, item_id="deer", field="prompt")


def test_read_manifest_returns_every_problem_and_the_items_without_raising(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        items:
          - id: deer
            image: images/missing.png
            prompt: a deer walks
          - id: fox
            image: images/fox.png
            prompt: a fox runs
        """,
    )
    reading = read_manifest(path)
    assert [item.id for item in reading.items] == ["deer", "fox"]
    assert reading.flawed == frozenset({0})
    (error,) = reading.errors
    assert error.where == f'{path}:3:12: item 1 (id "deer"), field "image"'
    with pytest.raises(ManifestError):
        reading.manifest()


def test_read_manifest_of_broken_yaml_has_no_items_and_the_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - id: [unclosed\n")
    reading = read_manifest(path)
    assert reading.items == () and reading.batch == "m"
    (error,) = reading.errors
    assert error.message.startswith("invalid YAML")
