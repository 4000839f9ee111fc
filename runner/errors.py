"""The one exception tree of the runner.

::

    RunnerError
    ├── ConfigError            bad arguments, environment or configuration (exit 2)
    ├── ManifestError          the manifest cannot be used; carries every problem found (exit 2)
    ├── StorageError           the output directory or a file in it cannot be written (exit 5)
    │   └── LedgerError        the ledger cannot be read or appended to
    ├── LockedError            another runner holds the output directory (exit 4)
    ├── StopRequested          a request was not sent because the run is stopping
    ├── TransferError          a transfer with a host that is not the API failed (not an API error)
    │   └── DownloadError      an output video could not be fetched or failed verification
    └── ApiError               anything the Eachlabs API (or the way to it) did wrong
        ├── TransportError     no usable HTTP answer: refused, reset, timed out
        │   └── AmbiguousCreateError  a create whose outcome is unknown (it may have created one)
        ├── ApiUnavailableError  unreachable for too long, or asks to wait too long (exit 6)
        ├── ApiProtocolError   an answer that breaks the contract: no id, not JSON, a redirect
        │   │                  to another origin, an id that is not a plain id
        │   └── ApiBrokenError the API keeps answering nonsense: the batch stops (exit 7)
        └── ApiStatusError     the server answered with a non-success status
            ├── AccountError       401 / 402: the account cannot submit (exit 3)
            ├── CapacityError      429: the account's in-flight cap or request rate
            └── NotFoundError      404: unknown prediction or model

aiohttp errors, timeouts and ``OSError`` of network calls are translated into these in
``runner.api.transport`` only; nothing else in the package catches aiohttp's own errors.
"""

from __future__ import annotations

from collections.abc import Sequence

from runner.diagnostics import Diagnostic

#: The most of a bug's message shown on its one line (the whole of it is in the traceback).
BUG_TEXT_MAX = 300


class RunnerError(Exception):
    """Root of every error the runner raises on purpose."""


class ConfigError(RunnerError):
    """Arguments, environment or configuration are unusable; nothing was submitted."""


class ManifestError(RunnerError):
    """The manifest cannot be run; ``problems`` lists every error found in one pass."""

    def __init__(self, problems: Sequence[Diagnostic]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the manifest:\n{lines}")


class StorageError(RunnerError):
    """The output directory, the ledger, a video or the summary cannot be written or read.

    Messages name the path and the cause (disk full, read-only, a directory in the way).
    """


def os_cause(exc: OSError) -> str:
    """An OSError as a short cause for a StorageError's message: ``No space left on device``,
    ``Read-only file system``..."""
    return exc.strerror or str(exc)


class LedgerError(StorageError):
    """The ledger cannot be read or appended to."""


class TransferError(RunnerError):
    """A transfer with a host that is not the API (CDN download, presigned upload, URL head).

    ``status`` is the HTTP status when the host answered one, else None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LockedError(RunnerError):
    """Another runner holds the lock on this output directory."""


class InternalError(RunnerError):
    """A bug in the runner, caught at the run's edge: its one-line account (exit 70)."""

    @classmethod
    def of(cls, bug: BaseException) -> InternalError:
        """``bug`` on one line: the error inside a group of one, its type and (the start of)
        its message, whitespace folded."""
        while isinstance(bug, BaseExceptionGroup) and len(bug.exceptions) == 1:
            bug = bug.exceptions[0]
        text = " ".join(str(bug).split())
        if len(text) > BUG_TEXT_MAX:
            text = text[: BUG_TEXT_MAX - 1] + "…"
        name = type(bug).__name__
        return cls(f"internal error ({name}: {text})" if text else f"internal error ({name})")


class StopRequested(RunnerError):
    """A stop was asked for (a signal, an account error) before this request was sent."""


class ApiError(RunnerError):
    """The API, or the network to it, did not do what was asked."""


class TransportError(ApiError):
    """No usable HTTP answer arrived: connection refused or reset, timeout, bad response."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        #: False only when the request provably never left this machine (connect failed).
        self.sent = sent


class AmbiguousCreateError(TransportError):
    """A create request was sent but its answer was lost: a prediction may exist.

    ``answered`` is True when the server did answer, but with nonsense (a 5xx, HTML, no usable
    id), False when no answer came at all (timeout, reset): a run of nonsense answers means a
    broken server, which stops the batch.
    """

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class DownloadError(TransferError):
    """An output file could not be downloaded, or failed its checks."""


class ApiUnavailableError(ApiError):
    """The API could not be reached for longer than allowed, or keeps asking (Retry-After) to
    wait longer than ``--max-retry-after``: the run stops and leaves its items pending."""


class ApiProtocolError(ApiError):
    """An answer that breaks the contract: a create without a usable id, a body that is not
    JSON where JSON is due, a redirect to another origin, an id that is not a plain id."""


class ApiBrokenError(ApiProtocolError):
    """The API keeps answering nonsense: submitting stops rather than pay per item."""


class ApiStatusError(ApiError):
    """The server answered with a non-2xx status.

    ``message`` is the server's own text (``error``/``details`` of the body) when it gave one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        body: object = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.body = body
        self.request_id = request_id
        self.retry_after = retry_after
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"HTTP {status}: {message}{suffix}")


class AccountError(ApiStatusError):
    """401 or 402: the key is refused or the balance is too low; stop submitting."""


class CapacityError(ApiStatusError):
    """429: the account's in-flight cap (or request rate) is reached; nothing was created."""


class NotFoundError(ApiStatusError):
    """404: the prediction or model does not exist."""
