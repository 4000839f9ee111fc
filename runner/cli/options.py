"""The command line: its parser, and the config its options make."""

from __future__ import annotations

import argparse
import importlib.metadata
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import config as cfg
from runner.cli.cancel import add_cancel_parser
from runner.cli.report import add_report_parser
from runner.cli.simulate import add_simulate_parser
from runner.cli.status import add_status_parser
from runner.cli.values import (
    add_api_options,
    duration,
    error_codes,
    positive,
    seconds,
    usd_amount,
)

if TYPE_CHECKING:
    from runner.display import ViewSettings

from runner.errors import (
    ConfigError,
)
from runner.money import usd
from runner.night import Night, Order, deadline_of, parse_until


def _verbosity(parser: argparse.ArgumentParser, *, default: object) -> None:
    """``-v``/``-q``, before or after the subcommand (after it, SUPPRESS keeps the value given
    before it unless repeated)."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log every request decision"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="print only the final summary"
    )


def _check_options() -> argparse.ArgumentParser:
    """The options ``run`` and ``validate`` share: where the batch goes and what is checked."""
    parent = argparse.ArgumentParser(add_help=False)
    _verbosity(parent, default=argparse.SUPPRESS)
    parent.add_argument(
        "manifest",
        type=Path,
        help="the YAML manifest, or a CSV/JSONL catalog of items, or - to read one from stdin",
    )
    parent.add_argument("--output", type=Path, help="output directory (default: output/<batch>/)")
    parent.add_argument(
        "--simulate",
        action="store_true",
        help="run against the built-in simulator, started in-process on 127.0.0.1 (no key needed)",
    )
    add_api_options(parent)
    parent.add_argument(
        "--burst",
        type=positive(int),
        metavar="N",
        help="also smooth requests: at most N at once, then at the --rate's average pace (for "
        "a gateway that limits with a small token bucket; default: no smoothing)",
    )
    parent.add_argument(
        "--retry-failed",
        nargs="?",
        const=True,
        default=False,
        type=error_codes,
        metavar="CODES",
        help="submit again the items that failed in earlier runs; =CODE,CODE only those whose "
        "error code is listed (e.g. --retry-failed=PROVIDER_ERROR,timeout)",
    )
    parent.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID|GLOB",
        help="work on this item only (an id or a glob such as 'forest-*'); repeat for more. "
        "The others are left as they are; summary.json still covers the whole batch",
    )
    parent.add_argument(
        "--limit",
        type=positive(int),
        metavar="N",
        help="work on at most N items (of those --only picks), the first in manifest order",
    )
    checks = parent.add_argument_group("checks before spending")
    checks.add_argument(
        "--strict", action="store_true", help="treat every warning (prompt advice...) as an error"
    )
    checks.add_argument(
        "--offline",
        action="store_true",
        help="do not fetch model schemas: check against the cached ones, or skip with a warning",
    )
    checks.add_argument(
        "--check-urls",
        action="store_true",
        help="fetch the first bytes of each URL image and check it like a local file",
    )
    checks.add_argument(
        "--max-image-mb",
        type=positive(float),
        default=cfg.DEFAULT_MAX_IMAGE_MB,
        help="largest image accepted, in MB (default: %(default)g, the API's limit)",
    )
    checks.add_argument(
        "--budget",
        type=usd_amount("--budget"),
        metavar="USD",
        help="cap on the batch's spend, counting what the ledger records as spent: a run whose "
        "estimate exceeds it does not start",
    )
    checks.add_argument(
        "--budget-partial",
        action="store_true",
        help="with --budget: submit items in manifest order while they fit, leave the rest pending",
    )
    _night_options(parent)
    return parent


def _night_options(parent: argparse.ArgumentParser) -> None:
    """The night shift (``runner.night``): a deadline, a per-run allowance, the order."""
    night = parent.add_argument_group(
        "the night shift (a run that fits a window, and the next picks up where it stopped)"
    )
    night.add_argument(
        "--until",
        metavar="TIME",
        help="create an item only if it is expected to finish and download by TIME: 06:00 "
        "(the next 06:00 local time) or an ISO 8601 date-time with its offset "
        "(2026-11-24T06:00+01:00); the run then ends with the rest pending (exit 75). "
        "validate and --dry-run say how many items fit",
    )
    night.add_argument(
        "--max-wall",
        type=duration("--max-wall"),
        metavar="DURATION",
        help="the same, for a deadline this long after the start: 7h30m, 45m, 90s",
    )
    night.add_argument(
        "--max-items",
        type=positive(int),
        metavar="N",
        help="submit at most N items in this run (predictions resumed from earlier runs do "
        "not count); the rest stays pending (exit 75)",
    )
    night.add_argument(
        "--max-spend",
        type=usd_amount("--max-spend"),
        metavar="USD",
        help="spend at most USD on this run's own creates (a nightly allowance, beside the "
        "batch-wide --budget); the rest stays pending (exit 75)",
    )
    night.add_argument(
        "--order",
        choices=[order.value for order in Order],
        default=Order.MANIFEST.value,
        help="the order items are created in: manifest, or shortest-first (by the expected "
        "run time of each item's model); an item's priority: goes first in both "
        "(default: %(default)s)",
    )


def night_from(args: argparse.Namespace, now: datetime) -> Night:
    """The night's settings of ``args`` (``--until`` is read against ``now``, aware)."""
    given = vars(args)
    until = parse_until(args.until, now) if args.until is not None else None
    spend = args.max_spend
    return Night(
        deadline=deadline_of(until, args.max_wall, now),
        grace=given.get("grace"),
        cancel_at_deadline=given.get("cancel_at_deadline", False),
        max_items=args.max_items,
        max_spend=None if spend is None else usd(spend),
        order=Order(args.order),
    )


