"""``python -m runner.bench``: each client on a fresh simulator, its figures, the verdict."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runner.bench import (
    ITEMS,
    REALISTIC,
    SCALE,
    SCENARIO,
    SCENARIO_LIMIT,
    SCRATCH,
    SLOTS,
    TARGET_MAKESPAN,
    TARGET_P95_DELAY,
    TARGET_SECONDS,
    Figures,
    busiest_window,
    oracle_makespan,
)
from runner.bench.clients import (
    Client,
    requests_for,
    sdk_poller,
    seed_loop,
    this_runner,
    this_runner_watched,
    upload_images,
)
from runner.simulator import SimConfig, Simulator


async def measure(name: str, client: Client, work: Path, scenario: SimConfig = SCENARIO) -> Figures:
    async with Simulator(scenario) as sim:
        urls = await upload_images(sim.base_url)
        await asyncio.sleep(scenario.rate_window)  # the setup's presigns leave the window
        setup_requests = len(sim.stats.api_requests)
        items = requests_for(urls)
        seen: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        failed = await client(sim.base_url, items, seen, work)
        makespan = loop.time() - started
        stats = sim.stats
        requests = stats.api_requests[setup_requests:]
        completions = [c for c in stats.completions.values() if c.status != "cancelled"]
        run_times = [
            c.visible_at - c.created_at for c in sorted(completions, key=lambda c: c.created_at)
        ]
        mean_run = statistics.fmean(run_times) if run_times else 1.0
        delays = sorted(
            (seen[pid] - c.visible_at) / mean_run
            for pid, c in stats.completions.items()
            if pid in seen
        )
        q = statistics.quantiles(delays, n=20) if len(delays) >= 2 else [0.0] * 19
        return Figures(
            name=name,
            makespan=makespan,
            oracle=oracle_makespan(run_times, SLOTS),
            requests_per_item=len(requests) / ITEMS,
            refused_cap=stats.refused_cap,
            refused_rate=stats.refused_rate,
            busiest_window=busiest_window([t for t, _ in requests], SCENARIO.rate_window),
            p50_delay=statistics.median(delays) if delays else float("nan"),
            p95_delay=q[18],
            peak_in_flight=stats.max_in_flight,
            failed=failed,
            duplicates=len(stats.creates)
            - len({str(c.input.get("prompt")) for c in stats.creates}),
        )


def table(rows: list[Figures]) -> str:
    header = (
        f"{'client':<10} {'makespan/oracle':>15} {'req/item':>9} {'429 cap':>8} {'429 rate':>9} "
        f"{'max req/60s':>12} {'p50 delay':>10} {'p95 delay':>10} {'peak':>5} {'failed':>7}"
    )
    lines = [header, "-" * len(header)]
    for f in rows:
        lines.append(
            f"{f.name:<10} {f.ratio:>15.3f} {f.requests_per_item:>9.1f} {f.refused_cap:>8} "
            f"{f.refused_rate:>9} {f.busiest_window:>12} {f.p50_delay:>9.1%} {f.p95_delay:>9.1%} "
            f"{f.peak_in_flight:>5} {f.failed:>7}"
        )
    return "\n".join(lines)


async def main() -> int:
    begun = time.monotonic()
    rows = []
    scratch = SCRATCH if os.path.isdir(SCRATCH) else None  # noqa: ASYNC240 (once, at start)
    with tempfile.TemporaryDirectory(prefix="i2v-bench-", dir=scratch) as tmp:
        for name, client, scenario in (
            ("seed-loop", seed_loop, SCENARIO),
            ("sdk-0.5s", sdk_poller, SCENARIO),
            ("runner", this_runner_watched, SCENARIO),
            ("runner-rl", this_runner, REALISTIC),
        ):
            work = Path(tmp) / name
            work.mkdir()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(await measure(name, client, work, scenario))
    elapsed = time.monotonic() - begun
    print(
        f"{ITEMS} items, {SLOTS} in flight, 60 requests/60 s (sliding window), run times "
        f"~200 s (150-300 s, 3 % outliers x2), time compressed {SCALE:g}x; delays are fractions "
        "of the mean run time"
    )
    print(table(rows))
    print(
        "runner: with the CLI's live view drawing, as on a terminal; runner-rl: the runner "
        "without a view, against the realistic profile (3 % of requests, 2 % of creates "
        "and 3 % of downloads faulted)"
    )
    ours, rough = rows[-2], rows[-1]
    refused = ours.refused_cap + ours.refused_rate
    checks = [
        (
            f"makespan <= {TARGET_MAKESPAN} x oracle",
            ours.ratio <= TARGET_MAKESPAN,
            f"{ours.ratio:.3f}",
        ),
        (
            "no request over the rate limit",
            ours.refused_rate == 0 and ours.busiest_window <= SCENARIO_LIMIT,
            f"{ours.refused_rate} refused, busiest window {ours.busiest_window}",
        ),
        ("no 429 caused by our own pace", refused == 0, f"{refused}"),
        (
            f"p95 detection delay <= {TARGET_P95_DELAY:.0%} of mean run time",
            ours.p95_delay <= TARGET_P95_DELAY,
            f"{ours.p95_delay:.1%}",
        ),
        (
            f"whole benchmark under {TARGET_SECONDS:.0f} s",
            elapsed < TARGET_SECONDS,
            f"{elapsed:.0f} s",
        ),
        ("every item rendered", ours.failed == 0, f"{ours.failed} not done"),
        (
            "realistic profile: every item rendered, none paid twice",
            rough.failed == 0 and rough.duplicates == 0,
            f"{rough.failed} not done, {rough.duplicates} created twice, "
            f"makespan {rough.ratio:.3f} x oracle",
        ),
    ]
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
