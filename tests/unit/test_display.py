"""What a run shows: the choice of view, the heartbeat, the log file, ISO log lines, the live
view's text, the end of the run, the plan's time, and the command line's options (no network)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from runner import walltime
from runner.checks.preflight import Report
from runner.checks.render import render_plan
from runner.cli.options import build_parser, view_from
from runner.config import Limits
from runner.cost import Estimate
from runner.display import Mode, RunView, ViewSettings, choose_mode
from runner.display.endtable import end_table, plain_end, print_end
from runner.display.heartbeat import HeartbeatScreen
from runner.display.live import renderable
from runner.display.logfile import LogFile, event_line
from runner.display.logs import LOG_FORMAT, IsoFormatter, through_console
from runner.display.progress import Snapshot, Stage
from runner.display.text import heartbeat_line
from runner.errors import ConfigError
from runner.events import (
    ItemChanged,
    Paused,
    RequestRefused,
    RequestSent,
    Said,
    SpendChanged,
    to_log,
)
from runner.jobs import JobState
from runner.report import REASONS_LINE, failure_reasons, render
from runner.store.plan import Action, Plan, Step

from .test_progress import plan, step

ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- which view -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "tty", "environ", "mode"),
    [
        (ViewSettings(), True, {"TERM": "xterm"}, Mode.LIVE),
        (ViewSettings(), False, {"TERM": "xterm"}, Mode.PLAIN),  # cron, CI, a pipe
        (ViewSettings(progress=False), True, {"TERM": "xterm"}, Mode.PLAIN),  # --no-progress
        (ViewSettings(), True, {"TERM": "xterm", "NO_COLOR": "1"}, Mode.PLAIN),
        (ViewSettings(), True, {"TERM": "xterm", "NO_COLOR": ""}, Mode.LIVE),  # empty: unset
        (ViewSettings(), True, {"TERM": "dumb"}, Mode.PLAIN),
        (ViewSettings(quiet=True), True, {"TERM": "xterm"}, Mode.QUIET),
        (ViewSettings(quiet=True), False, {}, Mode.QUIET),
    ],
)
def test_the_live_view_only_on_a_terminal_that_can_take_it_and_only_if_wanted(
    settings: ViewSettings, tty: bool, environ: dict[str, str], mode: Mode
) -> None:
    stream = Tty() if tty else io.StringIO()
    assert choose_mode(settings, stream, environ) is mode


# -- a snapshot in words ----------------------------------------------------------------------


def snapshot(**changes: Any) -> Snapshot:
    counts = {stage: 0 for stage in Stage}
    counts.update({Stage.DONE: 37, Stage.FAILED: 2, Stage.PENDING: 6, Stage.RUNNING: 4})
    counts[Stage.SUBMITTED] = 1
    base: dict[str, Any] = {
        "total": 50,
        "counts": counts,
        "in_flight": 5,
        "concurrency": 10,
        "window_used": 42,
        "rate_limit": 60,
        "rate_window": 60.0,
        "refused": 0,
        "spent": Decimal("15.91"),
        "reserved": Decimal("2.15"),
        "budget": Decimal(30),
        "elapsed": 723.0,
        "eta": 240.0,
        "runtime": 200.0,
        "learned": 3,
        "paused_for": 0.0,
        "pause_why": "",
    }
    base.update(changes)
    return Snapshot(**base)


def test_the_heartbeat_line_has_the_counts_the_window_the_spend_and_the_eta() -> None:
    state = snapshot()
    line = heartbeat_line(state)
    assert line.startswith(f"progress: {state.done}/{state.total} done, {state.failed} failed;")
    for stage in (Stage.PENDING, Stage.UPLOADING, Stage.SUBMITTED, Stage.RUNNING):
        assert f"{stage.value} {state.counts[stage]}" in line
    assert f"in flight {state.in_flight}/{state.concurrency}" in line
    assert f"requests {state.window_used}/{state.rate_limit} in 1 min" in line
    assert "spent $15.91 + $2.15 reserved of $30.00" in line
    assert f"ETA about {walltime.duration(state.eta)}" in line
    paused = heartbeat_line(snapshot(paused_for=12.0, pause_why="Retry-After on 429", refused=3))
    assert "every request paused 12 s more (Retry-After on 429)" in paused
    assert "(3 refused with 429)" in paused
    assert "no budget" in heartbeat_line(snapshot(budget=None))


def test_the_heartbeat_is_logged_every_period_of_the_run_never_in_a_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test-heartbeat")
    screen = HeartbeatScreen(0.2, logger)
    with caplog.at_level(logging.INFO, logger="test-heartbeat"):
        screen.start(snapshot(elapsed=0.0))
        for elapsed in (0.1, 0.2, 0.25, 0.39, 5.0, 5.1, 5.2):
            screen.show(snapshot(elapsed=elapsed))
    # Due at 0.2, then 0.4 (seen at 5.0, once), then 5.2.
    assert len(caplog.records) == 3
    assert all(r.getMessage().startswith("progress: ") for r in caplog.records)
    caplog.clear()
    off = HeartbeatScreen(0, logger)
    off.start(snapshot(elapsed=0.0))
    off.show(snapshot(elapsed=1e6))
    assert not caplog.records


def test_the_live_view_shows_the_bar_the_counts_and_the_spend() -> None:
    state = snapshot()
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(renderable(state))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"{state.done}/{state.total} done" in shown
    for stage in Stage:
        assert f"{stage.value} {state.counts[stage]}" in shown
    assert f"in flight {state.in_flight}/{state.concurrency}" in shown
    assert "spent $15.91 + $2.15 reserved of $30.00" in shown
    assert f"ETA about {walltime.duration(state.eta)}" in shown


# -- the log file and the log lines -----------------------------------------------------------


def test_an_event_is_one_json_line_with_money_as_a_string_and_the_secret_never() -> None:
    line = event_line(SpendChanged(Decimal("2.58"), Decimal("0.43")), 0.0)
    data = json.loads(line)
    assert data["type"] == "SpendChanged"
    assert (data["spent"], data["reserved"]) == ("2.58", "0.43")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}", data["time"])
    changed = json.loads(event_line(ItemChanged("a", JobState.SUBMITTED, {"cost": 0.43}), 0.0))
    assert (changed["item_id"], changed["state"], changed["record"]) == (
        "a",
        "submitted",
        {"cost": 0.43},
    )
    said = json.loads(event_line(Said(logging.WARNING, "x", "a"), 0.0))
    assert (said["level"], said["text"], said["item_id"]) == ("WARNING", "x", "a")
    secret = "sk-not-to-be-seen"
    leaked = event_line(Said(logging.INFO, f"a line with {secret} in it"), 0.0, (secret,))
    assert secret not in leaked and "***" in leaked
    assert "\n" not in event_line(Said(logging.INFO, "two\nlines"), 0.0)


async def test_the_log_file_appends_one_json_line_per_event_in_order(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"type": "from the run before"}\n')
    log_file = LogFile(path)
    events = [
        RequestSent("GET /v1/prediction/p", 1.0),
        SpendChanged(Decimal("0.43"), Decimal(0)),
        Paused(2.0, 3.0, "Retry-After on 429"),
    ]
    async with anyio.create_task_group() as tg:
        tg.start_soon(log_file.run)
        for event in events:
            log_file(event)
        log_file.close()
    log_file(SpendChanged(Decimal(1), Decimal(0)))  # after the run: dropped, no error
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"type": "from the run before"}
    assert [line["type"] for line in lines[1:]] == [type(e).__name__ for e in events]
    assert lines[2]["spent"] == "0.43"


def test_a_log_file_that_cannot_be_opened_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"--log-file {tmp_path}"):
        LogFile(tmp_path)  # a directory


def test_log_lines_carry_an_iso_date_time_and_offset() -> None:
    record = logging.LogRecord("runner", logging.INFO, __file__, 1, "hello", None, None)
    assert re.fullmatch(f"{ISO} hello", IsoFormatter(LOG_FORMAT).format(record))


def test_while_the_live_view_runs_log_lines_go_through_its_console_warnings_only() -> None:
    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(IsoFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    logger = logging.getLogger("test-console")
    logger.setLevel(logging.INFO)
    console = Console(file=io.StringIO(), width=200)
    try:
        with through_console(console, terminal, level=logging.WARNING):
            assert handler not in root.handlers
            logger.info("an item submitted")
            logger.warning("an item failed")
        assert handler in root.handlers
        logger.warning("after")
    finally:
        root.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(f"{ISO} an item failed", shown)
    assert "an item submitted" not in shown
    assert "after" in terminal.getvalue() and "an item failed" not in terminal.getvalue()


def test_minus_v_logs_every_request_decision_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    write = to_log(logging.getLogger("test-requests"))
    with caplog.at_level(logging.DEBUG, logger="test-requests"):
        write(RequestSent("POST /v1/prediction/", 1.0))
        write(RequestRefused("POST /v1/prediction/", 2.0))
        write(Paused(3.0, 3.0, "Retry-After on 429"))
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 3
    assert "POST /v1/prediction/: sent" in caplog.records[0].getMessage()


class Unwritable(io.StringIO):
    def write(self, text: str) -> int:
        raise AssertionError(f"written in the event callback: {text!r}")


def report_of(steps: Sequence[Step]) -> Report:
    """A report that passed its checks, planning ``steps``."""
    to_submit = tuple((s.item.id, s.item.price_usd) for s in steps if s.action is Action.SUBMIT)
    return Report(
        manifest_path=Path("m.yaml"),
        batch="b",
        output_dir=Path("out"),
        problems=(),
        plan=Plan(tuple(steps)),
        estimate=Estimate(to_submit=to_submit),
    )


async def test_the_event_callback_only_updates_the_model_and_queues_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The subscriber runs in the scheduler's loop: no terminal, file or log I/O in it."""
    settings = ViewSettings(heartbeat=0)
    async with RunView(settings, Mode.PLAIN, Unwritable(), Unwritable()) as view:
        view.start(report_of(plan().steps), Limits(), None)
        with caplog.at_level(logging.DEBUG, logger="runner"):
            for n in range(1000):
                view.on_event(RequestSent("GET /v1/prediction/p", float(n)))
            view.on_event(ItemChanged("a", JobState.SUBMITTING, {}))
            view.on_event(RequestRefused("POST /v1/prediction/", 5.0))
            view.on_event(Paused(30.0, 5.0, "Retry-After on 429"))
            view.on_event(SpendChanged(Decimal("0.43"), Decimal(0)))
            assert not caplog.records
    # Leaving the view prints what was queued: the 429 and the pause, as warnings.
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("429" in line for line in said) and any("paused" in line for line in said)