class _Parser(argparse.ArgumentParser):
    """A parser that takes no prefix of an option for the option (``--retry`` is an error, not
    ``--retry-failed``); its subcommands' parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def _view_options(run: argparse.ArgumentParser) -> None:
    """What a run shows as it goes (``runner.display``)."""
    view = run.add_argument_group("what a run shows as it goes")
    view.add_argument(
        "--no-progress",
        action="store_true",
        help="no live view on a terminal: log lines and heartbeats as without one (NO_COLOR "
        "and TERM=dumb do the same)",
    )
    view.add_argument(
        "--heartbeat",
        type=seconds,
        default=cfg.DEFAULT_HEARTBEAT,
        metavar="S",
        help="without a live view, log a line with the counts, spend and ETA every S seconds "
        "(0: never; default: %(default)g)",
    )
    view.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="append every event of the run to PATH as one JSON line each (never the key)",
    )


def _version() -> str:
    """The installed package's version (pyproject.toml's), or "unknown" when run from a tree
    that was never installed."""
    try:
        return importlib.metadata.version("i2v-runner")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="i2v-runner",
        description="Render videos in bulk through the Eachlabs prediction API (MiniMax Hailuo "
        "image-to-video), resumably, within the account's limits.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _verbosity(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _check_options()

    run = sub.add_parser(
        "run",
        parents=[shared],
        help="render a manifest (run it again to resume)",
        description="Render every item of MANIFEST. Every check of `validate` runs first; any "
        "error stops the run before anything is uploaded or submitted (exit 2). Running the "
        "same command again resumes: done items are skipped, predictions in flight are polled "
        "again, never created again. "
        f"The API key is read from ${cfg.ENV_API_KEY} or --api-key-file, "
        f"never from the command line; several keys (${cfg.ENV_API_KEYS}, or several lines "
        "of the key file) run the batch on several accounts at once.",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="run every check and print the plan and its estimated cost; upload and submit nothing",
    )
    _view_options(run)
    run.add_argument(
        "--concurrency",
        type=positive(int),
        default=cfg.DEFAULT_CONCURRENCY,
        help="predictions in flight at once, per API key (default: %(default)s, an account's cap)",
    )
    run.add_argument(
        "--poll-min",
        type=positive(float),
        default=cfg.DEFAULT_POLL_MIN,
        help="never poll one prediction more often than this, seconds (default: %(default)s)",
    )
    run.add_argument(
        "--expected-runtime",
        type=positive(float),
        default=cfg.DEFAULT_EXPECTED_RUNTIME,
        help="prior guess of one prediction's run time, seconds (default: %(default)s)",
    )
    run.add_argument(
        "--item-timeout",
        type=positive(float),
        default=cfg.DEFAULT_ITEM_TIMEOUT,
        help="cancel a prediction still running after this many seconds (default: %(default)s)",
    )
    run.add_argument(
        "--max-attempts",
        type=positive(int),
        default=cfg.DEFAULT_MAX_ATTEMPTS,
        help="attempts per item in one run when a prediction fails with a retryable error "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--max-video-mb",
        type=positive(float),
        default=cfg.DEFAULT_MAX_VIDEO_MB,
        help="the largest output video accepted, in MB; a bigger download is refused "
        "(default: %(default)g)",
    )
    run.add_argument(
        "--max-retry-after",
        type=positive(float),
        default=cfg.DEFAULT_MAX_RETRY_AFTER,
        metavar="S",
        help="the longest pause a server's Retry-After may impose, seconds; a server that keeps "
        "asking for more stops the run (exit 6) (default: %(default)g)",
    )
    run.add_argument(
        "--reconcile-wait",
        type=positive(float),
        default=cfg.DEFAULT_RECONCILE_SETTLE,
        metavar="S",
        help="how long after a lost create's answer (a 5xx, a timeout) its prediction may take "
        "to appear in the executions list; it counts as absent only after that "
        "(default: %(default)g)",
    )
    run.add_argument(
        "--unreachable-wait",
        type=positive(float),
        default=cfg.DEFAULT_UNREACHABLE_AFTER,
        metavar="S",
        help="how long an API that cannot be reached is waited for before the run stops with "
        f"its items pending (exit 6); at most {cfg.DEFAULT_UNREACHABLE_AT_START:g} s if it "
        "was never reached (default: %(default)g)",
    )
    run.add_argument(
        "--on-finish",
        metavar="CMD",
        help="when the run ends, however it ends, run CMD with the path of summary.json as its "
        "last argument and I2V_EXIT_CODE, I2V_SUMMARY and I2V_OUTPUT_DIR in its environment "
        "(never the API key): for mail, chat or a webhook",
    )
    run.add_argument(
        "--grace",
        type=duration("--grace"),
        metavar="DURATION",
        help="with --until/--max-wall: how long predictions still running at the deadline are "
        "waited for before the run ends and leaves them to the next run (default: the p95 run "
        "time learned)",
    )
    run.add_argument(
        "--cancel-at-deadline",
        action="store_true",
        help="with --until/--max-wall: cancel the predictions still running after the grace "
        "instead of leaving them running (the next run submits them again)",
    )
    run.add_argument(
        "--resubmit-ambiguous",
        action="store_true",
        help="submit again items whose lost create cannot be found or ruled out on the server "
        "(may pay twice)",
    )

    sub.add_parser(
        "validate",
        parents=[shared],
        help="check a manifest and print the plan and its cost, spending nothing",
        description="Run every check a run makes before spending (manifest, images, prompts, "
        "model schemas, duplicates, cost and budget) and print the plan: items to submit, to "
        "resume and already done, uploads needed, estimated cost. Uploads and submits nothing; "
        "the only file written is the model schema cache in the output directory. "
        "Exit 0 if there is no error, 2 if there is one.",
    )
    add_report_parser(sub)
    add_simulate_parser(sub)
    add_status_parser(sub)
    add_cancel_parser(sub)
    return parser


def limits_from(args: argparse.Namespace) -> cfg.Limits:
    rate_limit, rate_window = cfg.parse_rate(args.rate)
    given = vars(args)
    unreachable = given.get("unreachable_wait", cfg.DEFAULT_UNREACHABLE_AFTER)
    return cfg.Limits(
        concurrency=given.get("concurrency", cfg.DEFAULT_CONCURRENCY),
        rate_limit=rate_limit,
        rate_window=rate_window,
        burst=given.get("burst"),
        poll_min=given.get("poll_min", cfg.DEFAULT_POLL_MIN),
        expected_runtime=given.get("expected_runtime", cfg.DEFAULT_EXPECTED_RUNTIME),
        item_timeout=given.get("item_timeout", cfg.DEFAULT_ITEM_TIMEOUT),
        max_attempts=given.get("max_attempts", cfg.DEFAULT_MAX_ATTEMPTS),
        max_video_bytes=int(given.get("max_video_mb", cfg.DEFAULT_MAX_VIDEO_MB) * 1024 * 1024),
        max_retry_after=given.get("max_retry_after", cfg.DEFAULT_MAX_RETRY_AFTER),
        reconcile_settle=given.get("reconcile_wait", cfg.DEFAULT_RECONCILE_SETTLE),
        unreachable_after=unreachable,
        unreachable_at_start=min(cfg.DEFAULT_UNREACHABLE_AT_START, unreachable),
    )


def view_from(args: argparse.Namespace) -> ViewSettings:
    """What the view shows (``validate`` has none of the run's view options: the defaults)."""
    from runner.display import ViewSettings  # rich: loaded by a command that shows, not --help

    given = vars(args)
    return ViewSettings(
        progress=not given.get("no_progress", False),
        heartbeat=given.get("heartbeat", cfg.DEFAULT_HEARTBEAT),
        log_file=given.get("log_file"),
        quiet=args.quiet,
        verbose=args.verbose,
    )


def checks_from(args: argparse.Namespace) -> cfg.CheckConfig:
    if args.budget_partial and args.budget is None:
        raise ConfigError("--budget-partial needs --budget USD")
    return cfg.CheckConfig(
        strict=args.strict,
        offline=args.offline,
        check_urls=args.check_urls,
        max_image_bytes=int(args.max_image_mb * 1024 * 1024),
    )
