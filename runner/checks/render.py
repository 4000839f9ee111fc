"""The printout of a preflight: one line per problem, the plan, and the verdict.

``render_problems`` prints each diagnostic as ``error: m.yaml:5:13: item 1 (id "deer"), field
"prompt": ...``; ``render_plan`` what a run would do (items by action, uploads, models, the
estimated cost, the expected wall time and the budget; counts with thousands separated, in a
column as wide as the largest); ``render_verdict`` the last line. Pure:
text from a ``Report`` (and the run's ``Limits`` for the time).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from functools import partial

from runner import cost, night, walltime
from runner.checks.preflight import Report
from runner.config import Limits
from runner.diagnostics import Diagnostic
from runner.engine import policy
from runner.store.plan import Action, past_runtimes, to_submit

#: The count column of the plan is at least this wide (99,999 fits); a larger count widens it.
COUNT_WIDTH = 5


def render_problems(problems: Iterable[Diagnostic]) -> str:
    """One line per problem: ``error: m.yaml:5:13: item 1 (id "deer"), field "prompt": ...``."""
    return "\n".join(f"{p.severity}: {p}" for p in problems)


def render_plan(
    report: Report,
    *,
    verbose: bool = False,
    limits: Limits | None = None,
    tonight: night.Night | None = None,
    keys: int = 1,
    now: datetime | None = None,
) -> str:
    """What a run would do: items by action, uploads, models, estimated cost and budget, and
    with ``limits`` the expected wall time beside the cost; with a deadline or a per-run cap
    (``tonight``, on ``keys`` API keys, seen at ``now``) what fits in this run."""
    lines = [f"batch {report.batch}: {report.manifest_path}, output in {report.output_dir}"]
    plan, estimate = report.plan, report.estimate
    if plan is None or estimate is None:
        lines.append("  no plan: the manifest could not be read")
        return "\n".join(lines)
    resume = plan.count(Action.POLL) + plan.count(Action.RECONCILE)
    uploads = f"{report.uploads:,} image{_s(report.uploads)} to upload"
    if report.uploaded:
        uploads += f", {report.uploaded:,} uploaded before"
    rows = [
        ("to submit", plan.count(Action.SUBMIT), uploads),
        ("to resume", resume, "created before: polled again, never created again"),
        ("to download", plan.count(Action.DOWNLOAD), "paid for before: fetched again"),
        ("already done", plan.count(Action.DONE), ""),
    ]
    if plan.count(Action.FAILED):
        rows.append(("failed before", plan.count(Action.FAILED), "--retry-failed submits them"))
    if plan.count(Action.DUPLICATE):
        rows.append(("duplicates", plan.count(Action.DUPLICATE), "rendered once, for the first"))
    if plan.count(Action.LEFT):
        rows.append(("left out", plan.count(Action.LEFT), "not in --only/--limit: untouched"))
    width = max(COUNT_WIDTH, *(len(f"{count:,}") for _, count, _ in rows))
    for name, count, note in rows:
        lines.append(f"  {name:<14}{count:>{width},}" + (f"   {note}" if note and count else ""))
    for check in report.models:
        lines.append(
            f"  model {check.slug}: {check.items:,} item{_s(check.items)}, schema {check.how}"
        )
    money = _cost_lines(report, estimate)
    if limits is not None:
        money.insert(1, _time_line(report, limits))  # right below the estimated cost
        if tonight is not None and tonight.capped and now is not None:
            money.insert(2, _night_line(report, limits, tonight, keys, now))
    lines += money
    if verbose:
        lines.append("  items:")
        for step in plan.steps:
            item = step.item
            lines.append(
                f"    {step.action.value:<10}{item.id:<24} {item.model}  {cost.usd(item.price_usd)}"
            )
    return "\n".join(lines)


def _cost_lines(report: Report, estimate: cost.Estimate) -> list[str]:
    prices = {price for _, price in estimate.to_submit}
    count = len(estimate.to_submit)
    if len(prices) == 1:
        each = f"{count:,} × {cost.usd(prices.pop())} = "
    else:
        each = f"{count:,} items: " if count else ""
    nothing = "" if count else " (nothing to submit)"
    lines = [f"  estimated cost: {each}{cost.usd(estimate.new)}{nothing}"]
    if estimate.committed:
        lines.append(
            f"  spent before: {cost.usd(estimate.spent)} recorded"
            + (f", {cost.usd(estimate.in_flight)} in flight" if estimate.in_flight else "")
            + f"; batch total ≈ {cost.usd(estimate.total)}"
        )
    budget = report.budget_usd
    if budget is None:
        lines.append("  budget: none (--budget USD caps the batch's spend)")
    elif count == 0:
        lines.append(f"  budget: {cost.usd(budget)}; nothing to submit")
    elif report.fits is None or report.fits == count:
        lines.append(
            f"  budget: {cost.usd(budget)}; the batch total ≈ {cost.usd(estimate.total)} fits"
        )
    elif report.budget_partial and report.fits:
        rest = count - report.fits
        lines.append(
            f"  budget: {cost.usd(budget)} fits the first {report.fits:,} of {count:,} items to "
            f"submit; the other {rest:,} stay pending (--budget-partial)"
        )
    else:
        lines.append(
            f"  budget: {cost.usd(budget)} does not cover the batch total ≈ "
            f"{cost.usd(estimate.total)}"
        )
    return lines


def _time_line(report: Report, limits: Limits) -> str:
    """``expected wall time: about 13 h 20 min (2,000 items, 10 at a time, ~4 min each)``: the
    items to submit (those that fit, with --budget-partial) and the predictions resumed in
    flight (each counted as a whole run), at the in-flight cap and the expected run time, and
    at least the requests they need at the rate limit (``runner.walltime``)."""
    assert report.plan is not None
    plan = report.plan
    to_submit = plan.count(Action.SUBMIT)
    if report.budget_partial and report.fits is not None:
        to_submit = min(to_submit, report.fits)
    resumed = plan.count(Action.POLL) + plan.count(Action.RECONCILE) + plan.count(Action.RECHECK)
    items = to_submit + resumed
    if not items:
        return "  expected wall time: nothing to submit or wait for"
    runtime = limits.expected_runtime
    requests = walltime.requests_needed(
        to_submit=to_submit, in_flight=resumed, uploads=report.uploads
    )
    pace = partial(
        walltime.wall_time,
        waiting=to_submit,
        running=[runtime] * resumed,
        concurrency=limits.concurrency,
        runtime=runtime,
        rate_limit=limits.rate_limit,
        rate_window=limits.rate_window,
    )
    by_slots = pace()
    seconds = pace(requests=requests)
    why = f"{items:,} item{_s(items)}"
    if resumed:
        why += f" ({resumed:,} resumed)"
    why += f", {limits.concurrency} at a time, ~{walltime.duration(runtime)} each"
    if seconds > by_slots:
        why += (
            f"; at least {requests:,} requests at {limits.rate_limit} per "
            f"{walltime.duration(limits.rate_window)}"
        )
    return f"  expected wall time: about {walltime.duration(seconds)} ({why})"


def _night_line(
    report: Report, limits: Limits, tonight: night.Night, keys: int, now: datetime
) -> str:
    """``tonight (until 06:00, 8 h from now): about 1,180 of 5,000 items to submit finish,
    ≈ $507.40; the other 3,820 take about 4 more nights at this pace``: the forecast
    (``runner.night.forecast``) of the items to submit, in the order the run creates them,
    with each model's run times as earlier runs learned them (the prior before any)."""
    assert report.plan is not None
    plan = report.plan
    models = policy.by_model(past_runtimes(plan), limits.expected_runtime)

    @functools.cache
    def runtimes(slug: str) -> tuple[float, float]:
        """The model's typical run time and the one its items are fitted with."""
        model = models[slug]
        return model.quantile(night.TYPICAL_QUANTILE), model.quantile(night.FIT_QUANTILE)

    steps = to_submit(plan, tonight.order, lambda slug: runtimes(slug)[0])
    items = [night.Planned(*runtimes(step.item.model), step.item.price_usd) for step in steps]
    resumed = plan.count(Action.POLL) + plan.count(Action.RECONCILE) + plan.count(Action.RECHECK)
    pace = night.Pace(
        slots=limits.concurrency * keys,
        see_end=limits.poll_min,
        download=night.DOWNLOAD_SHARE * limits.expected_runtime,
        start_gap=walltime.REQUESTS_PER_ITEM * limits.rate_window / (limits.rate_limit * keys),
    )
    seconds = float("inf")
    when = "this run"
    if tonight.deadline is not None:
        seconds = (tonight.deadline - now).total_seconds()
        local = tonight.deadline.astimezone().strftime("%Y-%m-%d %H:%M %z")
        when = f"tonight (until {local}, {walltime.duration(seconds)} from now)"
    got = night.forecast(
        items,
        seconds=seconds,
        pace=pace,
        running=[limits.expected_runtime] * resumed,
        max_items=tonight.max_items,
        max_spend=tonight.max_spend,
    )
    line = (
        f"  {when}: about {got.items:,} of {len(items):,} item{_s(len(items))} to submit "
        f"finish, ≈ {cost.usd(got.spend)}"
    )
    if got.rest == 0:
        return line + "; that is all of them"
    if got.nights is None:
        needs = night.finish_at(0.0, items[0].fit_runtime, pace)
        return line + f"; none fits: the first needs about {walltime.duration(needs)}"
    runs = "night" if tonight.deadline is not None else "run"
    return line + (
        f"; the other {got.rest:,} take about {got.nights:,} more {runs}{_s(got.nights)} "
        "at this pace"
    )


def render_verdict(report: Report, *, dry: bool) -> str:
    """The last line: how many problems, and what that means for a run."""
    errors, warnings = len(report.errors), len(report.warnings)
    counts = f"{errors} error{_s(errors)}, {warnings} warning{_s(warnings)}"
    if errors:
        if dry:
            return f"{counts}: a run would refuse to start"
        return f"{counts}: refusing to run; nothing was uploaded or submitted"
    return f"{counts}: ready to run" if dry else f"{counts}: starting"


def _s(count: int) -> str:
    return "" if count == 1 else "s"
