"""The built-in simulator of the Eachlabs prediction API (see ``/work/shared/eachlabs-api.md``).

``Simulator`` serves the API on loopback, and presigned uploads, storage and a CDN on a second
loopback origin (``cdn_base_url``); ``SimConfig`` has one switch per behaviour (timings, limits,
faults, wire-shape variants, a hostile server), with defaults that follow the real service, and
``PROFILES`` names sets of them (``real``, ``kind``, ``realistic``); each API key is its own
account; ``SimStats`` counts what clients did, for tests and the benchmark, over the server and
per account (``AccountStats``, by the key's fingerprint). ``OtherHost`` is a third origin that
records what reaches it, the target of the simulator's hostile redirects.
"""

from typing import TYPE_CHECKING, Any

from runner.simulator.config import PROFILES, SimConfig

if TYPE_CHECKING:
    from runner.simulator.app import Simulator, serve_forever
    from runner.simulator.other import OtherHost
    from runner.simulator.stats import (
        AccountStats,
        Completion,
        CreateRecord,
        SeenRequest,
        SimStats,
    )

#: Where each name lives: the server (aiohttp's web side, PyAV, Pillow) is imported only when
#: one of its names is used, so ``i2v-runner --help`` and runs against the real API never pay
#: for it.
_LAZY = {
    "Simulator": "runner.simulator.app",
    "serve_forever": "runner.simulator.app",
    "OtherHost": "runner.simulator.other",
    "AccountStats": "runner.simulator.stats",
    "Completion": "runner.simulator.stats",
    "CreateRecord": "runner.simulator.stats",
    "SeenRequest": "runner.simulator.stats",
    "SimStats": "runner.simulator.stats",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "PROFILES",
    "AccountStats",
    "Completion",
    "CreateRecord",
    "OtherHost",
    "SeenRequest",
    "SimConfig",
    "SimStats",
    "Simulator",
    "serve_forever",
]
