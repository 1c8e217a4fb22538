"""Building signed records for tests, demos and benchmarks."""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from remembrancer.core.keys import SigningKey
from remembrancer.core.record import Record, sign_envelope, unsigned_envelope

_counter = itertools.count()


def make_record(
    namespace: str,
    schema: str,
    payload: Mapping[str, Any],
    actor: SigningKey,
    witnesses: Sequence[SigningKey] = (),
    *,
    timestamp: int,
    event_id: str | None = None,
    nonce: str | None = None,
    prev: str | None = None,
    subject: str | None = None,
) -> Record:
    """A signed record with a fresh event id and nonce unless given."""
    n = next(_counter)
    env = unsigned_envelope(
        namespace=namespace,
        schema=schema,
        payload=payload,
        actor=actor.did,
        event_id=event_id or f"evt-{os.getpid()}-{n}-{os.urandom(4).hex()}",
        timestamp=timestamp,
        nonce=nonce or base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
        prev=prev,
        subject=subject,
    )
    return sign_envelope(env, actor, witnesses)


def ledger_payload(i: int, size: int = 300) -> dict[str, Any]:
    """A ``ledger.append`` payload of about ``size`` bytes."""
    memo = "x" * max(0, size - 80)
    return {
        "stream": "treasury",
        "data": {"entry": i, "amount": f"{i % 997}.{i % 100:02d}", "memo": memo},
        "sequence": i,
    }


# The demo record witnesses each example namespace requires (examples/namespaces.yaml).
EXAMPLE_WITNESSES: dict[str, tuple[str, ...]] = {
    "dao:vaultmesh": ("did:vm:arbiter:prod-us-east-1", "did:vm:arbiter:prod-eu-west-1"),
    "fin:clearing": (
        "did:vm:arbiter:prod-clearing-a",
        "did:vm:arbiter:prod-clearing-b",
        "did:vm:arbiter:prod-clearing-c",
    ),
}


def example_record(namespace: str, i: int, *, timestamp: int) -> Record:
    """A ``ledger.append`` record that the example namespace ``namespace`` admits,
    by the demo actor with the demo witnesses it requires."""
    from remembrancer.demo.keys import demo_key

    witnesses = [demo_key(alias) for alias in EXAMPLE_WITNESSES[namespace]]
    return make_record(namespace, "ledger.append@1.0.0", ledger_payload(i), demo_key("did:vm:actor:demo"),
                       witnesses, timestamp=timestamp)  # fmt: skip
