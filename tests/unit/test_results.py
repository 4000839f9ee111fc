"""The results of a batch: ``meta`` in the manifest, ``items.json``, the rows of
``results.jsonl``/``results.csv`` from a hand-made ledger, the contact sheet's escaping, and its
posters made from real MP4s (and no crash on a corrupt one). No network."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import textwrap
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.errors import ConfigError, ManifestError, StorageError
from runner.manifest import load_manifest
from runner.results import publish, report_directory
from runner.results.files import csv_bytes, jsonl_bytes
from runner.results.posters import MAX_SIDE
from runner.results.rows import build_rows, totals
from runner.results.snapshot import SnapItem, Snapshot, read_snapshot, snapshot_of, write_snapshot
from runner.simulator.video import render_mp4
from runner.store import ledger
from runner.store.disk import ensure_folder, write_if_changed

TS = "2026-01-02T03:04:05.000Z"


def png(color: tuple[int, int, int], size: tuple[int, int] = (160, 96)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def item(item_id: str, key: str, **extra: Any) -> SnapItem:
    fields: dict[str, Any] = {
        "id": item_id,
        "key": key,
        "model": "minimax-i2v-01",
        "prompt": f"the prompt of {item_id}",
        "image": f"images/{item_id}.png",
        "image_path": None,
        "image_sha256": None,
        "price_usd": Decimal("0.43"),
        "meta": None,
    }
    return SnapItem(**{**fields, **extra})


def rec(key: str, item_id: str, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": TS, "item": item_id, "key": key, "event": event, **fields}


def k(n: int) -> str:
    return f"{n:016x}"


#: One item in each state the ledger can leave it in.
ITEMS = (
    item("done", k(1), meta={"client": "acme", "shot": 12, "tags": ["a", "b"]}),
    item("failed", k(2), prompt='=HYPERLINK("http://evil")'),
    item("pending", k(3)),
    item("running", k(4)),
    item("ambiguous", k(5)),
    item("copy", k(1)),  # the same key as "done": rendered once
)
RECORDS = [
    rec(k(1), "done", "submitting", attempt=1),
    rec(k(1), "done", "submitted", prediction_id="p-1"),
    rec(k(1), "done", "succeeded", output_url="https://cdn/x.mp4", predict_time=201.5, cost=0.43),
    rec(k(1), "done", "downloaded", path="done.mp4", bytes=10, sha256="a" * 64),
    rec(k(2), "failed", "submitting", attempt=1),
    rec(k(2), "failed", "submitted", prediction_id="p-2"),
    rec(k(2), "failed", "failed", error="the provider, said <no>", error_code="PROVIDER_FAILED"),
    rec(k(4), "running", "submitting", attempt=1),
    rec(k(4), "running", "submitted", prediction_id="p-4"),
    rec(k(5), "ambiguous", "submitting", attempt=1),
]


def test_rows_follow_every_state_of_the_ledger_in_manifest_order() -> None:
    rows = build_rows(ITEMS, ledger.replay(RECORDS))
    assert [(r.item.id, r.status) for r in rows] == [
        ("done", "done"),
        ("failed", "failed"),
        ("pending", "pending"),
        ("running", "running"),
        ("ambiguous", "running"),
        ("copy", "done"),
    ]
    done, failed, pending, running, ambiguous, copy = rows
    assert (done.video, done.sha256, done.prediction_id) == ("done.mp4", "a" * 64, "p-1")
    assert done.predict_time == 201.5 and done.cost == Decimal("0.43")
    assert (failed.error, failed.error_code, failed.video) == (
        "the provider, said <no>",
        "PROVIDER_FAILED",
        None,
    )
    assert pending.prediction_id is None and pending.error is None
    assert running.prediction_id == "p-4" and running.error is None
    assert ambiguous.error is not None and "ambiguous" in ambiguous.error
    assert copy.duplicate_of == "done" and copy.video == "done.mp4"
    sums = totals(rows)
    assert dict(sums.counts) == {"total": 6, "done": 2, "failed": 1, "pending": 1, "running": 2}
    assert sums.cost_usd == Decimal("0.43")  # the duplicate's video was paid once


def test_jsonl_carries_meta_as_an_object_and_money_as_a_number() -> None:
    lines = jsonl_bytes(build_rows(ITEMS, ledger.replay(RECORDS))).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["id"] for r in rows] == [i.id for i in ITEMS]
    assert rows[0]["meta"] == {"client": "acme", "shot": 12, "tags": ["a", "b"]}
    assert rows[0]["cost"] == 0.43 and rows[0]["predict_time"] == 201.5
    assert rows[1]["meta"] is None and rows[1]["cost"] is None
    assert rows[0]["prompt"] == "the prompt of done" and rows[0]["image"] == "images/done.png"


def test_csv_quotes_what_needs_it_and_defuses_formulas() -> None:
    hostile = (
        item("a", k(1), prompt='say "hi", then\nleave', meta={"n": 1}),
        item("b", k(2), prompt="+1 cmd|' /C calc'!A0", image="-x.png"),
        item("c", k(3), prompt="@SUM(A1)"),
    )
    records = [
        rec(k(1), "a", "succeeded", cost=0.1, predict_time=3),
        rec(k(2), "b", "failed", error="=2+5", error_code="X"),
    ]
    text = csv_bytes(build_rows(hostile, ledger.replay(records))).decode()
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [row["id"] for row in table] == ["a", "b", "c"]
    assert table[0]["prompt"] == 'say "hi", then\nleave'  # round-trips through the csv module
    assert table[0]["meta"] == '{"n": 1}' and table[1]["meta"] == ""
    assert table[0]["cost"] == "0.1"  # the exact decimal, no float noise
    assert table[1]["prompt"] == "'+1 cmd|' /C calc'!A0"
    assert table[1]["image"] == "'-x.png" and table[1]["error"] == "'=2+5"
    assert table[2]["prompt"] == "'@SUM(A1)"
    # Only the CSV is defused: the JSON lines keep the text as it was.
    assert json.loads(jsonl_bytes(build_rows(hostile, {})).splitlines()[1])["prompt"][0] == "+"


class Page(HTMLParser):
    """Every start tag with its attributes, and the text of each element kind."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_the_sheet_escapes_prompts_errors_meta_and_refuses_script_urls(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    items = (
        item("a", k(1), prompt=evil, meta={"note": '"><script>alert(3)</script>'}),
        item("b", k(2), image="javascript:alert(4)"),
        item("c", k(3), image="https://example.org/cat.png?a=1&b=2"),
    )
    records = [rec(k(1), "a", "failed", error="</p><script>alert(5)</script>")]
    publish(tmp_path, Snapshot("b", "/m.yaml", items), ledger.replay(records))
    html = (tmp_path / "report.html").read_text()
    page = parse(html)
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert len(scripts) == 1  # the page's own filter, nothing injected
    assert not any("onerror" in attrs for _, attrs in page.tags)
    sources = [attrs.get("src") for tag, attrs in page.tags if tag in ("img", "video")]
    assert sources == ["https://example.org/cat.png?a=1&b=2"]
    values = [value or "" for _, attrs in page.tags for value in attrs.values()]
    assert not any("javascript:" in value for value in values)
    text = "".join(page.text)
    assert evil in text and "alert(5)" in text and "alert(3)" in text  # shown, as text
    assert "no preview: not an http(s) URL" in text
    cards = [attrs for tag, attrs in page.tags if tag == "article"]
    assert [c["data-status"] for c in cards] == ["failed", "pending", "pending"]


