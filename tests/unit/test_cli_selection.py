"""How ``--retry-failed``, ``--only`` and ``--limit`` read on the command line."""

from __future__ import annotations

import pytest

from runner.cli import build_parser


def parse(*argv: str) -> object:
    return build_parser().parse_args(list(argv))


def test_retry_failed_is_a_flag_or_a_list_of_codes() -> None:
    assert parse("run", "m.yaml").retry_failed is False
    assert parse("run", "m.yaml", "--retry-failed").retry_failed is True
    codes = parse("run", "m.yaml", "--retry-failed=PROVIDER_ERROR,timeout").retry_failed
    assert codes == frozenset({"PROVIDER_ERROR", "timeout"})


def test_a_manifest_after_a_bare_retry_failed_is_refused_not_taken_for_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("run", "--retry-failed", "m.yaml")
    assert exited.value.code == 2
    assert "put the manifest before --retry-failed" in capsys.readouterr().err


def test_only_repeats_and_limit_is_a_positive_whole_number(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse("validate", "m.yaml", "--only", "a*", "--only", "b1", "--limit", "3")
    assert args.only == ["a*", "b1"] and args.limit == 3
    with pytest.raises(SystemExit):
        parse("run", "m.yaml", "--limit", "0")
    assert "--limit" in capsys.readouterr().err
