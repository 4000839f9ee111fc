"""The simulator is as rough as the real API by default (``/work/shared/eachlabs-api.md``).

One test (or a few) per rough behaviour, over real loopback HTTP: terse error bodies, best-effort
cancels, transient faults on every endpoint, executions rows as the real list has them, inputs
the real service would refuse, and the smaller points (keys, the model lookup without a slug,
the ``simulate`` command's profiles and flags). Each pins the status, body and headers the
contract promises, and the switch that turns the behaviour off. Waits poll for a condition under
a deadline; no test relies on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from runner import cli
from runner.models import MODELS
from runner.report import EXIT_CONFIG
from runner.simulator import PROFILES, SimConfig, Simulator
from runner.simulator import app as sim_app
from runner.simulator.config import DEFAULT_FAULT_ENDPOINTS, DEFAULT_FAULT_KINDS

from .conftest import StartSimulator
from .test_sim_hostile import SLOW, eventually
from .test_simulator import MODEL, closed_port, create, get_json, poll, upload, wait_end

#: Tests of the simulator itself stay on its default profile, whatever ``SIM_PROFILE`` says.
SIM_PROFILE = "real"

Session = aiohttp.ClientSession
NOT_FOUND = {"status": 404, "error": "not found"}
SERVER_ERROR = {"error": "internal server error"}
NOT_ALLOWED = {"status": 405, "error": "method not allowed"}
MODEL_NOT_FOUND = {"error": "Failed to fetch model: model not found"}


def body_for(image_url: str, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    field = MODELS[model].image_field
    return {
        "model": model,
        "version": "0.0.1",
        "input": {"prompt": "a red kite, zoom in", field: image_url, **extra},
    }


async def answer(
    session: Session, method: str, url: str, **kwargs: Any
) -> tuple[int, str, Any, CIMultiDict[str]]:
    """``(status, content type, JSON body or text, headers)`` of one request."""
    async with session.request(method, url, **kwargs) as r:
        text = await r.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return r.status, r.content_type, body, CIMultiDict(r.headers)


# -- 1. error bodies -------------------------------------------------------------------------------


async def test_the_gateway_answers_errors_tersely(
    simulator: StartSimulator, session: Session
) -> None:
    """400, 401 and 422 answer ``{}``; unknown predictions and routes a JSON 404, a wrong method
    a JSON 405 with Allow; the documented 402, 429 and model 404 bodies stay as documented."""
    sim = await simulator(api_keys=frozenset({"test-key"}), concurrency=1, **SLOW)
    base = sim.base_url
    image = await upload(session, sim)
    bad_input = body_for(image, prompt_optimizer="yes")
    cases: list[tuple[str, str, dict[str, Any], int, Any]] = [
        ("POST", "/v1/prediction", {"json": bad_input}, 400, {}),
        ("POST", "/v1/prediction", {"json": {"input": {}}}, 400, {}),
        ("POST", "/v1/prediction", {"data": b"{not json"}, 422, {}),
        ("POST", "/v1/upload/presign", {"data": b"[1"}, 422, {}),
        ("POST", "/v1/upload/presign", {"json": {"content_type": "text/plain"}}, 400, {}),
        ("GET", "/v1/executions?limit=0", {}, 400, {}),
        ("GET", "/v1/models?limit=x", {}, 400, {}),
        ("GET", "/v1/executions", {"headers": {"X-API-Key": "wrong"}}, 401, {}),
        ("GET", "/v1/prediction/no-such-id", {}, 404, NOT_FOUND),
        ("GET", "/v1/no/such/route", {}, 404, NOT_FOUND),
        ("DELETE", "/v1/prediction/no-such-id", {}, 405, NOT_ALLOWED),
        ("GET", "/v1/prediction", {}, 405, NOT_ALLOWED),
        ("GET", "/v1/model?slug=nope", {}, 404, MODEL_NOT_FOUND),
    ]  # fmt: skip
    for method, path, kwargs, status, expected in cases:
        got = await answer(session, method, base + path, **kwargs)
        assert got[:3] == (status, "application/json", expected), (method, path)
        assert got[3]["X-Request-Id"]
    allowed = await answer(session, "DELETE", f"{base}/v1/prediction/x")
    assert allowed[3]["Allow"] == "GET,HEAD"
    allowed = await answer(session, "GET", f"{base}/v1/prediction/")
    assert allowed[3]["Allow"] == "POST"
    await create(session, sim, image)
    status, _, body, _ = await answer(
        session, "POST", f"{base}/v1/prediction", json=body_for(image)
    )
    assert status == 429 and body["status"] == 429 and body["error"] == "too many requests"
    assert "limited to 1 concurrent executions" in body["details"]
    poor = await simulator(balance_usd=0.1)
    status, _, body, _ = await answer(
        session, "POST", f"{poor.base_url}/v1/prediction", json=body_for(image)
    )
    assert status == 402 and body["status"] == 402 and body["error"] == "payment required"
    assert body["details"]
    assert len(sim.stats.creates) == 1 and poor.stats.creates == []


async def test_helpful_error_bodies_say_what_was_wrong(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(error_bodies="helpful")
    image = await upload(session, sim)
    status, _, body, _ = await answer(
        session, "POST", f"{sim.base_url}/v1/prediction", json=body_for(image, prompt=5)
    )
    assert status == 400 and body == {"error": "input.prompt: 5 is not of type 'string'"}
    status, _, body, _ = await answer(session, "GET", f"{sim.base_url}/v1/prediction/nope")
    assert (status, body) == (404, {"error": "Prediction not found"})
    status, _, body, _ = await answer(session, "GET", f"{sim.base_url}/v1/nothing")
    assert (status, body) == (404, NOT_FOUND)  # routes answer the same either way


# -- 2. cancel is best effort -------------------------------------------------------------------


async def test_a_cancel_takes_effect_at_the_next_status_quantum_and_is_not_billed(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(status_quantum=0.5, cancel_ignored_rate=0.0, **SLOW)
    prediction_id = await create(session, sim)
    loop = asyncio.get_running_loop()
    created = sim.stats.creates[0].t
    sent = loop.time()
    status, content_type, body, _ = await answer(
        session, "POST", f"{sim.base_url}/v1/prediction/{prediction_id}/cancel"
    )
    assert (status, content_type) == (200, "application/json")
    assert set(body) == {"status", "message", "predictionID"}
    assert body["status"] == "success" and body["predictionID"] == prediction_id
    envelope = await poll(session, sim, prediction_id)
    if loop.time() - created < 0.5:  # (always, unless this machine stalled for half a second)
        assert envelope["status"] in {"created", "starting"}  # not at once
    envelope, _ = await wait_end(session, sim, prediction_id)
    assert envelope["status"] == "cancelled" and envelope["metrics"]["cost"] == 0
    done = sim.stats.completions[prediction_id]
    assert done.status == "cancelled" and done.visible_at > sent
    steps = (done.visible_at - created) / 0.5
    assert steps == pytest.approx(round(steps)) and round(steps) >= 1  # on a quantum
    assert sim.stats.in_flight == 0 and sim.stats.cancels == 1


async def test_an_ignored_cancel_runs_to_its_end_and_is_billed(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(cancel_ignored_rate=1.0)
    prediction_id = await create(session, sim)
    status, _, body, _ = await answer(
        session, "POST", f"{sim.base_url}/v1/prediction/{prediction_id}/cancel"
    )
    assert status == 200 and body["status"] == "success"  # the answer says nothing of it
    envelope, _ = await wait_end(session, sim, prediction_id)
    assert envelope["status"] == "success"
    assert envelope["metrics"]["cost"] == pytest.approx(0.43)
    assert (sim.stats.cancels, sim.stats.cancels_ignored) == (1, 1)


async def test_an_own_end_due_before_the_cancel_takes_effect_stands(
    simulator: StartSimulator, session: Session
) -> None:
    """The run ends at its first quantum (1 s); a cancel sent before it would take effect then
    too, and loses to the end that was due: success, billed."""
    sim = await simulator(
        cancel_ignored_rate=0.0,
        status_quantum=1.0,
        queue_delay=0.0,
        starting_delay=0.0,
        runtime_mean=0.6,
        runtime_min=0.6,
        runtime_max=0.6,
    )
    prediction_id = await create(session, sim)
    created = sim.stats.creates[0].t
    async with session.post(f"{sim.base_url}/v1/prediction/{prediction_id}/cancel") as r:
        assert r.status == 200
    sent_in_time = asyncio.get_running_loop().time() - created < 1.0
    envelope, _ = await wait_end(session, sim, prediction_id)
    if sent_in_time:  # (always, unless this machine stalled for a second)
        assert envelope["status"] == "success"
        assert envelope["metrics"]["cost"] == pytest.approx(0.43)


@pytest.mark.parametrize(
    ("setting", "words"),
    [("success", {"success"}), ("cancelled", {"cancelled"}), ("random", {"success", "cancelled"})],
)
async def test_the_cancel_answer_status_is_unrelated_to_the_outcome(
    simulator: StartSimulator, session: Session, setting: str, words: set[str]
) -> None:
    sim = await simulator(cancel_answer_status=setting, concurrency=30, **SLOW)
    image = await upload(session, sim)
    seen = set()
    for _ in range(12):
        prediction_id = await create(session, sim, image)
        async with session.post(f"{sim.base_url}/v1/prediction/{prediction_id}/cancel") as r:
            seen.add((await r.json())["status"])
    assert seen == words


async def test_cancelling_an_unknown_id_answers_500(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator()
    got = await answer(session, "POST", f"{sim.base_url}/v1/prediction/nope/cancel")
    assert got[:3] == (500, "application/json", SERVER_ERROR)


# -- 3. transient faults on every endpoint -------------------------------------------------------


async def fault_request(session: Session, sim: Simulator, endpoint: str) -> aiohttp.ClientResponse:
    """One request to ``endpoint`` (setting up what it needs first, without faults on the way)."""
    base = sim.base_url
    if endpoint in ("upload", "storage"):
        presign = {"content_type": "image/png", "file_type": "image"}
        async with session.post(f"{base}/v1/upload/presign", json=presign) as r:
            slot = await r.json()
        if endpoint == "upload":
            return await session.put(
                slot["presigned_url"], data=b"png", headers=slot["required_headers"]
            )
        return await session.get(slot["public_url"])
    if endpoint == "cdn":
        return await session.get(f"{sim.cdn_base_url}/cdn/nope.mp4")
    requests: dict[str, tuple[str, str, dict[str, Any]]] = {
        "get": ("GET", "/v1/prediction/nope", {}),
        "cancel": ("POST", "/v1/prediction/nope/cancel", {}),
        "model": ("GET", f"/v1/model?slug={MODEL}", {}),
        "models": ("GET", "/v1/models", {}),
        "executions": ("GET", "/v1/executions", {}),
        "presign": ("POST", "/v1/upload/presign", {"json": {"content_type": "image/png"}}),
    }
    method, path, kwargs = requests[endpoint]
    return await session.request(method, base + path, **kwargs)


@pytest.mark.parametrize("endpoint", sorted(DEFAULT_FAULT_ENDPOINTS | {"cdn"}))
async def test_each_fault_kind_hits_each_endpoint(simulator: StartSimulator, endpoint: str) -> None:
    """500 (JSON from the API), 502 and 504 (a gateway's HTML page), reset (the connection
    closes unanswered), timeout (held ``fault_hang``, then 504); counted per endpoint."""
    loop = asyncio.get_running_loop()
    for kind in ("500", "502", "504", "reset", "timeout"):
        sim = await simulator(
            fault_rate=1.0,
            fault_endpoints=frozenset({endpoint}),
            fault_kinds=frozenset({kind}),
            fault_hang=0.2,
        )
        began = loop.time()
        async with aiohttp.ClientSession(headers={"X-API-Key": "test-key"}) as fresh:
            if kind == "reset":
                with pytest.raises(aiohttp.ClientConnectionError):
                    async with await fault_request(fresh, sim, endpoint) as r:
                        await r.read()
            else:
                async with await fault_request(fresh, sim, endpoint) as r:
                    status, text = r.status, await r.text()
                assert status == (504 if kind == "timeout" else int(kind)), kind
                assert r.headers["X-Request-Id"]
                if kind == "500":
                    api = endpoint not in ("upload", "storage", "cdn")
                    assert json.loads(text) == SERVER_ERROR if api else text.startswith("Internal")
                else:
                    assert r.content_type == "text/html"
                    assert f"<title>{status} " in text
        if kind == "timeout":
            assert loop.time() - began >= 0.2
        # aiohttp sends an idempotent request (GET, PUT) a second time when its connection
        # closes unanswered: that one faults too.
        count = 2 if kind == "reset" and endpoint not in ("cancel", "presign") else 1
        assert sim.stats.faults == {endpoint: count}, kind
        assert sim.stats.summary()["faults"] == {endpoint: count}


async def test_a_faulted_request_has_no_other_effect(
    simulator: StartSimulator, session: Session
) -> None:
    """A faulted PUT stores nothing, a faulted presign makes no slot, a faulted cancel cancels
    nothing, and faulted requests take no place in the rate window."""
    presign = {"content_type": "image/png", "file_type": "image"}
    storage = await simulator(fault_rate=1.0, fault_endpoints=frozenset({"upload"}))
    async with session.post(f"{storage.base_url}/v1/upload/presign", json=presign) as r:
        slot = await r.json()
    with contextlib.suppress(aiohttp.ClientConnectionError):  # (a reset, if drawn)
        async with session.put(
            slot["presigned_url"], data=b"png", headers=slot["required_headers"]
        ) as r:
            assert r.status >= 500
    async with session.get(slot["public_url"]) as r:
        assert r.status == 404 and storage.stats.uploads == 0
    faulted = await simulator(
        fault_rate=1.0, fault_endpoints=frozenset({"presign"}), fault_kinds=frozenset({"502"})
    )
    async with session.post(f"{faulted.base_url}/v1/upload/presign", json=presign) as r:
        assert r.status == 502
    assert faulted.stats.presigns == 0
    sim = await simulator(
        fault_rate=1.0,
        fault_endpoints=frozenset({"cancel"}),
        fault_kinds=frozenset({"500"}),
        cancel_ignored_rate=0.0,
        rate_limit=4,
        rate_window=60.0,
    )
    prediction_id = await create(session, sim)  # presign and create: 2 of the window's 4
    for _ in range(5):
        async with session.post(f"{sim.base_url}/v1/prediction/{prediction_id}/cancel") as r:
            assert (r.status, await r.json()) == (500, SERVER_ERROR)
    statuses = []
    for _ in range(3):
        async with session.get(f"{sim.base_url}/v1/model", params={"slug": MODEL}) as r:
            statuses.append(r.status)
    assert statuses == [200, 200, 429]  # the faulted cancels took no place in the window
    assert sim.stats.cancels == 0 and sim.stats.faults == {"cancel": 5}

    async def ended() -> bool:
        return prediction_id in sim.stats.completions

    await eventually(ended)
    assert sim.stats.completions[prediction_id].status == "success"  # never cancelled


async def test_the_realistic_profile_faults_a_few_percent_of_requests(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(**PROFILES["realistic"], fault_kinds=frozenset({"500", "502", "504"}))
    statuses = []
    for _ in range(300):
        async with session.get(f"{sim.base_url}/v1/model", params={"slug": MODEL}) as r:
            statuses.append(r.status)
    faulted = len(statuses) - statuses.count(200)
    assert 0 < faulted < 30 and set(statuses) <= {200, 500, 502, 504}
    assert sim.stats.faults == {"model": faulted}


async def test_faults_are_off_by_default_and_creates_have_their_own_switch(
    simulator: StartSimulator, session: Session
) -> None:
    sim = await simulator(fault_rate=1.0, fault_endpoints=frozenset({"model"}))
    prediction_id = await create(session, sim)  # creates are never hit by fault_rate
    assert (await poll(session, sim, prediction_id))["id"] == prediction_id
    assert sim.stats.faults == {}
    assert SimConfig().fault_rate == 0 and SimConfig().fault_kinds == DEFAULT_FAULT_KINDS


# -- 4. executions rows --------------------------------------------------------------------------


async def rows(session: Session, sim: Simulator, **params: str) -> list[dict[str, Any]]:
    status, page = await get_json(session, f"{sim.base_url}/v1/executions", **params)
    assert status == 200, page
    return list(page["executions"])


async def test_executions_rows_are_as_the_real_list_has_them(
    simulator: StartSimulator, session: Session
) -> None:
    """Rows appear after the lag, say starting while starting or processing, cancelled for a
    cancelled prediction, carry output as a string, requested_model and null workflow ids."""
    sim = await simulator(executions_lag=0.5, cancel_ignored_rate=0.0, **SLOW)
    image = await upload(session, sim)
    running = await create(session, sim, image)
    if asyncio.get_running_loop().time() - sim.stats.creates[0].t < 0.5:
        assert await rows(session, sim) == []  # not yet listed, though pollable
    assert (await poll(session, sim, running))["id"] == running

    async def listed() -> bool:
        return [r["id"] for r in await rows(session, sim)] == [running]

    await eventually(listed)
    (row,) = await rows(session, sim)
    assert row["status"] == "starting"  # past created (queue 0.02 s), starting or processing
    assert row["output"] is None and row["requested_model"] == MODEL

    async def processing() -> bool:
        return (await poll(session, sim, running))["status"] == "processing"

    await eventually(processing)  # after starting_delay (1 s)
    (row,) = await rows(session, sim)
    assert row["status"] == "starting"  # the list has no word for processing
    assert row["workflow_id"] is None and row["workflow_execution_id"] is None
    async with session.post(f"{sim.base_url}/v1/prediction/{running}/cancel"):
        pass
    await wait_end(session, sim, running)
    (row,) = await rows(session, sim)
    assert row["status"] == "cancelled" and row["output"] is None
    for word in ("Success", "cancelled", "processing", "failed"):
        assert await get_json(session, f"{sim.base_url}/v1/executions", status=word) == (400, {})


async def test_finished_rows_carry_their_output_as_a_string(
    simulator: StartSimulator, session: Session
) -> None:
    ok = await simulator(executions_lag=0.0)
    done = await create(session, ok)
    await wait_end(session, ok, done)
    (row,) = await rows(session, ok, status="success")
    assert row["output"] == f"{ok.cdn_base_url}/cdn/{done}.mp4"
    failing = await simulator(executions_lag=0.0, failure_rate=1.0)
    failed = await create(session, failing)
    await wait_end(session, failing, failed)
    (row,) = await rows(session, failing, status="error")
    assert isinstance(row["output"], str)
    error = json.loads(row["output"])
    assert error["error_code"] == "PROVIDER_FAILED" and error["retryable"] is False


async def test_without_from_only_the_recent_window_is_listed(
    simulator: StartSimulator, session: Session
) -> None:
    """The real list shows 90 days without ``from``; here the window is half a second."""
    sim = await simulator(executions_lag=0.0, executions_window=0.5, **SLOW)
    before = datetime.now(UTC) - timedelta(seconds=1)
    prediction_id = await create(session, sim)

    async def gone() -> bool:
        return await rows(session, sim) == []

    await eventually(gone)
    with_from = await rows(session, sim, **{"from": before.isoformat()})
    assert [r["id"] for r in with_from] == [prediction_id]


# -- 5. inputs the real API would refuse ---------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::1]", "10.1.2.3", "192.168.0.7", "169.254.169.254"]
)
async def test_a_private_image_url_fails_input_download_error_unfetched(
    simulator: StartSimulator, session: Session, host: str
) -> None:
    sim = await simulator(**SLOW)
    url = f"http://{host}:{closed_port()}/a.png"
    envelope, _ = await wait_end(session, sim, await create(session, sim, url))
    assert envelope["status"] == "error"
    output = envelope["output"]
    assert output["error_code"] == "INPUT_DOWNLOAD_ERROR"
    assert output["error_message"].startswith(f"Failed to download input image: {url}: ")
    assert output["classification"] == {"category": "INPUT"} and output["retryable"] is False
    assert sim.stats.private_urls_refused == 1 and sim.stats.in_flight == 0


async def test_a_private_image_server_is_never_asked_unless_the_switch_is_off(
    simulator: StartSimulator, session: Session
) -> None:
    elsewhere = await simulator()  # its storage is another loopback origin
    image = await upload(session, elsewhere)
    assert URL(image).host == "127.0.0.1"
    sim = await simulator()
    envelope, _ = await wait_end(session, sim, await create(session, sim, image))
    assert envelope["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    assert [q.method for q in elsewhere.stats.cdn_requests] == ["PUT"]  # never fetched
    fetching = await simulator(refuse_private_urls=False)
    envelope, _ = await wait_end(session, fetching, await create(session, fetching, image))
    assert envelope["status"] == "success"
    assert [q.method for q in elsewhere.stats.cdn_requests] == ["PUT", "GET"]
    own = await upload(session, sim)  # the simulator's own uploads are always taken
    envelope, _ = await wait_end(session, sim, await create(session, sim, own))
    assert envelope["status"] == "success"


@pytest.mark.parametrize("slug", sorted(MODELS))
async def test_the_model_schemas_are_the_published_ones(
    simulator: StartSimulator, slug: str
) -> None:
    sim = await simulator()
    async with aiohttp.ClientSession() as bare:
        status, described = await get_json(bare, f"{sim.base_url}/v1/model", slug=slug)
    assert status == 200 and described["slug"] == slug
    schema = described["request_schema"]
    field = MODELS[slug].image_field
    assert set(schema["properties"]) >= {"prompt", field, "prompt_optimizer"}
    assert schema["properties"]["prompt"] == {"type": "string"}
    assert schema["properties"][field] == {"type": "string"}
    text = json.dumps(schema)
    assert "minLength" not in text and "maxLength" not in text and '"format"' not in text
    if slug == "hailuo-i2v-0-1":  # the Director seed page: its example's three inputs
        assert set(schema["properties"]) == {"prompt", "prompt_optimizer", "first_frame_image"}


async def test_creates_are_validated_by_the_published_schema_only(
    simulator: StartSimulator, session: Session
) -> None:
    """An empty or long prompt passes (no limits are published); a string that is no URL
    passes too and fails the prediction INPUT_DOWNLOAD_ERROR; a schema mismatch answers 400
    ``{}`` and creates nothing."""
    sim = await simulator(concurrency=20)
    image = await upload(session, sim)
    url = f"{sim.base_url}/v1/prediction"
    for extra in ({"prompt": ""}, {"prompt": "x" * 5000}):
        async with session.post(url, json=body_for(image, **extra)) as r:
            assert r.status == 200
    not_a_url = await create(session, sim, "/tmp/a.png")
    envelope, _ = await wait_end(session, sim, not_a_url)
    assert envelope["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    v2 = "minimax-hailuo-v2-pro-image-to-video"
    for extra in ({"duration": 7}, {"resolution": "1080P"}, {"duration": "6"}):
        got = await answer(session, "POST", url, json=body_for(image, model=v2, **extra))
        assert got[:3] == (400, "application/json", {}), extra
    async with session.post(url, json=body_for(image, model=v2, duration=10)) as r:
        assert r.status == 200
    assert len(sim.stats.creates) == 4


# -- 6. keys, the model lookup, the simulate command ---------------------------------------------


async def test_the_model_lookup_without_a_slug_answers_400(simulator: StartSimulator) -> None:
    sim = await simulator()
    async with aiohttp.ClientSession() as bare:
        for params in ({}, {"slug": ""}):
            got = await answer(bare, "GET", f"{sim.base_url}/v1/model", params=params)
            assert got[:3] == (400, "application/json", {"error": "slug parameter is required"})


async def test_simulate_key_accepts_only_the_keys_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``simulate --key`` (repeatable); ``--profile kind`` then ``--error-bodies terse``: the
    later flag wins, so a wrong key gets the real 401 ``{}``."""
    port = closed_port()
    argv = ["simulate", "--port", str(port), "--key", "k1", "--key", "k2"]
    task = asyncio.create_task(cli.command([*argv, "--profile", "kind", "--error-bodies", "terse"]))
    try:
        out = ""
        async with asyncio.timeout(5):
            while "listening" not in out:
                out += capsys.readouterr().out
                await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}/v1/executions"
        async with aiohttp.ClientSession() as bare:
            for key, status, body in (("k1", 200, None), ("k2", 200, None), ("k3", 401, {})):
                got = await answer(bare, "GET", url, headers={"X-API-Key": key})
                assert got[0] == status
                if body is not None:
                    assert got[2] == body
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], SimConfig()),
        (["--profile", "kind"], SimConfig.profile("kind")),
        (["--profile", "realistic"], SimConfig.profile("realistic")),
        (
            ["--profile", "kind", "--no-cancel-at-once", "--cancel-ignored-rate", "0.5"],
            SimConfig.profile("kind", cancel_at_once=False, cancel_ignored_rate=0.5),
        ),
        (
            ["--fault-rate", "0.2", "--fault-endpoints", "get,cdn", "--fault-kinds", "reset",
             "--fault-hang", "5", "--create-fault-rate", "0.1", "--truncate-downloads-rate", "1"],
            SimConfig(fault_rate=0.2, fault_endpoints=frozenset({"get", "cdn"}),
                      fault_kinds=frozenset({"reset"}), fault_hang=5.0, create_fault_rate=0.1,
                      truncate_downloads_rate=1.0),
        ),
        (
            ["--error-bodies", "helpful", "--cancel-answer-status", "random",
             "--executions-lag", "0", "--executions-window-days", "0",
             "--no-refuse-private-urls", "--key", "a"],
            SimConfig(error_bodies="helpful", cancel_answer_status="random", executions_lag=0.0,
                      executions_window=None, refuse_private_urls=False,
                      api_keys=frozenset({"a"})),
        ),
        (["--executions-lag", "30", "--speed", "10"], SimConfig(executions_lag=30.0).scaled(10)),
        (["--rate", "60/60", "--rate-burst", "5"],
         SimConfig(rate_limit=60, rate_window=60.0, rate_burst=5)),
    ],
)  # fmt: skip
async def test_simulate_builds_its_config_from_the_profile_then_the_flags(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: SimConfig
) -> None:
    served: list[SimConfig] = []

    async def serve(config: SimConfig, host: str, port: int) -> None:
        served.append(config)

    monkeypatch.setattr(sim_app, "serve_forever", serve)  # cli imports it when it serves
    assert await cli.command(["simulate", *argv]) == 0
    assert served == [expected]


@pytest.mark.parametrize(
    "argv",
    [["--fault-kinds", "teapot"], ["--fault-endpoints", "create"], ["--executions-lag", "-1"],
     ["--fault-hang", "nan"]],
)  # fmt: skip
async def test_simulate_refuses_switches_the_simulator_refuses(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    async def serve(config: SimConfig, host: str, port: int) -> None:
        raise AssertionError("served a refused config")

    monkeypatch.setattr(sim_app, "serve_forever", serve)  # cli imports it when it serves
    err = io.StringIO()
    assert await cli.command(["simulate", *argv], err=err) == EXIT_CONFIG
    assert err.getvalue().startswith("error: simulate: ")


def test_simulate_help_lists_every_switch(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--profile", "--key", "--error-bodies", "--cancel-ignored-rate", "--cancel-at-once",
        "--cancel-answer-status", "--executions-lag", "--executions-window-days",
        "--refuse-private-urls", "--fault-rate", "--fault-endpoints", "--fault-kinds",
        "--fault-hang", "--create-fault-rate", "--truncate-downloads-rate", "--rate-burst",
    ):  # fmt: skip
        assert flag in text
    assert "any non-empty key is accepted" in text
