"""The resource budget of issue 19, cases 1 and 5, one guard per test
(docs/operations.md, "Resource budget: storage and anchoring").

Storage: anchor evidence is capped per rail (``anchor_evidence_too_large``);
the anchors nobody verified here are bounded per (peer, log) and dropped
first, oldest checkpoint first; bundles relay only what this node verified;
replica anchors are read a page at a time from their key range.
Anchoring: a coordinator takes only checkpoints of logs the sender hosts
(its registry key, on a log this node follows), never one it aggregated
already, and submits at most ``anchors_per_epoch`` aggregates per epoch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from remembrancer.anchoring.base import RailRegistry
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.core.aggregation import EpochClock
from remembrancer.core.anchor import Anchor, AnchorReceipt, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import ConfigError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, format_vkey, parse_vkey
from remembrancer.federation.antientropy.claims import ClaimBudget, evidence_size
from remembrancer.federation.antientropy.engine import ReplicaEngine
from remembrancer.federation.antientropy.model import (
    ANCHOR_SCOPE,
    UNVERIFIED_SCOPE,
    ReplicaSpec,
)
from remembrancer.federation.collaborative import CollaborativeAnchoring, _Member
from remembrancer.federation.protocol.contents import CheckpointContent
from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.federation.settings import BudgetSettings, FederationSettings
from remembrancer.storage.memory import MemoryStore
from remembrancer.testing.peerview import NoInbox, RegistryPeers

ORIGIN = "alpha.test/dao:vaultmesh"
KEY = SigningKey.generate()
SPEC = ReplicaSpec(ORIGIN, (format_vkey(ORIGIN, KEY.public),))
NOW = 1_764_100_000
ALIEN = "rfc3161:elsewhere"  # a rail no node here has: claims on it stay unverified


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def note(size: int, key: SigningKey = KEY, origin: str = ORIGIN) -> bytes:
    root = checkpoint_digest(f"{origin}\n{size}\n".encode())  # any 32 bytes will do
    return sign_checkpoint(Checkpoint(origin, size, root), key)


def claim(size: int, *, target: str = ALIEN, evidence_bytes: int = 1000, tx: str = "tx",
          status: str = "submitted") -> AnchorReceipt:  # fmt: skip
    n = note(size)
    digest = checkpoint_digest(Note.from_bytes(n).text.encode())
    anchor = Anchor(target, digest, status, f"{tx}{size}", anchor_ts=NOW,  # type: ignore[arg-type]
                    evidence={"blob": "x" * evidence_bytes})  # fmt: skip
    return AnchorReceipt(ORIGIN, size, n, digest, (anchor,))


def engine(store: MemoryStore, rails: RailRegistry | None = None,
           budget: ClaimBudget | None = None) -> ReplicaEngine:  # fmt: skip
    return ReplicaEngine(store, [SPEC], rails or RailRegistry(), clock=lambda: NOW, budget=budget)


def stored_sizes(store: MemoryStore) -> list[int]:
    return sorted(int(k.rsplit("/", 1)[1]) for k in store.list_state(ANCHOR_SCOPE))


def stored_bytes(store: MemoryStore) -> int:
    return sum(len(k) + len(v) for k, v in store.list_state(ANCHOR_SCOPE).items())


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RailRegistry]:
    base = tmp_path_factory.mktemp("tsa")
    with DevTsaServer(DevTsa(base / "a")) as a:
        yield RailRegistry(
            {"rfc3161": {"tsa": {"url": a.url, "trust_bundle": str(base / "a" / "ca.pem")}}}
        )


def verified_claim(rails: RailRegistry, size: int) -> AnchorReceipt:
    n = note(size)
    digest = checkpoint_digest(Note.from_bytes(n).text.encode())
    anchor = rails.get("rfc3161:tsa").submit(digest, now=NOW)
    assert anchor.status == "verified"
    return AnchorReceipt(ORIGIN, size, n, digest, (anchor,))


# --- storage: the evidence cap per rail ---------------------------------------------------


def test_evidence_over_its_rails_cap_is_refused_with_its_own_code_and_nothing_kept() -> None:
    store = MemoryStore()
    eng = engine(store)
    big = claim(10, evidence_bytes=150_000)
    report = run(eng.merge_claims([big.to_dict()], sender="did:key:mallory"))
    assert report.refused == ["anchor_evidence_too_large"] and report.accepted == 0
    assert store.list_state(ANCHOR_SCOPE) == {} and store.list_state(UNVERIFIED_SCOPE) == {}
    # Under the cap, the same claim is kept (unverified: no rail for it here).
    ok = claim(10, evidence_bytes=20_000)
    assert run(eng.merge_claims([ok.to_dict()], sender="did:key:mallory")).accepted == 1


def test_the_cap_is_per_rail_and_configurable() -> None:
    budget = ClaimBudget(evidence_bytes={"rfc3161": 4096, "eip155": 2048, "btc": 4096})
    eng = engine(MemoryStore(), budget=budget)
    evm = claim(10, target="eip155:1", evidence_bytes=3000)
    tsa = claim(11, target="rfc3161:x", evidence_bytes=3000)
    assert evidence_size(evm.anchors[0]) > 2048
    assert run(eng.merge_claims([evm.to_dict()], sender="did:key:p")).refused == [
        "anchor_evidence_too_large"
    ]
    assert run(eng.merge_claims([tsa.to_dict()], sender="did:key:p")).accepted == 1
    # The typed settings carry the same defaults as the engine.
    b = FederationSettings.model_validate({"file": "f.yaml"}).budget
    d = ClaimBudget()
    assert (b.evidence_bytes.rfc3161, b.evidence_bytes.eip155, b.evidence_bytes.btc) == (
        d.evidence_bytes["rfc3161"], d.evidence_bytes["eip155"], d.evidence_bytes["btc"])  # fmt: skip
    assert (b.unverified_claims_per_peer_log, b.unverified_bytes_per_peer_log) == (
        d.unverified_claims, d.unverified_bytes)  # fmt: skip


@pytest.mark.parametrize(
    "doc",
    [
        {"evidence_bytes": {"rfc3161": 10}},
        {"evidence_bytes": {"tron": 4096}},
        {"unverified_claims_per_peer_log": 0},
        {"anchors_per_epoch": 0},
        {"anchors_per_epoch": "many"},
    ],
)
def test_a_bad_budget_setting_is_refused(doc: dict[str, Any]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BudgetSettings.model_validate(doc)


# --- storage: unverified claims bounded per (peer, log), dropped first -------------------------


def test_unverified_claims_are_bounded_per_peer_and_log_oldest_dropped_first() -> None:
    store = MemoryStore()
    eng = engine(store, budget=ClaimBudget(unverified_claims=8, unverified_bytes=1 << 30))
    # An honest peer's one unverified claim, then a flood from Mallory.
    assert run(
        eng.merge_claims([claim(1, tx="honest").to_dict()], sender="did:key:honest")
    ).accepted
    for size in range(100, 140):
        run(eng.merge_claims([claim(size, tx="m").to_dict()], sender="did:key:mallory"))
    # Mallory keeps her 8 newest; the honest peer's claim is not hers to evict.
    assert stored_sizes(store) == [1, *range(132, 140)]
    index = store.list_state(UNVERIFIED_SCOPE)
    assert len([k for k in index if "|did:key:mallory|" in k]) == 8


def test_unverified_claims_are_bounded_in_bytes_too() -> None:
    store = MemoryStore()
    cap = 100_000
    eng = engine(store, budget=ClaimBudget(unverified_claims=1000, unverified_bytes=cap))
    for size in range(1, 41):
        run(eng.merge_claims([claim(size, evidence_bytes=30_000).to_dict()], sender="did:key:m"))
    kept = stored_sizes(store)
    assert kept == list(range(41 - len(kept), 41)) and 1 <= len(kept) <= 3
    assert stored_bytes(store) < cap + 40_000


def test_anchors_verified_here_are_never_dropped_by_the_budget(tsa: RailRegistry) -> None:
    store = MemoryStore()
    eng = engine(store, rails=tsa, budget=ClaimBudget(unverified_claims=2))
    good = verified_claim(tsa, 5)
    assert run(eng.merge_claims([good.to_dict()], sender="did:key:m")).accepted == 1
    # Her own unverified claim on the same checkpoint, then a flood.
    run(eng.merge_claims([claim(5, tx="u").to_dict()], sender="did:key:m"))
    for size in range(10, 20):
        run(eng.merge_claims([claim(size).to_dict()], sender="did:key:m"))
    assert stored_sizes(store) == [5, 18, 19]
    (view,) = eng.anchor_view(ORIGIN, limit=1)
    assert [a["txRef"] for a in view["anchors"]] == [good.anchors[0].tx_ref]


# --- storage: relay only what this node verified --------------------------------------------


def test_bundles_relay_only_anchors_verified_here(tsa: RailRegistry) -> None:
    store = MemoryStore()
    eng = engine(store, rails=tsa)
    run(eng.merge_claims([claim(3).to_dict()], sender="did:key:m"))  # a rail we lack
    good = verified_claim(tsa, 4)
    run(eng.merge_claims([good.to_dict()], sender="did:key:h"))
    run(eng.merge_claims([claim(4, tx="extra").to_dict()], sender="did:key:m"))
    # Both are kept and shown ...
    assert [v["size"] for v in eng.anchor_view(ORIGIN)] == [3, 4]
    assert len(eng.anchor_view(ORIGIN)[1]["anchors"]) == 2
    # ... but only the verified anchor is relayed.
    items = eng.bundle_items("dao:vaultmesh", None, None)
    assert [(d["size"], [a["txRef"] for a in d["anchors"]]) for _, d in items] == [
        (4, [good.anchors[0].tx_ref])
    ]


# --- storage: paged, indexed reads -------------------------------------------------------------


class NoWholeScope(MemoryStore):
    """A store that refuses whole-scope reads of the anchor claims."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: list[int] = []

    def list_state(self, scope: str) -> dict[str, bytes]:
        assert scope not in (ANCHOR_SCOPE, UNVERIFIED_SCOPE), f"whole-scope read of {scope}"
        return super().list_state(scope)

    def list_state_page(self, scope: str, *, prefix: str = "", after: str | None = None,
                        limit: int = 100) -> list[tuple[str, bytes]]:  # fmt: skip
        page = super().list_state_page(scope, prefix=prefix, after=after, limit=limit)
        if scope == ANCHOR_SCOPE:
            self.pages.append(len(page))
        return page


