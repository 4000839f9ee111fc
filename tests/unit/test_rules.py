"""Small pure rules: job transitions, poll pacing, backoff, config parsing, exit codes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from runner import config, report
from runner.engine import policy
from runner.errors import ConfigError
from runner.jobs import IllegalTransition, JobState, item_key, summary_status, transition


def test_item_key_is_stable_and_order_independent() -> None:
    a = item_key("m", {"prompt": "x", "first_frame_image": "sha256:aa", "prompt_optimizer": True})
    b = item_key("m", {"prompt_optimizer": True, "first_frame_image": "sha256:aa", "prompt": "x"})
    assert a == b and len(a) == 16
    assert (
        item_key("m", {"prompt": "y", "first_frame_image": "sha256:aa", "prompt_optimizer": True})
        != a
    )
    assert (
        item_key("m2", {"prompt": "x", "first_frame_image": "sha256:aa", "prompt_optimizer": True})
        != a
    )


@pytest.mark.parametrize(
    ("current", "new", "legal"),
    [
        (JobState.PENDING, JobState.SUBMITTING, True),
        (JobState.SUBMITTING, JobState.SUBMITTED, True),
        (JobState.SUBMITTED, JobState.SUCCEEDED, True),
        (JobState.SUCCEEDED, JobState.DOWNLOADED, True),
        (JobState.FAILED, JobState.SUBMITTING, True),
        (JobState.SUCCEEDED, JobState.SUCCEEDED, True),
        (JobState.FAILED, JobState.DOWNLOADED, True),
        (JobState.PENDING, JobState.DOWNLOADED, False),
        (JobState.DOWNLOADED, JobState.SUBMITTING, False),
        (JobState.PENDING, JobState.SUBMITTED, False),
        (JobState.SUBMITTED, JobState.PENDING, False),
        (JobState.SUBMITTED, JobState.SUBMITTING, False),
    ],
)
def test_transitions(current: JobState, new: JobState, legal: bool) -> None:
    if legal:
        assert transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition):
            transition(current, new)


@pytest.mark.parametrize(
    ("state", "word"),
    [
        (JobState.DOWNLOADED, "done"),
        (JobState.FAILED, "failed"),
        (JobState.PENDING, "pending"),
        (JobState.SUBMITTED, "running"),
        (JobState.SUCCEEDED, "running"),
    ],
)
def test_summary_status(state: JobState, word: str) -> None:
    assert summary_status(state) == word


def test_backoff_stays_within_its_bounds() -> None:
    rng = random.Random(1)
    for attempt in range(10):
        value = policy.backoff(attempt, base=1.0, cap=30.0, rng=rng)
        assert 0.5 <= value <= min(30.0, 2**attempt)


@pytest.mark.parametrize(("text", "parsed"), [("60/60", (60, 60.0)), (" 5 / 1.5 ", (5, 1.5))])
def test_parse_rate(text: str, parsed: tuple[int, float]) -> None:
    assert config.parse_rate(text) == parsed


@pytest.mark.parametrize("text", ["60", "0/60", "60/0", "a/b", "60/-1"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        config.parse_rate(text)


def test_api_key_from_file_or_env_and_never_in_messages(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-secret-123\n")
    assert config.resolve_api_keys(key_file, {}) == ("sk-secret-123",)
    assert config.resolve_api_keys(None, {"EACHLABS_API_KEY": "sk-env"}) == ("sk-env",)
    assert config.resolve_api_keys(None, {}) == ()
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        config.resolve_api_keys(empty, {})
    cfg = config.RunConfig(
        Path("m.yaml"), Path("out"), "http://x", "sk-secret-123", more_api_keys=("sk-two",)
    )
    assert "sk-secret-123" not in repr(cfg) and "sk-two" not in repr(cfg)


def test_api_base_flag_then_env_then_default() -> None:
    assert config.resolve_api_base("http://127.0.0.1:9/", {}) == "http://127.0.0.1:9"
    assert config.resolve_api_base(None, {"EACHLABS_API_BASE": "https://proxy"}) == "https://proxy"
    assert config.resolve_api_base(None, {}) == config.DEFAULT_API_BASE
    with pytest.raises(ConfigError):
        config.resolve_api_base("ftp://x", {})


@pytest.mark.parametrize(
    ("counts", "interrupted", "account", "code"),
    [
        ({"total": 2, "done": 2, "failed": 0}, False, None, 0),
        ({"total": 2, "done": 1, "failed": 1}, False, None, 1),
        ({"total": 2, "done": 1, "failed": 0}, True, None, 130),
        ({"total": 2, "done": 0, "failed": 0}, False, "HTTP 402", 3),
    ],
)
def test_exit_codes(
    counts: dict[str, int], interrupted: bool, account: str | None, code: int
) -> None:
    summary = {"counts": counts, "interrupted": interrupted, "account_error": account}
    assert report.exit_code(summary) == code
