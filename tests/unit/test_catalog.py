"""Catalogs: a manifest's items read from a CSV or JSONL file (``items_from``, or the catalog named
directly, or standard input), checked by the rules of a YAML item, each problem placed at the
catalog's line (and, for CSV, the field's column) and field."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from runner.diagnostics import Diagnostic, Severity
from runner.manifest import Item, read_manifest
from runner.results.snapshot import snapshot_of

IMAGES = {"deer.png": b"\x89PNG deer", "fox.png": b"\x89PNG fox", "owl.png": b"\x89PNG owl"}
HEADER = ["id", "image", "prompt", "input.duration", "meta.client"]


def images(folder: Path) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, content in IMAGES.items():
        (folder / "images" / name).write_bytes(content)


def write_lines(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> Path:
    images(path.parent)
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode())
    return path


def yaml_twin(folder: Path, items: list[dict[str, object]], top: str = "") -> list[Item]:
    """The same items written as a YAML manifest in ``folder``: what a catalog must equal."""
    images(folder)
    text = f"batch: twin\n{top}items:\n" + "".join(f"  - {json.dumps(item)}\n" for item in items)
    (folder / "twin.yaml").write_text(text)
    reading = read_manifest(folder / "twin.yaml")
    assert not reading.errors, reading.errors
    return list(reading.items)


def errors_of(path: Path) -> list[Diagnostic]:
    reading = read_manifest(path)
    assert reading.errors, "expected errors"
    return reading.errors


def at(errors: list[Diagnostic], file: Path | str, line: int, column: int, field: str | None):
    """The errors placed exactly at ``file:line:column`` and ``field``."""
    return [
        e
        for e in errors
        if e.place.file == str(file)
        and (e.place.line, e.place.column, e.place.field) == (line, column, field)
    ]


def same(a: Item, b: Item) -> None:
    """Two items that render the same video the same way (id, key, input, meta)."""
    assert (a.id, a.key, dict(a.input), a.meta, a.model) == (
        b.id,
        b.key,
        dict(b.input),
        b.meta,
        b.model,
    )


# --- valid catalogs --------------------------------------------------------------------------


def test_csv_catalog_gives_the_items_a_yaml_manifest_of_the_same_items_gives(
    tmp_path: Path,
) -> None:
    path = write_lines(
        tmp_path / "Spring Shoot.csv",
        [
            ",".join(HEADER),
            "deer,images/deer.png,a deer walks,6,acme",
            "fox,images/fox.png,a fox runs,,",
        ],
    )
    reading = read_manifest(path)
    assert reading.problems == ()
    assert reading.batch == "Spring-Shoot"  # the stem, slugified as YAML batches are
    twins = yaml_twin(
        tmp_path / "y",
        [
            {
                "id": "deer",
                "image": "images/deer.png",
                "prompt": "a deer walks",
                "input": {"duration": 6},
                "meta": {"client": "acme"},
            },
            {"id": "fox", "image": "images/fox.png", "prompt": "a fox runs"},
        ],
    )
    for item, twin in zip(reading.items, twins, strict=True):
        same(item, twin)
    deer = reading.items[0]
    assert deer.image_path == (tmp_path / "images" / "deer.png").resolve()
    assert deer.line == 2
    assert deer.place("prompt").column == HEADER.index("prompt") + 1
    assert deer.place("input.duration").column == HEADER.index("input.duration") + 1


def test_jsonl_catalog_takes_nested_and_dotted_inputs_and_meta(tmp_path: Path) -> None:
    rows = [
        {
            "id": "deer",
            "image": "images/deer.png",
            "prompt": "a deer",
            "input": {"seed": 1},
            "input.duration": 6,
            "meta": {"shot": [1, 2]},
            "model": None,
        },
        {"image": "images/owl.png", "prompt": "an owl", "prompt_optimizer": False},
    ]
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(r) for r in rows])
    reading = read_manifest(path)
    assert reading.problems == ()
    twins = yaml_twin(
        tmp_path / "y",
        [
            {
                "id": "deer",
                "image": "images/deer.png",
                "prompt": "a deer",
                "input": {"seed": 1, "duration": 6},
                "meta": {"shot": [1, 2]},
            },
            {"image": "images/owl.png", "prompt": "an owl", "prompt_optimizer": False},
        ],
    )
    for item, twin in zip(reading.items, twins, strict=True):
        same(item, twin)
    assert [item.line for item in reading.items] == [1, 2]


def test_items_from_maps_columns_and_the_top_level_still_applies(tmp_path: Path) -> None:
    write_lines(
        tmp_path / "data" / "export.csv",
        ["sku,still_path,caption,secs,prompt,extra", "A1,images/deer.png,hello deer,10,x,y"],
    )
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        textwrap.dedent(
            """
            batch: shoot
            model: minimax-i2v-01-director
            defaults: {prompt_optimizer: true, input: {seed: 3}}
            items_from: data/export.csv
            columns: {id: sku, image: still_path, prompt: caption, input.duration: secs,
                      meta.sku: sku, meta: "*"}
            """
        )
    )
    reading = read_manifest(manifest)
    assert reading.errors == []
    (item,) = reading.items
    assert (reading.batch, item.id, item.prompt, item.model) == (
        "shoot",
        "A1",
        "hello deer",
        "minimax-i2v-01-director",
    )
    assert dict(item.input) == {
        "prompt": "hello deer",
        "prompt_optimizer": True,
        "seed": 3,
        "duration": 10,
    }
    # meta "*": the columns no field uses, under their own names ("prompt" is not the prompt)
    assert item.meta == {"sku": "A1", "prompt": "x", "extra": "y"}
    assert item.image_path == (tmp_path / "data" / "images" / "deer.png").resolve()
    assert item.place("prompt").file == str(tmp_path / "data" / "export.csv")


def test_extra_columns_are_ignored_without_meta_star(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.csv", ["image,prompt,notes", "images/fox.png,a fox,ignored"])
    (item,) = read_manifest(path).items
    assert item.meta is None
    assert dict(item.input) == {"prompt": "a fox"}
    assert item.id == "fox"  # derived from the image, as in YAML


# --- a CMS export ----------------------------------------------------------------------------


def test_a_cms_export_with_bom_crlf_quoted_commas_and_newlines_reads_right(
    tmp_path: Path,
) -> None:
    lines = [
        "id,image,prompt,Status,Author",
        'deer,images/deer.png,"a deer, slowly,\r\nwalks ""home""",draft,ann',
        "fox,images/fox.png,a fox,live,bob",
        'owl,images/owl.png,"an owl,\r\n\r\nblinks",live,cy',
        "",
        "",
    ]
    path = write_lines(tmp_path / "export.csv", lines, newline="\r\n", bom=True)
    reading = read_manifest(path)
    assert reading.problems == ()
    deer, fox, owl = reading.items
    assert deer.id == "deer"  # the BOM is not part of the first column's name
    assert deer.prompt == 'a deer, slowly,\r\nwalks "home"'
    # each row's line is its first physical line: the deer's prompt spans lines 2-3
    assert [deer.line, fox.line, owl.line] == [2, 4, 5]
    assert owl.prompt == "an owl,\r\n\r\nblinks"