def test_replica_anchors_are_read_a_page_at_a_time_from_their_key_range() -> None:
    store = NoWholeScope()
    eng = engine(store, budget=ClaimBudget(unverified_claims=1000, unverified_bytes=1 << 30))
    for size in range(1, 31):
        run(eng.merge_claims([claim(size, evidence_bytes=10).to_dict()], sender="did:key:p"))
    # Another log's claims share the scope but not the key range.
    store.put_state(ANCHOR_SCOPE, f"{ORIGIN}x/{5:020d}", b"{}")
    store.pages.clear()
    first = eng.anchor_view(ORIGIN, limit=10)
    assert [v["size"] for v in first] == list(range(1, 11)) and store.pages == [10]
    second = eng.anchor_view(ORIGIN, after=first[-1]["size"], limit=10)
    assert [v["size"] for v in second] == list(range(11, 21))
    assert [v["size"] for v in eng.anchor_view(ORIGIN)] == list(range(1, 31))


# --- anchoring: hosted logs only, fresh checkpoints only, a budget per epoch ---------------------


EPOCH = 10


class _Scheduler:
    delegate: Any = None


ME, MALLORY, HONEST = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()


def coordinator(rails: RailRegistry, *, anchors_per_epoch: int = 2,
                clock: list[float]) -> tuple[CollaborativeAnchoring, RegistryPeers]:  # fmt: skip
    def peer(k: SigningKey, roles: set[str]) -> Peer:
        return Peer(k.did, "http://127.0.0.1:9", k.public, "active", frozenset(roles))  # type: ignore[arg-type]

    registry = Registry("test-fed", 1, "collaborative", (
        peer(ME, {"coordinator", "anchor"}), peer(MALLORY, {"witness"}), peer(HONEST, {"witness"}),
    ), anchor_epoch_seconds=EPOCH)  # fmt: skip
    peers = RegistryPeers(registry, ME.did)
    honest_origin = "honest.test/dao:vaultmesh"
    verifiers = {honest_origin: [parse_vkey(format_vkey(honest_origin, HONEST.public))]}
    collab = CollaborativeAnchoring(
        NoInbox(), peers, None, None, ME, MemoryStore(), rails, verifiers,  # type: ignore[arg-type]
        _Scheduler(), clock=lambda: clock[0], anchors_per_epoch=anchors_per_epoch,  # type: ignore[arg-type]
    )  # fmt: skip
    return collab, peers


