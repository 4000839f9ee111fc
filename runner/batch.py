"""The one path from check to video: ``check_and_run`` reads the manifest, locks the output
directory, reads the ledger once, runs every check against that reading, and hands the very
plan the checks printed to the engine. The CLI and the library (``run_batch``) both come
through here, so a batch that fails its checks is never run, whichever door it came in by.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from runner.api.client import EachlabsClient
from runner.api.ratelimit import RateLimiter
from runner.api.transport import connection_limit
from runner.checks.preflight import Report, preflight
from runner.config import CheckConfig, RunConfig
from runner.engine.accounts import missing_accounts, missing_accounts_message
from runner.engine.scheduler import BatchRunner
from runner.errors import ConfigError, LedgerError, LockedError, ManifestError, StorageError
from runner.events import Events, Subscriber, to_log
from runner.keys import fingerprint
from runner.livesummary import refreshing
from runner.manifest import Item, Manifest, read_manifest
from runner.report import (
    EXIT_CONFIG,
    EXIT_OK,
    SUMMARY_NAME,
    RunResult,
    build_summary,
    exit_code,
    render,
)
from runner.results import publish_run, save_snapshot
from runner.store import ledger
from runner.store.budget import Budget
from runner.store.outdir import output_lock, prepare_output_dir, write_json_atomically
from runner.store.plan import WORK, Action, Plan
from runner.store.resume import Resume, read_resume
from runner.store.writer import LedgerWriter

log = logging.getLogger("runner")

#: How long the checks' model lookups wait for an API that does not answer before falling
#: back to the schema cache (a run waits ``unreachable_at_start``).
PREFLIGHT_UNREACHABLE = 3.0
#: The checks of a library caller who names none: the CLI's defaults.
DEFAULT_CHECKS = CheckConfig()


@dataclass(frozen=True)
class BatchOutcome:
    """What ``check_and_run`` came to: the checks' report, the run's result (None: not run,
    a dry run or a batch that failed its checks) and the exit code."""

    report: Report
    result: RunResult | None
    exit_code: int


async def check_and_run(
    config: RunConfig,
    checks: CheckConfig = DEFAULT_CHECKS,
    *,
    dry: bool = False,
    show: Callable[[Report], None] | None = None,
    resume_command: str = "",
    handle_signals: bool = False,
    observer: Callable[[str, float], None] | None = None,
    on_event: Subscriber | None = None,
) -> BatchOutcome:
    """Check the batch of ``config.manifest_path`` and, unless ``dry`` or the checks found an
    error, run it. ``show`` sees the report before the run starts; ``on_event`` hears every
    event of the checks and the run (``runner.events``: item records, spend, requests sent and
    refused, pauses, the log's lines).

    ``config.output_dir`` None means ``output/<batch>``. Raises LockedError (another runner
    holds the output directory) and StorageError (it cannot be made or locked) before any
    request is sent; ConfigError for an unusable output path, and for a ledger with
    predictions in flight made with a key the run was not given. Nothing is written before the
    checks pass but the model schema cache.
    """
    reading = await anyio.to_thread.run_sync(read_manifest, config.manifest_path)
    output = config.output_dir or Path("output") / reading.batch
    limits = config.limits
    events = Events((to_log(log),) if on_event is None else (to_log(log), on_event))
    # One request window per key: each key is an account with its own (the first also serves
    # the checks' model lookups).
    limiters = [RateLimiter.for_limits(limits, events) for _ in config.api_keys]
    with contextlib.ExitStack() as lock:
        resume: Resume | LedgerError | None = None
        if not dry and output.is_dir():
            lock.enter_context(output_lock(output, command=resume_command))
            resume = await _read_resume(output, reading.items)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            client = EachlabsClient.for_limits(
                session,
                config.api_base,
                config.api_key,
                limiters[0],
                # The checks fall back to the schema cache (with a warning) when the API
                # cannot be reached: no reason to wait for it as long as a run does.
                dataclasses.replace(
                    limits,
                    unreachable_at_start=min(limits.unreachable_at_start, PREFLIGHT_UNREACHABLE),
                ),
            )
            report = await preflight(
                config.manifest_path,
                checks,
                reading=reading,
                resume=resume,
                output_dir=output,
                client=None if checks.offline else client,
                session=session,
                budget_usd=config.budget_usd,
                budget_partial=config.budget_partial,
                retry_failed=config.retry_failed,
                only=config.only,
                limit=config.limit,
            )
        if report.plan is not None and config.api_key:
            missing = missing_accounts(report.plan, map(fingerprint, config.api_keys))
            if missing:
                raise ConfigError(missing_accounts_message(missing))
        if show is not None:
            show(report)
        if dry or report.errors or report.manifest is None or report.plan is None:
            return BatchOutcome(report, None, EXIT_CONFIG if report.errors else EXIT_OK)
        if resume is None:  # the output directory is new: make it, lock it
            prepare_output_dir(output)
            lock.enter_context(output_lock(output, command=resume_command))
            fresh = await _read_resume(output, reading.items)
            if not isinstance(fresh, Resume) or not fresh.empty:
                raise LockedError(f"another runner started working in {output} meanwhile")
            resume = fresh
        assert isinstance(resume, Resume), "a ledger that cannot be read is an error of the checks"
        if problem := await save_snapshot(output, report.manifest):  # for `report DIR`
            events.say(logging.WARNING, "%s", problem)
        result = await _run(
            dataclasses.replace(config, output_dir=output),
            report.manifest,
            report.plan,
            resume,
            limiters,
            resume_command=resume_command,
            handle_signals=handle_signals,
            observer=observer,
        )
    return BatchOutcome(report, result, result.exit_code)


async def run_batch(
    config: RunConfig,
    checks: CheckConfig = DEFAULT_CHECKS,
    *,
    resume_command: str = "",
    handle_signals: bool = False,
    observer: Callable[[str, float], None] | None = None,
    on_event: Subscriber | None = None,
) -> RunResult:
    """The library's door: check and run ``config``'s batch (the same checks as the CLI's).

    Raises ManifestError listing every error the checks found (nothing was run), LockedError
    and StorageError as ``check_and_run``. Failures during the run (the disk fills up, the API
    is gone or broken, the account is refused) end it cleanly instead: the result's summary
    and exit code say why, and the ledger stays consistent.
    """
    outcome = await check_and_run(
        config,
        checks,
        resume_command=resume_command,
        handle_signals=handle_signals,
        observer=observer,
        on_event=on_event,
    )
    if outcome.result is None:
        raise ManifestError(list(outcome.report.errors))
    return outcome.result


async def _read_resume(output: Path, items: Sequence[Item]) -> Resume | LedgerError:
    """The ledger's reading, or why it cannot be read (the checks report it)."""
    keys = {item.key for item in items}
    try:
        return await anyio.to_thread.run_sync(read_resume, output, keys)
    except LedgerError as exc:
        return exc


async def _run(
    config: RunConfig,
    manifest: Manifest,
    plan: Plan,
    resume: Resume,
    limiters: Sequence[RateLimiter],
    *,
    resume_command: str,
    handle_signals: bool,
    observer: Callable[[str, float], None] | None,
) -> RunResult:
    """Carry ``plan`` out in the locked ``config.output_dir`` and write the summary. The run
    reports to the hub of events of ``limiters`` (one per API key), the one its requests report
    to."""
    assert config.output_dir is not None
    output_dir = config.output_dir
    events = limiters[0].events
    for warning in resume.warnings:
        events.say(logging.WARNING, "%s", warning)
    for step in plan.steps:
        if step.action is Action.DUPLICATE:
            events.say(
                logging.WARNING,
                "%s: same model and input as %s; rendered once",
                step.item.id,
                step.duplicate_of,
                item_id=step.item.id,
            )
    events.say(
        logging.INFO,
        "%d items: %d to submit, %d to resume, %d to reconcile, %d to look at again, "
        "%d to download, %d done, %d failed before",
        len(plan.steps),
        plan.count(Action.SUBMIT),
        plan.count(Action.POLL),
        plan.count(Action.RECONCILE),
        plan.count(Action.RECHECK),
        plan.count(Action.DOWNLOAD),
        plan.count(Action.DONE),
        plan.count(Action.FAILED),
    )
    spend = Budget(
        config.budget_usd, spent_before=resume.replay.spent, run_cap=config.night.max_spend
    )
    for step in plan.steps:  # predictions that may exist on the server count already
        if step.action in (Action.POLL, Action.RECONCILE, Action.RECHECK):
            spend.hold(step.item.key, step.item.price_usd)
    work = any(step.action in WORK for step in plan.steps)
    async with LedgerWriter(output_dir / ledger.LEDGER_NAME) as writer:
        if work:
            await writer.open()  # a full or read-only disk is found before any request
        runner = BatchRunner(
            config,
            plan,
            writer,
            dict(resume.replay.uploads),
            known_ids=resume.known_ids,
            observer=observer,
            spend=spend,
            events=events,
        )
        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(_watch_signals, runner)
            if work:
                limit = connection_limit(config.limits.concurrency, config.limits.rate_limit)
                connector = aiohttp.TCPConnector(limit=limit)
                async with aiohttp.ClientSession(
                    connector=connector, cookie_jar=aiohttp.DummyCookieJar()
                ) as session:
                    await refreshing(
                        runner.run(session, limiters),
                        output_dir / SUMMARY_NAME,
                        partial(_summary_now, runner, manifest, plan),
                        runner.say,
                    )
            result = await _finish(runner, manifest, plan, output_dir, resume_command, work)
            tg.cancel_scope.cancel()  # signals are handled until the summary is written
    return result


async def _finish(
    runner: BatchRunner,
    manifest: Manifest,
    plan: Plan,
    output_dir: Path,
    resume_command: str,
    work: bool,
) -> RunResult:
    """Write ``summary.json`` and make the result. A summary that cannot be written is said
    and makes the exit code 5, unless the run had nothing to do (a finished batch in a
    read-only directory is simply done)."""
    final = {item_id: job.state for item_id, job in runner.outcome.jobs.items()}
    summary = _summary_now(runner, manifest, plan)
    note = ""
    try:
        await anyio.to_thread.run_sync(write_json_atomically, output_dir / SUMMARY_NAME, summary)
    except StorageError as exc:
        runner.say(logging.ERROR, "%s", exc)
        if work and summary["stopped"] is None:
            summary["stopped"] = {"kind": "storage", "message": str(exc)}
        note = f"summary.json was not written: {exc}"
    if problem := await publish_run(output_dir, manifest, plan, final):
        runner.say(logging.WARNING, "%s", problem)  # the exit code stays the run's
    text = render(summary, str(output_dir), resume_command)
    return RunResult(summary, exit_code(summary), f"{text}\n{note}" if note else text)


def _summary_now(runner: BatchRunner, manifest: Manifest, plan: Plan) -> dict[str, Any]:
    """The summary of the run as it stands: what ``_finish`` writes at the end, kept current
    in ``summary.json`` while the run goes (``runner.livesummary``)."""
    outcome = runner.outcome
    stopped = outcome.stopped
    return build_summary(
        manifest.batch,
        plan,
        {item_id: job.state for item_id, job in outcome.jobs.items()},
        interrupted=outcome.interrupted,
        account_error=outcome.account_error,
        budget_reached=outcome.budget_reached,
        stopped=None if stopped is None else {"kind": stopped.kind, "message": stopped.message},
        night=_night_summary(runner),
    )


def _night_summary(runner: BatchRunner) -> dict[str, Any] | None:
    """``summary.json``'s ``night``: what ended submitting for the night, or None."""
    why = runner.outcome.night_stop
    if why is None:
        return None
    deadline = runner.night.deadline
    return {
        "stopped_by": why.value,
        "deadline": None if deadline is None else deadline.isoformat(timespec="seconds"),
    }


async def _watch_signals(runner: BatchRunner) -> None:
    """First SIGINT/SIGTERM: stop submitting and end the run cleanly (creates already sent are
    still recorded); predictions in flight keep running on the server and resume next time.
    A second one ends even the creates on the wire (the next run looks them up); either way
    the summary is still written."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        seen = 0
        async for signum in signals:
            seen += 1
            name = signal.Signals(signum).name
            runner.outcome.interrupted = True
            if seen == 1:
                runner.say(
                    logging.WARNING,
                    "%s: stopping; in-flight predictions are resumed next run",
                    name,
                )
                runner.cancel()
            else:
                runner.say(
                    logging.WARNING,
                    "%s again: stopping now; the next run settles what was on the wire",
                    name,
                )
                runner.force_cancel()
