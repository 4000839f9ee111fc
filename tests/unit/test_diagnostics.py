"""Diagnostics: one type for the manifest, the checks and the preflight. A place is kept as its
parts and rendered as users read it; diagnostics are sorted by those parts and recognised by
their code and subject, never by parsing the rendered text."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from runner.checks.preflight import Report, preflight, settled
from runner.checks.schema import CACHE_NAME, ModelSchema, write_cache
from runner.config import CheckConfig
from runner.diagnostics import Code, Diagnostic, Place, Severity, error, ordered, warning
from runner.manifest import read_manifest
from runner.models import MODELS

pytestmark = pytest.mark.timeout(20)

PROMPT = "a deer slowly walks through the misty forest as the fog drifts between the pines"


def write_batch(folder: Path, items: list[tuple[str, str]], model: str = "minimax-i2v-01") -> Path:
    """A manifest ``m.yaml`` in ``folder`` of one item per (image file name, model); each image
    is a good PNG, whatever its name."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"model: {model}", "items:"]
    for n, (image, item_model) in enumerate(items):
        Image.new("RGB", (96, 96), (20, 120, 40)).save(folder / image, "PNG")
        lines += [f"  - id: i{n}", f"    image: {image}", f"    prompt: {PROMPT}"]
        if item_model != model:
            lines.append(f"    model: {item_model}")
    manifest = folder / "m.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "text"),
    [
        (Place("m.yaml"), "m.yaml"),
        (Place("m.yaml", 3, 12), "m.yaml:3:12"),
        (Place("m.yaml", 2, 12, field="price_usd"), 'm.yaml:2:12: field "price_usd"'),
        (
            Place("m.yaml", 5, 13, item=2, item_id="deer", field="prompt"),
            'm.yaml:5:13: item 3 (id "deer"), field "prompt"',
        ),
        (Place("m.yaml", 7, 13, item=1, field="prompt"), 'm.yaml:7:13: item 2, field "prompt"'),
        (Place("m.yaml", 4, 5, item=0, item_id="deer"), 'm.yaml:4:5: item 1 (id "deer")'),
        (Place("m.yaml", 1, 1, document=True), "m.yaml:1:1: the manifest"),
        (Place(item=1, item_id="fox"), 'item 2 (id "fox")'),
        (Place("a:1:2.yaml", 9, 4, item=0, item_id='x"y'), 'a:1:2.yaml:9:4: item 1 (id "x\\"y")'),
        (Place(), ""),
    ],
)
def test_a_place_is_rendered_as_users_read_it(place: Place, text: str) -> None:
    assert str(place) == text


def test_a_diagnostic_prints_its_place_then_its_message() -> None:
    problem = error("is required", Place("m.yaml", 3, 5, item=0, field="prompt"))
    assert problem.severity is Severity.ERROR
    assert problem.where == 'm.yaml:3:5: item 1, field "prompt"'
    assert (
        f"{problem.severity}: {problem}" == 'error: m.yaml:3:5: item 1, field "prompt": is required'
    )
    found = warning("is empty")  # a pure check's finding, before the preflight places it
    assert str(found) == "is empty"
    assert found.at(Place("m.yaml", 6, 13)) == warning("is empty", Place("m.yaml", 6, 13))


# --- sorting -------------------------------------------------------------------------------


def test_diagnostics_sort_by_file_line_column_then_item() -> None:
    """The manifest first (its file-wide diagnostics before those at a line), lines and columns
    as numbers (9 before 10, 5 before 20), items in their order at one place; a file name that
    looks like a position changes nothing."""
    manifest = "shots:10:2.yaml"

    def at(line: int, column: int, item: int | None = None) -> Diagnostic:
        return warning(f"{line}:{column} {item}", Place(manifest, line, column, item=item))

    budget = error("over budget", Place(manifest))
    ledger = warning("corrupt record", Place("a/ledger.jsonl"))  # named before the manifest
    given = [ledger, at(10, 3), at(9, 20), at(9, 5, item=1), at(9, 5, item=0), at(9, 5), budget]
    assert ordered(given, first=manifest) == [
        budget,
        at(9, 5),
        at(9, 5, item=0),
        at(9, 5, item=1),
        at(9, 20),
        at(10, 3),
        ledger,
    ]


