"""The one error boundary of the network, and the URL and header rules every request obeys.

aiohttp errors, timeouts (asyncio's, anyio's, aiohttp's) and ``OSError`` of network calls (a
refused connection, a reset, a TLS failure) become project errors here and nowhere else:

- ``api_errors`` for requests to the Eachlabs API: ``TransportError``, whose ``sent`` is False
  only when the request provably never left this machine (the connection could not be made).
- ``transfer_errors`` for transfers with other hosts (CDN downloads, presigned uploads, image
  URLs): ``TransferError`` or a subclass (``DownloadError``), never an ``ApiError``.

``failure`` is the table behind both: an exception in, a short reason and ``sent`` out. Reasons
never quote the URL (it may hold a signature or credentials); callers name the host themselves,
through ``origin`` or ``config.redact_url``. A local file operation inside such a block must
raise its own project error (``StorageError``), which passes through: an ``OSError`` reaching
the boundary counts as the network's.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
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
#: An OpenSSL reason code (``WRONG_VERSION_NUMBER``): shown; any other text of an SSL error is not.
#: Connections a run's session keeps open at most, whatever else: the API's and the CDN's.
MIN_CONNECTIONS = 32


def connection_limit(concurrency: int, rate_limit: int) -> int:
    """How many connections a run's session may open: enough that no request the window lets
    go then waits for a connection (every prediction in flight may have a poll out, but no
    more requests than the window holds), twice over for creates, cancels and downloads; at
    least MIN_CONNECTIONS. A request queued for a connection would be sent later than the
    window said, and later than the poll schedule wanted."""
    return max(MIN_CONNECTIONS, 2 * min(concurrency, rate_limit))


_SSL_REASON = re.compile(r"[A-Z0-9_]{1,80}")
#: A URL inside an error's own text: never shown (it may hold a signature or credentials).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


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
        case TimeoutError():  # asyncio's and anyio's, aiohttp's total timeout, socket.timeout
            return Failure("no answer in time", sent=True)
        case aiohttp.ServerDisconnectedError():
            return Failure("the server closed the connection", sent=True)
        case aiohttp.ClientPayloadError():
            return Failure("the body was cut short", sent=True)
        case aiohttp.ClientResponseError():
            return Failure(f"an unusable answer (HTTP {exc.status})", sent=True)
        case OSError():  # raw, or aiohttp's ClientOSError around the original as its cause
            return _os_failure(_unwrapped(exc))
        case _:
            return Failure(f"a network error ({type(exc).__name__})", sent=True)


def _unwrapped(exc: OSError) -> OSError:
    """The OSError aiohttp wrapped in a ClientOSError (copying only its ``args``), else ``exc``."""
    cause = exc.__cause__
    if isinstance(exc, aiohttp.ClientOSError) and isinstance(cause, OSError):
        return cause
    return exc


def _os_failure(exc: OSError) -> Failure:
    """An OSError of a socket: the connection was refused or never named a host (never sent),
    the TLS layer failed (its codes are not the system's), or anything else (may have left)."""
    match exc:
        case ssl.SSLCertVerificationError():  # checked in the handshake, before any request
            return Failure(f"the host's TLS certificate was refused ({type(exc).__name__})", False)
        case ssl.SSLError():
            return Failure(f"the TLS connection failed{_ssl_code(exc)}", sent=True)
        case ConnectionRefusedError():  # TCP refuses only a connection attempt
            return Failure("connection refused", sent=False)
        case socket.gaierror() | socket.herror():
            return Failure("cannot resolve the host name", sent=False)
        case ConnectionResetError():
            return Failure("the connection was reset", sent=True)
        case _:
            return Failure(_os_reason(exc), sent=True)


def _ssl_code(exc: ssl.SSLError) -> str:
    """`` (WRONG_VERSION_NUMBER)``: the OpenSSL reason the ssl module sets, or nothing. An SSL
    error's ``errno`` is OpenSSL's code, not the system's: it is never looked up."""
    reason = getattr(exc, "reason", None)
    return f" ({reason})" if isinstance(reason, str) and _SSL_REASON.fullmatch(reason) else ""


def _os_reason(exc: OSError) -> str:
    """The system's words for the error (``connection refused``), else its own text with any
    URL in it blanked (aiohttp writes ``... for <url>``), else the error's class."""
    text = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else None
    text = text or _URL_IN_TEXT.sub("<the URL>", exc.strerror or "").strip()
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


# -- URL and header rules ---------------------------------------------------------------------


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


#: A header's name is an RFC 9110 token; its value holds no control character but the tab.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def sendable_header(name: str, value: str) -> bool:
    """Whether ``name: value`` goes on the wire as one header line. aiohttp refuses a control
    character (one could start a line of its own) with a ValueError, not a network error."""
    return _TOKEN.fullmatch(name) is not None and _CONTROL.search(value) is None
