"""Which source anti-entropy asks first (issue 19): verified state, not claims;
a source that stalled or lied goes last and is scored."""

from __future__ import annotations

import asyncio
from typing import Any

from remembrancer.anchoring.base import RailRegistry
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.federation.antientropy.model import ReplicaSpec
from remembrancer.federation.antientropy.replicator import Replicator
from remembrancer.federation.registry.model import Peer
from remembrancer.storage.memory import MemoryStore
from remembrancer.testing.peerview import NoInbox, RecordingPeers, StaticRegistry

ORIGIN = "host.test/dao:vaultmesh"
KEYS = {name: SigningKey.generate() for name in ("self", "honest", "staller", "other")}
DID = {name: k.did for name, k in KEYS.items()}


def _replicator() -> tuple[Replicator, RecordingPeers, list[float]]:
    peers = {DID[name]: Peer(DID[name], f"http://{name}.test:8080", k.public, "active",
                        frozenset({"witness"})) for name, k in KEYS.items()}  # fmt: skip
    view = RecordingPeers(StaticRegistry(peers), DID["self"])
    now = [1000.0]
    spec = ReplicaSpec(ORIGIN, (format_vkey(ORIGIN, KEYS["honest"].public),))
    rep = Replicator(NoInbox(), view, None, None, None, MemoryStore(), [spec],  # type: ignore[arg-type]
                     RailRegistry(), clock=lambda: now[0], interval=5.0)  # fmt: skip
    return rep, view, now


def _order(rep: Replicator) -> tuple[list[str], list[str]]:
    hosts, mirrors = rep._sources(ORIGIN)
    name = {v: k for k, v in DID.items()}
    return [name[s.peer] for s in hosts if s.peer], [name[s.peer] for s in mirrors if s.peer]


def test_sources_are_ordered_by_verified_state_not_by_claims() -> None:
    rep, _, now = _replicator()
    rep._claims[ORIGIN] = {DID["honest"]: (10, "sha256:aa", now[0]),
                           DID["staller"]: (1_000_000, "sha256:bb", now[0])}  # fmt: skip
    # Nothing verified from anyone yet: the claims order them.
    assert _order(rep) == (["staller", "honest"], ["other"])
    # A checkpoint of the log verified from the honest host: it goes first,
    # whatever the staller claims.
    rep.engine.verified_from[(ORIGIN, DID["honest"])] = 10
    assert _order(rep)[0] == ["honest", "staller"]
    assert all(s.deadline == rep.fetch_deadline for s in rep._sources(ORIGIN)[0])


def test_a_source_that_stalls_is_scored_and_tried_last_for_a_growing_backoff() -> None:
    rep, view, now = _replicator()
    rep._claims[ORIGIN] = {DID["honest"]: (10, "sha256:aa", now[0]),
                           DID["staller"]: (1_000_000, "sha256:bb", now[0])}  # fmt: skip
    asyncio.run(rep._fault(DID["staller"], stalled=True))
    assert view.scored == [(DID["staller"], "missed", "")]
    assert _order(rep)[0] == ["honest", "staller"]
    until = rep._faults[DID["staller"]][1]
    assert until == now[0] + 5.0 * 2
    asyncio.run(rep._fault(DID["staller"], stalled=False))  # bad data: blamed by the engine
    assert len(view.scored) == 1
    assert rep._faults[DID["staller"]][1] == now[0] + 5.0 * 4
    now[0] += 21  # the backoff is over: the claim orders it again
    assert _order(rep)[0] == ["staller", "honest"]


def test_a_sync_over_its_deadline_is_cut_off() -> None:
    import pytest

    from remembrancer.core.errors import PeerError

    rep, _, _ = _replicator()
    rep.sync_deadline = 0.2

    async def slow(origin: str, source: Any) -> bool:
        await asyncio.sleep(30)  # a source that serves every fetch just in time, for ever
        return True

    rep.engine.sync = slow  # type: ignore[method-assign]
    source = rep._sources(ORIGIN)[1][0]
    with pytest.raises(PeerError) as e:
        asyncio.run(asyncio.wait_for(rep._sync_one(ORIGIN, source), 10))
    assert e.value.code == "replica_sync_timeout"
    assert rep.engine.errors[ORIGIN]["code"] == "replica_sync_timeout"
