"""Manifests built to hang or crash the reader are refused quickly, with one placed error.

A YAML alias bomb, nesting past the composer's stack, an alias inside itself, a huge
``defaults.input`` merged into many items, a manifest that is a FIFO or ``/dev/zero``, one
larger than the reading cap, a control character: each ends in a ``file:line:col`` (or file)
problem, never a hang, a MemoryError or a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.diagnostics import Place, error
from runner.manifest import document, read_manifest

pytestmark = pytest.mark.timeout(20)

ITEM = "  - image: images/deer.png\n    prompt: a deer walks\n"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "deer.png").write_bytes(b"\x89PNG deer")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    return [str(p) for p in read_manifest(path).problems]


def laughs(levels: int, indent: str) -> str:
    """A "billion laughs": ``levels`` anchors, each a list of 9 aliases of the one before."""
    lines = [f"{indent}l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]\n"]
    for n in range(1, levels + 1):
        aliases = ", ".join([f"*l{n - 1}"] * 9)
        lines.append(f"{indent}l{n}: &l{n} [{aliases}]\n")
    return "".join(lines)


def test_the_limits_are_generous_for_real_catalogs() -> None:
    assert document.MAX_NODES == 10_000_000  # 100,000 items of 100 values each
    assert document.MAX_DEPTH == 64
    assert document.MAX_MANIFEST_BYTES == 256 * 1024 * 1024


def test_an_alias_bomb_under_defaults_input_is_refused_where_it_crosses_the_limit(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "defaults:\n  input:\n" + laughs(9, "    ") + "items:\n" + ITEM)
    assert problems(path) == [
        f"{path}:10:14: the manifest would hold more than 10,000,000 values with its aliases "
        "expanded (a YAML alias bomb?)"
    ]


def test_an_alias_bomb_in_an_item_is_refused_too(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n" + ITEM + "    input:\n" + laughs(9, "      "))
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:12:")
    assert "more than 10,000,000 values" in problem


def test_aliases_under_the_limit_still_work(tmp_path: Path) -> None:
    text = "defaults:\n  input:\n" + laughs(2, "    ") + "items:\n" + ITEM
    (item,) = read_manifest(write(tmp_path, text)).items
    assert len(item.input["l2"]) == 9 and item.input["l2"][0][0] == ["ha"] * 9


def test_a_big_defaults_input_counts_once_for_every_item(tmp_path: Path) -> None:
    """600,000 values in ``defaults.input`` are fine once, not merged into 20 items."""
    text = "defaults:\n  input:\n" + laughs(5, "    ") + "items:\n" + ITEM * 20
    path = write(tmp_path, text)
    reading = read_manifest(path)
    assert [str(p) for p in reading.problems] == [
        f'{path}:3:5: field "defaults.input": holds 672,610 values, merged into each of the 20 '
        "items: the manifest would hold more than 10,000,000 values"
    ]
    assert reading.items == ()
    assert read_manifest(write(tmp_path, text.replace(ITEM * 20, ITEM))).errors == []


@pytest.mark.parametrize(
    "value",
    ["[" * 400 + "]" * 400, "{a: " * 400 + "1" + "}" * 400],
    ids=["lists", "mappings"],
)
def test_nesting_400_deep_is_an_error_not_a_recursion_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, "items:\n" + ITEM + f"    input: {{x: {value}}}\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:4:")
    assert problem.endswith(": the manifest nests more than 64 levels deep here")


def test_the_depth_limit_counts_every_level_from_the_top(tmp_path: Path) -> None:
    """The top (1), items (2), the item (3), input (4), then lists: 60 of them reach 64."""
    fits = write(tmp_path, "items:\n" + ITEM + "    input: {x: " + "[" * 60 + "]" * 60 + "}\n")
    assert all("levels deep" not in p for p in problems(fits))
    deeper = write(tmp_path, "items:\n" + ITEM + "    input: {x: " + "[" * 61 + "]" * 61 + "}\n")
    assert problems(deeper) == [f"{deeper}:4:76: the manifest nests more than 64 levels deep here"]


def test_an_alias_inside_the_node_it_names_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - &me\n    image: images/deer.png\n    prompt: [*me]\n")
    assert problems(path) == [
        f"{path}:4:14: the alias *me is inside the node it refers to: the manifest would never end"
    ]


def test_an_undefined_alias_is_still_the_yaml_error_it_was(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - image: *nowhere\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:2:12: invalid YAML: found undefined alias")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_a_manifest_at_dev_zero_is_refused_without_reading_it() -> None:
    reading = read_manifest(Path("/dev/zero"))
    assert reading.problems == (
        error(
            "cannot read the manifest: it is a character device, not a regular file",
            Place("/dev/zero"),
        ),
    )


def test_a_manifest_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    (problem,) = problems(fifo)
    assert problem == (
        f"{fifo}: cannot read the manifest: it is a FIFO (named pipe), not a regular file"
    )


def test_a_manifest_that_is_a_directory_says_so(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path)
    assert problem == (
        f"{tmp_path}: cannot read the manifest: it is a directory, not a regular file"
    )


def test_a_manifest_over_the_size_cap_is_refused_after_reading_one_byte_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "items:\n" + ITEM)
    monkeypatch.setattr(document, "MAX_MANIFEST_BYTES", path.stat().st_size)
    assert read_manifest(path).errors == []
    monkeypatch.setattr(document, "MAX_MANIFEST_BYTES", path.stat().st_size - 1)
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: the manifest is larger than ")
    assert problem.endswith(" MB; split the batch into several manifests")


def test_a_control_character_is_one_placed_line(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - image: images/deer.png\n    prompt: a \x00 deer\n")
    assert problems(path) == [
        f"{path}:3:15: invalid YAML: the character #x0000 is not allowed in YAML"
    ]
