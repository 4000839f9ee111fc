"""The API key file: read bounded, never waited on, checked, and never quoted in an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner import config
from runner.config import resolve_api_keys
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
    assert resolve_api_keys(path, {}) == (CANARY,)


BAD_FILES = [
    # (what the file holds, a fragment of the error)
    (b"", "is empty"),
    (b"  \n\t\n", "is empty"),
    (b"CANARY-7f3a\n\nCANARY-7f3a\n", "lists the same key at lines 1 and 3: each key is an"),
    (b"# my key\n  # another\n", "is empty"),
    (b"CANARY-7f3a\n# ok\nCANARY 7f3a-2\n", "does not hold a usable key on line 3"),
    (b"EACHLABS_API_KEY=CANARY-7f3a extra\n", "does not hold a usable key"),
    (
        b"CANARY 7f3a\n",
        "does not hold a usable key on line 1: a key is printable ASCII without spaces",
    ),
    (b"CANARY-7f3a\x00\n", "does not hold a usable key"),
    (b"CANARY-7f3a\x1b[31m\n", "does not hold a usable key"),
    ("CANARY-7f3a\u00e9\n".encode(), "does not hold a usable key"),
    (b"CANARY-7f3a\xff\xfe\n", "is not text: it holds bytes that are not UTF-8"),
    (b"CANARY-7f3a" * 400, f"is larger than {KEY_FILE_LIMIT} bytes"),
]


@pytest.mark.parametrize(("content", "fragment"), BAD_FILES, ids=[f for _, f in BAD_FILES])
def test_a_file_that_is_not_a_list_of_keys_is_explained_without_its_content(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "eachlabs.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        resolve_api_keys(path, {})
    message = str(info.value)
    assert message.startswith(f"the API key file {path} ")
    assert fragment in message
    assert CANARY not in message and "7f3a" not in message
    assert "\n" not in message


def test_a_key_file_just_at_the_size_limit_is_read(tmp_path: Path) -> None:
    assert config.MAX_KEY_FILE_BYTES == KEY_FILE_LIMIT
    path = tmp_path / "eachlabs.key"
    path.write_bytes(b"k" * (KEY_FILE_LIMIT - 1) + b"\n")
    assert resolve_api_keys(path, {}) == ("k" * (KEY_FILE_LIMIT - 1),)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_keys(tmp_path, {})
    assert str(info.value) == (
        f"cannot read the API key file {tmp_path}: it is a directory, not a regular file"
    )


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "eachlabs.key"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        resolve_api_keys(fifo, {})
    assert str(info.value) == (
        f"cannot read the API key file {fifo}: it is a FIFO (named pipe), not a regular file"
    )


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    link = tmp_path / "eachlabs.key"
    link.symlink_to("/dev/zero")
    for path in (Path("/dev/zero"), link):
        with pytest.raises(ConfigError, match="it is a character device, not a regular file"):
            resolve_api_keys(path, {})


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or directory"):
        resolve_api_keys(tmp_path / "absent.key", {})


@pytest.mark.parametrize("value", ["CANARY 7f3a", "CANARY-7f3a\nsecond", "CANARY-7f3a\x00"])
def test_an_unusable_key_in_the_environment_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_keys(None, {"EACHLABS_API_KEY": value})
    assert "EACHLABS_API_KEY is not a usable API key" in str(info.value)
    assert "7f3a" not in str(info.value)


def test_the_environment_key_is_stripped_and_may_be_absent() -> None:
    assert resolve_api_keys(None, {"EACHLABS_API_KEY": "  CANARY-7f3a\n"}) == (CANARY,)
    assert resolve_api_keys(None, {"EACHLABS_API_KEY": "   "}) == ()
    assert resolve_api_keys(None, {}) == ()


def test_several_keys_one_per_line_are_read_in_order_skipping_comments(tmp_path: Path) -> None:
    path = tmp_path / "eachlabs.keys"
    path.write_bytes(b"\xef\xbb\xbf# two accounts\nCANARY-one\n\n  CANARY-two  \r\n# end\n")
    assert resolve_api_keys(path, {}) == ("CANARY-one", "CANARY-two")


def test_several_keys_in_the_environment_and_which_source_wins(tmp_path: Path) -> None:
    env = {"EACHLABS_API_KEYS": " CANARY-one, CANARY-two\nCANARY-three ", "EACHLABS_API_KEY": "x"}
    assert resolve_api_keys(None, env) == ("CANARY-one", "CANARY-two", "CANARY-three")
    assert resolve_api_keys(None, {"EACHLABS_API_KEYS": " , ", "EACHLABS_API_KEY": "x"}) == ("x",)
    path = tmp_path / "eachlabs.key"
    path.write_text("CANARY-file\n")
    assert resolve_api_keys(path, env) == ("CANARY-file",)  # the file the user named wins


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("CANARY-one,CANARY-one", "lists the same key at keys 1 and 2"),
        ("CANARY-one,CANARY-\u00e9", "key 2 is not printable ASCII"),
    ],
)
def test_a_bad_list_in_the_environment_is_refused_without_quoting_it(
    value: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_keys(None, {"EACHLABS_API_KEYS": value})
    assert "EACHLABS_API_KEYS" in str(info.value) and fragment in str(info.value)
    assert "CANARY" not in str(info.value)
