"""The argparse types of the options (positive numbers, shares, dollar amounts, error codes)
and the API options every command that talks to the API shares."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

from runner import config as cfg
from runner.errors import (
    ConfigError,
)
from runner.night import parse_duration

#: The largest value a numeric option takes. Nothing this CLI counts means anything past a
#: billion (seconds: 31 years; MB: a petabyte); a larger value is a typo, and refusing it keeps
#: arithmetic on it (MB to bytes, deadlines) finite.
MAX_OPTION_VALUE = 1e9


def positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    """An argparse type: a finite number of ``kind`` above 0 and at most ``MAX_OPTION_VALUE``.

    ``nan``, ``inf`` and numbers too large for a float are refused, with an argparse error.
    """

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        if value > MAX_OPTION_VALUE:
            raise argparse.ArgumentTypeError(f"must be at most {MAX_OPTION_VALUE:g}, not {text}")
        return value

    return parse


_CODES = re.compile(r"[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*")


def error_codes(text: str) -> frozenset[str]:
    """An argparse type: error codes separated by commas (``PROVIDER_ERROR,timeout``)."""
    if not _CODES.fullmatch(text) or text.endswith((".yaml", ".yml")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of error codes (write --retry-failed=CODE,CODE, or put the "
            "manifest before --retry-failed)"
        )
    return frozenset(text.split(","))


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """``--api-base``, ``--api-key-file`` and ``--rate``: how a command that talks to the API
    reaches it (``run``, ``validate``, ``cancel``). The key itself is never an option."""
    parser.add_argument(
        "--api-base", help=f"API base URL (default: ${cfg.ENV_API_BASE} or {cfg.DEFAULT_API_BASE})"
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        help=f"read the API key from this file instead of ${cfg.ENV_API_KEY}; one key per "
        "line, several keys being several accounts (each with its own in-flight cap and "
        "request window: --concurrency and --rate apply to each)",
    )
    parser.add_argument(
        "--rate",
        default=f"{cfg.DEFAULT_RATE_LIMIT}/{cfg.DEFAULT_RATE_WINDOW:g}",
        help="API requests allowed in any window, N/SECONDS, strictly, per API key "
        "(default: %(default)s)",
    )


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds from 0 to ``MAX_OPTION_VALUE`` (0: at
    once, or off, as the option says)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_OPTION_VALUE:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_OPTION_VALUE:g}, not {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a share from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1, not {text}")
    return value


def usd_amount(option: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return cfg.parse_usd(text, option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def duration(option: str) -> Callable[[str], float]:
    """An argparse type: ``7h30m``, ``45m``, ``90s`` or seconds (``night.parse_duration``),
    refused in words that name ``option``."""

    def parse(text: str) -> float:
        try:
            return parse_duration(text, option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse
