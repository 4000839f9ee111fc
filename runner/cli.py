"""``i2v-runner``: arguments → frozen config → one coroutine → exit code. The only sys.exit."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import anyio

from runner import config as cfg
from runner.errors import ConfigError, LedgerError, LockedError, ManifestError, RunnerError
from runner.manifest import load_manifest
from runner.report import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_LOCKED, RunResult
from runner.run import run_batch
from runner.simulator import SimConfig, Simulator, serve_forever

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


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i2v-runner",
        description="Render videos in bulk through the Eachlabs prediction API (MiniMax Hailuo "
        "image-to-video), resumably, within the account's limits.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request decision")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the final summary")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="render a manifest (run it again to resume)",
        description="Render every item of MANIFEST. Running the same command again resumes: "
        "done items are skipped, predictions in flight are polled again, never created again. "
        f"The API key is read from ${cfg.ENV_API_KEY} or --api-key-file, "
        "never from the command line.",
    )
    run.add_argument("manifest", type=Path, help="the YAML manifest")
    run.add_argument("--output", type=Path, help="output directory (default: output/<batch>/)")
    run.add_argument(
        "--simulate",
        action="store_true",
        help="run against the built-in simulator, started in-process on 127.0.0.1 (no key needed)",
    )
    run.add_argument(
        "--api-base", help=f"API base URL (default: ${cfg.ENV_API_BASE} or {cfg.DEFAULT_API_BASE})"
    )
    run.add_argument(
        "--api-key-file",
        type=Path,
        help=f"read the API key from this file instead of ${cfg.ENV_API_KEY}",
    )
    run.add_argument(
        "--concurrency",
        type=_positive(int),
        default=cfg.DEFAULT_CONCURRENCY,
        help="predictions in flight at once (default: %(default)s, the account's cap)",
    )
    run.add_argument(
        "--rate",
        default=f"{cfg.DEFAULT_RATE_LIMIT}/{cfg.DEFAULT_RATE_WINDOW:g}",
        help="API requests allowed in any window, N/SECONDS, strictly (default: %(default)s)",
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
        "--retry-failed",
        action="store_true",
        help="submit again the items that failed in earlier runs",
    )
    run.add_argument(
        "--resubmit-ambiguous",
        action="store_true",
        help="submit again items whose lost create cannot be found or ruled out on the server "
        "(may pay twice)",
    )

    sim = sub.add_parser(
        "simulate",
        help="run the built-in API simulator standalone",
        description="Serve the built-in Eachlabs API simulator on 127.0.0.1 for other clients.",
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    sim.add_argument(
        "--port", type=int, default=8750, help="port (default: %(default)s; 0 picks one)"
    )
    sim.add_argument("--concurrency", type=_positive(int), default=10, help="account in-flight cap")
    sim.add_argument("--rate", default=None, help="enforce N/SECONDS API requests (sliding window)")
    sim.add_argument(
        "--speed",
        type=_positive(float),
        default=1.0,
        help="time compression: 100 makes a 200 s prediction take 2 s (default: %(default)s)",
    )
    sim.add_argument(
        "--failure-rate", type=float, default=0.0, help="share of predictions that fail"
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def _limits(args: argparse.Namespace) -> cfg.Limits:
    rate_limit, rate_window = cfg.parse_rate(args.rate)
    return cfg.Limits(
        concurrency=args.concurrency,
        rate_limit=rate_limit,
        rate_window=rate_window,
        poll_min=args.poll_min,
        expected_runtime=args.expected_runtime,
        item_timeout=args.item_timeout,
        max_attempts=args.max_attempts,
    )


async def _run(args: argparse.Namespace, argv: Sequence[str]) -> RunResult:
    manifest = load_manifest(args.manifest)
    for warning in manifest.warnings:
        log.warning("%s", warning)
    limits = _limits(args)
    output = args.output or Path("output") / manifest.batch
    resume = shlex.join(["i2v-runner", *argv])
    if args.simulate:
        async with Simulator(simulate_profile()) as sim:
            log.info("built-in simulator listening on %s", sim.base_url)
            config = cfg.RunConfig(
                manifest_path=args.manifest,
                output_dir=output,
                api_base=sim.base_url,
                api_key=cfg.SIMULATOR_API_KEY,
                limits=limits,
                retry_failed=args.retry_failed,
                resubmit_ambiguous=args.resubmit_ambiguous,
            )
            return await run_batch(config, manifest, resume_command=resume, handle_signals=True)
    api_key = cfg.resolve_api_key(args.api_key_file, os.environ)
    if api_key is None:
        raise ConfigError(
            f"no API key: set {cfg.ENV_API_KEY} or name a file with --api-key-file "
            "(or use --simulate to run on the built-in simulator)"
        )
    config = cfg.RunConfig(
        manifest_path=args.manifest,
        output_dir=output,
        api_base=cfg.resolve_api_base(args.api_base, os.environ),
        api_key=api_key,
        limits=limits,
        retry_failed=args.retry_failed,
        resubmit_ambiguous=args.resubmit_ambiguous,
    )
    return await run_batch(config, manifest, resume_command=resume, handle_signals=True)


async def _simulate(args: argparse.Namespace) -> None:
    sim_config = SimConfig(
        concurrency=args.concurrency, failure_rate=args.failure_rate, seed=args.seed
    )
    if args.rate:
        rate_limit, rate_window = cfg.parse_rate(args.rate)
        sim_config = replace(sim_config, rate_limit=rate_limit, rate_window=rate_window)
    sim_config = sim_config.scaled(args.speed)
    await serve_forever(sim_config, args.host, args.port)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``i2v-runner`` and ``python -m runner``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    try:
        if args.command == "simulate":
            anyio.run(_simulate, args)
            sys.exit(0)
        result = anyio.run(_run, args, argv)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except (ConfigError, LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except LockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_LOCKED)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    print(result.text)
    sys.exit(result.exit_code)
