"""Validating an item's input against a model's request_schema, and the schema cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.checks.schema import (
    ModelSchema,
    look_up,
    read_cache,
    schema_problem,
    validate,
    write_cache,
)
from runner.diagnostics import Diagnostic, Severity, error, warning
from runner.models import MODELS

I2V = MODELS["minimax-i2v-01"].request_schema()
V2 = MODELS["minimax-hailuo-v2-standard-image-to-video"].request_schema()
IMAGE = "https://upload.invalid/abc"
OK_I2V = {"prompt": "a deer walks", "first_frame_image": IMAGE, "prompt_optimizer": True}
OK_V2 = {"prompt": "a fox runs", "image_url": IMAGE, "duration": 6, "resolution": "768P"}

#: A live schema may limit lengths (the built-in table does not: the pages publish no limits).
LIMITED: dict[str, Any] = {
    **I2V,
    "properties": {
        **I2V["properties"],
        "prompt": {"type": "string", "minLength": 1, "maxLength": 2000},
    },
}
CUSTOM: dict[str, Any] = {
    "type": "object",
    "required": ["prompt", "steps"],
    "properties": {
        "prompt": {"type": "string"},
        "steps": {"type": "integer", "minimum": 1, "maximum": 50},
        "strength": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "mode": {"const": "fast"},
        "code": {"type": "string", "pattern": "^[a-z]+$"},
    },
}


def issue(key: str, message: str) -> Diagnostic:
    """An error about the input ``key``, as ``validate`` returns it (no place yet)."""
    return error(message, subject=key)


@pytest.mark.parametrize(("schema", "value"), [(I2V, OK_I2V), (V2, OK_V2)])
def test_a_fitting_input_has_no_issues(schema: dict[str, Any], value: dict[str, Any]) -> None:
    assert validate(schema, value) == []


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        (
            LIMITED,
            {**OK_I2V, "prompt": ""},
            [issue("prompt", "must be at least 1 characters long, not 0")],
        ),
        (
            LIMITED,
            {**OK_I2V, "prompt": "x" * 2001},
            [issue("prompt", "must be at most 2000 characters long, not 2001")],
        ),
        (
            I2V,
            {**OK_I2V, "prompt_optimizer": "yes"},
            [issue("prompt_optimizer", 'must be true or false, not a string ("yes")')],
        ),
        (V2, {**OK_V2, "duration": 7}, [issue("duration", "must be one of 6, 10, not 7")]),
        (
            V2,
            {**OK_V2, "duration": "6"},
            [issue("duration", 'must be an integer, not a string ("6")')],
        ),
        (
            V2,
            {**OK_V2, "duration": True},
            [issue("duration", "must be an integer, not a boolean (true)")],
        ),
        (
            V2,
            {**OK_V2, "resolution": "1080P"},
            [issue("resolution", 'must be one of "768P", "512P", not "1080P"')],
        ),
        (
            V2,
            {k: v for k, v in OK_V2.items() if k != "image_url"},
            [issue("image_url", "is required by the model's schema")],
        ),
        (
            CUSTOM,
            {"prompt": "p"},
            [issue("steps", "is required by the model's schema")],
        ),
        (CUSTOM, {"prompt": "p", "steps": 0}, [issue("steps", "must be at least 1, not 0")]),
        (CUSTOM, {"prompt": "p", "steps": 51}, [issue("steps", "must be at most 50, not 51")]),
        (
            CUSTOM,
            {"prompt": "p", "steps": 2.5},
            [issue("steps", "must be an integer, not a number (2.5)")],
        ),
        (
            CUSTOM,
            {"prompt": "p", "steps": 5, "strength": 1},
            [issue("strength", "must be less than 1, not 1")],
        ),
        (
            CUSTOM,
            {"prompt": "p", "steps": 5, "tags": ["a", 3]},
            [issue("tags", "[1]: must be a string, not an integer (3)")],
        ),
        (
            CUSTOM,
            {"prompt": "p", "steps": 5, "tags": ["a", "b", "c"]},
            [issue("tags", "must list at most 2 entries, not 3")],
        ),
        (
            CUSTOM,
            {"prompt": "p", "steps": 5, "mode": "slow"},
            [issue("mode", 'must be "fast", not "slow"')],
        ),
        (
            CUSTOM,
            {"prompt": "p", "steps": 5, "code": "A1"},
            [issue("code", 'must match the pattern "^[a-z]+$", not "A1"')],
        ),
    ],
)
def test_each_rule_gives_a_message_naming_the_input(
    schema: dict[str, Any], value: dict[str, Any], expected: list[Diagnostic]
) -> None:
    assert validate(schema, value) == expected


def test_every_issue_is_reported_not_just_the_first() -> None:
    issues = validate(CUSTOM, {"steps": 0, "strength": 2})
    assert {(i.subject, i.message) for i in issues} == {
        ("prompt", "is required by the model's schema"),
        ("steps", "must be at least 1, not 0"),
        ("strength", "must be less than 1, not 2"),
    }


def test_an_input_the_schema_does_not_name_is_a_warning_with_the_near_miss() -> None:
    (issue,) = validate(V2, {**OK_V2, "durations": 6})
    assert issue == warning(
        'is not an input of this model; did you mean "duration"? the server ignores it',
        subject="durations",
    )


def test_a_closed_schema_makes_an_unknown_input_an_error() -> None:
    closed = {**CUSTOM, "additionalProperties": False}
    (issue,) = validate(closed, {"prompt": "p", "steps": 3, "step": 4})
    assert issue == error('is not an input of this model; did you mean "steps"?', subject="step")


def test_a_broken_schema_is_named_not_used() -> None:
    assert schema_problem(I2V) is None
    problem = schema_problem({"type": "object", "properties": {"a": {"type": "text"}}})
    assert problem is not None and problem.startswith("the model's request_schema is not valid")


def test_the_cache_round_trips_and_tolerates_garbage(tmp_path: Path) -> None:
    path = tmp_path / "out" / "model-schemas.json"
    assert read_cache(path) == {}
    write_cache(path, {"m": ModelSchema("m", I2V, "2026-01-02T03:04:05.000Z", cached=False)})
    assert read_cache(path) == {"m": ModelSchema("m", I2V, "2026-01-02T03:04:05.000Z", cached=True)}
    path.write_text("{not json")
    assert read_cache(path) == {}


async def test_offline_uses_the_cache_or_says_the_check_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "model-schemas.json"
    write_cache(path, {"cached-model": ModelSchema("cached-model", I2V, "T0", cached=False)})
    lookup = await look_up(None, ["cached-model", "other"], path, offline=True)
    assert set(lookup.schemas) == {"cached-model"} and lookup.schemas["cached-model"].cached
    assert lookup.unknown == frozenset()
    assert "cached-model" not in lookup.notes
    (note,) = lookup.notes["other"]
    assert note.severity is Severity.WARNING
    assert note.message.startswith('model "other": --offline, and no schema of it is cached in')
