"""Collaborative anchoring, the pure parts: aggregation trees against the naive
RFC 6962 reference, covering anchors, epochs, coordinator choice, the
``remembrancer.aggregate-anchor/v1`` claim, and every way a coordinator can
lie being refused (and, where the claim contradicts itself, proven)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.aggregation import (
    AGGREGATE_ANCHOR_TYPE,
    AggregateAnchor,
    AggregationTree,
    EpochClock,
    choose_coordinator,
    coordinator_candidates,
    verify_aggregate,
)
from remembrancer.core.anchor import (
    MAX_AGGREGATION_PATH,
    Anchor,
    AnchorReceipt,
    checkpoint_digest,
    covers,
    require_covers,
)
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.encoding import b64url_encode
from remembrancer.core.errors import FormatError, NotFoundError, VerificationError
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note
from remembrancer.core.rfc6962 import hash_leaf, verify_inclusion
from remembrancer.federation.evidence.claims import ClaimEvidence, verify_claim_evidence
from remembrancer.federation.protocol.contents import CheckpointContent
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import FederationReceipt, verify_federation_receipt
from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.testing.naive_merkle import NaiveTree

FED = "vaultmesh-primary"
NOW = 1_764_100_000


def digests(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(n)]


# --------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70))
def test_tree_matches_the_naive_reference_and_every_path_verifies(leaves: list[bytes]) -> None:
    tree = AggregationTree.build(leaves)
    expected = sorted(set(leaves))
    assert list(tree.leaves) == expected
    naive = NaiveTree([hash_leaf(d) for d in expected])
    assert tree.root == naive.mth(0, len(expected))
    for i, d in enumerate(expected):
        agg = tree.aggregation(d)
        assert (agg.leaf_index, agg.tree_size) == (i, len(expected))
        assert list(agg.path) == naive.path(i, 0, len(expected))
        verify_inclusion(i, len(expected), hash_leaf(d), agg.path, tree.root)
        assert agg.root_for(d) == tree.root


def test_tree_depends_only_on_the_set_of_digests() -> None:
    ds = digests(9)
    a = AggregationTree.build(ds)
    b = AggregationTree.build(list(reversed(ds)) + ds[:4])
    assert a.root == b.root and a.size == b.size == 9
    assert AggregationTree.build(ds[:8]).root != a.root
    one = AggregationTree.build(ds[:1])
    assert one.root == hash_leaf(ds[0]) and one.aggregation(ds[0]).path == ()


def test_tree_refuses_bad_leaves() -> None:
    for bad, code in (([], "aggregation_empty"), ([b"short"], "aggregation_leaf_invalid")):
        with pytest.raises(FormatError) as e:
            AggregationTree.build(bad)
        assert e.value.code == code
    with pytest.raises(NotFoundError) as nf:
        AggregationTree.build(digests(3)).aggregation(digests(1, "other")[0])
    assert nf.value.code == "aggregation_leaf_unknown"


# --------------------------------------------------------------------------
# Anchors that cover a checkpoint
# --------------------------------------------------------------------------


def test_direct_and_aggregated_anchors_cover_exactly_their_checkpoints() -> None:
    ds = digests(6)
    tree = AggregationTree.build(ds)
    direct = Anchor("rfc3161:tsa", ds[0])
    assert covers(direct, ds[0]) and not covers(direct, ds[1])
    for d in ds:
        agg = Anchor("rfc3161:tsa", tree.root, aggregation=tree.aggregation(d))
        assert covers(agg, d)
        assert not any(covers(agg, other) for other in ds if other != d)
        require_covers(agg, d)
    # An aggregated anchor does not cover its own root as a digest, nor a direct anchor a path.
    some = Anchor("rfc3161:tsa", tree.root, aggregation=tree.aggregation(ds[2]))
    assert not covers(some, tree.root)
    with pytest.raises(VerificationError) as e:
        require_covers(some, ds[3], code="receipt_root_mismatch")
    assert e.value.code == "receipt_root_mismatch" and e.value.details["aggregated"] is True


@pytest.mark.parametrize(
    "lie",
    [
        lambda a: replace(a, path=(bytes(32), *a.path[1:])),  # a path hash replaced
        lambda a: replace(a, path=a.path[:-1]),  # too short
        lambda a: replace(a, path=(*a.path, bytes(32))),  # too long
        lambda a: replace(a, leaf_index=(a.leaf_index + 1) % a.tree_size),  # another position
        lambda a: replace(a, path=tuple(reversed(a.path))),
    ],
)
def test_a_path_that_was_tampered_with_covers_nothing(lie: Any) -> None:
    ds = digests(7)
    tree = AggregationTree.build(ds)
    d = ds[3]
    bad = Anchor("rfc3161:tsa", tree.root, aggregation=lie(tree.aggregation(d)))
    assert not covers(bad, d)


def test_anchor_dict_keeps_direct_anchors_unchanged_and_round_trips_aggregations() -> None:
    direct = Anchor("rfc3161:tsa", bytes(32), "verified", tx_ref="01")
    assert "aggregation" not in direct.to_dict()  # receipts signed before this change still verify
    assert Anchor.from_dict(direct.to_dict()) == direct
    tree = AggregationTree.build(digests(5))
    agg = Anchor("eip155:31337", tree.root, aggregation=tree.aggregation(tree.leaves[4]))
    d = agg.to_dict()
    assert d["aggregation"]["leafIndex"] == 4 and d["aggregation"]["treeSize"] == 5
    assert all(h.startswith("sha256:") for h in d["aggregation"]["path"])
    assert Anchor.from_dict(json.loads(json.dumps(d))) == agg


@pytest.mark.parametrize(
    "edit",
    [
        lambda a: a.update(extra=1),
        lambda a: a.pop("path"),
        lambda a: a.update(leafIndex=5),  # = treeSize
        lambda a: a.update(leafIndex=-1),
        lambda a: a.update(treeSize=True),
        lambda a: a.update(path=["sha256:" + "AB" * 32]),  # upper-case hex
        lambda a: a.update(path=["sha256:abcd"]),
        lambda a: a.update(path=["sha256:" + "00" * 32] * (MAX_AGGREGATION_PATH + 1)),
        lambda a: a.update(path="sha256:" + "00" * 32),
    ],
)
def test_malformed_aggregations_are_refused(edit: Any) -> None:
    tree = AggregationTree.build(digests(5))
    d = Anchor("rfc3161:tsa", tree.root, aggregation=tree.aggregation(tree.leaves[1])).to_dict()
    edit(d["aggregation"])
    with pytest.raises(FormatError):
        Anchor.from_dict(d)


# --------------------------------------------------------------------------
# Epochs and coordinators
# --------------------------------------------------------------------------


def test_epoch_clock() -> None:
    c = EpochClock(60)
    assert c.epoch(NOW) == NOW // 60 and c.start(c.epoch(NOW)) <= NOW < c.start(c.epoch(NOW) + 1)
    e = c.epoch(NOW)
    assert c.start(e + 1) < c.cutoff(e) <= c.start(e + 1) + 2 < c.deadline(e) == c.start(e + 2)
    assert EpochClock(4).grace == 1.0
    for bad in (0, -1, 86_401, 1.5, True):
        with pytest.raises(FormatError) as err:
            EpochClock(bad)  # type: ignore[arg-type]
        assert err.value.code == "anchor_epoch_invalid"


def test_coordinator_choice_is_deterministic_and_rotates() -> None:
    dids = [f"did:vm:node:n{i}" for i in range(5)]
    for target in ("rfc3161:tsa", "eip155:31337", "btc:mainnet"):
        chosen = [choose_coordinator(FED, target, e, dids) for e in range(1000, 1010)]
        # the same on every node, whatever order it lists its peers in
        assert chosen == [choose_coordinator(FED, target, e, list(reversed(dids)))
                          for e in range(1000, 1010)]  # fmt: skip
        # two consecutive epochs never share a coordinator; every candidate takes its turn
        assert all(a != b for a, b in itertools.pairwise(chosen))
        assert set(chosen[:5]) == set(dids)
    # targets are spread over the peers (the offset differs per target and federation)
    firsts = {choose_coordinator(f"fed-{i}", "rfc3161:tsa", 0, dids) for i in range(20)}
    assert len(firsts) > 1
    assert choose_coordinator(FED, "rfc3161:tsa", 7, ["did:vm:node:solo"]) == "did:vm:node:solo"
    assert choose_coordinator(FED, "rfc3161:tsa", 7, []) is None


def _peer(name: str, roles: list[str], status: str = "active") -> Peer:
    key = SigningKey.generate(hashlib.sha256(name.encode()).digest())
    return Peer(f"did:vm:node:{name}", f"https://{name}.test", key.public, status,  # type: ignore[arg-type]
                frozenset(roles))  # type: ignore[arg-type]  # fmt: skip


def test_candidates_prefer_the_coordinator_role_then_anchor_and_only_active_peers() -> None:
    a = _peer("a", ["anchor", "coordinator"])
    b = _peer("b", ["anchor"])
    c = _peer("c", ["coordinator"], "probation")
    d = _peer("d", ["coordinator"])
    assert coordinator_candidates([a, b, c, d]) == (a.did, d.did)
    assert coordinator_candidates([b, c]) == (b.did,)
    assert coordinator_candidates([_peer("w", ["witness"])]) == ()


# --------------------------------------------------------------------------
# The claim, and a member's checks of it
# --------------------------------------------------------------------------

COORD = SigningKey.generate(b"\x31" * 32)
MEMBER_LOG = SigningKey.generate(b"\x32" * 32)
ORIGIN = "n1.test/dao:vaultmesh"


def member_checkpoint(size: int = 5, origin: str = ORIGIN) -> tuple[bytes, bytes]:
    note = sign_checkpoint(Checkpoint(origin, size, hashlib.sha256(b"%d" % size).digest()),
                           MEMBER_LOG)  # fmt: skip
    return note, checkpoint_digest(Note.from_bytes(note).text.encode())


def claim_for(digest: bytes, others: int = 4, **anchor: Any) -> AggregateAnchor:
    tree = AggregationTree.build([digest, *digests(others, "other")])
    a = Anchor("rfc3161:tsa", tree.root, "verified", tx_ref="5eed", anchor_ts=NOW,
               aggregation=tree.aggregation(digest), **anchor)  # fmt: skip
    return AggregateAnchor(FED, COORD.did, "rfc3161:tsa", 29401666, ORIGIN, 5, digest, a)


def check(claim: AggregateAnchor, digest: bytes, **mine: Any) -> None:
    expect = {"federation_id": FED, "target": "rfc3161:tsa", "origin": ORIGIN, "size": 5,
              "digest": digest, **mine}  # fmt: skip
    verify_aggregate(claim, **expect)


def test_an_honest_claim_round_trips_and_passes() -> None:
    _, digest = member_checkpoint()
    claim = claim_for(digest)
    assert claim.consistent()
    d = claim.to_dict()
    assert d["type"] == AGGREGATE_ANCHOR_TYPE and d["checkpoint"] == "sha256:" + digest.hex()
    assert AggregateAnchor.from_dict(json.loads(json.dumps(d))) == claim
    check(claim, digest)


def _lie_path(c: AggregateAnchor) -> AggregateAnchor:
    agg = c.anchor.aggregation
    assert agg is not None
    return replace(c, anchor=replace(c.anchor, aggregation=replace(agg, path=(bytes(32), *agg.path[1:]))))  # fmt: skip


def _lie_leave_out(c: AggregateAnchor) -> AggregateAnchor:
    """The tree leaves the member out; the coordinator hands it another leaf's path."""
    others = digests(4, "other")
    tree = AggregationTree.build(others)
    return replace(c, anchor=replace(c.anchor, root=tree.root, aggregation=tree.aggregation(others[0])))  # fmt: skip


