"""An in-memory Eachlabs API and CDN on the event loop's clock, for tests of the engine.

``FakeApi`` and ``FakeFetcher`` implement ``runner.api.port``'s ``Api`` and ``VideoFetcher``
with no socket and no server, on ``anyio.current_time()`` (looptime's virtual clock in the
scheduler's tests). The simulator stays the end-to-end layer (the wire, the real client, the
hostile server); this is only what the engine sees through the port.

What a prediction does is its ``Script``, picked per create from the input and the attempt:
how long it runs, how it ends, what it costs, whether polls answer 404 for a while, whether
the create's answer is lost after it was made. What one request does is ``fault(call)``: an
error of ``runner.errors`` raised instead of an answer, before anything is made. Every
request takes a slot of the shared ``RateLimiter`` as the real client's do, and ``calls``
logs them all.

Polls are answered by ``protocol.parse_prediction`` of an envelope shaped like the API's (as
the simulator's ``wire.envelope``), not by hand-built ``Prediction`` values, so the fake cannot
tell the engine anything the real client could not.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from runner.api import protocol
from runner.api.ratelimit import (
    PRIORITY_CREATE,
    PRIORITY_OTHER,
    PRIORITY_POLL,
    Priority,
    RateLimiter,
)
from runner.api.transfers import Downloaded
from runner.errors import (
    AmbiguousCreateError,
    CapacityError,
    DownloadError,
    NotFoundError,
    RunnerError,
    StopRequested,
)
from runner.simulator.executions import execution_status
from runner.simulator.wire import rfc3339
from tests.boxes import mp4


@dataclass(frozen=True)
class Script:
    """How one prediction behaves on the fake server."""

    runtime: float = 200.0  # virtual seconds from its create to its end; inf: never ends
    error: str | None = None  # ends in this error (None: succeeds with a video)
    error_code: str | None = None
    retryable: bool = False
    cost: float = 0.30  # ``metrics.cost`` of a success (a failure costs nothing)
    unknown_for: float = 0.0  # polls answer 404 for this long after the create
    answer_lost: bool = False  # the create makes it, then raises AmbiguousCreateError


#: A prediction that runs until it is cancelled.
NEVER_ENDS = Script(runtime=math.inf)


def succeeds(_input: Mapping[str, Any], _attempt: int) -> Script:
    """The default script: every prediction succeeds after the default runtime."""
    return Script()


@dataclass(frozen=True)
class Call:
    """One request the fake received: ``method`` (create, get, cancel, executions, upload),
    ``target`` (the model of a create or a lookup, the id of a get or a cancel), ``granted``
    (when the window let it go), ``at`` (when it reached the server: later for a create whose
    write-ahead record took a while) and ``nth`` (its number among its method's calls, from 1).
    """

    method: str
    target: str
    granted: float
    at: float
    nth: int


@dataclass
class Run:
    """One prediction on the fake server."""

    id: str
    model: str
    input: dict[str, Any]
    script: Script
    created: float  # loop time
    created_wall: datetime  # what executions lists and filters by (the real clock, as the API)
    cancelled_at: float | None = None

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.created + self.script.runtime:
            return "processing"
        return "error" if self.script.error else "success"

    def output(self, now: float, url: str) -> object:
        status = self.status(now)
        if status == "success":
            return [url]
        if status == "error":
            return {
                "error": "Execution failed",
                "error_code": self.script.error_code,
                "error_message": self.script.error,
                "retryable": self.script.retryable,
            }
        return None

    def cost(self, now: float) -> float:
        return self.script.cost if self.status(now) == "success" else 0.0


class FakeApi:
    """The API of one account, in memory (see the module's docstring)."""

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        script: Callable[[Mapping[str, Any], int], Script] = succeeds,
        fault: Callable[[Call], RunnerError | None] | None = None,
        listed_after: float = 0.0,
        latency: float = 0.0,
        prefix: str = "pred",
    ) -> None:
        """``script(input, attempt)`` picks each new prediction's Script (``attempt``: creates
        of that input so far, this one included); ``fault(call)`` may refuse any request;
        ``executions`` lists a prediction ``listed_after`` s after its create; each answer
        takes ``latency`` s, holding its place in the window like a real one. Prediction ids
        start with ``prefix`` (two accounts' ids must differ)."""
        self.limiter = limiter
        self.script = script
        self.fault = fault
        self.listed_after = listed_after
        self.latency = latency
        self.prefix = prefix
        self.calls: list[Call] = []
        self.runs: dict[str, Run] = {}
        self.urls: dict[str, str] = {}  # every output URL handed out -> its prediction id
        self.peak = 0  # the most predictions running at once

    def count(self, method: str) -> int:
        return sum(1 for call in self.calls if call.method == method)

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        target: str,
        priority: Priority,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        abandon: anyio.Event | None = None,
    ) -> AsyncIterator[float]:
        """One request in one slot of the window: recorded, maybe refused by ``fault``,
        answered after ``latency``. Yields the loop time the server handles it at."""
        async with self.limiter.slot(priority, abandon=abandon) as slot:
            if abandon is not None and abandon.is_set():
                raise StopRequested("the run is stopping: the request was not sent")
            if before_send is not None:
                await before_send()
            now = anyio.current_time()
            call = Call(method, target, slot.granted_at, now, self.count(method) + 1)
            self.calls.append(call)
            await anyio.sleep(self.latency)
            error = self.fault(call) if self.fault is not None else None
            if error is not None:
                slot.refused = isinstance(error, CapacityError)
                raise error
            yield anyio.current_time()

    def _known(self, prediction_id: str, now: float) -> Run:
        run = self.runs.get(prediction_id)
        if run is None or now < run.created + run.script.unknown_for:
            raise NotFoundError(404, "prediction not found")
        return run

    def _url(self, run: Run) -> str:
        """A fresh output URL, as each poll of a success hands out (the old ones may expire)."""
        url = f"https://cdn.fake.invalid/{run.id}.mp4?sig={len(self.urls)}"
        self.urls[url] = run.id
        return url

    async def create(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        abandon: anyio.Event | None = None,
    ) -> str:
        async with self._request(
            "create", model, PRIORITY_CREATE, before_send=before_send, abandon=abandon
        ) as now:
            attempt = 1 + sum(1 for run in self.runs.values() if run.input == input)
            run = Run(
                id=f"{self.prefix}-{len(self.runs) + 1:04d}",
                model=model,
                input=dict(input),
                script=self.script(input, attempt),
                created=now,
                created_wall=datetime.now(UTC),
            )
            self.runs[run.id] = run
            running = sum(1 for run in self.runs.values() if run.status(now) == "processing")
            self.peak = max(self.peak, running)
        if run.script.answer_lost:
            raise AmbiguousCreateError(f"create for {model}: the answer was lost")
        return run.id

    async def get(
        self, prediction_id: str, *, priority: Priority = PRIORITY_POLL
    ) -> protocol.Prediction:
        async with self._request("get", prediction_id, priority) as now:
            run = self._known(prediction_id, now)
            end = min(now, run.created + run.script.runtime)
            envelope = {
                "id": run.id,
                "input": run.input,
                "status": run.status(now),
                "output": run.output(now, self._url(run)),
                "logs": None,
                "metrics": {"predict_time": end - run.created, "cost": run.cost(now)},
            }
        return replace(protocol.parse_prediction(envelope, prediction_id), sent_at=now)

    async def cancel(self, prediction_id: str) -> None:
        async with self._request("cancel", prediction_id, PRIORITY_OTHER) as now:
            run = self._known(prediction_id, now)
            if run.status(now) == "processing":
                run.cancelled_at = now

    async def executions(self, **filters: str) -> list[dict[str, Any]]:
        """Rows shaped like ``GET /v1/executions``' (no input echo), newest first, filtered by
        ``model``, ``from`` and ``to`` (RFC 3339) as the API does; every page at once."""
        async with self._request("executions", filters.get("model", ""), PRIORITY_OTHER) as now:
            since, until = (filters.get(name) for name in ("from", "to"))
            return [
                {
                    "id": run.id,
                    "model": run.model,
                    "status": execution_status(run.status(now)),
                    "created_at": rfc3339(run.created_wall.timestamp()),
                    "execution_cost": run.cost(now),
                    "output": self._url(run) if run.status(now) == "success" else None,
                }
                for run in reversed(self.runs.values())
                if now >= run.created + self.listed_after
                and filters.get("model") in (None, run.model)
                and (since is None or run.created_wall >= datetime.fromisoformat(since))
                and (until is None or run.created_wall <= datetime.fromisoformat(until))
            ]

    async def upload(self, data: bytes, content_type: str) -> str:
        async with self._request("upload", "", PRIORITY_CREATE):
            return f"https://uploads.fake.invalid/{hashlib.sha256(data).hexdigest()[:16]}"