def test_line_numbers_after_a_multiline_prompt_point_at_the_bad_row(tmp_path: Path) -> None:
    lines = ["id,image,prompt", 'a,images/deer.png,"one\ntwo\nthree"', "b,images/nope.png,x"]
    path = write_lines(tmp_path / "c.csv", lines)
    bad_line = 1 + 3 + 1  # the header, the three lines of row a, then row b
    (error,) = errors_of(path)
    assert at([error], path, bad_line, HEADER.index("image") + 1, "image")
    assert "not found" in error.message


# --- bad CSV, every problem in one pass ----------------------------------------------------


def test_every_bad_csv_row_is_reported_at_its_line_column_and_field(tmp_path: Path) -> None:
    header = "id,image,prompt,model"
    lines = [
        header,
        "ok,images/deer.png,fine,",  # 2
        ",images/fox.png,empty id,",  # 3
        "noprompt,images/fox.png,  ,",  # 4
        "gone,images/missing.png,no image,",  # 5
        "ok,images/owl.png,same id as line 2,",  # 6
        "wide,images/owl.png,too,many,fields",  # 7
        "narrow,images/owl.png",  # 8
        "OK,images/deer.png,case-insensitive duplicate,",  # 9
    ]
    path = write_lines(tmp_path / "c.csv", lines)
    errors = errors_of(path)
    cols = header.split(",")

    def line_of(start: str) -> int:
        return next(n for n, text in enumerate(lines, 1) if text.startswith(start))

    assert at(errors, path, line_of(",images/fox"), cols.index("id") + 1, "id")
    assert at(errors, path, line_of("noprompt"), cols.index("prompt") + 1, "prompt")
    assert at(errors, path, line_of("gone"), cols.index("image") + 1, "image")
    (dup,) = at(errors, path, line_of("ok,images/owl"), cols.index("id") + 1, "id")
    assert "duplicate" in dup.message and "(line 2)" in dup.message
    (dup2,) = at(errors, path, line_of("OK,"), 1, "id")
    assert "(line 2)" in dup2.message
    (wide,) = at(errors, path, line_of("wide"), len(cols) + 1, None)
    assert "5 fields" in wide.message
    (narrow,) = at(errors, path, line_of("narrow"), 3, None)
    assert "2 fields" in narrow.message
    assert len(errors) == 7
    assert read_manifest(path).items  # the good rows are still read (the run stops anyway)


