"""A stream of realistic signed records for the seed's two example namespaces.

Each record is signed by an actor and the record witnesses its namespace
requires, all with the **public** demo keys (:mod:`remembrancer.demo.keys`),
and uses the schemas the namespace allows:

- ``dao:vaultmesh``: treasury transfers (``ledger.append``), proposals moving
  through their workflow (``workflow.transition``), and votes cast by the
  arbiters (``vote.cast``; the voter is the actor, the two other arbiters
  are its record witnesses, since an actor's own signature never counts
  towards the witness quorum);
- ``fin:clearing``: sequencer batch commitments (``sequencer.commit``),
  indexer checkpoints of a source chain (``indexer.checkpoint``) and
  settlement entries (``ledger.append``), witnessed by the three clearing
  arbiters.

The content is made up but coherent: amounts, batch chains, block heights
and proposal lifecycles follow from a seed and a sequence number, so two
streams with different seeds never repeat each other's records.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

from remembrancer.core.keys import SigningKey
from remembrancer.core.record import Record
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import EXAMPLE_WITNESSES, make_record

NAMESPACES = ("dao:vaultmesh", "fin:clearing")
ACTOR = "did:vm:actor:demo"
ARBITERS = (
    "did:vm:arbiter:prod-us-east-1",
    "did:vm:arbiter:prod-eu-west-1",
    "did:vm:arbiter:prod-dao-suite",
)
GRANTEES = ("grant:indexer-guild", "grant:audit-collective", "vendor:hosting", "grant:research",
            "vendor:legal", "grant:community-events")  # fmt: skip
STATES = ("draft", "submitted", "voting", "approved", "executed")
CHOICES = ("for", "for", "for", "against", "abstain")


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def _number(seed: str, i: int, what: str, modulo: int) -> int:
    return int.from_bytes(_digest(seed, i, what)[:8], "big") % modulo


class Workload:
    """Records for one node: ``next()`` alternates between the two namespaces
    and, within each, between its kinds of record.  ``seed`` (e.g. the node's
    name) and ``start`` (e.g. the log size already reached) make the stream
    distinct and let it continue where a previous run stopped."""

    def __init__(self, seed: str, start: int = 0) -> None:
        self.seed = seed
        self.n = start
        self._keys: dict[str, SigningKey] = {}

    def key(self, alias: str) -> SigningKey:
        if alias not in self._keys:
            self._keys[alias] = demo_key(alias)
        return self._keys[alias]

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        return self.next()

    def next(self, timestamp: int | None = None) -> Record:
        """The next record, stamped ``timestamp`` (default: now)."""
        i = self.n
        self.n += 1
        now = int(time.time()) if timestamp is None else timestamp
        namespace = NAMESPACES[i % 2]
        j = i // 2
        if namespace == "dao:vaultmesh":
            return self._dao(j, now)
        return self._clearing(j, now)

    def _witnesses(self, namespace: str, *, besides: str | None = None) -> list[SigningKey]:
        aliases = EXAMPLE_WITNESSES[namespace] if besides is None else tuple(
            a for a in ARBITERS if a != besides
        )  # fmt: skip
        return [self.key(a) for a in aliases]

    def _dao(self, j: int, now: int) -> Record:
        ns, s = "dao:vaultmesh", self.seed
        kind = j % 4
        proposal = j // 8
        if kind in (0, 2):
            cents = 5_000 + _number(s, j, "amount", 2_500_000)
            payload: dict[str, Any] = {
                "stream": "treasury",
                "data": {"kind": "transfer", "from": "vaultmesh:treasury",
                         "to": GRANTEES[_number(s, j, "to", len(GRANTEES))],
                         "asset": "USDC", "amount": f"{cents // 100}.{cents % 100:02d}",
                         "reference": f"{s}-tx-{j}"},
                "sequence": j,
                "observedAt": now,
            }  # fmt: skip
            return make_record(ns, "ledger.append@1.0.0", payload, self.key(ACTOR),
                               self._witnesses(ns), timestamp=now)  # fmt: skip
        if kind == 1:
            step = (j // 4) % (len(STATES) - 1)
            payload = {
                "instanceId": str(
                    uuid.UUID(bytes=_digest(s, "proposal", proposal)[:16], version=4)
                ),
                "fromState": STATES[step],
                "toState": STATES[step + 1],
                "context": {"proposal": f"VMP-{s}-{proposal}", "title": "Fund the next milestone"},
                "approvals": [{"actor": self.key(a).did} for a in ARBITERS[: 1 + step % 3]],
            }
            return make_record(ns, "workflow.transition@1.0.0", payload, self.key(ACTOR),
                               self._witnesses(ns), timestamp=now)  # fmt: skip
        voter = ARBITERS[(j // 4) % len(ARBITERS)]
        payload = {
            "proposalId": f"VMP-{s}-{proposal}",
            "choice": CHOICES[_number(s, j, "choice", len(CHOICES))],
            "weight": str(1_000 + _number(s, j, "weight", 9_000)),
            "ballotId": str(uuid.UUID(bytes=_digest(s, "ballot", j)[:16], version=4)),
        }
        return make_record(ns, "vote.cast@1.0.0", payload, self.key(voter),
                           self._witnesses(ns, besides=voter), timestamp=now)  # fmt: skip

    def _clearing(self, j: int, now: int) -> Record:
        ns, s = "fin:clearing", self.seed
        kind = j % 5
        if kind in (0, 3):
            payload: dict[str, Any] = {
                "batchCid": "bafkrei" + _digest(s, "batch", j).hex()[:52],
                "transactionCount": 50 + _number(s, j, "txs", 950),
                "parentBatchRoot": "0x" + _digest(s, "batch", j - 1).hex(),
                "sealedAt": now,
            }
            schema = "sequencer.commit@1.0.0"
        elif kind in (1, 4):
            height = 21_000_000 + j * 3
            payload = {
                "viewId": f"{s}-mainnet-view",
                "sourceChain": "eip155:1",
                "blockHeight": height,
                "blockHash": "0x" + _digest(s, "block", height).hex(),
                "coveredStateRoot": "0x" + _digest(s, "state", height).hex(),
                "coveragePercent": 100,
            }
            schema = "indexer.checkpoint@1.0.0"
        else:
            cents = 100_000 + _number(s, j, "net", 90_000_000)
            payload = {
                "stream": "settlements",
                "data": {"kind": "net-settlement", "batch": "bafkrei" + _digest(s, "batch", j - 2).hex()[:52],
                         "asset": "EURC", "net": f"{cents // 100}.{cents % 100:02d}",
                         "members": 3 + _number(s, j, "members", 12)},
                "sequence": j,
                "observedAt": now,
            }  # fmt: skip
            schema = "ledger.append@1.0.0"
        return make_record(ns, schema, payload, self.key(ACTOR), self._witnesses(ns),
                           timestamp=now)  # fmt: skip