def test_meta_is_passed_through_and_is_not_part_of_the_key(tmp_path: Path) -> None:
    (tmp_path / "deer.png").write_bytes(png((10, 200, 30)))
    text = """
        items:
          - id: deer
            image: deer.png
            prompt: a deer walks slowly through the misty forest at dawn
            {meta}
    """
    plain = tmp_path / "plain.yaml"
    plain.write_text(textwrap.dedent(text.format(meta="")))
    tagged = tmp_path / "tagged.yaml"
    meta = "meta: {client: acme, shot: 12, tags: [a, b], extra: {ok: true, n: null}}"
    tagged.write_text(textwrap.dedent(text.format(meta=meta)))
    without, with_meta = load_manifest(plain).items[0], load_manifest(tagged).items[0]
    assert without.meta is None
    assert with_meta.meta == {
        "client": "acme",
        "shot": 12,
        "tags": ["a", "b"],
        "extra": {"ok": True, "n": None},
    }
    assert with_meta.key == without.key  # adding meta to a done item renders nothing again
    assert "meta" not in with_meta.request_input("https://x/y.png")


@pytest.mark.parametrize(
    ("meta", "where", "fragment"),
    [
        (
            "meta: [1, 2]",
            ':5:11: item 1 (id "deer"), field "meta"',
            "must be a mapping, not a list",
        ),
        ("meta: {when: 2024-01-01}", 'field "meta.when"', "JSON cannot carry; quote it"),
        ("meta: {n: .nan}", 'field "meta.n"', "must be a finite number"),
    ],
)
def test_meta_that_json_cannot_carry_is_an_error_at_its_place(
    tmp_path: Path, meta: str, where: str, fragment: str
) -> None:
    (tmp_path / "deer.png").write_bytes(png((10, 200, 30)))
    path = tmp_path / "m.yaml"
    path.write_text(
        "items:\n  - id: deer\n    image: deer.png\n    prompt: a deer walks through the forest\n"
        f"    {meta}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert any(where in str(p) and fragment in p.message for p in info.value.problems), [
        str(p) for p in info.value.problems
    ]


