"""What a run shows as it goes, through the real CLI against the simulator: the live view under
a pseudo-terminal, heartbeat lines without one, the ``--log-file``, and ``-v``'s request lines.

Each batch has one item that fails for sure (its image URL is on loopback, which the service
cannot fetch: INPUT_DOWNLOAD_ERROR), so the failure lines are checked too. What the display
must show is computed from the simulator's own record (predictions that ended in success, at
its price) and the manifest, never copied from the output.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import struct
import termios
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner.cost import usd

from .helpers import API_KEY, cli_args, ledger_events, load, write_manifest

pytestmark = pytest.mark.timeout(120)

#: An image the service cannot fetch: its prediction ends in INPUT_DOWNLOAD_ERROR.
UNREACHABLE_IMAGE = "http://127.0.0.1:9/missing.png"
FAILING_ID = "unreachable"
#: Colours and styles (SGR), which leave a line whole.
STYLE = re.compile(r"\x1b\[[0-9;]*m")
#: Any other escape sequence (CSI, OSC, a lone ESC): the live view's cursor moves.
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|.)")
ISO_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2} ")
ISO_STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}"
#: Slower than the suite's FAST simulator, so a 0.2 s heartbeat has time to beat.
SLOW_ENOUGH = {"runtime_mean": 1.0, "runtime_min": 0.8, "runtime_max": 1.2}


def batch_with_one_failure(tmp_path: Path, count: int = 5) -> Path:
    """``count`` items that render, and one whose image cannot be fetched."""
    path = write_manifest(tmp_path, count=count)
    with path.open("a") as manifest:
        manifest.write(
            f"  - id: {FAILING_ID}\n"
            f"    image: {UNREACHABLE_IMAGE}\n"
            "    prompt: a scene that slowly comes alive, zoom in\n"
        )
    return path


def simulator_spend(sim: Any) -> tuple[int, Decimal]:
    """Predictions the simulator ran to success, and what it charged for them."""
    successes = sum(1 for c in sim.stats.completions.values() if c.status == "success")
    return successes, successes * Decimal(str(sim.config.price_usd))


def env(**changes: str) -> dict[str, str]:
    environ = {**os.environ, "EACHLABS_API_KEY": API_KEY, **changes}
    environ.pop("NO_COLOR", None)
    return environ


def terminal(columns: int = 140, rows: int = 40) -> tuple[int, int]:
    """A pseudo-terminal of ``columns`` × ``rows``: (master, slave)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def drain(master: int) -> bytes:
    """Everything written to the terminal until its last writer closed it."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks)


async def run_on_terminals(args: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI with stdout and stderr on two pseudo-terminals (stdin on the second); the
    exit code and what each showed."""
    out_master, out_slave = terminal()
    err_master, err_slave = terminal()
    process = await asyncio.create_subprocess_exec(
        *args, env=environ, stdin=err_slave, stdout=out_slave, stderr=err_slave
    )
    os.close(out_slave)
    os.close(err_slave)
    loop = asyncio.get_running_loop()
    out = loop.run_in_executor(None, drain, out_master)
    err = loop.run_in_executor(None, drain, err_master)
    code = await process.wait()
    return code, (await out).decode(errors="replace"), (await err).decode(errors="replace")


def screen_lines(raw: str) -> list[str]:
    """The text a terminal showed, one line per line drawn (cursor moves and carriage returns
    cut the lines; colours are dropped)."""
    text = ANSI.sub("\n", STYLE.sub("", raw)).replace("\r", "\n")
    return [line.strip() for line in text.split("\n") if line.strip()]


