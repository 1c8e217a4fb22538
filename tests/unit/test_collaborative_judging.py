"""A member's own judgement of an aggregate claim against its deadline
(remembrancer.federation.collaborative; docs/spec/aggregate-anchor.md).

A claim that reached the member before the deadline is judged to the end,
even when the member's rail takes past the deadline: giving up on it would
score an on-time coordinator as having missed and put the checkpoint in a
second aggregate.  The hold is bounded (``EpochClock.judging_grace``), and a
claim that arrives after the deadline holds nothing.

The rail is the development TSA, real; its ``verify`` is held on an event so
the clock can be moved while the member is judging.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest

from remembrancer.anchoring.base import RailRegistry, Verdict
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.core.aggregation import AggregateAnchor, AggregationTree, EpochClock
from remembrancer.core.anchor import Anchor, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note
from remembrancer.federation.collaborative import CollaborativeAnchoring, Pending
from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.storage.memory import MemoryStore
from remembrancer.testing.peerview import NoInbox, RegistryPeers

EPOCH = 10
E = 100  # the epoch delegated to
TARGET = "rfc3161:tsa"
ORIGIN = "me.test/dao:vaultmesh"
ME, COORDINATOR = SigningKey.generate(), SigningKey.generate()
DEADLINE = EpochClock(EPOCH).deadline(E)
GRACE = EpochClock(EPOCH).judging_grace


@dataclass
class _Scheduler:
    delegate: Any = None
    sequencer: Any = field(  # hosts no namespace
        default_factory=lambda: SimpleNamespace(namespaces=SimpleNamespace(current=dict))
    )
    added: list[tuple[str, int, str]] = field(default_factory=list)
    direct: list[tuple[str, str]] = field(default_factory=list)

    async def add_anchor(self, namespace: str, size: int, checkpoint: bytes, claim: Anchor,
                         verdict: Verdict) -> Anchor:  # fmt: skip
        self.added.append((namespace, size, verdict.outcome))
        return claim

    async def anchor_direct(self, namespace: str, level: str) -> str:
        self.direct.append((namespace, level))
        return "submitted"


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RailRegistry]:
    base = tmp_path_factory.mktemp("tsa")
    with DevTsaServer(DevTsa(base)) as server:
        yield RailRegistry(
            {"rfc3161": {"tsa": {"url": server.url, "trust_bundle": str(base / "ca.pem")}}}
        )


class _Held:
    """The rail's own ``verify``, held until released."""

    def __init__(self, verify: Any) -> None:
        self.verify, self.entered, self.release = verify, threading.Event(), threading.Event()

    def __call__(self, anchor: Anchor, ctx: Any) -> Verdict:
        self.entered.set()
        assert self.release.wait(30), "the test never released the rail"
        verdict: Verdict = self.verify(anchor, ctx)
        return verdict


def member(rails: RailRegistry, clock: list[float]) -> tuple[CollaborativeAnchoring, RegistryPeers,
                                                             _Scheduler, Pending, AggregateAnchor]:  # fmt: skip
    """A member with one checkpoint delegated to the coordinator of epoch E,
    and that coordinator's true claim for it (a real token over the root)."""
    registry = Registry("test-fed", 1, "collaborative", (
        Peer(ME.did, "http://127.0.0.1:9", ME.public, "active", frozenset({"anchor"})),  # type: ignore[arg-type]
        Peer(COORDINATOR.did, "http://127.0.0.1:9", COORDINATOR.public, "active",  # type: ignore[arg-type]
             frozenset({"coordinator"})),
    ), anchor_epoch_seconds=EPOCH)  # fmt: skip
    peers, scheduler = RegistryPeers(registry, ME.did), _Scheduler()
    collab = CollaborativeAnchoring(
        NoInbox(), peers, None, None, ME, MemoryStore(), rails, {},  # type: ignore[arg-type]
        scheduler, clock=lambda: clock[0],  # type: ignore[arg-type]
    )  # fmt: skip
    assert collab.coordinator(TARGET, E) == COORDINATOR.did
    note = sign_checkpoint(Checkpoint(ORIGIN, 7, bytes(32)), ME)
    digest = checkpoint_digest(Note.from_bytes(note).text.encode())
    pending = Pending("dao:vaultmesh", "fast", TARGET, 7, ORIGIN, note.decode(), digest.hex(), 0,
                      E, COORDINATOR.did, DEADLINE, E * EPOCH)  # fmt: skip
    collab._pending[pending.key] = pending
    tree = AggregationTree.build([digest])
    anchor = rails.get(TARGET).submit(tree.root, now=E * EPOCH)
    claim = AggregateAnchor("test-fed", COORDINATOR.did, TARGET, E, ORIGIN, 7, digest,
                            replace(anchor, aggregation=tree.aggregation(digest)))  # fmt: skip
    return collab, peers, scheduler, pending, claim


def test_a_claim_that_came_in_time_is_judged_past_the_deadline(
    tsa: RailRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [DEADLINE - 0.5]
    collab, peers, scheduler, pending, claim = member(tsa, clock)
    held = _Held(tsa.get(TARGET).verify)
    monkeypatch.setattr(tsa.get(TARGET), "verify", held)

    async def go() -> bool:
        judging = asyncio.create_task(collab.judge(COORDINATOR.did, "dao:vaultmesh", claim, None))
        judging.add_done_callback(lambda _: held.release.set())  # never left waiting
        assert await asyncio.to_thread(held.entered.wait, 10)
        # The deadline passes while our own rail is still checking the claim.
        clock[0] = DEADLINE + 1.0
        await collab.tick()
        assert collab._pending.get(pending.key) is pending
        assert [p["judging"] for p in collab.status()["pending"]] == [True]
        held.release.set()
        accepted = await judging
        clock[0] += 0.5
        await collab.tick()
        await asyncio.gather(*collab._tasks)
        return accepted

    assert asyncio.run(go()) is True
    assert scheduler.added == [("dao:vaultmesh", 7, "verified")] and scheduler.direct == []
    assert collab._pending == {} and collab.counters["received"] == 1
    assert collab.counters["missed"] == collab.counters["fallback"] == 0
    assert peers.scored == [(COORDINATOR.did, "valid", "")]


@pytest.mark.parametrize("case", ["judged past the grace", "arrived after the deadline"])
def test_the_hold_is_bounded_and_only_for_a_claim_that_came_in_time(
    tsa: RailRegistry, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    late = case == "arrived after the deadline"
    clock = [DEADLINE + 0.1 if late else DEADLINE - 0.5]
    collab, peers, scheduler, pending, claim = member(tsa, clock)
    held = _Held(tsa.get(TARGET).verify)
    monkeypatch.setattr(tsa.get(TARGET), "verify", held)

    async def go() -> bool:
        judging = asyncio.create_task(collab.judge(COORDINATOR.did, "dao:vaultmesh", claim, None))
        assert await asyncio.to_thread(held.entered.wait, 10)
        clock[0] = DEADLINE + (0.2 if late else GRACE + 0.1)
        await collab.tick()
        assert pending.key not in collab._pending  # given up on
        held.release.set()
        accepted = await judging
        await asyncio.gather(*collab._tasks)
        return accepted

    assert asyncio.run(go()) is False
    # The coordinator is scored as having missed, and (no other coordinator)
    # the member anchors alone; the claim judged too late is not stored.
    assert scheduler.added == [] and scheduler.direct == [("dao:vaultmesh", "fast")]
    assert collab.counters["missed"] == collab.counters["fallback"] == 1
    assert peers.scored == [(COORDINATOR.did, "missed", "")]