# -- the plan's time --------------------------------------------------------------------------


def time_line(report: Report, limits: Limits) -> str:
    [line] = [
        line for line in render_plan(report, limits=limits).splitlines() if "wall time" in line
    ]
    return line.strip()


def test_the_plan_gives_the_expected_wall_time_beside_the_cost() -> None:
    steps = [step(f"i{n}", Action.SUBMIT) for n in range(25)]
    limits = Limits(concurrency=10, expected_runtime=240.0, rate_limit=60, rate_window=60.0)
    expected = 3 * 240.0  # 25 items, 10 at a time: three waves of 4 min
    line = time_line(report_of(steps), limits)
    assert line == (
        f"expected wall time: about {walltime.duration(expected)} "
        "(25 items, 10 at a time, ~4 min each)"
    )
    lines = render_plan(report_of(steps), limits=limits).splitlines()
    assert "estimated cost" in lines[lines.index(f"  {line}") - 1]  # right below the cost


def test_the_plan_counts_resumed_predictions_and_names_the_request_window_when_it_binds() -> None:
    steps = [step(f"i{n}", Action.SUBMIT) for n in range(25)]
    steps += [step(f"r{n}", Action.POLL) for n in range(5)]
    limits = Limits(concurrency=10, expected_runtime=60.0, rate_limit=1, rate_window=60.0)
    requests = walltime.requests_needed(to_submit=25, in_flight=5)
    line = time_line(report_of(steps), limits)
    assert f"about {walltime.duration(requests * 60.0)} " in line
    assert f"30 items (5 resumed), 10 at a time, ~1 min each; at least {requests} requests" in line
    assert "nothing to submit" in time_line(report_of([step("d", Action.DONE)]), limits)


