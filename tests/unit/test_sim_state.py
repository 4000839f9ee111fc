"""The simulator's pure parts: draws, quantum, validation, limits, executions, camera motion."""

from __future__ import annotations

import random
from typing import Any

import pytest

from runner.models import MODELS
from runner.simulator import SimConfig, SimStats
from runner.simulator.files import FTYP, Upload, generated_bytes, parse_range
from runner.simulator.state import (
    PROVIDER_FAILED,
    PROVIDER_RATE_LIMIT,
    Account,
    ExecutionsQuery,
    Prediction,
    QueryError,
    RequestWindow,
    SeenRequest,
    draw_failure,
    draw_run_time,
    execution_status,
    parse_executions_query,
    quantize,
    rfc3339,
    select_executions,
    validate_input,
)
from runner.simulator.video import crop_box, frame_size, motion_for


def test_run_times_stay_within_bounds_and_outliers_are_slower() -> None:
    config = SimConfig(outlier_rate=0.0)
    rng = random.Random(1)
    draws = [draw_run_time(rng, config) for _ in range(2000)]
    assert all(150 <= d <= 300 for d in draws)
    assert 190 < sum(draws) / len(draws) < 210
    slow = SimConfig(outlier_rate=1.0, outlier_factor=2.0)
    assert all(300 <= draw_run_time(rng, slow) <= 600 for _ in range(100))


def test_the_same_seed_draws_the_same_run() -> None:
    config = SimConfig(failure_rate=0.5)
    first, second = random.Random(7), random.Random(7)
    assert [draw_run_time(first, config) for _ in range(5)] == [
        draw_run_time(second, config) for _ in range(5)
    ]


@pytest.mark.parametrize(
    ("elapsed", "quantum", "expected"),
    [(0.0, 5.0, 0.0), (0.1, 5.0, 5.0), (5.0, 5.0, 5.0), (5.0000000001, 5.0, 5.0), (201, 5, 205),
     (0.31, 0.05, 0.35), (3.3, 0.0, 3.3)],
)  # fmt: skip
def test_quantize_rounds_up_to_the_next_multiple(
    elapsed: float, quantum: float, expected: float
) -> None:
    assert quantize(elapsed, quantum) == pytest.approx(expected)


def test_failure_draws_follow_the_rates() -> None:
    rng = random.Random(0)
    assert draw_failure(rng, SimConfig()) is None
    assert draw_failure(rng, SimConfig(failure_rate=1.0)) is PROVIDER_FAILED
    assert draw_failure(rng, SimConfig(retryable_failure_rate=1.0)) is PROVIDER_RATE_LIMIT


SCHEMA = MODELS["minimax-hailuo-v2-pro-image-to-video"].request_schema()
GOOD = {"prompt": "p", "image_url": "https://x.test/a.png"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"duration": 10, "resolution": "512P", "unknown": 1}, None),
        ({"prompt": None}, "input.prompt is required"),
        ({"prompt": ""}, "input.prompt must be at least 1 characters"),
        ({"prompt": 3}, "input.prompt must be of type string"),
        ({"duration": 7}, "input.duration must be one of [6, 10]"),
        ({"duration": True}, "input.duration must be of type integer"),
        ({"prompt_optimizer": "yes"}, "input.prompt_optimizer must be of type boolean"),
        ({"image_url": "file:///a.png"}, "input.image_url must be an http(s) URL"),
    ],
)
def test_inputs_are_checked_against_the_model_schema(
    change: dict[str, Any], problem: str | None
) -> None:
    given = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert validate_input(SCHEMA, given) == problem


def test_numeric_bounds_are_checked() -> None:
    schema = {"properties": {"n": {"type": "number", "minimum": 1, "maximum": 2}}}
    assert validate_input(schema, {"n": 1.5}) is None
    assert validate_input(schema, {"n": 0}) == "input.n must be at least 1"
    assert validate_input(schema, {"n": 3}) == "input.n must be at most 2"
    assert validate_input(schema, []) == "input must be an object"


def test_the_request_window_is_strict_and_sliding() -> None:
    window = RequestWindow(limit=2, window=10.0)
    assert [window.admit(t) for t in (0.0, 1.0, 2.0, 9.9)] == [True, True, False, False]
    assert window.admit(10.0)  # the request at 0.0 has left the window
    assert not window.admit(10.5)
    assert window.admit(11.0)