def member() -> _Member:
    return _Member(HONEST.did, "dao:vaultmesh", "honest.test/dao:vaultmesh", 1)


def content(key: SigningKey, origin: str, size: int, epoch: int,
            target: str = "rfc3161:tsa") -> CheckpointContent:  # fmt: skip
    return CheckpointContent(origin, note(size, key, origin).decode(), origin.rsplit("/", 1)[1],
                             target, epoch)  # fmt: skip


def test_a_coordinator_takes_only_logs_the_sender_hosts(tsa: RailRegistry) -> None:
    clock = [EPOCH * 100 + 1.0]
    collab, _ = coordinator(tsa, clock=clock)
    # Mallory's self-signed checkpoint of a log nobody here follows: refused.
    with pytest.raises(VerificationError) as e:
        collab._take(MALLORY.did, content(MALLORY, "mallory.test/dao:x", 7, 100))
    assert e.value.code == "aggregate_log_not_hosted"
    # Nor may she hand over the honest log under her own key ...
    with pytest.raises(VerificationError) as e:
        collab._take(MALLORY.did, content(MALLORY, "honest.test/dao:vaultmesh", 7, 100))
    assert e.value.code == "aggregate_log_not_hosted"
    # ... or the honest log's own checkpoint (signed by its host, not by her).
    with pytest.raises(VerificationError) as e:
        collab._take(MALLORY.did, content(HONEST, "honest.test/dao:vaultmesh", 7, 100))
    assert e.value.code == "aggregate_checkpoint_unsigned"
    assert collab._collect == {}
    # The honest host's checkpoint of the log this node follows is taken.
    collab._take(HONEST.did, content(HONEST, "honest.test/dao:vaultmesh", 7, 100))
    assert [len(b) for b in collab._collect.values()] == [1]


