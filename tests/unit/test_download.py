"""Pure parts of the download module: the MP4 signature and the path guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.download import looks_like_mp4, partial_path, verify, video_path


@pytest.mark.parametrize("item_id", ["../x", "..", "/etc/passwd", "a/b", ".hidden", "", "a\\b"])
def test_an_id_can_never_name_a_path_outside_the_output(tmp_path: Path, item_id: str) -> None:
    with pytest.raises(ValueError):
        video_path(tmp_path, item_id)


def test_a_safe_id_names_a_file_directly_in_the_output(tmp_path: Path) -> None:
    path = video_path(tmp_path, "deer-01")
    assert path == tmp_path / "deer-01.mp4"
    assert partial_path(path) == tmp_path / "deer-01.mp4.part"


@pytest.mark.parametrize(
    ("head", "ok"),
    [(b"\x00\x00\x00\x18ftypmp42", True), (b"\x00\x00\x00\x18moov", False), (b"ftyp", False)],
)
def test_mp4_signature(head: bytes, ok: bool) -> None:
    assert looks_like_mp4(head) is ok


def test_verify_checks_signature_size_and_hash(tmp_path: Path) -> None:
    import hashlib

    data = b"\x00\x00\x00\x18ftypmp42" + b"x" * 100
    path = tmp_path / "a.mp4"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert verify(path, len(data), digest)
    assert not verify(path, len(data) + 1, digest)
    assert not verify(path, len(data), "0" * 64)
    assert not verify(tmp_path / "missing.mp4", None, None)
    path.write_bytes(b"not an mp4 at all")
    assert not verify(path, None, None)
