"""What an API answer means apart from its body (``runner.api.answers``), from tables."""

from __future__ import annotations

import pytest
import yarl

from runner.api import answers
from runner.api.answers import Answer
from runner.errors import (
    AccountError,
    ApiBrokenError,
    ApiProtocolError,
    ApiStatusError,
    CapacityError,
    NotFoundError,
    TransportError,
)

BASE = "https://user:pw@api.example.com"
KEY = "sk-test-0123456789abcdef"


def answer(status: int, text: str = "", **changes: object) -> Answer:
    fields: dict[str, object] = {
        "status": status,
        "text": text,
        "request_id": "r-1",
        "sent_at": 0.0,
        "url": yarl.URL("https://api.example.com/v1/prediction/p1"),
    }
    fields.update(changes)
    return Answer(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ApiStatusError),
        (401, AccountError),
        (402, AccountError),
        (404, NotFoundError),
        (422, ApiStatusError),
        (429, CapacityError),
        (500, ApiStatusError),
        (503, ApiStatusError),
    ],
)
def test_each_status_becomes_its_error_with_the_servers_text(
    status: int, kind: type[ApiStatusError]
) -> None:
    error = answers.status_error(answer(status, '{"error": "said so"}'), 60.0)
    assert type(error) is kind
    assert error.status == status and error.message == "said so" and error.request_id == "r-1"


@pytest.mark.parametrize(("asked", "kept"), [(None, None), (5.0, 5.0), (3600.0, 60.0)])
def test_an_errors_retry_after_is_cut_to_the_cap(asked: float | None, kept: float | None) -> None:
    assert answers.status_error(answer(429, retry_after=asked), 60.0).retry_after == kept


@pytest.mark.parametrize(
    ("exc", "again"),
    [
        (ApiStatusError(500, "x"), True),
        (ApiStatusError(502, "x"), True),
        (ApiStatusError(503, "x"), True),
        (ApiStatusError(504, "x"), True),
        (ApiStatusError(501, "x"), False),
        (ApiStatusError(400, "x"), False),
        (CapacityError(429, "x"), False),
        (TransportError("lost", sent=True), True),
        (TransportError("never left", sent=False), False),
    ],
)
def test_only_a_gateway_5xx_or_a_lost_answer_is_asked_again(
    exc: ApiStatusError | TransportError, again: bool
) -> None:
    assert answers.transient(exc) is again


# --- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "location", "hop"),
    [
        (307, "POST", "/v1/prediction/", "https://user:pw@api.example.com/v1/prediction/"),
        (308, "POST", "https://api.example.com/v2", "https://user:pw@api.example.com/v2"),
        (
            302,
            "GET",
            "/v1/prediction/p2?x=1",
            "https://user:pw@api.example.com/v1/prediction/p2?x=1",
        ),
        (301, "GET", "https://evil:creds@api.example.com/a", "https://user:pw@api.example.com/a"),
    ],
)
def test_a_same_origin_redirect_keeps_the_method_and_the_bases_credentials(
    status: int, method: str, location: str, hop: str
) -> None:
    body = {"model": "m"} if method == "POST" else None
    got = answers.next_hop(
        "X /v1", method, body, answer(status, location=location), BASE, create=False
    )
    assert got == (method, yarl.URL(hop), body)


@pytest.mark.parametrize(
    ("status", "method", "location", "why"),
    [
        (302, "GET", "https://evil.example/steal", "to https://evil.example: not followed"),
        (307, "POST", "http://api.example.com/v1", "to http://api.example.com: not followed"),
        (302, "POST", "/v1/prediction", "would turn this POST into a GET"),
        (303, "POST", "/v1/prediction", "would turn this POST into a GET"),
        (302, "GET", None, "without a usable Location"),
        (302, "GET", "http://[::1", "without a usable Location"),
    ],
)
@pytest.mark.parametrize("create", [False, True])
def test_a_redirect_elsewhere_is_refused_and_a_refused_create_stops_the_batch(
    status: int, method: str, location: str | None, why: str, create: bool
) -> None:
    with pytest.raises(ApiProtocolError) as caught:
        answers.next_hop(
            "X /v1", method, None, answer(status, location=location), BASE, create=create
        )
    assert isinstance(caught.value, ApiBrokenError) is create
    assert why in str(caught.value)
    assert ("nothing was created" in str(caught.value)) is create
    assert "pw" not in str(caught.value)


# --- what of the server's text is shown -----------------------------------------------------


def test_a_body_that_is_not_json_is_a_protocol_error_quoting_its_start() -> None:
    assert answers.json_body(answer(200, '{"a": [1]}')) == {"a": [1]}
    with pytest.raises(ApiProtocolError, match="200 with a body that is not JSON: '<html>"):
        answers.json_body(answer(200, "<html>" + "x" * 500))


@pytest.mark.parametrize(
    ("echoed", "shown"),
    [
        ("abc-123", "abc-123"),
        ("req:1.2_3", "req:1.2_3"),
        (None, "ours"),
        ("", "ours"),
        ("has space", "ours"),
        ("x" * 101, "ours"),
        ("line\nbreak", "ours"),
    ],
)
def test_an_echoed_request_id_is_quoted_only_if_it_looks_like_one(
    echoed: str | None, shown: str
) -> None:
    assert answers.request_id(echoed, "ours") == shown


def test_the_key_is_blanked_from_server_text_but_a_short_key_garbles_nothing() -> None:
    assert answers.scrub(f"bad key {KEY}!", KEY) == "bad key ***!"
    assert answers.scrub("an answer", "an") == "an answer"
