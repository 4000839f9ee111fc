"""``i2v-runner report DIR``: the results files and the contact sheet of a batch made again from
its output directory alone (``items.json`` and the ledger): no manifest, no key, no request."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

import anyio

from runner.report import EXIT_OK


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``report`` subcommand."""
    report = sub.add_parser(
        "report",
        help="write results.jsonl, results.csv and report.html of an output directory",
        description="Write DIR/results.jsonl, DIR/results.csv and the contact sheet "
        "DIR/report.html (with its pictures under DIR/report/) from what DIR holds: the "
        "snapshot of the batch's items (items.json, written by every run) and the ledger. "
        "Needs no manifest and no API key, and sends no request; safe while a run is going. "
        "Exit 2 if DIR holds no batch, 5 if the files cannot be written.",
    )
    report.add_argument("dir", type=Path, metavar="DIR", help="the batch's output directory")
    report.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only warnings and errors",
    )


async def report_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Write the results and the contact sheet of ``args.dir``; say where and what they show.
    Errors (ConfigError, StorageError) are the caller's to turn into exit codes."""
    from runner.results import HTML_NAME, report_directory  # loaded when the command runs

    folder: Path = args.dir
    published = await anyio.to_thread.run_sync(report_directory, folder)
    for warning in published.warnings:
        print(f"warning: {warning}", file=err)
    if getattr(args, "quiet", False):
        return EXIT_OK
    counts = published.totals.counts
    print(
        f"{folder / HTML_NAME}: {counts['total']} items, {counts['done']} done, "
        f"{counts['failed']} failed, {counts['pending']} pending, {counts['running']} running; "
        f"spent ${published.totals.cost_usd:.2f}",
        file=out,
    )
    print(f"results for machines: {folder / 'results.jsonl'}, {folder / 'results.csv'}", file=out)
    return EXIT_OK
