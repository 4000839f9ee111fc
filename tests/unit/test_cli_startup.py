"""The command line's start-up: ``--version``, and no simulator server loaded unless used."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from runner.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_packages_version(capsys: pytest.CaptureFixture[str]) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"i2v-runner {declared}"


def test_the_cli_loads_no_simulator_server_pyav_or_pillow_until_it_is_used() -> None:
    """Before: ``import runner.cli`` loaded the simulator's server, PyAV and Pillow, for
    ``--help`` and for every run against the real API."""
    probe = (
        "import sys, runner.cli; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('av', 'PIL') or m.startswith('runner.simulator.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "['runner.simulator.config']"


def test_the_simulators_names_still_come_from_the_package() -> None:
    import runner.simulator as simulator

    assert simulator.Simulator.__module__ == "runner.simulator.app"
    assert simulator.OtherHost.__name__ == "OtherHost"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = simulator.Nope  # type: ignore[attr-defined]


def test_help_loads_neither_the_network_stack_nor_the_live_view() -> None:
    """``--help`` took 0.7-1.0 s: ``import runner`` loaded the whole run (aiohttp and its SSL
    contexts, the checks' jsonschema) and the CLI the live view (rich). A command now loads
    what it uses when it runs; counted by modules loaded, not by seconds."""
    probe = (
        "import sys, runner, runner.cli; runner.cli.build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'rich', 'jsonschema'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


def test_the_package_still_offers_its_names() -> None:
    import runner

    assert runner.run_batch.__module__ == "runner.batch"
    assert runner.RunConfig.__name__ == "RunConfig"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = runner.Nope  # type: ignore[attr-defined]
