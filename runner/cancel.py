"""``i2v-runner cancel``: end the batch's predictions still running on the server, record how
each ended, and leave the batch resumable.

The ledger says which predictions may be running: those recorded ``submitted``, and those an
earlier run gave up on while they may still run (timed out, lost, unpollable). Each is sent
``POST /v1/prediction/{id}/cancel`` through the request window, then polled for at most
``watch`` seconds to learn how it ended: a cancel is best effort (on the real service it takes
effect at the next ~5 s status step, sometimes never, and a prediction that succeeds anyway is
billed). Each ending is recorded with the run's own records, so the next run does the right
thing:

- cancelled, or ended in error: ``failed`` with its error code (``cancelled`` for a cancel);
  ``--retry-failed`` submits it again;
- succeeded, before the cancel or despite it: ``succeeded`` with its output URL and cost, so
  the next run downloads the paid video instead of paying for another;
- still running when the watch ends, or not answering: left as it was; the next run polls it.

A create whose answer was never recorded (``submitting``) has no id to cancel: it is reported,
and the next run looks it up. The lock of the output directory is held while the ledger is
written; a runner holding it is refused (LockedError) or, with ``stop_runner``, sent SIGTERM
(same host only) and waited for (``runner.stoprunner``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from runner.api.port import Api
from runner.api.protocol import Prediction, RemoteStatus
from runner.api.ratelimit import RateLimiter
from runner.config import DEFAULT_CANCEL_WATCH, Limits
from runner.engine.accounts import Account, Accounts
from runner.errors import (
    AccountError,
    ApiProtocolError,
    ApiStatusError,
    ApiUnavailableError,
    ConfigError,
    NotFoundError,
    StorageError,
    TransportError,
)
from runner.events import Events, logged
from runner.jobs import JobState, transition
from runner.stoprunner import take_lock
from runner.store import ledger
from runner.store.ledger import KeyState
from runner.store.outdir import LockOwner
from runner.store.plan import RECHECK_CODES
from runner.store.resume import read_replay
from runner.store.writer import LedgerWriter

log = logging.getLogger("runner")

#: Predictions cancelled and watched at once; the request window paces their requests anyway.
CANCEL_CONCURRENCY = 10
#: The error code recorded for a prediction that ended cancelled without a code of its own.
CANCELLED_CODE = RemoteStatus.CANCELLED.value


class Ending(enum.StrEnum):
    """How one in-flight item came out of the cancel."""

    CANCELLED = "cancelled"  # the server shows it cancelled: recorded failed
    SUCCEEDED = "succeeded"  # it succeeded (before the cancel, or despite it): recorded
    FAILED = "failed"  # it had ended in error: recorded failed
    RUNNING = "running"  # still running when the watch ended: left submitted
    UNKNOWN = "unknown"  # the server could not be asked, or does not know it: left as it was
    AMBIGUOUS = "ambiguous"  # a create without a recorded answer: no id to cancel

    @property
    def ended(self) -> bool:
        """Whether the prediction is known to run no more."""
        return self in (Ending.CANCELLED, Ending.SUCCEEDED, Ending.FAILED)


@dataclass(frozen=True)
class Settled:
    """What became of one item: its prediction (None: ambiguous), its ending, and a line."""

    item: str
    prediction_id: str | None
    ending: Ending
    detail: str


@dataclass(frozen=True)
class CancelResult:
    """Every item the cancel looked at, by item id; ``stopped``: the runner sent SIGTERM."""

    settled: tuple[Settled, ...]
    stopped: LockOwner | None = None
    warnings: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 when every prediction the ledger had in flight ended, 1 if any may still run
        (still running, not answering, or an ambiguous create that may have made one)."""
        return 0 if all(s.ending.ended for s in self.settled) else 1


