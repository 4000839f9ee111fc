"""The one error boundary of the network, and the URL rules every request obeys (pure helpers).

aiohttp errors, timeouts and ``OSError`` of network calls become project errors here and
nowhere else:

- ``api_errors`` for requests to the Eachlabs API: ``TransportError``, whose ``sent`` is False
  only when the request provably never left this machine (the connection could not be made).
- ``transfer_errors`` for transfers with other hosts (CDN downloads, presigned uploads, image
  URLs): ``TransferError`` or a subclass (``DownloadError``), never an ``ApiError``.

``failure`` is the table behind both: an exception in, a short reason and ``sent`` out. Reasons
never quote the URL (it may hold a signature or credentials); callers name the host themselves,
through ``origin`` or ``config.redact_url``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
import yarl

from runner.config import redact_url
from runner.errors import TransferError, TransportError

#: Everything a network call may raise that is not ours: caught in this module only.
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)

#: Statuses that carry a ``Location`` to follow.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Redirects after which the method and body stay as they were (the others turn into a GET).
KEEP_METHOD = frozenset({307, 308})


@dataclass(frozen=True)
class Failure:
    """What a failed network call amounts to: a short reason, and whether it may have left."""

    reason: str
    sent: bool


def failure(exc: BaseException, *, stall: float | None = None) -> Failure:
    """Describe a network error; ``stall`` is the per-read timeout in force (for its wording).

    ``sent`` is False only for failures before a connection existed (refused, unreachable,
    name resolution, TLS handshake, connect timeout) and for a URL aiohttp refused to use:
    the request never left. Anything else may have reached the server.
    """
    match exc:
        case aiohttp.ClientConnectorDNSError():
            return Failure(f"cannot resolve the host name {exc.host}", sent=False)
        case aiohttp.ClientConnectorCertificateError():
            detail = type(exc.certificate_error).__name__
            return Failure(f"the host's TLS certificate was refused ({detail})", sent=False)
        case aiohttp.ClientSSLError():
            return Failure("the TLS handshake failed", sent=False)
        case aiohttp.ClientConnectorError():
            return Failure(_os_reason(exc.os_error), sent=False)
        case aiohttp.ConnectionTimeoutError():
            return Failure("the connection timed out", sent=False)
        case aiohttp.RedirectClientError():  # the request went out; its redirect was refused
            return Failure("a redirect to an unusable or non-http(s) URL", sent=True)
        case aiohttp.InvalidURL() | aiohttp.NonHttpUrlClientError():
            return Failure("the URL is not a usable http(s) URL", sent=False)
        case aiohttp.SocketTimeoutError():
            waited = f"for {stall:g} s" if stall is not None else "in time"
            return Failure(f"no data {waited}", sent=True)
        case TimeoutError():
            return Failure("no answer in time", sent=True)
        case aiohttp.ServerDisconnectedError():
            return Failure("the server closed the connection", sent=True)
        case aiohttp.ClientPayloadError():
            return Failure("the body was cut short", sent=True)
        case aiohttp.ClientResponseError():
            return Failure(f"an unusable answer (HTTP {exc.status})", sent=True)
        case ConnectionResetError():
            return Failure("the connection was reset", sent=True)
        case OSError():  # aiohttp's ClientOSError among them
            return Failure(_os_reason(exc), sent=True)
        case _:
            return Failure(f"a network error ({type(exc).__name__})", sent=True)


def _os_reason(exc: OSError) -> str:
    """The system's words for the error (``connection refused``), else the error's class."""
    text = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else None
    text = text or exc.strerror
    if not text:
        return f"a network error ({type(exc).__name__})"
    return text[:1].lower() + text[1:]


@contextmanager
def api_errors(request: str, base: str) -> Iterator[None]:
    """Network errors in the block become TransportError.

    Never sent: ``cannot connect to <base>: <reason>`` (``sent=False``); else
    ``<request> failed: <reason>``. ``base`` is shown redacted.
    """
    try:
        yield
    except NETWORK_ERRORS as exc:
        found = failure(exc)
        if not found.sent:
            message = f"cannot connect to {redact_url(base)}: {found.reason}"
        else:
            message = f"{request} failed: {found.reason}"
        raise TransportError(message, sent=found.sent) from None


@contextmanager
def transfer_errors(
    what: str, error: type[TransferError] = TransferError, *, stall: float | None = None
) -> Iterator[None]:
    """Network errors in the block become ``error(f"{what}: {reason}")`` with no status.

    Only network errors are translated: a project error raised in the block passes through.
    """
    try:
        yield
    except NETWORK_ERRORS as exc:
        reason = failure(exc, stall=stall).reason
        raise error(f"{what}: {reason}" if what else reason) from None


# -- URL rules -------------------------------------------------------------------------------


def origin(url: str | yarl.URL) -> str:
    """``scheme://host[:port]`` of ``url``, without credentials, path or query: what messages
    may show of a host (``scheme:`` alone for a URL without a host)."""
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
        if parsed.host is None:
            return redact_url(f"{parsed.scheme}:" if parsed.scheme else "a relative URL")
        return redact_url(str(parsed.origin()))
    except ValueError:
        return "an unparsable URL"


def _key(url: yarl.URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def same_origin(a: str | yarl.URL, b: str | yarl.URL) -> bool:
    """Whether two URLs share scheme, host and port (default ports filled in)."""
    try:
        first = a if isinstance(a, yarl.URL) else yarl.URL(a)
        second = b if isinstance(b, yarl.URL) else yarl.URL(b)
    except ValueError:
        return False
    if not first.host or not second.host:
        return False
    return _key(first) == _key(second)


def location(request_url: str | yarl.URL, header: str | None) -> yarl.URL | None:
    """The absolute URL a redirect's ``Location`` names, resolved against the request's URL;
    None when there is no usable one."""
    if not header or not header.strip():
        return None
    try:
        base = request_url if isinstance(request_url, yarl.URL) else yarl.URL(request_url)
        target = base.join(yarl.URL(header.strip()))
    except ValueError:
        return None
    return target if target.scheme else None


def is_http(url: str | yarl.URL) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host."""
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)
