"""Loading manifests: items, ids and keys; every problem reported with its file, line and field."""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

import pytest

from runner.diagnostics import Diagnostic, Severity
from runner.errors import ManifestError
from runner.jobs import item_key
from runner.manifest import Item, load_manifest

REPO = Path(__file__).resolve().parents[2]

IMAGES = {"deer.png": b"\x89PNG deer", "fox.png": b"\x89PNG fox", "owl.png": b"\x89PNG owl"}


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    """Write the manifest ``text`` (dedented) next to an ``images/`` folder of small files."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for image, content in IMAGES.items():
        (images / image).write_bytes(content)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Diagnostic]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value.problems


def assert_problem(problems: list[Diagnostic], where: str, fragment: str) -> None:
    """Some problem sits exactly at ``where`` and its message contains ``fragment``."""
    found = [p for p in problems if p.where == where and fragment in p.message]
    listing = "\n".join(str(p) for p in problems)
    assert found, f"no problem at {where!r} saying {fragment!r}; got:\n{listing}"


def sha(name: str) -> str:
    return hashlib.sha256(IMAGES[name]).hexdigest()


def by_id(path: Path) -> dict[str, Item]:
    return {item.id: item for item in load_manifest(path).items}


# --- a valid manifest --------------------------------------------------------------------

VALID = """
batch: demo
model: minimax-i2v-01
defaults: {prompt_optimizer: true, input: {seed: 7}}
items:
  - id: deer
    image: images/deer.png
    prompt: a deer walks through the forest
  - image: https://example.org/pics/portrait.jpg?size=large
    prompt: "  a woman blinks and looks around  "
    model: minimax-i2v-01-director
    prompt_optimizer: false
    input: {seed: 8, style: [calm, slow]}
  - image: images/fox.png
    prompt: a fox runs across the snow
    model: minimax-hailuo-v2-standard-image-to-video
    input: {duration: 6}
"""


def test_valid_manifest_gives_items_in_order_with_their_fields(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    manifest = load_manifest(path)
    assert manifest.batch == "demo"
    assert manifest.path == path.resolve()
    assert manifest.warnings == ()
    deer, portrait, fox = manifest.items
    assert fox.model == "minimax-hailuo-v2-standard-image-to-video"
    assert [i.id for i in manifest.items] == ["deer", "portrait", "fox"]
    assert [i.index for i in manifest.items] == [0, 1, 2]
    assert [i.line for i in manifest.items] == [5, 8, 13]
    assert deer.model == "minimax-i2v-01"
    assert deer.image == "images/deer.png"
    assert deer.image_path == (tmp_path / "images" / "deer.png").resolve()
    assert deer.image_url is None
    assert deer.image_sha256 == sha("deer.png")
    assert portrait.image_path is None and portrait.image_sha256 is None
    assert portrait.image_url == "https://example.org/pics/portrait.jpg?size=large"
    assert portrait.prompt == "a woman blinks and looks around"


def test_inputs_merge_defaults_under_item_values_and_leave_out_the_image(tmp_path: Path) -> None:
    deer, portrait, fox = load_manifest(write(tmp_path, VALID)).items
    assert dict(deer.input) == {
        "prompt": "a deer walks through the forest",
        "prompt_optimizer": True,
        "seed": 7,
    }
    assert dict(portrait.input) == {
        "prompt": "a woman blinks and looks around",
        "prompt_optimizer": False,
        "seed": 8,
        "style": ["calm", "slow"],
    }
    assert dict(fox.input) == {
        "prompt": "a fox runs across the snow",
        "prompt_optimizer": True,
        "seed": 7,
        "duration": 6,
    }


def test_keys_hash_the_model_and_input_with_the_image_url_or_sha(tmp_path: Path) -> None:
    deer, portrait, fox = load_manifest(write(tmp_path, VALID)).items
    assert deer.key == item_key(
        "minimax-i2v-01", {**deer.input, "first_frame_image": f"sha256:{sha('deer.png')}"}
    )
    assert portrait.key == item_key(
        "minimax-i2v-01-director", {**portrait.input, "first_frame_image": portrait.image_url}
    )
    assert fox.key == item_key(
        "minimax-hailuo-v2-standard-image-to-video",
        {**fox.input, "image_url": f"sha256:{sha('fox.png')}"},
    )


def test_request_input_adds_the_models_image_field(tmp_path: Path) -> None:
    deer, _, fox = load_manifest(write(tmp_path, VALID)).items
    assert deer.image_field == "first_frame_image"
    assert fox.image_field == "image_url"
    body = deer.request_input("https://cdn.example/deer.png")
    assert body == {**deer.input, "first_frame_image": "https://cdn.example/deer.png"}
    body["seed"] = 99
    assert deer.input["seed"] == 7  # the item is not changed through the body
    assert fox.request_input("https://u/f.png")["image_url"] == "https://u/f.png"


def test_items_are_frozen_and_hashable(tmp_path: Path) -> None:
    deer = load_manifest(write(tmp_path, VALID)).items[0]
    assert hash(deer) == hash(deer)
    with pytest.raises(AttributeError):
        deer.prompt = "x"  # type: ignore[misc]


def test_defaults_when_batch_model_and_prompt_optimizer_are_left_out(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        items:
          - image: images/deer.png
            prompt: a deer walks
        """,
        name="spring walk.yaml",
    )
    manifest = load_manifest(path)
    assert manifest.batch == "spring-walk"
    (item,) = manifest.items
    assert item.model == "minimax-i2v-01"
    assert dict(item.input) == {"prompt": "a deer walks"}  # the model's default applies


