"""Bulk image-to-video rendering through the Eachlabs prediction API.

The small public API: build a RunConfig and run it; the batch passes the same checks as the
CLI's (ManifestError lists what they found, and nothing is run)::

    from runner import RunConfig, run_batch

    result = await run_batch(RunConfig(manifest_path, None, api_base, api_key))
    print(result.text); raise SystemExit(result.exit_code)

``load_manifest`` reads a manifest alone (structure only, no checks of content).
"""

from runner.batch import run_batch
from runner.config import Limits, RunConfig
from runner.errors import ApiError, ConfigError, LockedError, ManifestError, RunnerError
from runner.manifest import Item, Manifest, load_manifest
from runner.report import RunResult

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
