"""The Eachlabs API's endpoints: create, get, cancel, model, executions, upload.

``EachlabsClient`` turns each endpoint into one call of ``runner.api.requester`` (the request
window, redirects by hand, Retry-After, retries, outages) and its answer into plain values
(``runner.api.protocol``), raising ApiError and its subclasses. Only plain ids are accepted
from a create and put in a URL. The image upload's PUT to the presigned host is a transfer
(``runner.api.imagehosts``): it never carries the key and fails as TransferError.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import anyio
import yarl

from runner.api import answers, imagehosts, protocol, transport
from runner.api.ratelimit import (
    PRIORITY_CREATE,
    PRIORITY_OTHER,
    PRIORITY_POLL,
    Priority,
    RateLimiter,
)
from runner.api.requester import Requester, UnreadableAnswer
from runner.config import (
    DEFAULT_FAULT_WAIT,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_UNREACHABLE_AFTER,
    DEFAULT_UNREACHABLE_AT_START,
    Limits,
)
from runner.errors import (
    AmbiguousCreateError,
    ApiProtocolError,
    ApiStatusError,
    TransportError,
)
from runner.jobs import valid_id

#: ``version`` is deprecated and ignored by new servers but required by old ones.
CREATE_VERSION = "0.0.1"
#: ``GET /v1/executions`` page size (the API's maximum), and the most rows read for one lookup:
#: a server that never sends a short page must not page forever.
EXECUTIONS_PAGE = 100
MAX_EXECUTION_ROWS = 10_000


class EachlabsClient:
    """One account's view of the API. The session and limiter are owned by the caller.

    The session must carry no key of its own (no default ``X-API-Key`` or ``Authorization``):
    the client adds the key to API requests only, and downloads share the session. The client
    switches off aiohttp's hidden resend of a dropped GET on that session (``Requester``).
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
        """Every request (a retry, a hop) passes ``limiter``; each waits at most
        ``request_timeout`` s for its answer. A ``Retry-After`` is cut to ``max_retry_after``.
        An unreachable API is given up after ``unreachable_after`` s of outage
        (``unreachable_at_start`` before its first answer). ``backoff(n)`` is the wait before
        the n-th retry of an unreachable API (n >= 1); ``clock`` measures outages;
        ``retry_wait(n)`` is the wait before asking again after the n-th transient fault, by
        default from ``fault_wait`` (all injectable for tests)."""
        self._session = session
        self._requests = Requester(
            session,
            base_url,
            api_key,
            limiter,
            request_timeout=request_timeout,
            max_retry_after=max_retry_after,
            unreachable_after=unreachable_after,
            unreachable_at_start=unreachable_at_start,
            backoff=backoff,
            clock=clock,
            retry_wait=retry_wait,
            fault_wait=fault_wait,
        )
        self._upload_timeout = aiohttp.ClientTimeout(total=request_timeout)

    @classmethod
    def for_limits(
        cls,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        limiter: RateLimiter,
        limits: Limits,
    ) -> EachlabsClient:
        """A client that waits as ``limits`` say: request timeout, Retry-After cap, outage
        limits, fault back-off."""
        return cls(
            session,
            base_url,
            api_key,
            limiter,
            request_timeout=limits.request_timeout,
            max_retry_after=limits.max_retry_after,
            unreachable_after=limits.unreachable_after,
            unreachable_at_start=limits.unreachable_at_start,
            fault_wait=limits.fault_wait,
        )

    def __repr__(self) -> str:  # never show the key
        return f"EachlabsClient({self._requests.shown!r})"

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
            answer = await self._requests.call(
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
            answered = isinstance(exc, UnreadableAnswer)
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
        answer = await self._requests.call(
            "GET", f"/v1/prediction/{prediction_id}", priority=priority
        )
        return protocol.parse_prediction(answers.json_body(answer), prediction_id, answer.sent_at)

    async def cancel(self, prediction_id: str) -> None:
        """Ask the server to cancel; best effort (re-poll to learn the outcome).

        Raises as ``get`` does (an id that is not plain: ApiProtocolError, nothing sent).
        """
        self._check_id(prediction_id)
        await self._requests.call(
            "POST", f"/v1/prediction/{prediction_id}/cancel", priority=PRIORITY_OTHER
        )

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
        answer = await self._requests.call(
            "GET", "/v1/model", priority=PRIORITY_OTHER, params={"slug": slug}
        )
        body = answers.json_body(answer)
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
            answer = await self._requests.call(
                "GET", "/v1/executions", priority=PRIORITY_OTHER, params=params
            )
            body = answers.json_body(answer)
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
        http(s) URLs, or naming a required header that cannot be sent). The PUT goes to the
        presigned host without the key (``imagehosts.put_image``) and raises TransferError,
        never an ApiError: with the host's ``status`` when it answered one (a 4xx or a redirect
        other than 307/308 to http(s): refused, permanent; a 5xx: transient), ``status`` None
        when it did not answer (transient).
        """
        answer = await self._requests.call(
            "POST",
            "/v1/upload/presign",
            priority=PRIORITY_CREATE,
            body={"content_type": content_type, "file_type": "image"},
        )
        body = answers.json_body(answer)
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
        if not all(transport.sendable_header(name, value) for name, value in headers.items()):
            raise ApiProtocolError(
                "the presign answer's required_headers hold a header that cannot be sent "
                "(a control character, or a name that is not a header name)"
            )
        headers.setdefault("Content-Type", content_type)
        await imagehosts.put_image(
            self._session,
            yarl.URL(presigned),
            data,
            headers,
            limits=self._upload_timeout,
            scrub=self._requests.scrub,
        )
        return public
