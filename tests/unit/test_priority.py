"""An item's ``priority:`` in a YAML manifest and in a catalog's column: read as a whole
number (higher is created first, ``runner.night.submit_order``), a bad one named by its place."""

from __future__ import annotations

from pathlib import Path

from runner.manifest import read_manifest


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_yaml_items_priority_is_read_and_defaults_to_zero(tmp_path: Path) -> None:
    manifest = write(
        tmp_path,
        "m.yaml",
        "batch: b\nitems:\n"
        "  - {id: a, image: 'https://x.example/a.png', prompt: one}\n"
        "  - {id: b, image: 'https://x.example/b.png', prompt: two, priority: 5}\n"
        "  - {id: c, image: 'https://x.example/c.png', prompt: three, priority: -2}\n",
    )
    reading = read_manifest(manifest)
    assert reading.errors == []
    assert [item.priority for item in reading.items] == [0, 5, -2]


def test_a_priority_that_is_not_a_whole_number_is_an_error_at_its_place(tmp_path: Path) -> None:
    manifest = write(
        tmp_path,
        "m.yaml",
        "batch: b\nitems:\n"
        "  - {id: a, image: 'https://x.example/a.png', prompt: one, priority: high}\n"
        "  - {id: b, image: 'https://x.example/b.png', prompt: two, priority: 2.5}\n"
        "  - {id: c, image: 'https://x.example/c.png', prompt: two, priority: true}\n",
    )
    errors = [str(problem) for problem in read_manifest(manifest).errors]
    assert len(errors) == 3
    assert all('field "priority": must be a whole number' in line for line in errors)
    assert "m.yaml:3:" in errors[0]
    assert 'id "a"' in errors[0] and "a string" in errors[0]
    assert 'id "b"' in errors[1] and 'id "c"' in errors[2]


def test_a_catalogs_priority_column_is_read_as_a_number(tmp_path: Path) -> None:
    catalog = write(
        tmp_path,
        "c.csv",
        "id,image,prompt,priority\n"
        "a,https://x.example/a.png,one,\n"
        "b,https://x.example/b.png,two,3\n"
        "c,https://x.example/c.png,three,soon\n",
    )
    reading = read_manifest(catalog)
    assert [item.priority for item in reading.items[:2]] == [0, 3]
    (bad,) = [str(problem) for problem in reading.errors]
    assert "c.csv:4:" in bad and 'field "priority"' in bad