def make_prediction(n: int, model: str = "m", **fields: Any) -> Prediction:
    base: dict[str, Any] = {
        "id": f"p{n}",
        "model": model,
        "input": {},
        "created": float(n),
        "created_wall": 1_700_000_000.0 + n,
        "queue_delay": 1.0,
        "run_time": 200.0,
        "due": n + 200.0,
        "failure": None,
    }
    return Prediction(**{**base, **fields})


def test_a_prediction_is_created_then_processing_then_what_it_ended_in() -> None:
    p = make_prediction(0)
    assert [p.status(t) for t in (0.0, 0.99, 1.0, 150.0)] == ["created"] * 2 + ["processing"] * 2
    p.ended = "success"
    assert p.status(1.0) == "success"


def test_executions_filter_by_model_status_and_time_newest_first() -> None:
    preds = [make_prediction(n, model="a" if n % 2 else "b") for n in range(6)]
    preds[1].ended = "cancelled"
    preds[3].ended = "success"
    page, total = select_executions(preds, ExecutionsQuery(), 100.0)
    assert [p.id for p in page] == ["p5", "p4", "p3", "p2", "p1", "p0"] and total == 6
    page, total = select_executions(preds, ExecutionsQuery(model="a"), 100.0)
    assert [p.id for p in page] == ["p5", "p3", "p1"]
    page, _ = select_executions(preds, ExecutionsQuery(statuses=frozenset({"error"})), 100.0)
    assert [p.id for p in page] == ["p1"]  # cancelled shows as error
    query = ExecutionsQuery(since=1_700_000_002.0, until=1_700_000_004.0, limit=2, offset=1)
    page, total = select_executions(preds, query, 100.0)
    assert [p.id for p in page] == ["p3", "p2"] and total == 3


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ExecutionsQuery()),
        ({"limit": "100", "offset": "5", "model": "m"}, ExecutionsQuery("m", limit=100, offset=5)),
        ({"status": "success, error"}, ExecutionsQuery(statuses=frozenset({"success", "error"}))),
        ({"from": "2023-11-14T22:13:20Z"}, ExecutionsQuery(since=1_700_000_000.0)),
        ({"to": "2023-11-14T23:13:20+01:00"}, ExecutionsQuery(until=1_700_000_000.0)),
    ],
)
def test_executions_queries_parse(params: dict[str, str], expected: ExecutionsQuery) -> None:
    assert parse_executions_query(params) == expected


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"offset": "-1"}, {"limit": "x"}, {"status": "processing"},
     {"status": ","}, {"from": "2023-11-14T22:13:20"}, {"to": "soon"}],
)  # fmt: skip
def test_bad_executions_queries_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(QueryError):
        parse_executions_query(params)


