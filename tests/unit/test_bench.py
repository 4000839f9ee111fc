"""The benchmark's own arithmetic: the oracle schedule and the busiest window."""

from __future__ import annotations

import pytest

from runner.bench import busiest_window, oracle_makespan


@pytest.mark.parametrize(
    ("run_times", "slots", "makespan"),
    [
        ([10.0] * 10, 10, 10.0),
        ([10.0] * 11, 10, 20.0),
        ([5.0, 1.0, 1.0, 1.0], 2, 5.0),
        ([1.0, 1.0, 5.0, 5.0], 2, 6.0),
        ([], 3, 0.0),
    ],
)
def test_oracle_list_schedules_in_creation_order(
    run_times: list[float], slots: int, makespan: float
) -> None:
    assert oracle_makespan(run_times, slots) == makespan


@pytest.mark.parametrize(
    ("times", "length", "busiest"),
    [([0.0, 0.5, 0.99, 1.0, 1.5], 1.0, 3), ([0.0, 2.0, 4.0], 1.0, 1), ([3.0, 1.0, 2.0], 5.0, 3)],
)
def test_busiest_window_counts_half_open_windows(
    times: list[float], length: float, busiest: int
) -> None:
    assert busiest_window(times, length) == busiest


def test_the_bench_finds_the_example_images_it_uploads() -> None:
    """The scenario's images are the example manifest's (an empty glob makes every client's
    request list empty and the bench divide by zero)."""
    from runner.bench import IMAGES

    assert len(sorted(IMAGES.glob("*.png"))) >= 2


def test_the_lag_meter_pairs_each_poll_due_with_its_send() -> None:
    """A poll's lag runs from its PollDue to the RequestSent of its own GET; other requests,
    and a retry sent without a new PollDue, are not polls of the schedule."""
    from runner.bench.inflight import Meter
    from runner.events import PollDue, RequestSent

    meter = Meter()
    for event in (
        PollDue("a", "p1", 10.0),
        PollDue("b", "p2", 10.5),
        RequestSent("POST /v1/prediction/", 10.6),
        RequestSent("GET /v1/prediction/p2", 10.75),
        RequestSent("GET /v1/prediction/p1", 11.0),
        RequestSent("GET /v1/prediction/p1", 12.0),  # a retry: no PollDue before it
    ):
        meter(event)
    assert meter.lags == [0.25, 1.0]
    assert meter.sent == 4


def test_growth_is_each_size_over_the_one_before() -> None:
    from runner.bench.scaletable import growth

    assert growth([0.5, 2.0, 30.0]) == [4.0, 15.0]


def test_the_scale_verdicts_fail_a_target_missed_by_any_figure() -> None:
    from runner.bench import inflight
    from runner.bench.scaletable import verdicts

    def size(seconds: float, peak: float) -> dict[str, float]:
        return {"seconds": seconds, "peak_mb": peak, "exit": 0}

    flight = {
        "items": 10,
        "done": 10,
        "creates": 10,
        "requests": 1000,
        "cpu_seconds": 0.2,  # 0.2 ms a request
        "p95_lag": 0.01 * inflight.LIMITS.poll_min,
    }
    good = verdicts(
        [size(0.4, 50), size(1.0, 80), size(7.0, 350)],
        [size(0.5, 60), size(1.5, 90), size(11.0, 550)],
        {"seconds": 3.0},
        flight,
        {"help": 0.12, "bare": 0.02},
    )
    assert [ok for _, ok, _ in good] == [True] * 6
    bad = verdicts(
        [size(0.4, 50), size(0.5, 80), size(7.9, 350)],  # 15.8x from 10k to 100k
        [size(0.5, 60), size(1.5, 90), size(11.0, 650)],  # over 600 MB
        {"seconds": 4.5},
        flight | {"cpu_seconds": 0.4, "p95_lag": 0.05 * inflight.LIMITS.poll_min},
        {"help": 0.31, "bare": 0.02},
    )
    assert [ok for _, ok, _ in bad] == [False] * 6
