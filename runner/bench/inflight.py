"""A thousand in flight: the runner's CPU per API request and how late its polls go.

``python -m runner.bench.inflight`` runs one batch of ``ITEMS`` items with ``--concurrency
1000`` and a rate of 1,000,000 requests a minute against the time-compressed simulator (an
account that takes 1,000 in flight, run times like the real service's, compressed ``SCALE``
times), and prints two figures against the issue's targets:

- **CPU per API request**: the runner process's CPU time (every thread: the event loop, the
  ledger's fsyncs, the downloads) from its first API request to its last video recorded,
  divided by the API requests the simulator counted in that run. The simulator runs in a
  child process of its own, so its CPU is not counted; the checks before the run and the
  results written after it are not either (they are per item, not per request).
- **p95 poll lag**: for each poll, the time from when the engine's own poll schedule made it
  due (``PollDue.due``: ``policy.next_poll_at`` or a back-off after a failed poll, moved to
  the nearest tick by ``policy.on_tick``) to when the request window let it go (the
  ``RequestSent`` of its ``GET /v1/prediction/<id>``), as a share of the poll interval
  (``poll_min``, the schedule's step). Both times are read on the event loop's clock by the
  engine and the window themselves, not guessed from outside; the lag is what a busy event
  loop (or a slow window) adds to the schedule. (The move to the tick, at most half of
  ``policy.TICK`` of the step either way, is part of the schedule, not of the lag.)

The simulator's own counts cross-check the run: every item rendered, none created twice, the
peak in flight it saw.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.bench import KEY, SCRATCH
from runner.config import Limits, RunConfig
from runner.events import Event, ItemChanged, PollDue, RequestSent
from runner.jobs import JobState
from runner.simulator import SimConfig

#: Time compression: a 200 s video takes 20 s, the 5 s poll step is 0.5 s. The figures are
#: per request and a share of the poll step, so they compare across compressions; at 10x a
#: thousand in flight make about a thousand requests a second.
SCALE = 10.0
IN_FLIGHT = 1000
#: Two waves of a thousand: the second is created as the first ends, so the window holds
#: creates, polls and downloads at once, as a long batch does.
ITEMS = 2000
RATE = 1_000_000  # per 60 s: the window never holds a request back, the event loop does
TARGET_CPU_MS = 0.3
TARGET_LAG_SHARE = 0.03

SIM = SimConfig(
    concurrency=IN_FLIGHT,
    runtime_mean=200.0,
    runtime_min=150.0,
    runtime_max=300.0,
    outlier_rate=0.0,  # no slow outliers: the run ends with its last wave, not a long tail
    queue_delay=1.0,
    status_quantum=5.0,
    max_side=64,
    video_seconds=1.0,
    seed=2026,
).scaled(SCALE)

LIMITS = Limits(
    concurrency=IN_FLIGHT,
    rate_limit=RATE,
    rate_window=60.0 / SCALE,
    poll_min=5.0 / SCALE,
    expected_runtime=200.0 / SCALE,
    item_timeout=1800.0 / SCALE,
    cancel_grace=60.0 / SCALE,
    reconcile_settle=120.0 / SCALE,
    fault_wait=0.5 / SCALE,
    request_timeout=30.0,
    download_timeout=60.0,
)


@dataclass
class Meter:
    """The subscriber that pairs each ``PollDue`` with its poll's ``RequestSent`` and reads
    the process's CPU clock at the first request and at each video recorded."""

    lags: list[float] = field(default_factory=list)
    sent: int = 0
    cpu_first: float | None = None
    cpu_last: float | None = None
    wall_first: float | None = None
    wall_last: float | None = None
    _due: dict[str, float] = field(default_factory=dict)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RequestSent):
            self.sent += 1
            if self.cpu_first is None:
                self.cpu_first, self.wall_first = time.process_time(), time.perf_counter()
            method, _, path = event.what.partition(" ")
            if method == "GET" and path.startswith("/v1/prediction/"):
                due = self._due.pop(path.removeprefix("/v1/prediction/"), None)
                if due is not None:
                    self.lags.append(event.at - due)
        elif isinstance(event, PollDue):
            self._due[event.prediction_id] = event.due
        elif isinstance(event, ItemChanged) and event.state is JobState.DOWNLOADED:
            self.cpu_last, self.wall_last = time.process_time(), time.perf_counter()


