"""The wire shapes of the Eachlabs API, parsed into plain values: pure, no I/O.

Every variant the contract names is handled here: output as a URL string, a list of URLs, a
string holding JSON, or an object with ``url``/``video_url``; failures with a full error object,
only ``error``, or the text in ``logs``; error bodies that are empty or not JSON; old status names.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


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
_unknown_logged: set[str] = set()

#: Error codes (or classification categories) after which a new attempt may well succeed.
RETRYABLE_CODES = frozenset(
    {"PROVIDER_RATE_LIMIT", "EXECUTION_TIMEOUT", "NETWORK_ERROR", "PROVIDER_SERVER_ERROR"}
)


def parse_status(word: object) -> RemoteStatus:
    """Map a status word to RemoteStatus; unknown words count as running and are logged once."""
    text = str(word).strip().lower() if word is not None else ""
    status = _STATUS_WORDS.get(text)
    if status is None:
        if text not in _unknown_logged:
            _unknown_logged.add(text)
            log.warning("unknown prediction status %r: treating it as still running", word)
        return RemoteStatus.RUNNING
    return status


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
    cost: float | None = None
    raw_status: str = ""
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
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


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


def parse_prediction(body: object, prediction_id: str) -> Prediction:
    """Parse a poll envelope; tolerate missing fields (a broken body counts as still running)."""
    if not isinstance(body, dict):
        return Prediction(id=prediction_id, status=RemoteStatus.RUNNING)
    raw = body.get("status")
    status = parse_status(raw)
    metrics = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
    assert isinstance(metrics, dict)
    predict_time = _number(metrics.get("predict_time"))
    cost = _number(metrics.get("cost"))
    common: dict[str, Any] = {
        "id": str(body.get("id") or prediction_id),
        "predict_time": predict_time,
        "cost": cost,
        "raw_status": str(raw),
        "input": body.get("input") if isinstance(body.get("input"), dict) else None,
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


#: What a prediction id may look like before it is put in a URL path: the API's ids are UUIDs;
#: anything with a slash, dot-dot, query or escape characters is refused.
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def valid_id(value: object) -> bool:
    """Whether ``value`` is a plain prediction id, safe to use in a URL path."""
    return isinstance(value, str) and _PLAIN_ID.fullmatch(value) is not None


def created_id(body: object) -> str | None:
    """The id in a create answer: ``predictionID``, else ``id`` (some community code's shape)."""
    if not isinstance(body, dict):
        return None
    for name in ("predictionID", "prediction_id", "id"):
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def error_text(body_text: str, reason: str) -> tuple[str, object]:
    """``(message, parsed body)`` of an error answer: ``details``/``error``/``message`` if JSON.

    An empty ``{}`` or a body that is not JSON falls back to the raw text, then the reason phrase.
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
            return ": ".join(parts), body
    text = " ".join(body_text.split())[:300]
    return (text or reason or "no error message"), body


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (delta-seconds or HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