@dataclass(frozen=True)
class Fetch:
    """One download asked of the fake CDN: the URL, the item's label, when it began."""

    url: str
    label: str | None
    at: float


def gone(url: str, status: int = 403) -> DownloadError:
    """What ``transfers.fetch_video`` raises for an output URL that expired or vanished."""
    return DownloadError(f"the output URL answered {status}", status=status)


class FakeFetcher:
    """The CDN of a FakeApi: serves the output URLs it handed out, each a small real MP4
    (``tests.boxes.mp4``) written to ``dest`` after ``seconds`` of virtual transfer.

    ``fault(fetch)`` may fail a download with the error ``fetch_video`` would raise (``gone``
    for an expired URL); a URL the API never handed out answers 404 like a real CDN.
    """

    def __init__(
        self,
        api: FakeApi,
        *,
        seconds: float = 2.0,
        fault: Callable[[Fetch], RunnerError | None] | None = None,
    ) -> None:
        self.api = api
        self.seconds = seconds
        self.fault = fault
        self.fetches: list[Fetch] = []

    def of(self, label: str) -> list[Fetch]:
        return [fetch for fetch in self.fetches if fetch.label == label]

    async def __call__(
        self,
        url: str,
        dest: Path,
        *,
        seconds: float,
        stall: float,
        max_bytes: int,
        label: str | None,
        wait: float,
    ) -> Downloaded:
        fetch = Fetch(url, label, anyio.current_time())
        self.fetches.append(fetch)
        await anyio.sleep(min(self.seconds, seconds))
        error = self.fault(fetch) if self.fault is not None else None
        if url not in self.api.urls:
            error = gone(url, 404)
        if error is not None:
            raise error
        data = mp4()
        assert len(data) <= max_bytes
        await anyio.to_thread.run_sync(dest.write_bytes, data)
        return Downloaded(dest, len(data), hashlib.sha256(data).hexdigest())
