"""The wire shapes of the Eachlabs API, parsed into plain values, and the rules for answers:
pure, no I/O.

Every variant the contract names is handled here: output as a URL string, a list of URLs, a
string holding JSON, or an object with ``url``/``video_url``; failures with a full error object,
only ``error``, or the text in ``logs``; error bodies that are empty or not JSON; old status names.
A hostile or broken server is expected too: an id that is not a plain id is no id, a cost that is
not a finite amount is unknown (and says so), a ``Retry-After`` is cut to a cap.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from runner.jobs import valid_id


class RemoteStatus(enum.StrEnum):
    """A prediction's status as the runner understands it."""

    RUNNING = "running"  # created, starting, processing, or anything unknown
    SUCCESS = "success"
    ERROR = "error"  # error, failed
    CANCELLED = "cancelled"  # cancelled, canceled

    @property
    def terminal(self) -> bool:
        return self is not RemoteStatus.RUNNING


_STATUS_WORDS = {
    "created": RemoteStatus.RUNNING,
    "starting": RemoteStatus.RUNNING,
    "processing": RemoteStatus.RUNNING,
    "queued": RemoteStatus.RUNNING,
    "success": RemoteStatus.SUCCESS,
    "succeeded": RemoteStatus.SUCCESS,
    "error": RemoteStatus.ERROR,
    "failed": RemoteStatus.ERROR,
    "cancelled": RemoteStatus.CANCELLED,
    "canceled": RemoteStatus.CANCELLED,
}

#: Error codes (or classification categories) after which a new attempt may well succeed.
RETRYABLE_CODES = frozenset(
    {"PROVIDER_RATE_LIMIT", "EXECUTION_TIMEOUT", "NETWORK_ERROR", "PROVIDER_SERVER_ERROR"}
)


def _status_word(word: object) -> str:
    return str(word).strip().lower() if word is not None else ""


def parse_status(word: object) -> RemoteStatus:
    """Map a status word to RemoteStatus; unknown words count as running."""
    return _STATUS_WORDS.get(_status_word(word), RemoteStatus.RUNNING)


def known_status(word: object) -> bool:
    return _status_word(word) in _STATUS_WORDS


@dataclass(frozen=True)
class Prediction:
    """One poll of ``GET /v1/prediction/{id}``, reduced to what the runner acts on."""

    id: str
    status: RemoteStatus
    output_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    retryable: bool = False
    predict_time: float | None = None
    #: ``metrics.cost`` in USD; None when the server gave none or gave one that is not a finite
    #: amount >= 0 (then ``cost_problem`` says what it sent).
    cost: Decimal | None = None
    cost_problem: str | None = None
    raw_status: str = ""
    #: The status word was none the runner knows (it counts as running); None: a known one.
    status_problem: str | None = None
    input: dict[str, Any] | None = None  # the server's echo of the create's input, if given
    sent_at: float | None = None  # when the poll went out, on the client's monotonic clock


def output_url(output: object) -> str | None:
    """The video URL in a success ``output``, whatever its shape; None if there is none."""
    if isinstance(output, str):
        text = output.strip()
        if text.startswith(("[", "{", '"')):
            try:
                return output_url(json.loads(text))
            except ValueError:
                return None
        return text if text.startswith(("http://", "https://")) else None
    if isinstance(output, list):
        for element in output:
            url = output_url(element)
            if url:
                return url
        return None
    if isinstance(output, dict):
        for name in ("video_url", "url", "video", "output"):
            if name in output:
                url = output_url(output[name])
                if url:
                    return url
    return None


