"""Talking to the Eachlabs API and the hosts it names: the request client (``client``), the wire
shapes (``protocol``), the one place network errors become project errors (``transport``), the
per-minute request window every call passes (``ratelimit``), and transfers of images and videos
to and from other hosts (``download``)."""
