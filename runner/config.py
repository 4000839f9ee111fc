"""Frozen settings, their defaults, and the one place the environment is read.

Also the one way the runner reads a file it is pointed at (the key file, the manifest, its
images, the ledger, the schema cache): ``open_regular_file`` refuses a FIFO, a device or a
directory before reading, so no path can make a check wait forever or read without end.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import ConfigError
from runner.keys import fingerprint
from runner.night import Night

DEFAULT_API_BASE = "https://api.eachlabs.ai"
#: The account's documented cap on predictions in flight (fixed-price models).
DEFAULT_CONCURRENCY = 10
#: The documented request window: 60 API requests per 60 s, read strictly (any window).
DEFAULT_RATE_LIMIT = 60
DEFAULT_RATE_WINDOW = 60.0
#: The service quantises status to about 5 s: polling one prediction faster gains nothing.
DEFAULT_POLL_MIN = 5.0
#: The vendor pages quote ~200-240 s per video.
DEFAULT_EXPECTED_RUNTIME = 200.0
#: A prediction still running after this long is cancelled and recorded as failed (timeout).
DEFAULT_ITEM_TIMEOUT = 30 * 60.0
#: Cancel is best effort: after one, the prediction is polled this long to learn how it ended
#: (cancelled, or finished anyway and billed), then left for a later run to ask about.
DEFAULT_CANCEL_GRACE = 60.0
#: Attempts per item per run for predictions that end in a retryable error.
DEFAULT_MAX_ATTEMPTS = 2
#: Per-request timeout for API calls; a create that times out is ambiguous, never resent blindly.
DEFAULT_REQUEST_TIMEOUT = 60.0
#: Output URLs are promised for ~24 h. One video's whole transfer, every retry included, must
#: finish within this long; a CDN that sends nothing for DEFAULT_TRANSFER_STALL is given up on.
DEFAULT_DOWNLOAD_TIMEOUT = 300.0
DEFAULT_TRANSFER_STALL = 60.0
#: The largest output video accepted. A Hailuo MP4 (6-10 s, up to 1080p) is a few MB to a few
#: tens of MB; anything near this is not a video of ours.
DEFAULT_MAX_VIDEO_MB = 512.0
#: A Retry-After longer than this is cut to it (and logged); a server that keeps asking for
#: longer stops the batch (exit 6) instead of stalling it for hours.
DEFAULT_MAX_RETRY_AFTER = 600.0
#: A new prediction may take seconds to appear in GET /v1/executions. A lost create is called
#: absent only once lookups have shown nothing for at least this long after it was sent.
DEFAULT_RECONCILE_SETTLE = 120.0
#: A prediction we created that answers 404 is polled with growing back-off for this long
#: before it is called lost (and looked up in executions).
DEFAULT_LOST_AFTER = 600.0
#: The API unreachable (no connection) for this long mid-run stops the run, items pending; a run
#: that has not reached the API once gives up after DEFAULT_UNREACHABLE_AT_START.
DEFAULT_UNREACHABLE_AFTER = 300.0
DEFAULT_UNREACHABLE_AT_START = 20.0
#: The first pause before asking again after a transient fault (a 5xx, a lost answer) of a
#: request that may be repeated; later pauses double. A failed executions lookup waits twice it.
DEFAULT_FAULT_WAIT = 0.5
#: Consecutive create answers that make no sense (no id, HTML, 5xx) before the batch stops.
DEFAULT_BROKEN_AFTER = 3
#: The contract's image size limit (the playground takes 50 MB; the API documents 20 MB).
DEFAULT_MAX_IMAGE_MB = 20.0
#: ``--check-urls``: how many first bytes of each URL image to fetch, and how long to wait for
#: them. 64 KB holds the dimensions of nearly every image; several URLs are fetched at once.
DEFAULT_URL_HEAD_BYTES = 64 * 1024
DEFAULT_URL_TIMEOUT = 20.0
DEFAULT_URL_CONCURRENCY = 8
#: Seconds between heartbeat lines unless ``--heartbeat`` says otherwise: a cron log that says
#: every minute how far the batch is, without a line per request.
DEFAULT_HEARTBEAT = 60.0
#: How long ``cancel`` watches each cancelled prediction for its end: three of the real
#: service's ~5 s status steps, the time a cancel that takes effect needs to show.
DEFAULT_CANCEL_WATCH = 15.0
#: How long a runner sent SIGTERM by ``cancel --stop-runner`` may take to let go of the lock:
#: it stops submitting at once and records the creates already on the wire, which takes a
#: request timeout at worst.
STOP_WAIT = 60.0

ENV_API_KEY = "EACHLABS_API_KEY"
#: Several keys, each an account of its own (commas or whitespace between them).
ENV_API_KEYS = "EACHLABS_API_KEYS"
ENV_API_BASE = "EACHLABS_API_BASE"

#: The key the in-process simulator accepts when no real key is configured.
SIMULATOR_API_KEY = "simulator-key"


@dataclass(frozen=True)
class Limits:
    """How hard the runner may push the API."""

    concurrency: int = DEFAULT_CONCURRENCY
    rate_limit: int = DEFAULT_RATE_LIMIT
    rate_window: float = DEFAULT_RATE_WINDOW
    poll_min: float = DEFAULT_POLL_MIN
    expected_runtime: float = DEFAULT_EXPECTED_RUNTIME
    item_timeout: float = DEFAULT_ITEM_TIMEOUT
    cancel_grace: float = DEFAULT_CANCEL_GRACE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    transfer_stall: float = DEFAULT_TRANSFER_STALL
    max_video_bytes: int = int(DEFAULT_MAX_VIDEO_MB * 1024 * 1024)
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    reconcile_settle: float = DEFAULT_RECONCILE_SETTLE
    lost_after: float = DEFAULT_LOST_AFTER
    unreachable_after: float = DEFAULT_UNREACHABLE_AFTER
    unreachable_at_start: float = DEFAULT_UNREACHABLE_AT_START
    broken_after: int = DEFAULT_BROKEN_AFTER
    fault_wait: float = DEFAULT_FAULT_WAIT
    #: At most this many requests at once, the rest spaced out evenly at the window's average
    #: rate (rate_limit per rate_window): for a server whose own limiter is a token bucket with
    #: a small burst, which refuses a burst the window allows. None: as many at once as the
    #: window allows. The window still caps every window; this only spaces requests out.
    burst: int | None = None

    def __post_init__(self) -> None:
        """Raises ConfigError for a ``burst`` that is not a whole number of at least 1."""
        burst = self.burst
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
            raise ConfigError(f"the burst must be a whole number of requests, not {burst!r}")
        if burst is not None and burst < 1:
            raise ConfigError(f"the burst must be at least 1 request, not {burst}")


#: Which failed items a run submits again: none (False), every one (True), or those whose
#: recorded error code is one of these (``--retry-failed=PROVIDER_ERROR,timeout``).
RetryFailed = bool | frozenset[str]


def retries(retry_failed: RetryFailed, error_code: str | None) -> bool:
    """Whether ``retry_failed`` submits again an item that failed with ``error_code`` (codes
    compare without regard to case)."""
    if isinstance(retry_failed, bool):
        return retry_failed
    return (error_code or "").casefold() in {code.casefold() for code in retry_failed}


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, built once by the CLI (or a library caller)."""

    manifest_path: Path
    output_dir: Path | None  # None: output/<batch>/
    api_base: str
    api_key: str = field(repr=False)  # a secret: never printed, logged or persisted
    limits: Limits = Limits()
    retry_failed: RetryFailed = False
    resubmit_ambiguous: bool = False
    #: Cap on the batch's spend in USD (the ledger's recorded spend counts); None: no cap.
    budget_usd: float | None = None
    #: With a budget: submit in manifest order while items fit, leave the rest pending.
    budget_partial: bool = False
    #: Work on these items only (ids or globs, ``--only``) and at most ``limit`` of them
    #: (``--limit``); the others are left as they are. Empty and None: every item.
    only: tuple[str, ...] = ()
    limit: int | None = None
    #: Keys of further accounts, after ``api_key`` (secrets too). Each key is an account with
    #: its own in-flight cap and request window (``limits`` apply to each).
    more_api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: The deadline and the per-run caps (``--until``, ``--max-wall``, ``--max-items``,
    #: ``--max-spend``) and the order items are created in (``runner.night``).
    night: Night = field(default_factory=Night)

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every key of the run, the primary first."""
        return (self.api_key, *self.more_api_keys)


@dataclass(frozen=True)
class CheckConfig:
    """What the preflight checks and how (``validate``, ``run --dry-run`` and every ``run``)."""

    strict: bool = False  # every warning counts as an error
    offline: bool = False  # no model schema lookups: use the cache or skip, with a warning
    check_urls: bool = False  # fetch the head of each URL image and check it like a file
    max_image_bytes: int = int(DEFAULT_MAX_IMAGE_MB * 1024 * 1024)
    url_head_bytes: int = DEFAULT_URL_HEAD_BYTES
    url_timeout: float = DEFAULT_URL_TIMEOUT
    url_concurrency: int = DEFAULT_URL_CONCURRENCY


def parse_rate(text: str) -> tuple[int, float]:
    """Parse ``N/SECONDS`` (e.g. ``60/60``) into ``(N, SECONDS)``; ConfigError if malformed."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*", text)
    if match is None:
        raise ConfigError(f"--rate must look like N/SECONDS (e.g. 60/60), not {text!r}")
    count, window = int(match.group(1)), float(match.group(2))
    if count < 1 or window <= 0 or not math.isfinite(window) or count > 10**9:
        raise ConfigError(f"--rate needs N >= 1 and SECONDS > 0, not {text!r}")
    return count, window


