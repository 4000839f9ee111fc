"""Downloads from a hostile or broken CDN, over real loopback HTTP, into a hostile directory.

A video over the size cap is refused before (or while) it is read; a file that is not an MP4 is
never saved; a planted link is replaced, never written through; a directory in the way, or a
disk failing under a resumed download, is a StorageError, never a DownloadError; a hung CDN is
bounded per read and as a whole; every failed attempt is logged.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import stamina
from aiohttp import web

from runner.api.transfers import DOWNLOAD_ATTEMPTS, fetch_video
from runner.errors import ApiError, DownloadError, StorageError
from runner.store.videos import partial_path, verify
from tests.boxes import ftyp, mp4
from tests.integration.loopback import Loopback

VIDEO = mp4(media=b"\x01" * 5000)
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """Retries keep their number but not stamina's real waits; restored afterwards."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


def body(data: bytes) -> Callable[..., Any]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="video/mp4")

    return handler


async def fetch(session: aiohttp.ClientSession, url: str, dest: Path, **changes: Any) -> Any:
    settings: dict[str, Any] = {"seconds": 10.0}
    settings.update(changes)
    return await fetch_video(session, url, dest, **settings)


# --- what the CDN sends ----------------------------------------------------------------------


async def test_a_video_announced_over_the_cap_is_refused_before_it_is_read(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def announce(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(3 * MB)})
        await response.prepare(request)
        await response.write(b"\0" * 1024)
        await servers.hold()  # never sends the rest: the client must not wait for it
        return response

    cdn = await servers.start({"GET /big.mp4": announce})
    dest = tmp_path / "big.mp4"
    with pytest.raises(DownloadError, match=r"the video is over 1 MB \(--max-video-mb\)") as caught:
        await fetch(session, f"{cdn.url}/big.mp4", dest, max_bytes=MB)
    assert caught.value.status == 413  # not transient: not retried
    assert len(cdn.seen) == 1
    assert not dest.exists() and not partial_path(dest).exists()


async def test_a_body_that_grows_past_the_cap_is_cut_off_and_discarded(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no length announced
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\0" * 65536)
        await servers.hold()
        return response

    cdn = await servers.start({"GET /grow.mp4": endless})
    dest = tmp_path / "grow.mp4"
    with pytest.raises(DownloadError, match="over 1 MB") as caught:
        await fetch(session, f"{cdn.url}/grow.mp4", dest, max_bytes=MB)
    assert caught.value.status == 413 and len(cdn.seen) == 1
    assert not dest.exists() and not partial_path(dest).exists()


@pytest.mark.parametrize(
    "data",
    [ftyp() + b"\0" * 4096, ftyp() + mp4()[len(ftyp()) :][:-9], mp4(handler=b"soun")],
    ids=["ftyp-then-zeros", "truncated-moov", "audio-only"],
)
async def test_a_file_that_is_not_an_mp4_video_is_never_saved(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path, data: bytes
) -> None:
    cdn = await servers.start({"GET /v.mp4": body(data)})
    dest = tmp_path / "v.mp4"
    with pytest.raises(DownloadError, match="not an MP4 video") as caught:
        await fetch(session, f"{cdn.url}/v.mp4", dest)
    assert caught.value.status == 415 and len(cdn.seen) == 1
    assert not dest.exists() and not partial_path(dest).exists()


async def test_a_redirect_to_a_non_http_url_is_not_followed_nor_retried(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def to_file(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "file:///etc/passwd"})

    cdn = await servers.start({"GET /v.mp4": to_file})
    with pytest.raises(DownloadError, match=r"redirected \(302\) to file:") as caught:
        await fetch(session, f"{cdn.url}/v.mp4", tmp_path / "v.mp4")
    assert caught.value.status == 302 and len(cdn.seen) == 1


async def test_a_redirect_to_another_http_host_is_followed_without_any_key(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    edge = await servers.start({"GET /edge/v.mp4": body(VIDEO)})

    async def to_edge(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"{edge.url}/edge/v.mp4?sig=1"})

    cdn = await servers.start({"GET /v.mp4": to_edge})
    got = await fetch(session, f"{cdn.url}/v.mp4", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO and got.bytes == len(VIDEO)
    assert cdn.credentials() == [] and edge.credentials() == []


# --- a hung CDN ------------------------------------------------------------------------------


async def test_a_cdn_that_stops_sending_fails_each_attempt_after_the_stall_and_logs_it(
    servers: Loopback,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(VIDEO))})
        await response.prepare(request)
        await response.write(VIDEO[:100])
        await servers.hold()
        return response

    cdn = await servers.start({"GET /v.mp4": hang})
    with pytest.raises(DownloadError, match=r"no data for 0\.05 s") as caught:
        await fetch(session, f"{cdn.url}/v.mp4", tmp_path / "v.mp4", stall=0.05, label="item-003")
    assert caught.value.status is None
    assert len(cdn.seen) == DOWNLOAD_ATTEMPTS
    assert cdn.seen[1].headers.get("Range") == "bytes=100-"  # each retry resumes
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lines = [line for line in lines if line.startswith("item-003:")]
    assert lines[0] == "item-003: download attempt 1 of 5 failed (no data for 0.05 s); retrying"
    assert lines[-1] == "item-003: download attempt 5 of 5 failed (no data for 0.05 s); giving up"
    assert len(lines) == DOWNLOAD_ATTEMPTS