def test_yaml_merge_keys_work_and_item_values_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        items:
          - &first
            prompt: a deer walks
            prompt_optimizer: false
            image: images/deer.png
          - <<: *first
            image: images/fox.png
            prompt_optimizer: true
        """,
    )
    deer, fox = load_manifest(path).items
    assert dict(fox.input) == {"prompt": "a deer walks", "prompt_optimizer": True}
    assert (deer.id, fox.id) == ("deer", "fox")


# --- keys are stable ---------------------------------------------------------------------

TWO = """
items:
  - id: deer
    image: images/deer.png
    prompt: a deer walks
  - id: fox
    image: images/fox.png
    prompt: a fox runs
"""


def test_reordering_items_keeps_every_key(tmp_path: Path) -> None:
    before = by_id(write(tmp_path, TWO))
    swapped = """
        items:
          - id: fox
            image: images/fox.png
            prompt: a fox runs
          - id: deer
            image: images/deer.png
            prompt: a deer walks
        """
    after = by_id(write(tmp_path, swapped))
    assert {k: v.key for k, v in after.items()} == {k: v.key for k, v in before.items()}
    assert after["deer"].index == 1


def test_editing_one_prompt_changes_only_that_key(tmp_path: Path) -> None:
    before = by_id(write(tmp_path, TWO))
    after = by_id(write(tmp_path, TWO.replace("a fox runs", "a fox runs fast")))
    assert after["deer"].key == before["deer"].key
    assert after["fox"].key != before["fox"].key


def test_moving_the_image_file_keeps_the_key(tmp_path: Path) -> None:
    before = by_id(write(tmp_path, TWO))
    moved = tmp_path / "elsewhere" / "renamed.png"
    moved.parent.mkdir()
    moved.write_bytes(IMAGES["deer.png"])
    after = by_id(write(tmp_path, TWO.replace("images/deer.png", "elsewhere/renamed.png")))
    assert after["deer"].key == before["deer"].key
    assert after["deer"].image_path == moved.resolve()


def test_changing_the_image_bytes_or_the_model_changes_the_key(tmp_path: Path) -> None:
    before = by_id(write(tmp_path, TWO))
    path = write(tmp_path, TWO.replace("prompt: a fox runs", "prompt: a fox runs\n    model: x"))
    (tmp_path / "images" / "deer.png").write_bytes(b"other bytes")
    after = by_id(path)
    assert after["deer"].key != before["deer"].key
    assert after["fox"].key != before["fox"].key


def test_two_items_with_the_same_key_warn_naming_both(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        items:
          - id: deer
            image: images/deer.png
            prompt: a deer walks
          - id: deer-again
            image: images/deer.png
            prompt: a deer walks
        """,
    )
    manifest = load_manifest(path)
    assert len(manifest.items) == 2  # the duplicate is still listed
    (warning,) = manifest.warnings
    assert warning.severity is Severity.WARNING
    assert warning.where == f'{path}:5:5: item 2 (id "deer-again")'
    assert 'item 1 (id "deer") (line 2)' in warning.message


def test_an_unknown_model_with_a_near_miss_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, TWO.replace("items:", "model: minimax-i2v-1\nitems:"))
    (warning,) = load_manifest(path).warnings
    assert warning.where == f'{path}:1:8: field "model"'
    assert 'did you mean "minimax-i2v-01"?' in warning.message


