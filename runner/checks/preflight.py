"""Check before spending: every check a batch passes before anything is uploaded or created.

``preflight`` reads the manifest (structure, types, ids, image files: ``runner.manifest``),
then checks each item (``items``): its image by its content (URL images too with
``--check-urls``), its prompt, its input against its model's live schema; and plans the run
against the ledger with its estimated cost (``runner.cost``) and budget. Every problem is found
in one pass as a ``Diagnostic`` placed at its file, line, column, item and field, and the
report lists them in that order; the manifest's own guesses that a check settled (an image type
from its file name, a model the runner does not know) are dropped by their ``Code``.
``validate``, ``run --dry-run`` and every ``run`` go through it; a run starts only if it found
no error. The printout of a report is ``runner.checks.render``.

Nothing here creates a prediction or uploads an image. The only API requests are the model
lookups (through the caller's client, so they share the run's request window); the only file
written is the schema cache in the output directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import anyio

from runner import cost, gcpause
from runner.api.client import EachlabsClient
from runner.checks import items
from runner.checks.items import ModelCheck
from runner.config import CheckConfig, RetryFailed
from runner.diagnostics import (
    Code,
    Diagnostic,
    Place,
    Severity,
    error,
    of_severity,
    ordered,
    warning,
)
from runner.errors import ConfigError, LedgerError
from runner.manifest import Manifest, ManifestReading, read_manifest
from runner.store import ledger
from runner.store.plan import Action, Plan, make_plan, select, unmatched
from runner.store.resume import Resume, read_resume


@dataclass(frozen=True)
class Report:
    """Everything the preflight found, and the plan if the manifest could be read."""

    manifest_path: Path
    batch: str
    output_dir: Path
    problems: tuple[Diagnostic, ...]
    manifest: Manifest | None = None  # None when there is an error
    plan: Plan | None = None
    estimate: cost.Estimate | None = None
    uploads: int = 0  # distinct local images the run would upload
    uploaded: int = 0  # distinct local images to submit that the ledger has uploaded already
    budget_usd: float | None = None
    budget_partial: bool = False
    fits: int | None = None  # with a budget: how many items to submit fit in it
    models: tuple[ModelCheck, ...] = field(default=())

    @property
    def errors(self) -> list[Diagnostic]:
        return of_severity(self.problems, Severity.ERROR)

    @property
    def warnings(self) -> list[Diagnostic]:
        return of_severity(self.problems, Severity.WARNING)


async def preflight(
    manifest_path: Path,
    checks: CheckConfig,
    *,
    output_dir: Path | None = None,
    client: EachlabsClient | None = None,
    session: aiohttp.ClientSession | None = None,
    budget_usd: float | None = None,
    budget_partial: bool = False,
    retry_failed: RetryFailed = False,
    only: Sequence[str] = (),
    limit: int | None = None,
    reading: ManifestReading | None = None,
    resume: Resume | LedgerError | None = None,
) -> Report:
    """Run every check on the manifest at ``manifest_path`` and plan its run.

    ``reading`` is the manifest already read (else it is read here); ``resume`` the ledger
    already read under the run's lock, or why it could not be read (else it is read here, for
    a dry run).

    ``only`` and ``limit`` pick the items this run works on (``store.plan.select``); a pattern
    of ``only`` that matches no item is an error. ``client`` looks up model schemas (None, or
    ``checks.offline``: the cache only); ``session`` fetches URL image heads for
    ``checks.check_urls``. ``output_dir`` defaults to ``output/<batch>``. Raises nothing for a
    problem of the batch: it is in the report.
    """
    # every item's checks, plan and states stay alive while they are made: the collector's
    # passes over them would find nothing (``runner.gcpause``)
    with gcpause.paused():
        if reading is None:
            reading = await anyio.to_thread.run_sync(read_manifest, manifest_path)
        output = output_dir or Path("output") / reading.batch
        if output.exists() and not output.is_dir():
            raise ConfigError(f"the output directory {output} is not a directory (--output)")
        report = Report(manifest_path, reading.batch, output, reading.problems)
        if not reading.items:
            return _finish(report, reading, checks)
        found: list[Diagnostic] = []
        found += await items.check_local_images(reading.items, checks)
        if checks.check_urls and session is not None:
            found += await items.check_url_images(session, reading.items, checks)
        found += items.private_urls(reading.items)
        found += items.lint_prompts(reading.items)
        model_checks, schema_problems, decided = await items.check_schemas(
            reading, client, output, checks
        )
        found += schema_problems
        kept = [p for p in reading.problems if not settled(p, decided)]
        report = Report(
            manifest_path,
            reading.batch,
            output,
            (*kept, *found),
            models=model_checks,
            budget_usd=budget_usd,
            budget_partial=budget_partial,
        )
        planned = await _plan(report, reading, retry_failed, resume, only, limit)
        return _finish(planned, reading, checks)


# --- the manifest's guesses ----------------------------------------------------------------


def settled(problem: Diagnostic, decided: frozenset[str]) -> bool:
    """Whether ``problem`` is a guess of the manifest's that the checks have settled, so moot:
    a warning about an image's file name suffix (the content was checked, and the upload sends
    the type of the content, not the name), or an "unknown model" warning about a slug the API
    answered for (``decided``). Recognised by code and subject, never by message text."""
    if problem.code is Code.SUFFIX_GUESS:
        return True
    return problem.code is Code.UNKNOWN_MODEL and problem.subject in decided


# --- plan, estimate, budget ------------------------------------------------------------------


async def _plan(
    report: Report,
    reading: ManifestReading,
    retry_failed: RetryFailed,
    resume: Resume | LedgerError | None,
    only: Sequence[str] = (),
    limit: int | None = None,
) -> Report:
    """The report with the run's plan (manifest minus ledger), its estimate and its budget."""
    ledger_path = report.output_dir / ledger.LEDGER_NAME
    problems = list(report.problems)
    if resume is None:
        keys = {item.key for item in reading.items}
        try:
            resume = await anyio.to_thread.run_sync(read_resume, report.output_dir, keys)
        except LedgerError as exc:
            resume = exc
    if isinstance(resume, LedgerError):
        problems.append(error(str(resume), Place(str(ledger_path))))
        return replace(report, problems=tuple(problems))
    problems += [warning(w, Place(str(ledger_path))) for w in resume.warnings]
    plan = make_plan(
        reading.items, resume.states, file_ok=resume.file_ok, retry_failed=retry_failed
    )
    for pattern in unmatched([item.id for item in reading.items], only):
        problems.append(
            error(f"--only {pattern!r} matches no item of the manifest", Place(str(reading.path)))
        )
    plan = select(plan, only, limit)
    submit = [step.item for step in plan.steps if step.action is Action.SUBMIT]
    in_flight = sum(
        step.item.price_usd for step in plan.steps if step.action in (Action.POLL, Action.RECONCILE)
    )
    estimate = cost.Estimate(
        tuple((item.id, item.price_usd) for item in submit), in_flight, resume.replay.spent
    )
    known = resume.replay.uploads
    local = {item.image_sha256 for item in submit if item.image_sha256}
    fits = None
    if report.budget_usd is not None:
        fits = cost.fitting(estimate, report.budget_usd)
        problem = _budget_problem(estimate, report.budget_usd, fits, report.budget_partial)
        if problem is not None:
            problems.append(error(problem, Place(str(reading.path))))
    return replace(
        report,
        problems=tuple(problems),
        plan=plan,
        estimate=estimate,
        uploads=len(local - set(known)),
        uploaded=len(local & set(known)),
        fits=fits,
    )