# -- the end of the run -----------------------------------------------------------------------


def failed_row(item_id: str, code: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": item_id, "status": "failed", "error": "boom"}
    if code:
        row["error_code"] = code
    return row


def end_summary() -> dict[str, Any]:
    return {
        "batch": "b",
        "counts": {"total": 6, "done": 2, "failed": 4, "pending": 0, "running": 0},
        "cost_usd": 0.86,
        "interrupted": False,
        "account_error": None,
        "budget_reached": False,
        "stopped": None,
        "items": [
            {"id": "ok1", "status": "done"},
            {"id": "ok2", "status": "done"},
            failed_row("f1", "PROVIDER_FAILED"),
            failed_row("f2", "timeout"),
            failed_row("f3", "PROVIDER_FAILED"),
            failed_row("f4", None),
        ],
    }


def test_failures_are_grouped_by_reason_most_frequent_first() -> None:
    summary = end_summary()
    assert failure_reasons(summary) == [
        ("PROVIDER_FAILED", 2),
        ("no error code", 1),
        ("timeout", 1),
    ]
    text = render(summary, "out", "i2v-runner run m.yaml")
    assert f"{REASONS_LINE}PROVIDER_FAILED 2, no error code 1, timeout 1" in text.splitlines()


def test_the_end_as_text_puts_the_wall_time_on_the_headline() -> None:
    summary = end_summary()
    text = render(summary, "out", "i2v-runner run m.yaml")
    ended = plain_end(summary, text, 200.0).splitlines()
    assert ended[0] == text.splitlines()[0] + "; wall time 3 min 20 s"
    assert ended[1:] == text.splitlines()[1:]
    assert ended[-1] == "to submit the failed items again: i2v-runner run m.yaml --retry-failed"


def test_the_end_on_a_terminal_is_a_table_then_the_report_s_other_lines() -> None:
    summary = end_summary()
    text = render(summary, "out", "i2v-runner run m.yaml")
    console = Console(file=io.StringIO(), width=100, color_system=None)
    print_end(summary, text, 200.0, console, None)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"failed\s*│\s*4", shown) and re.search(r"total\s*│\s*6", shown)
    assert re.search(r"spent\s*│\s*\$0\.86", shown)
    assert re.search(r"wall time\s*│\s*3 min 20 s", shown)
    assert re.search(r"PROVIDER_FAILED\s*│\s*2", shown)
    assert REASONS_LINE not in shown  # the table has them
    assert text.splitlines()[0] not in shown  # the table stands in for the headline
    assert "--retry-failed" in shown
    plain = Console(file=io.StringIO(), width=100)
    plain.print(end_table({**summary, "items": [], "counts": {**summary["counts"]}}, None))
    assert "failed by reason" not in plain.file.getvalue()  # type: ignore[attr-defined]


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "m.yaml", "--retry"],  # not --retry-failed
        ["run", "m.yaml", "--dry"],  # not --dry-run
        ["validate", "m.yaml", "--budget-p"],
        ["simulate", "--spe", "5"],  # not --speed
        ["--verb", "run", "m.yaml"],  # not --verbose
    ],
)
def test_no_option_is_taken_by_a_prefix(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["run", "m.yaml", "-v"], True, False),
        (["run", "m.yaml", "-q"], False, True),
        (["-v", "run", "m.yaml"], True, False),
        (["validate", "m.yaml", "--verbose"], True, False),
        (["run", "m.yaml"], False, False),
    ],
)
def test_verbosity_works_before_and_after_the_subcommand(
    argv: list[str], verbose: bool, quiet: bool
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)
    view = view_from(args)
    assert (view.verbose, view.quiet) == (verbose, quiet)