def test_status_words_on_the_wire() -> None:
    assert [execution_status(s) for s in ("created", "processing", "cancelled", "success")] == [
        "created",
        "starting",
        "error",
        "success",
    ]
    legacy = Account(SimConfig(legacy_statuses=True), SimStats())
    assert [legacy.wire_status(s) for s in ("error", "cancelled", "success")] == [
        "failed",
        "canceled",
        "success",
    ]
    assert rfc3339(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"


def test_the_account_refuses_at_the_cap_and_beyond_the_balance() -> None:
    stats = SimStats()
    account = Account(SimConfig(concurrency=2, balance_usd=1.0, price_usd=0.43), stats)
    first = account.create("m", {}, 0.0, None)
    account.create("m", {}, 0.0, None)
    refusal = account.create_refusal()
    assert refusal is not None and refusal[0] == 429 and stats.refused_cap == 1
    account.finish(first, "success", 1.0)
    account.finish(first, "success", 2.0)  # a second end changes nothing
    assert stats.in_flight == 1 and account.spent_usd == pytest.approx(0.43)
    refusal = account.create_refusal()  # 1.00 - 0.43 spent - 0.43 reserved < 0.43
    assert refusal is not None and refusal[0] == 402 and refusal[1]["error"] == "payment required"
    assert stats.completions[first.id].status == "success" and stats.max_in_flight == 2


def test_cancelled_and_failed_predictions_are_not_billed() -> None:
    account = Account(SimConfig(), SimStats())
    for status in ("cancelled", "error"):
        pred = account.create("m", {}, 0.0, None)
        account.finish(pred, status, 3.0)
        assert account.cost(pred) == 0 and account.predict_time(pred, 9.0) == 3.0
    assert account.spent_usd == 0


def test_scaled_divides_every_duration_and_nothing_else() -> None:
    fast = SimConfig(url_ttl=60.0, retry_after=None).scaled(10)
    assert (fast.runtime_mean, fast.runtime_min, fast.runtime_max) == (20.0, 15.0, 30.0)
    assert (fast.queue_delay, fast.status_quantum, fast.rate_window) == (0.1, 0.5, 6.0)
    assert fast.url_ttl == 6.0 and fast.retry_after is None
    assert (fast.concurrency, fast.fetch_timeout, fast.price_usd) == (10, 5.0, 0.43)


def test_scaled_divides_the_hostile_durations_too() -> None:
    fast = SimConfig(executions_lag=5.0, poll_not_found_for=2.0, storage_ttl=100.0).scaled(10)
    assert (fast.executions_lag, fast.poll_not_found_for, fast.storage_ttl) == (0.5, 0.2, 10.0)
    assert SimConfig().scaled(10).storage_ttl is None


def test_every_hostile_switch_is_off_by_default() -> None:
    c = SimConfig()
    assert (c.create_bad_answer, c.redirect_polls_to, c.redirect_creates_to) == (None,) * 3
    assert (c.cdn_body_bytes, c.storage_ttl, c.cdn_stall) == (None, None, False)
    assert c.create_bad_answer_rate == 1.0 and c.create_bad_answer_creates is True
    assert (c.executions_lag, c.poll_not_found_for, c.poll_not_found_rate) == (0.0,) * 3


@pytest.mark.parametrize(
    "fields",
    [{"output_shape": "xml"}, {"error_shape": "?"}, {"concurrency": 0}, {"runtime_min": 400},
     {"create_bad_answer": "teapot"}, {"create_bad_answer_rate": 1.5},
     {"poll_not_found_rate": -0.1}, {"executions_lag": -1}, {"poll_not_found_for": -1},
     {"storage_ttl": 0}, {"cdn_body_bytes": 0}, {"redirect_polls_to": "elsewhere"},
     {"redirect_creates_to": "ftp://host"}, {"redirect_polls_to": "http://host/?a=1"}],
)  # fmt: skip
def test_nonsense_configs_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**fields)


@pytest.mark.parametrize(
    ("prompt", "motion"),
    [
        ("a cat", "zoom_in"),
        ("Slow PULL OUT over the bay", "zoom_out"),
        ("[Truck left, Pan right] a city", "left"),
        ("pan right then tilt up", "right"),
        ("pedestal   down", "down"),
        ("tilt up", "up"),
    ],
)
def test_the_prompt_picks_the_camera_motion(prompt: str, motion: str) -> None:
    assert motion_for(prompt) == motion