async def test_on_a_terminal_the_live_view_shows_the_counts_and_the_spend(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest = batch_with_one_failure(tmp_path)
    total = len(load(manifest).items)
    output = tmp_path / "out"
    code, out, err = await run_on_terminals(
        cli_args(manifest, sim.base_url, output), env(TERM="xterm-256color")
    )
    assert code == 1, out + err  # one item failed
    successes, spent = simulator_spend(sim)
    assert successes == total - 1
    shown = screen_lines(err)
    assert "\x1b[" in err  # drawn in place: cursor moves
    # The last frame: the bar's line with the counts, the stages, the limits and the spend.
    assert any(f"{successes}/{total} done, 1 failed" in line for line in shown), shown
    assert any(f"done {successes}" in line and "failed 1" in line for line in shown), shown
    assert any(f"spent {usd(spent)}" in line and "in flight 0/4" in line for line in shown)
    # The failure printed above the view, as a whole log line.
    failures = [line for line in shown if f"{FAILING_ID}: failed:" in line]
    assert failures and all(ISO_LINE.match(line) for line in failures), shown
    assert not any("submitted as" in line for line in shown)  # the view counts those
    # The end of the run on the other terminal: a table, then the report's lines.
    table = screen_lines(out)
    summary = json.loads((output / "summary.json").read_text())
    [failed] = [row for row in summary["items"] if row["status"] == "failed"]
    assert any(re.search(rf"total\s*│\s*{total}\b", line) for line in table), table
    assert any(re.search(rf"spent\s*│\s*{re.escape(usd(spent))}", line) for line in table), table
    assert any(re.search(rf"{failed['error_code']}\s*│\s*1\b", line) for line in table), table
    assert any(re.search(r"wall time\s*│\s*\d+ s", line) for line in table), table
    assert table[-1].endswith("--retry-failed")


async def test_on_a_dumb_terminal_the_lines_are_plain(simulator: Any, tmp_path: Path) -> None:
    sim = await simulator(**SLOW_ENOUGH)
    manifest = write_manifest(tmp_path, count=3)
    code, out, err = await run_on_terminals(
        [*cli_args(manifest, sim.base_url, tmp_path / "out"), "--heartbeat", "0.2"],
        env(TERM="dumb"),
    )
    assert code == 0, out + err
    assert "\x1b" not in out + err
    lines = err.splitlines()
    assert any(ISO_LINE.match(line) and " progress: " in line for line in lines), lines
    assert "all items are done" in out


async def test_without_a_terminal_heartbeats_iso_lines_one_line_per_failure_and_a_log_file(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(**SLOW_ENOUGH)
    manifest = batch_with_one_failure(tmp_path)
    total = len(load(manifest).items)
    output = tmp_path / "out"
    log_file = tmp_path / "run.jsonl"
    log_file.write_text('{"type": "the run before"}\n')
    process = await asyncio.create_subprocess_exec(
        *cli_args(manifest, sim.base_url, output),
        "--heartbeat",
        "0.2",
        "--log-file",
        str(log_file),
        env=env(TERM="xterm-256color"),  # a terminal type, but no terminal: plain lines
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = (blob.decode() for blob in await process.communicate())
    assert process.returncode == 1, stdout + stderr
    assert "\x1b" not in stdout + stderr
    lines = stderr.splitlines()
    # Every log line is stamped with the date, the time and the offset; the rest are the
    # checks' diagnostics (the loopback image's warning).
    assert all(ISO_LINE.match(line) or line.startswith("warning: ") for line in lines), lines
    beats = [ISO_LINE.sub("", line) for line in lines if " progress: " in line]
    assert beats, lines
    assert all(re.match(rf"progress: \d+/{total} done, \d+ failed;", beat) for beat in beats)
    assert all("ETA" in beat and "spent $" in beat and "in flight" in beat for beat in beats)
    # One line per failure: as many as the ledger has failed items, each naming its item.
    ledger = ledger_events(output)
    failed_items = {r["item"] for r in ledger if r["event"] == "failed"}
    failure_lines = [line for line in lines if re.search(r": failed: ", line)]
    assert failed_items == {FAILING_ID}
    assert len(failure_lines) == len(failed_items) and FAILING_ID in failure_lines[0]
    # The plan told the time beside the cost; the end tells the wall time.
    assert "expected wall time: about" in stdout
    [headline] = [line for line in stdout.splitlines() if re.match(r"batch t: \d+/", line)]
    assert re.search(r"; wall time \d", headline), headline

    # The log file: the earlier run's line kept, then one JSON object per event.
    written = log_file.read_text()
    assert API_KEY not in written
    first, *events = [json.loads(line) for line in written.splitlines()]
    assert first == {"type": "the run before"}
    assert all(re.fullmatch(ISO_STAMP, e["time"]) for e in events), events[0]
    items = [e for e in events if e["type"] == "ItemChanged"]
    records = [r for r in ledger if r["event"] not in ("uploaded", "upload_gone")]
    assert [(e["item_id"], e["state"]) for e in items] == [(r["item"], r["event"]) for r in records]
    _, spent = simulator_spend(sim)
    [*_, last_spend] = [e for e in events if e["type"] == "SpendChanged"]
    assert Decimal(last_spend["spent"]) == spent and isinstance(last_spend["spent"], str)
    assert {"RequestSent", "Said", "Uploading"} <= {e["type"] for e in events}


async def test_minus_v_after_the_subcommand_logs_every_request_sent(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest = write_manifest(tmp_path, count=3)
    process = await asyncio.create_subprocess_exec(
        *cli_args(manifest, sim.base_url, tmp_path / "out"),
        "-v",
        env=env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    sent = [line for line in stderr.decode().splitlines() if ": sent (the request window" in line]
    # Every request the simulator saw was let go by the window, and said so (a request can be
    # let go and never arrive: a connection that breaks before it is sent).
    assert len(sent) >= len(sim.stats.api_requests) > 0
    assert sum("POST /v1/prediction" in line for line in sent) >= len(sim.stats.creates) > 0
