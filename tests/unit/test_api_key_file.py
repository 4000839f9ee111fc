"""The API key file: read bounded, never waited on, checked, and never quoted in an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner import config
from runner.config import resolve_api_key
from runner.errors import ConfigError

pytestmark = pytest.mark.timeout(10)

CANARY = "CANARY-7f3a"
#: ``config.MAX_KEY_FILE_BYTES``, written out so the table stands on its own.
KEY_FILE_LIMIT = 4096


@pytest.mark.parametrize(
    "content",
    [
        b"CANARY-7f3a",
        b"CANARY-7f3a\n",
        b"  CANARY-7f3a  \r\n",
        b"\n\nCANARY-7f3a\n\n",
        b"\xef\xbb\xbfCANARY-7f3a\n",  # a byte order mark, as some editors write
        b"\tCANARY-7f3a\t\n",
    ],
    ids=["bare", "newline", "spaces-crlf", "blank-lines", "bom", "tabs"],
)
def test_a_key_alone_on_its_line_is_read(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "eachlabs.key"
    path.write_bytes(content)
    assert resolve_api_key(path, {}) == CANARY


BAD_FILES = [
    # (what the file holds, a fragment of the error)
    (b"", "is empty"),
    (b"  \n\t\n", "is empty"),
    (b"CANARY-7f3a\nCANARY-7f3a-2\n", "has 2 non-empty lines: it must hold only the key"),
    (b"# my key\nCANARY-7f3a\n", "has 2 non-empty lines"),
    (b"EACHLABS_API_KEY=CANARY-7f3a extra\n", "does not hold a usable key"),
    (b"CANARY 7f3a\n", "does not hold a usable key: a key is printable ASCII without spaces"),
    (b"CANARY-7f3a\x00\n", "does not hold a usable key"),
    (b"CANARY-7f3a\x1b[31m\n", "does not hold a usable key"),
    ("CANARY-7f3a\u00e9\n".encode(), "does not hold a usable key"),
    (b"CANARY-7f3a\xff\xfe\n", "is not text: it holds bytes that are not UTF-8"),
    (b"CANARY-7f3a" * 400, f"is larger than {KEY_FILE_LIMIT} bytes"),
]


@pytest.mark.parametrize(("content", "fragment"), BAD_FILES, ids=[f for _, f in BAD_FILES])
def test_a_file_that_is_not_one_key_is_explained_without_its_content(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "eachlabs.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(path, {})
    message = str(info.value)
    assert message.startswith(f"the API key file {path} ")
    assert fragment in message
    assert CANARY not in message and "7f3a" not in message
    assert "\n" not in message


def test_a_key_file_just_at_the_size_limit_is_read(tmp_path: Path) -> None:
    assert config.MAX_KEY_FILE_BYTES == KEY_FILE_LIMIT
    path = tmp_path / "eachlabs.key"
    path.write_bytes(b"k" * (KEY_FILE_LIMIT - 1) + b"\n")
    assert resolve_api_key(path, {}) == "k" * (KEY_FILE_LIMIT - 1)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_key(tmp_path, {})
    assert str(info.value) == (
        f"cannot read the API key file {tmp_path}: it is a directory, not a regular file"
    )


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "eachlabs.key"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(fifo, {})
    assert str(info.value) == (
        f"cannot read the API key file {fifo}: it is a FIFO (named pipe), not a regular file"
    )


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    link = tmp_path / "eachlabs.key"
    link.symlink_to("/dev/zero")
    for path in (Path("/dev/zero"), link):
        with pytest.raises(ConfigError, match="it is a character device, not a regular file"):
            resolve_api_key(path, {})


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or directory"):
        resolve_api_key(tmp_path / "absent.key", {})


@pytest.mark.parametrize("value", ["CANARY 7f3a", "CANARY-7f3a\nsecond", "CANARY-7f3a\x00"])
def test_an_unusable_key_in_the_environment_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_key(None, {"EACHLABS_API_KEY": value})
    assert "EACHLABS_API_KEY is not a usable API key" in str(info.value)
    assert "7f3a" not in str(info.value)


def test_the_environment_key_is_stripped_and_may_be_absent() -> None:
    assert resolve_api_key(None, {"EACHLABS_API_KEY": "  CANARY-7f3a\n"}) == CANARY
    assert resolve_api_key(None, {"EACHLABS_API_KEY": "   "}) is None
    assert resolve_api_key(None, {}) is None