def _lie_root(c: AggregateAnchor) -> AggregateAnchor:
    return replace(c, anchor=replace(c.anchor, root=bytes(32)))


@pytest.mark.parametrize("lie", [_lie_path, _lie_leave_out, _lie_root],
                         ids=["wrong path", "member left out", "another root"])  # fmt: skip
def test_a_self_contradicting_claim_is_refused_as_proof(lie: Any) -> None:
    _, digest = member_checkpoint()
    bad = lie(claim_for(digest))
    assert not bad.consistent()
    with pytest.raises(VerificationError) as e:
        check(bad, digest)
    assert e.value.code == "aggregate_path_invalid"


@pytest.mark.parametrize(
    ("mine", "field"),
    [
        ({"federation_id": "other-federation"}, "federation_id"),
        ({"target": "eip155:1"}, "target"),
        ({"origin": "n2.test/dao:vaultmesh"}, "origin"),
        ({"size": 6}, "size"),
    ],
)
def test_a_claim_about_another_checkpoint_is_refused(mine: dict[str, Any], field: str) -> None:
    _, digest = member_checkpoint()
    with pytest.raises(VerificationError) as e:
        check(claim_for(digest), digest, **mine)
    assert e.value.code == "aggregate_not_ours" and e.value.details["field"] == field


