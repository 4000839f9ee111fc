"""What the simulator checks in a create's input, as the real service would: the model's JSON
Schema (``jsonschema``), and whether the image URL's host is one the service could reach.

Pure: no I/O, no DNS lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import jsonschema
from jsonschema.validators import Draft202012Validator

from runner.checks import images


def validate_input(schema: Mapping[str, Any], value: object) -> str | None:
    """What is wrong with ``value`` against a model's JSON Schema (``jsonschema``, draft 2020-12
    unless the schema names another), or None if it fits. Properties the schema does not name
    are ignored, as the API does. The message names the field, e.g. ``input.duration: 7 is not
    one of [6, 10]`` (only ``error_bodies="helpful"`` sends it; the real API answers ``{}``).
    """
    validator = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(cast(Any, value)))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"input{where}: {error.message}"


def private_host(host: str | None) -> str | None:
    """Why the real service could not fetch from ``host`` (a URL's host, as sent), e.g.
    ``"127.1 is a loopback address"``, or None if it may be public: the runner's own rule
    (``runner.images.private_host``), so the warning and the refusal never disagree."""
    kind = images.private_host(host)
    return None if kind is None else f"{host} is {kind}"
