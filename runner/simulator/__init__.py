"""The built-in simulator of the Eachlabs prediction API (see ``/work/shared/eachlabs-api.md``).

``Simulator`` serves the API on loopback, and presigned uploads, storage and a CDN on a second
loopback origin (``cdn_base_url``); ``SimConfig`` has one switch per behaviour (timings, limits,
faults, wire-shape variants, a hostile server), with defaults that follow the real service, and
``PROFILES`` names sets of them (``real``, ``kind``, ``realistic``); ``SimStats`` counts what
clients did, for tests and the benchmark. ``OtherHost`` is a third origin that records what
reaches it, the target of the simulator's hostile redirects.
"""

from runner.simulator.app import Simulator, serve_forever
from runner.simulator.config import PROFILES, SimConfig
from runner.simulator.other import OtherHost
from runner.simulator.state import Completion, CreateRecord, SeenRequest, SimStats

__all__ = [
    "PROFILES",
    "Completion",
    "CreateRecord",
    "OtherHost",
    "SeenRequest",
    "SimConfig",
    "SimStats",
    "Simulator",
    "serve_forever",
]