def test_the_view_options_parse() -> None:
    args = build_parser().parse_args(
        ["run", "m.yaml", "--heartbeat", "0.2", "--no-progress", "--log-file", "r.jsonl"]
    )
    assert view_from(args) == ViewSettings(
        progress=False, heartbeat=0.2, log_file=Path("r.jsonl"), quiet=False, verbose=False
    )
    assert (
        view_from(build_parser().parse_args(["run", "m.yaml", "--heartbeat", "0"])).heartbeat == 0
    )
    assert view_from(build_parser().parse_args(["validate", "m.yaml"])) == ViewSettings()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_heartbeat_that_is_no_number_of_seconds_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "m.yaml", "--heartbeat", value])
    assert "--heartbeat" in capsys.readouterr().err


async def test_a_log_file_in_a_folder_not_made_yet_is_made_with_it(tmp_path: Path) -> None:
    """A cron line that puts --log-file inside the output directory must work on the first
    night too, before the run has made that directory (it failed with exit 2)."""
    path = tmp_path / "output" / "nightly" / "events.jsonl"
    log_file = LogFile(path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(log_file.run)
        log_file(SpendChanged(Decimal("0.43"), Decimal(0)))
        log_file.close()
    assert [json.loads(line)["type"] for line in path.read_text().splitlines()] == ["SpendChanged"]
