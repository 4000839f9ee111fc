"""What to do after each answer: one table from (phase, outcome) to the next step. Pure.

The engine sorts every error an attempt ends with into an ``Outcome`` (``classify``: the only
place that asks what class an error is), looks up the ``Step`` (``decide``) and carries it out.
A pair the table does not hold is an illegal move: ``decide`` raises IllegalMove, so a new kind
of answer cannot slip through a default branch. The money rules of the scheduler's docstring
are rows here:

- a create that may have made a prediction (AMBIGUOUS) is looked up, never sent again blind;
- a create that surely made nothing (UNSENT, CAPACITY) is tried again, and after a few
  failures left pending: no item fails for a network reason;
- a prediction the server does not know (NOT_FOUND) is polled on, and only given up after
  ``lost_after`` seconds and a look in the executions list (the engine's counters);
- an account refusal, a disk that cannot be written, an API that is gone or answers nonsense
  stop the whole run (each with its exit code), never just the item.

Counted rules (how many failures before an item is left or failed) are the small functions at
the end, so the table stays a table.
"""

from __future__ import annotations

import enum
import errno

from runner.api.transfers import GONE
from runner.errors import (
    AccountError,
    AmbiguousCreateError,
    ApiBrokenError,
    ApiProtocolError,
    ApiStatusError,
    ApiUnavailableError,
    CapacityError,
    DownloadError,
    NotFoundError,
    StopRequested,
    StorageError,
    TransferError,
    TransportError,
)

#: Local causes that concern the whole disk, not one file: the run stops (exit 5).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


class Phase(enum.Enum):
    """Which request of an item's life the answer is to."""

    UPLOAD = "upload"  # the image's presign and PUT
    CREATE = "create"  # POST /v1/prediction
    POLL = "poll"  # GET /v1/prediction/{id} until it ends
    RECHECK = "recheck"  # one GET for a prediction an earlier run gave up on
    DOWNLOAD = "download"  # the output video from the CDN
    REFRESH = "refresh"  # one GET for a fresh output URL after the old one expired
    CANCEL = "cancel"  # POST .../cancel past --item-timeout


class Outcome(enum.Enum):
    """What an attempt ended with."""

    OK = "ok"  # the answer asked for
    STOPPED = "stopped"  # a stop ended the wait for the request window: nothing was sent
    UNSENT = "unsent"  # no connection, or a stop after write-ahead: nothing reached the server
    AMBIGUOUS = "ambiguous"  # a create went out and no usable answer came back
    ACCOUNT = "account"  # 401/402: the account is refused
    CAPACITY = "capacity"  # 429: the account's cap or the rate window
    NOT_FOUND = "not_found"  # 404
    REFUSED = "refused"  # another 4xx (not 408, 429): asking again changes nothing
    TRANSIENT = "transient"  # 5xx, 408, or a transfer without an answer: may pass
    PROTOCOL = "protocol"  # an answer that cannot be read
    UNAVAILABLE = "unavailable"  # the API has not been reachable for too long
    BROKEN = "broken"  # the API answers nonsense (creates without ids, bad redirects)
    GONE = "gone"  # the output URL expired or vanished
    TRANSFER = "transfer"  # the download failed otherwise (retried inside already)
    FILE = "file"  # one file cannot be written
    DISK = "disk"  # the disk is full, read-only or failing
    DEADLINE = "deadline"  # --item-timeout passed while polling


class Step(enum.Enum):
    """What the engine does next."""

    GO_ON = "go_on"  # the attempt did its job: on to the next phase
    AGAIN = "again"  # back off and try again (counted: see ``leave_after_failures``)
    WAIT_FOR_ROOM = "wait_for_room"  # record pending, hold creates until one ends, try again
    RECONCILE = "reconcile"  # look the create up in the executions list
    POLL_ON = "poll_on"  # keep polling (back off while there is trouble)
    MISSING = "missing"  # poll on, counting how long the server has not known it
    REFRESH_URL = "refresh_url"  # poll once for a fresh output URL, then download again
    CANCEL = "cancel"  # ask the server to cancel, then poll on for the grace period
    LEAVE = "leave"  # nothing more this run: the item keeps its state for the next run
    FAIL = "fail"  # record the item failed
    STOP_RUN = "stop_run"  # the whole run stops (account, disk, API gone or broken)


