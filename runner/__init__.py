"""Bulk image-to-video rendering through the Eachlabs prediction API.

The small public API: build a RunConfig and run it; the batch passes the same checks as the
CLI's (ManifestError lists what they found, and nothing is run)::

    from runner import RunConfig, run_batch

    result = await run_batch(RunConfig(manifest_path, None, api_base, api_key))
    print(result.text); raise SystemExit(result.exit_code)

``load_manifest`` reads a manifest alone (structure only, no checks of content).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers; at run time they load when first used
    from runner.batch import run_batch
    from runner.config import Limits, RunConfig
    from runner.errors import ApiError, ConfigError, LockedError, ManifestError, RunnerError
    from runner.manifest import Item, Manifest, load_manifest
    from runner.report import RunResult

#: Where each public name lives: imported on first use, so ``import runner`` (and the CLI's
#: ``--help``, which starts with it) does not load aiohttp and the rest of a run.
_HOMES = {
    "run_batch": "runner.batch",
    "Limits": "runner.config",
    "RunConfig": "runner.config",
    "ApiError": "runner.errors",
    "ConfigError": "runner.errors",
    "LockedError": "runner.errors",
    "ManifestError": "runner.errors",
    "RunnerError": "runner.errors",
    "Item": "runner.manifest",
    "Manifest": "runner.manifest",
    "load_manifest": "runner.manifest",
    "RunResult": "runner.report",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "ApiError",
    "ConfigError",
    "Item",
    "Limits",
    "LockedError",
    "Manifest",
    "ManifestError",
    "RunConfig",
    "RunResult",
    "RunnerError",
    "load_manifest",
    "run_batch",
]
