"""The Eachlabs HTTP client on aiohttp: create, get, cancel, model, executions, upload.

Every API request passes through the shared RequestBudget. The key is sent only to the API
base, in ``X-API-Key``; uploads to presigned URLs and CDN downloads never carry it. aiohttp and
timeout errors become project errors here and nowhere else (``runner.download`` does the same
for file transfers).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

from runner import protocol
from runner.budget import (
    PRIORITY_CREATE,
    PRIORITY_OTHER,
    PRIORITY_POLL,
    Priority,
    RequestBudget,
)
from runner.errors import (
    AccountError,
    AmbiguousCreateError,
    ApiError,
    ApiStatusError,
    CapacityError,
    NotFoundError,
    StopRequested,
    TransportError,
)

#: ``version`` is deprecated and ignored by new servers but required by old ones.
CREATE_VERSION = "0.0.1"


@dataclass(frozen=True)
class Presign:
    """An upload slot from ``POST /v1/upload/presign``."""

    presigned_url: str
    public_url: str
    required_headers: Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    request_id: str | None
    sent_at: float


class EachlabsClient:
    """One account's view of the API. The session and budget are owned by the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        budget: RequestBudget,
        *,
        request_timeout: float,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._budget = budget
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)

    def __repr__(self) -> str:  # never show the key
        return f"EachlabsClient({self._base!r})"

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
    ) -> Answer:
        """Send one request within the budget and return its answer.

        ``before_send`` runs once the budget has granted the request and just before it is
        sent (the create's write-ahead record). ``abandon`` set while waiting for the budget
        ends the wait with StopRequested: nothing was sent and ``before_send`` did not run.
        """
        request_id = str(uuid.uuid4())
        headers = {"X-Request-Id": request_id, "Accept": "application/json"}
        if self._key:  # model lookups need no key: a preflight may run without one
            headers["X-API-Key"] = self._key
        async with self._budget.slot(priority, abandon=abandon) as slot:
            if abandon is not None and abandon.is_set():
                raise StopRequested("the run is stopping: the request was not sent")
            if before_send is not None:
                await before_send()
            try:
                async with self._session.request(
                    method,
                    self._base + path,
                    json=body,
                    params=params,
                    headers=headers,
                    timeout=self._timeout,
                ) as response:
                    text = await response.text(errors="replace")
                    wait = protocol.retry_after(response.headers.get("Retry-After"))
                    echoed = response.headers.get("X-Request-Id", request_id)
                    status = response.status
                    slot.refused = status == 429
                    sent_at = slot.granted_at
            except aiohttp.ClientConnectorError as exc:
                raise TransportError(
                    f"cannot connect to {self._base}: {exc.os_error}", sent=False
                ) from None
            except TimeoutError:
                raise TransportError(f"{method} {path} timed out") from None
            except aiohttp.ClientError as exc:
                raise TransportError(
                    f"{method} {path} failed: {type(exc).__name__}: {exc}"
                ) from None
        if wait is not None:
            self._budget.pause(wait)
        if status >= 300:
            self._raise_for(status, text, echoed, wait)
        return Answer(status, text, echoed, sent_at)

    @staticmethod
    def _raise_for(status: int, text: str, request_id: str | None, wait: float | None) -> None:
        message, body = protocol.error_text(text, "")
        kind: type[ApiStatusError] = ApiStatusError
        if status in (401, 402):
            kind = AccountError
        elif status == 429:
            kind = CapacityError
        elif status == 404:
            kind = NotFoundError
        raise kind(status, message, body=body, request_id=request_id, retry_after=wait)

    @staticmethod
    def _json(answer: Answer) -> object:
        try:
            return json.loads(answer.text)
        except ValueError:
            raise ApiError(
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

        ``before_send`` runs after the request budget granted the create and right before it
        is sent: the caller's write-ahead record. ``abandon``, set while the create waits for
        the budget, ends it with StopRequested before anything is written or sent.

        Raises StopRequested, CapacityError (429: nothing created), AccountError (401/402),
        ApiStatusError (4xx: nothing created), TransportError with ``sent=False`` (never
        reached the server), and
        AmbiguousCreateError when the request went out but no clear answer came back (timeout,
        reset, 5xx, an answer without an id): a prediction may exist and must be reconciled.
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
            )
        except TransportError as exc:
            if not exc.sent:
                raise
            raise AmbiguousCreateError(f"create for {model}: {exc}") from None
        except ApiStatusError as exc:
            if exc.status >= 500:
                raise AmbiguousCreateError(f"create for {model}: {exc}") from None
            raise
        try:
            parsed = json.loads(answer.text)
        except ValueError:
            parsed = None
        prediction_id = protocol.created_id(parsed)
        if prediction_id is None:
            raise AmbiguousCreateError(
                f"create for {model} answered {answer.status} without a prediction id: "
                f"{answer.text[:200]!r}"
            )
        return prediction_id

    async def get(
        self, prediction_id: str, *, priority: Priority = PRIORITY_POLL
    ) -> protocol.Prediction:
        """Poll one prediction. Raises NotFoundError, AccountError, TransportError, ApiError.

        ``priority`` ranks this poll against others waiting for the budget (lower goes first).
        """
        answer = await self._call("GET", f"/v1/prediction/{prediction_id}", priority=priority)
        parsed = protocol.parse_prediction(self._json(answer), prediction_id)
        return dataclasses.replace(parsed, sent_at=answer.sent_at)

    async def cancel(self, prediction_id: str) -> None:
        """Ask the server to cancel; best effort (re-poll to learn the outcome)."""
        await self._call("POST", f"/v1/prediction/{prediction_id}/cancel", priority=PRIORITY_OTHER)

    async def model(self, slug: str) -> dict[str, Any]:
        """``GET /v1/model?slug=``: the model's schema object. NotFoundError for an unknown slug."""
        answer = await self._call(
            "GET", "/v1/model", priority=PRIORITY_OTHER, params={"slug": slug}
        )
        body = self._json(answer)
        if not isinstance(body, dict):
            raise ApiError(f"the model answer for {slug!r} is not an object")
        return body

    async def executions(self, **filters: str) -> list[dict[str, Any]]:
        """Every row of ``GET /v1/executions`` matching ``filters``, paging by offset."""
        rows: list[dict[str, Any]] = []
        limit = 100
        while True:
            params = {**filters, "limit": str(limit), "offset": str(len(rows))}
            answer = await self._call(
                "GET", "/v1/executions", priority=PRIORITY_OTHER, params=params
            )
            body = self._json(answer)
            page = body.get("executions") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise ApiError("the executions answer has no list of executions")
            rows.extend(row for row in page if isinstance(row, dict))
            if len(page) < limit:
                return rows

    async def upload(self, data: bytes, content_type: str) -> str:
        """Upload an image through presign + PUT and return its ``public_url``."""
        answer = await self._call(
            "POST",
            "/v1/upload/presign",
            priority=PRIORITY_CREATE,
            body={"content_type": content_type, "file_type": "image"},
        )
        body = self._json(answer)
        if (
            not isinstance(body, dict)
            or not body.get("presigned_url")
            or not body.get("public_url")
        ):
            raise ApiError("the presign answer lacks presigned_url or public_url")
        required = body.get("required_headers")
        headers = (
            {str(k): str(v) for k, v in required.items()} if isinstance(required, dict) else {}
        )
        headers.setdefault("Content-Type", content_type)
        try:
            async with self._session.put(
                str(body["presigned_url"]), data=data, headers=headers, timeout=self._timeout
            ) as response:
                text = await response.text(errors="replace")
                if response.status >= 300:
                    message, _ = protocol.error_text(text, response.reason or "")
                    raise ApiStatusError(response.status, f"image upload refused: {message}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"image upload failed: {type(exc).__name__}: {exc}") from None
        return str(body["public_url"])
