"""Reading and checking a large catalog: ``validate --offline`` on a generated N-item manifest.

``write_catalog`` writes a manifest of N items over ``DISTINCT_IMAGES`` small PNGs (copied from
the project's example images, so the preflight reads real image content) into a directory;
``python -m runner.bench.scale validate N [N ...]`` measures ``validate --offline`` on each, in
a child process per size so that each peak RSS is its own, and prints seconds and peak RSS::

    $ python -m runner.bench.scale validate 1000 10000 100000
       items   seconds   peak RSS
       1,000      0.41     52 MB
       ...

``python -m runner.bench.scale dryrun N [--events E]`` measures ``run --dry-run --offline``
on the same manifest with an E-record ledger in its output directory (default 915,000, as
in the issue): every item of the manifest has its records there, then earlier batches' items.
``--csv`` writes the same items as a CSV catalog (``catalog.csv``, named directly) instead.

The model's schema is cached in the output directory first, so every item's input is
validated against it. Every tenth item carries a prompt that draws a warning (a word repeated
back to back), so the problems grow with the items as they do in a real catalog.
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner import models
from runner.bench import IMAGES
from runner.checks.schema import CACHE_NAME, ModelSchema, write_cache
from runner.store import ledger

#: As in the issue's measurements: 20 distinct small images shared by every item.
DISTINCT_IMAGES = 20
MODEL = "minimax-i2v-01"
#: One item in this many gets a prompt with a repeated word (a warning).
WARN_EVERY = 10
#: The ledger of ``dryrun``: as in the issue's measurement of a 100,000-item batch.
DRYRUN_EVENTS = 915_000


def write_catalog(directory: Path, items: int, form: str = "yaml") -> Path:
    """Write ``directory/catalog.yaml`` (``form`` "csv": ``directory/catalog.csv``, the same
    items as rows under an ``id,image,prompt`` header) with ``items`` items over
    ``DISTINCT_IMAGES`` PNGs (``directory/images/``) and return its path."""
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    sources = sorted(IMAGES.glob("*.png"))
    names = []
    for number in range(DISTINCT_IMAGES):
        data = sources[number % len(sources)].read_bytes()
        name = f"still-{number:02d}.png"
        # distinct content: a PNG ignores bytes after its IEND chunk
        (images / name).write_bytes(data + number.to_bytes(2, "big"))
        names.append(name)
    rows = []
    for index in range(items):
        prompt = f"shot {index}, a deer slowly walks through the misty forest at dawn"
        if index % WARN_EVERY == 0:
            prompt += " fast fast"
        rows.append((f"item-{index}", f"images/{names[index % DISTINCT_IMAGES]}", prompt))
    if form == "csv":
        path = directory / "catalog.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            table = csv.writer(out, lineterminator="\n")
            table.writerow(["id", "image", "prompt"])
            table.writerows(rows)
        return path
    lines = [f"batch: scale-{items}", f"model: {MODEL}", "items:"]
    for item_id, image, prompt in rows:
        lines += [f"  - id: {item_id}", f"    image: {image}", f"    prompt: {prompt}"]
    path = directory / "catalog.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_schema_cache(output: Path) -> None:
    """Cache the model's schema in ``output`` so that ``--offline`` validates every item's
    input against it, as a run that has fetched it once does."""
    request_schema = models.MODELS[MODEL].request_schema()
    cached = ModelSchema(MODEL, request_schema, "2026-01-01T00:00:00+00:00", cached=True)
    write_cache(output / CACHE_NAME, {MODEL: cached})


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """The peak resident set size in MB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024


