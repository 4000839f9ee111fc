"""The query of ``GET /v1/executions``: its filters, its status words, and the page it selects.

Pure: the account (``account.Account.executions``) decides which predictions are listed by now and
from when; this module parses the query and filters, orders and pages them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.simulator.lifecycle import Run

#: The status words ``GET /v1/executions`` accepts in its ``status`` filter (lowercase only; its
#: rows also say ``cancelled``, which the filter does not take).
EXECUTION_STATUSES = frozenset({"created", "starting", "success", "error"})
#: ``total_count`` stops counting here and ``total_capped`` turns true (the contract's lower bound).
EXECUTIONS_COUNT_CAP = 1000


def execution_status(status: str) -> str:
    """A prediction status in the executions vocabulary: ``processing`` shows as ``starting``
    (the list has no word for it); the others as they are."""
    return "starting" if status == "processing" else status


class QueryError(ValueError):
    """A query parameter of ``GET /v1/executions`` is not acceptable (the API answers 400)."""


@dataclass(frozen=True)
class ExecutionsQuery:
    model: str | None = None
    statuses: frozenset[str] | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, inclusive
    limit: int = 20
    offset: int = 0


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be between {low} and {high}")
    return value


def _time_param(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise QueryError(f"{name} must be an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise QueryError(f"{name} must be an RFC 3339 timestamp with a time zone")
    return when.timestamp()


def parse_executions_query(params: Mapping[str, str]) -> ExecutionsQuery:
    """The filters of ``GET /v1/executions``; raises QueryError for anything the API refuses.

    ``limit`` is 1-100 (default 20), ``offset`` at least 0, ``status`` a comma list of
    EXECUTION_STATUSES (lowercase: ``Success`` is refused), ``from``/``to`` RFC 3339 with a zone.
    """
    statuses: frozenset[str] | None = None
    if params.get("status"):
        words = {w.strip() for w in params["status"].split(",") if w.strip()}
        unknown = sorted(words - EXECUTION_STATUSES)
        if unknown or not words:
            raise QueryError(f"invalid status {', '.join(unknown) or params['status']!r}")
        statuses = frozenset(words)
    return ExecutionsQuery(
        model=params.get("model") or None,
        statuses=statuses,
        since=_time_param(params, "from"),
        until=_time_param(params, "to"),
        limit=_int_param(params, "limit", 20, 1, 100),
        offset=_int_param(params, "offset", 0, 0, 10**9),
    )


def select_executions(
    runs: Iterable[Run],
    query: ExecutionsQuery,
    now: float,
    *,
    earliest: float | None = None,
) -> tuple[list[Run], int]:
    """``(page, total)``: the predictions matching ``query``, newest first, sliced by offset and
    limit, and how many matched in all. ``earliest`` (epoch seconds) stands in for a ``from``
    the query does not give."""
    since = query.since if query.since is not None else earliest
    matched = [
        p
        for p in runs
        if (query.model is None or p.model == query.model)
        and (query.statuses is None or execution_status(p.status(now)) in query.statuses)
        and (since is None or p.created_wall >= since)
        and (query.until is None or p.created_wall <= query.until)
    ]
    matched.sort(key=lambda p: p.created, reverse=True)
    return matched[query.offset : query.offset + query.limit], len(matched)