class IllegalMove(Exception):
    """The table holds no step for this outcome in this phase: a bug, not an answer."""


def _rows(phase: Phase, steps: dict[Outcome, Step]) -> dict[tuple[Phase, Outcome], Step]:
    return {(phase, outcome): step for outcome, step in steps.items()}


#: The whole table. Each phase lists every outcome its requests can end with.
TABLE: dict[tuple[Phase, Outcome], Step] = {
    **_rows(
        Phase.UPLOAD,
        {
            Outcome.OK: Step.GO_ON,
            Outcome.UNSENT: Step.AGAIN,
            Outcome.TRANSIENT: Step.AGAIN,
            Outcome.PROTOCOL: Step.AGAIN,
            Outcome.CAPACITY: Step.AGAIN,  # a 429 on the presign: the client paused already
            Outcome.NOT_FOUND: Step.FAIL,  # the upload host refused the image
            Outcome.REFUSED: Step.FAIL,
            Outcome.ACCOUNT: Step.STOP_RUN,
            Outcome.UNAVAILABLE: Step.STOP_RUN,
            Outcome.BROKEN: Step.STOP_RUN,
            Outcome.FILE: Step.FAIL,  # the image file went away after the checks
            Outcome.DISK: Step.STOP_RUN,
        },
    ),
    **_rows(
        Phase.CREATE,
        {
            Outcome.OK: Step.GO_ON,
            Outcome.STOPPED: Step.LEAVE,  # never sent, nothing written: stays pending
            Outcome.UNSENT: Step.AGAIN,  # surely nothing created
            Outcome.TRANSIENT: Step.AGAIN,  # a 408: the server did not take the request
            Outcome.AMBIGUOUS: Step.RECONCILE,  # maybe created: never create blind again
            Outcome.CAPACITY: Step.WAIT_FOR_ROOM,
            Outcome.NOT_FOUND: Step.FAIL,  # no such model: a 4xx that created nothing
            Outcome.REFUSED: Step.FAIL,
            Outcome.ACCOUNT: Step.STOP_RUN,
            Outcome.UNAVAILABLE: Step.STOP_RUN,
            Outcome.BROKEN: Step.STOP_RUN,
            Outcome.DISK: Step.STOP_RUN,  # the write-ahead record could not be written
            Outcome.FILE: Step.STOP_RUN,
        },
    ),
    **_rows(
        Phase.POLL,
        {
            Outcome.OK: Step.POLL_ON,  # until the status is terminal
            Outcome.NOT_FOUND: Step.MISSING,  # the server may not show it yet
            Outcome.UNSENT: Step.POLL_ON,
            Outcome.TRANSIENT: Step.POLL_ON,
            Outcome.CAPACITY: Step.POLL_ON,
            Outcome.REFUSED: Step.POLL_ON,  # counted: see ``fail_after_refusals``
            Outcome.PROTOCOL: Step.POLL_ON,  # counted as a refusal
            Outcome.DEADLINE: Step.CANCEL,  # then polled on for the cancel grace
            Outcome.ACCOUNT: Step.STOP_RUN,
            Outcome.UNAVAILABLE: Step.STOP_RUN,
            Outcome.BROKEN: Step.STOP_RUN,
            Outcome.DISK: Step.STOP_RUN,
            Outcome.FILE: Step.STOP_RUN,
        },
    ),
    **_rows(
        Phase.RECHECK,
        {
            Outcome.OK: Step.POLL_ON,  # running or succeeded after all; ended: see the engine
            Outcome.NOT_FOUND: Step.LEAVE,  # or submitted again with --retry-failed
            Outcome.UNSENT: Step.LEAVE,
            Outcome.TRANSIENT: Step.LEAVE,
            Outcome.CAPACITY: Step.LEAVE,
            Outcome.REFUSED: Step.LEAVE,
            Outcome.PROTOCOL: Step.LEAVE,
            Outcome.ACCOUNT: Step.LEAVE,  # creates that follow meet the refusal and stop
            Outcome.UNAVAILABLE: Step.STOP_RUN,
            Outcome.BROKEN: Step.STOP_RUN,
            Outcome.DISK: Step.STOP_RUN,
            Outcome.FILE: Step.STOP_RUN,
        },
    ),
    **_rows(
        Phase.DOWNLOAD,
        {
            Outcome.OK: Step.GO_ON,
            Outcome.GONE: Step.REFRESH_URL,  # once; a second expiry fails the item
            Outcome.TRANSFER: Step.FAIL,  # the transfer retried already
            Outcome.FILE: Step.FAIL,  # this video cannot be saved; others can
            Outcome.DISK: Step.STOP_RUN,
        },
    ),
    **_rows(
        Phase.REFRESH,
        {
            Outcome.OK: Step.GO_ON,  # with a fresh URL when it succeeded; else the item fails
            Outcome.NOT_FOUND: Step.FAIL,
            Outcome.UNSENT: Step.FAIL,
            Outcome.TRANSIENT: Step.FAIL,
            Outcome.CAPACITY: Step.FAIL,
            Outcome.REFUSED: Step.FAIL,
            Outcome.PROTOCOL: Step.FAIL,
            Outcome.ACCOUNT: Step.FAIL,
            Outcome.UNAVAILABLE: Step.FAIL,
            Outcome.BROKEN: Step.FAIL,
            Outcome.DISK: Step.STOP_RUN,
            Outcome.FILE: Step.STOP_RUN,
        },
    ),
    **_rows(
        Phase.CANCEL,
        {  # cancel is best effort: whatever it answers, polling tells how the prediction ends
            Outcome.OK: Step.POLL_ON,
            Outcome.NOT_FOUND: Step.POLL_ON,
            Outcome.UNSENT: Step.POLL_ON,
            Outcome.TRANSIENT: Step.POLL_ON,
            Outcome.CAPACITY: Step.POLL_ON,
            Outcome.REFUSED: Step.POLL_ON,
            Outcome.PROTOCOL: Step.POLL_ON,
            Outcome.ACCOUNT: Step.POLL_ON,
            Outcome.UNAVAILABLE: Step.POLL_ON,
            Outcome.BROKEN: Step.POLL_ON,
        },
    ),
}


