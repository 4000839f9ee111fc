"""The decision table, row by row: what the engine does after each outcome in each phase."""

from __future__ import annotations

import errno
import itertools

import pytest

from runner.engine import decisions
from runner.engine.decisions import IllegalMove, Outcome, Phase, Step, classify, decide
from runner.errors import (
    AccountError,
    AmbiguousCreateError,
    ApiBrokenError,
    ApiProtocolError,
    ApiStatusError,
    ApiUnavailableError,
    CapacityError,
    DownloadError,
    LedgerError,
    NotFoundError,
    StopRequested,
    StorageError,
    TransferError,
    TransportError,
)

U, C, P, R, D, F, X = (
    Phase.UPLOAD,
    Phase.CREATE,
    Phase.POLL,
    Phase.RECHECK,
    Phase.DOWNLOAD,
    Phase.REFRESH,
    Phase.CANCEL,
)

#: Every row of the table with the rule it carries out.
ROWS = [
    (U, Outcome.OK, Step.GO_ON, "the image is uploaded: on to the create"),
    (U, Outcome.UNSENT, Step.AGAIN, "no connection: try again, then leave it pending"),
    (U, Outcome.TRANSIENT, Step.AGAIN, "a 5xx from the upload host may pass"),
    (U, Outcome.PROTOCOL, Step.AGAIN, "an unreadable presign answer may pass"),
    (U, Outcome.CAPACITY, Step.AGAIN, "a 429 on the presign: wait and ask again"),
    (U, Outcome.NOT_FOUND, Step.FAIL, "the upload host refused the image"),
    (U, Outcome.REFUSED, Step.FAIL, "a 4xx on the PUT will not change"),
    (U, Outcome.ACCOUNT, Step.STOP_RUN, "a refused account stops submitting"),
    (U, Outcome.UNAVAILABLE, Step.STOP_RUN, "the API is gone: exit 6, item pending"),
    (U, Outcome.BROKEN, Step.STOP_RUN, "the API answers nonsense: exit 7"),
    (U, Outcome.FILE, Step.FAIL, "the image file went away after the checks"),
    (U, Outcome.DISK, Step.STOP_RUN, "the disk fails: exit 5"),
    (C, Outcome.OK, Step.GO_ON, "created: on to polling"),
    (C, Outcome.STOPPED, Step.LEAVE, "a stop before sending: nothing written, stays pending"),
    (C, Outcome.UNSENT, Step.AGAIN, "never reached the server: surely nothing created"),
    (C, Outcome.TRANSIENT, Step.AGAIN, "a 408: the server did not take the request"),
    (C, Outcome.AMBIGUOUS, Step.RECONCILE, "may have created: looked up, never sent blind"),
    (C, Outcome.CAPACITY, Step.WAIT_FOR_ROOM, "the account's cap: wait for one of ours to end"),
    (C, Outcome.NOT_FOUND, Step.FAIL, "no such model: a 4xx that created nothing"),
    (C, Outcome.REFUSED, Step.FAIL, "a 4xx that created nothing"),
    (C, Outcome.ACCOUNT, Step.STOP_RUN, "a refused account stops submitting"),
    (C, Outcome.UNAVAILABLE, Step.STOP_RUN, "the API is gone: exit 6"),
    (C, Outcome.BROKEN, Step.STOP_RUN, "a redirecting or nonsense API: exit 7"),
    (C, Outcome.DISK, Step.STOP_RUN, "the write-ahead record cannot be written"),
    (C, Outcome.FILE, Step.STOP_RUN, "the ledger cannot be written"),
    (P, Outcome.OK, Step.POLL_ON, "polled until the status is terminal"),
    (P, Outcome.NOT_FOUND, Step.MISSING, "the server may not show a new prediction yet"),
    (P, Outcome.UNSENT, Step.POLL_ON, "a network failure never fails the item"),
    (P, Outcome.TRANSIENT, Step.POLL_ON, "a 5xx never fails the item"),
    (P, Outcome.CAPACITY, Step.POLL_ON, "a 429 on a poll: back off"),
    (P, Outcome.REFUSED, Step.POLL_ON, "a 4xx is counted; only many in a row fail it"),
    (P, Outcome.PROTOCOL, Step.POLL_ON, "an unreadable answer is counted like a refusal"),
    (P, Outcome.DEADLINE, Step.CANCEL, "past --item-timeout: cancel, then watch the grace"),
    (P, Outcome.ACCOUNT, Step.STOP_RUN, "a refused account stops the run"),
    (P, Outcome.UNAVAILABLE, Step.STOP_RUN, "the API is gone: exit 6, resumed next run"),
    (P, Outcome.BROKEN, Step.STOP_RUN, "the API answers nonsense: exit 7"),
    (P, Outcome.DISK, Step.STOP_RUN, "the ledger's disk fails: exit 5"),
    (P, Outcome.FILE, Step.STOP_RUN, "the ledger cannot be written: exit 5"),
    (R, Outcome.OK, Step.POLL_ON, "a prediction given up on is running or done after all"),
    (R, Outcome.NOT_FOUND, Step.LEAVE, "still unknown: left, or submitted with --retry-failed"),
    (R, Outcome.UNSENT, Step.LEAVE, "cannot look: left as it was for a later run"),
    (R, Outcome.TRANSIENT, Step.LEAVE, "cannot look: left as it was"),
    (R, Outcome.CAPACITY, Step.LEAVE, "cannot look: left as it was"),
    (R, Outcome.REFUSED, Step.LEAVE, "cannot look: left as it was"),
    (R, Outcome.PROTOCOL, Step.LEAVE, "cannot read the answer: left as it was"),
    (R, Outcome.ACCOUNT, Step.LEAVE, "the creates that follow meet the refusal"),
    (R, Outcome.UNAVAILABLE, Step.STOP_RUN, "the API is gone: exit 6"),
    (R, Outcome.BROKEN, Step.STOP_RUN, "the API answers nonsense: exit 7"),
    (R, Outcome.DISK, Step.STOP_RUN, "the ledger's disk fails"),
    (R, Outcome.FILE, Step.STOP_RUN, "the ledger cannot be written"),
    (D, Outcome.OK, Step.GO_ON, "saved: recorded downloaded"),
    (D, Outcome.GONE, Step.REFRESH_URL, "an expired URL: ask for a fresh one once"),
    (D, Outcome.TRANSFER, Step.FAIL, "the transfer already retried: the item fails"),
    (D, Outcome.FILE, Step.FAIL, "this video cannot be saved; the others can"),
    (D, Outcome.DISK, Step.STOP_RUN, "a full or read-only disk: exit 5"),
    (F, Outcome.OK, Step.GO_ON, "a fresh URL: download again"),
    (F, Outcome.NOT_FOUND, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.UNSENT, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.TRANSIENT, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.CAPACITY, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.REFUSED, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.PROTOCOL, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.ACCOUNT, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.UNAVAILABLE, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.BROKEN, Step.FAIL, "no fresh URL: the download failure stands"),
    (F, Outcome.DISK, Step.STOP_RUN, "the ledger's disk fails"),
    (F, Outcome.FILE, Step.STOP_RUN, "the ledger cannot be written"),
    (X, Outcome.OK, Step.POLL_ON, "cancel asked: polling tells how it ends"),
    (X, Outcome.NOT_FOUND, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.UNSENT, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.TRANSIENT, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.CAPACITY, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.REFUSED, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.PROTOCOL, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.ACCOUNT, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.UNAVAILABLE, Step.POLL_ON, "cancel is best effort: poll on"),
    (X, Outcome.BROKEN, Step.POLL_ON, "cancel is best effort: poll on"),
]


