"""One answer of the Eachlabs API and what follows from it, apart from its body: pure, no I/O.

``Answer`` is an HTTP answer read whole. The rules here decide what the request machinery
(``runner.api.requester``) does next: the error a non-2xx status becomes (``status_error``),
the next hop of a redirect or why it is refused (``next_hop``: the key never goes to another
origin), whether a fault is worth asking again (``transient``), and what of the server's text
may be shown (``scrub``, ``request_id``), and how long to wait before asking again
(``backoff``, which the engine's waits share). The bodies themselves are
``runner.api.protocol``'s.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yarl

from runner.api import protocol, transport
from runner.config import redact_url
from runner.errors import (
    AccountError,
    ApiBrokenError,
    ApiProtocolError,
    ApiStatusError,
    CapacityError,
    NotFoundError,
    TransportError,
)

#: Transient faults (5xx, a lost answer) after which a request other than a create is sent
#: again, and the statuses that count as transient: the real service's gateways answer them.
IDEMPOTENT_RETRIES = 2
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
#: An echoed ``X-Request-Id`` is shown in messages only if it looks like one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the API, read whole (at most ``requester.MAX_ANSWER_BYTES``)."""

    status: int
    text: str
    request_id: str | None
    sent_at: float
    url: yarl.URL
    location: str | None = None
    retry_after: float | None = None


def transient(exc: ApiStatusError | TransportError) -> bool:
    """A fault worth one more try: a 5xx from a gateway, or an answer lost on the way."""
    if isinstance(exc, ApiStatusError):
        return exc.status in TRANSIENT_STATUSES
    return exc.sent


def status_error(answer: Answer, retry_after_cap: float) -> ApiStatusError:
    """The error a non-2xx answer raises, with the server's own text when it gave one:
    AccountError (401, 402), CapacityError (429), NotFoundError (404), else ApiStatusError.
    Its ``retry_after`` is cut to ``retry_after_cap``."""
    message, body = protocol.error_text(answer.text, "", answer.status)
    status = answer.status
    kind: type[ApiStatusError] = ApiStatusError
    if status in (401, 402):
        kind = AccountError
    elif status == 429:
        kind = CapacityError
    elif status == 404:
        kind = NotFoundError
    retry_after = answer.retry_after
    if retry_after is not None:
        retry_after = min(retry_after, retry_after_cap)
    return kind(status, message, body=body, request_id=answer.request_id, retry_after=retry_after)


def next_hop(
    request: str,
    method: str,
    body: Mapping[str, Any] | None,
    answer: Answer,
    base: str,
    *,
    create: bool,
) -> tuple[str, yarl.URL, Mapping[str, Any] | None]:
    """The next hop of a redirect answered to ``request``: ``(method, url, body)``.

    Followed only to the origin of ``base`` (scheme, host, port), keeping the method: 307/308
    keep it and its body, and a GET stays a GET. Raises ApiProtocolError (ApiBrokenError for a
    create: nothing was created, and a misconfigured base must stop the batch) for a redirect
    without a usable Location, to another origin, or turning a POST into a GET. The hop carries
    the credentials of ``base``, whatever the Location says.
    """
    refused = ApiBrokenError if create else ApiProtocolError
    done = "; nothing was created" if create else ""
    target = transport.location(answer.url, answer.location)
    if target is None:
        raise refused(
            f"{request}: the API answered {answer.status} without a usable Location{done}"
        )
    if not transport.same_origin(target, base):
        raise refused(
            f"{request}: the API at {redact_url(base)} answered {answer.status} with a redirect "
            f"to {transport.origin(target)}: not followed, the API key is never sent to "
            f"another host{done}"
        )
    if answer.status not in transport.KEEP_METHOD and method != "GET":
        raise refused(
            f"{request}: the API answered {answer.status}, a redirect that would turn this "
            f"{method} into a GET: not followed{done}"
        )
    origin = yarl.URL(base)
    target = target.with_user(None)
    if origin.user is not None:
        target = target.with_user(origin.user).with_password(origin.password)
    return method, target, body


def json_body(answer: Answer) -> object:
    """The answer's body as JSON; ApiProtocolError (quoting its start) if it is not JSON."""
    try:
        return json.loads(answer.text)
    except ValueError:
        raise ApiProtocolError(
            f"the API answered {answer.status} with a body that is not JSON: {answer.text[:200]!r}"
        ) from None


def request_id(echoed: str | None, sent: str) -> str:
    """The request id to quote: the server's echo if it looks like one, else ours."""
    return echoed if echoed and _REQUEST_ID.fullmatch(echoed) else sent


def scrub(text: str, key: str) -> str:
    """Server text with the key (should a server echo it) blanked out. A key shorter than 8
    characters is no real key, and blanking it would garble ordinary words."""
    if len(key) >= 8:
        return text.replace(key, "***")
    return text


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: a uniform draw in [base/2, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return rng.uniform(min(base / 2, ceiling), ceiling)
