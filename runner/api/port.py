"""What the engine asks of the outside world, as protocols: the API (``Api``) and the CDN
that serves the finished videos (``VideoFetcher``).

The engine is typed against these, not against ``EachlabsClient`` and an aiohttp session, so a
test can hand it an in-memory fake on a virtual clock. Production satisfies them with
``EachlabsClient`` (structurally: nothing here is a base class) and ``transfers.SessionFetcher``
(``fetch_video`` over the run's session); mypy checks both where ``BatchRunner.run`` passes
them.

Every error an implementation raises is one of ``runner.errors``; the engine sorts them with
``runner.engine.decisions.classify``, so a fake that raises anything else is a bug the engine
reports, not an answer it acts on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio

from runner.api.protocol import Prediction
from runner.api.ratelimit import PRIORITY_POLL, Priority
from runner.api.transfers import Downloaded


class Api(Protocol):
    """One account's view of the Eachlabs API, as the engine uses it.

    Every call passes the run's shared ``RateLimiter`` (one slot per request sent). The
    errors are those of ``runner.errors``:

    - ``create`` waits for the window with ``PRIORITY_CREATE``; ``abandon`` set during that
      wait ends it with StopRequested, nothing written or sent. Once granted it awaits
      ``before_send`` (the write-ahead record, at most once), then sends. Raises
      TransportError(sent=False) (nothing reached the server), CapacityError (429),
      AccountError (401/402), ApiStatusError (another 4xx), ApiUnavailableError,
      ApiBrokenError (a create redirected away), and AmbiguousCreateError when the create
      went out but no usable answer came: a prediction may exist (reconcile it).
    - ``get`` returns one poll of a prediction (``priority`` ranks it against other waiting
      polls, lower first). Raises NotFoundError (404), AccountError, CapacityError,
      ApiStatusError, ApiProtocolError (an id that is not plain, an unreadable answer),
      TransportError, ApiUnavailableError.
    - ``cancel`` asks the server to cancel (best effort: poll to learn the outcome); raises as
      ``get`` does.
    - ``executions`` returns every row of ``GET /v1/executions`` matching ``filters`` (the
      engine passes ``model``, ``from`` and ``to``); raises ApiProtocolError for an answer
      without a list, and the other errors as ``get`` does.
    - ``upload`` uploads an image and returns its public URL; raises as ``get`` does for the
      presign, TransferError for the PUT to the upload host.
    """

    async def create(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
        abandon: anyio.Event | None = None,
    ) -> str: ...

    async def get(
        self, prediction_id: str, *, priority: Priority = PRIORITY_POLL
    ) -> Prediction: ...

    async def cancel(self, prediction_id: str) -> None: ...

    async def executions(self, **filters: str) -> list[dict[str, Any]]: ...

    async def upload(self, data: bytes, content_type: str) -> str: ...


class VideoFetcher(Protocol):
    """Downloads a finished prediction's video from ``url`` to ``dest``, atomically, and
    returns its size and sha256: ``transfers.fetch_video`` without the session (see it for
    the arguments). Raises DownloadError (its ``status`` in ``transfers.GONE`` when the URL
    has expired or vanished: the engine re-polls once for a fresh one) and StorageError
    (``dest`` cannot be written)."""

    async def __call__(
        self,
        url: str,
        dest: Path,
        *,
        seconds: float,
        stall: float,
        max_bytes: int,
        label: str | None,
        wait: float,
    ) -> Downloaded: ...
