"""The contract's JSON shapes of a run: the poll envelope, ``GET /v1/executions`` rows, the
output and error shapes (``output_shape``, ``error_shape``), status words on the wire
(``legacy_statuses``), the reported cost and predict time, and RFC 3339 times.

Pure: each function takes the run, the loop time ``now`` and the config it shapes for.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from runner.simulator.config import SimConfig
from runner.simulator.executions import execution_status
from runner.simulator.lifecycle import Run


def wire_status(status: str, config: SimConfig) -> str:
    """The status word sent on the wire (legacy servers say failed/canceled)."""
    if config.legacy_statuses:
        return {"error": "failed", "cancelled": "canceled"}.get(status, status)
    return status


def output(run: Run, video_url: str | None, config: SimConfig) -> tuple[object, str | None]:
    """``(output, logs)`` of a run, shaped per output_shape / error_shape."""
    if run.ended == "success" and video_url is not None:
        shape = config.output_shape
        if shape == "string":
            return video_url, None
        if shape == "json_string":
            return f'["{video_url}"]', None
        if shape == "object_url":
            return {"url": video_url}, None
        if shape == "object_video_url":
            return {"video_url": video_url}, None
        return [video_url], None
    if run.ended == "error" and run.failure is not None:
        f = run.failure
        if config.error_shape == "logs":
            return None, f"Error: {f.code}: {f.message}"
        if config.error_shape == "dispatch":
            return {"error": f.message}, None
        full = {
            "error": "Execution failed",
            "error_code": f.code,
            "error_message": f.message,
            "classification": {"category": f.category},
            "retryable": f.retryable,
        }
        return full, None
    return None, None


def cost(run: Run, config: SimConfig) -> float:
    """What the envelope reports: the price of a success (or ``reported_cost``), else 0."""
    if run.ended != "success":
        return 0.0
    reported = config.reported_cost
    return config.price_usd if reported is None else reported


def predict_time(run: Run, now: float) -> float:
    """What the envelope reports: 0 in flight, the drawn run time of a success, else the time
    from creation to the end."""
    if run.ended is None:
        return 0.0
    return round(run.run_time if run.ended == "success" else run.elapsed(now), 3)


def envelope(
    run: Run, now: float, video_url: str | None, base: str, config: SimConfig
) -> dict[str, Any]:
    """The poll envelope of ``GET /v1/prediction/{id}``; ``base`` is the API's URL."""
    shown, logs = output(run, video_url, config)
    return {
        "id": run.id,
        "input": run.input,
        "status": wire_status(run.status(now), config),
        "output": shown,
        "logs": logs,
        "metrics": {"predict_time": predict_time(run, now), "cost": cost(run, config)},
        "urls": {
            "get": f"{base}/v1/prediction/{run.id}",
            "cancel": f"{base}/v1/prediction/{run.id}/cancel",
        },
    }


def execution_row(run: Run, now: float, video_url: str | None, config: SimConfig) -> dict[str, Any]:
    """One row of ``GET /v1/executions`` (no input echo, as the API does). ``output`` is a
    string: the video URL of a success, the JSON text of an error's object, else null."""
    status = run.status(now)
    began = run.created + run.queue_delay <= (run.ended_at or now)
    started = run.created_wall + run.queue_delay if began else None
    shown, logs = output(run, video_url, config)
    text: str | None = None
    if run.ended == "success":
        text = video_url
    elif run.ended == "error":
        text = logs if shown is None else json.dumps(shown)
    return {
        "id": run.id,
        "model": run.model,
        "requested_model": run.model,
        "status": execution_status(status),
        "created_at": rfc3339(run.created_wall),
        "started_at": rfc3339(started) if started is not None else None,
        "completed_at": rfc3339(run.ended_wall) if run.ended_wall is not None else None,
        "execution_cost": cost(run, config),
        "run_time": predict_time(run, now) if run.ended else None,
        "output": text,
        "workflow_id": None,  # set for a workflow's steps; plain predictions have none
        "workflow_execution_id": None,
    }


def rfc3339(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC to the millisecond, e.g. ``2025-01-31T12:00:00.123Z``."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
