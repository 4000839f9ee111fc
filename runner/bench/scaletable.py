"""``python -m runner.bench.scaletable``: the scale table of ``make bench``, against issue 12's
targets.

Every figure is measured in this one run, each in a child process of its own so that its peak
resident memory is its own (``ru_maxrss`` of a process is the largest it ever was):

- ``validate --offline`` on a generated catalog of 1,000, 10,000 and 100,000 items
  (``scale.write_catalog``: 20 distinct small PNGs, one prompt in ten with a warning);
- ``run --dry-run --offline`` on the same catalogs with a ledger of 9.15 events an item
  (915,000 at 100,000 items, as the issue measured): reading, checks, ledger replay, plan;
- the growth per 10x of each (seconds at 10x the items over seconds at 1x: 10 is linear);
- replaying a 1,000,000-event ledger (``ledgerscale``);
- a thousand in flight on the time-compressed simulator (``inflight``): the runner's CPU per
  API request and the p95 poll lag as a share of the poll interval;
- two keys against one (``keys``): the same batch's throughput on two accounts and on one,
  against the ideal speed-up of their oracle makespans, each key within its own cap and window;
- the command line's start-up (``startup``): ``i2v-runner --help``, against a bare interpreter
  started as often, the median of each.

Then one PASS/FAIL line per target. Seconds include starting the interpreter (about 0.1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = (1_000, 10_000, 100_000)
REPLAY_EVENTS = 1_000_000
#: Issue 12's targets.
VALIDATE_SECONDS, VALIDATE_MB = 8.0, 400.0
DRY_RUN_SECONDS, DRY_RUN_MB = 12.0, 600.0
REPLAY_SECONDS = 4.0
HELP_SECONDS = 0.3
#: Starts of each command timed for the start-up's medians.
STARTS = 7
#: Growth per 10x the items above which a pass is not linear any more (10: exactly linear;
#: the smallest size is mostly the interpreter starting, so the first step is far below).
MAX_GROWTH = 15.0


def child(kind: str, size: int) -> dict[str, Any]:
    """Measure one figure in this process (run by ``measure`` as a child of its own)."""
    if kind in ("validate", "dry-run"):
        from runner.bench import scale

        measure = scale.measure_validate if kind == "validate" else scale.measure_dry_run
        seconds, peak, code = measure(size)
        return {"seconds": seconds, "peak_mb": peak, "exit": code}
    if kind == "replay":
        from runner.bench import ledgerscale

        seconds, peak, _growth, items = ledgerscale.measure(size)
        return {"seconds": seconds, "peak_mb": peak, "items": items}
    if kind == "in-flight":
        from runner.bench import SCRATCH, inflight

        with tempfile.TemporaryDirectory(prefix="i2v-inflight-", dir=SCRATCH) as tmp:
            figures = asyncio.run(inflight.measure(Path(tmp), size))
        return dataclasses.asdict(figures) | {"report": inflight.report(figures)}
    raise ValueError(f"no such measure: {kind}")


def measure(kind: str, size: int) -> dict[str, Any]:
    """``child(kind, size)`` in a fresh interpreter; its figures."""
    command = [sys.executable, "-m", "runner.bench.scaletable", "--child", kind, str(size)]
    print(f"measuring {kind} {size:,} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {size}: the measuring process failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return figures


def startup() -> dict[str, float]:
    """Median wall seconds of ``i2v-runner --help`` and of a bare ``python -c pass``, started
    in turn STARTS times each (so that both meet the same load on a shared machine)."""
    print("measuring the start-up ...", file=sys.stderr, flush=True)
    script = Path(sys.executable).with_name("i2v-runner")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "runner"]

    def seconds(argv: list[str]) -> float:
        began = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        return time.perf_counter() - began

    helps, bares = [], []
    for _ in range(STARTS):
        helps.append(seconds([*command, "--help"]))
        bares.append(seconds([sys.executable, "-c", "pass"]))
    return {"help": statistics.median(helps), "bare": statistics.median(bares)}


def growth(seconds: list[float]) -> list[float]:
    """Seconds at each size over seconds at the size before (sizes 10x apart)."""
    return [after / before for before, after in itertools.pairwise(seconds)]


def size_rows(name: str, runs: list[dict[str, Any]]) -> list[str]:
    steps = growth([run["seconds"] for run in runs])
    seconds = "".join(f"{run['seconds']:>10.2f}" for run in runs)
    peaks = "".join(f"{run['peak_mb']:>10.0f}" for run in runs)
    factors = ", ".join(f"{step:.1f}x" for step in steps)
    return [f"{name:<28}{'seconds':>10}{seconds}   {factors}", f"{'':<28}{'peak MB':>10}{peaks}"]


def verdicts(
    validate: list[dict[str, Any]],
    dry: list[dict[str, Any]],
    replay: dict[str, Any],
    flight: dict[str, Any],
    start: dict[str, float],
) -> list[tuple[str, bool, str]]:
    """(label, passed, figures) for each target."""
    checks = []
    for name, runs, seconds, mb in (
        ("validate --offline", validate, VALIDATE_SECONDS, VALIDATE_MB),
        ("run --dry-run, 9.15 ledger events an item", dry, DRY_RUN_SECONDS, DRY_RUN_MB),
    ):
        largest = runs[-1]
        steps = growth([run["seconds"] for run in runs])
        ok = (
            largest["seconds"] < seconds
            and largest["peak_mb"] < mb
            and all(step < MAX_GROWTH for step in steps)
            and all(run["exit"] == 0 for run in runs)
        )
        checks.append(
            (
                f"{name}: {SIZES[-1]:,} items under {seconds:g} s and {mb:g} MB, growth per 10x "
                f"under {MAX_GROWTH:g}x",
                ok,
                f"{largest['seconds']:.2f} s, {largest['peak_mb']:.0f} MB, "
                + ", ".join(f"{step:.1f}x" for step in steps)
                + ("" if all(run["exit"] == 0 for run in runs) else "; a run failed"),
            )
        )
    checks.append(
        (
            f"ledger replay of {REPLAY_EVENTS:,} events under {REPLAY_SECONDS:g} s",
            replay["seconds"] < REPLAY_SECONDS,
            f"{replay['seconds']:.2f} s",
        )
    )
    from runner.bench import inflight

    cpu_ms = 1000 * flight["cpu_seconds"] / max(1, flight["requests"])
    share = flight["p95_lag"] / inflight.LIMITS.poll_min
    done = flight["done"] == flight["items"] and flight["creates"] == flight["items"]
    checks += [
        (
            f"1,000 in flight: under {inflight.TARGET_CPU_MS:g} ms of runner CPU per API request",
            cpu_ms < inflight.TARGET_CPU_MS and done,
            f"{cpu_ms:.3f} ms" + ("" if done else "; not every item rendered once"),
        ),
        (
            f"1,000 in flight: p95 poll lag under {inflight.TARGET_LAG_SHARE:.0%} of the poll "
            "interval",
            share < inflight.TARGET_LAG_SHARE and done,
            f"{share:.1%} ({1000 * flight['p95_lag']:.1f} ms of {inflight.LIMITS.poll_min:g} s)",
        ),
        (
            f"i2v-runner --help under {HELP_SECONDS:g} s",
            start["help"] < HELP_SECONDS,
            f"{start['help']:.2f} s",
        ),
    ]
    return checks


def main() -> int:
    begun = time.monotonic()
    validate = [measure("validate", size) for size in SIZES]
    dry = [measure("dry-run", size) for size in SIZES]
    replay = measure("replay", REPLAY_EVENTS)
    flight = measure("in-flight", 2000)
    from runner.bench import keys

    print("measuring two keys against one ...", file=sys.stderr, flush=True)
    one_key, two_keys = asyncio.run(keys.measure_both())
    start = startup()
    print()
    print("Scale: one run on this machine; each figure in a process of its own")
    print(f"{'items':<38}" + "".join(f"{size:>10,}" for size in SIZES) + "   growth per 10x")
    print("-" * 90)
    print("\n".join(size_rows("validate --offline", validate)))
    print("\n".join(size_rows("dry run, 9.15 events/item", dry)))
    print(
        f"ledger replay: {REPLAY_EVENTS:,} events ({replay['items']:,} items): "
        f"{replay['seconds']:.2f} s, peak RSS {replay['peak_mb']:.0f} MB"
    )
    print(f"1,000 in flight: {flight['report']}")
    print(keys.rows(one_key, two_keys))
    print(
        f"start-up, median of {STARTS}: i2v-runner --help {start['help']:.2f} s, a bare "
        f"interpreter {start['bare']:.2f} s ({start['help'] / start['bare']:.1f}x)"
    )
    print(f"(the table took {time.monotonic() - begun:.0f} s)")
    checks = verdicts(validate, dry, replay, flight, start) + keys.verdict(one_key, two_keys)
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runner.bench.scaletable", description=__doc__)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse(None)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        sys.exit(0)
    sys.exit(main())
