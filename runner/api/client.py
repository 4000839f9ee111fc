"""The Eachlabs HTTP client on aiohttp: create, get, cancel, model, executions, upload.

Every API request passes through the shared RateLimiter, and every network error through
``runner.api.transport`` (the one place they become project errors). What a hostile or broken API
cannot do to a run:

- **have the key sent elsewhere.** Requests never follow redirects on their own. A 3xx whose
  ``Location`` is on the API base's origin (scheme, host, port) is followed by hand, at most
  MAX_HOPS times (307/308 keep method and body; a GET stays a GET; any other POST redirect is
  refused); a ``Location`` anywhere else is refused with ApiProtocolError (ApiBrokenError for a
  create: nothing was created, and a misconfigured base must stop the batch). Uploads to
  presigned URLs and CDN downloads never carry the key.
- **stall the batch for hours.** A ``Retry-After`` is cut to ``max_retry_after``; a server that
  asks for more on OVER_CAP_IN_A_ROW answers in a row makes the client raise
  ApiUnavailableError, and every later request too, before anything is sent.
- **turn an id into a path.** Only plain ids are accepted from a create and put in a URL.
- **flood memory or logs.** Answers over MAX_ANSWER_BYTES are not read; the key is scrubbed
  from every server text put in a message; the base is shown redacted.

An API that cannot be reached (a request that provably never left) is retried here with jittered
exponential back-off, holding the shared limiter so other requests do not pile on, until the
outage has lasted ``unreachable_after`` (``unreachable_at_start`` before the first answer):
then ApiUnavailableError. A create is retried like any other request then (nothing was sent),
and its ``before_send`` runs at most once.
"""

from __future__ import annotations

import json
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import aiohttp
import anyio
import yarl

from runner.api import protocol, transport
from runner.api.ratelimit import (
    PRIORITY_CREATE,
    PRIORITY_OTHER,
    PRIORITY_POLL,
    Priority,
    RateLimiter,
)
from runner.config import (
    DEFAULT_FAULT_WAIT,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_UNREACHABLE_AFTER,
    DEFAULT_UNREACHABLE_AT_START,
    redact_url,
)
from runner.engine import policy
from runner.errors import (
    AccountError,
    AmbiguousCreateError,
    ApiBrokenError,
    ApiProtocolError,
    ApiStatusError,
    ApiUnavailableError,
    CapacityError,
    NotFoundError,
    StopRequested,
    TransferError,
    TransportError,
)
from runner.jobs import valid_id

log = logging.getLogger("runner")

#: ``version`` is deprecated and ignored by new servers but required by old ones.
CREATE_VERSION = "0.0.1"
#: Same-origin redirects followed for one API request (and 307/308 hops for one upload).
MAX_HOPS = 3
#: The largest API answer read. The biggest real ones (a page of 100 executions, a model's
#: schema) are tens of KB; an answer past this is not an answer, and is not held in memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: A TCP + TLS handshake that takes longer than this (or half the request timeout, if less)
#: counts as a connect timeout: the request provably never left, and is retried as unreachable.
CONNECT_TIMEOUT = 10.0
#: Back-off while the API is unreachable: jittered, from 0.5 s doubling to 30 s.
UNREACHABLE_WAIT_BASE = 0.5
UNREACHABLE_WAIT_MAX = 30.0
#: ``GET /v1/executions`` page size (the API's maximum), and the most rows read for one lookup:
#: a server that never sends a short page must not page forever.
EXECUTIONS_PAGE = 100
MAX_EXECUTION_ROWS = 10_000
#: An echoed ``X-Request-Id`` is shown in messages only if it looks like one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


@dataclass(frozen=True)
class Presign:
    """An upload slot from ``POST /v1/upload/presign``."""

    presigned_url: str
    public_url: str
    required_headers: Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the API, read whole (at most MAX_ANSWER_BYTES)."""

    status: int
    text: str
    request_id: str | None
    sent_at: float
    url: yarl.URL
    location: str | None = None
    retry_after: float | None = None


class _Unreadable(TransportError):
    """An answer came but was not read (larger than MAX_ANSWER_BYTES)."""


class _Once:
    """A request's ``before_send``: run at most once however often the request is tried."""

    def __init__(self, hook: Callable[[], Awaitable[None]] | None) -> None:
        self._hook = hook
        self.ran = False

    async def __call__(self) -> None:
        if self._hook is not None and not self.ran:
            self.ran = True
            await self._hook()