def test_every_motion_starts_from_most_of_the_frame() -> None:
    assert crop_box("zoom_in", 0.0, 100, 50) == (0, 0, 100, 50)
    assert crop_box("zoom_out", 1.0, 100, 50) == (0, 0, 100, 50)
    for motion in ("left", "right", "up", "down"):
        left, _, right, _ = crop_box(motion, 0.0, 100, 50)
        assert right - left == pytest.approx(85) and left == pytest.approx(7.5)
    assert crop_box("left", 1.0, 100, 50)[0] == 0
    assert crop_box("down", 1.0, 100, 50)[3] == 50


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [((1024, 768), 512, (512, 384)), ((97, 65), 128, (128, 84)), ((3, 1000), 100, (2, 100))],
)
def test_frames_fit_within_max_side_with_even_sides(
    size: tuple[int, int], max_side: int, expected: tuple[int, int]
) -> None:
    assert frame_size(*size, max_side) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)),
     ("bytes=90-500", (90, 99)), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=a-b", None),
     ("bytes=5-2", None), ("bytes=-", None)],
)  # fmt: skip
def test_range_headers_parse(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges_raise(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)


def test_bad_answers_follow_their_rate_and_draw_nothing_when_off() -> None:
    stats = SimStats()
    off = Account(SimConfig(), stats)
    state = off.rng.getstate()
    assert off.bad_answer() is None and off.rng.getstate() == state
    always = Account(SimConfig(create_bad_answer="html"), stats)
    assert [always.bad_answer() for _ in range(3)] == ["html"] * 3
    some = Account(SimConfig(create_bad_answer="500", create_bad_answer_rate=0.5), stats)
    drawn = [some.bad_answer() for _ in range(200)]
    assert set(drawn) == {"500", None} and 60 < drawn.count("500") < 140
    assert stats.bad_create_answers == 3 + drawn.count("500")


def test_polls_are_hidden_while_young_and_at_the_drawn_rate() -> None:
    young = Account(SimConfig(poll_not_found_for=2.0), SimStats())
    pred = young.create("m", {}, 10.0, None)
    assert [young.poll_hidden(pred, t) for t in (10.0, 11.99, 12.0)] == [True, True, False]
    assert young.stats.hidden_polls == 2
    never = Account(SimConfig(), SimStats())
    assert not any(never.poll_hidden(never.create("m", {}, 0.0, None), 0.0) for _ in range(9))
    sometimes = Account(SimConfig(poll_not_found_rate=0.5, concurrency=1), SimStats())
    pred = sometimes.create("m", {}, 0.0, None)
    hidden = [sometimes.poll_hidden(pred, 100.0) for _ in range(200)]
    assert 60 < hidden.count(True) < 140


def test_executions_list_only_predictions_older_than_the_lag() -> None:
    account = Account(SimConfig(executions_lag=3.0, concurrency=5), SimStats())
    first = account.create("m", {}, 0.0, None)
    second = account.create("m", {}, 2.0, None)
    assert account.listed(2.9) == []
    assert account.listed(3.0) == [first]
    assert account.listed(5.0) == [first, second]
    assert Account(SimConfig(), SimStats()).listed(0.0) == []


def test_an_upload_is_served_from_its_put_until_the_ttl() -> None:
    upload = Upload("u", "image/png", "u.png", created=0.0)
    assert not upload.served(1.0, None)  # nothing put yet
    upload.data, upload.put_at = b"png", 5.0
    assert upload.served(1e9, None)
    assert [upload.served(t, 2.0) for t in (5.0, 6.99, 7.0)] == [True, True, False]


def test_a_generated_body_is_an_ftyp_box_then_zeros() -> None:
    assert len(FTYP) == 24 and FTYP[4:8] == b"ftyp"
    whole = generated_bytes(0, 100)
    assert whole == FTYP + bytes(76)
    assert b"".join(generated_bytes(n, 7) for n in range(0, 98, 7)) == whole[:98]
    assert generated_bytes(10, 5) == FTYP[10:15] and generated_bytes(5_000_000_000, 3) == bytes(3)


def test_a_seen_request_finds_headers_in_any_case_and_names_credentials() -> None:
    seen = SeenRequest("GET", "/cdn/a.mp4?x=1", {"x-api-key": "k", "Accept": "*/*"})
    assert seen.header("X-API-Key") == "k" and seen.header("Authorization") is None
    assert seen.credentials == ["x-api-key"]
    assert SeenRequest("GET", "/", {"Authorization": "Bearer k"}).credentials == ["Authorization"]
    assert SeenRequest("GET", "/", {}).credentials == []


def test_the_summary_counts_the_hostile_switches() -> None:
    stats = SimStats(bad_create_answers=2, hidden_polls=3, redirects=4, expired_uploads=5)
    stats.cdn_requests += [
        SeenRequest("GET", "/cdn/a.mp4", {"X-API-Key": "k"}),
        SeenRequest("PUT", "/upload/u", {"Content-Type": "image/png"}),
    ]
    summary = stats.summary()
    assert {k: summary[k] for k in ("bad_create_answers", "hidden_polls", "redirects")} == {
        "bad_create_answers": 2,
        "hidden_polls": 3,
        "redirects": 4,
    }
    assert summary["expired_uploads"] == 5
    assert (summary["cdn_requests"], summary["cdn_requests_with_credentials"]) == (2, 1)