@dataclass(frozen=True)
class CancelConfig:
    """What ``cancel_batch`` needs: the directory, the API, how hard it may push it
    (``limits``: the rate window, ``poll_min`` between polls of one prediction, timeouts),
    how long it watches each prediction, and whether it may stop a runner."""

    output_dir: Path
    api_base: str
    api_key: str = field(repr=False)  # a secret: never printed, logged or persisted
    limits: Limits = field(default_factory=Limits)
    watch: float = DEFAULT_CANCEL_WATCH
    stop_runner: bool = False
    command: str = ""  # this command line, redacted, for the lock file
    #: Keys of further accounts (``RunConfig.more_api_keys``): each prediction is cancelled
    #: and polled with the key that created it.
    more_api_keys: tuple[str, ...] = field(default=(), repr=False)


def targets(states: Iterable[KeyState]) -> tuple[list[KeyState], list[KeyState]]:
    """``(to cancel, ambiguous)``: the items whose prediction may be running on the server
    (``submitted``, or given up on with one of ``RECHECK_CODES``), and those whose create was
    sent but its answer never recorded. Pure."""
    to_cancel: list[KeyState] = []
    ambiguous: list[KeyState] = []
    for state in states:
        if state.state is JobState.SUBMITTING:
            ambiguous.append(state)
        elif state.prediction_id is not None and (
            state.state is JobState.SUBMITTED
            or (state.state is JobState.FAILED and state.error_code in RECHECK_CODES)
        ):
            to_cancel.append(state)
    return to_cancel, ambiguous


def record_of(prediction: Prediction) -> tuple[JobState, dict[str, Any]] | None:
    """The ledger event and fields that record how ``prediction`` ended, as the run records
    it; None while it runs. Pure."""
    common: dict[str, Any] = {"prediction_id": prediction.id, "cost": prediction.cost}
    if prediction.status is RemoteStatus.SUCCESS:
        return JobState.SUCCEEDED, {
            **common,
            "output_url": prediction.output_url,
            "predict_time": prediction.predict_time,
        }
    if prediction.status is RemoteStatus.CANCELLED:
        return JobState.FAILED, {
            **common,
            "error": "cancelled by i2v-runner cancel",
            "error_code": prediction.error_code or CANCELLED_CODE,
        }
    if prediction.status is RemoteStatus.ERROR:
        return JobState.FAILED, {
            **common,
            "error": prediction.error,
            "error_code": prediction.error_code,
            "retryable": prediction.retryable or None,
        }
    return None


async def cancel_batch(config: CancelConfig, events: Events | None = None) -> CancelResult:
    """Cancel what the ledger of ``config.output_dir`` has in flight; see the module's text.

    A directory without a ledger has nothing in flight: nothing is written there. Raises
    ConfigError (not a directory), LockedError (a runner holds it and was not,
    or could not be, stopped: nothing was sent), LedgerError/StorageError (the ledger cannot be
    read or written), AccountError (401/402), ApiUnavailableError (the API cannot be reached).
    """
    directory = config.output_dir
    if not directory.is_dir():
        raise ConfigError(
            f"{directory} {'is not a directory' if directory.exists() else 'does not exist'}"
        )
    path = directory / ledger.LEDGER_NAME
    if not path.exists() and not path.is_symlink():
        return CancelResult(())  # nothing ever ran here: nothing to cancel, nothing written
    events = events or logged(log)
    with contextlib.ExitStack() as stack:
        stopped = await take_lock(stack, directory, config.command, stop=config.stop_runner)
        replay, warnings = await anyio.to_thread.run_sync(read_replay, path)
        to_cancel, ambiguous = targets(replay.states.values())
        settled = [
            Settled(
                s.item,
                None,
                Ending.AMBIGUOUS,
                "a create was sent but its answer never recorded: no prediction id to cancel; "
                "the next run looks it up",
            )
            for s in ambiguous
        ]
        if to_cancel:
            settled += await _cancel_all(config, path, to_cancel, events)
    return CancelResult(tuple(sorted(settled, key=lambda s: s.item)), stopped, tuple(warnings))