def test_the_snapshot_round_trips_and_refuses_unsafe_ids(tmp_path: Path) -> None:
    (tmp_path / "deer.png").write_bytes(png((10, 200, 30)))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "items:\n  - id: deer\n    image: deer.png\n    prompt: a deer walks through the forest\n"
        "    meta: {shot: 3}\n"
    )
    snapshot = snapshot_of(load_manifest(manifest))
    write_snapshot(tmp_path, snapshot)
    again = read_snapshot(tmp_path)
    assert again == snapshot
    assert again.items[0].image_path == str((tmp_path / "deer.png").resolve())
    data = json.loads((tmp_path / "items.json").read_text())
    data["items"][0]["id"] = "../../etc/x"
    (tmp_path / "items.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not a safe file name"):
        read_snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"holds no items\.json"):
        read_snapshot(tmp_path / "nowhere")


def test_files_are_replaced_whole_only_when_changed_and_never_through_a_link(
    tmp_path: Path,
) -> None:
    target = tmp_path / "results.csv"
    assert write_if_changed(target, b"one")
    inode = target.stat().st_ino
    assert not write_if_changed(target, b"one") and target.stat().st_ino == inode
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    target.unlink()
    target.symlink_to(outside)
    assert write_if_changed(target, b"two")
    assert outside.read_bytes() == b"keep" and not target.is_symlink()
    assert target.read_bytes() == b"two"
    (tmp_path / "report").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(StorageError, match="not a directory"):
        ensure_folder(tmp_path / "report")


def mp4(color: tuple[int, int, int]) -> bytes:
    return render_mp4(png(color, (320, 180)), "zoom in", seconds=0.3, fps=10, max_side=320)


def batch_dir(tmp_path: Path, videos: dict[str, bytes]) -> tuple[Path, list[SnapItem]]:
    """An output directory with items.json and a ledger in which each of ``videos`` is done."""
    out = tmp_path / "out"
    out.mkdir()
    items, lines = [], []
    for n, (item_id, data) in enumerate(videos.items(), start=1):
        image = tmp_path / f"{item_id}.png"
        image.write_bytes(png((40 * n, 90, 200 - 40 * n)))
        sha = hashlib.sha256(image.read_bytes()).hexdigest()
        items.append(item(item_id, k(n), image_path=str(image), image_sha256=sha))
        (out / f"{item_id}.mp4").write_bytes(data)
        video_sha = hashlib.sha256(data).hexdigest()
        lines.append(rec(k(n), item_id, "succeeded", cost=0.43, predict_time=2.0))
        lines.append(
            rec(
                k(n),
                item_id,
                "downloaded",
                path=f"{item_id}.mp4",
                bytes=len(data),
                sha256=video_sha,
            )
        )
    write_snapshot(out, Snapshot("b", "/m.yaml", tuple(items)))
    (out / "ledger.jsonl").write_bytes(b"".join(ledger.encode(r) for r in lines))
    return out, items


