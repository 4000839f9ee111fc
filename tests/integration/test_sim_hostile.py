"""The simulator's hostile switches, one test each, over real loopback HTTP.

Each switch is off by default; each test turns on the one it is about and pins the status, body
and headers it promises. Waits poll for a condition under a deadline; no test relies on how fast
the machine is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from yarl import URL

from runner.simulator import OtherHost, SimConfig, Simulator
from runner.simulator.files import FTYP, generated_bytes

from .conftest import FAST, StartSimulator
from .test_simulator import MODEL, create, upload, wait_end

#: Tests of the simulator itself stay on its default profile, whatever ``SIM_PROFILE`` says.
SIM_PROFILE = "real"

Session = aiohttp.ClientSession
NOT_FOUND = {"status": 404, "error": "not found"}
#: Long enough that a prediction is still running whenever a test looks at it.
SLOW = {"runtime_mean": 30.0, "runtime_min": 30.0, "runtime_max": 30.0}


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 5.0) -> None:
    """Poll ``check`` until it holds; TimeoutError after ``deadline`` seconds."""
    async with asyncio.timeout(deadline):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


def create_body(image_url: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "version": "0.0.1",
        "input": {"prompt": "a red kite, zoom in", "first_frame_image": image_url},
    }


def age(sim: Simulator, index: int = 0) -> float:
    """How long ago (loop time) the simulator made its ``index``-th prediction."""
    return asyncio.get_running_loop().time() - sim.stats.creates[index].t


async def video_url(session: Session, sim: Simulator, image: str | None = None) -> str:
    envelope, _ = await wait_end(session, sim, await create(session, sim, image))
    assert envelope["status"] == "success"
    return str(envelope["output"][0])


# -- create_bad_answer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status", "content_type", "body"),
    [
        ("empty", 200, "application/json", "{}"),
        ("html", 200, "text/html", "<html><body>Bad gateway</body></html>"),
        ("500", 500, "application/json", '{"error": "internal server error"}'),
    ],
)
async def test_a_bad_create_answer_hides_a_prediction_that_was_made(
    simulator: StartSimulator,
    session: Session,
    answer: str,
    status: int,
    content_type: str,
    body: str,
) -> None:
    sim = await simulator(create_bad_answer=answer)
    image = await upload(session, sim)
    async with session.post(f"{sim.base_url}/v1/prediction", json=create_body(image)) as r:
        assert (r.status, r.content_type, await r.text()) == (status, content_type, body)
    assert len(sim.stats.creates) == 1 and sim.stats.bad_create_answers == 1
    envelope, _ = await wait_end(session, sim, sim.stats.creates[0].prediction_id)
    assert envelope["status"] == "success"  # it ran, and was billed, all the same


async def test_a_bad_create_answer_can_come_from_a_server_that_created_nothing(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(create_bad_answer="500", create_bad_answer_creates=False)
    image = await upload(session, sim)
    for _ in range(2):
        async with session.post(f"{sim.base_url}/v1/prediction", json=create_body(image)) as r:
            assert (r.status, await r.json()) == (500, {"error": "internal server error"})
    assert sim.stats.creates == [] and sim.stats.in_flight == 0
    assert sim.stats.bad_create_answers == 2
    assert [name for _, name in sim.stats.api_requests].count("create") == 2


async def test_bad_create_answers_hit_only_their_share_of_creates(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(create_bad_answer="empty", create_bad_answer_rate=0.5, concurrency=40)
    image = await upload(session, sim)
    answers = []
    for _ in range(30):
        async with session.post(f"{sim.base_url}/v1/prediction", json=create_body(image)) as r:
            assert r.status == 200
            answers.append(await r.json())
    ids = [a["predictionID"] for a in answers if a]
    assert len(sim.stats.creates) == 30
    assert 0 < sim.stats.bad_create_answers == answers.count({}) < 30
    assert set(ids) < {c.prediction_id for c in sim.stats.creates}


# -- executions_lag -------------------------------------------------------------------------------


async def test_executions_list_a_prediction_only_once_it_is_executions_lag_old(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(executions_lag=1.0, **SLOW)
    prediction_id = await create(session, sim)
    url = f"{sim.base_url}/v1/executions"
    async with session.get(url) as r:
        page = await r.json()
    if age(sim) < 1.0:  # (always, unless this machine stalled for a second)
        assert page["executions"] == [] and page["total_count"] == 0
    async with session.get(f"{sim.base_url}/v1/prediction/{prediction_id}") as r:
        assert r.status == 200  # the prediction itself is there

    async def listed() -> bool:
        async with session.get(url) as r:
            page = await r.json()
        return [row["id"] for row in page["executions"]] == [prediction_id]

    await eventually(listed)
    assert age(sim) >= 1.0


async def test_without_a_lag_a_new_prediction_is_listed_and_pollable_at_once(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(executions_lag=0.0, **SLOW)
    prediction_id = await create(session, sim)
    async with session.get(f"{sim.base_url}/v1/executions") as r:
        assert [row["id"] for row in (await r.json())["executions"]] == [prediction_id]
    async with session.get(f"{sim.base_url}/v1/prediction/{prediction_id}") as r:
        assert r.status == 200
    assert sim.stats.hidden_polls == 0


# -- poll_not_found_for / poll_not_found_rate ----------------------------------------------------


async def test_polls_of_a_young_prediction_answer_404_until_it_is_old_enough(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(poll_not_found_for=1.0, **SLOW)
    prediction_id = await create(session, sim)
    url = f"{sim.base_url}/v1/prediction/{prediction_id}"
    async with session.get(url) as r:
        status, body = r.status, await r.json()
    if age(sim) < 1.0:
        assert (status, body) == (404, NOT_FOUND)
    statuses: list[int] = []

    async def found() -> bool:
        async with session.get(url) as r:
            statuses.append(r.status)
            if r.status == 404:
                assert await r.json() == NOT_FOUND
                return False
            assert (await r.json())["id"] == prediction_id
            return True

    await eventually(found)
    assert age(sim) >= 1.0
    assert sim.stats.hidden_polls == statuses.count(404) + (status == 404)
    async with session.get(f"{sim.base_url}/v1/prediction/nope") as r:
        assert (r.status, await r.json()) == (404, NOT_FOUND)  # the same answer as unknown ids


async def test_a_share_of_polls_answer_404_at_random(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(poll_not_found_rate=0.5, **SLOW)
    prediction_id = await create(session, sim)
    statuses = []
    for _ in range(30):
        async with session.get(f"{sim.base_url}/v1/prediction/{prediction_id}") as r:
            statuses.append(r.status)
            body = await r.json()
            assert body == NOT_FOUND if r.status == 404 else body["id"] == prediction_id
    assert set(statuses) == {200, 404}
    assert sim.stats.hidden_polls == statuses.count(404)


# -- redirect_polls_to / redirect_creates_to and OtherHost ----------------------------------------


async def test_polls_redirect_with_302_to_the_same_path_on_another_host(
    simulator: StartSimulator, session: Session
) -> None:
    async with OtherHost() as other:
        sim = await simulator(redirect_polls_to=other.base_url + "/")
        url = f"{sim.base_url}/v1/prediction/abc-123?attempt=2"
        async with session.get(url, allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == f"{other.base_url}/v1/prediction/abc-123?attempt=2"
        async with aiohttp.ClientSession() as bare, bare.get(url) as r:  # followed, keyless
            envelope = await r.json()
        assert (r.status, envelope["id"], envelope["status"]) == (200, "abc-123", "processing")
        assert [(q.method, q.path) for q in other.requests] == [
            ("GET", "/v1/prediction/abc-123?attempt=2")
        ]
    assert sim.stats.redirects == 2 and sim.stats.api_requests == []


@pytest.mark.parametrize("path", ["/v1/prediction", "/v1/prediction/"])
async def test_creates_redirect_with_307_and_create_nothing_here(
    simulator: StartSimulator, session: Session, path: str
) -> None:
    async with OtherHost() as other:
        sim = await simulator(redirect_creates_to=other.base_url)
        body = create_body("https://example.com/a.png")
        async with session.post(sim.base_url + path, json=body, allow_redirects=False) as r:
            assert r.status == 307 and r.headers["Location"] == other.base_url + path
        async with aiohttp.ClientSession() as bare, bare.post(sim.base_url + path, json=body) as r:
            answer = await r.json()  # a 307 keeps the method and the body
        assert answer["status"] == "success" and answer["predictionID"]
        (seen,) = other.requests
        assert (seen.method, seen.path, json.loads(seen.body)) == ("POST", path, body)
    assert sim.stats.creates == [] and sim.stats.redirects == 2


async def test_the_other_host_records_everything_and_answers_like_the_api() -> None:
    async with OtherHost() as other, aiohttp.ClientSession() as client:
        assert URL(other.base_url).host == "127.0.0.1"
        headers = {"X-API-Key": "leaked", "Authorization": "Bearer leaked"}
        async with client.post(f"{other.base_url}/v1/prediction/", json={"a": 1}) as r:
            created = await r.json()
        assert set(created) == {"status", "message", "predictionID"}
        assert created["status"] == "success"
        assert created["message"] == "Prediction created successfully"
        async with client.get(f"{other.base_url}/v1/prediction/p-1?x=y", headers=headers) as r:
            envelope = await r.json()
        assert envelope == {
            "id": "p-1",
            "input": {},
            "status": "processing",
            "output": None,
            "logs": None,
            "metrics": {"predict_time": 0, "cost": 0},
            "urls": {
                "get": f"{other.base_url}/v1/prediction/p-1",
                "cancel": f"{other.base_url}/v1/prediction/p-1/cancel",
            },
        }
        for method, path in [("PUT", "/upload/x"), ("GET", "/v1/prediction/p-1/cancel")]:
            async with client.request(method, other.base_url + path, data=b"raw") as r:
                assert (r.status, await r.json()) == (200, {})
    assert [(q.method, q.path) for q in other.requests] == [
        ("POST", "/v1/prediction/"),
        ("GET", "/v1/prediction/p-1?x=y"),
        ("PUT", "/upload/x"),
        ("GET", "/v1/prediction/p-1/cancel"),
    ]
    assert json.loads(other.requests[0].body) == {"a": 1} and other.requests[2].body == b"raw"
    assert other.requests[0].credentials == []
    assert other.requests[1].credentials == ["X-API-Key", "Authorization"]
    assert other.requests[1].header("x-api-key") == "leaked"


# -- cdn_body_bytes / cdn_stall -------------------------------------------------------------------


async def test_the_cdn_can_serve_a_generated_body_that_looks_like_an_mp4(
    simulator: StartSimulator, session: Session
) -> None:
    size = 3 * 1024 * 1024 + 7
    sim = await simulator(cdn_body_bytes=size)
    url = await video_url(session, sim)
    async with aiohttp.ClientSession() as bare:
        async with bare.get(url) as r:
            data = await r.read()
            assert (r.status, r.content_type, r.headers["Content-Length"]) == (
                200,
                "video/mp4",
                str(size),
            )
        assert FTYP == b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
        assert len(data) == size and data.startswith(FTYP)
        assert data.count(0) == size - len(FTYP.replace(b"\x00", b""))
        async with bare.get(url, headers={"Range": "bytes=10-29"}) as r:
            assert r.status == 206 and r.headers["Content-Range"] == f"bytes 10-29/{size}"
            assert await r.read() == FTYP[10:] + bytes(6)


async def test_a_generated_body_of_5_gb_is_streamed_not_built(
    simulator: StartSimulator, session: Session
) -> None:
    size = 5 * 1024**3
    sim = await simulator(cdn_body_bytes=size)
    url = await video_url(session, sim)
    async with aiohttp.ClientSession() as bare, bare.get(url) as r:
        assert r.headers["Content-Length"] == str(size)
        assert await r.content.readexactly(1 << 20) == generated_bytes(0, 1 << 20)
    assert generated_bytes(size - 4, 4) == bytes(4)


async def test_a_stalled_cdn_sends_headers_and_4_kb_then_nothing(session: Session) -> None:
    config = SimConfig(**{**FAST, "cdn_stall": True, "cdn_body_bytes": 100_000})
    async with aiohttp.ClientSession() as bare, asyncio.timeout(10):
        async with Simulator(config) as sim:
            url = await video_url(session, sim)
            response = await bare.get(url)
            assert response.status == 200 and response.headers["Content-Length"] == "100000"
            assert await response.content.readexactly(4096) == generated_bytes(0, 4096)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await response.content.read(1)  # nothing more comes
        # the simulator has stopped although its client was still waiting
        response.close()


async def test_a_stalled_answer_ends_when_its_client_goes_away(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(cdn_stall=True)
    url = await video_url(session, sim)
    before = len(asyncio.all_tasks())
    async with aiohttp.ClientSession() as bare, bare.get(url) as r:
        assert int(r.headers["Content-Length"]) > 4096  # the real video, promised whole
        assert len(await r.content.readexactly(4096)) == 4096
        assert len(asyncio.all_tasks()) > before  # the stalled answer is running
    async with aiohttp.ClientSession() as bare, bare.get(url, headers={"Range": "bytes=-10"}) as r:
        assert r.status == 206 and r.headers["Content-Length"] == "10"
        assert len(await r.content.readexactly(9)) == 9  # a short answer: all but its last byte
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await r.content.read(1)
    # the client went away (a response closed unread drops its connection)

    async def answer_ended() -> bool:
        return len(asyncio.all_tasks()) <= before

    await eventually(answer_ended)


# -- storage_ttl ----------------------------------------------------------------------------------


async def test_uploads_expire_after_storage_ttl_and_then_fail_a_create(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(storage_ttl=1.0)
    image = await upload(session, sim)
    put_at = asyncio.get_running_loop().time()

    async def expired() -> bool:
        async with aiohttp.ClientSession() as bare, bare.get(image) as r:
            if r.status == 200:
                return False
            assert (r.status, await r.text()) == (404, "NoSuchKey")
            return True

    assert not await expired()
    await eventually(expired)
    assert asyncio.get_running_loop().time() - put_at >= 1.0
    envelope, _ = await wait_end(session, sim, await create(session, sim, image))
    assert envelope["status"] == "error"
    assert envelope["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    assert envelope["output"]["error_message"].startswith(
        f"Failed to download input image: {image}: HTTP 404"
    )
    assert sim.stats.expired_uploads == 2  # the GET, then the create


async def test_the_presign_expiry_is_the_retention_deadline(
    simulator: StartSimulator, session: Session
) -> None:
    for ttl, retention in [(None, timedelta(days=180)), (3600.0, timedelta(hours=1))]:
        sim = await simulator(storage_ttl=ttl)
        before = datetime.now(UTC)
        body = {"content_type": "image/png", "file_type": "image"}
        async with session.post(f"{sim.base_url}/v1/upload/presign", json=body) as r:
            expires = datetime.fromisoformat((await r.json())["expires_at"])
        assert before + retention - timedelta(seconds=1) <= expires
        assert expires <= datetime.now(UTC) + retention + timedelta(seconds=1)


# -- the file host is another origin -------------------------------------------------------------


async def test_uploads_storage_and_videos_live_on_another_origin(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator()
    api, files = URL(sim.base_url), URL(sim.cdn_base_url)
    assert files.host == "127.0.0.1" and files.port != api.port
    image = await upload(session, sim)
    assert URL(image).origin() == files
    url = await video_url(session, sim, image)
    assert URL(url).origin() == files
    async with aiohttp.ClientSession() as bare:
        async with bare.get(url) as r:
            assert r.status == 200
        for path in (URL(url).path, URL(image).path):  # the API does not serve them
            async with bare.get(sim.base_url + path) as r:
                assert r.status == 404
    assert [(q.method, URL(q.path).path.split("/")[1]) for q in sim.stats.cdn_requests] == [
        ("PUT", "upload"),
        ("GET", "cdn"),
    ]
    assert all(q.credentials == [] for q in sim.stats.cdn_requests)
    async with session.get(url) as r:  # a client that sends its key there is seen doing it
        assert r.status == 200
    assert sim.stats.cdn_requests[-1].credentials == ["X-API-Key"]
    summary = sim.stats.summary()
    assert (summary["cdn_requests"], summary["cdn_requests_with_credentials"]) == (3, 1)


async def test_an_image_on_the_api_origin_is_not_taken_for_an_upload(
    simulator: StartSimulator, session: Session
) -> None:
    """(Fetched as any other URL would be, so private URLs are fetched here: it 404s.)"""
    sim = await simulator(refuse_private_urls=False)
    image = await upload(session, sim)
    elsewhere = sim.base_url + URL(image).path
    envelope, _ = await wait_end(session, sim, await create(session, sim, elsewhere))
    assert envelope["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    assert sim.stats.creates[0].image_sha256 is None


# -- set_reachable --------------------------------------------------------------------------------


async def test_an_unreachable_api_refuses_connections_while_predictions_run_on(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator()
    prediction_id = await create(session, sim)
    await sim.set_reachable(False)
    assert not sim.reachable
    async with aiohttp.ClientSession() as bare:
        with pytest.raises(aiohttp.ClientConnectorError):
            async with bare.get(f"{sim.base_url}/v1/model", params={"slug": MODEL}):
                pass

        async def ended() -> bool:
            return prediction_id in sim.stats.completions

        await eventually(ended)
        async with bare.get(f"{sim.cdn_base_url}/cdn/{prediction_id}.mp4") as r:
            assert r.status == 200  # the CDN host stays up
    port = sim.port
    await sim.set_reachable(True)
    assert sim.reachable and sim.port == port and sim.base_url.endswith(f":{port}")
    envelope, _ = await wait_end(session, sim, prediction_id)
    assert envelope["status"] == "success"


async def test_going_unreachable_cuts_off_a_held_create_but_the_prediction_exists(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(create_delay=30.0, executions_lag=0.0)
    image = await upload(session, sim)
    answer = asyncio.create_task(create(session, sim, image))

    async def made() -> bool:
        return bool(sim.stats.creates)

    await eventually(made)
    await sim.set_reachable(False)
    with pytest.raises(aiohttp.ClientError):
        await answer
    await sim.set_reachable(True)
    async with session.get(f"{sim.base_url}/v1/executions") as r:
        rows = (await r.json())["executions"]
    assert [row["id"] for row in rows] == [sim.stats.creates[0].prediction_id]


# -- the stats ------------------------------------------------------------------------------------


async def test_the_stats_endpoint_shows_the_hostile_counters(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(create_bad_answer="html")
    image = await upload(session, sim)
    async with session.post(f"{sim.base_url}/v1/prediction", json=create_body(image)) as r:
        assert r.status == 200
    async with session.get(f"{sim.base_url}/_sim/stats") as r:
        summary = await r.json()
    assert summary["creates"] == 1 and summary["bad_create_answers"] == 1
    assert summary["cdn_requests"] == 1 and summary["cdn_requests_with_credentials"] == 0
    assert summary["hidden_polls"] == summary["redirects"] == summary["expired_uploads"] == 0