@dataclass(frozen=True)
class InFlightFigures:
    items: int
    done: int
    requests: int  # API requests the simulator counted during the run
    creates: int
    peak_in_flight: int  # as the simulator saw it
    cpu_seconds: float  # the runner's, first request to last video
    wall_seconds: float
    sim_cpu_seconds: float
    polls: int
    p50_lag: float
    p95_lag: float
    max_lag: float

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.requests)

    @property
    def p95_lag_share(self) -> float:
        return self.p95_lag / LIMITS.poll_min


# -- the simulator, in a process of its own ----------------------------------------------------


async def serve() -> None:
    """The child (``--serve``): serve ``SIM``, print its base URL, then answer each line read
    ("stats") with one JSON line of the counters and the child's CPU seconds so far, until
    stdin ends."""
    from runner.simulator import Simulator

    loop = asyncio.get_running_loop()
    async with Simulator(SIM) as sim:
        print(sim.base_url, flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime
            print(json.dumps({"stats": sim.stats.summary(), "cpu": cpu}), flush=True)


class SimProcess:
    """``with SimProcess() as sim``: ``SIM`` served by a child process (its CPU is its own);
    ``sim.base_url``, ``await sim.stats()``."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> SimProcess:
        command = [sys.executable, "-m", "runner.bench.inflight", "--serve"]
        self._child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._child.stdout is not None
        self.base_url = self._child.stdout.readline().strip()
        if not self.base_url:
            raise RuntimeError("the simulator's process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._child is not None and self._child.stdin is not None
        self._child.stdin.close()
        try:
            self._child.wait(10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()

    async def stats(self) -> tuple[dict[str, Any], float]:
        """The simulator's counters (``SimStats.summary``) and its CPU seconds so far."""
        assert self._child is not None
        child = self._child
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("stats\n")
        child.stdin.flush()
        answer = json.loads(await asyncio.to_thread(child.stdout.readline))
        return answer["stats"], float(answer["cpu"])


# -- the run ------------------------------------------------------------------------------------


async def measure(work: Path, items: int = ITEMS) -> InFlightFigures:
    """Run ``items`` items at a thousand in flight in ``work`` and measure them."""
    from runner.batch import check_and_run
    from runner.bench.clients import bench_manifest, requests_for, upload_images

    with SimProcess() as sim:
        urls = await upload_images(sim.base_url)
        manifest = bench_manifest(requests_for(urls, items), work)
        config = RunConfig(
            manifest_path=manifest,
            output_dir=work / "out",
            api_base=sim.base_url,
            api_key=KEY,
            limits=LIMITS,
        )
        before, sim_cpu_before = await sim.stats()
        meter = Meter()
        outcome = await check_and_run(config, on_event=meter)
        after, sim_cpu_after = await sim.stats()
    assert outcome.result is not None, "the batch passes its checks"
    counts = outcome.result.summary["counts"]
    lags = sorted(meter.lags)
    q = statistics.quantiles(lags, n=20) if len(lags) >= 2 else [float("nan")] * 19
    return InFlightFigures(
        items=items,
        done=int(counts["done"]),
        requests=after["api_requests"] - before["api_requests"],
        creates=after["creates"] - before["creates"],
        peak_in_flight=after["max_in_flight"],
        cpu_seconds=(meter.cpu_last or 0.0) - (meter.cpu_first or 0.0),
        wall_seconds=(meter.wall_last or 0.0) - (meter.wall_first or 0.0),
        sim_cpu_seconds=sim_cpu_after - sim_cpu_before,
        polls=len(lags),
        p50_lag=statistics.median(lags) if lags else float("nan"),
        p95_lag=q[18],
        max_lag=lags[-1] if lags else float("nan"),
    )


def report(f: InFlightFigures) -> str:
    return (
        f"{f.items:,} items, {IN_FLIGHT:,} in flight (simulator saw {f.peak_in_flight:,}), "
        f"{f.requests:,} API requests in {f.wall_seconds:.1f} s: runner CPU {f.cpu_seconds:.1f} s "
        f"= {f.cpu_ms_per_request:.3f} ms per request (simulator {f.sim_cpu_seconds:.1f} s, not "
        f"counted); {f.polls:,} polls, lag p50 {1000 * f.p50_lag:.1f} ms, p95 "
        f"{1000 * f.p95_lag:.1f} ms = {f.p95_lag_share:.1%} of the {LIMITS.poll_min:g} s poll "
        f"step, max {1000 * f.max_lag:.0f} ms; {f.done:,} done, {f.creates - f.items} created "
        "twice"
    )


async def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        await serve()
        return 0
    items = int(argv[0]) if argv else ITEMS
    with tempfile.TemporaryDirectory(prefix="i2v-inflight-", dir=SCRATCH) as tmp:
        figures = await measure(Path(tmp), items)
    print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