async def _cancel_all(
    config: CancelConfig, path: Path, to_cancel: list[KeyState], events: Events
) -> list[Settled]:
    limits = config.limits
    keys = (config.api_key, *config.more_api_keys)
    found: list[Settled] = []
    slots = anyio.CapacityLimiter(CANCEL_CONCURRENCY)
    try:
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
            LedgerWriter(path) as writer,
            anyio.create_task_group() as tg,
        ):
            # Each key is an account, with its own request window.
            accounts = Accounts(
                [
                    Account.of_key(
                        session,
                        config.api_base,
                        key,
                        RateLimiter.for_limits(limits, events),
                        limits,
                    )
                    for key in keys
                ]
            )
            for state in to_cancel:
                account = accounts.named(state.account)
                if account is None:
                    found.append(
                        Settled(
                            state.item,
                            state.prediction_id,
                            Ending.UNKNOWN,
                            f"made with the API key {state.account}, which was not given: left "
                            "as it was (only that key can cancel it)",
                        )
                    )
                    continue
                tg.start_soon(_settle_into, found, slots, account.client, writer, state, config)
    except* (AccountError, ApiUnavailableError, StorageError) as group:
        raise group.exceptions[0] from None
    return found


#: A request error that concerns one prediction: the others are still cancelled.
_ITEM_ERRORS = (ApiStatusError, TransportError, ApiProtocolError)


async def _settle_into(
    found: list[Settled],
    slots: anyio.CapacityLimiter,
    client: Api,
    writer: LedgerWriter,
    state: KeyState,
    config: CancelConfig,
) -> None:
    async with slots:
        found.append(await _settle(client, writer, state, config))


async def _settle(
    client: Api, writer: LedgerWriter, state: KeyState, config: CancelConfig
) -> Settled:
    """Cancel one prediction, watch it for ``config.watch`` seconds (at least one poll), and
    record its end."""
    prediction_id = state.prediction_id
    assert prediction_id is not None
    problem = ""
    try:
        await client.cancel(prediction_id)
    except AccountError:
        raise
    except _ITEM_ERRORS as exc:  # best effort: the polls tell how it stands
        problem = f"the cancel failed ({exc})"
    deadline = anyio.current_time() + config.watch
    while True:
        try:
            prediction = await client.get(prediction_id)
        except AccountError:
            raise
        except NotFoundError:
            return Settled(
                state.item,
                prediction_id,
                Ending.UNKNOWN,
                "the server does not know this prediction; left as it was, the next run asks "
                "about it again",
            )
        except _ITEM_ERRORS as exc:
            problem, prediction = f"it could not be polled ({exc})", None
        if prediction is not None and (record := record_of(prediction)) is not None:
            event, fields = record
            transition(state.state, event)
            await writer.append(state.item, state.key, event.value, **fields)
            return _ended(state.item, prediction)
        if anyio.current_time() + config.limits.poll_min > deadline:
            break
        await anyio.sleep(config.limits.poll_min)
    if prediction is None:
        return Settled(
            state.item,
            prediction_id,
            Ending.UNKNOWN,
            f"{problem}; left as it was, the next run polls it",
        )
    said = f" ({problem})" if problem else ""
    return Settled(
        state.item,
        prediction_id,
        Ending.RUNNING,
        f"{config.watch:g} s after the cancel{said}; left as it was: the next run polls it, or "
        "cancel again",
    )


def _ended(item: str, prediction: Prediction) -> Settled:
    if prediction.status is RemoteStatus.SUCCESS:
        return Settled(
            item,
            prediction.id,
            Ending.SUCCEEDED,
            "it ended in success, before the cancel or despite it, and is billed: recorded, "
            "the next run downloads it",
        )
    if prediction.status is RemoteStatus.CANCELLED:
        return Settled(
            item,
            prediction.id,
            Ending.CANCELLED,
            "recorded failed; --retry-failed submits it again",
        )
    code = f"[{prediction.error_code}] " if prediction.error_code else ""
    return Settled(
        item, prediction.id, Ending.FAILED, f"it had ended in error: {code}{prediction.error}"
    )


def counts(settled: Iterable[Settled]) -> Mapping[Ending, int]:
    """How many items came to each ending."""
    found: dict[Ending, int] = {}
    for one in settled:
        found[one.ending] = found.get(one.ending, 0) + 1
    return found
