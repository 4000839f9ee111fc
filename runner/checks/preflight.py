"""Check before spending: every check a batch passes before anything is uploaded or created.

``preflight`` reads the manifest (structure, types, ids, image files: ``runner.manifest``),
then checks each image by its content (``images``; URL images too with ``--check-urls``),
lints each prompt (``prompts``), validates each item's input against its model's live
schema (``schema``), and plans the run against the ledger with its
estimated cost (``runner.cost``) and budget. Every problem is found in one pass and placed as
``file:line:col: item 3 (id "deer"), field "prompt"``. ``validate``, ``run --dry-run`` and every
``run`` go through it; a run starts only if it found no error.

Nothing here creates a prediction or uploads an image. The only API requests are the model
lookups (through the caller's client, so they share the run's request window); the only file
written is the schema cache in the output directory.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import anyio

from runner import cost, models
from runner.api import transfers
from runner.api.client import EachlabsClient
from runner.checks import images, prompts, schema
from runner.checks.diagnostics import ERROR, WARNING, Finding
from runner.config import CheckConfig, open_regular_file
from runner.errors import ConfigError, LedgerError, Problem
from runner.manifest import SUFFIX_WARNING, Item, Manifest, ManifestReading, read_manifest
from runner.store import ledger
from runner.store.budget import recorded_spend
from runner.store.plan import Action, Plan, make_plan
from runner.store.resume import Resume, read_resume

#: Stands in for a local image's future upload URL when an input is checked against a schema.
PLACEHOLDER_UPLOAD = "https://upload.invalid/"
#: Unknown-model errors name at most this many items, then count the rest.
MAX_NAMED_ITEMS = 5


@dataclass(frozen=True)
class ModelCheck:
    """How one model's schema was checked, for the plan printout."""

    slug: str
    items: int
    how: str  # "fetched", "cached at <ts>", "unknown to the API", "not checked"


@dataclass(frozen=True)
class Report:
    """Everything the preflight found, and the plan if the manifest could be read."""

    manifest_path: Path
    batch: str
    output_dir: Path
    problems: tuple[Problem, ...]
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
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]


async def preflight(
    manifest_path: Path,
    checks: CheckConfig,
    *,
    output_dir: Path | None = None,
    client: EachlabsClient | None = None,
    session: aiohttp.ClientSession | None = None,
    budget_usd: float | None = None,
    budget_partial: bool = False,
    retry_failed: bool = False,
    reading: ManifestReading | None = None,
    resume: Resume | None = None,
) -> Report:
    """Run every check on the manifest at ``manifest_path`` and plan its run.

    ``reading`` is the manifest already read (else it is read here); ``resume`` the ledger
    already read, under the run's lock (else it is read here, for a dry run).

    ``client`` looks up model schemas (None, or ``checks.offline``: the cache only);
    ``session`` fetches URL image heads for ``checks.check_urls``. ``output_dir`` defaults to
    ``output/<batch>``. Raises nothing for a problem of the batch: it is in the report.
    """
    if reading is None:
        reading = await anyio.to_thread.run_sync(read_manifest, manifest_path)
    output = output_dir or Path("output") / reading.batch
    if output.exists() and not output.is_dir():
        raise ConfigError(f"the output directory {output} is not a directory (--output)")
    report = Report(manifest_path, reading.batch, output, reading.problems)
    if not reading.items:
        return _finish(report, reading, checks)
    found: list[Problem] = []
    found += await _check_local_images(reading.items, checks)
    if checks.check_urls and session is not None:
        found += await _check_url_images(session, reading.items, checks)
    found += _private_urls(reading.items)
    found += _lint_prompts(reading.items)
    model_checks, schema_problems, decided = await _check_schemas(reading, client, output, checks)
    found += schema_problems
    kept = [
        p for p in reading.problems if not _is_model_guess(p, decided) and not _is_suffix_guess(p)
    ]
    report = Report(
        manifest_path,
        reading.batch,
        output,
        (*kept, *found),
        models=model_checks,
        budget_usd=budget_usd,
        budget_partial=budget_partial,
    )
    return _finish(await _plan(report, reading, retry_failed, resume), reading, checks)