def decide(phase: Phase, outcome: Outcome) -> Step:
    """The step after ``outcome`` in ``phase``; IllegalMove if the table has none."""
    try:
        return TABLE[phase, outcome]
    except KeyError:
        raise IllegalMove(f"no step after {outcome.value} in {phase.value}") from None


def classify(exc: Exception) -> Outcome:
    """The outcome an error stands for. Raises the error itself when it is not one of ours
    (a bug elsewhere must not be mistaken for an answer)."""
    match exc:
        case StopRequested():
            return Outcome.STOPPED
        case AmbiguousCreateError():
            return Outcome.AMBIGUOUS
        case TransportError():
            return Outcome.UNSENT
        case AccountError():
            return Outcome.ACCOUNT
        case CapacityError():
            return Outcome.CAPACITY
        case NotFoundError():
            return Outcome.NOT_FOUND
        case ApiBrokenError():
            return Outcome.BROKEN
        case ApiProtocolError():
            return Outcome.PROTOCOL
        case ApiUnavailableError():
            return Outcome.UNAVAILABLE
        case DownloadError(status=status) if status in GONE:
            return Outcome.GONE
        case DownloadError():
            return Outcome.TRANSFER
        case ApiStatusError() | TransferError():
            return Outcome.REFUSED if permanent(exc) else Outcome.TRANSIENT
        case StorageError():
            return Outcome.DISK if disk_wide(exc) else Outcome.FILE
    raise exc


def permanent(exc: Exception) -> bool:
    """A refusal that asking again will not change: a 4xx other than 408 (timeout) and 429."""
    status = getattr(exc, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def disk_wide(exc: StorageError) -> bool:
    """Whether a storage error concerns the whole disk (full, read-only), not one path."""
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, OSError) and cause.errno in DISK_ERRNOS


# -- counted rules ---------------------------------------------------------------------------


def leave_after_failures(failures: int, most: int) -> bool:
    """After ``most`` failures that created nothing, the item is left pending for the next run
    (never failed for a network reason)."""
    return failures > most


def fail_after_refusals(refusals: int, most: int) -> bool:
    """The same refusal to ``most`` polls in a row: the server will not tell us more."""
    return refusals >= most


def missing_for_good(missing_for: float, lost_after: float, listed: bool) -> bool:
    """A prediction the server has not known for ``lost_after`` seconds and that its
    executions list does not show is lost."""
    return missing_for >= lost_after and not listed
