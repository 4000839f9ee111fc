"""The simulator's pure parts: draws, quantum, validation, limits, executions, camera motion,
the private-address rule, the lifecycle words, best-effort cancels, faults and profiles."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from runner.models import MODELS
from runner.simulator import PROFILES, SimConfig, SimStats
from runner.simulator.account import Account
from runner.simulator.config import (
    DEFAULT_FAULT_ENDPOINTS,
    DEFAULT_FAULT_KINDS,
    FAULT_ENDPOINTS,
    FAULT_KINDS,
    parse_names,
)
from runner.simulator.executions import (
    ExecutionsQuery,
    QueryError,
    execution_status,
    parse_executions_query,
    select_executions,
)
from runner.simulator.faults import Faults
from runner.simulator.files import FTYP, Upload, generated_bytes, parse_range
from runner.simulator.inputs import private_host, validate_input
from runner.simulator.lifecycle import (
    PROVIDER_FAILED,
    PROVIDER_RATE_LIMIT,
    Run,
    draw_failure,
    draw_run_time,
    lifecycle_status,
    next_quantum,
    quantize,
)
from runner.simulator.limits import RateWindow
from runner.simulator.stats import SeenRequest
from runner.simulator.video import crop_box, frame_size, motion_for
from runner.simulator.wire import cost, execution_row, predict_time, rfc3339, wire_status


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
        ({"prompt": ""}, None),  # the published schema sets no length
        ({"prompt": "x" * 5000}, None),
        ({"image_url": "file:///a.png"}, None),  # nor a format: the fetch fails instead
        ({"duration": 6.0}, None),  # JSON Schema: 6.0 is an integer
        ({"prompt": None}, "input: 'prompt' is a required property"),
        ({"prompt": 3}, "input.prompt: 3 is not of type 'string'"),
        ({"duration": 7}, "input.duration: 7 is not one of [6, 10]"),
        ({"duration": True}, "input.duration: True is not of type 'integer'"),
        ({"prompt_optimizer": "yes"}, "input.prompt_optimizer: 'yes' is not of type 'boolean'"),
        ({"resolution": "1080P"}, "input.resolution: '1080P' is not one of ['768P', '512P']"),
    ],
)
def test_inputs_are_checked_against_the_model_schema_by_jsonschema(
    change: dict[str, Any], problem: str | None
) -> None:
    given = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert validate_input(SCHEMA, given) == problem


def test_any_json_schema_rule_is_checked() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "number", "minimum": 1, "maximum": 2},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    assert validate_input(schema, {"n": 1.5}) is None
    assert validate_input(schema, {"n": 0}) == "input.n: 0 is less than the minimum of 1"
    assert validate_input(schema, {"n": 3}) == "input.n: 3 is greater than the maximum of 2"
    assert validate_input(schema, {"tags": ["a", 3]}) == "input.tags[1]: 3 is not of type 'string'"
    assert validate_input(schema, []) == "input: [] is not of type 'object'"


I2V_PROPERTIES = {
    "prompt": {"type": "string"},
    "first_frame_image": {"type": "string"},
    "prompt_optimizer": {"type": "boolean", "default": True},
}


@pytest.mark.parametrize(
    ("slug", "schema"),
    [
        *(
            (slug, {
                "type": "object",
                "properties": I2V_PROPERTIES,
                "required": ["prompt", "first_frame_image"],
            })
            for slug in (
                "minimax-i2v-01", "minimax-i2v-01-director", "minimax-i2v-01-live",
                "hailuo-i2v-live",
            )
        ),
        ("hailuo-i2v-0-1", {
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "prompt_optimizer": {"type": "boolean"},
                "first_frame_image": {"type": "string"},
            },
        }),
        *(
            (slug, {
                "type": "object",
                "properties": {
                    "prompt": {"type": "string"},
                    "image_url": {"type": "string"},
                    "prompt_optimizer": {"type": "boolean"},
                    "duration": {"type": "integer", "enum": [6, 10]},
                    "resolution": {"type": "string", "enum": ["768P", "512P"]},
                },
                "required": ["prompt", "image_url"],
            })
            for slug in (
                "minimax-hailuo-v2-standard-image-to-video",
                "minimax-hailuo-v2-pro-image-to-video",
            )
        ),
    ],
)  # fmt: skip
def test_the_served_schemas_say_only_what_the_published_pages_say(
    slug: str, schema: dict[str, Any]
) -> None:
    assert MODELS[slug].request_schema() == schema
    text = json.dumps(schema)
    assert "minLength" not in text and "maxLength" not in text and "format" not in text


def test_the_request_window_is_strict_and_sliding() -> None:
    window = RateWindow(limit=2, window=10.0)
    assert [window.admit(t) for t in (0.0, 1.0, 2.0, 9.9)] == [True, True, False, False]
    assert window.admit(10.0)  # the request at 0.0 has left the window
    assert not window.admit(10.5)
    assert window.admit(11.0)


def make_prediction(n: int, model: str = "m", **fields: Any) -> Run:
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
    return Run(**{**base, **fields})


@pytest.mark.parametrize(
    ("elapsed", "poll", "row"),
    [(0.0, "created", "created"), (0.99, "created", "created"), (1.0, "starting", "starting"),
     (2.99, "starting", "starting"), (3.0, "processing", "starting"),
     (150.0, "processing", "starting")],
)  # fmt: skip
def test_the_lifecycle_words_of_polls_and_executions_rows(
    elapsed: float, poll: str, row: str
) -> None:
    """created for queue_delay (1 s), starting for starting_delay (2 s), then processing;
    the executions list says starting for both starting and processing."""
    assert lifecycle_status(elapsed, 1.0, 2.0) == poll
    assert make_prediction(0, starting_delay=2.0).status(elapsed) == poll
    assert execution_status(poll) == row


def test_without_a_starting_phase_created_turns_straight_to_processing() -> None:
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
    assert page == []  # cancelled is not error (and the filter cannot ask for it)
    page, _ = select_executions(preds, ExecutionsQuery(statuses=frozenset({"success"})), 100.0)
    assert [p.id for p in page] == ["p3"]
    query = ExecutionsQuery(since=1_700_000_002.0, until=1_700_000_004.0, limit=2, offset=1)
    page, total = select_executions(preds, query, 100.0)
    assert [p.id for p in page] == ["p3", "p2"] and total == 3
    page, total = select_executions(preds, ExecutionsQuery(), 100.0, earliest=1_700_000_004.0)
    assert [p.id for p in page] == ["p5", "p4"] and total == 2  # no from: the default window
    query = ExecutionsQuery(since=1_700_000_000.0)
    assert select_executions(preds, query, 100.0, earliest=1_700_000_004.0)[1] == 6


def test_without_from_the_executions_list_goes_back_90_days() -> None:
    day = 86400.0
    clock = [1_700_000_000.0]
    account = Account(SimConfig(executions_lag=0.0), SimStats(), wall=lambda: clock[0])
    old = account.create("m", {}, 0.0, None)
    clock[0] += 90 * day - 1
    assert account.executions(ExecutionsQuery(), 1.0) == ([old], 1)
    clock[0] += 2
    assert account.executions(ExecutionsQuery(), 1.0) == ([], 0)
    assert account.executions(ExecutionsQuery(since=0.0), 1.0) == ([old], 1)
    forever = Account(SimConfig(executions_window=None), SimStats(), wall=lambda: clock[0])
    forever.predictions = account.predictions
    assert forever.executions(ExecutionsQuery(), 9.0) == ([old], 1)


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
     {"status": ","}, {"status": "Success"}, {"status": "ERROR"}, {"status": "cancelled"},
     {"status": "success,failed"}, {"from": "2023-11-14T22:13:20"}, {"to": "soon"}],
)  # fmt: skip
def test_bad_executions_queries_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(QueryError):
        parse_executions_query(params)


def test_status_words_on_the_wire() -> None:
    words = ("created", "starting", "processing", "cancelled", "success", "error")
    assert [execution_status(s) for s in words] == [
        "created",
        "starting",
        "starting",
        "cancelled",
        "success",
        "error",
    ]
    legacy = SimConfig(legacy_statuses=True)
    assert [wire_status(s, legacy) for s in ("error", "cancelled", "success")] == [
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
        assert cost(pred, account.config) == 0 and predict_time(pred, 9.0) == 3.0
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
    fast = SimConfig(fault_hang=60.0, starting_delay=2.0, executions_window=1000.0).scaled(10)
    assert (fast.fault_hang, fast.starting_delay, fast.executions_window) == (6.0, 0.2, 100.0)
    assert SimConfig(executions_window=None).scaled(10).executions_window is None


def test_every_hostile_switch_is_off_by_default() -> None:
    c = SimConfig()
    assert (c.create_bad_answer, c.redirect_polls_to, c.redirect_creates_to) == (None,) * 3
    assert (c.cdn_body_bytes, c.storage_ttl, c.cdn_stall) == (None, None, False)
    assert c.create_bad_answer_rate == 1.0 and c.create_bad_answer_creates is True
    assert (c.poll_not_found_for, c.poll_not_found_rate) == (0.0,) * 2
    assert (c.fault_rate, c.create_fault_rate, c.truncate_downloads_rate) == (0.0,) * 3


def test_the_real_services_rough_edges_are_on_by_default() -> None:
    c = SimConfig()
    assert (c.error_bodies, c.cancel_at_once, c.cancel_ignored_rate) == ("terse", False, 0.1)
    assert c.cancel_answer_status == "success" and c.refuse_private_urls is True
    assert (c.executions_lag, c.executions_window) == (3.0, 90 * 86400.0)
    assert c.fault_endpoints == DEFAULT_FAULT_ENDPOINTS == FAULT_ENDPOINTS - {"cdn"}
    assert c.fault_kinds == DEFAULT_FAULT_KINDS == FAULT_KINDS - {"timeout"}
    assert "create" not in FAULT_ENDPOINTS  # creates have create_fault_rate


def test_the_profiles() -> None:
    assert PROFILES["real"] == {}
    assert PROFILES["kind"] == {
        "error_bodies": "helpful",
        "cancel_at_once": True,
        "cancel_ignored_rate": 0.0,
        "executions_lag": 0.0,
        "refuse_private_urls": False,
    }
    assert PROFILES["realistic"] == {
        "fault_rate": 0.03,
        "create_fault_rate": 0.02,
        "truncate_downloads_rate": 0.03,
    }
    assert SimConfig.profile("real") == SimConfig()
    kind = SimConfig.profile("kind", seed=3, executions_lag=1.0)
    assert (kind.error_bodies, kind.seed, kind.executions_lag) == ("helpful", 3, 1.0)
    with pytest.raises(ValueError, match="unknown profile"):
        SimConfig.profile("nice")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500", {"500"}), ("500, reset,500", {"500", "reset"}), ("timeout,", {"timeout"})],
)
def test_comma_lists_of_names_parse(text: str, expected: set[str]) -> None:
    assert parse_names(text, FAULT_KINDS, "--fault-kinds") == expected


@pytest.mark.parametrize("text", ["", " , ", "500,teapot", "create"])
def test_comma_lists_with_unknown_names_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--fault-kinds"):
        parse_names(text, FAULT_KINDS, "--fault-kinds")


@pytest.mark.parametrize(
    "fields",
    [{"output_shape": "xml"}, {"error_shape": "?"}, {"concurrency": 0}, {"runtime_min": 400},
     {"create_bad_answer": "teapot"}, {"create_bad_answer_rate": 1.5},
     {"poll_not_found_rate": -0.1}, {"executions_lag": -1}, {"poll_not_found_for": -1},
     {"storage_ttl": 0}, {"cdn_body_bytes": 0}, {"redirect_polls_to": "elsewhere"},
     {"redirect_creates_to": "ftp://host"}, {"redirect_polls_to": "http://host/?a=1"},
     {"error_bodies": "rude"}, {"cancel_answer_status": "maybe"}, {"cancel_ignored_rate": 2},
     {"fault_rate": -0.5}, {"fault_rate": float("nan")}, {"fault_endpoints": frozenset({"create"})},
     {"fault_kinds": frozenset()}, {"fault_kinds": frozenset({"418"})}, {"fault_hang": -1},
     {"fault_hang": float("nan")}, {"starting_delay": -1}, {"executions_window": 0},
     {"executions_lag": float("inf")}, {"create_fault_rate": 1.1},
     {"truncate_downloads_rate": -1}],
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


# -- the private-address rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "private"),
    [("localhost", True), ("LOCALHOST.", True), ("app.localhost", True), ("127.0.0.1", True),
     ("127.9.9.9", True), ("127.1", True), ("2130706433", True), ("0x7f000001", True),
     ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True), ("10.1.2.3", True),
     ("172.16.0.1", True), ("172.31.255.255", True), ("192.168.1.10", True), ("fd12:3456::1", True),
     ("fc00::1", True), ("169.254.169.254", True), ("fe80::1", True), ("fe80::1%eth0", True),
     ("0.0.0.0", True), ("::", True), ("::ffff:10.0.0.1", True),
     ("172.32.0.1", False), ("172.15.255.255", False), ("8.8.8.8", False), ("100.64.0.1", False),
     ("2001:4860::8888", False), ("example.com", False), ("cdn-us.eachlabs.ai", False),
     ("localhost.example.com", False), ("10.example.com", False), ("", False), (None, False)],
)  # fmt: skip
def test_the_private_address_rule(host: str | None, private: bool) -> None:
    """localhost, loopback, RFC 1918 and RFC 4193 private, link-local and unspecified addresses
    (in any spelling a resolver takes) are what the real service cannot fetch from."""
    reason = private_host(host)
    assert (reason is not None) == private
    if reason is not None:
        assert host is not None and host in reason


# -- best-effort cancels --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "quantum", "expected"),
    [(0.0, 5.0, 5.0), (0.1, 5.0, 5.0), (4.99, 5.0, 5.0), (5.0, 5.0, 10.0), (201.0, 5.0, 205.0),
     (0.1, 0.05, 0.15), (3.3, 0.0, 3.3)],
)  # fmt: skip
def test_a_cancel_takes_effect_at_the_next_quantum_strictly_after_now(
    elapsed: float, quantum: float, expected: float
) -> None:
    assert next_quantum(elapsed, quantum) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("changes", "now", "effect"),
    [({}, 12.0, 15.0), ({}, 15.0, 20.0), ({"cancel_at_once": True}, 12.0, 12.0),
     ({"status_quantum": 0.0}, 12.0, 12.0), ({"cancel_ignored_rate": 1.0}, 12.0, None)],
)  # fmt: skip
def test_when_a_cancel_takes_effect(
    changes: dict[str, Any], now: float, effect: float | None
) -> None:
    account = Account(SimConfig(**{"cancel_ignored_rate": 0.0, **changes}), SimStats())
    pred = account.create("m", {}, 0.0, None)
    plan = account.cancel(pred, now)
    assert plan.takes_effect_at == (None if effect is None else pytest.approx(effect))
    assert plan.answer_status == "success"
    assert pred.ended is None  # the decision is cancel_due's, when the time comes
    assert account.stats.cancels == 1
    assert account.stats.cancels_ignored == (effect is None)


def test_a_share_of_cancels_is_ignored() -> None:
    account = Account(SimConfig(cancel_ignored_rate=0.3, concurrency=500), SimStats())
    plans = [account.cancel(account.create("m", {}, 0.0, None), 1.0) for _ in range(400)]
    ignored = sum(plan.takes_effect_at is None for plan in plans)
    assert 80 < ignored < 160 and account.stats.cancels_ignored == ignored
    assert Account(SimConfig(), SimStats()).config.cancel_ignored_rate == 0.1


def test_no_cancel_draw_when_none_are_ignored() -> None:
    account = Account(SimConfig(cancel_ignored_rate=0.0), SimStats())
    pred = account.create("m", {}, 0.0, None)
    state = account.rng.getstate()
    account.cancel(pred, 1.0)
    assert account.rng.getstate() == state


def test_an_earlier_cancel_keeps_its_time_and_an_ended_prediction_is_left_alone() -> None:
    account = Account(SimConfig(cancel_ignored_rate=0.0), SimStats())
    pred = account.create("m", {}, 0.0, None)
    assert account.cancel(pred, 1.0).takes_effect_at == 5.0
    assert account.cancel(pred, 4.0).takes_effect_at == 5.0 and pred.cancel_at == 5.0
    account.finish(pred, "success", 5.0)
    assert account.cancel(pred, 6.0).takes_effect_at is None
    assert account.stats.cancels == 2  # cancels of an in-flight prediction


@pytest.mark.parametrize(
    ("setting", "words"),
    [("success", {"success"}), ("cancelled", {"cancelled"}), ("random", {"success", "cancelled"})],
)
def test_the_cancel_answer_word_is_unrelated_to_the_outcome(setting: str, words: set[str]) -> None:
    account = Account(
        SimConfig(cancel_answer_status=setting, cancel_ignored_rate=0.5, concurrency=100),
        SimStats(),
    )
    plans = [account.cancel(account.create("m", {}, 0.0, None), 1.0) for _ in range(60)]
    assert {plan.answer_status for plan in plans} == words
    ignored = {plan.answer_status for plan in plans if plan.takes_effect_at is None}
    taken = {plan.answer_status for plan in plans if plan.takes_effect_at is not None}
    assert ignored == taken == words


@pytest.mark.parametrize(
    ("due", "cancel_at", "ends"),
    [(200.0, 5.0, "cancelled"), (5.0, 5.0, "success"), (3.0, 5.0, "success")],
)
def test_a_cancel_loses_to_an_end_due_no_later(due: float, cancel_at: float, ends: str) -> None:
    account = Account(SimConfig(), SimStats())
    pred = account.create("m", {}, 0.0, None)
    pred.due = due
    if due <= cancel_at:  # the prediction's own task ends it first, or at the same time
        assert not account.cancel_due(pred, cancel_at)
        account.finish(pred, "success", due)
    else:
        assert account.cancel_due(pred, cancel_at)
    assert pred.ended == ends
    assert account.spent_usd == pytest.approx(0.43 if ends == "success" else 0.0)
    assert not account.cancel_due(pred, cancel_at + 1)  # an ended prediction stays as it is


# -- transient faults -----------------------------------------------------------------------------


def faults(config: SimConfig) -> Faults:
    """The fault draws of a simulator with ``config``, from its own seeded random source."""
    return Faults(config, SimStats(), random.Random(config.seed))


def test_faults_hit_their_endpoints_at_their_rate_and_are_counted() -> None:
    config = SimConfig(fault_rate=0.5, fault_endpoints=frozenset({"get", "upload"}))
    draws = faults(config)
    drawn = [draws.draw("get") for _ in range(300)]
    assert 100 < sum(d is not None for d in drawn) < 200
    assert {d for d in drawn if d is not None} == DEFAULT_FAULT_KINDS
    assert draws.draw("executions") is None and draws.draw("create") is None
    assert draws.stats.faults == {"get": sum(d is not None for d in drawn)}
    assert draws.stats.summary()["faults"] == draws.stats.faults


def test_no_fault_draw_when_faults_are_off() -> None:
    draws = faults(SimConfig())
    state = draws.rng.getstate()
    assert all(draws.draw(e) is None for e in FAULT_ENDPOINTS)
    assert not draws.create_fails() and not draws.truncates()
    assert draws.rng.getstate() == state and draws.stats.faults == {}


def test_only_the_named_fault_kinds_are_drawn() -> None:
    draws = faults(SimConfig(fault_rate=1.0, fault_kinds=frozenset({"timeout"})))
    assert {draws.draw("model") for _ in range(20)} == {"timeout"}


def test_an_outage_faults_the_first_requests_to_its_endpoints_then_none() -> None:
    config = SimConfig(fault_first=4, fault_endpoints=frozenset({"executions"}))
    draws = faults(config)
    assert draws.draw("get") is None  # not one of its endpoints: not part of the outage
    drawn = [draws.draw("executions") for _ in range(10)]
    assert all(d is not None for d in drawn[:4]) and drawn[4:] == [None] * 6
    assert draws.stats.faults == {"executions": 4}
    with pytest.raises(ValueError, match="fault_first"):
        SimConfig(fault_first=-1)


# -- executions rows ------------------------------------------------------------------------------


def test_an_executions_row_carries_its_output_as_a_string() -> None:
    account = Account(SimConfig(failure_rate=0.0), SimStats(), wall=lambda: 1_700_000_000.0)
    url = "https://cdn.test/v.mp4"
    running = account.create("m", {}, 0.0, None)
    assert execution_row(running, 1.0, None, account.config)["output"] is None
    done = account.create("m", {}, 0.0, None)
    account.finish(done, "success", 10.0)
    row = execution_row(done, 11.0, url, account.config)
    assert row["output"] == url and row["status"] == "success"
    assert (row["requested_model"], row["workflow_id"], row["workflow_execution_id"]) == (
        "m",
        None,
        None,
    )
    failed = account.create("m", {}, 0.0, None)
    failed.failure = PROVIDER_FAILED
    account.finish(failed, "error", 10.0)
    error = json.loads(execution_row(failed, 11.0, None, account.config)["output"])
    assert error["error_code"] == "PROVIDER_FAILED" and error["retryable"] is False
    cancelled = account.create("m", {}, 0.0, None)
    account.finish(cancelled, "cancelled", 3.0)
    row = execution_row(cancelled, 11.0, None, account.config)
    assert (row["status"], row["output"], row["execution_cost"]) == ("cancelled", None, 0.0)
