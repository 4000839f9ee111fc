"""Every response variant of the contract, parsed without a network."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from runner import jobs
from runner.api import protocol
from runner.api.protocol import RemoteStatus

URL = "https://cdn-us.eachlabs.ai/out/abc.mp4"


@pytest.mark.parametrize(
    "output",
    [
        URL,
        [URL],
        json.dumps([URL]),
        json.dumps(URL),
        {"url": URL},
        {"video_url": URL},
        json.dumps({"video_url": URL}),
        f"  {URL}\n",
    ],
    ids=[
        "string",
        "list",
        "json-list",
        "json-string",
        "url-object",
        "video-url-object",
        "json-object",
        "padded",
    ],
)
def test_success_output_in_every_shape_gives_the_url(output: object) -> None:
    body = {
        "id": "p1",
        "status": "success",
        "output": output,
        "metrics": {"predict_time": 201.5, "cost": 0.43},
    }
    parsed = protocol.parse_prediction(body, "p1")
    assert parsed.status is RemoteStatus.SUCCESS
    assert parsed.output_url == URL
    assert parsed.predict_time == 201.5
    assert parsed.cost == Decimal("0.43") and parsed.cost_problem is None


def test_success_without_any_url_is_an_error_not_a_crash() -> None:
    parsed = protocol.parse_prediction({"status": "success", "output": {"text": "hi"}}, "p1")
    assert parsed.status is RemoteStatus.ERROR
    assert parsed.error_code == "NO_OUTPUT"


@pytest.mark.parametrize(
    ("output", "logs", "message", "code", "retryable"),
    [
        (
            {
                "error": "Execution failed",
                "error_code": "PROVIDER_FAILED",
                "error_message": "provider said no",
                "classification": {"category": "PROVIDER"},
                "retryable": False,
            },
            None,
            "provider said no",
            "PROVIDER_FAILED",
            False,
        ),
        ({"error": "dispatch failed"}, None, "dispatch failed", None, False),
        (None, "old server text", "old server text", None, False),
        (
            {"error_code": "PROVIDER_RATE_LIMIT", "error_message": "slow down"},
            None,
            "slow down",
            "PROVIDER_RATE_LIMIT",
            True,
        ),
        (
            {"error_code": "PROVIDER_FAILED", "retryable": True, "error": "x"},
            None,
            "x",
            "PROVIDER_FAILED",
            True,
        ),
        (
            {"error_code": "EXECUTION_TIMEOUT"},
            None,
            '{"error_code": "EXECUTION_TIMEOUT"}',
            "EXECUTION_TIMEOUT",
            True,
        ),
        (json.dumps({"error": "as json text"}), None, "as json text", None, False),
        (None, None, "the prediction failed without a reason", None, False),
    ],
    ids=[
        "full",
        "dispatch-only",
        "logs",
        "rate-limit-code",
        "retryable-flag",
        "raw-json",
        "json-string",
        "nothing",
    ],
)
def test_failure_variants(
    output: object, logs: object, message: str, code: str | None, retryable: bool
) -> None:
    body = {
        "id": "p1",
        "status": "error",
        "output": output,
        "logs": logs,
        "metrics": {"predict_time": 0, "cost": 0},
    }
    parsed = protocol.parse_prediction(body, "p1")
    assert parsed.status is RemoteStatus.ERROR
    assert (parsed.error, parsed.error_code, parsed.retryable) == (message, code, retryable)


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("created", RemoteStatus.RUNNING),
        ("starting", RemoteStatus.RUNNING),
        ("processing", RemoteStatus.RUNNING),
        ("success", RemoteStatus.SUCCESS),
        ("error", RemoteStatus.ERROR),
        ("failed", RemoteStatus.ERROR),
        ("cancelled", RemoteStatus.CANCELLED),
        ("canceled", RemoteStatus.CANCELLED),
        ("SUCCESS", RemoteStatus.SUCCESS),
        ("warming-up", RemoteStatus.RUNNING),
        (None, RemoteStatus.RUNNING),
    ],
)
def test_status_words(word: object, status: RemoteStatus) -> None:
    assert protocol.parse_status(word) is status


def test_in_flight_envelope_has_no_output_and_echoes_input() -> None:
    body = {
        "id": "p1",
        "input": {"prompt": "x"},
        "status": "processing",
        "output": None,
        "metrics": {"predict_time": 0, "cost": 0},
    }
    parsed = protocol.parse_prediction(body, "p1")
    assert parsed.status is RemoteStatus.RUNNING and not parsed.status.terminal
    assert parsed.output_url is None and parsed.input == {"prompt": "x"}


@pytest.mark.parametrize("body", [None, [], "text", {"metrics": "bad"}])
def test_broken_envelopes_count_as_running(body: object) -> None:
    assert protocol.parse_prediction(body, "p9").status is RemoteStatus.RUNNING


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "status": "success",
                "message": "Prediction created successfully",
                "predictionID": "a-1",
            },
            "a-1",
        ),
        ({"status": "success", "id": "b-2"}, "b-2"),
        ({"status": "success"}, None),
        ("nope", None),
    ],
)
def test_created_id_reads_prediction_id_then_id(body: object, expected: str | None) -> None:
    assert protocol.created_id(body) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"error": "Invalid or missing API key"}', "Invalid or missing API key"),
        ("{}", "Bad Request (the server gave no reason)"),
        ("", "Bad Request (the server gave no reason)"),
        ('{"status": 400}', "Bad Request (the server gave no reason)"),
        ("502 Bad Gateway from the proxy", "502 Bad Gateway from the proxy"),
        (
            "<html>\n<head><title>504 Gateway Time-out</title></head>\n<body><center>"
            "<h1>504 Gateway Time-out</h1></center><hr><center>nginx</center></body>\n</html>",
            "504 Gateway Time-out (a gateway's page, not the API's answer)",
        ),
        (
            "<!DOCTYPE html><html><body>oops</body></html>",
            "an HTML page (a gateway's page, not the API's answer)",
        ),
        (
            '{"status": 402, "error": "payment required", "details": "balance too low"}',
            "payment required: balance too low",
        ),
        (
            json.dumps(
                {
                    "status": 429,
                    "error": "too many requests",
                    "details": "Account rate limited: limited to 10 concurrent executions",
                }
            ),
            "too many requests: Account rate limited: limited to 10 concurrent executions",
        ),
    ],
)
def test_error_bodies_of_any_shape(text: str, message: str) -> None:
    assert protocol.error_text(text, "Bad Request")[0] == message


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "input does not match the model's schema"),
        (401, "the API key is missing or invalid"),
        (422, "the request body could not be read"),
        (599, "no error message"),
    ],
)
def test_a_terse_empty_body_says_what_its_status_means(status: int, message: str) -> None:
    """The real gateway answers 400, 401 and 422 with ``{}``: the message must still help."""
    text = protocol.error_text("{}", "", status)[0]
    assert message in text and text.endswith("(the server gave no reason)")


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert protocol.retry_after("7", now) == 7.0
    assert protocol.retry_after("Sun, 22 Nov 2026 12:00:30 GMT", now) == 30.0
    assert protocol.retry_after(None, now) is None
    assert protocol.retry_after("soon", now) is None


# --- what a hostile or broken server may send -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("0f3c9a52-1b7e-4d2a-9c1e-5b8f7d6a4e21", True),
        ("pred_01-ABC", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("../../v1/upload/presign?x=", False),
        ("a/b", False),
        ("a?b", False),
        ("a%2Fb", False),
        ("-leading-dash", False),
        ("id with space", False),
        ("id\n", False),
        (42, False),
        (None, False),
    ],
)
def test_only_a_plain_id_may_go_into_a_url_path(value: object, plain: bool) -> None:
    assert jobs.valid_id(value) is plain


@pytest.mark.parametrize(
    "body",
    [
        {"status": "success", "predictionID": "../../v1/upload/presign?x="},
        {"status": "success", "id": "../cancel"},
        {"status": "success", "predictionID": "a b"},
        {"status": "success", "predictionID": "../x", "id": "fine-id"},
        {"status": "success", "predictionID": 123},
    ],
    ids=["path-and-query", "dot-dot", "space", "bad-first-good-second", "number"],
)
def test_a_create_answer_with_a_non_plain_id_has_no_id(body: object) -> None:
    assert protocol.created_id(body) is None


def test_a_poll_envelope_cannot_rename_its_prediction() -> None:
    body = {"id": "../../v1/upload/presign", "status": "processing"}
    assert protocol.parse_prediction(body, "p1").id == "p1"


@pytest.mark.parametrize(
    ("value", "cost", "problem"),
    [
        (0.43, Decimal("0.43"), None),
        (0, Decimal("0"), None),
        (2, Decimal("2"), None),
        ("0.43", Decimal("0.43"), None),
        (1e-7, Decimal("1E-7"), None),
        (None, None, None),
        (float("nan"), None, "NaN"),
        ("nan", None, "'nan'"),
        (float("inf"), None, "Infinity"),
        ("Infinity", None, "'Infinity'"),
        ("1e999", None, "'1e999'"),
        (-0.43, None, "-0.43"),
        (True, None, "true"),
        ({"usd": 1}, None, '{"usd": 1}'),
        ([0.43], None, "[0.43]"),
        ("cheap", None, "'cheap'"),
    ],
)
def test_a_cost_is_a_finite_decimal_or_unknown_with_the_reason(
    value: object, cost: Decimal | None, problem: str | None
) -> None:
    got, why = protocol.parse_cost(value)
    assert got == cost
    assert isinstance(got, Decimal | None)
    if problem is None:
        assert why is None
    else:
        assert why == f"the server reported the cost {problem}; counted as unknown"


def test_costs_add_up_exactly_as_decimals() -> None:
    costs = [protocol.parse_cost(0.1)[0] for _ in range(3)]
    assert sum(c for c in costs if c is not None) == Decimal("0.3")


def test_an_envelope_with_a_nonsense_cost_says_so() -> None:
    body = {"status": "success", "output": URL, "metrics": {"predict_time": -1, "cost": "nan"}}
    parsed = protocol.parse_prediction(body, "p1")
    assert parsed.status is RemoteStatus.SUCCESS
    assert parsed.cost is None and parsed.predict_time is None
    assert parsed.cost_problem == "the server reported the cost 'nan'; counted as unknown"


@pytest.mark.parametrize(
    ("asked", "applied", "in_a_row"),
    [
        ([None], [None], 0),
        ([5.0], [5.0], 0),
        ([600.0], [600.0], 0),
        ([601.0], [600.0], 1),
        ([float("inf")], [600.0], 1),
        ([9e9, 9e9, 9e9], [600.0, 600.0, 600.0], 3),
        ([9e9, None, 9e9], [600.0, None, 600.0], 1),
        ([9e9, 9e9, 3.0, 9e9], [600.0, 600.0, 3.0, 600.0], 1),
    ],
    ids=["none", "small", "at-cap", "over", "inf", "three-over", "reset-by-none", "reset-small"],
)
def test_retry_after_is_cut_to_the_cap_and_over_cap_answers_are_counted_in_a_row(
    asked: list[float | None], applied: list[float | None], in_a_row: int
) -> None:
    cap = protocol.RetryAfterCap(600.0)
    assert [cap.pause(value) for value in asked] == applied
    assert cap.in_a_row == in_a_row
    assert cap.exhausted is (in_a_row >= protocol.OVER_CAP_IN_A_ROW)


def test_retry_after_nan_is_no_retry_after() -> None:
    assert protocol.retry_after("nan") is None
    assert protocol.retry_after("inf") == float("inf")


def test_an_error_message_is_one_short_line_whatever_the_server_sent() -> None:
    message, _ = protocol.error_text(json.dumps({"error": "line\n" * 500}), "")
    assert "\n" not in message and len(message) <= 300
