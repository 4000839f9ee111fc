"""The client against a hostile or broken API, over real loopback HTTP.

Each test starts tiny local servers with one route per behaviour and drives the real client:
redirects never carry the key to another host, ids never become paths, a Retry-After cannot
stall the batch, an unreachable API is ridden out and then given up, uploads fail as transfers.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from runner.api.answers import IDEMPOTENT_RETRIES
from runner.api.client import EachlabsClient
from runner.api.ratelimit import RateLimiter
from runner.api.transfers import fetch_video
from runner.errors import (
    AccountError,
    AmbiguousCreateError,
    ApiBrokenError,
    ApiError,
    ApiProtocolError,
    ApiStatusError,
    ApiUnavailableError,
    CapacityError,
    StopRequested,
    TransferError,
    TransportError,
)
from tests.boxes import mp4
from tests.integration.loopback import Loopback, Server, closed_port_url

KEY = "sk-test-0123456789abcdef"
ENVELOPE = {"id": "p1", "status": "processing", "output": None, "metrics": {}}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session like the CLI's: no default headers, no cookies."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as made:
        yield made


def client_for(session: aiohttp.ClientSession, base: str, **changes: Any) -> EachlabsClient:
    settings: dict[str, Any] = {"request_timeout": 5.0}
    settings.update(changes)
    limiter = settings.pop("limiter", None) or RateLimiter(1000, 1.0)
    return EachlabsClient(session, base, KEY, limiter, **settings)


def json_answer(body: object, status: int = 200, **headers: str) -> Callable[..., Any]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, status=status, headers=headers)

    return handler


def redirect(status: int, location: str) -> Callable[..., Any]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location})

    return handler


def sequence(*handlers: Callable[..., Any]) -> Callable[..., Any]:
    """A route answering with each handler in turn, the last one for ever after."""
    calls = iter(range(10**9))

    async def handler(request: web.Request) -> web.StreamResponse:
        index = min(next(calls), len(handlers) - 1)
        answer: web.StreamResponse = await handlers[index](request)
        return answer

    return handler


def no_wait(attempt: int) -> float:
    """No back-off between tries of an unreachable API: tests never wait for real."""
    return 0.0


# --- redirects: the key never leaves the API's origin -----------------------------------------


async def test_a_poll_redirected_to_another_host_is_refused_and_that_host_gets_nothing(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    evil = await servers.start({"GET /v1/prediction/p1": json_answer(ENVELOPE)})
    api = await servers.start(
        {"GET /v1/prediction/p1": redirect(302, f"{evil.url}/v1/prediction/p1?steal=1")}
    )
    client = client_for(session, api.url)
    with pytest.raises(ApiProtocolError) as caught:
        await client.get("p1")
    assert not isinstance(caught.value, ApiBrokenError)
    assert evil.seen == [] and evil.credentials() == []
    message = str(caught.value)
    assert (
        evil.url in message and "steal" not in message and "/v1" not in message.split(evil.url)[1]
    )
    assert "the API key is never sent to another host" in message


async def test_a_create_redirected_to_another_host_stops_the_batch_and_sends_nothing_there(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    evil = await servers.start({"POST /v1/prediction": json_answer({"predictionID": "stolen"})})
    api = await servers.start({"POST /v1/prediction": redirect(307, f"{evil.url}/v1/prediction")})
    ran: list[int] = []

    async def before_send() -> None:
        ran.append(1)

    client = client_for(session, api.url)
    with pytest.raises(ApiBrokenError) as caught:
        await client.create("minimax-i2v-01", {"prompt": "x"}, before_send=before_send)
    assert evil.seen == []
    assert ran == [1]
    assert "nothing was created" in str(caught.value)


async def test_a_create_redirected_with_307_on_its_own_origin_is_resent_once_per_hop(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start(
        {
            "POST /v1/prediction": redirect(307, "/v1/prediction/"),
            "POST /v1/prediction/": json_answer({"predictionID": "abc-1"}),
        }
    )
    limiter = RateLimiter(1000, 1.0)
    ran: list[int] = []

    async def before_send() -> None:
        ran.append(1)

    client = client_for(session, api.url, limiter=limiter)
    assert await client.create("m", {"prompt": "x"}, before_send=before_send) == "abc-1"
    assert [s.path_qs for s in api.seen] == ["/v1/prediction", "/v1/prediction/"]
    assert api.seen[0].body == api.seen[1].body and json.loads(api.seen[1].body)["model"] == "m"
    assert api.credentials() == [KEY, KEY]
    assert ran == [1]  # the write-ahead record is written once, however many hops
    assert limiter.sent == 2  # every hop is an API request, counted against the limiter


async def test_a_stop_before_a_redirected_create_is_resent_is_not_a_stop_before_sending(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    answered = anyio.Event()

    async def moved(request: web.Request) -> web.Response:
        answered.set()
        return web.Response(status=307, headers={"Location": "/v1/prediction/"})

    api = await servers.start({"POST /v1/prediction": moved})
    limiter = RateLimiter(1, 60.0)  # the second hop waits a minute for its place
    client = client_for(session, api.url, limiter=limiter)
    abandon = anyio.Event()
    outcome: list[BaseException] = []

    async def create() -> None:
        try:
            await client.create("m", {"prompt": "x"}, abandon=abandon)
        except ApiError as exc:
            outcome.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(create)
            await answered.wait()
            abandon.set()
            limiter.notify()
    [error] = outcome
    assert type(error) is TransportError and error.sent is False  # a request went out
    assert len(api.seen) == 1


async def test_a_poll_redirected_on_its_own_origin_is_followed_as_a_get(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start(
        {
            "GET /v1/prediction/p1": redirect(301, "/v2/prediction/p1?fresh=1"),
            "GET /v2/prediction/p1": json_answer(ENVELOPE),
        }
    )
    limiter = RateLimiter(1000, 1.0)
    prediction = await client_for(session, api.url, limiter=limiter).get("p1")
    assert prediction.id == "p1"
    assert [s.path_qs for s in api.seen] == ["/v1/prediction/p1", "/v2/prediction/p1?fresh=1"]
    assert limiter.sent == 2


async def test_more_than_three_redirects_is_a_protocol_error(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start({"GET /v1/model": redirect(302, "/v1/model?slug=x")})
    with pytest.raises(ApiProtocolError, match="more than 3 redirects"):
        await client_for(session, api.url).model("x")
    assert len(api.seen) == 4


async def test_a_post_redirected_with_302_is_not_turned_into_a_get(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start(
        {
            "POST /v1/prediction/p1/cancel": redirect(302, "/v1/prediction/p1"),
            "GET /v1/prediction/p1": json_answer(ENVELOPE),
        }
    )
    with pytest.raises(ApiProtocolError, match="would turn this POST into a GET"):
        await client_for(session, api.url).cancel("p1")
    assert [s.method for s in api.seen] == ["POST"]


async def test_credentials_in_the_api_base_appear_in_no_message_log_or_repr(
    servers: Loopback, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    evil = await servers.start({})
    api = await servers.start({"GET /v1/prediction/p1": redirect(302, f"{evil.url}/x")})
    secret_base = api.url.replace("http://", "http://admin:s3cret@")
    caplog.set_level(logging.DEBUG)
    client = client_for(session, secret_base)
    with pytest.raises(ApiProtocolError) as redirected:
        await client.get("p1")
    assert api.seen[0].headers.get("Authorization", "").startswith("Basic ")  # sent to the API
    down = client_for(
        session,
        closed_port_url().replace("http://", "http://admin:s3cret@"),
        unreachable_at_start=0.0,
    )
    with pytest.raises(ApiUnavailableError) as unreachable:
        await down.get("p1")
    shown = [str(redirected.value), str(unreachable.value), repr(client), repr(down), caplog.text]
    assert all("s3cret" not in text for text in shown)
    assert "http://***@127.0.0.1" in str(unreachable.value)
    assert "http://***@127.0.0.1" in caplog.text


# --- ids: never a path ------------------------------------------------------------------------


async def test_a_create_answered_with_a_path_for_an_id_is_ambiguous(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    hostile = {"status": "success", "predictionID": "../../v1/upload/presign?x="}
    api = await servers.start({"POST /v1/prediction": json_answer(hostile)})
    with pytest.raises(AmbiguousCreateError, match="without a plain prediction id") as caught:
        await client_for(session, api.url).create("m", {"prompt": "x"})
    assert caught.value.answered is True  # an answer, but nonsense: counts toward a broken API


@pytest.mark.parametrize("answer", ["500", "timeout"])
async def test_a_lost_create_says_whether_the_server_answered_at_all(
    servers: Loopback, session: aiohttp.ClientSession, answer: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        if answer == "timeout":
            await servers.hold()
        return web.json_response({"error": "boom"}, status=500)

    api = await servers.start({"POST /v1/prediction": handler})
    client = client_for(session, api.url, request_timeout=0.2)
    with pytest.raises(AmbiguousCreateError) as caught:
        await client.create("m", {"prompt": "x"})
    assert caught.value.answered is (answer == "500")


@pytest.mark.parametrize("bad_id", ["../../v1/upload/presign?x=", "p1/cancel", "a b", ""])
async def test_get_and_cancel_refuse_a_non_plain_id_and_send_nothing(
    servers: Loopback, session: aiohttp.ClientSession, bad_id: str
) -> None:
    api = await servers.start({})
    limiter = RateLimiter(1000, 1.0)
    client = client_for(session, api.url, limiter=limiter)
    with pytest.raises(ApiProtocolError, match="not a plain prediction id"):
        await client.get(bad_id)
    with pytest.raises(ApiProtocolError, match="not a plain prediction id"):
        await client.cancel(bad_id)
    assert api.seen == [] and limiter.sent == 0


# --- Retry-After: capped, and a server that insists stops the batch ------------------------


async def test_a_long_retry_after_pauses_the_budget_for_the_cap_only_and_says_so(
    servers: Loopback, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    api = await servers.start(
        {
            "GET /v1/prediction/p1": sequence(
                json_answer({"error": "slow down"}, 429, **{"Retry-After": "86400"}),
                json_answer(ENVELOPE),
            )
        }
    )
    limiter = RateLimiter(1000, 1.0)
    client = client_for(session, api.url, limiter=limiter, max_retry_after=0.05)
    with pytest.raises(CapacityError) as caught:
        await client.get("p1")
    assert caught.value.retry_after == 0.05
    assert limiter.window.paused_until - anyio.current_time() <= 0.05
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "runner"]
    assert len(warnings) == 1
    assert "86400" in warnings[0].getMessage() and "0.05" in warnings[0].getMessage()
    with anyio.fail_after(5):
        assert (await client.get("p1")).id == "p1"


async def test_three_answers_in_a_row_over_the_cap_make_the_api_unavailable(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    # A 429 (a 5xx would be asked again at once: see the idempotent retry tests).
    api = await servers.start(
        {"GET /v1/prediction/p1": json_answer({}, 429, **{"Retry-After": "3600"})}
    )
    client = client_for(session, api.url, max_retry_after=0.01)
    with anyio.fail_after(5):
        for _ in range(2):
            with pytest.raises(CapacityError):
                await client.get("p1")
        with pytest.raises(ApiUnavailableError, match="3 answers in a row"):
            await client.get("p1")
        with pytest.raises(ApiUnavailableError):
            await client.get("p1")
    assert len(api.seen) == 3  # nothing more is sent once the API counts as unavailable


async def test_an_answer_without_a_long_retry_after_resets_the_count(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    over = json_answer({}, 429, **{"Retry-After": "3600"})
    api = await servers.start(
        {"GET /v1/prediction/p1": sequence(over, over, json_answer(ENVELOPE), over, over)}
    )
    client = client_for(session, api.url, max_retry_after=0.01)
    with anyio.fail_after(5):
        for expected in (CapacityError, CapacityError, None, CapacityError, CapacityError):
            if expected is None:
                await client.get("p1")
            else:
                with pytest.raises(expected):
                    await client.get("p1")


async def test_a_created_prediction_is_never_hidden_by_the_retry_after_stop(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    created = json_answer({"predictionID": "made-1"}, 200, **{"Retry-After": "3600"})
    api = await servers.start({"POST /v1/prediction": created})
    client = client_for(session, api.url, max_retry_after=0.01)
    with anyio.fail_after(5):
        for _ in range(3):
            assert await client.create("m", {"prompt": "x"}) == "made-1"
        with pytest.raises(ApiUnavailableError):
            await client.create("m", {"prompt": "x"})
    assert len(api.seen) == 3


# --- an unreachable API ----------------------------------------------------------------------


class FlakyResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1, except on the lookups ``fails(n)`` names."""

    def __init__(self, fails: Callable[[int], bool]) -> None:
        self.fails = fails
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        if self.fails(self.calls):
            raise OSError(-2, "Name or service not known")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


