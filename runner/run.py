"""One batch run: lock the output directory, plan from the ledger, run, write the summary."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import anyio

from runner import ledger
from runner.budget import RequestBudget
from runner.config import RunConfig
from runner.errors import ConfigError, LockedError
from runner.jobs import JobState
from runner.manifest import Manifest
from runner.plan import Action, make_plan
from runner.report import SUMMARY_NAME, RunResult, build_summary, exit_code, render
from runner.scheduler import BatchRunner, verify_done
from runner.spend import SpendLimit, recorded_spend

log = logging.getLogger("runner")

LOCK_NAME = ".lock"


@contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on the output directory; LockedError if another runner has it.

    flock is released by the kernel when its process dies, so a crash never leaves a stale lock.
    """
    fd = os.open(output_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, output_dir)
        yield
    finally:
        os.close(fd)


def _lock(fd: int, output_dir: Path) -> None:
    """Take the exclusive flock on ``fd`` without waiting; LockedError if another runner has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockedError(
            f"another runner is already working in {output_dir}; "
            "wait for it to finish or stop it first"
        ) from None


def refuse_if_locked(output_dir: Path) -> None:
    """Raise LockedError if another runner holds ``output_dir`` now; creates nothing."""
    try:
        fd = os.open(output_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return  # no runner has ever worked there
    try:
        _lock(fd, output_dir)
    finally:
        os.close(fd)  # closing releases a lock this probe took


def _write_json_atomically(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


async def run_batch(
    config: RunConfig,
    manifest: Manifest,
    *,
    resume_command: str,
    handle_signals: bool = False,
    budget: RequestBudget | None = None,
    observer: Callable[[str, float], None] | None = None,
) -> RunResult:
    """Run ``manifest`` into ``config.output_dir``; raises LockedError, LedgerError, ConfigError.

    ``budget`` is the request window to share with requests made before the run (a preflight's
    model lookups); by default the run makes its own.
    """
    output_dir = config.output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output directory {output_dir}: {exc.strerror}"
        ) from None
    with output_lock(output_dir):
        ledger_path = output_dir / ledger.LEDGER_NAME
        records, warnings = ledger.read(ledger_path)
        for warning in warnings:
            log.warning("%s", warning)
        states = ledger.replay(records)
        keys = {item.key for item in manifest.items}
        file_ok = {
            key: await verify_done(output_dir, state)
            for key, state in states.items()
            if key in keys and state.state is JobState.DOWNLOADED
        }
        plan = make_plan(manifest.items, states, file_ok=file_ok, retry_failed=config.retry_failed)
        for step in plan.steps:
            if step.action is Action.DUPLICATE:
                log.warning(
                    "%s: same model and input as %s; rendered once", step.item.id, step.duplicate_of
                )
        log.info(
            "%d items: %d to submit, %d to resume, %d to reconcile, %d to download, "
            "%d done, %d failed before",
            len(plan.steps),
            plan.count(Action.SUBMIT),
            plan.count(Action.POLL),
            plan.count(Action.RECONCILE),
            plan.count(Action.DOWNLOAD),
            plan.count(Action.DONE),
            plan.count(Action.FAILED),
        )
        known_ids = {str(r["prediction_id"]) for r in records if r.get("prediction_id")}
        spend = SpendLimit(config.budget_usd, spent_before=recorded_spend(records))
        for step in plan.steps:  # predictions that may exist on the server count already
            if step.action in (Action.POLL, Action.RECONCILE):
                spend.hold(step.item.key, step.item.price_usd)
        async with ledger.LedgerWriter(ledger_path) as writer:
            runner = BatchRunner(
                config,
                plan,
                writer,
                ledger.uploads(records),
                known_ids=known_ids,
                observer=observer,
                spend=spend,
            )
            connector = aiohttp.TCPConnector(limit=32)
            async with (
                aiohttp.ClientSession(
                    connector=connector, cookie_jar=aiohttp.DummyCookieJar()
                ) as session,
                anyio.create_task_group() as tg,
            ):
                if handle_signals:
                    tg.start_soon(_watch_signals, runner, tg.cancel_scope)
                if budget is None:
                    budget = RequestBudget(config.limits.rate_limit, config.limits.rate_window)
                await runner.run(session, budget)
                tg.cancel_scope.cancel()
        outcome = runner.outcome
        final = {item_id: job.state for item_id, job in outcome.jobs.items()}
        summary = build_summary(
            manifest.batch,
            plan,
            final,
            interrupted=outcome.interrupted,
            account_error=outcome.account_error,
            budget_reached=outcome.budget_reached,
        )
        await anyio.to_thread.run_sync(_write_json_atomically, output_dir / SUMMARY_NAME, summary)
    return RunResult(summary, exit_code(summary), render(summary, str(output_dir), resume_command))


async def _watch_signals(runner: BatchRunner, scope: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: stop submitting and end the run cleanly (creates already sent are
    still recorded); predictions in flight keep running on the server and resume next time."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.warning(
                "%s: stopping; in-flight predictions are resumed next run",
                signal.Signals(signum).name,
            )
            runner.outcome.interrupted = True
            runner.stop_submitting()
            runner.cancel()
            return