# --- images --------------------------------------------------------------------------------


async def _check_local_images(items: Sequence[Item], checks: CheckConfig) -> list[Problem]:
    """Each local image read by its content; a problem is reported at every item using it."""
    local = [(item, path) for item in items if (path := _hashed_path(item)) is not None]
    results: dict[Path, list[Finding]] = {}
    for path in sorted({path for _, path in local}):
        results[path] = await anyio.to_thread.run_sync(_check_file, path, checks.max_image_bytes)
    return [
        Problem(item.where("image"), finding.message, finding.severity)
        for item, path in local
        for finding in results[path]
    ]


def _hashed_path(item: Item) -> Path | None:
    """The local image of ``item`` if the manifest could read it (else it reported why)."""
    return item.image_path if item.image_sha256 is not None else None


def _check_file(path: Path, max_bytes: int) -> list[Finding]:
    """The findings of one local image file (read in a worker thread)."""
    try:
        with open_regular_file(path) as handle:  # never waits on a FIFO swapped in
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(images.HEAD_BYTES)
            if images.dimensions(head) is None and len(head) < size <= max_bytes:
                head += handle.read(size - len(head))  # a JPEG with long metadata: read it all
    except OSError as exc:
        return [Finding(ERROR, f"cannot read the image file ({exc.strerror})")]
    return images.check(head, size, max_bytes=max_bytes, complete=len(head) >= size)


async def _check_url_images(
    session: aiohttp.ClientSession, items: Sequence[Item], checks: CheckConfig
) -> list[Problem]:
    """``--check-urls``: the head of each http(s) image URL, checked like a local file."""
    urls = sorted({item.image_url for item in items if item.image_url and _fetchable(item)})
    heads: dict[str, transfers.Head] = {}
    limiter = anyio.CapacityLimiter(checks.url_concurrency)

    async def fetch(url: str) -> None:
        async with limiter:
            heads[url] = await transfers.fetch_head(
                session, url, limit=checks.url_head_bytes, seconds=checks.url_timeout
            )

    async with anyio.create_task_group() as tg:
        for url in urls:
            tg.start_soon(fetch, url)
    found: list[Problem] = []
    for item in items:
        head = heads.get(item.image_url or "")
        if head is None:
            continue
        if head.error is not None:
            found.append(Problem(item.where("image"), head.error, ERROR))
            continue
        complete = head.size is not None and len(head.data) >= head.size
        for finding in images.check(
            head.data, head.size, max_bytes=checks.max_image_bytes, complete=complete
        ):
            found.append(
                Problem(item.where("image"), f"the URL {finding.message}", finding.severity)
            )
    return found


def _fetchable(item: Item) -> bool:
    parts = urlsplit(item.image_url or "")
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _private_urls(items: Sequence[Item]) -> list[Problem]:
    """A warning for each URL image the real service cannot fetch: a host on this machine or
    a private network. Its prediction would fail with INPUT_DOWNLOAD_ERROR."""
    found: list[Problem] = []
    for item in items:
        if item.image_url is None:
            continue
        why = images.unreachable_host(item.image_url)
        if why is not None:
            found.append(
                Problem(
                    item.where("image"),
                    f"the API's servers cannot fetch an image from {why}; upload the file "
                    "instead (give its local path)",
                    WARNING,
                )
            )
    return found


# --- prompts -------------------------------------------------------------------------------


def _lint_prompts(items: Sequence[Item]) -> list[Problem]:
    """Prompt lint of every item whose prompt was read (an empty one is a manifest error)."""
    return [
        Problem(item.where("prompt"), finding.message, finding.severity)
        for item in items
        if item.prompt
        for finding in prompts.lint(item.prompt, director=models.is_director(item.model))
    ]


# --- model schemas -------------------------------------------------------------------------


