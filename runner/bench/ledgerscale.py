"""``python -m runner.bench.ledgerscale N``: the replay of an N-event ledger, timed.

Writes a ledger of ``N`` events (default 1,000,000) the way a batch leaves it: per item a
``submitting``, ``submitted``, ``succeeded`` and ``downloaded`` record, one ``uploaded`` per
distinct image, one item in fifty failed once and submitted again. Then reads it as a run
starts (``read_resume``: states, spend, uploads, known prediction ids) and prints the seconds,
the peak resident memory of the process and its growth over the replay, against the target.
The ledger is written to a temporary directory (removed afterwards) in a streaming pass, so
the peak is the replay's.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runner.store import ledger
from runner.store.resume import read_resume

#: The issue's target for 1,000,000 events.
TARGET_SECONDS = 4.0
IMAGES = 20


def records(count: int, names: Sequence[tuple[str, str]] = ()) -> Iterator[dict[str, Any]]:
    """``count`` ledger records of a batch that went well (a few failures retried). The first
    items are ``names`` (id, key), the items of a manifest; the rest are named here."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    made = 0
    number = 0
    while made < count:
        ts = (start + timedelta(seconds=number)).isoformat(timespec="milliseconds")
        ts = ts.replace("+00:00", "Z")
        item, key = f"item-{number:07d}", f"{number:016x}"
        if number < len(names):
            item, key = names[number]
        sha = f"{number % IMAGES:064x}"
        pid = f"pred-{number:07d}"
        base = {"ts": ts, "item": item, "key": key}
        batch: list[dict[str, Any]] = []
        if number < IMAGES:
            url = f"https://uploads.example/{sha}.png"
            batch.append(base | {"event": "uploaded", "sha256": sha, "public_url": url})
        if number % 50 == 49:
            batch.append(base | {"event": "submitting", "attempt": 1})
            batch.append(base | {"event": "submitted", "prediction_id": pid + "-a"})
            batch.append(
                base | {"event": "failed", "prediction_id": pid + "-a", "error": "x", "cost": 0.0}
            )
        batch += [
            base | {"event": "submitting", "attempt": 1},
            base | {"event": "submitted", "prediction_id": pid},
            base
            | {
                "event": "succeeded",
                "prediction_id": pid,
                "output_url": f"https://cdn.example/{pid}.mp4",
                "predict_time": 41.5,
                "cost": 0.25,
            },
            base | {"event": "downloaded", "path": f"{item}.mp4", "bytes": 123456, "sha256": sha},
        ]
        yield from batch[: count - made]
        made += len(batch)
        number += 1


def write(path: Path, count: int, names: Sequence[tuple[str, str]] = ()) -> int:
    """Write a ``count``-event ledger at ``path`` (``records``); returns the number of items."""
    items = set()
    with path.open("wb") as handle:
        for record in records(count, names):
            items.add(record["key"])
            handle.write(ledger.encode(record))
    return len(items)


def rss_mb() -> float:
    """The process's peak resident memory so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(count: int) -> tuple[float, float, float, int]:
    """Seconds, peak RSS (MB), growth of the peak over the replay (MB), keys replayed."""
    with tempfile.TemporaryDirectory(prefix="ledgerscale-") as scratch:
        out = Path(scratch)
        items = write(out / ledger.LEDGER_NAME, count)
        before = rss_mb()
        started = time.perf_counter()
        resume = read_resume(out, ())
        seconds = time.perf_counter() - started
        peak = rss_mb()
        assert len(resume.states) == items, "the replay lost items"
        return seconds, peak, peak - before, items


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 1_000_000
    seconds, peak, growth, items = measure(count)
    print(
        f"ledger replay: {count:,} events, {items:,} items: {seconds:.2f} s, "
        f"peak RSS {peak:.0f} MB (+{growth:.0f} MB over the replay)"
    )
    target = TARGET_SECONDS * count / 1_000_000
    verdict = "PASS" if seconds < target else "FAIL"
    print(f"{verdict}: replay under {target:.1f} s")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
