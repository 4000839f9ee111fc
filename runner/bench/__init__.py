"""``make bench``: the scheduler against the built-in simulator, beside two reference clients.

Scenario (time-compressed by SCALE, every time constant alike): 200 items; run times like the
real service (mean ~200 s, 150-300 s spread, a few slow outliers, status quantised to 5 s);
the account's in-flight cap of 10; 60 API requests per 60 s enforced by the simulator as a
sliding window. The clients run one after the other, each on a fresh simulator with the same
seed:

- ``seed-loop``: the vendor page's loop made concurrent (asyncio, semaphore of 10, poll every
  1 s, no request window; a refused create fails the item, as the page's code raises);
- ``sdk-0.5s``: a 0.5 s poller in the style of popular prediction SDKs (backs off on 429);
- ``runner``: this project's scheduler, through ``run_batch``;
- ``runner-rl``: the same against the simulator's ``realistic`` profile (a few percent of
  transient faults on every endpoint): every item must still be rendered, none created twice.

Every figure is measured in this one run and printed as a ratio, then the targets as
pass/fail lines. The oracle makespan list-schedules the simulator's actual run times on the
10 slots, as if each completion were known the instant it happened.

This module holds the scenario, the figures and their arithmetic; ``clients`` the clients
compared; ``__main__`` the measuring and the verdict.
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from pathlib import Path

from runner.config import Limits
from runner.simulator import PROFILES, SimConfig

SCALE = 100.0
ITEMS = 200
SLOTS = 10
SEED = 2026
KEY = "bench-key"
IMAGES = Path(__file__).resolve().parents[2] / "manifests" / "images"

SCENARIO_LIMIT = 60
SETUP_TRIES = 5
SCENARIO = SimConfig(
    concurrency=SLOTS,
    rate_limit=SCENARIO_LIMIT,
    rate_window=60.0,
    runtime_mean=200.0,
    runtime_min=150.0,
    runtime_max=300.0,
    outlier_rate=0.03,
    outlier_factor=2.0,
    queue_delay=1.0,
    status_quantum=5.0,
    max_side=64,
    video_seconds=1.0,
    seed=SEED,
).scaled(SCALE)
#: The same scenario against the simulator's realistic profile: a few percent of transient
#: faults on every endpoint, creates that create but answer 500, cut downloads.
REALISTIC = dataclasses.replace(SCENARIO, **PROFILES["realistic"])

#: The client's own constants, compressed alike (5 s poll floor, 60/60, 200 s prior).
LIMITS = Limits(
    concurrency=SLOTS,
    rate_limit=60,
    rate_window=60.0 / SCALE,
    poll_min=5.0 / SCALE,
    expected_runtime=200.0 / SCALE,
    item_timeout=1800.0 / SCALE,
    cancel_grace=60.0 / SCALE,
    reconcile_settle=120.0 / SCALE,
    fault_wait=0.5 / SCALE,
    request_timeout=10.0,
    download_timeout=30.0,
)

#: The ledger's fsyncs are real time, not compressed: keep them off a slow disk where possible.
SCRATCH = "/dev/shm"
TARGET_MAKESPAN = 1.03
TARGET_P95_DELAY = 0.05
TARGET_SECONDS = 180.0


@dataclass
class Figures:
    name: str
    makespan: float
    oracle: float
    requests_per_item: float
    refused_cap: int
    refused_rate: int
    busiest_window: int
    p50_delay: float
    p95_delay: float
    peak_in_flight: int
    failed: int
    duplicates: int  # creates beyond one per prompt: videos paid for twice

    @property
    def ratio(self) -> float:
        return self.makespan / self.oracle


def oracle_makespan(run_times: list[float], slots: int) -> float:
    """List-schedule run times (in creation order) on ``slots``: each starts when one is free."""
    free = [0.0] * slots
    end = 0.0
    for run_time in run_times:
        start = heapq.heappop(free)
        heapq.heappush(free, start + run_time)
        end = max(end, start + run_time)
    return end


def busiest_window(times: list[float], length: float) -> int:
    """Most requests in any window of ``length`` (every window starting at a request)."""
    ordered = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + length:
            j += 1
        best = max(best, j - i)
    return best