def card_media(out: Path) -> dict[str, dict[str, str | None]]:
    """Each card's id → the src/poster of its video and the src of its first image."""
    found: dict[str, dict[str, str | None]] = {}
    current = ""
    for tag, attrs in parse((out / "report.html").read_text()).tags:
        if tag == "article":
            current = str(attrs["data-id"])
            found[current] = {}
        elif tag == "video":
            found[current].update(video=attrs.get("src"), poster=attrs.get("poster"))
        elif tag == "img":
            found[current].setdefault("image", attrs.get("src"))
    return found


def test_posters_come_from_the_video_and_a_corrupt_one_only_loses_its_preview(
    tmp_path: Path,
) -> None:
    good = mp4((220, 40, 40))
    out, _ = batch_dir(tmp_path, {"red": good, "broken": b"\0\0\0\x18ftypisom" + b"\xff" * 500})
    published = report_directory(out)
    assert published.totals.counts["done"] == 2
    cards = card_media(out)
    poster = cards["red"]["poster"]
    assert poster is not None
    with Image.open(out / poster) as frame:
        assert frame.format == "JPEG" and max(frame.size) <= MAX_SIDE
        red, green, blue = frame.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert red > 150 and green < 90 and blue < 90  # the first frame of the red video
    assert cards["broken"]["poster"] is None and cards["broken"]["video"] == "broken.mp4"
    assert "no preview: cannot decode the video" in (out / "report.html").read_text()
    for card in cards.values():
        image = card["image"]
        assert image is not None and (out / image).is_file()  # input pictures copied in


def test_a_poster_is_not_made_again_while_the_videos_sha256_is_unchanged(
    tmp_path: Path,
) -> None:
    out, _ = batch_dir(tmp_path, {"red": mp4((220, 40, 40))})
    report_directory(out)
    poster = out / str(card_media(out)["red"]["poster"])
    made = poster.stat().st_mtime_ns, poster.stat().st_ino
    (out / "red.mp4").write_bytes(b"not a video any more")  # the ledger's sha256 is unchanged
    report_directory(out)
    assert (poster.stat().st_mtime_ns, poster.stat().st_ino) == made
    assert card_media(out)["red"]["poster"] is not None


def test_an_input_image_changed_since_the_run_is_not_shown_as_the_input(tmp_path: Path) -> None:
    out, items = batch_dir(tmp_path, {"red": mp4((220, 40, 40))})
    Path(str(items[0].image_path)).write_bytes(png((0, 0, 0)))
    report_directory(out)
    assert card_media(out)["red"].get("image") is None
    assert "changed since the batch was run" in (out / "report.html").read_text()


def test_stale_pictures_are_pruned_and_nothing_else_is_touched(tmp_path: Path) -> None:
    out, _ = batch_dir(tmp_path, {"red": mp4((220, 40, 40))})
    (out / "report" / "posters").mkdir(parents=True)
    stale = out / "report" / "posters" / ("0" * 64 + ".jpg")
    stale.write_bytes(b"old")
    mine = out / "report" / "posters" / "notes.txt"
    mine.write_bytes(b"mine")
    report_directory(out)
    assert not stale.exists() and mine.read_bytes() == b"mine"
    assert len(list((out / "report" / "posters").glob("*.jpg"))) == 1


def test_publish_writes_each_file_only_when_it_changes(tmp_path: Path) -> None:
    out, _ = batch_dir(tmp_path, {"red": mp4((220, 40, 40))})
    snapshot = read_snapshot(out)
    states = ledger.replay(ledger.read(out / "ledger.jsonl")[0])
    publish(out, snapshot, states)
    names = ("results.jsonl", "results.csv", "report.html")
    before = {name: os.stat(out / name).st_ino for name in names}
    publish(out, snapshot, states)
    assert {name: os.stat(out / name).st_ino for name in names} == before