# --- derived ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "ids"),
    [
        (["images/deer.png"], ["deer"]),
        (["sub dir/My Deer (1).png"], ["My-Deer-1"]),
        (["café.png"], ["cafe"]),
        ([".hidden.png"], ["hidden"]),
        (["https://example.org/a/portrait.jpg?x=1"], ["portrait"]),
        (["https://example.org/"], ["item-1"]),
        (["images/deer.png", "other/deer.png"], ["deer", "deer-2"]),
        (["images/deer.png", "images/deer.png", "x/deer.png"], ["deer", "deer-2", "deer-3"]),
    ],
)
def test_ids_are_derived_from_the_image_name(
    tmp_path: Path, images: list[str], ids: list[str]
) -> None:
    lines = ["items:"]
    for n, image in enumerate(images):
        if "://" not in image:
            target = tmp_path / image
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f"image {n}".encode())
        lines += [f"  - image: {image}", f"    prompt: scene {n}"]
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [item.id for item in load_manifest(path).items] == ids


def test_a_derived_id_gives_way_to_an_explicit_one_anywhere(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        items:
          - image: images/deer.png
            prompt: a deer walks
          - id: deer
            image: images/fox.png
            prompt: a fox runs
          - image: images/deer.png
            prompt: a deer walks again
        """,
    )
    assert [item.id for item in load_manifest(path).items] == ["deer-1", "deer", "deer-3"]


# --- errors ------------------------------------------------------------------------------

ONE = """
items:
  - id: deer
    image: images/deer.png
    prompt: a deer walks
"""

ERRORS = [
    # (name, manifest, where after "file:", a fragment of the message)
    (
        "yaml syntax",
        ONE.replace("image: images/deer.png", "image: [images/deer.png"),
        "4:11",
        "invalid YAML: while parsing a flow sequence (line 3, column 12)",
    ),
    ("yaml tab", "items:\n\t- id: deer\n", "2:1", "invalid YAML"),
    ("empty file", "# nothing\n", "", "the manifest is empty"),
    ("not a mapping", "- a\n- b\n", "1:1: the manifest", "must be a mapping, not a list"),
    (
        "unknown top-level key",
        "modle: minimax-i2v-01\n" + ONE,
        '1:1: field "modle"',
        'unknown key "modle"; did you mean "model"?',
    ),
    (
        "top-level key for defaults",
        "prompt_optimizer: true\n" + ONE,
        '1:1: field "prompt_optimizer"',
        'put it under "defaults"',
    ),
    (
        "unknown defaults key",
        "defaults: {prompt_optimiser: true}\n" + ONE,
        '1:12: field "defaults.prompt_optimiser"',
        'did you mean "prompt_optimizer"?',
    ),
    (
        "model under defaults",
        "defaults: {model: x}\n" + ONE,
        '1:12: field "defaults.model"',
        'the top-level "model"',
    ),
    (
        "unknown item key",
        ONE.replace("prompt:", "promt:"),
        '4:5: item 1 (id "deer"), field "promt"',
        'unknown key "promt"; did you mean "prompt"?',
    ),
    (
        "image field as item key",
        ONE + "    first_frame_image: x\n",
        '5:5: item 1 (id "deer"), field "first_frame_image"',
        'the image goes in "image"',
    ),
    (
        "key twice",
        ONE + "    prompt: again\n",
        '5:5: item 1 (id "deer"), field "prompt"',
        'key "prompt" appears twice',
    ),
    ("items missing", "model: minimax-i2v-01\n", '1:1: field "items"', "is required"),
    ("items empty", "items: []\n", '1:8: field "items"', "must list at least one item"),
    ("items a mapping", "items: {a: 1}\n", '1:8: field "items"', "must be a list of items"),
    (
        "item not a mapping",
        "items:\n  - images/deer.png\n",
        "2:5: item 1",
        "must be a mapping with an image and a prompt, not a string",
    ),
    (
        "prompt missing",
        ONE.replace("    prompt: a deer walks\n", ""),
        '2:5: item 1 (id "deer"), field "prompt"',
        "is required",
    ),
    (
        "prompt a number",
        ONE.replace("a deer walks", "42"),
        '4:13: item 1 (id "deer"), field "prompt"',
        'must be a string, not an integer (quote it to make it one: "42")',
    ),
    (
        "prompt empty",
        ONE.replace("a deer walks", '"   "'),
        '4:13: item 1 (id "deer"), field "prompt"',
        "must not be empty",
    ),
    (
        "prompt null",
        ONE.replace(" a deer walks", ""),
        '4:12: item 1 (id "deer"), field "prompt"',
        "must be a string, not null",
    ),
    (
        "prompt with unknown tag",
        ONE.replace("a deer walks", "!shout a deer walks"),
        '4:13: item 1 (id "deer"), field "prompt"',
        "cannot read this value",
    ),
    (
        "image missing",
        ONE.replace("    image: images/deer.png\n", ""),
        '2:5: item 1 (id "deer"), field "image"',
        "is required",
    ),
    (
        "image a list",
        ONE.replace("images/deer.png", "[a, b]"),
        '3:12: item 1 (id "deer"), field "image"',
        "must be a string, not a list",
    ),
    (
        "image file missing",
        ONE.replace("deer.png", "nope.png"),
        '3:12: item 1 (id "deer"), field "image"',
        'image file "images/nope.png" not found (looked for ',
    ),
    (
        "image is a directory",
        ONE.replace("images/deer.png", "images"),
        '3:12: item 1 (id "deer"), field "image"',
        '"images" is a directory, not an image file',
    ),
    (
        "image url scheme",
        ONE.replace("images/deer.png", "ftp://example.org/deer.png"),
        '3:12: item 1 (id "deer"), field "image"',
        'unsupported URL scheme "ftp"',
    ),
    (
        "image data url",
        ONE.replace("images/deer.png", "data:image/png;base64,AAAA"),
        '3:12: item 1 (id "deer"), field "image"',
        'unsupported URL scheme "data"',
    ),
    (
        "image url without host",
        ONE.replace("images/deer.png", "https:///deer.png"),
        '3:12: item 1 (id "deer"), field "image"',
        "has no host",
    ),
    (
        "id a number",
        ONE.replace("id: deer", "id: 001"),
        '2:9: item 1, field "id"',
        'must be a string, not an integer (quote it to make it one: "001")',
    ),
    (
        "model a number",
        ONE + "    model: 3\n",
        '5:12: item 1 (id "deer"), field "model"',
        "must be a string, not an integer",
    ),
    (
        "prompt_optimizer a string",
        ONE + '    prompt_optimizer: "yes"\n',
        '5:23: item 1 (id "deer"), field "prompt_optimizer"',
        "must be true or false, not a string",
    ),
    (
        "defaults prompt_optimizer a number",
        "defaults: {prompt_optimizer: 1}\n" + ONE,
        '1:30: field "defaults.prompt_optimizer"',
        "must be true or false, not an integer",
    ),
    (
        "input a list",
        ONE + "    input: [1]\n",
        '5:12: item 1 (id "deer"), field "input"',
        "must be a mapping, not a list",
    ),
    (
        "input repeats prompt",
        ONE + "    input: {prompt: again}\n",
        '5:13: item 1 (id "deer"), field "input.prompt"',
        'comes from the item\'s "prompt" field; remove it from "input"',
    ),
    (
        "input repeats prompt_optimizer",
        ONE + "    input: {prompt_optimizer: false}\n",
        '5:13: item 1 (id "deer"), field "input.prompt_optimizer"',
        'comes from the item\'s "prompt_optimizer" field',
    ),
    (
        "input repeats the image field",
        ONE + "    input: {first_frame_image: https://x.org/a.png}\n",
        '5:13: item 1 (id "deer"), field "input.first_frame_image"',
        'comes from the item\'s "image" field',
    ),
    (
        "defaults input repeats the image field",
        "defaults: {input: {image_url: x}}\n" + ONE,
        '1:20: field "defaults.input.image_url"',
        'comes from the item\'s "image" field',
    ),
    (
        "input holds a date",
        ONE + "    input: {when: 2024-01-01}\n",
        '5:19: item 1 (id "deer"), field "input.when"',
        "holds a date, which JSON cannot carry",
    ),
    (
        "input holds infinity",
        ONE + "    input: {scale: .inf}\n",
        '5:20: item 1 (id "deer"), field "input.scale"',
        "must be a finite number",
    ),
    (
        "batch unsafe",
        "batch: ../out\n" + ONE,
        '1:8: field "batch"',
        '"../out" is not safe as a file name',
    ),
]


@pytest.mark.parametrize(
    ("manifest", "where", "fragment"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_each_problem_names_its_place_and_field(
    tmp_path: Path, manifest: str, where: str, fragment: str
) -> None:
    path = write(tmp_path, manifest)
    assert_problem(problems_of(path), f"{path}:{where}" if where else str(path), fragment)


@pytest.mark.parametrize(
    "unsafe", ["../x", "/etc/x", "a/b", ".hidden", "-x", "a" * 101, "x\n", "a b", ""]
)
def test_unsafe_ids_are_errors(tmp_path: Path, unsafe: str) -> None:
    quoted = '"' + unsafe.replace("\n", "\\n") + '"'
    path = write(tmp_path, ONE.replace("id: deer", f"id: {quoted}"))
    (problem,) = problems_of(path)
    assert problem.where.startswith(f"{path}:2:9: item 1")
    assert problem.where.endswith(', field "id"')
    assert "not safe as a file name" in problem.message or "must not be empty" in problem.message


def test_an_empty_image_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, ONE)
    (tmp_path / "images" / "deer.png").write_bytes(b"")
    (problem,) = problems_of(path)
    assert problem.where == f'{path}:3:12: item 1 (id "deer"), field "image"'
    assert problem.message.startswith('image file "images/deer.png" is empty')


def test_an_image_that_is_not_a_regular_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, ONE.replace("images/deer.png", "images/pipe.png"))
    os.mkfifo(tmp_path / "images" / "pipe.png")
    (problem,) = problems_of(path)
    assert problem.message.startswith('image file "images/pipe.png" is not a regular file')


def test_an_image_suffix_the_api_does_not_take_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, ONE.replace("images/deer.png", "deer.bmp"))
    (tmp_path / "deer.bmp").write_bytes(b"BM")
    (warning,) = load_manifest(path).warnings
    assert warning.where == f'{path}:3:12: item 1 (id "deer"), field "image"'
    assert "the API takes JPEG, PNG, WebP or GIF images" in warning.message


@pytest.mark.parametrize("second", ["deer", "Deer"])
def test_duplicate_explicit_ids_are_errors_naming_both_items(tmp_path: Path, second: str) -> None:
    path = write(
        tmp_path,
        ONE
        + f"""
  - id: {second}
    image: images/fox.png
    prompt: a fox runs
""",
    )
    (problem,) = problems_of(path)
    assert problem.where == f'{path}:6:9: item 2 (id "{second}"), field "id"'
    assert problem.message == 'duplicate id: item 1 (id "deer") (line 2) has it too'


def test_every_problem_comes_back_in_one_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        modle: minimax-i2v-01
        items:
          - id: ../deer
            image: images/nope.png
            promt: a deer walks
          - image: images/fox.png
            prompt: ""
            input: {prompt: x}
        """,
    )
    problems = problems_of(path)
    assert [p.where.removeprefix(f"{path}:") for p in problems] == [
        '1:1: field "modle"',
        '3:5: item 1 (id "../deer"), field "prompt"',
        '3:9: item 1 (id "../deer"), field "id"',
        '4:12: item 1 (id "../deer"), field "image"',
        '5:5: item 1 (id "../deer"), field "promt"',
        '7:13: item 2, field "prompt"',
        '8:13: item 2, field "input.prompt"',
    ]
    assert all(p.severity is Severity.ERROR for p in problems)
    with pytest.raises(ManifestError, match=r"7 problem\(s\) in the manifest"):
        load_manifest(path)


def test_a_missing_manifest_file_is_a_manifest_error(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "absent.yaml")
    assert problem.where == str(tmp_path / "absent.yaml")
    assert problem.message == "manifest file not found"


def test_a_manifest_that_is_a_directory_is_a_manifest_error(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path)
    assert "cannot read the manifest" in problem.message


# --- the example -------------------------------------------------------------------------


def test_the_example_manifest_has_six_items_with_existing_images() -> None:
    manifest = load_manifest(REPO / "manifests" / "example.yaml")
    assert manifest.batch == "example"
    assert manifest.warnings == ()
    assert len(manifest.items) == 6
    assert len({item.key for item in manifest.items}) == 6
    assert len({item.image_sha256 for item in manifest.items}) == 6
    for item in manifest.items:
        assert item.model == "minimax-i2v-01"
        assert item.image_path is not None and item.image_path.is_file()
        assert item.image_path.stat().st_size < 100_000
        assert item.image_url is None
        assert 10 <= len(item.prompt.split()) <= 20