def measure_validate(items: int, form: str = "yaml") -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of ``validate --offline`` on an ``items``-item
    catalog (``form``: see ``write_catalog``), run as a child process (the catalog is written
    before the clock starts)."""
    with tempfile.TemporaryDirectory(prefix="runner-scale-") as tmp:
        manifest = write_catalog(Path(tmp), items, form)
        write_schema_cache(Path(tmp) / "out")
        command = [
            sys.executable,
            "-m",
            "runner",
            "validate",
            str(manifest),
            "--offline",
            "--output",
            str(Path(tmp) / "out"),
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # RUSAGE_CHILDREN's peak is the largest of every child waited for: measure one size per
    # process (``main`` starts a fresh interpreter per size)
    return seconds, usage.ru_maxrss / 1024, done.returncode


def write_ledger(manifest: Path, output: Path, events: int) -> None:
    """Write ``output``'s ledger of ``events`` records (``ledgerscale.records``): its first
    items are the manifest's, by id and key (read from the manifest), the rest earlier
    batches' items sharing the output directory."""
    from runner.bench import ledgerscale
    from runner.manifest import read_manifest

    names = [(item.id, item.key) for item in read_manifest(manifest).items]
    output.mkdir(parents=True, exist_ok=True)
    ledgerscale.write(output / ledger.LEDGER_NAME, events, names)


def measure(what: str, items: int, events: int, form: str = "yaml") -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of ``validate --offline`` on an ``items``-item
    catalog (``what`` "validate"), or of ``run --dry-run --offline`` on it with an
    ``events``-record ledger (``what`` "dryrun"), run as a child process (the catalog and
    the ledger are written before the clock starts). ``form``: see ``write_catalog``."""
    if what == "validate":
        return measure_validate(items, form)
    with tempfile.TemporaryDirectory(prefix="runner-scale-") as tmp:
        manifest = write_catalog(Path(tmp), items, form)
        output = Path(tmp) / "out"
        write_schema_cache(output)
        write_ledger(manifest, output, events)
        command = [sys.executable, "-m", "runner", "run", str(manifest), "--dry-run"]
        command += ["--offline", "--output", str(output)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, usage.ru_maxrss / 1024, done.returncode


#: The issue's dry run: a 100,000-item batch with a 915,000-event ledger, 9.15 events an item.
LEDGER_EVENTS_PER_ITEM = DRYRUN_EVENTS / 100_000


def measure_dry_run(items: int) -> tuple[float, float, int]:
    """``measure("dryrun", ...)`` with the issue's LEDGER_EVENTS_PER_ITEM events an item."""
    return measure("dryrun", items, round(items * LEDGER_EVENTS_PER_ITEM))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.bench.scale", description=__doc__)
    parser.add_argument(
        "what",
        choices=["validate", "dryrun"],
        help="what to measure: validate --offline, or run --dry-run --offline over a ledger",
    )
    parser.add_argument("sizes", nargs="+", type=int, help="numbers of items, one run each")
    parser.add_argument(
        "--events",
        type=int,
        default=DRYRUN_EVENTS,
        help=f"dryrun: the ledger's records (default {DRYRUN_EVENTS:,}, as in the issue)",
    )
    parser.add_argument(
        "--csv",
        action="store_true",
        help="the items as a CSV catalog (id,image,prompt) named directly, not a YAML manifest",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    form = "csv" if args.csv else "yaml"
    if args.one:
        seconds, peak, code = measure(args.what, args.sizes[0], args.events, form)
        print(f"{args.sizes[0]} {seconds:.3f} {peak:.1f} {code}")
        return 0
    print(f"{'items':>9}{'seconds':>10}{'peak RSS':>11}  exit")
    for size in args.sizes:
        child = [sys.executable, "-m", "runner.bench.scale", args.what, str(size), "--one"]
        child += ["--events", str(args.events)] + (["--csv"] if args.csv else [])
        out = subprocess.run(child, capture_output=True, text=True, check=True).stdout.split()
        items, seconds, peak, code = int(out[0]), float(out[1]), float(out[2]), int(out[3])
        print(f"{items:>9,}{seconds:>10.2f}{peak:>8.0f} MB  {code}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