async def _check_schemas(
    reading: ManifestReading,
    client: EachlabsClient | None,
    output: Path,
    checks: CheckConfig,
) -> tuple[tuple[ModelCheck, ...], list[Problem], frozenset[str]]:
    """Look up each model once and validate every sound item's input against its schema.

    Also returns the slugs outside the built-in table that the API settled (known or 404).
    """
    by_model: dict[str, list[Item]] = {}
    for item in reading.items:
        by_model.setdefault(item.model, []).append(item)
    lookup = await schema.look_up(
        client, by_model, output / schema.CACHE_NAME, offline=checks.offline
    )
    found: list[Problem] = []
    model_checks: list[ModelCheck] = []
    decided: set[str] = set()  # slugs the API answered for: the manifest's guess is moot
    for slug, users in sorted(by_model.items()):
        where = _model_where(users, reading.model_place)
        if slug in lookup.unknown:
            decided.add(slug)
            found.append(Problem(where, _unknown_model(slug, users), ERROR))
            model_checks.append(ModelCheck(slug, len(users), "unknown to the API"))
            continue
        for severity, message in lookup.notes.get(slug, ()):
            found.append(Problem(where, message, severity))
        model_schema = lookup.schemas.get(slug)
        if model_schema is None:
            model_checks.append(ModelCheck(slug, len(users), "not checked"))
            continue
        if slug not in models.MODELS:
            decided.add(slug)
            if not cost.price_of(slug, reading.prices)[1]:
                found.append(Problem(where, _unknown_price(slug), WARNING))
        how = f"cached at {model_schema.fetched_at}" if model_schema.cached else "fetched"
        model_checks.append(ModelCheck(slug, len(users), how))
        unusable = schema.schema_problem(model_schema.request_schema)
        if unusable is not None:
            found.append(Problem(where, f"model {_q(slug)}: {unusable}", WARNING))
            continue
        for item in users:
            if item.index in reading.flawed:
                continue
            url = item.image_url or f"{PLACEHOLDER_UPLOAD}{item.image_sha256}"
            for issue in schema.validate(model_schema.request_schema, item.request_input(url)):
                found.append(Problem(item.where_input(issue.key), issue.message, issue.severity))
    if lookup.cache_error:
        found.append(Problem(str(reading.path), lookup.cache_error, WARNING))
    return tuple(model_checks), found, frozenset(decided)


def _model_where(users: Sequence[Item], top_place: str | None) -> str:
    """Where to report about a model: the top-level ``model`` if an item takes it from there,
    else the first item that names it."""
    for item in users:
        place = item.places.get("model")
        if top_place is not None and place is not None and place.position == top_place:
            return f'{top_place}: field "model"'
    return users[0].where("model")


def _is_suffix_guess(problem: Problem) -> bool:
    """Whether ``problem`` is the manifest's warning about an image's file name suffix: moot
    once the content is checked (the upload sends the type of the content, not the name)."""
    return problem.severity == WARNING and problem.message.endswith(SUFFIX_WARNING)


def _is_model_guess(problem: Problem, decided: frozenset[str]) -> bool:
    """Whether ``problem`` is the manifest's "unknown model" warning for a slug the API settled."""
    return problem.severity == WARNING and any(
        problem.message.startswith(f"unknown model {_q(slug)};") for slug in decided
    )


def _unknown_price(slug: str) -> str:
    return (
        f"no price is known for the model {_q(slug)}: estimated at "
        f"{cost.usd(cost.DEFAULT_PRICE_USD)} a run (set price_usd to change that)"
    )


def _unknown_model(slug: str, users: Sequence[Item]) -> str:
    named = ", ".join(item.label for item in users[:MAX_NAMED_ITEMS])
    more = len(users) - MAX_NAMED_ITEMS
    rest = f" and {more} more" if more > 0 else ""
    close = difflib.get_close_matches(slug, list(models.MODELS), n=1)
    hint = f"did you mean {_q(close[0])}? " if close else ""
    return f"the API does not know the model {_q(slug)} (HTTP 404); {hint}used by {named}{rest}"


# --- plan, estimate, budget ------------------------------------------------------------------


