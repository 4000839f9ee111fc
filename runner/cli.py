"""``i2v-runner``: arguments → frozen config → one coroutine → exit code. The only sys.exit.

``run``, ``validate`` and ``run --dry-run`` all go through ``runner.batch.check_and_run``:
one reading of the manifest and the ledger, the checks against it, and (``run`` only, and
only if the checks found no error) the run of the very plan they printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import anyio

from runner import config as cfg
from runner.batch import check_and_run
from runner.checks.preflight import Report
from runner.checks.render import render_plan, render_problems, render_verdict
from runner.errors import (
    ApiBrokenError,
    ApiUnavailableError,
    ConfigError,
    LockedError,
    ManifestError,
    RunnerError,
    StorageError,
)
from runner.report import (
    EXIT_API_BROKEN,
    EXIT_API_UNAVAILABLE,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_STORAGE,
)
from runner.simulator import config as simcfg
from runner.simulator.config import PROFILES, SimConfig

log = logging.getLogger("runner")


def simulate_profile() -> SimConfig:
    """The in-process simulator of ``--simulate``: runs of 5-12 s, so the example batch
    finishes within about a minute at the real client defaults (5 s poll floor, 60/60)."""
    return SimConfig(
        runtime_mean=8.0,
        runtime_min=5.0,
        runtime_max=12.0,
        outlier_rate=0.0,
        queue_delay=1.0,
        status_quantum=1.0,
    )


#: The largest value a numeric option takes. Nothing this CLI counts means anything past a
#: billion (seconds: 31 years; MB: a petabyte); a larger value is a typo, and refusing it keeps
#: arithmetic on it (MB to bytes, deadlines) finite.
MAX_OPTION_VALUE = 1e9


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
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


def _fraction(text: str) -> float:
    """An argparse type: a share from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1, not {text}")
    return value


