"""Key fingerprints: stable, short, distinct, and free of the key."""

from __future__ import annotations

import hashlib

from runner.keys import fingerprint


def test_a_fingerprint_is_the_head_of_the_keys_sha256_and_holds_no_part_of_the_key() -> None:
    key = "CANARY-7f3a-secret"
    named = fingerprint(key)
    assert named == "k-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    assert fingerprint(key) == named  # stable across calls (and runs: no salt)
    assert "CANARY" not in named and "secret" not in named


def test_different_keys_get_different_fingerprints() -> None:
    keys = [f"key-{n}" for n in range(1000)]
    assert len({fingerprint(k) for k in keys}) == len(keys)
