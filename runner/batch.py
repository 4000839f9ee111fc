"""One batch run: lock the output directory, plan from the ledger, run, write the summary."""

from __future__ import annotations

import contextlib
import errno
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

from runner.api.ratelimit import RateLimiter
from runner.config import RunConfig
from runner.engine.scheduler import BatchRunner, verify_done
from runner.errors import LockedError, StorageError
from runner.jobs import JobState
from runner.manifest import Manifest
from runner.report import SUMMARY_NAME, RunResult, build_summary, exit_code, render
from runner.store import ledger
from runner.store.budget import Budget, recorded_spend
from runner.store.plan import Action, Plan, make_plan

log = logging.getLogger("runner")

LOCK_NAME = ".lock"


@contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on the output directory; LockedError if another runner has it.

    flock is released by the kernel when its process dies, so a crash never leaves a stale lock.
    A read-only directory is locked through its existing lock file opened read-only (flock
    needs no write access), or not at all if it has none: nothing can write there anyway.
    """
    path = output_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise StorageError(f"cannot create the lock file {path}: {_why(exc)}") from None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            yield
            return
        except OSError as again:
            raise StorageError(f"cannot open the lock file {path}: {_why(again)}") from None
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
        fd = os.open(output_dir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return  # no runner has ever worked there (or --output is a file: said later)
    except OSError as exc:
        raise StorageError(f"cannot open the lock file in {output_dir}: {_why(exc)}") from None
    try:
        _lock(fd, output_dir)
    finally:
        os.close(fd)  # closing releases a lock this probe took


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def prepare_output_dir(output_dir: Path) -> None:
    """Create the output directory if needed; StorageError if it is a file or cannot be made."""
    if output_dir.is_dir():
        return
    if output_dir.exists() or output_dir.is_symlink():
        raise StorageError(f"the output directory {output_dir} is not a directory")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the output directory {output_dir}: {_why(exc)}"
        ) from None


def write_json_atomically(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, never through
    a planted link; StorageError naming the path and the cause if it cannot be written."""
    tmp = path.with_name(path.name + ".tmp")
    text = (json.dumps(data, indent=2) + "\n").encode()
    try:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_symlink() or not tmp.is_file():
                tmp.unlink()
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot write {path}: {_why(exc)}") from None


async def run_batch(
    config: RunConfig,
    manifest: Manifest,
    *,
    resume_command: str,
    handle_signals: bool = False,
    limiter: RateLimiter | None = None,
    observer: Callable[[str, float], None] | None = None,
) -> RunResult:
    """Run ``manifest`` into ``config.output_dir``.

    Raises LockedError (another runner), StorageError (the output directory cannot be made,
    locked or written before anything was sent). Failures during the run (the disk fills up,
    the API is gone or broken, the account is refused) end it cleanly instead: the result's
    summary and exit code say why, and the ledger stays consistent.

    ``limiter`` is the request window to share with requests made before the run (a preflight's
    model lookups); by default the run makes its own.
    """
    output_dir = config.output_dir
    prepare_output_dir(output_dir)
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
        known_ids = {str(r["prediction_id"]) for r in records if r.get("prediction_id")}
        spend = Budget(config.budget_usd, spent_before=recorded_spend(records))
        for step in plan.steps:  # predictions that may exist on the server count already
            if step.action in (Action.POLL, Action.RECONCILE, Action.RECHECK):
                spend.hold(step.item.key, step.item.price_usd)
        work = any(step.action in _WORK for step in plan.steps)
        async with ledger.LedgerWriter(ledger_path) as writer:
            if work:
                await writer.open()  # a full or read-only disk is found before any request
            runner = BatchRunner(
                config,
                plan,
                writer,
                ledger.uploads(records),
                known_ids=known_ids,
                observer=observer,
                spend=spend,
            )
            async with anyio.create_task_group() as tg:
                if handle_signals:
                    tg.start_soon(_watch_signals, runner)
                if work:
                    connector = aiohttp.TCPConnector(limit=32)
                    async with aiohttp.ClientSession(
                        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
                    ) as session:
                        if limiter is None:
                            limiter = RateLimiter(
                                config.limits.rate_limit, config.limits.rate_window
                            )
                        await runner.run(session, limiter)
                result = await _finish(runner, manifest, plan, output_dir, resume_command, work)
                tg.cancel_scope.cancel()  # signals are handled until the summary is written
    return result


#: Plan actions that send a request or write a record.
_WORK = frozenset({Action.SUBMIT, Action.POLL, Action.RECONCILE, Action.RECHECK, Action.DOWNLOAD})


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
    outcome = runner.outcome
    final = {item_id: job.state for item_id, job in outcome.jobs.items()}
    stopped = outcome.stopped
    summary = build_summary(
        manifest.batch,
        plan,
        final,
        interrupted=outcome.interrupted,
        account_error=outcome.account_error,
        budget_reached=outcome.budget_reached,
        stopped=None if stopped is None else {"kind": stopped.kind, "message": stopped.message},
    )
    note = ""
    try:
        await anyio.to_thread.run_sync(write_json_atomically, output_dir / SUMMARY_NAME, summary)
    except StorageError as exc:
        log.error("%s", exc)
        if work and summary["stopped"] is None:
            summary["stopped"] = {"kind": "storage", "message": str(exc)}
        note = f"summary.json was not written: {exc}"
    text = render(summary, str(output_dir), resume_command)
    return RunResult(summary, exit_code(summary), f"{text}\n{note}" if note else text)


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
                log.warning("%s: stopping; in-flight predictions are resumed next run", name)
                runner.cancel()
            else:
                log.warning(
                    "%s again: stopping now; the next run settles what was on the wire", name
                )
                runner.force_cancel()
