"""Numeric options refuse nan, inf and absurd sizes when the arguments are parsed (exit 2)."""

from __future__ import annotations

import pytest

from runner.cli import build_parser

#: (command, option) for every option parsed as a positive number.
FLOAT_OPTIONS = [
    ("run", "--poll-min"),
    ("run", "--expected-runtime"),
    ("run", "--item-timeout"),
    ("run", "--max-image-mb"),
    ("validate", "--max-image-mb"),
    ("simulate", "--speed"),
]
INT_OPTIONS = [("run", "--concurrency"), ("run", "--max-attempts"), ("simulate", "--concurrency")]


def argv(command: str, option: str, value: str) -> list[str]:
    manifest = [] if command == "simulate" else ["m.yaml"]
    return [command, *manifest, f"{option}={value}"]


def refusal(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """The argparse error line for ``args`` (which must be refused with exit 2)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(args)
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(("command", "option"), FLOAT_OPTIONS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_a_non_finite_number_is_an_argparse_error(
    capsys: pytest.CaptureFixture[str], command: str, option: str, value: str
) -> None:
    line = refusal(capsys, argv(command, option, value))
    assert line.endswith(f"error: argument {option}: must be a finite number, not {value!r}")


PAST_A_BILLION = [
    *[(command, option, value) for command, option in FLOAT_OPTIONS for value in ("1e10", "1e308")],
    *[
        (command, option, value)
        for command, option in INT_OPTIONS
        for value in ("1000000001", "9" * 400)
    ],
]


@pytest.mark.parametrize(("command", "option", "value"), PAST_A_BILLION)
def test_a_number_past_a_billion_is_an_argparse_error(
    capsys: pytest.CaptureFixture[str], command: str, option: str, value: str
) -> None:
    line = refusal(capsys, argv(command, option, value))
    assert line.endswith(f"error: argument {option}: must be at most 1e+09, not {value}")


@pytest.mark.parametrize(("command", "option"), INT_OPTIONS)
@pytest.mark.parametrize("value", ["nan", "inf", "1.5"])
def test_an_integer_option_refuses_what_is_not_an_integer(
    capsys: pytest.CaptureFixture[str], command: str, option: str, value: str
) -> None:
    line = refusal(capsys, argv(command, option, value))
    assert line.endswith(f"error: argument {option}: {value!r} is not a number")


@pytest.mark.parametrize(("command", "option"), FLOAT_OPTIONS + INT_OPTIONS)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_and_negative_numbers_are_still_refused(
    capsys: pytest.CaptureFixture[str], command: str, option: str, value: str
) -> None:
    line = refusal(capsys, argv(command, option, value))
    assert line.endswith(f"error: argument {option}: must be greater than 0, not {value}")


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_the_budget_refuses_non_finite_amounts(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    line = refusal(capsys, ["run", "m.yaml", f"--budget={value}"])
    assert "error: argument --budget: --budget must be" in line


def test_finite_values_up_to_the_limit_are_accepted() -> None:
    args = build_parser().parse_args(
        ["run", "m.yaml", "--poll-min", "0.05", "--item-timeout", "1e9", "--concurrency", "3"]
    )
    assert (args.poll_min, args.item_timeout, args.concurrency) == (0.05, 1e9, 3)
    args = build_parser().parse_args(["validate", "m.yaml", "--max-image-mb", "1e9"])
    assert args.max_image_mb == 1e9