@pytest.mark.parametrize(
    ("phase", "outcome", "step"),
    [row[:3] for row in ROWS],
    ids=[f"{p.value}-{o.value}: {why}" for p, o, _, why in ROWS],
)
def test_each_row(phase: Phase, outcome: Outcome, step: Step) -> None:
    assert decide(phase, outcome) is step


def test_the_rows_above_are_the_whole_table() -> None:
    """A row added to the table without a test here (or one dropped) fails."""
    assert {(p, o) for p, o, _, _ in ROWS} == set(decisions.TABLE)
    assert len(ROWS) == len(decisions.TABLE)


ILLEGAL = [
    pair for pair in itertools.product(Phase, Outcome) if pair not in {(p, o) for p, o, *_ in ROWS}
]


@pytest.mark.parametrize(("phase", "outcome"), ILLEGAL, ids=lambda v: v.value)
def test_every_other_pair_is_an_illegal_move(phase: Phase, outcome: Outcome) -> None:
    with pytest.raises(IllegalMove, match=f"{outcome.value} in {phase.value}"):
        decide(phase, outcome)


# -- the money rules, over the whole table ---------------------------------------------------


def test_a_create_that_may_have_made_a_prediction_is_never_sent_again_blind() -> None:
    steps = {
        decide(phase, Outcome.AMBIGUOUS)
        for phase in Phase
        if (phase, Outcome.AMBIGUOUS) in decisions.TABLE
    }
    assert steps == {Step.RECONCILE}