def parse_usd(text: str, option: str) -> float:
    """A non-negative amount of dollars (``2.5``, ``$2.50``); ConfigError if it is not one."""
    try:
        value = float(text.strip().removeprefix("$"))
    except ValueError:
        raise ConfigError(
            f"{option} must be an amount in USD (e.g. 25 or 2.50), not {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} must be a finite amount of at least 0, not {text!r}")
    return value


def redact_url(url: str) -> str:
    """``url`` as it may be shown: any ``user:password@`` is replaced by ``***@``.

    Every message, log line, ledger record and summary that names the API base uses this form.
    """
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@", r"\1***@", url)


def resolve_api_base(flag: str | None, env: Mapping[str, str]) -> str:
    """``--api-base``, else ``EACHLABS_API_BASE``, else the real API; without a trailing slash."""
    base = flag or env.get(ENV_API_BASE) or DEFAULT_API_BASE
    if not re.match(r"^https?://[^/\s]+", base):
        raise ConfigError(f"the API base must be an http(s) URL, not {redact_url(base)!r}")
    return base.rstrip("/")


#: The most a key file may hold. A key is a few dozen characters on one line; a file larger
#: than this is not a key file, and reading stops one byte past it (never the whole file).
MAX_KEY_FILE_BYTES = 4096
#: What a key may be made of: printable ASCII, no spaces, as an HTTP header value must be.
_KEY = re.compile(r"[\x21-\x7e]+")


