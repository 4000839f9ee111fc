"""``--on-finish CMD``: tell someone how the night went. The command runs once the run has
ended, however it ended, with the summary's path as its last argument and the outcome in its
environment; it cannot change the run's exit code, and it never sees the API key.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import TextIO

import anyio

from runner import config as cfg

#: How long the command may take before it is stopped (a mail or a webhook takes seconds).
HOOK_TIMEOUT = 300.0


def hook_environment(
    environ: dict[str, str], exit_code: int, summary: Path | None
) -> dict[str, str]:
    """The command's environment: ours without the API key, plus ``I2V_EXIT_CODE``,
    ``I2V_SUMMARY`` and ``I2V_OUTPUT_DIR`` (empty when the run never got as far as knowing
    its output directory)."""
    env = {name: value for name, value in environ.items() if name != cfg.ENV_API_KEY}
    env["I2V_EXIT_CODE"] = str(exit_code)
    env["I2V_SUMMARY"] = "" if summary is None else str(summary)
    env["I2V_OUTPUT_DIR"] = "" if summary is None else str(summary.parent)
    return env


async def on_finish(command: str, summary: Path | None, exit_code: int, err: TextIO) -> None:
    """Run ``command`` (split like a shell would, not through one) with ``summary`` appended;
    its output goes where ours does. A command that cannot run, fails or takes longer than
    HOOK_TIMEOUT is said on ``err`` and changes nothing else."""
    argv = shlex.split(command) + ([] if summary is None else [str(summary)])
    env = hook_environment(dict(os.environ), exit_code, summary)
    shown = shlex.join(argv)
    try:
        with anyio.fail_after(HOOK_TIMEOUT):
            done = await anyio.run_process(argv, env=env, stdout=None, stderr=None, check=False)
    except TimeoutError:
        print(f"warning: --on-finish {shown} did not end within {HOOK_TIMEOUT:g} s", file=err)
        return
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"warning: --on-finish {shown} could not run: {exc}", file=err)
        return
    if done.returncode != 0:
        print(f"warning: --on-finish {shown} exited {done.returncode}", file=err)
