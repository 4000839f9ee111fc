"""The results of a batch written into its output directory: ``results.jsonl``,
``results.csv`` and ``report.html`` with its pictures under ``report/``.

``publish`` makes them from the snapshot of the items and the states of their keys: at the end
of each run (``publish_run``, from the run's own states, the ones ``summary.json`` shows) and
by ``i2v-runner report DIR`` (``report_directory``, from ``items.json`` and the ledger alone: no
manifest, no API request). Each file is written only when its content changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from runner.errors import ConfigError, StorageError
from runner.manifest import Manifest
from runner.results.files import CSV_NAME, JSONL_NAME, csv_bytes, jsonl_bytes
from runner.results.posters import (
    NoPicture,
    make_poster,
    make_thumbnail,
    picture_name,
    picture_path,
    prune,
    regular_file,
)
from runner.results.rows import Row, Totals, build_rows, states_of, totals
from runner.results.sheet import Media, local_url, remote_image, render_sheet
from runner.results.snapshot import (
    SNAPSHOT_NAME,
    Snapshot,
    read_snapshot,
    snapshot_of,
    write_snapshot,
)
from runner.store import ledger
from runner.store.disk import ensure_folder, write_if_changed
from runner.store.ledger import KeyState
from runner.store.plan import Plan
from runner.store.resume import read_replay
from runner.store.videos import video_path

HTML_NAME = "report.html"
#: The folder of the contact sheet's pictures, in the output directory.
PICTURES = "report"
POSTERS = "posters"
INPUTS = "inputs"


@dataclass(frozen=True)
class Published:
    """What a report came to: the totals it shows, and the ledger's reading warnings."""

    totals: Totals
    warnings: tuple[str, ...] = ()


def publish(output_dir: Path, snapshot: Snapshot, states: Mapping[str, KeyState]) -> Totals:
    """Write the results files and the contact sheet of ``snapshot`` in ``output_dir``.
    Blocking (decodes new posters): run it in a worker thread. Raises StorageError."""
    rows = build_rows(snapshot.items, states)
    write_if_changed(output_dir / JSONL_NAME, jsonl_bytes(rows))
    write_if_changed(output_dir / CSV_NAME, csv_bytes(rows))
    sums = totals(rows)
    media = _pictures(output_dir, rows)
    write_if_changed(
        output_dir / HTML_NAME, render_sheet(snapshot.batch, rows, media, sums).encode()
    )
    return sums


def report_directory(output_dir: Path) -> Published:
    """``i2v-runner report DIR``: the results and the contact sheet from ``items.json`` and the
    ledger. Raises ConfigError if ``output_dir`` holds no batch (no directory, no snapshot, no
    ledger), LedgerError if the ledger cannot be read, StorageError. Blocking."""
    if not output_dir.is_dir():
        raise ConfigError(f"{output_dir} is not a directory")
    snapshot = read_snapshot(output_dir)
    path = output_dir / ledger.LEDGER_NAME
    if not path.exists():
        raise ConfigError(f"{output_dir} holds {SNAPSHOT_NAME} but no {ledger.LEDGER_NAME}")
    replay, warnings = read_replay(path)
    sums = publish(output_dir, snapshot, replay.states)
    return Published(sums, tuple(warnings))


async def save_snapshot(output_dir: Path, manifest: Manifest) -> str | None:
    """Write ``items.json`` for a run about to start; the problem if it could not be."""
    try:
        await anyio.to_thread.run_sync(write_snapshot, output_dir, snapshot_of(manifest))
    except StorageError as exc:
        return f"{exc}; `i2v-runner report` cannot work without it"
    return None


async def publish_run(
    output_dir: Path, manifest: Manifest, plan: Plan, final: Mapping[str, KeyState]
) -> str | None:
    """The results and contact sheet at the end of a run, from the states ``summary.json``
    shows; the problem if they could not be written."""
    snapshot, states = snapshot_of(manifest), states_of(plan, final)
    try:
        await anyio.to_thread.run_sync(publish, output_dir, snapshot, states)
    except StorageError as exc:
        return f"the results and report.html were not all written: {exc}"
    return None


def _pictures(output_dir: Path, rows: list[Row]) -> list[Media]:
    """What each card shows, making the posters and input pictures not made before."""
    folder = output_dir / PICTURES
    posters, inputs = folder / POSTERS, folder / INPUTS
    for needed in (folder, posters, inputs):
        ensure_folder(needed)
    media = []
    shown_posters: set[str] = set()
    shown_inputs: set[str] = set()
    for row in rows:
        video, poster, poster_note = _video(output_dir, posters, row)
        image, image_note = _input(inputs, row)
        media.append(Media(video, poster, poster_note, image, image_note))
        if poster is not None and row.sha256:
            shown_posters.add(f"{row.sha256}.jpg")
        if image is not None and row.item.image_sha256:
            shown_inputs.add(f"{row.item.image_sha256}.jpg")
    prune(posters, shown_posters)
    prune(inputs, shown_inputs)
    return media


def _video(output_dir: Path, posters: Path, row: Row) -> tuple[str | None, str | None, str | None]:
    """The video's URL, its poster's URL and why there is no poster."""
    if row.status != "done" or row.video is None:
        return None, None, None
    try:
        path = video_path(output_dir, row.video.removesuffix(".mp4"))
    except ValueError:
        return None, None, None
    if path.name != row.video or not regular_file(path):
        return None, None, None
    url = local_url(path.name)
    name = picture_name(row.sha256)
    if name is None:
        return url, None, "no preview: the ledger holds no sha256 of the video"
    dest = picture_path(posters, name)
    if not regular_file(dest):
        try:
            make_poster(path, dest)
        except NoPicture as exc:
            return url, None, f"no preview: {exc}"
    return url, local_url(f"{PICTURES}/{POSTERS}/{name}"), None


def _input(inputs: Path, row: Row) -> tuple[str | None, str | None]:
    """The input picture's URL (a copy under report/inputs, or the remote URL) and why there
    is none."""
    item = row.item
    if item.image_path is None:
        shown = remote_image(item.image)
        return (shown, None) if shown else (None, "no preview: not an http(s) URL")
    name = picture_name(item.image_sha256)
    if name is None:
        return None, "no preview: the image's sha256 is not known"
    dest = picture_path(inputs, name)
    if not regular_file(dest):
        try:
            make_thumbnail(Path(item.image_path), item.image_sha256, dest)
        except NoPicture as exc:
            return None, f"no preview: {exc}"
    return local_url(f"{PICTURES}/{INPUTS}/{name}"), None
