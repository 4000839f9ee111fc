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