def test_a_consistent_claim_for_another_members_leaf_is_not_ours() -> None:
    """The coordinator hands us a true path, but for someone else's checkpoint."""
    _, digest = member_checkpoint()
    other = digests(4, "other")[2]
    honest_for_other = claim_for(other)  # consistent, but about `other`
    assert honest_for_other.consistent()
    with pytest.raises(VerificationError) as e:
        check(honest_for_other, digest)
    assert e.value.code == "aggregate_not_ours" and e.value.details["field"] == "checkpoint"


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(extra=1),
        lambda d: d.pop("epoch"),
        lambda d: d.update(type="remembrancer.aggregate-anchor/v2"),
        lambda d: d.update(epoch=-1),
        lambda d: d.update(size="5"),
        lambda d: d.update(checkpoint="sha256:" + "AA" * 32),
        lambda d: d.update(target="eip155:1"),  # disagrees with the anchor
        lambda d: d["anchor"].pop("aggregation"),  # a direct anchor is no aggregate
        lambda d: d.update(anchor=[]),
    ],
)
def test_claim_parsing_is_strict(edit: Any) -> None:
    _, digest = member_checkpoint()
    d = copy.deepcopy(claim_for(digest).to_dict())
    edit(d)
    with pytest.raises(FormatError):
        AggregateAnchor.from_dict(d)


