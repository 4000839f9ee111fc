"""Bulk image-to-video rendering through the Eachlabs prediction API.

The small public API: load a manifest, build a RunConfig, and run it::

    from runner import RunConfig, load_manifest, run_batch
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
