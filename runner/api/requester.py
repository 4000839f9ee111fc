"""One request to the Eachlabs API, from the request window to its 2xx answer.

``Requester.call`` is the one place API requests are made. It holds a slot of the shared
RateLimiter for each exchange, sends the key to the API's origin only, and translates network
errors through ``runner.api.transport``. What a hostile or broken API cannot do to a run:

- **have the key sent elsewhere.** Requests never follow redirects on their own. A 3xx whose
  ``Location`` is on the API base's origin (scheme, host, port) is followed by hand, at most
  MAX_HOPS times (``answers.next_hop``); a ``Location`` anywhere else is refused.
- **stall the batch for hours.** A ``Retry-After`` is cut to ``max_retry_after``; a server that
  asks for more on OVER_CAP_IN_A_ROW answers in a row makes the requester raise
  ApiUnavailableError, and every later request too, before anything is sent.
- **flood memory or logs.** Answers over MAX_ANSWER_BYTES are not read; the key is scrubbed
  from every server text; the base is shown redacted.

Faults are ridden out where asking again is harmless. An API that cannot be reached (a request
that provably never left) is retried with jittered exponential back-off, holding the shared
limiter so other requests do not pile on, until the outage has lasted ``unreachable_after``
(``unreachable_at_start`` before the first answer; ``runner.api.outage``): then
ApiUnavailableError. A create is retried like that too (nothing was sent), and its
``before_send`` runs at most once. A transient fault after sending (a 5xx, a lost answer) is
asked again IDEMPOTENT_RETRIES times, for every request but a create.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import aiohttp
import anyio
import yarl

from runner.api import answers, protocol, transport
from runner.api.answers import IDEMPOTENT_RETRIES, Answer
from runner.api.outage import Outage
from runner.api.ratelimit import Priority, RateLimiter
from runner.config import redact_url
from runner.errors import (
    ApiBrokenError,
    ApiProtocolError,
    ApiStatusError,
    ApiUnavailableError,
    StopRequested,
    TransportError,
)

#: Same-origin redirects followed for one API request.
MAX_HOPS = 3
#: The largest API answer read. The biggest real ones (a page of 100 executions, a model's
#: schema) are tens of KB; an answer past this is not an answer, and is not held in memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: A TCP + TLS handshake that takes longer than this (or half the request timeout, if less)
#: counts as a connect timeout: the request provably never left, and is retried as unreachable.
CONNECT_TIMEOUT = 10.0


class UnreadableAnswer(TransportError):
    """An answer came but was not read (larger than MAX_ANSWER_BYTES)."""


class _Once:
    """A request's ``before_send``: run at most once however often the request is tried."""

    def __init__(self, hook: Callable[[], Awaitable[None]] | None) -> None:
        self._hook = hook
        self.ran = False

    async def __call__(self) -> None:
        if self._hook is not None and not self.ran:
            self.ran = True
            try:
                await self._hook()
            except StopRequested:
                self.ran = False  # it declined before writing anything: nothing will be sent
                raise