def resolve_api_keys(key_file: Path | None, env: Mapping[str, str]) -> tuple[str, ...]:
    """The API keys, each its own account: from ``--api-key-file`` if given, else
    ``EACHLABS_API_KEYS``, else ``EACHLABS_API_KEY``; empty if none is set.

    The file must be a regular file of at most ``MAX_KEY_FILE_BYTES`` holding one key per line
    (blank lines and lines starting with ``#`` are skipped; surrounding whitespace is fine);
    ``EACHLABS_API_KEYS`` separates its keys by commas or whitespace. Every key must be
    printable ASCII without spaces, given once, and its fingerprint (``runner.keys``) must
    differ from the others'. Raises ConfigError otherwise: a directory, a FIFO or a device is
    refused before anything is read from it, and messages say what is wrong and where (a line
    number, the variable), never what a key is.
    """
    if key_file is not None:
        return _keys_from_file(key_file)
    keys = [key for key in re.split(r"[\s,]+", env.get(ENV_API_KEYS, "")) if key]
    if keys:
        for number, key in enumerate(keys, 1):
            if _KEY.fullmatch(key) is None:
                raise ConfigError(
                    f"{ENV_API_KEYS} is not a list of usable API keys: key {number} is not "
                    "printable ASCII"
                )
        return _distinct(keys, ENV_API_KEYS, "key")
    key = env.get(ENV_API_KEY, "").strip()
    if key and _KEY.fullmatch(key) is None:
        raise ConfigError(
            f"{ENV_API_KEY} is not a usable API key: it must be one line of printable ASCII "
            "without spaces"
        )
    return (key,) if key else ()


def _keys_from_file(key_file: Path) -> tuple[str, ...]:
    """The keys in ``key_file``; ConfigError (naming the file and line, never quoting it)."""
    where = f"the API key file {key_file}"
    try:
        data = read_regular_file(key_file, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(
            f"{where} is larger than {MAX_KEY_FILE_BYTES} bytes: a key file holds only keys"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not text: it holds bytes that are not UTF-8") from None
    keys: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if _KEY.fullmatch(key) is None:
            raise ConfigError(
                f"{where} does not hold a usable key on line {number}: a key is printable "
                "ASCII without spaces, one per line"
            )
        keys.append(key)
        numbers.append(number)
    if not keys:
        raise ConfigError(f"{where} is empty")
    return _distinct(keys, where, "line", numbers)


def _distinct(
    keys: list[str], where: str, unit: str, numbers: list[int] | None = None
) -> tuple[str, ...]:
    """``keys`` if no key is given twice and their fingerprints differ; else ConfigError
    naming the two places (``unit`` numbers: lines of a file, or positions in a list)."""
    numbers = numbers or list(range(1, len(keys) + 1))
    seen: dict[str, int] = {}
    for key, number in zip(keys, numbers, strict=True):
        name = fingerprint(key)
        if name in seen:
            same = "the same key" if keys[numbers.index(seen[name])] == key else "two keys"
            why = "" if same == "the same key" else " with the same fingerprint"
            raise ConfigError(
                f"{where} lists {same}{why} at {unit}s {seen[name]} and {number}: each key is "
                "an account, given once"
            )
        seen[name] = number
    return tuple(keys)


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of the regular file at ``path``.

    The file is opened non-blocking and checked with ``fstat`` before anything is read, so a
    FIFO (which would wait for a writer), a device such as ``/dev/zero`` (which never ends), a
    socket or a directory is refused at once, even one swapped in after an earlier ``stat``.
    A caller that must tell a file over its limit passes its limit + 1. Raises OSError: the
    system's own, or one whose ``strerror`` says what the path is instead ("it is a FIFO (named
    pipe), not a regular file").
    """
    with open_regular_file(path) as handle:
        return handle.read(limit)


def open_regular_file(path: Path) -> io.BufferedReader:
    """``path`` opened for binary reading if it is a regular file; see ``read_regular_file``."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"it is {file_kind(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` is, for messages: "a directory", "a FIFO (named pipe)"..."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")
