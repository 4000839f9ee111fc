"""Running one command: the checks and the run through ``runner.batch.check_and_run``, the
simulator served, and every error turned into its exit code (the only ``sys.exit``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio

from runner import config as cfg
from runner.cli.options import build_parser, checks_from, limits_from, night_from, view_from
from runner.errors import (
    ApiBrokenError,
    ApiUnavailableError,
    ConfigError,
    InternalError,
    LockedError,
    ManifestError,
    RunnerError,
    StorageError,
)
from runner.night import next_night_argv
from runner.report import (
    EXIT_API_BROKEN,
    EXIT_API_UNAVAILABLE,
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_STORAGE,
    SUMMARY_NAME,
)

if TYPE_CHECKING:
    from runner.checks.preflight import Report

log = logging.getLogger("runner")

# A command loads what it uses when it runs (aiohttp, rich, the checks, the simulator), so
# that ``--help``, ``--version`` and a bad argument answer at once.


async def _check_and_run(
    args: argparse.Namespace, argv: Sequence[str], out: TextIO, err: TextIO, where: list[Path]
) -> int:
    """The checks, then (for ``run`` without ``--dry-run``, and only if they found no error)
    the run: one call of ``runner.batch.check_and_run``. Returns the exit code; ``where``
    gets the output directory once the checks know it."""
    from runner.batch import check_and_run
    from runner.checks.render import render_plan, render_problems, render_verdict
    from runner.cli.simulate import simulate_profile
    from runner.display import RunView, choose_mode

    dry = args.command == "validate" or args.dry_run
    started = datetime.now(UTC).astimezone()
    async with contextlib.AsyncExitStack() as stack:
        api_keys: tuple[str, ...]
        if args.simulate:
            from runner.simulator import Simulator  # the server: imported only when used

            sim = await stack.enter_async_context(Simulator(simulate_profile()))
            log.info("built-in simulator listening on %s", sim.base_url)
            api_base, api_keys = sim.base_url, (cfg.SIMULATOR_API_KEY,)
        else:
            api_base = cfg.resolve_api_base(args.api_base, os.environ)
            api_keys = cfg.resolve_api_keys(args.api_key_file, os.environ)
            if not api_keys and not dry:
                raise ConfigError(
                    f"no API key: set {cfg.ENV_API_KEY} (or {cfg.ENV_API_KEYS}) or name a file "
                    "with --api-key-file "
                    "(or use --simulate to run on the built-in simulator)"
                )
        config = cfg.RunConfig(
            manifest_path=args.manifest,
            output_dir=args.output,
            api_base=api_base,
            api_key=api_keys[0] if api_keys else "",
            more_api_keys=api_keys[1:],
            limits=limits_from(args),
            retry_failed=args.retry_failed,
            resubmit_ambiguous=getattr(args, "resubmit_ambiguous", False),
            budget_usd=args.budget,
            budget_partial=args.budget_partial,
            only=tuple(args.only),
            limit=args.limit,
            night=night_from(args, started),
        )
        settings = view_from(args)
        mode = choose_mode(settings, err, os.environ)
        view = await stack.enter_async_context(
            RunView(settings, mode, out, err, secrets=config.api_keys)
        )

        def show(report: Report) -> None:
            where.append(report.output_dir)
            shown = report.errors if args.quiet else report.problems
            if shown:
                print(render_problems(shown), file=err)
            plan = partial(
                render_plan,
                verbose=args.verbose,
                limits=config.limits,
                tonight=config.night,
                keys=len(config.api_keys),
                now=started,
            )
            if dry or report.manifest is None:
                print(plan(report), file=out)
                print(render_verdict(report, dry=dry), file=out if dry else err)
            elif not args.quiet:
                print(plan(report), file=out)
            out.flush()  # the plan before the run's lines, also when both go to one file
            if not dry and not report.errors:
                view.start(report, config.limits, config.budget_usd)

        # For the next night: an --until date-time a day later (a time of day stays).
        again = next_night_argv(argv)
        resume = shlex.join(["i2v-runner", *(cfg.redact_url(arg) for arg in again)])
        outcome = await check_and_run(
            config,
            checks_from(args),
            dry=dry,
            show=show,
            resume_command=resume,
            handle_signals=True,
            on_event=view.on_event,
        )
        if outcome.result is not None:
            view.finish(outcome.result)
        return outcome.exit_code


async def execute(
    args: argparse.Namespace,
    argv: Sequence[str],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the parsed command and return its exit code; a run's ``--on-finish`` command then
    hears how it ended."""
    out = out or sys.stdout
    err = err or sys.stderr
    where: list[Path] = []
    code = await _exit_code(args, argv, out, err, where)
    hook = getattr(args, "on_finish", None)
    if hook and args.command == "run" and not args.dry_run:
        summary = where[-1] / SUMMARY_NAME if where else None
        from runner.cli import notify

        await notify.on_finish(hook, summary, code, err)
    return code


async def _exit_code(
    args: argparse.Namespace, argv: Sequence[str], out: TextIO, err: TextIO, where: list[Path]
) -> int:
    """Run the parsed command; errors become exit codes here."""
    from runner.cli.cancel import cancel_command
    from runner.cli.report import report_command
    from runner.cli.simulate import serve
    from runner.cli.status import status_command

    try:
        if args.command == "report":
            return await report_command(args, out, err)
        if args.command == "simulate":
            await serve(args)
            return EXIT_OK
        if args.command == "status":
            return await status_command(args, out, err)
        if args.command == "cancel":
            return await cancel_command(args, argv, out, err)
        return await _check_and_run(args, argv, out, err, where)
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
    except Exception as exc:  # a bug: one line (the traceback with -v), never a stack dump
        log.debug("the traceback of the internal error:", exc_info=exc)
        print(
            f"error: {InternalError.of(exc)}; this is a bug in the runner: please report "
            "it with the traceback that -v shows",
            file=err,
        )
        return EXIT_INTERNAL


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
    from runner.display import log_handler

    logging.basicConfig(level=level, handlers=[log_handler(logging.NOTSET)])
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    try:
        code = anyio.run(execute, args, argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code)