#: Transient faults (5xx, a lost answer) after which a request other than a create is sent
#: again, and the statuses that count as transient: the real service's gateways answer them.
IDEMPOTENT_RETRIES = 2
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})


def _transient(exc: ApiStatusError | TransportError) -> bool:
    """A fault worth one more try: a 5xx from a gateway, or an answer lost on the way."""
    if isinstance(exc, ApiStatusError):
        return exc.status in TRANSIENT_STATUSES
    return exc.sent


def _fault_wait(retry: int, *, base: float, rng: random.Random) -> float:
    """Jittered base/2 to base (0.25-0.5 s by default), then doubling: a transient fault clears
    within a second or two."""
    return policy.backoff(retry, base=base, cap=8 * base, rng=rng)


class EachlabsClient:
    """One account's view of the API. The session and limiter are owned by the caller.

    The session must carry no key of its own (no default ``X-API-Key`` or ``Authorization``):
    the client adds the key to API requests only, and downloads share the session. The client
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
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
        unreachable_at_start: float = DEFAULT_UNREACHABLE_AT_START,
        backoff: Callable[[int], float] | None = None,
        clock: Callable[[], float] | None = None,
        retry_wait: Callable[[int], float] | None = None,
        fault_wait: float = DEFAULT_FAULT_WAIT,
    ) -> None:
        """``backoff(n)`` is the wait before the n-th retry of an unreachable API (n >= 1);
        ``clock`` measures outages; ``retry_wait(n)`` is the wait before asking again after
        the n-th transient fault, by default from ``fault_wait`` (all injectable for tests)."""
        self._session = session
        # aiohttp silently sends a GET or PUT again when its connection drops unanswered; that
        # second request would bypass the request window, which must count every request the
        # server sees. Retries are ours (``_call``), through the window. (aiohttp's own test
        # client switches this off the same way.)
        session._retry_connection = False
        self._base = base_url.rstrip("/")
        self._shown = redact_url(self._base)
        self._key = api_key
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_connect=min(CONNECT_TIMEOUT, request_timeout / 2)
        )
        self._upload_timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retry_after = protocol.RetryAfterCap(max_retry_after)
        self._unavailable: str | None = None  # once set, no request is sent any more
        self._unreachable_after = unreachable_after
        self._unreachable_at_start = unreachable_at_start
        self._backoff = backoff or partial(_unreachable_wait, rng=random.Random())
        self._clock = clock or anyio.current_time
        self._retry_wait = retry_wait or partial(_fault_wait, base=fault_wait, rng=random.Random())
        self._answered = False  # the API answered this client at least once
        self._outage_since: float | None = None

    def __repr__(self) -> str:  # never show the key
        return f"EachlabsClient({self._shown!r})"

    # -- the one place requests are made -------------------------------------------------

    async def _call(
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
        """``_call_once``, tried again after a transient fault (a 500/502/503/504, or a request
        sent whose answer was lost) up to IDEMPOTENT_RETRIES times, for every request but a
        create: asking again is harmless for them, never for a create."""
        retries = 0
        while True:
            try:
                return await self._call_once(
                    method,
                    path,
                    priority=priority,
                    body=body,
                    params=params,
                    before_send=before_send,
                    abandon=abandon,
                    create=create,
                )
            except (ApiStatusError, TransportError) as exc:
                if create or retries >= IDEMPOTENT_RETRIES or not _transient(exc):
                    raise
                retries += 1
                log.info("%s %s: %s; asking again", method, path, exc)
                await anyio.sleep(self._retry_wait(retries))

    async def _call_once(
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
        """Send one request within the limiter, following same-origin redirects by hand, and
        return its 2xx answer; raise for anything else.

        ``before_send`` runs once the limiter has granted the request and just before it is
        first sent (the create's write-ahead record), never twice. ``abandon`` set while waiting
        for the limiter ends the wait with StopRequested if ``before_send`` has not run and
        nothing was sent yet, else with TransportError(sent=False): nothing was created (the
        record was written ahead, or a hop was sent and only answered with a redirect).
        """
        request = f"{method} {path}"
        once = _Once(before_send)
        url = yarl.URL(self._base + path)
        hops = 0
        try:
            for hops in range(MAX_HOPS + 1):  # noqa: B007 (read after the loop)
                answer = await self._reach(
                    method, url, request, priority, body, params, once, abandon
                )
                self._heed_retry_after(answer, create)
                if answer.status not in transport.REDIRECTS:
                    break
                method, url, body = self._redirect(request, method, body, answer, create)
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
            self._raise_for(answer)
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
                self._limiter.pause(self._unreachable(exc, attempt))
                continue
            self._reached()
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
        request_id = str(uuid.uuid4())
        headers = {"X-Request-Id": request_id, "Accept": "application/json"}
        if self._key:  # model lookups need no key: a preflight may run without one
            headers["X-API-Key"] = self._key
        async with self._limiter.slot(priority, abandon=abandon) as slot:
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
                        raise _Unreadable(
                            f"{request} failed: the answer is larger than "
                            f"{MAX_ANSWER_BYTES // (1024 * 1024)} MB"
                        )
                    status, answer_headers = response.status, response.headers
        return Answer(
            status=status,
            text=self._scrub(data.decode("utf-8", errors="replace")),
            request_id=_request_id(answer_headers.get("X-Request-Id"), request_id),
            sent_at=slot.granted_at,
            url=url,
            location=answer_headers.get("Location"),
            retry_after=protocol.retry_after(answer_headers.get("Retry-After")),
        )

    # -- what an answer or its absence means -----------------------------------------------

    def _unreachable(self, exc: TransportError, attempt: int) -> float:
        """Count one request that never left; the seconds to hold every request before the
        next try. Raises ApiUnavailableError once the outage has lasted too long."""
        now = self._clock()
        limit = self._unreachable_after if self._answered else self._unreachable_at_start
        if self._outage_since is None:
            self._outage_since = now
            log.warning("%s; retrying for up to %g s", exc, limit)
        lasted = now - self._outage_since
        if lasted >= limit:
            raise ApiUnavailableError(
                f"{exc}; the API has been unreachable for {lasted:.0f} s (the limit is {limit:g} s)"
            )
        return max(0.0, min(self._backoff(attempt), limit - lasted))

    def _reached(self) -> None:
        self._answered = True
        if self._outage_since is not None:
            lasted = self._clock() - self._outage_since
            self._outage_since = None
            log.info("the API at %s answers again (unreachable for %.1f s)", self._shown, lasted)

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
            log.warning(
                "the API at %s asked to wait %g s (Retry-After); pausing %g s, the cap "
                "(--max-retry-after)",
                self._shown,
                asked,
                pause,
            )
        self._limiter.pause(pause)
        if not self._retry_after.exhausted:
            return
        self._unavailable = (
            f"the API at {self._shown} asked to wait longer than --max-retry-after "
            f"({self._retry_after.cap:g} s) on {self._retry_after.in_a_row} answers in a row "
            f"(last: {asked:g} s); no more requests are sent"
        )
        ambiguous = create and answer.status >= 500
        if answer.status >= 300 and not ambiguous:
            raise ApiUnavailableError(self._unavailable)

    def _redirect(
        self,
        request: str,
        method: str,
        body: Mapping[str, Any] | None,
        answer: Answer,
        create: bool,
    ) -> tuple[str, yarl.URL, Mapping[str, Any] | None]:
        """The next hop of a redirect: ``(method, url, body)``; raise if it is not followed."""
        refused = ApiBrokenError if create else ApiProtocolError
        done = "; nothing was created" if create else ""
        target = transport.location(answer.url, answer.location)
        if target is None:
            raise refused(
                f"{request}: the API answered {answer.status} without a usable Location{done}"
            )
        if not transport.same_origin(target, self._base):
            raise refused(
                f"{request}: the API at {self._shown} answered {answer.status} with a redirect "
                f"to {transport.origin(target)}: not followed, the API key is never sent to "
                f"another host{done}"
            )
        if answer.status not in transport.KEEP_METHOD and method != "GET":
            raise refused(
                f"{request}: the API answered {answer.status}, a redirect that would turn this "
                f"{method} into a GET: not followed{done}"
            )
        base = yarl.URL(self._base)
        target = target.with_user(None)
        if base.user is not None:
            target = target.with_user(base.user).with_password(base.password)
        return method, target, body

    def _raise_for(self, answer: Answer) -> None:
        message, body = protocol.error_text(answer.text, "", answer.status)
        status = answer.status
        kind: type[ApiStatusError] = ApiStatusError
        if status in (401, 402):
            kind = AccountError
        elif status == 429:
            kind = CapacityError
        elif status == 404:
            kind = NotFoundError
        retry_after = answer.retry_after
        if retry_after is not None:
            retry_after = min(retry_after, self._retry_after.cap)
        raise kind(
            status, message, body=body, request_id=answer.request_id, retry_after=retry_after
        )

    def _scrub(self, text: str) -> str:
        """Server text with the key (should a server echo it) blanked out."""
        if len(self._key) >= 8:
            return text.replace(self._key, "***")
        return text

    @staticmethod
    def _json(answer: Answer) -> object:
        try:
            return json.loads(answer.text)
        except ValueError:
            raise ApiProtocolError(
                f"the API answered {answer.status} with a body that is not JSON: "
                f"{answer.text[:200]!r}"
            ) from None

    # -- endpoints -------------------------------------------------------------------------

    async def create(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        abandon: anyio.Event | None = None,
    ) -> str:
        """Create a prediction and return its id.

        ``before_send`` runs after the request window granted the create and right before it
        is sent, at most once: the caller's write-ahead record. ``abandon``, set while the
        create waits for the limiter, ends it with StopRequested before anything is written or
        sent.

        Raises, with nothing created:
        StopRequested (``before_send`` did not run, nothing was sent);
        TransportError with ``sent=False`` (never sent, or stopped while retrying an
        unreachable API; ``before_send`` may have run);
        ApiUnavailableError (unreachable for too long, or Retry-After over the cap too often);
        CapacityError (429), AccountError (401/402), ApiStatusError (another 4xx);
        ApiBrokenError (a redirect: to another origin, too many, or turning the POST into a
        GET; a misconfigured base: stop the batch).
        And AmbiguousCreateError when the request went out but no clear answer came back: a
        prediction may exist and must be reconciled. Its ``answered`` is True when the server
        did answer, with nonsense (a 5xx, an answer without a plain id, one too large to read),
        False when no answer came (timeout, reset).
        """
        body = {"model": model, "version": CREATE_VERSION, "input": dict(input)}
        try:
            answer = await self._call(
                "POST",
                "/v1/prediction",
                priority=PRIORITY_CREATE,
                body=body,
                before_send=before_send,
                abandon=abandon,
                create=True,
            )
        except TransportError as exc:
            if not exc.sent:
                raise
            answered = isinstance(exc, _Unreadable)
            raise AmbiguousCreateError(f"create for {model}: {exc}", answered=answered) from None
        except ApiStatusError as exc:
            if exc.status >= 500:
                raise AmbiguousCreateError(f"create for {model}: {exc}", answered=True) from None
            raise
        try:
            parsed = json.loads(answer.text)
        except ValueError:
            parsed = None
        prediction_id = protocol.created_id(parsed)
        if prediction_id is None:
            raise AmbiguousCreateError(
                f"create for {model} answered {answer.status} without a plain prediction id: "
                f"{answer.text[:200]!r}",
                answered=True,
            )
        return prediction_id

    async def get(
        self, prediction_id: str, *, priority: Priority = PRIORITY_POLL
    ) -> protocol.Prediction:
        """Poll one prediction. ``priority`` ranks this poll against others waiting for the
        limiter (lower goes first).

        Raises ApiProtocolError (an id that is not plain: nothing is sent; a redirect to
        another origin; a body that is not JSON), NotFoundError, AccountError, CapacityError,
        ApiStatusError, TransportError, ApiUnavailableError.
        """
        self._check_id(prediction_id)
        answer = await self._call("GET", f"/v1/prediction/{prediction_id}", priority=priority)
        parsed = protocol.parse_prediction(self._json(answer), prediction_id)
        return replace(parsed, sent_at=answer.sent_at)

    async def cancel(self, prediction_id: str) -> None:
        """Ask the server to cancel; best effort (re-poll to learn the outcome).

        Raises as ``get`` does (an id that is not plain: ApiProtocolError, nothing sent).
        """
        self._check_id(prediction_id)
        await self._call("POST", f"/v1/prediction/{prediction_id}/cancel", priority=PRIORITY_OTHER)

    @staticmethod
    def _check_id(prediction_id: str) -> None:
        if not valid_id(prediction_id):
            raise ApiProtocolError(
                f"{str(prediction_id)[:80]!r} is not a plain prediction id: nothing was sent"
            )

    async def model(self, slug: str) -> dict[str, Any]:
        """``GET /v1/model?slug=``: the model's schema object.

        Raises NotFoundError for an unknown slug, ApiProtocolError for an answer that is not a
        JSON object, and the other request errors as ``get`` does.
        """
        answer = await self._call(
            "GET", "/v1/model", priority=PRIORITY_OTHER, params={"slug": slug}
        )
        body = self._json(answer)
        if not isinstance(body, dict):
            raise ApiProtocolError(f"the model answer for {slug!r} is not an object")
        return body

    async def executions(self, **filters: str) -> list[dict[str, Any]]:
        """Every row of ``GET /v1/executions`` matching ``filters``, paging by offset.

        Raises ApiProtocolError for an answer without a list of executions or for more than
        MAX_EXECUTION_ROWS rows, and the other request errors as ``get`` does.
        """
        rows: list[dict[str, Any]] = []
        while True:
            params = {**filters, "limit": str(EXECUTIONS_PAGE), "offset": str(len(rows))}
            answer = await self._call(
                "GET", "/v1/executions", priority=PRIORITY_OTHER, params=params
            )
            body = self._json(answer)
            page = body.get("executions") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise ApiProtocolError("the executions answer has no list of executions")
            rows.extend(row for row in page if isinstance(row, dict))
            if len(page) < EXECUTIONS_PAGE:
                return rows
            if len(rows) >= MAX_EXECUTION_ROWS:
                raise ApiProtocolError(
                    f"the executions lookup passed {MAX_EXECUTION_ROWS} rows without an end"
                )

    async def upload(self, data: bytes, content_type: str) -> str:
        """Upload an image through presign + PUT and return its ``public_url``.

        The presign is an API request (errors as ``get``; ApiProtocolError for an answer without
        http(s) URLs). The PUT goes to the presigned host without the key and raises
        TransferError, never an ApiError: with the host's ``status`` when it answered one (a
        4xx or a redirect other than 307/308 to http(s): refused, permanent; a 5xx: transient),
        ``status`` None when it did not answer (transient).
        """
        answer = await self._call(
            "POST",
            "/v1/upload/presign",
            priority=PRIORITY_CREATE,
            body={"content_type": content_type, "file_type": "image"},
        )
        body = self._json(answer)
        presigned = body.get("presigned_url") if isinstance(body, dict) else None
        public = body.get("public_url") if isinstance(body, dict) else None
        if not (isinstance(presigned, str) and transport.is_http(presigned)) or not (
            isinstance(public, str) and transport.is_http(public)
        ):
            raise ApiProtocolError(
                "the presign answer lacks an http(s) presigned_url or public_url"
            )
        assert isinstance(body, dict)
        required = body.get("required_headers")
        headers = (
            {str(k): str(v) for k, v in required.items()} if isinstance(required, dict) else {}
        )
        headers.setdefault("Content-Type", content_type)
        await self._put(yarl.URL(presigned), data, headers)
        return public

    async def _put(self, url: yarl.URL, data: bytes, headers: Mapping[str, str]) -> None:
        """PUT ``data`` to a presigned URL, following 307/308 to http(s) URLs only."""
        for _hop in range(MAX_HOPS + 1):
            host = transport.origin(url)
            with transport.transfer_errors(f"the image upload to {host} failed"):
                async with self._session.put(
                    url,
                    data=data,
                    headers=headers,
                    timeout=self._upload_timeout,
                    allow_redirects=False,
                ) as response:
                    status, reason = response.status, response.reason or ""
                    where = response.headers.get("Location")
                    text = self._scrub(
                        (await response.content.read(4096)).decode("utf-8", errors="replace")
                    )
            if status < 300:
                return
            if status in transport.KEEP_METHOD:
                target = transport.location(url, where)
                if target is not None and transport.is_http(target):
                    url = target
                    continue
                shown = transport.origin(target) if target is not None else "no usable URL"
                raise TransferError(
                    f"the image upload to {host} was redirected ({status}) to {shown}: "
                    "not followed",
                    status=status,
                )
            message, _ = protocol.error_text(text, reason)
            raise TransferError(
                f"the image upload to {host} was refused: HTTP {status}: {message}",
                status=status,
            )
        raise TransferError(f"the image upload made more than {MAX_HOPS} redirects", status=status)


def _unreachable_wait(attempt: int, *, rng: random.Random) -> float:
    """The jittered wait before the ``attempt``-th retry of an unreachable API (1: ~0.5 s)."""
    return policy.backoff(
        attempt - 1, base=UNREACHABLE_WAIT_BASE, cap=UNREACHABLE_WAIT_MAX, rng=rng
    )


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None (not read further) if it is longer than ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _request_id(echoed: str | None, sent: str) -> str:
    """The request id to quote: the server's echo if it looks like one, else ours."""
    return echoed if echoed and _REQUEST_ID.fullmatch(echoed) else sent