async def test_the_whole_transfer_is_bounded_even_when_the_cdn_never_quite_stalls(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(VIDEO))})
        await response.prepare(request)
        for byte in VIDEO:
            await response.write(bytes([byte]))
            await anyio.sleep(0.01)  # slower than the deadline, never a stall
        return response

    cdn = await servers.start({"GET /v.mp4": trickle})
    with pytest.raises(DownloadError, match=r"did not finish within 0\.3 s"):
        await fetch(session, f"{cdn.url}/v.mp4", tmp_path / "v.mp4", seconds=0.3, stall=5.0)


async def test_a_gone_url_is_not_retried_and_keeps_its_status(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=403, text="<Error>Request has expired</Error>")

    cdn = await servers.start({"GET /v.mp4": gone})
    with pytest.raises(DownloadError) as caught:
        await fetch(session, f"{cdn.url}/v.mp4", tmp_path / "v.mp4")
    assert caught.value.status == 403 and not isinstance(caught.value, ApiError)
    assert len(cdn.seen) == 1


# --- a hostile output directory --------------------------------------------------------------


def ranged(data: bytes) -> Callable[..., Any]:
    """A CDN that honours ``Range: bytes=N-`` with a 206."""

    async def handler(request: web.Request) -> web.Response:
        start = request.http_range.start or 0
        if not start:
            return web.Response(body=data, content_type="video/mp4")
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        return web.Response(
            status=206, body=data[start:], headers=headers, content_type="video/mp4"
        )

    return handler


async def test_a_partial_download_is_resumed_from_where_it_stopped(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cdn = await servers.start({"GET /v.mp4": ranged(VIDEO)})
    dest = tmp_path / "item.mp4"
    partial_path(dest).write_bytes(VIDEO[:1000])
    got = await fetch(session, f"{cdn.url}/v.mp4", dest)
    assert cdn.seen[0].headers["Range"] == "bytes=1000-"
    assert dest.read_bytes() == VIDEO and verify(dest, got.bytes, got.sha256)


async def test_a_disk_error_while_resuming_is_a_storage_error_never_a_download_error(
    servers: Loopback,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading back the partial file fails (EIO): our disk's fault, not the CDN's, so it is
    neither retried nor reported as a download problem."""
    cdn = await servers.start({"GET /v.mp4": ranged(VIDEO)})
    dest = tmp_path / "item.mp4"
    partial_path(dest).write_bytes(VIDEO[:1000])

    def failing_pread(fd: int, size: int, offset: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pread", failing_pread)
    with pytest.raises(StorageError) as caught:
        await fetch(session, f"{cdn.url}/v.mp4", dest)
    assert not isinstance(caught.value, DownloadError)
    assert str(partial_path(dest)) in str(caught.value)
    assert "Input/output error" in str(caught.value)
    assert len(cdn.seen) == 1


async def test_a_link_planted_at_the_part_file_is_removed_never_written_through(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cdn = await servers.start({"GET /v.mp4": body(VIDEO)})
    outside = tmp_path / "precious.txt"
    outside.write_bytes(b"do not touch")
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "item.mp4"
    partial_path(dest).symlink_to(outside)
    await fetch(session, f"{cdn.url}/v.mp4", dest)
    assert outside.read_bytes() == b"do not touch"
    assert dest.read_bytes() == VIDEO and not dest.is_symlink()
    assert not partial_path(dest).exists()
    assert "Range" not in cdn.seen[0].headers  # a link is no partial download to resume


async def test_a_link_planted_at_the_final_name_is_replaced_never_written_through(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cdn = await servers.start({"GET /v.mp4": body(VIDEO)})
    outside = tmp_path / "precious.txt"
    outside.write_bytes(b"do not touch")
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "item.mp4"
    dest.symlink_to(outside)
    got = await fetch(session, f"{cdn.url}/v.mp4", dest)
    assert outside.read_bytes() == b"do not touch"
    assert not dest.is_symlink() and dest.read_bytes() == VIDEO
    assert verify(dest, got.bytes, got.sha256)


@pytest.mark.parametrize("where", ["final", "part"])
async def test_a_directory_in_the_way_is_a_storage_error_naming_the_path(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path, where: str
) -> None:
    cdn = await servers.start({"GET /v.mp4": body(VIDEO)})
    dest = tmp_path / "item.mp4"
    blocked = dest if where == "final" else partial_path(dest)
    blocked.mkdir()
    with pytest.raises(StorageError) as caught:
        await fetch(session, f"{cdn.url}/v.mp4", dest)
    assert not isinstance(caught.value, DownloadError)
    assert str(blocked) in str(caught.value) and "a directory is in the way" in str(caught.value)
    assert blocked.is_dir()
