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