def flaky_session(resolver: FlakyResolver) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
    return aiohttp.ClientSession(connector=connector)


def by_name(server: Server) -> str:
    return server.url.replace("127.0.0.1", "api.test")


async def test_a_short_outage_is_ridden_out_with_one_warning_and_one_info(
    servers: Loopback, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runner")
    api = await servers.start({"POST /v1/prediction": json_answer({"predictionID": "p-9"})})
    resolver = FlakyResolver(lambda n: n <= 3)
    ran: list[int] = []

    async def before_send() -> None:
        ran.append(1)

    async with flaky_session(resolver) as session:
        client = client_for(session, by_name(api), unreachable_at_start=30.0, backoff=no_wait)
        with anyio.fail_after(5):
            assert await client.create("m", {"prompt": "x"}, before_send=before_send) == "p-9"
    assert ran == [1]
    assert len(api.seen) == 1 and resolver.calls == 4
    runner_logs = [r for r in caplog.records if r.name == "runner"]
    warnings = [r.getMessage() for r in runner_logs if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in runner_logs if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "cannot resolve the host name api.test" in warnings[0]
    assert by_name(api) in warnings[0]
    assert len(infos) == 1 and "answers again" in infos[0]


async def test_an_api_never_reached_is_given_up_after_unreachable_at_start(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    base = closed_port_url()
    ran: list[int] = []

    async def before_send() -> None:
        ran.append(1)

    client = client_for(
        session, base, unreachable_at_start=0.1, unreachable_after=3600.0, backoff=no_wait
    )
    with anyio.fail_after(5), pytest.raises(ApiUnavailableError) as caught:
        await client.create("m", {"prompt": "x"}, before_send=before_send)
    assert ran == [1]
    assert str(caught.value).startswith(f"cannot connect to {base}: connection refused")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "runner"]
    assert len(warnings) == 1 and base in warnings[0].getMessage()


async def test_once_the_api_answered_an_outage_may_last_unreachable_after(
    servers: Loopback,
) -> None:
    api = await servers.start({"GET /v1/prediction/p1": json_answer(ENVELOPE)})
    resolver = FlakyResolver(lambda n: n > 1)  # reachable once, then gone
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    async with flaky_session(resolver) as session:
        client = client_for(
            session,
            by_name(api),
            unreachable_at_start=0.0,
            unreachable_after=10.0,
            clock=clock,
            backoff=no_wait,
        )
        await client.get("p1")
        with anyio.fail_after(5), pytest.raises(ApiUnavailableError, match="limit is 10 s"):
            await client.get("p1")
    assert resolver.calls > 5  # retried for the longer limit, not given up at once


async def test_a_stop_while_an_unreachable_create_waits_to_retry_is_not_a_stop_before_sending(
    session: aiohttp.ClientSession,
) -> None:
    limiter = RateLimiter(1000, 1.0)
    paused = anyio.Event()
    wrote: list[int] = []

    def backoff(attempt: int) -> float:
        paused.set()  # the client holds the limiter for this long right after asking
        return 30.0

    async def before_send() -> None:
        wrote.append(1)

    client = client_for(session, closed_port_url(), limiter=limiter, backoff=backoff)
    abandon = anyio.Event()
    outcome: list[BaseException] = []

    async def create() -> None:
        try:
            await client.create("m", {"prompt": "x"}, before_send=before_send, abandon=abandon)
        except ApiError as exc:
            outcome.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(create)
            await paused.wait()  # the create was written ahead, refused, and waits to retry
            abandon.set()
            limiter.notify()
    assert wrote == [1]
    [error] = outcome
    assert type(error) is TransportError and error.sent is False
    assert not isinstance(error, StopRequested)


# --- what a server sends back ----------------------------------------------------------------


async def test_the_key_echoed_by_the_server_never_reaches_a_message(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start(
        {"GET /v1/prediction/p1": json_answer({"error": f"bad key {KEY}"}, 400)}
    )
    with pytest.raises(ApiStatusError) as caught:
        await client_for(session, api.url).get("p1")
    assert KEY not in str(caught.value) and "bad key ***" in str(caught.value)


async def test_an_answer_too_large_to_be_one_is_not_read(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    huge = json_answer({"predictionID": "x", "pad": "x" * (8 * 1024 * 1024 + 1)})
    api = await servers.start({"GET /v1/prediction/p1": huge, "POST /v1/prediction": huge})
    client = client_for(session, api.url)
    with pytest.raises(TransportError, match="larger than 8 MB") as polled:
        await client.get("p1")
    assert polled.value.sent is True
    with pytest.raises(AmbiguousCreateError, match="larger than 8 MB") as created:
        await client.create("m", {"prompt": "x"})
    assert created.value.answered is True


# --- uploads: a transfer, never an API error, never with the key -----------------------------


async def presigned_to(servers: Loopback, put_host: Server) -> Server:
    return await servers.start(
        {
            "POST /v1/upload/presign": json_answer(
                {
                    "presigned_url": f"{put_host.url}/bucket/img?X-Amz-Signature=s1",
                    "public_url": f"{put_host.url}/bucket/img",
                    "required_headers": {"x-amz-acl": "public-read"},
                }
            )
        }
    )


@pytest.mark.parametrize("status", [403, 503])
async def test_a_refused_upload_is_a_transfer_error_with_the_hosts_status(
    servers: Loopback, session: aiohttp.ClientSession, status: int
) -> None:
    put_host = await servers.start({"PUT /bucket/img": json_answer({"Code": "Nope"}, status)})
    api = await presigned_to(servers, put_host)
    with pytest.raises(TransferError) as caught:
        await client_for(session, api.url).upload(b"\x89PNG....", "image/png")
    assert not isinstance(caught.value, ApiError)
    assert caught.value.status == status
    assert "Signature" not in str(caught.value)
    assert put_host.credentials() == [] and len(put_host.seen) == 1
    assert api.credentials() == [KEY]


async def test_an_upload_host_that_never_answers_is_a_transfer_error_without_status(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await presigned_to(servers, Server(closed_port_url()))
    with pytest.raises(TransferError) as caught:
        await client_for(session, api.url).upload(b"\x89PNG....", "image/png")
    assert not isinstance(caught.value, ApiError) and caught.value.status is None


async def test_a_refused_presign_is_still_an_api_status_error(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start(
        {"POST /v1/upload/presign": json_answer({"error": "payment required"}, 402)}
    )
    with pytest.raises(AccountError):
        await client_for(session, api.url).upload(b"\x89PNG....", "image/png")


@pytest.mark.parametrize(
    "required",
    [
        {"x-amz-acl": "public-read\r\nX-Injected: yes"},
        {"x-amz-acl\r\nX-Injected": "yes"},
        {"x-amz-acl": "nul\x00"},
        {"Bad Name": "v"},
    ],
    ids=["crlf-value", "crlf-name", "nul", "space-in-name"],
)
async def test_a_presign_naming_a_header_that_cannot_be_sent_is_a_protocol_error(
    servers: Loopback, session: aiohttp.ClientSession, required: dict[str, str]
) -> None:
    """aiohttp would refuse such a header with a ValueError, which no caller expects: the
    presign answer breaks the contract, and the upload host is never asked."""
    put_host = await servers.start({"PUT /bucket/img": json_answer({})})
    api = await servers.start(
        {
            "POST /v1/upload/presign": json_answer(
                {
                    "presigned_url": f"{put_host.url}/bucket/img",
                    "public_url": f"{put_host.url}/bucket/img",
                    "required_headers": required,
                }
            )
        }
    )
    with pytest.raises(ApiProtocolError, match="required_headers"):
        await client_for(session, api.url).upload(b"\x89PNG....", "image/png")
    assert put_host.seen == []


async def test_an_upload_follows_307_to_http_only_and_never_with_the_key(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    region = await servers.start({"PUT /bucket/img": json_answer({})})
    put_host = await servers.start(
        {
            "PUT /bucket/img": redirect(307, f"{region.url}/bucket/img?X-Amz-Signature=s2"),
            "PUT /other": redirect(307, "file:///etc/passwd"),
        }
    )
    api = await presigned_to(servers, put_host)
    client = client_for(session, api.url)
    assert await client.upload(b"\x89PNG....", "image/png") == f"{put_host.url}/bucket/img"
    assert region.seen[0].body == b"\x89PNG...." and region.credentials() == []
    assert region.seen[0].headers["x-amz-acl"] == "public-read"

    api_to_other = await servers.start(
        {
            "POST /v1/upload/presign": json_answer(
                {"presigned_url": f"{put_host.url}/other", "public_url": f"{put_host.url}/o"}
            )
        }
    )
    with pytest.raises(TransferError, match="redirected") as caught:
        await client_for(session, api_to_other.url).upload(b"x", "image/png")
    assert caught.value.status == 307
    assert put_host.credentials() == []


async def test_a_download_on_the_api_clients_session_never_carries_the_key(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    video = mp4()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=video, content_type="video/mp4")

    cdn = await servers.start({"GET /out/p1.mp4": serve})
    api = await servers.start({"GET /v1/prediction/p1": json_answer(ENVELOPE)})
    await client_for(session, api.url).get("p1")
    got = await fetch_video(session, f"{cdn.url}/out/p1.mp4", tmp_path / "a.mp4", seconds=5.0)
    assert got.bytes == len(video)
    assert api.credentials() == [KEY] and cdn.credentials() == []


# -- transient faults: everything but a create is asked again ---------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_poll_that_meets_a_transient_5xx_is_asked_again(
    servers: Loopback, session: aiohttp.ClientSession, status: int
) -> None:
    api = await servers.start(
        {"GET /v1/prediction/p1": sequence(json_answer({}, status), json_answer(ENVELOPE))}
    )
    client = client_for(session, api.url, retry_wait=lambda _: 0.0)
    with anyio.fail_after(5):
        prediction = await client.get("p1")
    assert prediction.id == "p1" and len(api.seen) == 2


async def test_a_persistent_5xx_is_asked_again_only_twice(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start({"GET /v1/executions": json_answer({}, 502)})
    client = client_for(session, api.url, retry_wait=lambda _: 0.0)
    with anyio.fail_after(5), pytest.raises(ApiStatusError, match="HTTP 502"):
        await client.executions(model="m")
    assert len(api.seen) == 3


@pytest.mark.parametrize("status", [400, 404, 429])
async def test_a_refusal_is_not_asked_again(
    servers: Loopback, session: aiohttp.ClientSession, status: int
) -> None:
    api = await servers.start({"GET /v1/prediction/p1": json_answer({}, status)})
    client = client_for(session, api.url, retry_wait=lambda _: 0.0)
    with anyio.fail_after(5), pytest.raises(ApiStatusError):
        await client.get("p1")
    assert len(api.seen) == 1


async def test_a_create_answered_5xx_is_never_sent_again(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    api = await servers.start({"POST /v1/prediction": json_answer({}, 502)})
    client = client_for(session, api.url, retry_wait=lambda _: 0.0)
    with anyio.fail_after(5), pytest.raises(AmbiguousCreateError):
        await client.create("minimax-i2v-01", {"prompt": "p"})
    assert len(api.seen) == 1


async def test_a_get_whose_connection_drops_reaches_the_server_once_per_try(
    servers: Loopback, session: aiohttp.ClientSession
) -> None:
    """aiohttp would resend a dropped GET by itself, behind the request window's back: every
    request the server sees must have had its place in the window."""

    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    api = await servers.start({"GET /v1/prediction/p1": hang_up})
    limiter = RateLimiter(1000, 1.0)
    client = client_for(session, api.url, limiter=limiter, retry_wait=lambda _: 0.0)
    with anyio.fail_after(5), pytest.raises(TransportError):
        await client.get("p1")
    assert len(api.seen) == limiter.sent == 1 + IDEMPOTENT_RETRIES
