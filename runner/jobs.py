"""Item identity, prediction ids and the job lifecycle: pure, no I/O.

An item's *key* is a stable hash of its model and normalised input, where a local image counts
by the sha256 of its content: reordering a manifest or moving an image file changes nothing,
editing a prompt changes exactly that item's key.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

#: What stands in the input in place of a local image's URL when the key is computed.
LOCAL_IMAGE_PREFIX = "sha256:"


#: What a prediction id may look like before it is put in a URL path: the API's ids are UUIDs;
#: anything with a slash, dot-dot, query or escape characters is refused.
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def valid_id(value: object) -> bool:
    """Whether ``value`` is a plain prediction id, safe to use in a URL path."""
    return isinstance(value, str) and _PLAIN_ID.fullmatch(value) is not None


def item_key(model: str, input: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit hash of ``model`` and ``input`` (keys sorted, compact JSON).

    ``input`` must already carry ``sha256:<hex>`` in place of a local image's future URL.
    """
    canonical = json.dumps(
        {"model": model, "input": input}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class JobState(enum.StrEnum):
    """Where one item stands. The values are the ledger's event names."""

    PENDING = "pending"  # nothing sent yet
    SUBMITTING = "submitting"  # a create was sent; its answer is not recorded yet
    SUBMITTED = "submitted"  # the server gave a prediction id; in flight
    SUCCEEDED = "succeeded"  # the prediction ended in success; the video is not on disk yet
    DOWNLOADED = "downloaded"  # the video is on disk, verified: done
    FAILED = "failed"  # ended in error, cancelled, timed out or was refused


class IllegalTransition(ValueError):
    """A job was asked to move to a state it cannot reach from where it is."""


_S = JobState
_LEGAL: dict[JobState, frozenset[JobState]] = {
    _S.PENDING: frozenset({_S.SUBMITTING, _S.FAILED}),
    _S.SUBMITTING: frozenset({_S.SUBMITTED, _S.PENDING, _S.FAILED}),
    _S.SUBMITTED: frozenset({_S.SUCCEEDED, _S.FAILED}),
    _S.SUCCEEDED: frozenset({_S.DOWNLOADED, _S.FAILED, _S.SUCCEEDED}),
    _S.DOWNLOADED: frozenset({_S.DOWNLOADED, _S.SUCCEEDED, _S.FAILED}),
    _S.FAILED: frozenset({_S.SUBMITTING, _S.FAILED, _S.SUCCEEDED, _S.DOWNLOADED}),
}


def transition(current: JobState, new: JobState) -> JobState:
    """Return ``new`` if a job may move there from ``current``; raise IllegalTransition if not.

    Besides the forward path, the legal moves are the recovery paths: SUBMITTING→PENDING (the
    create provably made nothing), SUCCEEDED→SUCCEEDED and DOWNLOADED/FAILED→SUCCEEDED (a fresh
    URL after the old one expired), DOWNLOADED/FAILED→DOWNLOADED (a lost, corrupt or failed
    download fetched again), FAILED→SUBMITTING (a retryable error, or ``--retry-failed``).
    """
    if new not in _LEGAL[current]:
        raise IllegalTransition(f"a job cannot go from {current.value} to {new.value}")
    return new


def summary_status(state: JobState) -> str:
    """The ``status`` word ``summary.json`` uses for a job state: done|failed|pending|running."""
    if state is JobState.DOWNLOADED:
        return "done"
    if state is JobState.FAILED:
        return "failed"
    if state is JobState.PENDING:
        return "pending"
    return "running"
