"""Deterministic demonstration keys.

The example namespaces (``remembrancer/examples/namespaces.yaml``) map the
seed's alias DIDs to keys derived here from public strings, so the examples
work out of the box.  Anyone can derive these private keys: they are for
demos and tests only, never for a real deployment (``remembrancer init``
generates fresh keys).
"""

from __future__ import annotations

import hashlib

from remembrancer.core.keys import SigningKey

DEMO_ALIASES = (
    "did:vm:arbiter:prod-us-east-1",
    "did:vm:arbiter:prod-eu-west-1",
    "did:vm:arbiter:prod-dao-suite",
    "did:vm:arbiter:prod-clearing-a",
    "did:vm:arbiter:prod-clearing-b",
    "did:vm:arbiter:prod-clearing-c",
    "did:vm:admin:dao-council",
    "did:vm:admin:clearing-ops",
    "did:vm:actor:demo",
)


def demo_key(alias: str) -> SigningKey:
    """The public, well-known demo key for ``alias`` (NOT secret)."""
    seed = hashlib.sha256(b"remembrancer demo key (public, insecure)\n" + alias.encode()).digest()
    return SigningKey.generate(seed)