class Requester:
    """Sends API requests for one account; the session and limiter are owned by the caller.

    The session must carry no key of its own: the requester adds it to API requests only. It
    switches off aiohttp's hidden resend of a dropped GET on that session (see ``__init__``).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        limiter: RateLimiter,
        *,
        request_timeout: float,
        max_retry_after: float,
        unreachable_after: float,
        unreachable_at_start: float,
        backoff: Callable[[int], float] | None,
        clock: Callable[[], float] | None,
        retry_wait: Callable[[int], float] | None,
        fault_wait: float,
    ) -> None:
        """The arguments are ``EachlabsClient``'s, which documents them."""
        self._session = session
        # aiohttp silently sends a GET or PUT again when its connection drops unanswered; that
        # second request would bypass the request window, which must count every request the
        # server sees. Retries are ours (``call``), through the window. (aiohttp's own test
        # client switches this off the same way.)
        session._retry_connection = False
        self._base = base_url.rstrip("/")
        self.shown = redact_url(self._base)
        self._key = api_key
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_connect=min(CONNECT_TIMEOUT, request_timeout / 2)
        )
        self._retry_after = protocol.RetryAfterCap(max_retry_after)
        self._unavailable: str | None = None  # once set, no request is sent any more
        #: Where the requester's lines go: its limiter's hub, the run's.
        self._events = limiter.events
        self._outage = Outage(
            after=unreachable_after,
            at_start=unreachable_at_start,
            clock=clock or anyio.current_time,
            backoff=backoff,
            events=self._events,
        )
        self._retry_wait = retry_wait or partial(_fault_wait, base=fault_wait, rng=random.Random())
        self._ids = random.Random()  # seeded from the system's randomness once

    def scrub(self, text: str) -> str:
        """Server text with the key blanked out."""
        return answers.scrub(text, self._key)

    async def call(
        self,
        method: str,
        path: str,
        *,
        priority: Priority,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
        abandon: anyio.Event | None = None,
        create: bool = False,
    ) -> Answer:
        """``path``'s 2xx answer, tried again after a transient fault (a 500/502/503/504, or a
        request sent whose answer was lost) up to IDEMPOTENT_RETRIES times, for every request
        but a create: asking again is harmless for them, never for a create.

        ``before_send`` runs once the limiter has granted the request and just before it is
        first sent (the create's write-ahead record), never twice. ``abandon`` set while waiting
        for the limiter ends the wait with StopRequested if ``before_send`` has not run and
        nothing was sent yet, else with TransportError(sent=False): nothing was created (the
        record was written ahead, or a hop was sent and only answered with a redirect).

        Raises ApiStatusError (a subclass for 401/402, 404, 429), TransportError
        (UnreadableAnswer for an answer too large), ApiProtocolError (a redirect not followed;
        ApiBrokenError for a create), ApiUnavailableError, StopRequested.
        """
        retries = 0
        while True:
            try:
                return await self._call_once(
                    method, path, priority, body, params, _Once(before_send), abandon, create
                )
            except (ApiStatusError, TransportError) as exc:
                if create or retries >= IDEMPOTENT_RETRIES or not answers.transient(exc):
                    raise
                retries += 1
                self._events.say(logging.INFO, "%s %s: %s; asking again", method, path, exc)
                await anyio.sleep(self._retry_wait(retries))

    async def _call_once(
        self,
        method: str,
        path: str,
        priority: Priority,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        once: _Once,
        abandon: anyio.Event | None,
        create: bool,
    ) -> Answer:
        """One try of ``call``: same-origin redirects followed by hand, no fault retried."""
        request = f"{method} {path}"
        url = _url(self._base + path)
        hops = 0
        try:
            for hops in range(MAX_HOPS + 1):  # noqa: B007 (read after the loop)
                answer = await self._reach(
                    method, url, request, priority, body, params, once, abandon
                )
                self._heed_retry_after(answer, create)
                if answer.status not in transport.REDIRECTS:
                    break
                method, url, body = answers.next_hop(
                    request, method, body, answer, self._base, create=create
                )
                params = None  # the Location carries its own query
            else:
                if create:
                    raise ApiBrokenError(
                        f"{request}: more than {MAX_HOPS} redirects; nothing was created"
                    )
                raise ApiProtocolError(f"{request}: more than {MAX_HOPS} redirects")
        except StopRequested:
            if once.ran or hops > 0:  # written ahead, or a hop was sent (and only redirected)
                raise TransportError(
                    f"{request} was not sent: the run is stopping", sent=False
                ) from None
            raise
        if answer.status >= 300:
            raise answers.status_error(answer, self._retry_after.cap)
        return answer

    async def _reach(
        self,
        method: str,
        url: yarl.URL,
        request: str,
        priority: Priority,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        once: _Once,
        abandon: anyio.Event | None,
    ) -> Answer:
        """One answer from the API, retrying while it cannot be reached at all."""
        attempt = 0
        while True:
            if self._unavailable is not None:
                raise ApiUnavailableError(self._unavailable)
            try:
                answer = await self._exchange(
                    method, url, request, priority, body, params, once, abandon
                )
            except TransportError as exc:
                if exc.sent:
                    raise
                attempt += 1
                self._limiter.pause(self._outage.wait(exc, attempt), "the API cannot be reached")
                continue
            self._outage.reached(self.shown)
            return answer

    async def _exchange(
        self,
        method: str,
        url: yarl.URL,
        request: str,
        priority: Priority,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        once: _Once,
        abandon: anyio.Event | None,
    ) -> Answer:
        """One HTTP request in one limiter slot, never following a redirect."""
        # A version-4 UUID from the requester's own generator: uuid4() asks the kernel for
        # randomness on every call, a system call per request. The id only names the request.
        request_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
        headers = {"X-Request-Id": request_id, "Accept": "application/json"}
        if self._key:  # model lookups need no key: a preflight may run without one
            headers["X-API-Key"] = self._key
        async with self._limiter.slot(priority, abandon=abandon, what=request) as slot:
            if abandon is not None and abandon.is_set():
                raise StopRequested("the run is stopping: the request was not sent")
            await once()
            with transport.api_errors(request, self._base):
                async with self._session.request(
                    method,
                    url,
                    json=body,
                    params=params,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as response:
                    slot.refused = response.status == 429
                    data = await _read_at_most(response, MAX_ANSWER_BYTES)
                    if data is None:
                        raise UnreadableAnswer(
                            f"{request} failed: the answer is larger than "
                            f"{MAX_ANSWER_BYTES // (1024 * 1024)} MB"
                        )
                    status, answer_headers = response.status, response.headers
        return Answer(
            status=status,
            text=self.scrub(data.decode("utf-8", errors="replace")),
            request_id=answers.request_id(answer_headers.get("X-Request-Id"), request_id),
            sent_at=slot.granted_at,
            url=url,
            location=answer_headers.get("Location"),
            retry_after=protocol.retry_after(answer_headers.get("Retry-After")),
        )

    def _heed_retry_after(self, answer: Answer, create: bool) -> None:
        """Pause the shared limiter for the answer's Retry-After, cut to the cap.

        On the answer that makes OVER_CAP_IN_A_ROW over the cap, no request is sent any more;
        this one raises ApiUnavailableError too unless that would hide its result (a success,
        or a create whose 5xx leaves it ambiguous).
        """
        asked = answer.retry_after
        pause = self._retry_after.pause(asked)
        if pause is None:
            return
        if asked is not None and asked > pause:
            self._events.say(
                logging.WARNING,
                "the API at %s asked to wait %g s (Retry-After); pausing %g s, the cap "
                "(--max-retry-after)",
                self.shown,
                asked,
                pause,
            )
        self._limiter.pause(pause, f"Retry-After on {answer.status}")
        if not self._retry_after.exhausted:
            return
        self._unavailable = (
            f"the API at {self.shown} asked to wait longer than --max-retry-after "
            f"({self._retry_after.cap:g} s) on {self._retry_after.in_a_row} answers in a row "
            f"(last: {asked:g} s); no more requests are sent"
        )
        ambiguous = create and answer.status >= 500
        if answer.status >= 300 and not ambiguous:
            raise ApiUnavailableError(self._unavailable)


@functools.lru_cache(maxsize=4096)
def _url(text: str) -> yarl.URL:
    """``text`` parsed as a URL, once: a poll asks for the same URL every few seconds, and
    parsing one costs as much as a tenth of the request (yarl keeps few of its own)."""
    return yarl.URL(text)


def _fault_wait(retry: int, *, base: float, rng: random.Random) -> float:
    """Jittered base/2 to base (0.25-0.5 s by default), then doubling: a transient fault clears
    within a second or two."""
    return answers.backoff(retry, base=base, cap=8 * base, rng=rng)


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None (not read further) if it is longer than ``limit`` bytes."""
    if response.content_length is not None:  # the parser stops at it: read it whole at once
        return None if response.content_length > limit else await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
