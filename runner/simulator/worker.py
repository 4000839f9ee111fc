"""The work behind predictions: each run's task, and cancels that take effect later.

A run's task fetches its image (unless it is one of the file host's uploads), checks it, has the
video rendered in a worker thread (once per image and camera motion), and ends the run when its
outcome is due to show; an input problem ends it at the next status quantum instead. A cancel
that takes effect at a later quantum has a task of its own. ``Worker`` owns the task group of
these tasks and the client session that fetches images: ``start`` inside the running loop,
``stop`` when the simulator stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import io

import aiohttp
from PIL import Image, UnidentifiedImageError
from yarl import URL

from runner.simulator import inputs
from runner.simulator.account import Account
from runner.simulator.config import SimConfig
from runner.simulator.files import OwnImage
from runner.simulator.lifecycle import Failure, Run, download_failure, image_failure
from runner.simulator.stats import SimStats
from runner.simulator.video import RenderError, motion_for, render_mp4

#: The contract's generic image limits: at most 20 MB, 64-8192 px a side.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_SIDES = (64, 8192)


class FetchError(Exception):
    """An image URL could not be fetched (the prediction ends in INPUT_DOWNLOAD_ERROR)."""


def image_problem(data: bytes) -> str | None:
    """Why ``data`` is not an image the model takes (format, size, sides), or None."""
    if len(data) > MAX_IMAGE_BYTES:
        return "larger than 20 MB"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        return "not a JPEG, PNG, WebP or GIF image"
    low, high = IMAGE_SIDES
    if not (low <= width <= high and low <= height <= high):
        return f"{width}x{height} px; each side must be {low}-{high} px"
    return None


class Worker:
    """Runs the predictions of one simulator's accounts in tasks of one task group."""

    def __init__(self, config: SimConfig, stats: SimStats) -> None:
        self.config = config
        self.stats = stats
        self._renders: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._driver: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the task group and the fetch session (in the running loop)."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        self._driver = asyncio.create_task(self._drive(started))
        await started
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Stop the tasks, then close the fetch session.

        Raises what a task raised by mistake (a bug in the simulator).
        """
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.cancel()
            await asyncio.wait([driver])
        if self._session is not None:
            await self._session.close()
        error = driver.exception() if driver is not None and not driver.cancelled() else None
        if error is not None:
            raise error

    async def _drive(self, started: asyncio.Future[None]) -> None:
        """Own the task group of the prediction tasks until the simulator stops."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            started.set_result(None)
            await asyncio.Event().wait()

    @property
    def _task_group(self) -> asyncio.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the simulator is not running")
        return self._tg

    # -- the tasks -------------------------------------------------------------------------------

    def carry(self, account: Account, run: Run, url: str, own: OwnImage | None) -> None:
        """Start the task that carries ``account``'s ``run`` to its end (``_carry``): ``url`` is
        its image, ``own`` what the file host holds for it (None: not one of its uploads)."""
        self._task_group.create_task(self._carry(account, run, url, own))

    def cancel_later(self, account: Account, run: Run, at: float) -> None:
        """Start the task that ends ``account``'s ``run`` as cancelled at loop time ``at``
        (``_cancel_at``)."""
        self._task_group.create_task(self._cancel_at(account, run, at))

    async def _cancel_at(self, account: Account, run: Run, at: float) -> None:
        """End ``run`` as cancelled at loop time ``at``, unless its own end came first or an
        earlier cancel took its place."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(at - loop.time())
        if run.cancel_at == at:  # ends on its quantum, however late this task woke
            account.cancel_due(run, at)

    async def _carry(self, account: Account, run: Run, url: str, own: OwnImage | None) -> None:
        """Fetch the image (unless it is one of the file host's), render the video, and end the
        run when its outcome is due."""
        loop = asyncio.get_running_loop()
        failure: Failure | None = None
        image = own.data if own is not None else None
        try:
            if image is None:
                image = await self._fetch(url, own)
        except FetchError as exc:
            failure = download_failure(str(exc))
        else:
            problem = image_problem(image)
            if problem is not None:
                failure = image_failure(problem)
        if failure is not None:  # an input problem shows soon, not after the run time
            run.failure = failure
            run.due = account.visible_time(run, loop.time())
            await asyncio.sleep(run.due - loop.time())
            account.finish(run, "error", loop.time())
            return
        assert image is not None
        if run.failure is None:
            try:
                run.video = await self._render(image, str(run.input.get("prompt", "")))
            except RenderError as exc:
                run.failure = image_failure(str(exc))
            run.due = max(run.due, account.visible_time(run, loop.time()))
        await asyncio.sleep(run.due - loop.time())
        account.finish(run, "success" if run.failure is None else "error", loop.time())

    async def _fetch(self, url: str, own: OwnImage | None) -> bytes:
        """The bytes at an image URL; FetchError if they cannot be had within fetch_timeout,
        or (``refuse_private_urls``) the URL's host is one the real service cannot reach."""
        if own is not None:
            raise FetchError(f"{url}: HTTP 404 ({own.missing})")
        if not url:
            raise FetchError("no image URL given")
        try:
            parsed = URL(url)
        except ValueError:
            raise FetchError(f"{url}: not a URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise FetchError(f"{url}: unsupported URL (an http or https URL is needed)")
        if self.config.refuse_private_urls:
            private = inputs.private_host(parsed.raw_host)
            if private is not None:
                self.stats.private_urls_refused += 1
                raise FetchError(
                    f"{url}: cannot connect: {private}, not reachable from the service"
                )
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.config.fetch_timeout)
        try:
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise FetchError(f"{url}: HTTP {response.status}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        break
                return b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None

    async def _render(self, image: bytes, prompt: str) -> bytes:
        """The MP4 for an image and prompt, rendered once per (image, motion) in a worker thread."""
        key = (hashlib.sha256(image).hexdigest(), motion_for(prompt))
        pending = self._renders.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._renders[key] = done
        self.stats.renders += 1
        c = self.config
        try:
            video = await asyncio.to_thread(
                render_mp4, image, prompt, seconds=c.video_seconds, max_side=c.max_side
            )
        except RenderError as exc:
            del self._renders[key]
            done.set_exception(exc)
            done.exception()  # retrieved: waiters (if any) get it too
            raise
        except BaseException:
            del self._renders[key]
            done.cancel()
            raise
        done.set_result(video)
        return video
