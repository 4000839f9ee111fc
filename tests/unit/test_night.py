"""The night shift's pure parts (``runner.night``): reading ``--until`` and ``--max-wall``,
the fit decision, the plan's forecast, the order of creates; the per-run spend cap
(``Budget.run_cap``) and the exit code of a run stopped for the night."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from runner.cli.options import build_parser
from runner.engine.policy import RuntimeModel
from runner.errors import ConfigError
from runner.night import (
    Forecast,
    Order,
    Pace,
    Planned,
    deadline_of,
    fits,
    forecast,
    next_night_argv,
    parse_duration,
    parse_until,
    submit_order,
)
from runner.report import EXIT_FAILED, EXIT_NOT_FINISHED, EXIT_OK, exit_code
from runner.store.budget import Budget

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def at(text: str, zone: ZoneInfo) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


@pytest.mark.parametrize(
    ("until", "now", "zone", "expected"),
    [
        # 22:00 in Berlin: 06:00 is tomorrow morning
        ("06:00", at("2026-11-23T22:00", BERLIN), BERLIN, at("2026-11-24T06:00", BERLIN)),
        # just after midnight: still this morning
        ("06:00", at("2026-11-24T00:10", BERLIN), BERLIN, at("2026-11-24T06:00", BERLIN)),
        # 05:00: this morning's is an hour ahead
        ("6:00", at("2026-11-24T05:00", BERLIN), BERLIN, at("2026-11-24T06:00", BERLIN)),
        # exactly 06:00: the next one, a day later
        ("06:00", at("2026-11-24T06:00", BERLIN), BERLIN, at("2026-11-25T06:00", BERLIN)),
        # seconds given
        ("23:59:30", at("2026-11-23T23:59:10", BERLIN), BERLIN, at("2026-11-23T23:59:30", BERLIN)),
        # a half-hour zone
        ("06:30", at("2026-11-23T22:00", KOLKATA), KOLKATA, at("2026-11-24T06:30", KOLKATA)),
        # the night the clocks go back (New York, 2026-11-01 02:00 EDT -> 01:00 EST): 06:00
        # is 9 hours after 22:00, not 8
        ("06:00", at("2026-10-31T22:00", NEW_YORK), NEW_YORK, at("2026-11-01T06:00", NEW_YORK)),
    ],
)
def test_a_time_of_day_is_the_next_one_in_the_zone(
    until: str, now: datetime, zone: ZoneInfo, expected: datetime
) -> None:
    got = parse_until(until, now, zone)
    assert got == expected
    assert got.utcoffset() == expected.utcoffset()


def test_across_a_change_of_the_clocks_the_night_is_counted_in_real_hours() -> None:
    now = at("2026-10-31T22:00", NEW_YORK)
    night = parse_until("06:00", now, NEW_YORK).astimezone(UTC) - now.astimezone(UTC)
    assert night == timedelta(hours=9)
    spring = at("2026-03-07T22:00", NEW_YORK)  # the clocks go forward on 2026-03-08
    night = parse_until("06:00", spring, NEW_YORK).astimezone(UTC) - spring.astimezone(UTC)
    assert night == timedelta(hours=7)


def test_a_time_of_day_without_a_zone_is_the_machines_local_time() -> None:
    now = datetime.now(UTC)
    got = parse_until("06:00", now)
    assert got.tzinfo is not None
    assert timedelta(0) < got - now <= timedelta(hours=25)
    assert got.astimezone().strftime("%H:%M") == "06:00"


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        ("2026-11-24T06:00+01:00", datetime(2026, 11, 24, 5, 0, tzinfo=UTC)),
        ("2026-11-24T05:00Z", datetime(2026, 11, 24, 5, 0, tzinfo=UTC)),
        ("2026-11-24 00:00-05:00", datetime(2026, 11, 24, 5, 0, tzinfo=UTC)),
    ],
)
def test_a_date_time_with_its_offset_is_that_moment(until: str, expected: datetime) -> None:
    now = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
    assert parse_until(until, now) == expected


@pytest.mark.parametrize(
    ("until", "says"),
    [
        ("2026-11-24T06:00", "has no UTC offset"),
        ("2026-11-23T06:00+00:00", "already past"),
        ("25:00", "not a time of day"),
        ("06:61", "not a time of day"),
        ("tomorrow", "time of day (06:00) or an ISO 8601"),
        ("", "time of day (06:00) or an ISO 8601"),
    ],
)
def test_a_bad_until_is_refused_with_what_to_write(until: str, says: str) -> None:
    now = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--until") as caught:
        parse_until(until, now)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7h30m", 27000.0),
        ("45m", 2700.0),
        ("45min", 2700.0),
        ("90s", 90.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("1h0m30s", 3630.0),
        ("600", 600.0),
        (" 2H ", 7200.0),
    ],
)
def test_a_duration_reads_its_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "7x", "-5m", "0", "0h", "5m7h", "inf", "nan"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-wall"):
        parse_duration(text)


@pytest.mark.parametrize("option", ["--max-wall", "--grace"])
def test_a_bad_duration_on_the_command_line_names_its_own_option(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a bad --grace was refused as "--max-wall must be a duration"."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "m.yaml", option, "soon"])
    said = capsys.readouterr().err
    assert f"argument {option}: {option} must be a duration" in said
    other = ({"--max-wall", "--grace"} - {option}).pop()
    assert f"{other} must be" not in said


def test_the_deadline_is_the_earlier_of_until_and_max_wall() -> None:
    start = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    until = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert deadline_of(until, None, start) == until
    assert deadline_of(None, 3600.0, start) == start + timedelta(hours=1)
    assert deadline_of(until, 10 * 3600.0, start) == until
    assert deadline_of(None, None, start) is None


def test_the_next_nights_command_moves_a_date_time_a_day_and_keeps_a_time_of_day() -> None:
    argv = ["run", "m.yaml", "--until", "2026-11-24T06:00+01:00", "--max-items", "5"]
    assert next_night_argv(argv)[3] == "2026-11-25T06:00:00+01:00"
    assert next_night_argv(["run", "m.yaml", "--until=2026-11-24T06:00Z"])[2] == (
        "--until=2026-11-25T06:00:00+00:00"
    )
    assert next_night_argv(["run", "m.yaml", "--until", "06:00"]) == [
        "run",
        "m.yaml",
        "--until",
        "06:00",
    ]


PACE = Pace(slots=10, see_end=5.0, download=10.0)


@pytest.mark.parametrize(
    ("now", "deadline", "runtime", "expected"),
    [
        (0.0, 1000.0, 300.0, True),  # 315 s to spare... on disk by 315
        (685.0, 1000.0, 300.0, True),  # exactly on time: 685 + 300 + 5 + 10
        (686.0, 1000.0, 300.0, False),  # a second too late
        (0.0, 100.0, 300.0, False),  # a night shorter than one run
        (990.0, 1000.0, 1.0, False),  # a short run, but no time for its poll and download
    ],
)
def test_an_item_fits_if_its_run_poll_and_download_end_by_the_deadline(
    now: float, deadline: float, runtime: float, expected: bool
) -> None:
    assert fits(now=now, deadline=deadline, runtime=runtime, pace=PACE) is expected


def test_the_fit_uses_a_high_quantile_of_the_learned_run_times() -> None:
    """Before any run is seen the prior (around --expected-runtime) sets the estimate; once
    runs are learned it follows them: a batch of 100 s runs fits far more than the prior."""
    model = RuntimeModel(200.0)
    prior = model.quantile(0.9)
    assert prior > 200.0
    for _ in range(50):
        model.observe(100.0)
    learned = model.quantile(0.9)
    assert learned < 150.0
    assert not fits(now=0.0, deadline=200.0, runtime=prior, pace=PACE)
    assert fits(now=0.0, deadline=200.0, runtime=learned, pace=PACE)


def planned(count: int, runtime: float = 200.0, fit: float = 250.0) -> list[Planned]:
    return [Planned(runtime, fit, Decimal("0.43")) for _ in range(count)]


@pytest.mark.parametrize(
    ("items", "seconds", "pace", "running", "expected"),
    [
        # 10 slots, 200 s runs fitted at 250 (+5 +10): waves start at 0, 205, 410; the wave at
        # 615 would end at 880 > 800
        (planned(50), 800.0, Pace(10, 5.0, 10.0), (), 30),
        # one slot: the same night holds one item per 205 s
        (planned(50), 800.0, Pace(1, 5.0, 10.0), (), 3),
        # a queue position: three predictions running for 600 s more hold three slots; an
        # item behind them would start at 600 and end at 865
        (planned(50), 800.0, Pace(3, 5.0, 10.0), (600.0, 600.0, 600.0), 0),
        (planned(50), 800.0, Pace(4, 5.0, 10.0), (600.0, 600.0, 600.0), 3),
        (planned(50), 800.0, Pace(3, 5.0, 10.0), (500.0, 500.0, 500.0), 3),
        # the request window: one item per 30 s at most (e.g. 2 requests at 4 a minute)
        (planned(50), 800.0, Pace(10, 5.0, 10.0, start_gap=30.0), (), 18),
        # nothing fits a night shorter than one fitted run
        (planned(5), 200.0, Pace(10, 5.0, 10.0), (), 0),
        (planned(5), 10_000.0, Pace(10, 5.0, 10.0), (), 5),
    ],
)
def test_the_forecast_counts_what_fits_by_slots_queue_and_window(
    items: list[Planned], seconds: float, pace: Pace, running: tuple[float, ...], expected: int
) -> None:
    got = forecast(items, seconds=seconds, pace=pace, running=running)
    assert got.items == expected
    assert got.rest == len(items) - expected
    assert got.spend == Decimal("0.43") * expected


def test_the_forecast_stops_at_the_per_run_caps_and_counts_the_nights_left() -> None:
    items = planned(100)
    pace = Pace(10, 5.0, 10.0)
    assert forecast(items, seconds=800.0, pace=pace) == Forecast(30, Decimal("12.90"), 70, 3)
    assert forecast(items, seconds=800.0, pace=pace, max_items=12).items == 12
    capped = forecast(items, seconds=800.0, pace=pace, max_spend=Decimal("5.00"))
    assert (capped.items, capped.nights) == (11, 9)
    assert forecast(planned(5), seconds=100.0, pace=pace).nights is None  # never at this pace
    assert forecast(planned(5), seconds=10_000.0, pace=pace).nights == 0


def test_the_order_puts_priorities_first_then_shortest_then_the_manifests() -> None:
    # (name, priority, expected run time)
    steps = [("a", 0, 300.0), ("b", 0, 100.0), ("c", 2, 300.0), ("d", 0, 100.0), ("e", 2, 50.0)]

    def order(how: Order) -> str:
        ranked = submit_order(steps, how, priority=lambda s: s[1], expected=lambda s: s[2])
        return "".join(name for name, _, _ in ranked)

    assert order(Order.MANIFEST) == "ceabd"
    assert order(Order.SHORTEST_FIRST) == "ecbda"
    plain = [(name, 0, 0.0) for name in "abcde"]
    assert [
        s[0]
        for s in submit_order(
            plain, Order.MANIFEST, priority=lambda s: s[1], expected=lambda s: s[2]
        )
    ] == list("abcde")


def test_the_run_cap_counts_this_runs_creates_and_their_real_cost() -> None:
    budget = Budget(None, spent_before=Decimal("100"), run_cap=Decimal("1.00"))
    budget.hold("resumed", Decimal("0.43"))  # created by an earlier run: not this run's
    assert budget.reserve("a", Decimal("0.43"))
    assert budget.reserve("b", Decimal("0.43"))
    assert not budget.fits_run(Decimal("0.43"))
    assert not budget.reserve("c", Decimal("0.43"))
    budget.settle("a", Decimal("0.10"))  # it cost less than estimated
    assert budget.reserve("c", Decimal("0.43"))
    budget.release("b")  # created nothing
    assert budget.run_spent == Decimal("0.10")
    assert budget.fits_run(Decimal("0.43"))


def summary(pending: int, running: int, failed: int, night: bool) -> dict[str, object]:
    done = 3
    rows = [{"status": "done"}] * done + [{"status": "failed"}] * failed
    return {
        "counts": {
            "total": done + pending + running + failed,
            "done": done,
            "failed": failed,
            "pending": pending,
            "running": running,
        },
        "items": rows,
        "stopped": None,
        "selection": None,
        "account_error": None,
        "interrupted": False,
        "night": {"stopped_by": "deadline", "deadline": "2026-11-24T06:00:00+01:00"}
        if night
        else None,
    }


@pytest.mark.parametrize(
    ("pending", "running", "failed", "night", "code"),
    [
        (4, 0, 0, True, EXIT_NOT_FINISHED),  # work left for the next night
        (0, 2, 0, True, EXIT_NOT_FINISHED),  # predictions left running
        (4, 0, 1, True, EXIT_NOT_FINISHED),  # not finished yet, failures in the summary
        (0, 0, 1, True, EXIT_FAILED),  # nothing left but a failure
        (0, 0, 0, True, EXIT_OK),
        (4, 0, 0, False, EXIT_FAILED),  # without a night's stop, pending is unfinished
    ],
)
def test_a_run_stopped_for_the_night_with_work_left_exits_not_finished(
    pending: int, running: int, failed: int, night: bool, code: int
) -> None:
    assert exit_code(summary(pending, running, failed, night)) == code
