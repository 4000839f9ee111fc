"""Every response variant of the contract, parsed without a network."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from runner import protocol
from runner.protocol import RemoteStatus

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
    assert parsed.cost == 0.43


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
        ("{}", "{}"),
        ("", "Bad Request"),
        ("<html>502 Bad Gateway</html>", "<html>502 Bad Gateway</html>"),
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


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert protocol.retry_after("7", now) == 7.0
    assert protocol.retry_after("Sun, 22 Nov 2026 12:00:30 GMT", now) == 30.0
    assert protocol.retry_after(None, now) is None
    assert protocol.retry_after("soon", now) is None