# --------------------------------------------------------------------------
# Evidence of a lying coordinator, and federation receipts over aggregates
# --------------------------------------------------------------------------

REPORTER = SigningKey.generate(b"\x33" * 32)
REGISTRY = Registry(FED, 1, "hybrid", (
    Peer(COORD.did, "https://c.test", COORD.public, "active", frozenset({"anchor", "coordinator"})),
    Peer(REPORTER.did, "https://r.test", REPORTER.public, "active", frozenset({"anchor"})),
))  # fmt: skip


def receipt_message(claim: AggregateAnchor, key: SigningKey = COORD) -> bytes:
    from remembrancer.federation.protocol.contents import ReceiptContent

    msg = Message.sign(key, ReceiptContent("dao:vaultmesh", claim.to_dict()), federation_id=FED,
                       seq=1, timestamp=NOW, sender=key.did)  # fmt: skip
    return msg.to_bytes()


def evidence(raw: bytes, finding: str) -> ClaimEvidence:
    return ClaimEvidence.create(kind="invalid_anchor_claim", federation_id=FED, accused=COORD.did,
                                message=raw, receipt_at="/content/receipt", countersigner=COORD.did,
                                finding=finding, reporter_key=REPORTER, reported_at=NOW)  # type: ignore[arg-type]  # fmt: skip


def test_a_wrong_path_in_a_signed_receipt_message_is_proven_misbehaviour() -> None:
    _, digest = member_checkpoint()
    raw = receipt_message(_lie_path(claim_for(digest)))
    report = verify_claim_evidence(ClaimEvidence.parse(evidence(raw, "root_mismatch").to_bytes()),
                                   REGISTRY)  # fmt: skip
    assert report.accused == COORD.did and report.finding == "root_mismatch"
    assert report.detail["checkpoint_digest"] == "sha256:" + digest.hex()
    # An honest claim proves nothing; nor does a lie signed by someone else.
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(
            evidence(receipt_message(claim_for(digest)), "root_mismatch"), REGISTRY
        )
    assert e.value.code == "evidence_not_misbehaviour"
    framed = receipt_message(_lie_path(claim_for(digest)), key=REPORTER)
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(evidence(framed, "root_mismatch"), REGISTRY)
    assert e.value.code in ("evidence_message_unsigned", "evidence_not_attributable")


def test_an_anchor_that_fails_on_the_members_rail_is_proven_misbehaviour() -> None:
    _, digest = member_checkpoint()
    raw = receipt_message(claim_for(digest))

    def failed(a: Anchor) -> Anchor:
        return a.moved("failed", verifier="member's rail", error="tsa_imprint_mismatch")

    report = verify_claim_evidence(evidence(raw, "rail_failed"), REGISTRY, reverify=failed)
    assert report.detail["rail_error"] == "tsa_imprint_mismatch"
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(evidence(raw, "rail_failed"), REGISTRY, reverify=lambda a: a)
    assert e.value.code == "evidence_not_misbehaviour"


