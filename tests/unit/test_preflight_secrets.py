"""No check ever prints what a file holds: a secret named as an image (or as the manifest)
is described by what it is not, never quoted.

Each test writes a file holding the canary, points a check at it, and looks for the canary
(as text and as hex bytes) in everything the check says.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runner.checks.images import check, describe_other
from runner.checks.preflight import preflight
from runner.cli import command
from runner.config import CheckConfig

CANARY = "CANARY-7f3a"
CANARY_HEX = " ".join(f"{b:02x}" for b in CANARY.encode()[:4])  # "43 41 4e 41"

#: Files a user (or someone hoping for a leak) might name as an image, each holding the canary.
SECRETS: dict[str, bytes] = {
    "eachlabs.key": f"{CANARY}\n".encode(),
    "shadow": f"root:{CANARY}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n".encode(),
    "notes.png": f"  {CANARY} is the password\n".encode(),
    "blob.png": CANARY.encode() + b"\x00\xff\xfe" * 10,
    "binary.jpg": b"\x00\x01\x02" + CANARY.encode() + b"\xff" * 5,
    "page.png": f"<html><title>{CANARY}</title></html>".encode(),
    "key.svg": f"<svg>{CANARY}</svg>".encode(),
    "unicode.png": f"caf\u00e9 {CANARY}\n".encode(),
}


def assert_no_canary(text: str) -> None:
    assert CANARY not in text, text
    assert CANARY_HEX not in text, text


@pytest.mark.parametrize("name", list(SECRETS))
def test_the_description_of_a_file_that_is_not_an_image_never_quotes_it(name: str) -> None:
    head = SECRETS[name]
    assert_no_canary(describe_other(head))
    for finding in check(head, len(head), max_bytes=20 * 1024 * 1024, complete=True):
        assert_no_canary(finding.message)


@pytest.mark.parametrize(
    ("head", "description"),
    [
        (SECRETS["eachlabs.key"], "it looks like text"),
        (SECRETS["shadow"], "it looks like text"),
        (SECRETS["blob.png"], "it is binary data of a format this check does not know"),
        (SECRETS["page.png"], "it is an HTML page"),
        (SECRETS["key.svg"], "it is SVG or other XML"),
    ],
)
def test_a_file_is_described_by_its_kind(head: bytes, description: str) -> None:
    assert describe_other(head) == description


def write_batch(tmp_path: Path) -> Path:
    """A manifest naming every secret as an image, one of them outside the batch's folder."""
    batch = tmp_path / "batch" / "deep" / "er"
    batch.mkdir(parents=True)
    secrets = tmp_path / "etc"
    secrets.mkdir()
    for name, content in SECRETS.items():
        (secrets / name).write_bytes(content)
    lines = ["items:"]
    for n, name in enumerate(SECRETS):
        lines += [f"  - id: i{n}", f"    image: ../../../etc/{name}", "    prompt: a deer walks"]
    manifest = batch / "m.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


async def test_the_preflight_reports_every_secret_named_as_an_image_without_its_content(
    tmp_path: Path,
) -> None:
    manifest = write_batch(tmp_path)
    report = await preflight(manifest, CheckConfig(offline=True), output_dir=tmp_path / "out")
    image_errors = [p for p in report.errors if p.where.endswith('field "image"')]
    assert len(image_errors) == len(SECRETS)
    for problem in report.problems:
        assert_no_canary(str(problem))


async def test_validate_prints_nothing_of_a_secret_named_as_an_image(tmp_path: Path) -> None:
    manifest = write_batch(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    argv = ["validate", str(manifest), "--offline", "--output", str(tmp_path / "out")]
    code = await command(argv, out=out, err=err)
    assert code == 2
    assert "looks like text" in err.getvalue()
    assert_no_canary(out.getvalue() + err.getvalue())
