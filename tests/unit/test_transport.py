"""The one error boundary of the network and the URL rules, from tables, without a network."""

from __future__ import annotations

import socket
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from runner.api import transport
from runner.api.transport import Failure
from runner.errors import (
    ApiError,
    ApiProtocolError,
    DownloadError,
    TransferError,
    TransportError,
)

SECRET_URL = "https://user:hunter2@api.example.com/v1/prediction/p1?X-Amz-Signature=abc"
KEY = ConnectionKey("api.example.com", 443, True, True, None, None, None, None)
TLS_TEXT = "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed or bad record mac"


def real_tls_error() -> ssl.SSLError:
    """The SSLError the ssl module raises for a plain-HTTP answer to a TLS hello (no network:
    the handshake runs over memory buffers). Unlike a constructed one, it names its reason."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="h.example")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    incoming.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ssl.SSLError) as caught:
        tls.do_handshake()
    return caught.value


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    """``outer`` raised ``from cause``, as aiohttp raises ``ClientOSError(*exc.args) from exc``."""
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
            Failure("connection refused", sent=False),
        ),
        (
            aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),
            Failure("cannot resolve the host name api.example.com", sent=False),
        ),
        (
            aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("bad")),
            Failure("the host's TLS certificate was refused (SSLCertVerificationError)", False),
        ),
        (
            aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "handshake")),
            Failure("the TLS handshake failed", sent=False),
        ),
        (
            aiohttp.ConnectionTimeoutError(f"Connection timeout to host {SECRET_URL}"),
            Failure("the connection timed out", sent=False),
        ),
        (aiohttp.InvalidURL(SECRET_URL), Failure("the URL is not a usable http(s) URL", False)),
        (
            aiohttp.NonHttpUrlClientError("file:///etc/passwd"),
            Failure("the URL is not a usable http(s) URL", sent=False),
        ),
        (
            aiohttp.NonHttpUrlRedirectClientError("file:///etc/passwd"),
            Failure("a redirect to an unusable or non-http(s) URL", sent=True),
        ),
        (
            aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
            Failure("no data in time", sent=True),
        ),
        # asyncio.TimeoutError, socket.timeout and what anyio.fail_after raises are this class
        (TimeoutError(), Failure("no answer in time", sent=True)),
        (aiohttp.ServerDisconnectedError(), Failure("the server closed the connection", True)),
        (aiohttp.ClientPayloadError("cut"), Failure("the body was cut short", sent=True)),
        (aiohttp.ClientConnectionResetError("lost"), Failure("the connection was reset", True)),
        (aiohttp.ClientOSError(32, "Broken pipe"), Failure("broken pipe", sent=True)),
        (aiohttp.ClientOSError(), Failure("a network error (ClientOSError)", sent=True)),
        (
            aiohttp.ClientResponseError(None, (), status=400),  # type: ignore[arg-type]
            Failure("an unusable answer (HTTP 400)", sent=True),
        ),
        (
            aiohttp.ClientConnectionError(SECRET_URL),
            Failure("a network error (ClientConnectionError)", sent=True),
        ),
        (
            aiohttp.ClientProxyConnectionError(KEY, ConnectionRefusedError(111, "refused")),
            Failure("connection refused", sent=False),
        ),
        (
            aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
            Failure("no answer in time", sent=True),
        ),
        (
            aiohttp.TooManyRedirects(None, (), status=302),  # type: ignore[arg-type]
            Failure("an unusable answer (HTTP 302)", sent=True),
        ),
        (
            aiohttp.ServerFingerprintMismatch(b"a", b"b", "api.example.com", 443),
            Failure("a network error (ServerFingerprintMismatch)", sent=True),
        ),
        # OSErrors aiohttp did not wrap: a refusal or a failed lookup never left; a TLS error's
        # errno is OpenSSL's code, never the system's (1 is not "operation not permitted").
        (
            ConnectionRefusedError(111, "Connection refused"),
            Failure("connection refused", sent=False),
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            Failure("cannot resolve the host name", sent=False),
        ),
        (
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] verify failed"),
            Failure("the host's TLS certificate was refused (SSLCertVerificationError)", False),
        ),
        (ssl.SSLError(1, TLS_TEXT), Failure("the TLS connection failed", sent=True)),
        (ssl.SSLEOFError(8, "EOF occurred"), Failure("the TLS connection failed", sent=True)),
        (ConnectionResetError(104, "reset by peer"), Failure("the connection was reset", True)),
        (BrokenPipeError(32, "Broken pipe"), Failure("broken pipe", sent=True)),
        (
            ConnectionAbortedError(103, "aborted"),
            Failure("software caused connection abort", sent=True),
        ),
        (OSError(101, "Network is unreachable"), Failure("network is unreachable", sent=True)),
        # aiohttp's ClientOSError copies only the args of the OSError it wraps: the cause decides.
        (
            wrapped(aiohttp.ClientOSError(1, TLS_TEXT), ssl.SSLError(1, TLS_TEXT)),
            Failure("the TLS connection failed", sent=True),
        ),
        (
            wrapped(aiohttp.ClientOSError(104, "reset"), ConnectionResetError(104, "reset")),
            Failure("the connection was reset", sent=True),
        ),
        (
            aiohttp.ClientOSError(None, f"Can not write request body for {SECRET_URL}"),
            Failure("can not write request body for <the URL>", sent=True),
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_each_network_error_has_a_reason_and_says_whether_it_left(
    exc: BaseException, expected: Failure
) -> None:
    got = transport.failure(exc)
    assert got == expected
    assert "hunter2" not in got.reason and "Signature" not in got.reason


def test_a_tls_error_names_the_openssl_reason_and_nothing_else() -> None:
    exc = real_tls_error()
    assert transport.failure(exc) == Failure(
        "the TLS connection failed (WRONG_VERSION_NUMBER)", True
    )
    wrapped_exc = wrapped(aiohttp.ClientOSError(*exc.args), exc)
    assert (
        transport.failure(wrapped_exc).reason == "the TLS connection failed (WRONG_VERSION_NUMBER)"
    )


def test_a_stalled_read_names_the_stall() -> None:
    exc = aiohttp.SocketTimeoutError("Timeout on reading data from socket")
    assert transport.failure(exc, stall=60.0).reason == "no data for 60 s"


def _raise(exc: BaseException) -> None:
    raise exc


def test_an_api_request_that_never_left_is_a_transport_error_with_sent_false() -> None:
    refused = aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused"))
    base = "https://user:hunter2@api.example.com"
    with pytest.raises(TransportError) as caught, transport.api_errors("GET /x", base):
        _raise(refused)
    assert caught.value.sent is False
    assert str(caught.value) == "cannot connect to https://***@api.example.com: connection refused"


def test_an_api_request_that_may_have_left_is_a_transport_error_with_sent_true() -> None:
    with pytest.raises(TransportError) as caught, transport.api_errors("POST /v1/prediction", ""):
        _raise(aiohttp.ServerDisconnectedError())
    assert caught.value.sent is True
    assert str(caught.value) == "POST /v1/prediction failed: the server closed the connection"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "cannot connect to http://a: "),
        (socket.gaierror(-2, "Name or service not known"), "cannot connect to http://a: "),
        (ssl.SSLCertVerificationError(1, "verify failed"), "cannot connect to http://a: "),
        (ssl.SSLError(1, TLS_TEXT), "GET /x failed: the TLS connection failed"),
        (BrokenPipeError(32, "Broken pipe"), "GET /x failed: broken pipe"),
    ],
    ids=["refused", "dns", "certificate", "tls", "pipe"],
)
def test_an_oserror_of_an_api_request_is_a_transport_error(exc: OSError, message: str) -> None:
    with pytest.raises(TransportError) as caught, transport.api_errors("GET /x", "http://a"):
        _raise(exc)
    assert str(caught.value).startswith(message)
    assert caught.value.sent is message.startswith("GET")


@pytest.mark.parametrize("exc", [ApiProtocolError("no"), ValueError("bug"), KeyError("bug")])
def test_what_is_not_a_network_error_passes_through(exc: Exception) -> None:
    with pytest.raises(type(exc)), transport.api_errors("GET /x", "http://a"):
        _raise(exc)
    with pytest.raises(type(exc)), transport.transfer_errors("x"):
        _raise(exc)


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
        aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
        TimeoutError(),
        OSError(104, "Connection reset by peer"),
        ConnectionRefusedError(111, "Connection refused"),
        ssl.SSLError(1, TLS_TEXT),
        wrapped(aiohttp.ClientOSError(1, TLS_TEXT), ssl.SSLError(1, TLS_TEXT)),
    ],
    ids=["refused", "stall", "timeout", "oserror", "raw-refused", "tls", "wrapped-tls"],
)
def test_a_transfer_failure_is_a_transfer_error_never_an_api_error(exc: BaseException) -> None:
    stalled = transport.transfer_errors("", DownloadError, stall=2.0)
    with pytest.raises(DownloadError) as caught, stalled:
        _raise(exc)
    assert not isinstance(caught.value, ApiError)
    assert caught.value.status is None
    with pytest.raises(TransferError) as upload, transport.transfer_errors("the upload failed"):
        _raise(exc)
    assert type(upload.value) is TransferError
    assert str(upload.value).startswith("the upload failed: ")


# --- URL rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://api.eachlabs.ai", "https://api.eachlabs.ai/v1/prediction/x", True),
        ("https://api.eachlabs.ai", "https://API.EachLabs.ai:443/", True),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1?x=1", True),
        ("https://u:p@api.eachlabs.ai", "https://api.eachlabs.ai/x", True),
        ("https://api.eachlabs.ai", "http://api.eachlabs.ai/x", False),
        ("https://api.eachlabs.ai", "https://api.eachlabs.ai:8443/x", False),
        ("https://api.eachlabs.ai", "https://api.eachlabs.ai.evil.example/x", False),
        ("https://api.eachlabs.ai", "https://evil.example/api.eachlabs.ai", False),
        ("http://127.0.0.1:8000", "http://localhost:8000/", False),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8001/", False),
        ("https://api.eachlabs.ai", "file:///etc/passwd", False),
        ("https://api.eachlabs.ai", "/v1/prediction", False),
        ("https://api.eachlabs.ai", "//api.eachlabs.ai/v1", False),
    ],
)
def test_same_origin_is_scheme_host_and_port(a: str, b: str, same: bool) -> None:
    assert transport.same_origin(a, b) is same
    assert transport.same_origin(b, a) is same


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SECRET_URL, "https://api.example.com"),
        ("http://evil.example:8443/steal?key=1", "http://evil.example:8443"),
        ("file:///etc/passwd", "file:"),
        ("mailto:someone@example.com", "mailto:"),
        ("/relative/path", "a relative URL"),
        ("http://[::1", "an unparsable URL"),
    ],
)
def test_an_origin_is_shown_without_credentials_path_or_query(url: str, shown: str) -> None:
    assert transport.origin(url) == shown


@pytest.mark.parametrize(
    ("request_url", "header", "target"),
    [
        ("http://a/v1/prediction/1", "/v1/prediction/2", "http://a/v1/prediction/2"),
        ("http://a/v1/prediction/1", "2", "http://a/v1/prediction/2"),
        ("http://a/v1/prediction/1", "//evil.example/x", "http://evil.example/x"),
        ("http://a/v1/prediction/1", "https://b/y?z=1", "https://b/y?z=1"),
        ("http://a/v1/prediction/1", "  /padded  ", "http://a/padded"),
        ("http://a/v1/prediction/1", "file:///etc/passwd", "file:///etc/passwd"),
        ("http://a/x", None, None),
        ("http://a/x", "", None),
        ("http://a/x", "http://[::1", None),
        ("http://a/x", "http://a:99999/", None),
    ],
)
def test_a_location_is_resolved_against_the_request(
    request_url: str, header: str | None, target: str | None
) -> None:
    got = transport.location(request_url, header)
    assert (str(got) if got is not None else None) == target


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://cdn-us.eachlabs.ai/a.mp4", True),
        ("http://127.0.0.1:9/x", True),
        ("file:///etc/passwd", False),
        ("ftp://example.com/x", False),
        ("/relative", False),
        ("https://", False),
        ("javascript:alert(1)", False),
    ],
)
def test_only_absolute_http_urls_are_transfer_targets(url: str, ok: bool) -> None:
    assert transport.is_http(url) is ok


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("x-amz-acl", "public-read", True),
        ("Content-Type", "image/png", True),
        ("x-amz-meta-note", "tab\tinside", True),
        ("x-amz-meta-note", "ünïcode", True),
        ("x-amz-acl", "a\r\nX-API-Key: stolen", False),
        ("x-amz-acl", "nul\x00", False),
        ("x-amz-acl", "del\x7f", False),
        ("x\n", "v", False),
        ("Bad Name", "v", False),
        ("x:y", "v", False),
        ("", "v", False),
    ],
)
def test_a_header_goes_on_the_wire_only_as_one_line(name: str, value: str, ok: bool) -> None:
    assert transport.sendable_header(name, value) is ok