def test_diagnostics_at_one_place_keep_their_order_and_repeats_go() -> None:
    place = Place("m.yaml", 4, 12, item=0, item_id="deer", field="image")
    first, second = error("b comes first", place), warning("a comes second", place)
    assert ordered([first, second, first, second]) == [first, second]


async def test_a_ledger_in_a_folder_named_like_the_manifest_comes_after_its_problems(
    tmp_path: Path,
) -> None:
    """Output in ``m.yaml.out/``: the ledger's path starts with the manifest's. Read as text,
    its warnings looked like file-wide ones of the manifest and were listed first."""
    manifest = write_batch(tmp_path, [("deer.png", "custom-model")], model="custom-model")
    out = tmp_path / "m.yaml.out"
    out.mkdir()
    (out / "ledger.jsonl").write_text("not json\n")
    report = await preflight(manifest, CheckConfig(offline=True), output_dir=out)
    files = [problem.place.file for problem in report.problems]
    assert files == [str(manifest), str(manifest), str(out / "ledger.jsonl")]
    assert report.problems[0].code is Code.UNKNOWN_MODEL


# --- filtering -----------------------------------------------------------------------------

SUFFIX_TEXT = '"deer.bmp": the API takes JPEG, PNG, WebP or GIF images'
GUESS_TEXT = 'unknown model "custom-model"; the server decides'


@pytest.mark.parametrize(
    ("problem", "moot"),
    [
        (warning(SUFFIX_TEXT, code=Code.SUFFIX_GUESS), True),
        (warning(SUFFIX_TEXT), False),  # the same words, but not the manifest's guess
        (warning(GUESS_TEXT, code=Code.UNKNOWN_MODEL, subject="custom-model"), True),
        (warning(GUESS_TEXT, code=Code.UNKNOWN_MODEL, subject="other-model"), False),
        (warning(GUESS_TEXT), False),  # a message that merely starts like the guess
        (error('the API does not know the model "custom-model" (HTTP 404)'), False),
    ],
)
def test_a_guess_is_settled_by_its_code_and_subject_not_its_text(
    problem: Diagnostic, moot: bool
) -> None:
    assert settled(problem, frozenset({"custom-model"})) is moot


async def test_the_preflight_drops_the_guesses_it_settled_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    """A PNG named ``.bmp`` (its content was read) and a model the cached schema knows lose the
    manifest's warnings; a model nobody answered for keeps its own."""
    manifest = write_batch(
        tmp_path / "batch", [("deer.bmp", "custom-model"), ("fox.png", "other-model")]
    )
    out = tmp_path / "out"
    schema = MODELS["minimax-i2v-01"].request_schema()
    write_cache(
        out / CACHE_NAME, {"custom-model": ModelSchema("custom-model", schema, "T0", False)}
    )
    guesses = {(p.code, p.subject) for p in read_manifest(manifest).problems if p.code}
    assert guesses == {
        (Code.SUFFIX_GUESS, None),
        (Code.UNKNOWN_MODEL, "custom-model"),
        (Code.UNKNOWN_MODEL, "other-model"),
    }
    report = await preflight(manifest, CheckConfig(offline=True), output_dir=out)
    assert {(p.code, p.subject) for p in report.problems if p.code} == {
        (Code.UNKNOWN_MODEL, "other-model")
    }
    assert report.errors == []
    assert all(p.severity is Severity.WARNING for p in report.warnings)


def test_a_report_splits_its_problems_by_severity() -> None:
    first, second = error("a", Place("m.yaml", 1, 1)), error("c", Place("m.yaml", 3, 1))
    advice = warning("b", Place("m.yaml", 2, 1))
    report = Report(Path("m.yaml"), "m", Path("out"), (first, advice, second))
    assert (report.errors, report.warnings) == ([first, second], [advice])