def test_federation_receipts_over_one_aggregate_verify_and_have_distinct_ids() -> None:
    peers = [SigningKey.generate() for _ in range(3)]
    logs = [SigningKey.generate() for _ in range(2)]
    notes = [sign_checkpoint(Checkpoint(f"n{i}.test/dao:vaultmesh", 3, bytes([i]) * 32), logs[i])
             for i in range(2)]  # fmt: skip
    ds = [checkpoint_digest(Note.from_bytes(n).text.encode()) for n in notes]
    tree = AggregationTree.build(ds)
    receipts = []
    for i in range(2):
        a = Anchor(
            "rfc3161:tsa", tree.root, "verified", tx_ref="77", aggregation=tree.aggregation(ds[i])
        )
        r = FederationReceipt(FED, "dao:vaultmesh", f"n{i}.test/dao:vaultmesh", notes[i], a)
        for k in peers:
            r = r.with_signature(r.countersign(k, "witness", NOW))
        verify_federation_receipt(r, {k.did: k.public for k in peers}, 3)
        assert FederationReceipt.from_dict(json.loads(json.dumps(r.to_dict()))) == r
        receipts.append(r)
    assert receipts[0].id != receipts[1].id and receipts[0].id.startswith(ds[0].hex())
    # the other member's checkpoint with this member's path: not covered
    swapped = replace(receipts[0], checkpoint=notes[1])
    with pytest.raises(VerificationError) as e:
        verify_federation_receipt(swapped, {k.did: k.public for k in peers}, 0)
    assert e.value.code == "receipt_root_mismatch"
    # a direct anchor's receipt id is unchanged: <anchored root>/<target>/<txRef>
    direct = FederationReceipt(FED, "dao:vaultmesh", "n0.test/dao:vaultmesh", notes[0],
                               Anchor("rfc3161:tsa", ds[0], tx_ref="9"))  # fmt: skip
    assert direct.id == f"{ds[0].hex()}/rfc3161:tsa/9"


def test_anchor_receipts_with_aggregated_anchors_round_trip() -> None:
    note, digest = member_checkpoint()
    claim = claim_for(digest)
    r = AnchorReceipt(ORIGIN, 5, note, digest, (claim.anchor,))
    assert AnchorReceipt.from_dict(json.loads(json.dumps(r.to_dict()))) == r


# --------------------------------------------------------------------------
# Wire: the checkpoint message and the registry's epoch
# --------------------------------------------------------------------------


def test_checkpoint_content_for_a_coordinator_and_plain_gossip() -> None:
    note, _ = member_checkpoint()
    text = note.decode()
    plain = CheckpointContent.from_json({"origin": ORIGIN, "note": text})
    assert not plain.for_aggregation and plain.to_json() == {"origin": ORIGIN, "note": text}
    full = {"origin": ORIGIN, "note": text, "namespace": "dao:vaultmesh",
            "target": "rfc3161:tsa", "epoch": 29401666}  # fmt: skip
    content = CheckpointContent.from_json(full)
    assert content.for_aggregation and content.to_json() == full
    msg = Message.sign(COORD, content, federation_id=FED, seq=3, timestamp=NOW, sender=COORD.did)
    assert Message.parse(msg.to_bytes()).content == content
    for edit in ({"epoch": None}, {"target": "ftp:x"}, {"epoch": -1}, {"namespace": "nope"}):
        bad = {**full, **edit}
        bad = {k: v for k, v in bad.items() if v is not None}
        with pytest.raises(FormatError) as e:
            CheckpointContent.from_json(bad)
        assert e.value.code == "malformed"
    signature = b64url_encode(COORD.sign(canonicalize(full)))
    assert len(signature) == 86  # the content itself is plain canonical JSON


def test_registry_epoch_seconds() -> None:
    base = REGISTRY.to_dict()
    assert "anchor_propagation" not in base and REGISTRY.anchor_epoch_seconds == 60
    doc = {**base, "anchor_propagation": {"mode": "collaborative", "epoch_seconds": 4}}
    del doc["anchor_strategy"]
    reg = Registry.from_dict(doc)
    assert reg.anchor_strategy == "collaborative" and reg.anchor_epoch_seconds == 4
    assert reg.to_dict()["anchor_propagation"] == {"epoch_seconds": 4}
    assert Registry.from_dict(reg.to_dict()) == reg and reg.digest() != REGISTRY.digest()
    payload = reg.registry_record_payload()
    assert payload["registry"]["anchor_propagation"] == {"epoch_seconds": 4}
    assert Registry.from_record_payload(payload) == reg
    # Registries that never set it keep their digest (the default is not written).
    assert (
        Registry.from_dict({**base, "anchor_propagation": {"epoch_seconds": 60}}).digest()
        == REGISTRY.digest()
    )
    for bad in (0, 86_401, "60", 2.5):
        with pytest.raises(Exception) as e:
            Registry.from_dict(
                {**base, "anchor_propagation": {"epoch_seconds": bad}}, source="f.yaml"
            )
        assert getattr(e.value, "code", None) == "anchor_epoch_invalid"
        assert e.value.details["key"] == "anchor_propagation.epoch_seconds"  # type: ignore[attr-defined]