@pytest.mark.parametrize("outcome", [Outcome.UNSENT, Outcome.TRANSIENT, Outcome.CAPACITY])
@pytest.mark.parametrize("phase", [Phase.UPLOAD, Phase.CREATE, Phase.POLL, Phase.RECHECK])
def test_no_item_fails_for_a_network_reason(phase: Phase, outcome: Outcome) -> None:
    assert decide(phase, outcome) is not Step.FAIL


@pytest.mark.parametrize("outcome", [Outcome.UNAVAILABLE, Outcome.BROKEN, Outcome.DISK])
@pytest.mark.parametrize("phase", [Phase.UPLOAD, Phase.CREATE, Phase.POLL, Phase.RECHECK])
def test_a_gone_api_or_a_failing_disk_stops_the_run_not_the_item(
    phase: Phase, outcome: Outcome
) -> None:
    assert decide(phase, outcome) is Step.STOP_RUN


# -- classify: the one place that asks what class an error is --------------------------------


def _storage(code: int) -> StorageError:
    try:
        raise OSError(code, "no")
    except OSError as cause:
        try:
            raise StorageError("cannot write") from cause
        except StorageError as exc:
            return exc


CLASSES = [
    (StopRequested("stop"), Outcome.STOPPED),
    (AmbiguousCreateError("lost", answered=False), Outcome.AMBIGUOUS),
    (AmbiguousCreateError("nonsense", answered=True), Outcome.AMBIGUOUS),
    (TransportError("refused", sent=False), Outcome.UNSENT),
    (AccountError(401, "unauthorized"), Outcome.ACCOUNT),
    (CapacityError(429, "too many"), Outcome.CAPACITY),
    (NotFoundError(404, "not found"), Outcome.NOT_FOUND),
    (ApiBrokenError("redirected"), Outcome.BROKEN),
    (ApiProtocolError("not json"), Outcome.PROTOCOL),
    (ApiUnavailableError("gone"), Outcome.UNAVAILABLE),
    (DownloadError("expired", status=403), Outcome.GONE),
    (DownloadError("expired", status=410), Outcome.GONE),
    (DownloadError("cut short"), Outcome.TRANSFER),
    (DownloadError("500", status=500), Outcome.TRANSFER),
    (ApiStatusError(400, "bad"), Outcome.REFUSED),
    (ApiStatusError(422, "bad"), Outcome.REFUSED),
    (ApiStatusError(408, "timeout"), Outcome.TRANSIENT),
    (ApiStatusError(503, "busy"), Outcome.TRANSIENT),
    (TransferError("PUT refused", status=403), Outcome.REFUSED),
    (TransferError("PUT 502", status=502), Outcome.TRANSIENT),
    (TransferError("no answer"), Outcome.TRANSIENT),
    (_storage(errno.ENOSPC), Outcome.DISK),
    (_storage(errno.EROFS), Outcome.DISK),
    (_storage(errno.EACCES), Outcome.FILE),
    (LedgerError("torn"), Outcome.FILE),
]


@pytest.mark.parametrize(("exc", "outcome"), CLASSES, ids=lambda v: repr(v)[:40])
def test_classify(exc: Exception, outcome: Outcome) -> None:
    assert classify(exc) is outcome


def test_an_error_that_is_not_an_answer_is_raised_not_classified() -> None:
    with pytest.raises(KeyError):
        classify(KeyError("a bug"))