def test_missing_required_columns_are_reported_once_at_the_header(tmp_path: Path) -> None:
    lines = ["", "id,picture,caption", "a,images/deer.png,x", "b,images/fox.png,y"]
    path = write_lines(tmp_path / "c.csv", lines)
    errors = errors_of(path)
    header_line = 2  # after a blank line
    assert {e.place.field for e in errors} == {"image", "prompt"}
    assert all((e.place.line, e.place.column) == (header_line, 1) for e in errors)
    assert len(errors) == 2
    assert read_manifest(path).items == ()


def test_a_mapped_column_missing_from_the_header_gets_a_near_miss(tmp_path: Path) -> None:
    write_lines(tmp_path / "c.csv", ["sku,image,prompt", "a,images/deer.png,x"])
    manifest = tmp_path / "m.yaml"
    manifest.write_text("items_from: c.csv\ncolumns: {id: SKU, meta.x: sku}\n")
    (error,) = errors_of(manifest)
    assert at([error], tmp_path / "c.csv", 1, 1, "id")
    assert 'did you mean "sku"' in error.message


def test_unterminated_quote_and_bad_bytes_name_their_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.csv", ["image,prompt", "images/deer.png,ok", 'images/fox.png,"open']
    )
    (error,) = errors_of(path)
    assert (error.place.line, "CSV" in error.message) == (3, True)
    bad = tmp_path / "b.csv"
    bad.write_bytes(b"image,prompt\nimages/deer.png,ok\nimages/fox.png,caf\xe9\n")
    (error,) = errors_of(bad)
    assert error.place.line == 3 and "UTF-8" in error.message


# --- bad JSONL -------------------------------------------------------------------------------


def test_every_bad_jsonl_line_is_reported(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "image": "images/deer.png", "prompt": "x"})
    lines = [
        good,  # 1
        "",  # 2: blank, skipped
        '["a list"]',  # 3
        '{"id": "b", "image": "images/fox.png", "prompt": "x",}',  # 4: trailing comma
        json.dumps({"id": "c", "image": "images/fox.png"}),  # 5: no prompt
        json.dumps({"id": "a", "image": "images/owl.png", "prompt": "y"}),  # 6: duplicate id
        json.dumps({"id": "d", "image": "images/owl.png", "prompt": "z", "input": [1]}),  # 7
    ]
    path = write_lines(tmp_path / "c.jsonl", lines)
    errors = errors_of(path)
    assert "JSON object" in at(errors, path, 3, 1, None)[0].message
    (syntax,) = at(errors, path, 4, lines[3].index("}") + 1, None)
    assert "not valid JSON" in syntax.message
    assert "is required" in at(errors, path, 5, 1, "prompt")[0].message
    assert "(line 1)" in at(errors, path, 6, 1, "id")[0].message
    assert "mapping" in at(errors, path, 7, 1, "input")[0].message
    assert len(errors) == 5


