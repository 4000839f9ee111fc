"""What clients did to the simulator: the counters tests and the benchmark read.

``SimStats`` holds them (the API's requests with their times, creates, refusals, completions,
the hostile switches' and the transient faults' counts), summed over the accounts, and each
account's own in ``SimStats.accounts`` (``AccountStats``, by the fingerprint of its key, never
the key); ``CreateRecord``, ``Completion`` and ``SeenRequest`` are its entries. Plain data, no
I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CreateRecord:
    """One create that made a prediction (refused creates are not recorded here)."""

    t: float
    prediction_id: str
    model: str
    input: dict[str, Any]
    image_sha256: str | None  # set when the image URL is one of the simulator's own uploads
    account: str = ""  # the fingerprint of the key (runner.keys.fingerprint) that created it


@dataclass(frozen=True)
class Completion:
    """How one prediction ended: when it was created, when its end became visible, and how."""

    created_at: float
    visible_at: float
    run_time: float
    status: str  # success, error or cancelled (the canonical words, whatever legacy_statuses says)


#: The headers that carry the API key; none of them may ever reach another host.
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization"})


@dataclass(frozen=True)
class SeenRequest:
    """One request a host received: header names as the client spelled them, the path with its
    query, and (where the host keeps it) the body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def credentials(self) -> list[str]:
        """The names of the key-carrying headers (X-API-Key, Authorization) it arrived with."""
        return [k for k in self.headers if k.lower() in CREDENTIAL_HEADERS]


@dataclass
class AccountStats:
    """What one account (one API key) was asked and did; times are the event loop's.

    ``api_requests`` are the API requests that reached the account: past the transient faults
    and the key check, so a faulted or 401 request is in ``SimStats.api_requests`` only; those
    refused for rate are here too. ``foreign_lookups`` counts gets and cancels naming another
    account's prediction: they were answered as for an id that does not exist.
    """

    api_requests: list[tuple[float, str]] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)  # ids of the predictions it created
    in_flight: int = 0
    max_in_flight: int = 0
    refused_cap: int = 0
    refused_rate: int = 0
    refused_balance: int = 0
    foreign_lookups: int = 0
    spent_usd: float = 0.0  # price_usd per success: what its balance has paid

    def summary(self) -> dict[str, Any]:
        """The counters as JSON-ready values (one entry of ``SimStats.summary()["accounts"]``)."""
        return {
            "api_requests": len(self.api_requests),
            "creates": len(self.predictions),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "refused_cap": self.refused_cap,
            "refused_rate": self.refused_rate,
            "refused_balance": self.refused_balance,
            "foreign_lookups": self.foreign_lookups,
            "spent_usd": round(self.spent_usd, 6),
        }


@dataclass
class SimStats:
    """Counters read by tests and the benchmark; times are the event loop's ``loop.time()``.

    The server-wide counters are summed over the accounts (``max_in_flight`` is the most in
    flight on the whole server at once); ``accounts`` holds each account's own, by fingerprint.
    """

    api_requests: list[tuple[float, str]] = field(default_factory=list)
    creates: list[CreateRecord] = field(default_factory=list)
    presigns: int = 0
    uploads: int = 0
    downloads: int = 0
    renders: int = 0  # MP4s actually encoded (repeated image + motion pairs come from the cache)
    in_flight: int = 0
    max_in_flight: int = 0
    refused_cap: int = 0
    refused_rate: int = 0
    refused_balance: int = 0
    completions: dict[str, Completion] = field(default_factory=dict)
    # -- the hostile switches ----------------------------------------------------------------
    bad_create_answers: int = 0  # creates answered create_bad_answer (created or not)
    hidden_polls: int = 0  # polls of an existing prediction answered 404 (poll_not_found_*)
    redirects: int = 0  # polls and creates answered with a redirect (redirect_*_to)
    expired_uploads: int = 0  # storage reads (GETs and creates) refused after storage_ttl
    cdn_requests: list[SeenRequest] = field(default_factory=list)  # all the CDN host received
    # -- the real service's rough edges ------------------------------------------------------
    faults: dict[str, int] = field(default_factory=dict)  # transient faults, by endpoint
    cancels: int = 0  # cancels of an in-flight prediction
    cancels_ignored: int = 0  # of which the service drew to ignore (cancel_ignored_rate)
    private_urls_refused: int = 0  # image URLs not fetched: a private host (refuse_private_urls)
    # -- the accounts --------------------------------------------------------------------------
    unauthorized: int = 0  # API requests answered 401: no key, or one api_keys does not list
    accounts: dict[str, AccountStats] = field(default_factory=dict)  # by key fingerprint

    def summary(self) -> dict[str, Any]:
        """The counters as JSON-ready values (``GET /_sim/stats``)."""
        ended: dict[str, int] = {}
        for completion in self.completions.values():
            ended[completion.status] = ended.get(completion.status, 0) + 1
        return {
            "api_requests": len(self.api_requests),
            "creates": len(self.creates),
            "presigns": self.presigns,
            "uploads": self.uploads,
            "downloads": self.downloads,
            "renders": self.renders,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "refused_cap": self.refused_cap,
            "refused_rate": self.refused_rate,
            "refused_balance": self.refused_balance,
            "completions": ended,
            "bad_create_answers": self.bad_create_answers,
            "hidden_polls": self.hidden_polls,
            "redirects": self.redirects,
            "expired_uploads": self.expired_uploads,
            "cdn_requests": len(self.cdn_requests),
            "cdn_requests_with_credentials": sum(1 for r in self.cdn_requests if r.credentials),
            "faults": dict(sorted(self.faults.items())),
            "cancels": self.cancels,
            "cancels_ignored": self.cancels_ignored,
            "private_urls_refused": self.private_urls_refused,
            "unauthorized": self.unauthorized,
            "accounts": {name: own.summary() for name, own in sorted(self.accounts.items())},
        }
