"""The built-in simulator of the Eachlabs prediction API (see ``/work/shared/eachlabs-api.md``).

``Simulator`` serves the API, presigned uploads and a CDN on loopback; ``SimConfig`` has one
switch per behaviour (timings, limits, faults, wire-shape variants); ``SimStats`` counts what
clients did, for tests and the benchmark.
"""

from runner.simulator.app import Simulator, serve_forever
from runner.simulator.config import SimConfig
from runner.simulator.state import Completion, CreateRecord, SimStats

__all__ = ["Completion", "CreateRecord", "SimConfig", "SimStats", "Simulator", "serve_forever"]