# --- the manifest's items_from ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("items_from: c.csv\nitems: []\n", "items", "not both"),
        ("columns: {id: sku}\nitems: [{image: images/deer.png, prompt: x}]\n", "columns", "needs"),
        ("items_from: c.txt\n", "items_from", "not a catalog"),
        ("items_from: nope.csv\n", "items_from", "not found"),
        (
            "items_from: c.csv\ncolumns: {promt: caption}\n",
            "columns.promt",
            'did you mean "prompt"',
        ),
        (
            "items_from: c.csv\ncolumns: {input.prompt: caption}\n",
            "columns.input.prompt",
            "own field",
        ),
    ],
)
def test_items_from_mistakes_are_placed_in_the_manifest(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    write_lines(tmp_path / "c.csv", ["image,prompt,caption", "images/deer.png,x,y"])
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    errors = [e for e in errors_of(manifest) if e.place.field == field]
    assert errors and fragment in errors[0].message
    assert errors[0].place.file == str(manifest)


# --- standard input --------------------------------------------------------------------------


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.mark.parametrize(
    "data",
    [
        b"\n" + json.dumps({"image": "images/deer.png", "prompt": "a deer"}).encode() + b"\n",
        b"\n\nimage,prompt\nimages/deer.png,a deer\n",
    ],
    ids=["jsonl", "csv"],
)
def test_stdin_is_sniffed_and_images_resolve_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    images(tmp_path)
    monkeypatch.chdir(tmp_path)
    stdin(monkeypatch, data)
    reading = read_manifest(Path("-"))
    assert reading.problems == ()
    assert reading.batch == "stdin"
    (item,) = reading.items
    assert (item.id, item.prompt) == ("deer", "a deer")
    assert item.image_path == (tmp_path / "images" / "deer.png").resolve()
    lines = data.decode().split("\n")
    assert item.line == next(n for n, text in enumerate(lines, 1) if "deer.png" in text)


def test_a_batch_read_from_stdin_is_recorded_as_stdin_not_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``items.json`` named the manifest ``<current directory>/-``, a file that is not
    there."""
    images(tmp_path)
    monkeypatch.chdir(tmp_path)
    stdin(monkeypatch, b"image,prompt\nimages/deer.png,a deer\n")
    manifest = read_manifest(Path("-")).manifest()
    assert str(manifest.path) == "-"
    assert snapshot_of(manifest).manifest == "<stdin>"


def test_stdin_errors_name_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stdin(monkeypatch, b'{"image": "images/none.png", "prompt": "x"}\n')
    (error,) = read_manifest(Path("-")).errors
    assert (error.place.file, error.place.line, error.place.field) == ("<stdin>", 1, "image")
    assert error.severity is Severity.ERROR


def test_a_catalog_file_that_does_not_exist_is_one_error(tmp_path: Path) -> None:
    (error,) = read_manifest(tmp_path / "none.csv").errors
    assert "not found" in error.message and error.place.line is None


def test_csv_cells_of_inputs_read_as_json_and_meta_stays_text(tmp_path: Path) -> None:
    lines = [
        "image,prompt,prompt_optimizer,input,input.duration,input.tags,input.name,meta.sku",
        'images/deer.png,x,TRUE,"{""seed"": 2}",10,"[1, 2]",00123,00123',
    ]
    (item,) = read_manifest(write_lines(tmp_path / "c.csv", lines)).items
    assert dict(item.input) == {
        "prompt": "x",
        "prompt_optimizer": True,
        "seed": 2,
        "duration": 10,
        "tags": [1, 2],
        "name": "00123",
    }
    assert item.meta == {"sku": "00123"}
