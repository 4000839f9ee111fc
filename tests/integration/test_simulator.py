"""The simulator keeps the API contract (``/work/shared/eachlabs-api.md``), over real HTTP.

Each test starts its own fast simulator with the one switch its behaviour is about, and polls
with a deadline instead of relying on exact timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import av
import pytest
from PIL import Image, ImageChops, ImageStat

from runner.models import MODELS
from runner.simulator import PROFILES, SimConfig, Simulator, serve_forever

from .conftest import MakePng, StartSimulator, png_bytes

#: Tests of the simulator itself stay on its default profile, whatever ``SIM_PROFILE`` says.
SIM_PROFILE = "real"

Session = aiohttp.ClientSession
IN_FLIGHT = {"created", "starting", "processing"}
MODEL = "minimax-i2v-01"


async def upload(session: Session, sim: Simulator, data: bytes | None = None) -> str:
    """Presign, PUT and return the public URL of ``data`` (a default PNG)."""
    body = {"content_type": "image/png", "file_type": "image"}
    async with session.post(f"{sim.base_url}/v1/upload/presign", json=body) as r:
        assert r.status == 200
        slot = await r.json()
    async with (
        aiohttp.ClientSession() as bare,  # the PUT needs no key
        bare.put(
            slot["presigned_url"], data=data or png_bytes(), headers=slot["required_headers"]
        ) as r,
    ):
        assert r.status == 200
    return str(slot["public_url"])


async def create(
    session: Session,
    sim: Simulator,
    image_url: str | None = None,
    *,
    prompt: str = "a red kite, zoom in",
    model: str = MODEL,
) -> str:
    image_url = image_url or await upload(session, sim)
    body = {
        "model": model,
        "version": "0.0.1",
        "input": {"prompt": prompt, "first_frame_image": image_url},
    }
    async with session.post(f"{sim.base_url}/v1/prediction", json=body) as r:
        answer = await r.json()
        assert r.status == 200, answer
    return str(answer["predictionID"])


async def poll(session: Session, sim: Simulator, prediction_id: str) -> dict[str, Any]:
    async with session.get(f"{sim.base_url}/v1/prediction/{prediction_id}") as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def wait_end(
    session: Session, sim: Simulator, prediction_id: str, deadline: float = 10.0
) -> tuple[dict[str, Any], list[str]]:
    """Poll until the status leaves created/processing; ``(last envelope, statuses seen)``."""
    seen: list[str] = []
    async with asyncio.timeout(deadline):
        while True:
            envelope = await poll(session, sim, prediction_id)
            if not seen or seen[-1] != envelope["status"]:
                seen.append(envelope["status"])
            if envelope["status"] not in IN_FLIGHT:
                return envelope, seen
            await asyncio.sleep(0.01)


async def get_json(session: Session, url: str, **params: str) -> tuple[int, Any]:
    async with session.get(url, params=params) as r:
        return r.status, await r.json(content_type=None)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- authentication and request ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_bodies", "refusal"),
    [("terse", {}), ("helpful", {"error": "Invalid or missing API key"})],
)
async def test_both_key_headers_work_and_a_missing_or_unknown_key_is_401(
    simulator: StartSimulator, error_bodies: str, refusal: dict[str, str]
) -> None:
    sim = await simulator(api_keys=frozenset({"good"}), error_bodies=error_bodies)
    url = f"{sim.base_url}/v1/executions"
    async with aiohttp.ClientSession() as bare:
        for headers in ({"X-API-Key": "good"}, {"Authorization": "Bearer good"}):
            async with bare.get(url, headers=headers) as r:
                assert r.status == 200
        for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "bad"}, {"Authorization": "Bearer"}):
            async with bare.get(url, headers=headers) as r:
                assert r.status == 401
                assert await r.json() == refusal
        async with bare.get(f"{sim.base_url}/v1/model", params={"slug": MODEL}) as r:
            assert r.status == 200  # the model schema needs no key
    assert [name for _, name in sim.stats.api_requests].count("executions") == 6


async def test_request_id_is_echoed_or_generated(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator()
    url = f"{sim.base_url}/v1/prediction/nope"
    async with session.get(url, headers={"X-Request-Id": "req-123"}) as r:
        assert r.status == 404
        assert r.headers["X-Request-Id"] == "req-123"
    async with session.get(url) as r:
        assert r.headers["X-Request-Id"]


# -- create ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/prediction", "/v1/prediction/"])
async def test_create_answers_the_documented_body_on_both_paths(
    simulator: StartSimulator, session: Session, path: str
) -> None:
    sim = await simulator()
    image = await upload(session, sim)
    body = {
        "model": MODEL,
        "version": "0.0.1",
        "input": {"prompt": "p", "first_frame_image": image},
    }
    async with session.post(sim.base_url + path, json=body) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["status"] == "success"
    assert answer["message"] == "Prediction created successfully"
    assert len(sim.stats.creates) == 1
    assert answer["predictionID"] == sim.stats.creates[0].prediction_id


#: Creates the API refuses: (body, status); each creates nothing.
REFUSED_CREATES: list[tuple[Any, int]] = [
    ({"model": MODEL, "input": {"first_frame_image": "https://example.com/a.png"}}, 400),
    (
        {"model": MODEL, "input": {"prompt": 5, "first_frame_image": "https://example.com/a.png"}},
        400,
    ),
    ({"model": MODEL, "input": {"prompt": "p"}}, 400),
    ({"model": MODEL, "input": {"prompt": "p", "first_frame_image": 7}}, 400),
    (
        {
            "model": MODEL,
            "input": {
                "prompt": "p",
                "first_frame_image": "https://example.com/a.png",
                "prompt_optimizer": "yes",
            },
        },
        400,
    ),
    (
        {
            "model": "minimax-hailuo-v2-pro-image-to-video",
            "input": {"prompt": "p", "image_url": "https://example.com/a.png", "duration": 7},
        },
        400,
    ),
    ({"model": MODEL, "input": "p"}, 400),
    ({"input": {}}, 400),
    ([1, 2], 422),
]


@pytest.mark.parametrize("error_bodies", ["terse", "helpful"])
async def test_refused_creates_answer_the_documented_errors_and_create_nothing(
    simulator: StartSimulator, session: Session, error_bodies: str
) -> None:
    sim = await simulator(error_bodies=error_bodies)
    url = f"{sim.base_url}/v1/prediction"
    async with session.post(url, json={"model": "no-such-model", "input": {}}) as r:
        assert (r.status, await r.json()) == (404, {"status": 404, "error": "not found"})
    for body, status in REFUSED_CREATES:
        async with session.post(url, json=body) as r:
            assert r.status == status, body
            answer = await r.json()
        if error_bodies == "terse":
            assert answer == {}, body  # the real gateway says nothing more
        else:
            assert set(answer) == {"error"} and answer["error"], body
    async with session.post(
        url, data=b"{not json", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 422
        expected = {} if error_bodies == "terse" else {"error": "invalid request body"}
        assert await r.json() == expected
    assert sim.stats.creates == []


async def test_a_create_fault_answers_500_but_the_prediction_exists(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(create_fault_rate=1.0, executions_lag=0.0)
    image = await upload(session, sim)
    body = {"model": MODEL, "input": {"prompt": "p", "first_frame_image": image}}
    async with session.post(f"{sim.base_url}/v1/prediction", json=body) as r:
        assert r.status == 500
        assert await r.text() == "upstream error"
    _, page = await get_json(session, f"{sim.base_url}/v1/executions", model=MODEL)
    assert [row["id"] for row in page["executions"]] == [sim.stats.creates[0].prediction_id]


async def test_a_held_create_answer_comes_after_the_prediction_is_listed(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(create_delay=1.0, executions_lag=0.0)
    image = await upload(session, sim)
    answer = asyncio.create_task(create(session, sim, image))
    async with asyncio.timeout(0.9):
        while True:  # the crash window: it exists before its create is answered
            _, page = await get_json(session, f"{sim.base_url}/v1/executions")
            if page["executions"]:
                break
            await asyncio.sleep(0.02)
    assert not answer.done()
    assert await answer == page["executions"][0]["id"]


# -- lifecycle and output shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "extract"),
    [
        ("list", lambda o: o[0]),
        ("string", lambda o: o),
        ("json_string", lambda o: json.loads(o)[0]),
        ("object_url", lambda o: o["url"]),
        ("object_video_url", lambda o: o["video_url"]),
    ],
)
async def test_a_prediction_goes_created_starting_processing_success_with_each_output_shape(
    simulator: StartSimulator, session: Session, shape: str, extract: Any
) -> None:
    sim = await simulator(
        output_shape=shape,
        queue_delay=0.15,
        starting_delay=0.15,
        runtime_min=0.5,
        runtime_mean=0.5,
        runtime_max=0.5,
    )
    prediction_id = await create(session, sim)
    first = await poll(session, sim, prediction_id)
    assert first["status"] == "created"
    assert first["output"] is None and first["metrics"] == {"predict_time": 0, "cost": 0}
    envelope, seen = await wait_end(session, sim, prediction_id)
    assert seen == ["created", "starting", "processing", "success"]
    assert envelope["id"] == prediction_id
    assert envelope["input"] == sim.stats.creates[0].input
    assert envelope["urls"]["get"].endswith(f"/v1/prediction/{prediction_id}")
    assert envelope["urls"]["cancel"].endswith(f"/v1/prediction/{prediction_id}/cancel")
    assert envelope["metrics"]["predict_time"] == pytest.approx(0.5)
    assert envelope["metrics"]["cost"] == pytest.approx(0.43)
    url = extract(envelope["output"])
    assert url == f"{sim.cdn_base_url}/cdn/{prediction_id}.mp4"
    async with session.get(url) as r:
        assert r.status == 200 and r.content_type == "video/mp4"
    done = sim.stats.completions[prediction_id]
    assert done.status == "success" and sim.stats.in_flight == 0
    assert done.visible_at - done.created_at >= done.run_time


@pytest.mark.parametrize("shape", ["full", "dispatch", "logs"])
async def test_a_failed_prediction_reports_its_reason_in_each_error_shape(
    simulator: StartSimulator, session: Session, shape: str
) -> None:
    sim = await simulator(failure_rate=1.0, error_shape=shape)
    envelope, _ = await wait_end(session, sim, await create(session, sim))
    assert envelope["status"] == "error"
    assert envelope["metrics"]["cost"] == 0
    output = envelope["output"]
    if shape == "full":
        assert output["error"] == "Execution failed"
        assert output["error_code"] == "PROVIDER_FAILED"
        assert output["error_message"]
        assert output["classification"] == {"category": "PROVIDER"}
        assert output["retryable"] is False
    elif shape == "dispatch":
        assert set(output) == {"error"} and output["error"]
    else:
        assert output is None and "PROVIDER_FAILED" in envelope["logs"]


async def test_a_retryable_failure_says_so(simulator: StartSimulator, session: Session) -> None:
    sim = await simulator(retryable_failure_rate=1.0)
    envelope, _ = await wait_end(session, sim, await create(session, sim))
    assert envelope["output"]["error_code"] == "PROVIDER_RATE_LIMIT"
    assert envelope["output"]["retryable"] is True


async def test_legacy_servers_say_failed_and_canceled(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(legacy_statuses=True, failure_rate=1.0, runtime_min=0.2)
    failed, _ = await wait_end(session, sim, await create(session, sim))
    assert failed["status"] == "failed"
    slow = await simulator(
        legacy_statuses=True,
        cancel_ignored_rate=0.0,
        runtime_mean=30,
        runtime_min=30,
        runtime_max=30,
    )
    prediction_id = await create(session, slow)
    async with session.post(f"{slow.base_url}/v1/prediction/{prediction_id}/cancel") as r:
        assert r.status == 200
    envelope, _ = await wait_end(session, slow, prediction_id)
    assert envelope["status"] == "canceled"


async def test_an_unreachable_image_url_fails_soon_with_input_download_error(
    simulator: StartSimulator, session: Session
) -> None:
    """(With private URLs fetched, so the fetch itself fails: nothing listens there.)"""
    sim = await simulator(
        runtime_mean=30, runtime_min=30, runtime_max=30, refuse_private_urls=False
    )
    url = f"http://127.0.0.1:{closed_port()}/x.png"
    prediction_id = await create(session, sim, url)
    envelope, _ = await wait_end(session, sim, prediction_id, deadline=5.0)
    assert envelope["status"] == "error"
    assert envelope["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    assert sim.stats.creates[0].image_sha256 is None
    assert sim.stats.in_flight == 0


@pytest.mark.parametrize("data", [b"not an image", png_bytes(size=(40, 40))])
async def test_an_unusable_image_fails_with_input_validation_error(
    simulator: StartSimulator, session: Session, data: bytes
) -> None:
    sim = await simulator()
    envelope, _ = await wait_end(
        session, sim, await create(session, sim, await upload(session, sim, data))
    )
    assert envelope["output"]["error_code"] == "INPUT_VALIDATION_ERROR"


async def test_an_image_on_another_host_is_fetched_over_http(
    simulator: StartSimulator, session: Session
) -> None:
    """(The other host is on loopback: only a simulator that fetches private URLs takes it.)"""
    elsewhere = await simulator()
    sim = await simulator(refuse_private_urls=False)
    url = await upload(session, elsewhere)
    envelope, _ = await wait_end(session, sim, await create(session, sim, url))
    assert envelope["status"] == "success"
    assert sim.stats.creates[0].image_sha256 is None


async def test_repeated_images_are_rendered_once(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator()
    image = await upload(session, sim)
    ids = [await create(session, sim, image) for _ in range(3)]
    for prediction_id in ids:
        assert (await wait_end(session, sim, prediction_id))[0]["status"] == "success"
    assert sim.stats.renders == 1


# -- the account's limits and money ---------------------------------------------------------------


async def test_the_in_flight_cap_answers_429_until_a_prediction_ends(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(concurrency=2, retry_after=3.0)
    image = await upload(session, sim)
    first = await create(session, sim, image)
    await create(session, sim, image)
    body = {"model": MODEL, "input": {"prompt": "p", "first_frame_image": image}}
    async with session.post(f"{sim.base_url}/v1/prediction", json=body) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "3"
        assert await r.json() == {
            "status": 429,
            "error": "too many requests",
            "details": "Account rate limited: account is limited to 2 concurrent executions "
            "(2 in flight)",
        }
    await wait_end(session, sim, first)
    await create(session, sim, image)
    assert sim.stats.refused_cap == 1
    assert sim.stats.max_in_flight == 2
    assert len(sim.stats.creates) == 3


async def test_many_concurrent_creates_never_exceed_the_cap(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(concurrency=3)
    image = await upload(session, sim)
    body = {"model": MODEL, "input": {"prompt": "p", "first_frame_image": image}}

    async def attempt() -> int:
        async with session.post(f"{sim.base_url}/v1/prediction", json=body) as r:
            return r.status

    statuses = await asyncio.gather(*(attempt() for _ in range(10)))
    assert sorted(statuses) == [200] * 3 + [429] * 7
    assert sim.stats.max_in_flight == 3


async def test_the_request_rate_limit_admits_at_most_n_per_sliding_window(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(rate_limit=4, rate_window=0.3)
    statuses: list[int] = []

    async def burst(count: int) -> None:
        for _ in range(count):
            async with session.get(f"{sim.base_url}/v1/model", params={"slug": MODEL}) as r:
                statuses.append(r.status)
                if r.status == 429:
                    body = await r.json()
                    assert body["status"] == 429 and body["error"] == "too many requests"

    await burst(6)
    assert statuses == [200] * 4 + [429] * 2
    await asyncio.sleep(0.35)
    await burst(3)
    assert statuses[6:] == [200] * 3  # the window has passed: admitted again
    admitted = [t for (t, _), s in zip(sim.stats.api_requests, statuses, strict=True) if s == 200]
    for i, start in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t < start + 0.3) <= 4
    assert sim.stats.refused_rate == statuses.count(429)


async def _model_requests(
    session: Session, sim: Simulator, count: int, *, every: float | None = None
) -> list[tuple[int, Any, str | None]]:
    """``(status, body, Retry-After)`` of ``count`` model requests: all at once, or one at a time
    with ``every`` seconds between an answer and the next request."""

    async def one() -> tuple[int, Any, str | None]:
        async with session.get(f"{sim.base_url}/v1/model", params={"slug": MODEL}) as r:
            return r.status, await r.json(), r.headers.get("Retry-After")

    if every is None:
        return list(await asyncio.gather(*(one() for _ in range(count))))
    answers = []
    for i in range(count):
        if i:
            await asyncio.sleep(every)
        answers.append(await one())
    return answers


#: A bucket of 3 refilled at 4 a second (0.25 s a token). A burst of 8 at once gets a 429 unless
#: it takes the server over a second to receive; 8 spread at 0.25 s are all admitted unless the
#: first answer takes over half a second (two spare tokens' worth).
BUCKET = {"rate_limit": 4, "rate_window": 1.0, "rate_burst": 3, "retry_after": 2.0}


async def test_a_token_bucket_refuses_part_of_a_burst_with_the_rate_limits_429(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(**BUCKET)
    answers = await _model_requests(session, sim, 8)
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) >= 3  # the bucket starts full
    assert statuses.count(429) >= 1
    for status, body, retry_after in answers:
        if status == 429:  # the same answer as the sliding window's
            assert body == {
                "status": 429,
                "error": "too many requests",
                "details": "Rate limit exceeded: at most 4 requests per 1 seconds",
            }
            assert retry_after == "2"
    assert sim.stats.refused_rate == statuses.count(429)
    assert len(sim.stats.api_requests) == 8


async def test_the_same_requests_spread_at_the_buckets_refill_rate_are_all_admitted(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(**BUCKET)
    interval = BUCKET["rate_window"] / BUCKET["rate_limit"]
    answers = await _model_requests(session, sim, 8, every=interval)
    assert [status for status, _, _ in answers] == [200] * 8
    assert sim.stats.refused_rate == 0


async def test_without_a_burst_setting_the_window_admits_a_whole_burst_at_once(
    simulator: StartSimulator, session: Session
) -> None:
    """The same burst of 8: legal under 8 in any window, and the 9th is refused."""
    sim = await simulator(rate_limit=8, rate_window=60.0)
    answers = await _model_requests(session, sim, 8)
    assert [status for status, _, _ in answers] == [200] * 8
    assert [status for status, _, _ in await _model_requests(session, sim, 1)] == [429]
    assert sim.stats.refused_rate == 1


async def test_creates_beyond_the_balance_answer_402(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(balance_usd=1.0)
    image = await upload(session, sim)
    await create(session, sim, image)
    await create(session, sim, image)  # two in flight reserve 0.86 of 1.00
    body = {"model": MODEL, "input": {"prompt": "p", "first_frame_image": image}}
    async with session.post(f"{sim.base_url}/v1/prediction", json=body) as r:
        assert r.status == 402
        answer = await r.json()
    assert answer["status"] == 402 and answer["error"] == "payment required" and answer["details"]
    assert len(sim.stats.creates) == 2


async def test_cancel_ends_an_in_flight_prediction_unbilled_and_frees_its_slot(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(
        concurrency=1, cancel_ignored_rate=0.0, runtime_mean=30, runtime_min=30, runtime_max=30
    )
    prediction_id = await create(session, sim)
    async with session.post(f"{sim.base_url}/v1/prediction/{prediction_id}/cancel") as r:
        answer = await r.json()
    assert r.status == 200
    assert answer["status"] == "success" and answer["predictionID"] == prediction_id
    envelope, _ = await wait_end(session, sim, prediction_id)  # at its next status quantum
    assert envelope["status"] == "cancelled" and envelope["metrics"]["cost"] == 0
    assert sim.stats.in_flight == 0
    await create(session, sim)  # the slot is free again
    async with session.post(f"{sim.base_url}/v1/prediction/nope/cancel") as r:
        assert r.status == 500
        assert await r.json() == {"error": "internal server error"}


async def test_a_kind_server_cancels_at_once_and_says_an_unknown_id_is_not_found(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(
        **{**PROFILES["kind"], "concurrency": 1},
        runtime_mean=30,
        runtime_min=30,
        runtime_max=30,
    )
    prediction_id = await create(session, sim)
    async with session.post(f"{sim.base_url}/v1/prediction/{prediction_id}/cancel") as r:
        assert (await r.json())["status"] == "success"
    envelope = await poll(session, sim, prediction_id)
    assert envelope["status"] == "cancelled" and envelope["metrics"]["cost"] == 0
    assert sim.stats.in_flight == 0
    async with session.post(f"{sim.base_url}/v1/prediction/nope/cancel") as r:
        assert r.status == 404
        assert await r.json() == {"error": "Prediction not found"}


async def test_cancelling_a_finished_prediction_changes_nothing(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator()
    prediction_id = await create(session, sim)
    await wait_end(session, sim, prediction_id)
    async with session.post(f"{sim.base_url}/v1/prediction/{prediction_id}/cancel") as r:
        assert r.status == 200
    assert (await poll(session, sim, prediction_id))["status"] == "success"


# -- models and executions -------------------------------------------------------------------------


async def test_model_and_models_serve_the_model_table(simulator: StartSimulator) -> None:
    sim = await simulator()
    async with aiohttp.ClientSession() as bare:  # no key needed
        status, body = await get_json(bare, f"{sim.base_url}/v1/model", slug=MODEL)
        assert status == 200 and body == MODELS[MODEL].describe()
        status, body = await get_json(bare, f"{sim.base_url}/v1/model", slug="nope")
        assert status == 404 and body == {"error": "Failed to fetch model: model not found"}
        status, listing = await get_json(bare, f"{sim.base_url}/v1/models")
        assert status == 200 and [m["slug"] for m in listing] == list(MODELS)
        _, listing = await get_json(bare, f"{sim.base_url}/v1/models", name="director")
        assert {m["slug"] for m in listing} == {"minimax-i2v-01-director", "hailuo-i2v-0-1"}
        _, listing = await get_json(bare, f"{sim.base_url}/v1/models", limit="2", offset="1")
        assert [m["slug"] for m in listing] == list(MODELS)[1:3]


async def test_executions_list_filter_and_page_newest_first(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(
        runtime_mean=30,
        runtime_min=30,
        runtime_max=30,
        executions_lag=0.0,
        cancel_ignored_rate=0.0,
        starting_delay=30.0,
    )
    image = await upload(session, sim)
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = [await create(session, sim, image) for _ in range(3)]
    other = await create(session, sim, image, model="minimax-i2v-01-live")
    async with session.post(f"{sim.base_url}/v1/prediction/{ids[0]}/cancel"):
        pass
    await wait_end(session, sim, ids[0])
    url = f"{sim.base_url}/v1/executions"
    status, page = await get_json(session, url, model=MODEL)
    assert status == 200
    assert [row["id"] for row in page["executions"]] == ids[::-1]
    assert page["total_count"] == 3 and page["total_capped"] is False
    assert (page["offset"], page["limit"]) == (0, 20)
    row = page["executions"][0]
    assert set(row) == {
        "id", "model", "requested_model", "status", "created_at", "started_at", "completed_at",
        "execution_cost", "run_time", "output", "workflow_id", "workflow_execution_id",
    }  # fmt: skip
    assert row["model"] == row["requested_model"] == MODEL
    assert row["output"] is None and row["completed_at"] is None
    assert row["workflow_id"] is None and row["workflow_execution_id"] is None
    assert datetime.fromisoformat(row["created_at"]) >= before
    cancelled = page["executions"][-1]
    assert cancelled["status"] == "cancelled" and cancelled["execution_cost"] == 0
    _, page = await get_json(session, url, status="error")
    assert page["executions"] == []  # a cancelled prediction is not an error
    _, page = await get_json(session, url, status="created,starting")
    assert {r["id"] for r in page["executions"]} == {*ids[1:], other}
    _, page = await get_json(session, url, limit="2", offset="2")
    assert [r["id"] for r in page["executions"]] == ids[1::-1]
    assert page["total_count"] == 4
    created = datetime.fromisoformat(
        next(r for r in page["executions"] if r["id"] == ids[1])["created_at"]
    )
    _, page = await get_json(
        session, url, **{"from": created.isoformat(), "to": created.isoformat()}
    )
    assert ids[1] in [r["id"] for r in page["executions"]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    _, page = await get_json(session, url, **{"from": future})
    assert page["executions"] == [] and page["total_count"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"status": "processing"},
        {"status": "success,cancelled"},
        {"status": "cancelled"},
        {"status": "Success"},
        {"from": "yesterday"},
        {"to": "2025-01-01T00:00:00"},  # no time zone
    ],
)
async def test_executions_refuse_bad_parameters_with_400(
    simulator: StartSimulator, session: Session, params: dict[str, str]
) -> None:
    sim = await simulator()
    status, body = await get_json(session, f"{sim.base_url}/v1/executions", **params)
    assert (status, body) == (400, {})
    helpful = await simulator(error_bodies="helpful")
    status, body = await get_json(session, f"{helpful.base_url}/v1/executions", **params)
    assert status == 400 and body["error"]


async def test_a_finished_execution_row_has_times_cost_and_output(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(executions_lag=0.0)
    prediction_id = await create(session, sim)
    await wait_end(session, sim, prediction_id)
    _, page = await get_json(session, f"{sim.base_url}/v1/executions", status="success")
    row = page["executions"][0]
    assert row["id"] == prediction_id and row["status"] == "success"
    assert row["execution_cost"] == pytest.approx(0.43) and row["run_time"] > 0
    assert row["output"] == f"{sim.cdn_base_url}/cdn/{prediction_id}.mp4"  # a string
    assert row["created_at"] <= row["started_at"] <= row["completed_at"]
    assert row["completed_at"].endswith("Z")


# -- uploads ---------------------------------------------------------------------------------------


async def test_presign_put_and_public_get_round_trip(
    simulator: StartSimulator, session: Session, make_png: MakePng
) -> None:
    sim = await simulator()
    data = make_png()
    body = {"content_type": "image/png", "file_type": "image"}
    async with session.post(f"{sim.base_url}/v1/upload/presign", json=body) as r:
        slot = await r.json()
    assert set(slot) == {"id", "presigned_url", "public_url", "expires_at", "required_headers"}
    assert slot["required_headers"] == {"Content-Type": "image/png", "x-amz-acl": "public-read"}
    async with aiohttp.ClientSession() as bare:
        async with bare.get(slot["public_url"]) as r:
            assert r.status == 404  # nothing uploaded yet
        for headers in (
            {"Content-Type": "image/png"},
            {"Content-Type": "image/jpeg", "x-amz-acl": "public-read"},
        ):
            async with bare.put(slot["presigned_url"], data=data, headers=headers) as r:
                assert r.status == 403
        bad = slot["presigned_url"].replace("Signature=", "Signature=0")
        async with bare.put(bad, data=data, headers=slot["required_headers"]) as r:
            assert r.status == 403
        async with bare.put(
            slot["presigned_url"], data=data, headers=slot["required_headers"]
        ) as r:
            assert r.status == 200
        async with bare.get(slot["public_url"]) as r:
            assert r.status == 200 and r.content_type == "image/png"
            assert await r.read() == data
    assert (sim.stats.presigns, sim.stats.uploads) == (1, 1)
    assert [name for _, name in sim.stats.api_requests] == ["presign"]
    async with session.post(
        f"{sim.base_url}/v1/upload/presign", json={"content_type": "text/plain"}
    ) as r:
        assert r.status == 400


async def test_a_create_from_an_own_upload_records_the_image_hash(
    simulator: StartSimulator, session: Session, make_png: MakePng
) -> None:
    import hashlib

    sim = await simulator()
    data = make_png(color=(10, 200, 10))
    await create(session, sim, await upload(session, sim, data))
    assert sim.stats.creates[0].image_sha256 == hashlib.sha256(data).hexdigest()


# -- the CDN ---------------------------------------------------------------------------------------


async def finished_video_url(session: Session, sim: Simulator) -> str:
    envelope, _ = await wait_end(session, sim, await create(session, sim))
    assert envelope["status"] == "success"
    return str(envelope["output"][0])


async def test_the_cdn_serves_ranges(simulator: StartSimulator, session: Session) -> None:
    sim = await simulator()
    url = await finished_video_url(session, sim)
    async with aiohttp.ClientSession() as bare:
        async with bare.get(url) as r:
            assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes"
            whole = await r.read()
            assert int(r.headers["Content-Length"]) == len(whole)
        async with bare.get(url, headers={"Range": "bytes=100-"}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
            assert await r.read() == whole[100:]
        async with bare.get(url, headers={"Range": "bytes=-10"}) as r:
            assert r.status == 206 and await r.read() == whole[-10:]
        async with bare.get(url, headers={"Range": f"bytes={len(whole)}-"}) as r:
            assert r.status == 416
        async with bare.get(f"{sim.cdn_base_url}/cdn/nope.mp4") as r:
            assert r.status == 404
    assert sim.stats.downloads == 5
    assert "get" in {name for _, name in sim.stats.api_requests}


async def test_a_cdn_without_range_support_sends_everything(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(cdn_range=False)
    url = await finished_video_url(session, sim)
    async with session.get(url, headers={"Range": "bytes=100-"}) as r:
        assert r.status == 200
        assert len(await r.read()) == int(r.headers["Content-Length"])


async def test_a_truncated_download_announces_everything_and_sends_part(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(truncate_downloads_rate=1.0)
    url = await finished_video_url(session, sim)
    async with aiohttp.ClientSession() as bare, bare.get(url) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


async def test_signed_urls_expire_and_each_poll_signs_a_fresh_one(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(url_ttl=0.3)
    prediction_id = await create(session, sim)
    envelope, _ = await wait_end(session, sim, prediction_id)
    url = envelope["output"][0]
    assert "exp=" in url and "sig=" in url
    async with session.get(url) as r:
        assert r.status == 200
    await asyncio.sleep(0.4)
    async with session.get(url) as r:
        assert r.status == 403
    async with session.get(url.replace("sig=", "sig=0")) as r:
        assert r.status == 403
    fresh = (await poll(session, sim, prediction_id))["output"][0]
    assert fresh != url
    async with session.get(fresh) as r:
        assert r.status == 200


# -- the video -------------------------------------------------------------------------------------


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB").resize(a.size))
    return sum(ImageStat.Stat(diff).mean) / 3


async def test_the_video_is_an_h264_mp4_whose_first_frame_is_the_image(
    simulator: StartSimulator, session: Session, make_png: MakePng
) -> None:
    sim = await simulator(video_seconds=3.0)
    source = make_png(size=(192, 128))
    image = await upload(session, sim, source)
    envelope, _ = await wait_end(session, sim, await create(session, sim, image))
    async with session.get(envelope["output"][0]) as r:
        data = await r.read()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [frame.to_image() for frame in container.decode(stream)]
    assert len(frames) > 24
    assert frames[0].width <= 128 and frames[0].width % 2 == 0 and frames[0].height % 2 == 0
    same = mean_difference(frames[0], Image.open(io.BytesIO(source)))
    other = mean_difference(
        frames[0], Image.open(io.BytesIO(make_png(color=(0, 90, 0), pattern=False)))
    )
    assert same < 12 < other


# -- the standalone server -------------------------------------------------------------------------


async def test_stats_endpoint_is_not_an_api_request(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator()
    status, body = await get_json(session, f"{sim.base_url}/_sim/stats")
    assert status == 200 and body["api_requests"] == 0 and body["in_flight"] == 0


async def test_serve_forever_announces_its_urls(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    task = asyncio.create_task(serve_forever(SimConfig(), "127.0.0.1", port))
    out = ""
    for _ in range(500):  # up to 5 s
        out += capsys.readouterr().out
        if out:
            break
        await asyncio.sleep(0.01)
    api, files = out.splitlines()
    assert api == f"simulator listening on http://127.0.0.1:{port}"
    match = re.fullmatch(r"uploads, storage and CDN on http://127\.0\.0\.1:(\d+)", files)
    assert match is not None and int(match[1]) != port
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_the_simulator_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Simulator(SimConfig(), host="0.0.0.0")
