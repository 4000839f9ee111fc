"""``i2v-runner cancel DIR``: its parser, and the cancel of a batch's predictions in flight
(``runner.cancel``) told item by item."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from runner import config as cfg
from runner.cli.values import add_api_options, positive, seconds
from runner.config import DEFAULT_CANCEL_WATCH, STOP_WAIT
from runner.errors import AccountError, ConfigError
from runner.report import EXIT_ACCOUNT

#: The order endings (``runner.cancel.Ending``) are counted in on the last line.
_ORDER = ("cancelled", "succeeded", "failed", "running", "unknown", "ambiguous")
_WORDS = {"running": "still running"}


def add_cancel_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``cancel`` subcommand."""
    cancel = sub.add_parser(
        "cancel",
        allow_abbrev=False,
        help="cancel the batch's predictions still running on the server",
        description="Cancel every prediction the ledger of DIR has in flight "
        "(POST /v1/prediction/{id}/cancel), watch each for its end, and record it so the "
        "batch stays resumable: a cancelled or failed one is recorded failed (--retry-failed "
        "submits it again), one that had succeeded is recorded succeeded (the next run "
        "downloads it, paying nothing more), one still running is left for the next run to "
        "poll. A create whose answer was never recorded has no id to cancel: it is reported. "
        f"The API key is read from ${cfg.ENV_API_KEY} or --api-key-file, never from the "
        "command line; a batch run on several keys is cancelled with the same keys (each "
        "prediction with the key that made it). Exit 0 when every prediction in flight "
        "ended, 1 if some may still run, 4 if a runner holds DIR (nothing is sent).",
    )
    cancel.add_argument("directory", type=Path, metavar="DIR", help="the batch's output directory")
    cancel.add_argument(
        "--stop-runner",
        action="store_true",
        help="if a runner holds DIR, send it SIGTERM (on this host only) and wait up to "
        f"{STOP_WAIT:g} s for it to stop, then cancel",
    )
    add_api_options(cancel)
    cancel.add_argument(
        "--wait",
        type=seconds,
        default=DEFAULT_CANCEL_WATCH,
        metavar="S",
        help="watch each cancelled prediction this long for its end; 0 polls it once "
        "(default: %(default)g)",
    )
    cancel.add_argument(
        "--poll-min",
        type=positive(float),
        default=cfg.DEFAULT_POLL_MIN,
        metavar="S",
        help="seconds between two polls of one prediction (default: %(default)g)",
    )


async def cancel_command(
    args: argparse.Namespace, argv: Sequence[str], out: TextIO, err: TextIO
) -> int:
    """Cancel what ``args.directory``'s batch has in flight and print what became of each
    item; the exit code. Raises ConfigError (no key, bad options or directory), LockedError,
    StorageError and ApiUnavailableError for ``execute`` to turn into codes."""
    from runner.cancel import CancelConfig, cancel_batch, counts  # aiohttp: only when used

    api_base = cfg.resolve_api_base(args.api_base, os.environ)
    api_keys = cfg.resolve_api_keys(args.api_key_file, os.environ)
    if not api_keys:
        raise ConfigError(
            f"no API key: set {cfg.ENV_API_KEY} (or {cfg.ENV_API_KEYS}) or name a file with "
            "--api-key-file"
        )
    rate_limit, rate_window = cfg.parse_rate(args.rate)
    config = CancelConfig(
        output_dir=args.directory,
        api_base=api_base,
        api_key=api_keys[0],
        more_api_keys=api_keys[1:],
        limits=cfg.Limits(rate_limit=rate_limit, rate_window=rate_window, poll_min=args.poll_min),
        watch=args.wait,
        stop_runner=args.stop_runner,
        command=shlex.join(["i2v-runner", *(cfg.redact_url(arg) for arg in argv)]),
    )
    try:
        result = await cancel_batch(config)
    except AccountError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_ACCOUNT
    if result.stopped is not None:
        owner = result.stopped
        print(f"stopped the runner: pid {owner.pid} on {owner.host} (SIGTERM)", file=out)
    for warning in result.warnings:
        print(f"warning: {warning}", file=err)
    if not result.settled:
        print(f"nothing in flight in {args.directory}: nothing to cancel", file=out)
        return result.exit_code
    width = max(len(s.item) for s in result.settled)
    for one in result.settled:
        shown = one.prediction_id or "-"
        print(f"  {one.item:<{width}}  {shown}  {one.ending.value}: {one.detail}", file=out)
    found = counts(result.settled)
    by_word = {ending.value: number for ending, number in found.items()}
    parts = [f"{by_word[e]} {_WORDS.get(e, e)}" for e in _ORDER if by_word.get(e)]
    print(f"cancel in {args.directory}: {', '.join(parts)}", file=out)
    return result.exit_code