def _usd(option: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return cfg.parse_usd(text, option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


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
    parent.add_argument("manifest", type=Path, help="the YAML manifest")
    parent.add_argument("--output", type=Path, help="output directory (default: output/<batch>/)")
    parent.add_argument(
        "--simulate",
        action="store_true",
        help="run against the built-in simulator, started in-process on 127.0.0.1 (no key needed)",
    )
    parent.add_argument(
        "--api-base", help=f"API base URL (default: ${cfg.ENV_API_BASE} or {cfg.DEFAULT_API_BASE})"
    )
    parent.add_argument(
        "--api-key-file",
        type=Path,
        help=f"read the API key from this file instead of ${cfg.ENV_API_KEY}",
    )
    parent.add_argument(
        "--rate",
        default=f"{cfg.DEFAULT_RATE_LIMIT}/{cfg.DEFAULT_RATE_WINDOW:g}",
        help="API requests allowed in any window, N/SECONDS, strictly (default: %(default)s)",
    )
    parent.add_argument(
        "--retry-failed",
        action="store_true",
        help="submit again the items that failed in earlier runs",
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
        type=_positive(float),
        default=cfg.DEFAULT_MAX_IMAGE_MB,
        help="largest image accepted, in MB (default: %(default)g, the API's limit)",
    )
    checks.add_argument(
        "--budget",
        type=_usd("--budget"),
        metavar="USD",
        help="cap on the batch's spend, counting what the ledger records as spent: a run whose "
        "estimate exceeds it does not start",
    )
    checks.add_argument(
        "--budget-partial",
        action="store_true",
        help="with --budget: submit items in manifest order while they fit, leave the rest pending",
    )
    return parent


def _version() -> str:
    """The installed package's version (pyproject.toml's), or "unknown" when run from a tree
    that was never installed."""
    try:
        return importlib.metadata.version("i2v-runner")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        "never from the command line.",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="run every check and print the plan and its estimated cost; upload and submit nothing",
    )
    run.add_argument(
        "--concurrency",
        type=_positive(int),
        default=cfg.DEFAULT_CONCURRENCY,
        help="predictions in flight at once (default: %(default)s, the account's cap)",
    )
    run.add_argument(
        "--poll-min",
        type=_positive(float),
        default=cfg.DEFAULT_POLL_MIN,
        help="never poll one prediction more often than this, seconds (default: %(default)s)",
    )
    run.add_argument(
        "--expected-runtime",
        type=_positive(float),
        default=cfg.DEFAULT_EXPECTED_RUNTIME,
        help="prior guess of one prediction's run time, seconds (default: %(default)s)",
    )
    run.add_argument(
        "--item-timeout",
        type=_positive(float),
        default=cfg.DEFAULT_ITEM_TIMEOUT,
        help="cancel a prediction still running after this many seconds (default: %(default)s)",
    )
    run.add_argument(
        "--max-attempts",
        type=_positive(int),
        default=cfg.DEFAULT_MAX_ATTEMPTS,
        help="attempts per item in one run when a prediction fails with a retryable error "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--max-video-mb",
        type=_positive(float),
        default=cfg.DEFAULT_MAX_VIDEO_MB,
        help="the largest output video accepted, in MB; a bigger download is refused "
        "(default: %(default)g)",
    )
    run.add_argument(
        "--max-retry-after",
        type=_positive(float),
        default=cfg.DEFAULT_MAX_RETRY_AFTER,
        metavar="S",
        help="the longest pause a server's Retry-After may impose, seconds; a server that keeps "
        "asking for more stops the run (exit 6) (default: %(default)g)",
    )
    run.add_argument(
        "--reconcile-wait",
        type=_positive(float),
        default=cfg.DEFAULT_RECONCILE_SETTLE,
        metavar="S",
        help="how long after a lost create's answer (a 5xx, a timeout) its prediction may take "
        "to appear in the executions list; it counts as absent only after that "
        "(default: %(default)g)",
    )
    run.add_argument(
        "--unreachable-wait",
        type=_positive(float),
        default=cfg.DEFAULT_UNREACHABLE_AFTER,
        metavar="S",
        help="how long an API that cannot be reached is waited for before the run stops with "
        f"its items pending (exit 6); at most {cfg.DEFAULT_UNREACHABLE_AT_START:g} s if it "
        "was never reached (default: %(default)g)",
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

    sim = sub.add_parser(
        "simulate",
        help="run the built-in API simulator standalone",
        description="Serve the built-in Eachlabs API simulator on 127.0.0.1 for other clients. "
        "By default it is as rough as the real service: terse error bodies, best-effort "
        "cancels, an executions list that lags, image URLs on private networks not fetched. "
        "--profile picks a set of switches (real: those defaults; kind: the old neat server; "
        "realistic: the defaults plus a few percent of transient faults); the flags after it "
        "override it. Durations are the service's seconds, divided by --speed.",
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    sim.add_argument(
        "--port", type=int, default=8750, help="port (default: %(default)s; 0 picks one)"
    )
    sim.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="real",
        help="a set of switches; later flags override it (default: %(default)s)",
    )
    sim.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help="accept only this API key (repeat for several; a wrong key gets 401 {}); "
        "without --key any non-empty key is accepted",
    )
    sim.add_argument(
        "--concurrency", type=_positive(int), help="account in-flight cap (default: 10)"
    )
    sim.add_argument("--rate", default=None, help="enforce N/SECONDS API requests (sliding window)")
    sim.add_argument(
        "--speed",
        type=_positive(float),
        default=1.0,
        help="time compression: 100 makes a 200 s prediction take 2 s (default: %(default)s)",
    )
    sim.add_argument(
        "--failure-rate", type=_fraction, help="share of predictions that fail (default: 0)"
    )
    sim.add_argument("--seed", type=int, help="random seed (default: 0)")
    sim.add_argument(
        "--error-bodies",
        choices=sorted(simcfg.ERROR_BODIES),
        help="terse: the real gateway's 400/401/422 {} and 404 not found (default); "
        "helpful: texts saying what was wrong",
    )
    sim.add_argument(
        "--cancel-ignored-rate",
        type=_fraction,
        metavar="SHARE",
        help="share of cancels that never take effect (default: 0.1)",
    )
    sim.add_argument(
        "--cancel-at-once",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a cancel ends the prediction at once, not at its next status check (default: no)",
    )
    sim.add_argument(
        "--cancel-answer-status",
        choices=sorted(simcfg.CANCEL_ANSWERS),
        help="the status word a cancel answers, whatever happens (default: success)",
    )
    sim.add_argument(
        "--executions-lag",
        type=float,
        metavar="SECONDS",
        help="a new prediction shows in /v1/executions only this long after its create "
        "(default: 3)",
    )
    sim.add_argument(
        "--executions-window-days",
        type=float,
        metavar="DAYS",
        help="without from, /v1/executions lists only this many days back; 0: everything "
        "(default: 90)",
    )
    sim.add_argument(
        "--refuse-private-urls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="image URLs on localhost, loopback, private or link-local addresses fail "
        "INPUT_DOWNLOAD_ERROR, as the real service cannot reach them (default: yes)",
    )
    sim.add_argument(
        "--fault-rate",
        type=_fraction,
        metavar="SHARE",
        help="share of requests to the fault endpoints that fault (default: 0)",
    )
    sim.add_argument(
        "--fault-endpoints",
        metavar="LIST",
        help="comma list of what faults may hit, from "
        f"{','.join(sorted(simcfg.FAULT_ENDPOINTS))} "
        f"(default: {','.join(sorted(simcfg.DEFAULT_FAULT_ENDPOINTS))})",
    )
    sim.add_argument(
        "--fault-kinds",
        metavar="LIST",
        help=f"comma list of faults, from {','.join(sorted(simcfg.FAULT_KINDS))}; reset closes "
        "the connection unanswered, timeout holds the request --fault-hang seconds then 504 "
        f"(default: {','.join(sorted(simcfg.DEFAULT_FAULT_KINDS))})",
    )
    sim.add_argument(
        "--fault-hang",
        type=float,
        metavar="SECONDS",
        help="how long a timeout fault holds its request (default: 60)",
    )
    sim.add_argument(
        "--create-fault-rate",
        type=_fraction,
        metavar="SHARE",
        help="share of creates that create the prediction but answer 500 (default: 0)",
    )
    sim.add_argument(
        "--truncate-downloads-rate",
        type=_fraction,
        metavar="SHARE",
        help="share of CDN downloads cut off half way (default: 0)",
    )
    return parser


def _limits(args: argparse.Namespace) -> cfg.Limits:
    rate_limit, rate_window = cfg.parse_rate(args.rate)
    given = vars(args)
    unreachable = given.get("unreachable_wait", cfg.DEFAULT_UNREACHABLE_AFTER)
    return cfg.Limits(
        concurrency=given.get("concurrency", cfg.DEFAULT_CONCURRENCY),
        rate_limit=rate_limit,
        rate_window=rate_window,
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


def _checks(args: argparse.Namespace) -> cfg.CheckConfig:
    if args.budget_partial and args.budget is None:
        raise ConfigError("--budget-partial needs --budget USD")
    return cfg.CheckConfig(
        strict=args.strict,
        offline=args.offline,
        check_urls=args.check_urls,
        max_image_bytes=int(args.max_image_mb * 1024 * 1024),
    )


async def _check_and_run(
    args: argparse.Namespace, argv: Sequence[str], out: TextIO, err: TextIO
) -> int:
    """The checks, then (for ``run`` without ``--dry-run``, and only if they found no error)
    the run: one call of ``runner.batch.check_and_run``. Returns the exit code."""
    dry = args.command == "validate" or args.dry_run
    async with contextlib.AsyncExitStack() as stack:
        api_key: str | None
        if args.simulate:
            from runner.simulator import Simulator  # the server: imported only when used

            sim = await stack.enter_async_context(Simulator(simulate_profile()))
            log.info("built-in simulator listening on %s", sim.base_url)
            api_base, api_key = sim.base_url, cfg.SIMULATOR_API_KEY
        else:
            api_base = cfg.resolve_api_base(args.api_base, os.environ)
            api_key = cfg.resolve_api_key(args.api_key_file, os.environ)
            if api_key is None and not dry:
                raise ConfigError(
                    f"no API key: set {cfg.ENV_API_KEY} or name a file with --api-key-file "
                    "(or use --simulate to run on the built-in simulator)"
                )
        config = cfg.RunConfig(
            manifest_path=args.manifest,
            output_dir=args.output,
            api_base=api_base,
            api_key=api_key or "",
            limits=_limits(args),
            retry_failed=args.retry_failed,
            resubmit_ambiguous=getattr(args, "resubmit_ambiguous", False),
            budget_usd=args.budget,
            budget_partial=args.budget_partial,
        )

        def show(report: Report) -> None:
            shown = report.errors if args.quiet else report.problems
            if shown:
                print(render_problems(shown), file=err)
            if dry or report.manifest is None:
                print(render_plan(report, verbose=args.verbose), file=out)
                print(render_verdict(report, dry=dry), file=out if dry else err)
            elif not args.quiet:
                print(render_plan(report, verbose=args.verbose), file=out)

        resume = shlex.join(["i2v-runner", *(cfg.redact_url(arg) for arg in argv)])
        outcome = await check_and_run(
            config,
            _checks(args),
            dry=dry,
            show=show,
            resume_command=resume,
            handle_signals=True,
        )
        if outcome.result is not None:
            print(outcome.result.text, file=out)
        return outcome.exit_code


async def _simulate(args: argparse.Namespace) -> None:
    """Serve the simulator: ``--profile``, then the flags given, then ``--speed``.

    Raises ConfigError for switches the simulator refuses."""
    given = {
        "concurrency": args.concurrency,
        "failure_rate": args.failure_rate,
        "seed": args.seed,
        "api_keys": frozenset(args.key) if args.key else None,
        "error_bodies": args.error_bodies,
        "cancel_ignored_rate": args.cancel_ignored_rate,
        "cancel_at_once": args.cancel_at_once,
        "cancel_answer_status": args.cancel_answer_status,
        "executions_lag": args.executions_lag,
        "refuse_private_urls": args.refuse_private_urls,
        "fault_rate": args.fault_rate,
        "fault_hang": args.fault_hang,
        "create_fault_rate": args.create_fault_rate,
        "truncate_downloads_rate": args.truncate_downloads_rate,
    }
    changes: dict[str, object] = {name: v for name, v in given.items() if v is not None}
    try:
        if args.fault_endpoints is not None:
            changes["fault_endpoints"] = simcfg.parse_names(
                args.fault_endpoints, simcfg.FAULT_ENDPOINTS, "--fault-endpoints"
            )
        if args.fault_kinds is not None:
            changes["fault_kinds"] = simcfg.parse_names(
                args.fault_kinds, simcfg.FAULT_KINDS, "--fault-kinds"
            )
        if args.executions_window_days is not None:
            days = args.executions_window_days
            changes["executions_window"] = days * 86400.0 if days else None
        if args.rate:
            changes["rate_limit"], changes["rate_window"] = cfg.parse_rate(args.rate)
        sim_config = SimConfig.profile(args.profile, **changes).scaled(args.speed)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    from runner.simulator import serve_forever  # the server: imported only when used

    await serve_forever(sim_config, args.host, args.port)


async def execute(
    args: argparse.Namespace,
    argv: Sequence[str],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the parsed command and return its exit code; errors become codes here."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.command == "simulate":
            await _simulate(args)
            return EXIT_OK
        return await _check_and_run(args, argv, out, err)
    except LockedError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_LOCKED
    except StorageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_STORAGE
    except ApiUnavailableError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_API_UNAVAILABLE
    except ApiBrokenError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_API_BROKEN
    except (ManifestError, ConfigError, RunnerError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_CONFIG


async def command(
    argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """``i2v-runner ARGV`` inside a running event loop (for tests and embedding): the exit code.

    argparse still exits (code 2) on arguments it cannot parse.
    """
    args = build_parser().parse_args(list(argv))
    return await execute(args, list(argv), out, err)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``i2v-runner`` and ``python -m runner``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    try:
        code = anyio.run(execute, args, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code)
