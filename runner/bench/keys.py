"""``python -m runner.bench.keys``: two API keys against one, on the time-compressed simulator.

The same batch (``ITEMS_KEYS`` items of the bench scenario: run times ~200 s compressed 100x,
each account capped at 10 in flight and 60 requests per 60 s) runs twice through
``check_and_run``, each time on a fresh simulator with the same seed: once with one key, once
with two (the simulator gives each key its own account). The figure is the throughput ratio,
makespan with one key over makespan with two, measured in this one run, against the ideal
ratio of the two runs' oracle makespans; the target is at least ``TARGET_KEYS_SHARE`` of it.
The simulator's own per-account counters check that each key kept its own cap and window and
that no request about a prediction went out with the other key.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner.batch import check_and_run
from runner.bench import (
    KEY,
    LIMITS,
    SCENARIO,
    SCENARIO_LIMIT,
    SLOTS,
    busiest_window,
    oracle_makespan,
)
from runner.bench.clients import bench_manifest, requests_for, upload_images
from runner.config import RunConfig
from runner.keys import fingerprint
from runner.simulator import Simulator

#: Items per run: twenty waves on one key's ten slots, ten on two keys' twenty.
ITEMS_KEYS = 200
#: Two keys must finish the batch at least this share of the ideal speed-up: the oracle's,
#: which list-schedules each run's actual run times on its slots (10, or 20) as if every end
#: were known at once (the slowest predictions of the last wave bound both).
TARGET_KEYS_SHARE = 0.9
SECOND_KEY = "bench-key-two"


@dataclass(frozen=True)
class KeysFigures:
    keys: int
    makespan: float
    oracle: float  # the run's own run times list-scheduled on its slots
    failed: int
    peak_per_key: tuple[int, ...]  # the most in flight on each key's account
    busiest_per_key: tuple[int, ...]  # the most requests of each account in any window
    refused: int  # 429s of every account (cap and rate)
    foreign: int  # requests about a prediction sent with another key than its creator's


async def measure(keys: tuple[str, ...], work: Path) -> KeysFigures:
    """Run the batch on ``keys`` against a fresh simulator; its figures."""
    async with Simulator(SCENARIO) as sim:
        urls = await upload_images(sim.base_url)
        await asyncio.sleep(SCENARIO.rate_window)  # the setup's presigns leave the window
        manifest = bench_manifest(requests_for(urls, ITEMS_KEYS), work)
        config = RunConfig(
            manifest_path=manifest,
            output_dir=work / "out",
            api_base=sim.base_url,
            api_key=keys[0],
            more_api_keys=keys[1:],
            limits=LIMITS,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await check_and_run(config)
        makespan = loop.time() - started
        assert outcome.result is not None, "the bench's batch passes its checks"
        counts = outcome.result.summary["counts"]
        accounts = [sim.stats.accounts[fingerprint(key)] for key in keys]
        ended = sorted(
            (c for c in sim.stats.completions.values() if c.status != "cancelled"),
            key=lambda c: c.created_at,
        )
        run_times = [c.visible_at - c.created_at for c in ended]
        return KeysFigures(
            keys=len(keys),
            makespan=makespan,
            oracle=oracle_makespan(run_times, SLOTS * len(keys)),
            failed=int(counts["failed"] + counts["pending"] + counts["running"]),
            peak_per_key=tuple(account.max_in_flight for account in accounts),
            busiest_per_key=tuple(
                busiest_window([t for t, _ in account.api_requests], SCENARIO.rate_window)
                for account in accounts
            ),
            refused=sum(account.refused_cap + account.refused_rate for account in accounts),
            foreign=sum(account.foreign_lookups for account in accounts),
        )


async def measure_both() -> tuple[KeysFigures, KeysFigures]:
    with tempfile.TemporaryDirectory(prefix="i2v-bench-keys-") as tmp:
        figures = []
        for keys in ((KEY,), (KEY, SECOND_KEY)):
            work = Path(tmp) / f"keys-{len(keys)}"
            work.mkdir()
            print(f"running the batch on {len(keys)} key(s) ...", file=sys.stderr, flush=True)
            figures.append(await measure(keys, work))
    return figures[0], figures[1]


def verdict(one: KeysFigures, two: KeysFigures) -> list[tuple[str, bool, str]]:
    """The checks of the two runs: (what, passed, the figure)."""
    speedup, ideal = one.makespan / two.makespan, one.oracle / two.oracle
    return [
        (
            f"two keys >= {TARGET_KEYS_SHARE:.0%} of the ideal speed-up over one",
            speedup >= TARGET_KEYS_SHARE * ideal,
            f"{speedup:.2f}x of {ideal:.2f}x ({speedup / ideal:.0%})",
        ),
        (
            f"each key within its own cap ({SLOTS}) and window ({SCENARIO_LIMIT}/window)",
            all(peak <= SLOTS for peak in one.peak_per_key + two.peak_per_key)
            and all(b <= SCENARIO_LIMIT for b in one.busiest_per_key + two.busiest_per_key)
            and one.refused + two.refused == 0,
            f"peaks {one.peak_per_key} / {two.peak_per_key}, busiest windows "
            f"{one.busiest_per_key} / {two.busiest_per_key}, {one.refused + two.refused} 429s",
        ),
        (
            "every prediction asked about with the key that created it",
            one.foreign + two.foreign == 0,
            f"{one.foreign + two.foreign} foreign lookups",
        ),
        ("every item rendered", one.failed + two.failed == 0, f"{one.failed + two.failed}"),
    ]


def rows(one: KeysFigures, two: KeysFigures) -> str:
    """The figures of the two runs, as printed."""
    lines = [
        f"keys vs one: {ITEMS_KEYS} items, each key {SLOTS} in flight and "
        f"{SCENARIO_LIMIT} requests per window",
        f"  1 key:  makespan {one.makespan:6.1f} s  (oracle {one.oracle:6.1f} s)",
        f"  2 keys: makespan {two.makespan:6.1f} s  (oracle {two.oracle:6.1f} s)  "
        f"{one.makespan / two.makespan:.2f}x the throughput",
    ]
    return "\n".join(lines)


def report(one: KeysFigures, two: KeysFigures) -> tuple[str, bool]:
    """The printed rows and checks, and whether every check passed."""
    lines = [rows(one, two)]
    checks = verdict(one, two)
    lines += [f"{'PASS' if ok else 'FAIL'}  {what}: {figure}" for what, ok, figure in checks]
    return "\n".join(lines), all(ok for _, ok, _ in checks)


def main() -> int:
    text, passed = report(*asyncio.run(measure_both()))
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
