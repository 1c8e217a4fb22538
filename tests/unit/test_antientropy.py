"""Anti-entropy (remembrancer.federation.antientropy package): the anchor merge, bundle
packing, and the replica engine against in-memory sources (tiled trees) and
the development TSA: nothing is kept before it verifies, bad sources are
blamed, forks become equivocation evidence."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.anchoring.base import RailRegistry
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.core.anchor import Anchor, AnchorReceipt, checkpoint_digest, resolve_conflicts
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import (
    ConfigError,
    InconsistencyError,
    NotFoundError,
    PeerError,
    VerificationError,
)
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, format_vkey
from remembrancer.core.tiles import Tile, TileTree, encode_entry_bundle, tiles_for_size
from remembrancer.federation.antientropy import claims
from remembrancer.federation.antientropy import engine as engine_module
from remembrancer.federation.antientropy.claims import merge_anchors, pack_bundles
from remembrancer.federation.antientropy.engine import ReplicaEngine
from remembrancer.federation.antientropy.model import ANCHOR_SCOPE, MIRROR_PREFIX, ReplicaSpec
from remembrancer.federation.evidence.equivocation import EquivocationEvidence, verify_equivocation
from remembrancer.federation.protocol.wire import MAX_MESSAGE_BYTES, Message
from remembrancer.storage.memory import MemoryStore

ORIGIN = "alpha.test/dao:vaultmesh"
KEY = SigningKey.generate()
SPEC = ReplicaSpec(ORIGIN, (format_vkey(ORIGIN, KEY.public),))
MIRROR = replace(SPEC, mirror=True)
NOW = 1_764_100_000


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- a log and a source serving it --------------------------------------------


@dataclass
class Log:
    entries: list[bytes] = field(default_factory=list)

    def grow(self, n: int) -> Log:
        self.entries += [f"entry {len(self.entries) + i} ".encode() * 3 for i in range(n)]
        return self

    def tree(self) -> TileTree:
        t = TileTree()
        t.append_many(self.entries)
        return t

    def note(self, key: SigningKey = KEY) -> bytes:
        t = self.tree()
        return sign_checkpoint(Checkpoint(ORIGIN, t.size, t.root()), key)


@dataclass
class TreeSource:
    """A source serving ``log`` (tiles of its current tree); ``tamper`` alters an
    entry in the bundles served, ``bad_tiles`` corrupts every hash tile."""

    log: Log
    note: bytes = b""
    tamper: int | None = None
    bad_tiles: bool = False
    peer: str | None = "did:key:source"
    name: str = "memory"
    fetched: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.note = self.note or self.log.note()

    async def checkpoint(self) -> bytes:
        return self.note

    async def tiles(self, tiles: list[Tile]) -> list[bytes]:
        tree = self.log.tree()
        out = [tree.tile(t) for t in tiles]
        self.fetched += [t.path() for t in tiles]
        return [
            bytes(32 * t.width) if self.bad_tiles else b for t, b in zip(tiles, out, strict=True)
        ]

    async def bundles(self, tiles: list[Tile]) -> list[bytes]:
        out = []
        for t in tiles:
            first = t.index * 256
            got = list(self.log.entries[first : first + t.width])
            if self.tamper is not None and first <= self.tamper < first + t.width:
                got[self.tamper - first] += b"!"
            out.append(encode_entry_bundle(got))
        self.fetched += [t.entries_path() for t in tiles]
        return out


@dataclass
class Calls:
    blamed: list[tuple[str, str]] = field(default_factory=list)
    reported: list[EquivocationEvidence] = field(default_factory=list)

    async def blame(self, peer: str, code: str) -> None:
        self.blamed.append((peer, code))

    async def report(self, evidence: EquivocationEvidence) -> None:
        self.reported.append(evidence)


def engine(
    store: MemoryStore, spec: ReplicaSpec, calls: Calls, rails: RailRegistry | None = None
) -> ReplicaEngine:
    return ReplicaEngine(store, [spec], rails or RailRegistry(), clock=lambda: NOW, blame=calls.blame,
                         report_equivocation=calls.report)  # fmt: skip


# --- the anchor merge ---------------------------------------------------------------


def _anchor(target: str, tx: str, status: str = "verified", ts: int | None = 100, depth: int = 0,
            root: bytes = b"\x01" * 32) -> Anchor:  # fmt: skip
    from remembrancer.core.anchor import Finality

    return Anchor(target, root, status, tx, anchor_ts=ts, finality=Finality(depth, 0, "pending"))  # type: ignore[arg-type]


anchors_st = st.lists(
    st.builds(
        _anchor,
        st.sampled_from(["rfc3161:tsa", "rfc3161:tsa2", "eip155:1", "btc:testnet"]),
        st.sampled_from(["aa", "bb", "cc", "dd"]),
        st.sampled_from(["pending", "submitted", "verified", "failed", "reorged"]),
        st.one_of(st.none(), st.integers(90, 110)),
        st.integers(0, 3),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(anchors_st, st.randoms(use_true_random=False))
def test_the_merge_is_the_same_whatever_the_order_and_grouping(
    anchors: list[Anchor], rnd: Any
) -> None:
    # The keys this node verified itself: any subset, whatever the statuses say.
    here = {a.key for a in anchors if rnd.random() < 0.5}
    once = merge_anchors(anchors, verified=here)
    shuffled = list(anchors)
    rnd.shuffle(shuffled)
    cut = rnd.randint(0, len(shuffled))
    stepwise = merge_anchors(merge_anchors(shuffled[:cut], verified=here), shuffled[cut:],
                             verified=here)  # fmt: skip
    assert stepwise == once
    assert merge_anchors(once, anchors, verified=here) == once  # idempotent
    # One version per anchor key: the greatest one; in the conflict order.
    assert len({a.key for a in once}) == len(once) == len({a.key for a in anchors})
    assert [a.key for a in once] == [a.key for a in resolve_conflicts(once, verified=here)]
    # Verified here comes first, whatever the claimed statuses.
    ranks = [a.key in here for a in once]
    assert ranks == sorted(ranks, reverse=True)
    if once:
        assert once[0].superseded_by is None
        assert all(a.superseded_by == once[0].key for a in once[1:])


def test_a_later_status_wins_whichever_arrives_first() -> None:
    submitted = _anchor("eip155:1", "0xaa", "submitted", depth=1)
    verified = _anchor("eip155:1", "0xaa", "verified", depth=3)
    here = {verified.key}
    assert merge_anchors([submitted], [verified], verified=here) == merge_anchors(
        [verified], [submitted], verified=here
    )
    assert merge_anchors([submitted], [verified], verified=here)[0].status == "verified"
    reorged = replace(verified, status="reorged")
    assert merge_anchors([reorged], [verified], verified=here)[0].status == "reorged"


def test_the_conflict_order_picks_the_winner_and_names_it() -> None:
    tsa_late = _anchor("rfc3161:tsa", "02", ts=200)
    tsa_early = _anchor("rfc3161:tsa2", "09", ts=100)
    chain = _anchor("eip155:1", "0x01", ts=300)
    pending_btc = _anchor("btc:testnet", "ff", "submitted", ts=50)
    here = {tsa_late.key, tsa_early.key, chain.key}
    merged = merge_anchors([tsa_late, pending_btc], [chain, replace(tsa_early, superseded_by="x")],
                           verified=here)  # fmt: skip
    assert [a.key for a in merged] == [chain.key, tsa_early.key, tsa_late.key, pending_btc.key]
    assert merged[0].superseded_by is None
    assert {a.superseded_by for a in merged[1:]} == {chain.key}


# --- bundles ------------------------------------------------------------------------


def test_bundles_fit_a_message_and_keep_the_oldest_first() -> None:
    items = [(t, {"type": "remembrancer.anchor-receipt/v1", "t": t, "pad": "x" * 30_000})
             for t in range(40, 0, -1)]  # fmt: skip
    bundles = pack_bundles("dao:vaultmesh", [], items, in_reply_to=7, max_messages=3)
    assert len(bundles) == 3
    sent = [a["t"] for b in bundles for a in b.anchors]
    assert sent == sorted(sent) and sent[0] == 1  # oldest first, newest left for later
    key = SigningKey.generate()
    for b in bundles:
        msg = Message.sign(key, b, federation_id="f", seq=1, timestamp=NOW, sender=key.did)
        assert len(msg.to_bytes()) <= MAX_MESSAGE_BYTES
        assert Message.parse(msg.to_bytes()).content == b
    huge = [(1, {"pad": "x" * 300_000})]
    assert pack_bundles("dao:vaultmesh", huge, []) == []
    assert pack_bundles("dao:vaultmesh", [], []) == []


# --- checkpoints and mirrored entries ------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "CHUNK_BUNDLES", 2)  # 512 entries per chunk


def _mirrored_tiles(store: MemoryStore, size: int) -> dict[str, bytes]:
    eng = ReplicaEngine(store, [MIRROR], RailRegistry())
    out = {}
    for t in tiles_for_size(size):
        out[t.path()] = eng.mirror_tile(ORIGIN, t.path())[0]
        if t.level == 0:
            out[t.entries_path()] = eng.mirror_tile(ORIGIN, t.entries_path())[0]
    return out


def test_a_mirror_catches_up_in_verified_chunks(small_chunks: None) -> None:
    log, store, calls = Log().grow(1300), MemoryStore(), Calls()
    eng = engine(store, MIRROR, calls)
    source = TreeSource(log)
    assert run(eng.sync(ORIGIN, source)) is True
    head = eng.head(ORIGIN)
    assert head is not None and (head.size, head.root, head.note) == (
        1300,
        log.tree().root(),
        source.note,
    )
    state = store.log_state(MIRROR_PREFIX + ORIGIN)
    assert state is not None and state.size == 1300
    tree = log.tree()
    want = {t.path(): tree.tile(t) for t in tiles_for_size(1300)}
    want |= {t.entries_path(): encode_entry_bundle(log.entries[t.index * 256 : t.index * 256 + t.width])
             for t in tiles_for_size(1300) if t.level == 0}  # fmt: skip
    assert _mirrored_tiles(store, 1300) == want
    # Chunks that end before the checkpoint were proven with the source's hash tiles.
    assert any(p.startswith("tile/0/") for p in source.fetched)
    # It grows from where it is: only the new bundles are fetched.
    log.grow(500)
    source = TreeSource(log)
    assert run(eng.sync(ORIGIN, source)) is True
    assert next(p for p in source.fetched if p.startswith("tile/entries/")) == "tile/entries/005"
    assert eng.head(ORIGIN).size == 1800  # type: ignore[union-attr]
    assert eng.mirror_checkpoint(ORIGIN) == source.note
    assert calls.blamed == [] and calls.reported == []
    # A fresh engine on the same store finds the replica.
    again = engine(store, MIRROR, calls)
    assert again.head(ORIGIN) == eng.head(ORIGIN)
    assert run(again.sync(ORIGIN, TreeSource(log))) is False


def test_a_mirror_turned_on_later_catches_up_with_the_head() -> None:
    log, store, calls = Log().grow(600), MemoryStore(), Calls()
    run(engine(store, SPEC, calls).sync(ORIGIN, TreeSource(log)))
    eng = engine(store, MIRROR, calls)
    assert eng.head(ORIGIN).size == 600  # type: ignore[union-attr]
    assert run(eng.sync(ORIGIN, TreeSource(log))) is False  # the head did not move...
    assert store.log_state(MIRROR_PREFIX + ORIGIN).size == 600  # type: ignore[union-attr]
    assert eng.mirror_checkpoint(ORIGIN) == log.note()  # ...and the mirror caught up


def test_a_forged_checkpoint_is_refused_blamed_and_nothing_kept() -> None:
    log, store, calls = Log().grow(300), MemoryStore(), Calls()
    eng = engine(store, MIRROR, calls)
    with pytest.raises(VerificationError) as e:
        run(eng.sync(ORIGIN, TreeSource(log, note=log.note(SigningKey.generate()))))
    assert e.value.code == "replica_checkpoint_invalid"
    assert calls.blamed == [("did:key:source", "replica_checkpoint_invalid")]
    assert eng.head(ORIGIN) is None and store.log_state(MIRROR_PREFIX + ORIGIN) is None
    assert eng.errors[ORIGIN]["code"] == "replica_checkpoint_invalid"


def test_entries_that_do_not_hash_to_the_signed_root_are_refused() -> None:
    log, store, calls = Log().grow(300), MemoryStore(), Calls()
    eng = engine(store, MIRROR, calls)
    with pytest.raises(VerificationError) as e:
        run(eng.sync(ORIGIN, TreeSource(log, tamper=299)))
    assert e.value.code == "replica_inconsistent"
    assert calls.blamed == [("did:key:source", "replica_inconsistent")]
    assert eng.head(ORIGIN) is None and store.log_state(MIRROR_PREFIX + ORIGIN) is None


def test_a_bad_chunk_keeps_only_the_verified_prefix(small_chunks: None) -> None:
    log, store, calls = Log().grow(1300), MemoryStore(), Calls()
    eng = engine(store, MIRROR, calls)
    with pytest.raises(VerificationError):
        run(eng.sync(ORIGIN, TreeSource(log, tamper=700)))  # in the second chunk
    state = store.log_state(MIRROR_PREFIX + ORIGIN)
    assert state is not None and state.size == 512  # the first chunk, proven consistent
    assert state.root_hash == log.tree().root(512)
    assert eng.head(ORIGIN) is None
    with pytest.raises(NotFoundError) as e:
        eng.mirror_checkpoint(ORIGIN)  # not complete for any signed checkpoint yet
    assert e.value.code == "replica_catching_up"
    # A checkpoint inside what the mirror holds is checked against the stored tree.
    forged = Log(list(log.entries[:300]))
    forged.entries[0] = b"other"
    with pytest.raises(InconsistencyError):
        run(eng.sync(ORIGIN, TreeSource(forged)))
    assert eng.head(ORIGIN) is None
    assert run(eng.sync(ORIGIN, TreeSource(Log(log.entries[:300])))) is True
    assert eng.head(ORIGIN).size == 300  # type: ignore[union-attr]
    assert run(eng.sync(ORIGIN, TreeSource(log))) is True  # resumes at 512
    assert store.log_state(MIRROR_PREFIX + ORIGIN).size == 1300  # type: ignore[union-attr]
    assert eng.mirror_checkpoint(ORIGIN) == log.note()


def test_a_checkpoint_replica_grows_only_with_a_consistency_proof() -> None:
    log, store, calls = Log().grow(100), MemoryStore(), Calls()
    eng = engine(store, SPEC, calls)
    run(eng.sync(ORIGIN, TreeSource(log)))
    log.grow(900)
    source = TreeSource(log)
    assert run(eng.sync(ORIGIN, source)) is True
    assert any(p.startswith("tile/") and "entries" not in p for p in source.fetched)
    assert not any("entries" in p for p in source.fetched)  # no entries without mirroring
    # Tiles that do not match the signed root: refused, blamed, head kept.
    log.grow(50)
    with pytest.raises(VerificationError) as e:
        run(eng.sync(ORIGIN, TreeSource(log, bad_tiles=True)))
    assert e.value.code == "replica_inconsistent" and calls.blamed[-1][1] == "replica_inconsistent"
    assert eng.head(ORIGIN).size == 1000  # type: ignore[union-attr]
    # A source behind us teaches nothing and is not blamed.
    old = TreeSource(Log(log.entries[:500]))
    assert run(eng.sync(ORIGIN, old)) is False and len(calls.blamed) == 1


def test_a_log_that_rewrites_history_is_caught_as_equivocation() -> None:
    log, store, calls = Log().grow(400), MemoryStore(), Calls()
    eng = engine(store, SPEC, calls)
    run(eng.sync(ORIGIN, TreeSource(log)))
    fork = Log(list(log.entries))
    fork.entries[10] = b"rewritten"
    fork.grow(100)
    with pytest.raises(InconsistencyError) as e:
        run(eng.sync(ORIGIN, TreeSource(fork)))
    assert e.value.code == "replica_equivocation"
    assert calls.blamed == []  # the log is at fault, not (necessarily) whoever served it
    (evidence,) = calls.reported
    report = verify_equivocation(evidence)
    assert report.origin == ORIGIN and eng.head(ORIGIN).size == 400  # type: ignore[union-attr]
    # The same offence again is not reported twice; a same-size fork is caught too.
    with pytest.raises(InconsistencyError):
        run(eng.sync(ORIGIN, TreeSource(fork)))
    assert len(calls.reported) == 1
    twin = Log(list(log.entries))
    twin.entries[0] = b"other"
    with pytest.raises(InconsistencyError):
        run(eng.sync(ORIGIN, TreeSource(twin)))
    assert len(calls.reported) == 2 and calls.reported[1].checkpoint_a.size == 400


def test_a_mirror_catches_a_fork_from_the_entries() -> None:
    log, store, calls = Log().grow(300), MemoryStore(), Calls()
    eng = engine(store, MIRROR, calls)
    run(eng.sync(ORIGIN, TreeSource(log)))
    fork = Log(list(log.entries))
    fork.entries[299] = b"rewritten"
    fork.grow(20)
    with pytest.raises(InconsistencyError):
        run(eng.sync(ORIGIN, TreeSource(fork)))
    assert len(calls.reported) == 1 and calls.blamed == []
    assert store.log_state(MIRROR_PREFIX + ORIGIN).size == 300  # type: ignore[union-attr]


def test_transport_failures_are_not_blamed() -> None:
    class Down(TreeSource):
        async def checkpoint(self) -> bytes:
            raise PeerError("unreachable", code="replica_fetch_failed")

    store, calls = MemoryStore(), Calls()
    eng = engine(store, SPEC, calls)
    with pytest.raises(PeerError):
        run(eng.sync(ORIGIN, Down(Log().grow(3))))
    assert calls.blamed == [] and eng.errors[ORIGIN]["code"] == "replica_fetch_failed"


# --- anchor claims, re-verified with the development TSA ----------------------------


@pytest.fixture(scope="module")
def tsas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RailRegistry]:
    base = tmp_path_factory.mktemp("tsas")
    with (
        DevTsaServer(DevTsa(base / "a")) as a,
        DevTsaServer(DevTsa(base / "b", name="Other TSA")) as b,
    ):
        yield RailRegistry({"rfc3161": {
            "tsa": {"url": a.url, "trust_bundle": str(base / "a" / "ca.pem")},
            "tsa2": {"url": b.url, "trust_bundle": str(base / "b" / "ca.pem")},
        }})  # fmt: skip


def _claim(rails: RailRegistry, note: bytes, target: str) -> AnchorReceipt:
    body = Note.from_bytes(note).text.encode()
    digest = checkpoint_digest(body)
    anchor = rails.get(target).submit(digest, now=NOW)
    assert anchor.status == "verified"
    size = int(body.split(b"\n")[1])
    return AnchorReceipt(ORIGIN, size, note, digest, (anchor,))


def test_anchor_claims_are_verified_merged_and_ordered_the_same_everywhere(
    tsas: RailRegistry,
) -> None:
    note = Log().grow(10).note()
    first, second = _claim(tsas, note, "rfc3161:tsa"), _claim(tsas, note, "rfc3161:tsa2")
    views = []
    for order in ([first, second], [second, first]):
        store, calls = MemoryStore(), Calls()
        eng = engine(store, SPEC, calls, tsas)
        for claim in order:
            report = run(eng.merge_claims([claim.to_dict()], sender="did:key:peer"))
            assert report.accepted == 1 and report.refused == []
        assert run(eng.merge_claims([first.to_dict()], sender=None)).unchanged == 1
        (view,) = eng.anchor_view(ORIGIN)
        assert sorted(view["reverified_here"]) == sorted(
            a.key for a in (*first.anchors, *second.anchors)
        )
        views.append([(a["target"], a["txRef"], a["superseded_by"]) for a in view["anchors"]])
    assert views[0] == views[1]
    both = [*first.anchors, *second.anchors]
    want = resolve_conflicts(both, verified={a.key for a in both})
    assert [(a.target, a.tx_ref, a.superseded_by) for a in want] == views[0]
    # Served in bundles with their anchor time.
    items = eng.bundle_items("dao:vaultmesh", None, None)
    assert [d["size"] for _, d in items] == [10] and items[0][0] >= NOW - 5


@pytest.mark.parametrize(
    "forgery", ["other_checkpoint", "earlier_time", "other_key", "claimed_failed"]
)
def test_a_false_anchor_claim_is_refused_and_nothing_kept(tsas: RailRegistry, forgery: str) -> None:
    log = Log().grow(10)
    note = log.note()
    claim = _claim(tsas, note, "rfc3161:tsa")
    store, calls = MemoryStore(), Calls()
    eng = engine(store, SPEC, calls, tsas)
    (a,) = claim.anchors
    if forgery == "other_checkpoint":  # a real anchor, of another checkpoint
        other = _claim(tsas, log.grow(1).note(), "rfc3161:tsa")
        claim = replace(claim, anchors=other.anchors)
    elif forgery == "earlier_time":  # to win the conflict order
        claim = replace(claim, anchors=(replace(a, anchor_ts=(a.anchor_ts or NOW) - 3600),))
    elif forgery == "other_key":
        forged = Log(log.entries[:10]).note(SigningKey.generate())
        claim = replace(claim, checkpoint=forged)
    else:  # the anchor we hold as verified, claimed failed
        assert run(eng.merge_claims([claim.to_dict()], sender=None)).accepted == 1
        claim = replace(claim, anchors=(replace(a, status="failed"),))
    before = dict(store.list_state(ANCHOR_SCOPE))
    report = run(eng.merge_claims([claim.to_dict()], sender="did:key:peer"))
    assert report.accepted == 0 and len(report.refused) == 1
    assert report.refused[0] in ("replica_anchor_invalid", "replica_checkpoint_invalid")
    assert store.list_state(ANCHOR_SCOPE) == before


def test_claims_for_unknown_logs_are_ignored_and_unjudgeable_ones_kept(tsas: RailRegistry) -> None:
    note = Log().grow(5).note()
    claim = _claim(tsas, note, "rfc3161:tsa")
    store, calls = MemoryStore(), Calls()
    eng = engine(store, SPEC, calls, RailRegistry())  # no rails here
    stranger = replace(claim, origin="beta.test/dao:vaultmesh")
    assert run(eng.merge_claims([stranger.to_dict()], sender=None)).ignored == 1
    assert run(eng.merge_claims([claim.to_dict()], sender=None)).accepted == 1
    (view,) = eng.anchor_view(ORIGIN)
    assert view["reverified_here"] == [] and view["anchors"][0]["status"] == "verified"
    malformed = {"type": "remembrancer.anchor-receipt/v1", "origin": ORIGIN}
    assert run(eng.merge_claims([malformed], sender=None)).refused == ["anchor_receipt_malformed"]


def test_a_witness_anchors_its_replica(tsas: RailRegistry) -> None:
    log, store, calls = Log().grow(20), MemoryStore(), Calls()
    eng = engine(store, SPEC, calls, tsas)
    run(eng.sync(ORIGIN, TreeSource(log)))
    out = run(eng.anchor_head(ORIGIN, "rfc3161:tsa2"))
    assert out["size"] == 20 and out["anchor"]["status"] == "verified"
    (view,) = eng.anchor_view(ORIGIN)
    assert view["reverified_here"] == [f"rfc3161:tsa2/{out['anchor']['txRef']}"]
    doc = json.loads(store.get_state(ANCHOR_SCOPE, f"{ORIGIN}/{20:020d}") or b"{}")
    assert (
        doc["receipt"]["root"]
        == "sha256:" + checkpoint_digest(Note.from_bytes(log.note()).text.encode()).hex()
    )


def test_status_order_is_a_total_order_over_statuses() -> None:
    # Every allowed transition raises the version rank, so "latest wins" agrees
    # with the status machine.
    from remembrancer.core.anchor import STATUSES, allowed_transition

    for a, b in itertools.product(STATUSES, STATUSES):
        if a != b and allowed_transition(a, b):
            assert claims._STATUS_RANK[b] > claims._STATUS_RANK[a]


def test_the_namespace_of_an_origin() -> None:
    assert SPEC.namespace == "dao:vaultmesh"
    assert ReplicaSpec("example.org/log", ()).namespace is None
    assert ReplicaSpec("example.org:8443/a/b/fin:clearing", ()).namespace == "fin:clearing"


# --- resource bounds (issue 19) --------------------------------------------------------


def test_a_chunk_takes_a_bundle_only_while_three_worst_cases_fit_the_budget() -> None:
    from remembrancer.federation.antientropy.engine import MIN_MEMORY_BUDGET, bundle_cap, chunk_room

    full, part = Tile(0, 0, 256), Tile(0, 1, 10)
    assert chunk_room(0, [full], MIN_MEMORY_BUDGET)
    assert not chunk_room(1, [full], MIN_MEMORY_BUDGET)
    assert not chunk_room(0, [full, full], 5 * bundle_cap(full))
    assert chunk_room(0, [full, full], 6 * bundle_cap(full))
    assert chunk_room(0, [part], 3 * bundle_cap(part))
    with pytest.raises(ConfigError) as e:
        ReplicaEngine(MemoryStore(), [MIRROR], RailRegistry(), memory_budget=MIN_MEMORY_BUDGET - 1)
    assert e.value.code == "memory_budget_too_small"


@dataclass
class MaximalSource(TreeSource):
    """Serves a checkpoint of 16,384 entries and maximal entry bundles (256 entries
    of 65,535 bytes) that do not hash to it."""

    bundle: bytes = b""

    async def bundles(self, tiles: list[Tile]) -> list[bytes]:
        if not self.bundle:
            self.bundle = encode_entry_bundle([b"\xa5" * 65535] * 256)
        self.fetched += [t.entries_path() for t in tiles]
        return [self.bundle for _ in tiles]


def test_maximal_bundles_are_fetched_one_chunk_within_the_budget_and_refused() -> None:
    from remembrancer.federation.antientropy.engine import MIN_MEMORY_BUDGET

    log, store, calls = Log().grow(16_384), MemoryStore(), Calls()
    eng = ReplicaEngine(store, [MIRROR], RailRegistry(), clock=lambda: NOW, blame=calls.blame,
                        report_equivocation=calls.report, memory_budget=MIN_MEMORY_BUDGET)  # fmt: skip
    source = MaximalSource(log)
    with pytest.raises(VerificationError) as e:
        run(eng.sync(ORIGIN, source))
    assert e.value.code == "replica_inconsistent"
    # Verified before anything more was fetched: one maximal bundle fits the budget.
    assert [p for p in source.fetched if p.startswith("tile/entries/")] == ["tile/entries/000"]
    assert calls.blamed == [("did:key:source", "replica_inconsistent")]
    assert store.log_state(MIRROR_PREFIX + ORIGIN) is None


def test_a_source_that_drips_its_answer_is_cut_off_at_the_deadline() -> None:
    import httpx

    from remembrancer.federation.antientropy.source import HttpSource

    async def scenario() -> tuple[str, float]:
        async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            try:
                for _ in range(1000):  # one byte every 0.2 s: no read ever times out
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.2)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(drip, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
            source = HttpSource(client, f"http://127.0.0.1:{port}/logs/x/", peer="p",
                                deadline=1.0)  # fmt: skip
            t0 = asyncio.get_running_loop().time()
            try:
                await source.checkpoint()
            except PeerError as e:
                code = e.code
            took = asyncio.get_running_loop().time() - t0
        server.close()
        return code, took

    code, took = run(scenario())
    assert code == "replica_fetch_timeout"
    assert took < 5.0  # the per-read timeout (5 s) never fired: the deadline did