def _number(value: object) -> float | None:
    """A finite number >= 0 from a JSON number or numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return None
        return number if math.isfinite(number) and number >= 0 else None
    return None


def parse_cost(value: object) -> tuple[Decimal | None, str | None]:
    """``(cost, problem)`` of a ``metrics.cost``: money is Decimal, read from the number's text.

    Absent (None) is ``(None, None)``. A value that is not a finite amount >= 0 a float can
    hold (``nan``, ``inf``, ``1e999``, negative, a bool, an object) is ``(None, problem)``: the
    cost is unknown, and ``problem`` says what the server sent.
    """
    if value is None:
        return None, None
    amount: Decimal | None = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite() or amount < 0 or not _fits_float(amount):
        shown = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
        return None, f"the server reported the cost {shown[:80]}; counted as unknown"
    return amount, None


def _fits_float(amount: Decimal) -> bool:
    return math.isfinite(float(amount))  # 1e999 is a finite Decimal but an infinite float


def failure(output: object, logs: object) -> tuple[str, str | None, bool]:
    """``(message, error_code, retryable)`` of a failed prediction.

    Reads ``error_message``, then ``error``, then ``logs``, then the raw JSON, as the contract says.
    """
    if isinstance(output, str):
        with contextlib.suppress(ValueError):
            output = json.loads(output)
    code: str | None = None
    retryable = False
    message: str | None = None
    if isinstance(output, dict):
        raw_code = output.get("error_code")
        code = str(raw_code) if raw_code else None
        retryable = output.get("retryable") is True
        for name in ("error_message", "error", "message"):
            value = output.get(name)
            if isinstance(value, str) and value.strip():
                message = value.strip()
                break
    elif isinstance(output, str) and output.strip():
        message = output.strip()
    if message is None and isinstance(logs, str) and logs.strip():
        message = logs.strip()
    if message is None and output is not None:
        message = json.dumps(output)[:500]
    if code in RETRYABLE_CODES:
        retryable = True
    return message or "the prediction failed without a reason", code, retryable


def parse_prediction(body: object, prediction_id: str, sent_at: float | None = None) -> Prediction:
    """Parse a poll envelope; tolerate missing fields (a broken body counts as still running).
    ``sent_at``: when the poll went out (``Prediction.sent_at``)."""
    if not isinstance(body, dict):
        return Prediction(id=prediction_id, status=RemoteStatus.RUNNING, sent_at=sent_at)
    raw = body.get("status")
    status = parse_status(raw)
    metrics = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
    assert isinstance(metrics, dict)
    predict_time = _number(metrics.get("predict_time"))
    cost, cost_problem = parse_cost(metrics.get("cost"))
    common: dict[str, Any] = {
        "id": prediction_id,  # the id asked for: an envelope cannot rename its prediction
        "predict_time": predict_time,
        "cost": cost,
        "cost_problem": cost_problem,
        "raw_status": str(raw),
        "status_problem": None
        if known_status(raw)
        else f"unknown prediction status {str(raw)[:80]!r}: treating it as still running",
        "input": body.get("input") if isinstance(body.get("input"), dict) else None,
        "sent_at": sent_at,
    }
    if status is RemoteStatus.SUCCESS:
        url = output_url(body.get("output"))
        if url is None:
            return Prediction(
                status=RemoteStatus.ERROR,
                error=f"the prediction succeeded but its output has no video URL: "
                f"{json.dumps(body.get('output'))[:300]}",
                error_code="NO_OUTPUT",
                **common,
            )
        return Prediction(status=status, output_url=url, **common)
    if status is RemoteStatus.ERROR:
        message, code, retryable = failure(body.get("output"), body.get("logs"))
        return Prediction(
            status=status, error=message, error_code=code, retryable=retryable, **common
        )
    if status is RemoteStatus.CANCELLED:
        return Prediction(status=status, error="the prediction was cancelled", **common)
    return Prediction(status=status, **common)


def created_id(body: object) -> str | None:
    """The id in a create answer: ``predictionID``, else ``id`` (some community code's shape).

    Only a plain id (``valid_id``) counts: an answer whose id is anything else (a path, a query)
    is an answer without an id.
    """
    if not isinstance(body, dict):
        return None
    for name in ("predictionID", "prediction_id", "id"):
        value = body.get(name)
        if isinstance(value, str) and value:
            return value if valid_id(value) else None
    return None


#: What a status means when the server says nothing more (the real gateway answers 400, 401
#: and 422 with an empty ``{}``).
STATUS_MEANINGS = {
    400: "the request was refused as malformed, or its input does not match the model's schema",
    401: "the API key is missing or invalid",
    402: "the account's balance is too low",
    403: "access denied",
    404: "not found",
    405: "method not allowed",
    422: "the request body could not be read",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


_HTML = re.compile(r"\s*<(!doctype\s+html|html|head|body|title)\b", re.IGNORECASE)
_TITLE = re.compile(r"<title[^>]*>([^<]*)</title>", re.IGNORECASE)


def error_text(body_text: str, reason: str, status: int | None = None) -> tuple[str, object]:
    """``(message, parsed body)`` of an error answer: ``details``/``error``/``message`` if JSON.

    A body that says nothing (empty, ``{}``, JSON without a message) gives the reason phrase,
    else what ``status`` means, with "(the server gave no reason)"; an HTML page gives its
    title; another body that is not JSON gives its raw text. The message is one line of at
    most 300 characters, whatever the server sent.
    """
    try:
        body: object = json.loads(body_text) if body_text.strip() else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [
            str(body[name]).strip()
            for name in ("error", "details", "message")
            if isinstance(body.get(name), str) and str(body[name]).strip()
        ]
        if parts:
            return " ".join(": ".join(parts).split())[:300], body
    silent = body is not None or not body_text.strip()
    text = "" if silent else " ".join(body_text.split())[:300]
    if text and _HTML.match(text):
        # A gateway's error page (nginx, a CDN): its title says it all, the markup nothing.
        title = _TITLE.search(body_text)
        named = " ".join(title.group(1).split())[:120] if title else ""
        return f"{named or 'an HTML page'} (a gateway's page, not the API's answer)", body
    if text:
        return text, body
    meaning = reason or STATUS_MEANINGS.get(status or 0) or "no error message"
    return f"{meaning} (the server gave no reason)", body


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (delta-seconds or HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


#: Answers in a row whose Retry-After exceeds the cap before the API counts as unavailable.
OVER_CAP_IN_A_ROW = 3


@dataclass
class RetryAfterCap:
    """Cuts every ``Retry-After`` to ``cap`` seconds and counts the answers in a row that asked
    for more; any answer that did not (no header, or one within the cap) resets the count."""

    cap: float
    in_a_row: int = 0

    def pause(self, asked: float | None) -> float | None:
        """The pause to apply for an answer that asked for ``asked`` s (None: it asked none)."""
        if asked is None or asked <= self.cap:
            self.in_a_row = 0
            return asked
        self.in_a_row += 1
        return self.cap

    @property
    def exhausted(self) -> bool:
        """Whether the server asked for more than the cap on OVER_CAP_IN_A_ROW answers running."""
        return self.in_a_row >= OVER_CAP_IN_A_ROW