def test_a_checkpoint_already_aggregated_is_not_anchored_again(tsa: RailRegistry) -> None:
    clock = [EPOCH * 100 + 1.0]
    collab, _ = coordinator(tsa, clock=clock)
    collab._aggregated[("honest.test/dao:vaultmesh", "rfc3161:tsa")] = 7
    for size in (6, 7):
        with pytest.raises(ConfigError) as e:
            collab._take(HONEST.did, content(HONEST, "honest.test/dao:vaultmesh", size, 100))
        assert e.value.code == "aggregate_checkpoint_stale"
    collab._take(HONEST.did, content(HONEST, "honest.test/dao:vaultmesh", 8, 100))


def test_aggregates_per_epoch_are_capped_and_the_rest_waits_for_the_next_epoch(
    tsa: RailRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [EPOCH * 100 + 1.0]
    collab, _ = coordinator(tsa, anchors_per_epoch=1, clock=clock)
    made: list[tuple[str, int, int]] = []

    async def aggregate(target: str, epoch: int, members: Any) -> None:
        made.append((target, epoch, EpochClock(EPOCH).epoch(clock[0])))

    monkeypatch.setattr(collab, "_aggregate", aggregate)
    targets = ["rfc3161:a", "rfc3161:b", "rfc3161:c"]
    for t in targets:  # three collections of epoch 100, as if taken before its cut-off
        collab._collect[(t, 100)] = {b"\x00" * 32: member()}

    async def go() -> None:
        epochs = EpochClock(EPOCH)
        # After epoch 100's cut-off (in 101), again in 101, then past its deadline (in 102).
        for now in (epochs.cutoff(100) + 0.1, epochs.cutoff(100) + 0.2,
                    epochs.deadline(100) + 0.1, epochs.deadline(100) + 0.2):  # fmt: skip
            clock[0] = now
            await collab.tick()
            await asyncio.sleep(0)
        await asyncio.gather(*collab._tasks)

    run(go())
    # One aggregate in epoch 101, one in 102; the third waited past its members'
    # deadline (the end of epoch 101) and was dropped, never anchored.
    assert [m[1:] for m in made] == [(100, 101)] and made[0][0] in targets
    assert collab.counters["deferred"] == 2 and collab._collect == {}


def test_within_an_epoch_the_collection_with_more_members_goes_first(
    tsa: RailRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    collab, _ = coordinator(tsa, anchors_per_epoch=1, clock=clock)
    made: list[str] = []

    async def aggregate(target: str, epoch: int, members: Any) -> None:
        made.append(target)

    monkeypatch.setattr(collab, "_aggregate", aggregate)
    mallory = _Member(MALLORY.did, "dao:x", "mallory.test/dao:x", 1)
    for t in ("rfc3161:a", "rfc3161:b", "rfc3161:c", "rfc3161:d"):
        collab._collect[(t, 100)] = {bytes([i]) * 32: mallory for i in range(5)}
    collab._collect[("rfc3161:z", 100)] = {b"\x00" * 32: member(), b"\x01" * 32: mallory}

    async def go() -> None:
        clock[0] = EpochClock(EPOCH).cutoff(100) + 0.1
        await collab.tick()
        await asyncio.gather(*collab._tasks)

    run(go())
    assert made == ["rfc3161:z"]


def test_a_waiting_aggregate_is_made_in_the_next_epoch_within_its_deadline(
    tsa: RailRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    collab, _ = coordinator(tsa, anchors_per_epoch=1, clock=clock)
    made: list[tuple[str, int]] = []

    async def aggregate(target: str, epoch: int, members: Any) -> None:
        made.append((target, EpochClock(EPOCH).epoch(clock[0])))

    monkeypatch.setattr(collab, "_aggregate", aggregate)
    collab._collect[("rfc3161:a", 100)] = {b"\x00" * 32: member()}
    collab._collect[("rfc3161:b", 101)] = {b"\x01" * 32: member()}

    async def go() -> None:
        epochs = EpochClock(EPOCH)
        # After epoch 100's cut-off, after epoch 101's (now in epoch 102), then later in 102.
        for now in (epochs.cutoff(100) + 0.1, epochs.cutoff(101) + 0.1, epochs.cutoff(101) + 0.5):
            clock[0] = now
            await collab.tick()
            await asyncio.sleep(0)
        await asyncio.gather(*collab._tasks)

    run(go())
    # Epoch 101 spends its one anchor on epoch 100's collection; epoch 101's
    # collection waits and is made in epoch 102 (its deadline is the end of 102).
    assert made == [("rfc3161:a", 101), ("rfc3161:b", 102)]


def test_the_index_books_the_bytes_of_the_unverified_anchors() -> None:
    # The index value is the bytes of the unverified anchors, as the budget counts them.
    store = MemoryStore()
    eng = engine(store)
    c = claim(3, evidence_bytes=500)
    run(eng.merge_claims([c.to_dict()], sender="did:key:p"))
    (value,) = store.list_state(UNVERIFIED_SCOPE).values()
    assert json.loads(value)["bytes"] > 500
