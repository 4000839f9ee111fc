"""The end of a run: its summary with the wall time, as a table on a terminal, as text otherwise.

The text is ``runner.report.render``'s (the library's ``RunResult.text``): its first line, the
headline of counts and spend, gains the wall time; on a terminal a table of the counts, the
spend, the wall time and the failures by reason stands in for that line. The lines after it
(the failures one by one, why a run stopped, the exact command to resume or retry) are the
report's, as they are (the table has the failures by reason).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from runner.cost import usd
from runner.money import usd as amount
from runner.report import REASONS_LINE, failure_reasons, headline
from runner.walltime import duration

#: The summary's counts, in the order the table lists them.
COUNTS = ("done", "failed", "running", "pending", "total")


def after_headline(text: str) -> str:
    """The report's lines after its headline (``report.render``'s first line)."""
    return text.partition("\n")[2]


def plain_end(summary: dict[str, Any], text: str, wall_seconds: float | None) -> str:
    """The report's text with the wall time on its headline."""
    rest = after_headline(text)
    return headline(summary, wall_seconds) + (f"\n{rest}" if rest else "")


def end_table(summary: dict[str, Any], wall_seconds: float | None) -> RenderableType:
    """The counts, the spend, the wall time and the failures by reason (pure)."""
    counts = summary["counts"]
    table = Table(title=f"batch {summary['batch']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name in COUNTS:
        style = {"done": "green", "failed": "red"}.get(name, "") if counts[name] else ""
        table.add_row(name, Text(f"{counts[name]:,}", style=style))
    table.add_section()
    table.add_row("spent", usd(amount(summary["cost_usd"]) or 0))
    if wall_seconds is not None:
        table.add_row("wall time", duration(wall_seconds))
    reasons = failure_reasons(summary)
    if not reasons:
        return table
    failures = Table(title="failed by reason", title_justify="left")
    failures.add_column("reason", style="red")
    failures.add_column("items", justify="right")
    for reason, count in reasons:
        failures.add_row(reason, f"{count:,}")
    return Group(table, failures)


def print_end(
    summary: dict[str, Any],
    text: str,
    wall_seconds: float | None,
    console: Console | None,
    out: Any,
) -> None:
    """The end of a run on ``out``: through ``console`` as a table (a terminal), else text."""
    if console is None:
        print(plain_end(summary, text, wall_seconds), file=out)
        return
    console.print(end_table(summary, wall_seconds))
    rest = [line for line in after_headline(text).splitlines() if not line.startswith(REASONS_LINE)]
    if rest:
        console.print(Text("\n".join(rest)), soft_wrap=True)