async def _plan(
    report: Report, reading: ManifestReading, retry_failed: bool, resume: Resume | None
) -> Report:
    """The report with the run's plan (manifest minus ledger), its estimate and its budget."""
    ledger_path = report.output_dir / ledger.LEDGER_NAME
    problems = list(report.problems)
    if resume is None:
        keys = {item.key for item in reading.items}
        try:
            resume = await anyio.to_thread.run_sync(read_resume, report.output_dir, keys)
        except LedgerError as exc:
            problems.append(Problem(str(ledger_path), str(exc), ERROR))
            return replace(report, problems=tuple(problems))
    records = resume.records
    problems += [Problem(str(ledger_path), w, WARNING) for w in resume.warnings]
    plan = make_plan(
        reading.items, resume.states, file_ok=resume.file_ok, retry_failed=retry_failed
    )
    submit = [step.item for step in plan.steps if step.action is Action.SUBMIT]
    in_flight = sum(
        step.item.price_usd for step in plan.steps if step.action in (Action.POLL, Action.RECONCILE)
    )
    estimate = cost.Estimate(
        tuple((item.id, item.price_usd) for item in submit), in_flight, recorded_spend(records)
    )
    known = ledger.uploads(records)
    local = {item.image_sha256 for item in submit if item.image_sha256}
    fits = None
    if report.budget_usd is not None:
        fits = cost.fitting(estimate, report.budget_usd)
        problem = _budget_problem(estimate, report.budget_usd, fits, report.budget_partial)
        if problem is not None:
            problems.append(Problem(str(reading.path), problem, ERROR))
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
    """Apply ``--strict``, order the problems by their place, and attach the runnable manifest."""
    problems = list(report.problems)
    if checks.strict:
        problems = [
            Problem(p.where, f"{p.message} [--strict]", ERROR) if p.severity == WARNING else p
            for p in problems
        ]
    problems = _ordered(problems, str(reading.path))
    has_errors = any(p.severity == ERROR for p in problems)
    manifest = None
    if not has_errors:
        manifest = Manifest(
            reading.path.resolve(),
            reading.batch,
            reading.items,
            tuple(p for p in problems if p.severity == WARNING),
        )
    return replace(report, problems=tuple(problems), manifest=manifest)


_POSITION = re.compile(r":(\d+):(\d+)(?::|$)")


def _ordered(problems: Iterable[Problem], manifest_file: str) -> list[Problem]:
    """Problems of the manifest by line and column (file-wide ones first), then the others."""

    def key(problem: Problem) -> tuple[int, int, int]:
        if not problem.where.startswith(manifest_file):
            return (1, 0, 0)
        match = _POSITION.match(problem.where, len(manifest_file))
        return (0, int(match.group(1)), int(match.group(2))) if match else (0, 0, 0)

    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=key)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# --- the printout ----------------------------------------------------------------------------


def render_problems(problems: Iterable[Problem]) -> str:
    """One line per problem: ``error: m.yaml:5:13: item 1 (id "deer"), field "prompt": ...``."""
    return "\n".join(f"{p.severity}: {p}" for p in problems)


def render_plan(report: Report, *, verbose: bool = False) -> str:
    """What a run would do: items by action, uploads, models, estimated cost and budget."""
    lines = [f"batch {report.batch}: {report.manifest_path}, output in {report.output_dir}"]
    plan, estimate = report.plan, report.estimate
    if plan is None or estimate is None:
        lines.append("  no plan: the manifest could not be read")
        return "\n".join(lines)
    resume = plan.count(Action.POLL) + plan.count(Action.RECONCILE)
    uploads = f"{report.uploads} image{_s(report.uploads)} to upload"
    if report.uploaded:
        uploads += f", {report.uploaded} uploaded before"
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
    for name, count, note in rows:
        lines.append(f"  {name:<14}{count:>5}" + (f"   {note}" if note and count else ""))
    for check in report.models:
        lines.append(
            f"  model {check.slug}: {check.items} item{_s(check.items)}, schema {check.how}"
        )
    lines += _cost_lines(report, estimate)
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
        each = f"{count} × {cost.usd(prices.pop())} = "
    else:
        each = f"{count} items: " if count else ""
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
            f"  budget: {cost.usd(budget)} fits the first {report.fits} of {count} items to "
            f"submit; the other {rest} stay pending (--budget-partial)"
        )
    else:
        lines.append(
            f"  budget: {cost.usd(budget)} does not cover the batch total ≈ "
            f"{cost.usd(estimate.total)}"
        )
    return lines


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
