"""Talking to the Eachlabs API and the hosts it names: the endpoints (``client``), one request
from the rate window to its answer (``requester``), what an answer means (``answers``), how long
an unreachable API is waited for (``outage``), the wire shapes (``protocol``), the one place
network errors become project errors (``transport``), the per-minute request window every call
passes (``ratelimit``), video downloads (``transfers``), image uploads and image URL heads on
other hosts (``imagehosts``), and what the engine needs of all this, as protocols a test can fake
(``port``)."""