def _budget_problem(estimate: cost.Estimate, budget: float, fits: int, partial: bool) -> str | None:
    """Why the run cannot start within ``budget``, or None if it can."""
    count = len(estimate.to_submit)
    if fits == count:
        return None
    spent = ""
    if estimate.committed > 0:
        spent = f" on top of {cost.usd(estimate.committed)} spent or committed before"
    if not partial:
        some = ""
        if fits:
            which = "only the first item" if fits == 1 else f"the first {fits} items"
            some = f"; --budget-partial would submit {which}"
        return (
            f"the estimate {cost.usd(estimate.new)} for {count} items to submit{spent} exceeds "
            f"--budget {cost.usd(budget)}{some}"
        )
    if fits == 0:
        first = estimate.to_submit[0][1]
        return (
            f"--budget {cost.usd(budget)} leaves no room for even one item "
            f"({cost.usd(first)}){spent}: nothing would be submitted"
        )
    return None


# --- finishing -----------------------------------------------------------------------------


def _finish(report: Report, reading: ManifestReading, checks: CheckConfig) -> Report:
    """Apply ``--strict``, order the problems by their place (the manifest's first), and attach
    the runnable manifest."""
    problems = list(report.problems)
    if checks.strict:
        problems = [
            replace(p, severity=Severity.ERROR, message=f"{p.message} [--strict]")
            if p.severity is Severity.WARNING
            else p
            for p in problems
        ]
    problems = ordered(problems, first=str(reading.path))
    has_errors = any(p.severity is Severity.ERROR for p in problems)
    manifest = None
    if not has_errors:
        manifest = Manifest(
            reading.path.resolve(),
            reading.batch,
            reading.items,
            tuple(p for p in problems if p.severity is Severity.WARNING),
        )
    return replace(report, problems=tuple(problems), manifest=manifest)
