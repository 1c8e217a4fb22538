"""Misbehaviour evidence: equivocation files from real forks, claim evidence, all re-checked offline."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remembrancer.core.anchor import Anchor, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.cosignature import cosign
from remembrancer.core.encoding import b64url_encode
from remembrancer.core.errors import FormatError, RemembrancerError, VerificationError
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, format_vkey
from remembrancer.core.rfc6962 import EMPTY_ROOT
from remembrancer.core.tiles import TileTree
from remembrancer.federation.evidence.claims import (
    ClaimEvidence,
    open_signed_message,
    verify_claim_evidence,
)
from remembrancer.federation.evidence.equivocation import (
    EQUIVOCATION_HEADER,
    EquivocationEvidence,
    verify_equivocation,
)
from remembrancer.federation.evidence.parse import parse_evidence
from remembrancer.federation.receipts import Countersignature, FederationReceipt
from remembrancer.federation.registry.model import Registry
from remembrancer.federation.registry.scoring import PeerScores

ORIGIN = "alpha.example.org/dao:vaultmesh"
LOG_KEY = SigningKey.generate(b"\x07" * 32)
VKEY = format_vkey(ORIGIN, LOG_KEY.public)
OTHER_KEY = SigningKey.generate(b"\x08" * 32)


def entries(prefix: str, start: int, stop: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(start, stop)]


def fork(common: int, a_len: int, b_len: int) -> tuple[TileTree, TileTree]:
    """Two real trees that share ``common`` entries, then diverge."""
    ta, tb = TileTree(), TileTree()
    ta.append_many(entries("shared", 0, common) + entries("a", common, a_len))
    tb.append_many(entries("shared", 0, common) + entries("b", common, b_len))
    return ta, tb


def note(tree: TileTree, size: int, key: SigningKey = LOG_KEY, origin: str = ORIGIN) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, tree.root(size)), key)


TA, TB = fork(10, 15, 20)
NOTE_A15 = note(TA, 15)
NOTE_B15 = note(TB, 15)
NOTE_B20 = note(TB, 20)


# --- equivocation ------------------------------------------------------------------------------


def test_same_size_fork_is_conclusive_on_its_own() -> None:
    ev = EquivocationEvidence.build(VKEY, NOTE_B15, NOTE_A15)
    assert ev.prefix_root is None and ev.proof == ()
    text = ev.to_bytes()
    assert text.startswith(f"{EQUIVOCATION_HEADER}\norigin {ORIGIN}\nvkey {VKEY}\n".encode())
    again = EquivocationEvidence.parse(text)
    assert again == ev and again.to_bytes() == text
    report = verify_equivocation(again)
    assert report.conflict == "same_size" and report.kind == "equivocation"
    assert report.log_key == LOG_KEY.public and report.origin == ORIGIN
    assert {report.checkpoint_a.size, report.checkpoint_b.size} == {15}
    assert report.evidence_ref == ev.evidence_ref and report.evidence_ref.startswith("sha256:")
    json.dumps(report.to_dict())


@pytest.mark.parametrize(
    ("common", "a_len", "b_len", "small", "big", "big_branch"),
    [
        (10, 15, 20, 15, 20, "b"),
        (10, 15, 20, 12, 20, "b"),
        (10, 16, 20, 16, 20, "b"),  # the smaller size is a power of two
        (3, 40, 300, 40, 300, "b"),  # the larger tree spans two tiles
        (0, 1, 2, 1, 2, "b"),  # the branches differ from the first entry
        (10, 25, 20, 11, 25, "a"),  # the smaller checkpoint is on the other branch
    ],
)
def test_different_sizes_fork_with_prefix_proof(
    common: int, a_len: int, b_len: int, small: int, big: int, big_branch: str
) -> None:
    ta, tb = fork(common, a_len, b_len)
    big_tree, small_tree = (tb, ta) if big_branch == "b" else (ta, tb)
    ev = EquivocationEvidence.build(VKEY, note(big_tree, big), note(small_tree, small), big_tree)
    assert ev.checkpoint_a.size == small and ev.checkpoint_b.size == big
    assert ev.prefix_root == big_tree.root(small) != small_tree.root(small)
    report = verify_equivocation(EquivocationEvidence.parse(ev.to_bytes()))
    assert report.conflict == "prefix_mismatch"
    assert report.prefix_root == big_tree.root(small)


def test_size_zero_checkpoint_with_a_non_empty_root() -> None:
    bogus = sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), LOG_KEY)
    ev = EquivocationEvidence.build(VKEY, bogus, NOTE_B20, TB)
    assert ev.prefix_root == EMPTY_ROOT and ev.proof == ()
    assert verify_equivocation(ev).conflict == "prefix_mismatch"
    honest_empty = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), LOG_KEY)
    with pytest.raises(VerificationError) as e:
        EquivocationEvidence.build(VKEY, honest_empty, NOTE_B20, TB)
    assert e.value.code == "equivocation_not_conflicting"
    with pytest.raises(VerificationError) as e:
        verify_equivocation(replace_fields(ev, prefix_root=bytes(32)))
    assert e.value.code == "equivocation_proof_invalid"


def test_cosignatures_travel_with_the_notes_and_one_fork_is_one_incident() -> None:
    plain = EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B15)
    n = Note.from_bytes(NOTE_A15)
    witness = SigningKey.generate(b"\x33" * 32)
    cosigned = n.with_signatures([cosign(n.text, witness, "w.example/w1", 1_764_100_000)])
    rich = EquivocationEvidence.build(VKEY, cosigned.to_bytes(), NOTE_B15)
    assert cosigned.to_bytes() in (rich.note_a, rich.note_b)
    assert verify_equivocation(rich).incident == verify_equivocation(plain).incident
    assert rich.evidence_ref != plain.evidence_ref


def replace_fields(ev: EquivocationEvidence, **changes: Any) -> EquivocationEvidence:
    fields: dict[str, Any] = {
        "origin": ev.origin,
        "log_vkey": ev.log_vkey,
        "note_a": ev.note_a,
        "note_b": ev.note_b,
        "prefix_root": ev.prefix_root,
        "proof": ev.proof,
    }
    fields.update(changes)
    return EquivocationEvidence(**fields)


def test_wrong_vkey_is_refused() -> None:
    ev = EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B15)
    with pytest.raises(VerificationError) as e:
        verify_equivocation(replace_fields(ev, log_vkey=format_vkey(ORIGIN, OTHER_KEY.public)))
    assert e.value.code == "equivocation_note_unsigned"
    assert e.value.details == {"note": "a", "cause": "checkpoint_unsigned"}
    with pytest.raises(VerificationError) as e:
        verify_equivocation(
            replace_fields(ev, log_vkey=format_vkey("beta.example", LOG_KEY.public))
        )
    assert e.value.code == "equivocation_vkey_mismatch"
    with pytest.raises(FormatError) as fe:
        replace_fields(ev, log_vkey="not+a+vkey")
    assert fe.value.code == "equivocation_vkey_invalid"


def ordered(x: bytes, y: bytes) -> tuple[bytes, bytes]:
    def key(n: bytes) -> tuple[int, bytes]:
        cp = Checkpoint.parse(Note.from_bytes(n).text)
        return (cp.size, cp.root_hash)

    return (x, y) if key(x) <= key(y) else (y, x)


def test_a_note_signed_by_another_key_is_refused() -> None:
    forged = note(TB, 15, key=OTHER_KEY)
    a, b = ordered(NOTE_A15, forged)
    with pytest.raises(VerificationError) as e:
        verify_equivocation(EquivocationEvidence(ORIGIN, VKEY, a, b))
    assert e.value.code == "equivocation_note_unsigned"
    assert e.value.details == {"note": "a" if a == forged else "b", "cause": "checkpoint_unsigned"}
    # a single flipped bit in the log signature
    n = Note.from_bytes(NOTE_B15)
    sig = n.signatures[0]
    bad = replace(sig, signature=bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    tampered = Note(n.text, (bad,)).to_bytes()
    with pytest.raises(VerificationError) as e:
        verify_equivocation(EquivocationEvidence(ORIGIN, VKEY, *ordered(NOTE_A15, tampered)))
    assert e.value.code == "equivocation_note_unsigned"
    assert e.value.details["cause"] == "checkpoint_signature_invalid"


def test_swapped_notes_are_refused() -> None:
    ev = EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B20, TB)
    swapped = ev.to_bytes().replace(b"note-a ", b"note-x ").replace(b"note-b ", b"note-a ")
    swapped = swapped.replace(b"note-x ", b"note-b ")
    with pytest.raises(FormatError) as e:
        EquivocationEvidence.parse(swapped)
    assert e.value.code == "equivocation_malformed"  # note-b line first
    lines = ev.to_bytes().split(b"\n")
    lines[3], lines[4] = b"note-a " + lines[4][7:], b"note-b " + lines[3][7:]
    with pytest.raises(FormatError) as e:
        EquivocationEvidence.parse(b"\n".join(lines))
    assert e.value.code == "equivocation_order"
    # a note of another log in place of note b
    stranger = note(TB, 20, origin="beta.example.org/dao:vaultmesh")
    with pytest.raises(VerificationError) as ve:
        verify_equivocation(replace_fields(ev, note_b=stranger))
    assert ve.value.code == "equivocation_origin_mismatch" and ve.value.details == {"note": "b"}


def test_consistent_checkpoints_presented_as_a_fork_are_refused() -> None:
    honest_15 = note(TB, 15)
    with pytest.raises(VerificationError) as e:
        EquivocationEvidence.build(VKEY, honest_15, NOTE_B20, TB)
    assert e.value.code == "equivocation_not_conflicting"
    # the holder lies about the prefix: the proof no longer verifies
    real = EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B20, TB)
    for fake in (TA.root(15), bytes(32)):
        with pytest.raises(VerificationError) as e:
            verify_equivocation(replace_fields(real, note_a=honest_15, prefix_root=fake))
        assert e.value.code == "equivocation_proof_invalid"
    # an honest prefix and proof, but for consistent checkpoints
    with pytest.raises(VerificationError) as e:
        verify_equivocation(replace_fields(real, note_a=honest_15))
    assert e.value.code == "equivocation_not_conflicting"
    # the same checkpoint twice
    with pytest.raises(VerificationError) as e:
        verify_equivocation(EquivocationEvidence(ORIGIN, VKEY, NOTE_B15, NOTE_B15))
    assert e.value.code == "equivocation_not_conflicting"
    # the proof from the wrong tree, or cut short
    with pytest.raises(VerificationError) as e:
        EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B20, TA)
    assert e.value.code == "equivocation_tree_mismatch"
    for proof in (tuple(TA.consistency_proof(12, 15)), real.proof[:-1], real.proof[::-1]):
        with pytest.raises(VerificationError) as e:
            verify_equivocation(replace_fields(real, proof=proof))
        assert e.value.code == "equivocation_proof_invalid"
    with pytest.raises(FormatError) as fe:
        EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B20)
    assert fe.value.code == "equivocation_tree_missing"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b"remembrancer.equivocation/v2" + b[28:], "equivocation_header"),
        (lambda b: b + b"proof AAAA\n", "equivocation_malformed"),
        (lambda b: b + b"\n", "equivocation_malformed"),
        (lambda b: b[:-1], "equivocation_malformed"),
        (lambda b: b.replace(b"\n", b"\r\n"), "equivocation_header"),
        (lambda b: b.replace(b"\nvkey", b"\r\nvkey"), "equivocation_malformed"),
        (lambda b: b.replace(b"origin ", b"origin  "), "equivocation_malformed"),
        (lambda b: b.replace(b"vkey ", b"key "), "equivocation_malformed"),
        (lambda b: b.replace(b"prefix ", b"proof "), "equivocation_malformed"),
        (lambda b: re.sub(rb"(prefix [A-Za-z0-9+/]+)=\n", rb"\1\n", b), "equivocation_malformed"),
        (lambda b: b + b"memo hello\n", "equivocation_malformed"),
        (lambda b: b"\xff" + b, "equivocation_malformed"),
        (lambda b: b + b"#" * (512 * 1024), "equivocation_too_large"),
    ],
)
def test_parse_is_strict(mutate: Any, code: str) -> None:
    good = EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B20, TB).to_bytes()
    with pytest.raises(FormatError) as e:
        EquivocationEvidence.parse(mutate(good))
    assert e.value.code == code


def test_structure_rules() -> None:
    with pytest.raises(FormatError) as e:
        EquivocationEvidence(ORIGIN, VKEY, *ordered(NOTE_A15, NOTE_B15), prefix_root=bytes(32))
    assert e.value.code == "equivocation_malformed"
    with pytest.raises(FormatError) as e:
        EquivocationEvidence(ORIGIN, VKEY, NOTE_A15, NOTE_B20)
    assert e.value.code == "equivocation_malformed"
    with pytest.raises(FormatError) as e:
        EquivocationEvidence(ORIGIN, VKEY, b"not a note", NOTE_B20, bytes(32))
    assert e.value.code == "equivocation_note_malformed"
    assert parse_evidence(EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B15).to_bytes())


def test_a_verified_fork_puts_the_log_owner_on_probation() -> None:
    registry = Registry.from_dict(
        {"federation_id": "vaultmesh-primary", "quorum": 1, "anchor_strategy": "hybrid",
         "peers": [{"did": "did:vm:node:alpha", "endpoint": "https://alpha.example.org",
                    "pubkey": LOG_KEY.did}]}
    )  # fmt: skip
    report = verify_equivocation(EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B20, TB))
    peer = registry.peer_by_key(report.log_key)
    assert peer is not None
    scores = PeerScores()
    change = scores.on_misbehaviour(peer.did, report, 1_764_100_000)
    assert (change.new, change.evidence_ref) == ("probation", report.evidence_ref)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    common=st.integers(0, 40),
    a_extra=st.integers(0, 40),
    b_extra=st.integers(1, 60),
    a_cut=st.integers(0, 100),
)
def test_verify_agrees_with_a_naive_consistency_check(
    common: int, a_extra: int, b_extra: int, a_cut: int
) -> None:
    """For random forks, evidence verifies exactly when A is not a prefix of B."""
    ta, tb = fork(common, common + a_extra, common + b_extra)
    b_size = tb.size
    a_size = min(ta.size, a_cut % (b_size + 1))
    na, nb = note(ta, a_size), note(tb, b_size)
    naive_consistent = ta.root(a_size) == tb.root(a_size)  # the naive rule: same prefix root
    if a_size == b_size and naive_consistent:
        return
    try:
        ev = EquivocationEvidence.build(VKEY, na, nb, tb)
    except VerificationError as e:
        assert naive_consistent and e.code == "equivocation_not_conflicting"
        return
    assert not naive_consistent
    assert verify_equivocation(EquivocationEvidence.parse(ev.to_bytes())).conflict in (
        "same_size",
        "prefix_mismatch",
    )


GOOD_FILE = EquivocationEvidence.build(VKEY, NOTE_A15, NOTE_B20, TB).to_bytes()


def _parse_and_verify(data: bytes) -> None:
    try:
        verify_equivocation(EquivocationEvidence.parse(data))
    except (FormatError, VerificationError):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_our_errors(data: bytes) -> None:
    _parse_and_verify(data)
    _parse_and_verify(EQUIVOCATION_HEADER.encode() + b"\n" + data)
    try:
        parse_evidence(data)
    except RemembrancerError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD_FILE)), st.integers(0, 255),
                          st.sampled_from(["flip", "delete", "insert"])),
                min_size=1, max_size=4))  # fmt: skip
def test_mutated_files_raise_only_our_errors(edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(GOOD_FILE)
    for pos, byte, op in edits:
        pos = min(pos, len(data) - 1)
        if op == "flip":
            data[pos] ^= byte or 1
        elif op == "delete":
            del data[pos]
        else:
            data.insert(pos, byte)
    _parse_and_verify(bytes(data))


# --- claim evidence: forged countersignatures and invalid anchor claims ------------------------

FED = "vaultmesh-primary"
P = [SigningKey.generate(bytes([0x50 + i]) * 32) for i in range(4)]
ALIASES = ["did:vm:node:east1", "did:vm:node:west1", "did:vm:node:north1", "did:vm:node:south1"]
REGISTRY = Registry.from_dict(
    {
        "federation_id": FED,
        "quorum": 2,
        "anchor_strategy": "collaborative",
        "peers": [
            {
                "did": alias,
                "endpoint": f"https://{alias.rsplit(':', 1)[1]}.example",
                "pubkey": k.did,
            }
            for alias, k in zip(ALIASES, P, strict=True)
        ],
    }
)
NOW = 1_764_100_000
LOG_NOTE = sign_checkpoint(Checkpoint(ORIGIN, 20, TB.root(20)), LOG_KEY)
DIGEST = checkpoint_digest(Note.from_bytes(LOG_NOTE).text.encode())


def make_receipt(root: bytes = DIGEST, status: str = "verified") -> FederationReceipt:
    anchor = Anchor("rfc3161:tsa", root, status, tx_ref="tsr-1", anchor_ts=NOW,  # type: ignore[arg-type]
                    evidence={"tsr": "AAAA"})  # fmt: skip
    return FederationReceipt(FED, "dao:vaultmesh", ORIGIN, LOG_NOTE, anchor)


def message(sender_key: SigningKey, content: dict[str, Any], *, mtype: str = "anchor",
            sender: str | None = None, seq: int = 1) -> bytes:  # fmt: skip
    """A DESIGN 3.10 federation message in its canonical wire form."""
    body = {
        "type": mtype,
        "federation_id": FED,
        "sender": sender or ALIASES[P.index(sender_key)],
        "seq": seq,
        "timestamp": NOW,
        "content": content,
    }
    body["signature"] = b64url_encode(sender_key.sign(canonicalize(body)))
    return canonicalize(body)


def forged_setup() -> tuple[FederationReceipt, bytes]:
    """P1 (west1) proposes a receipt carrying its own countersignature and a forged one of P2."""
    r = make_receipt()
    r = r.with_signature(r.countersign(P[1], "anchor", NOW))
    real = r.countersign(P[2], "witness", NOW + 1)
    r = r.with_signature(Countersignature(real.node, real.role, real.timestamp, P[3].sign(b"x")))
    msg = message(P[1], {"namespace": "dao:vaultmesh", "receipt": r.to_dict()})
    return r, msg


def claim(
    kind: str,
    msg: bytes,
    *,
    accused: SigningKey = P[1],
    countersigner: str | None = None,
    finding: str = "signature_invalid",
    receipt_at: str = "/content/receipt",
    reporter: SigningKey = P[0],
) -> ClaimEvidence:
    return ClaimEvidence.create(
        kind=kind,  # type: ignore[arg-type]
        federation_id=FED,
        accused=accused.did,
        message=msg,
        receipt_at=receipt_at,
        countersigner=countersigner or accused.did,
        finding=finding,  # type: ignore[arg-type]
        reporter_key=reporter,
        reported_at=NOW + 60,
    )


def test_a_relayed_forged_countersignature_proves_nothing() -> None:
    """Regression (issue 14, rule 2): a message the accused signed that carries
    someone else's countersignature that does not verify was evidence against
    the accused; relaying is never misbehaviour, and an invalid signature is
    nobody's statement, so such evidence proves nothing, about anyone."""
    r, msg = forged_setup()
    from remembrancer.federation.protocol.contents import BundleContent
    from remembrancer.federation.protocol.wire import Message

    bundle = Message.sign(
        P[1], BundleContent("dao:vaultmesh", (r.to_dict(),), ()), federation_id=FED,
        seq=7, timestamp=NOW, sender="did:vm:node:west1",
    ).to_bytes()  # fmt: skip
    cases = [
        claim("forged_countersignature", msg, countersigner=P[2].did),
        claim("forged_countersignature", bundle, countersigner=P[2].did,
              receipt_at="/content/receipts/0"),
        # even when the junk names the accused itself
        claim("forged_countersignature", msg, countersigner=P[1].did),
        # or the accused and the "countersigner" are the same and the message is theirs
        claim("forged_countersignature", msg, accused=P[2], countersigner=P[2].did),
    ]  # fmt: skip
    for ev in cases:
        assert ClaimEvidence.parse(ev.to_bytes()) == ev  # older nodes made such files
        with pytest.raises(VerificationError) as e:
            verify_claim_evidence(ev, REGISTRY)
        assert e.value.code == "evidence_not_attributable"
    with pytest.raises(FormatError) as fe:
        PeerScores().on_misbehaviour(P[1].did, replace_kind("forged_countersignature"), NOW)
    assert fe.value.code == "misbehaviour_kind_invalid"


def replace_kind(kind: str) -> Any:
    from remembrancer.federation.registry.scoring import Misbehaviour

    return Misbehaviour(kind, "sha256:" + "aa" * 32, "sha256:" + "bb" * 32)


def test_evidence_about_strangers_or_for_another_federation_is_refused_first() -> None:
    _, msg = forged_setup()
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(
            claim("forged_countersignature", msg, accused=OTHER_KEY, countersigner=P[2].did),
            REGISTRY,
        )
    assert e.value.code == "evidence_accused_unknown"


def test_the_report_must_be_signed_by_its_reporter_and_for_this_federation() -> None:
    _, msg = forged_setup()
    ev = claim("forged_countersignature", msg, countersigner=P[2].did)
    tampered = replace(ev, reported_at=ev.reported_at + 1)
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(tampered, REGISTRY)
    assert e.value.code == "evidence_report_signature_invalid"
    other_fed = Registry.from_dict({**REGISTRY.to_dict(), "federation_id": "elsewhere"})
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(ev, other_fed)
    assert e.value.code == "evidence_federation_mismatch"


def test_invalid_anchor_claim_root_mismatch() -> None:
    r = make_receipt(root=bytes(32))  # the anchored root is not the checkpoint's digest
    r = r.with_signature(r.countersign(P[1], "anchor", NOW))
    raw = canonicalize(r.to_dict())
    ev = claim("invalid_anchor_claim", raw, finding="root_mismatch", receipt_at="")
    report = verify_claim_evidence(ClaimEvidence.parse(ev.to_bytes()), REGISTRY)
    assert report.finding == "root_mismatch" and report.accused == "did:vm:node:west1"
    assert report.detail["checkpoint_digest"] == "sha256:" + DIGEST.hex()
    # the same claim inside a signed message is the same incident
    wrapped = message(P[2], {"namespace": "dao:vaultmesh", "receipt": r.to_dict()})
    again = verify_claim_evidence(claim("invalid_anchor_claim", wrapped, finding="root_mismatch"),
                                  REGISTRY)  # fmt: skip
    assert again.incident == report.incident


def test_invalid_anchor_claim_needs_the_accused_own_valid_countersignature() -> None:
    honest = make_receipt()
    honest = honest.with_signature(honest.countersign(P[1], "anchor", NOW))
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(claim("invalid_anchor_claim", canonicalize(honest.to_dict()),
                                    finding="root_mismatch", receipt_at=""), REGISTRY)  # fmt: skip
    assert e.value.code == "evidence_not_misbehaviour"
    bad = make_receipt(root=bytes(32))
    framed = bad.with_signature(Countersignature(P[1].did, "anchor", NOW, P[2].sign(b"frame")))
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(claim("invalid_anchor_claim", canonicalize(framed.to_dict()),
                                    finding="root_mismatch", receipt_at=""), REGISTRY)  # fmt: skip
    assert e.value.code == "evidence_not_attributable"
    unsigned = bad.with_signature(bad.countersign(P[2], "witness", NOW))
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(claim("invalid_anchor_claim", canonicalize(unsigned.to_dict()),
                                    finding="root_mismatch", receipt_at=""), REGISTRY)  # fmt: skip
    assert e.value.code == "evidence_claim_not_found"


def test_invalid_anchor_claim_rail_failed() -> None:
    r = make_receipt()
    r = r.with_signature(r.countersign(P[1], "witness", NOW))
    ev = claim("invalid_anchor_claim", canonicalize(r.to_dict()), finding="rail_failed",
               receipt_at="")  # fmt: skip

    def failed(a: Anchor) -> Anchor:
        return replace(a, status="failed", verifier="test rail", error="imprint mismatch")

    report = verify_claim_evidence(ev, REGISTRY, reverify=failed)
    assert report.detail["rail_error"] == "imprint mismatch"
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(ev, REGISTRY, reverify=lambda a: a)
    assert e.value.code == "evidence_not_misbehaviour"
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(ev, REGISTRY)
    assert e.value.code == "evidence_rail_unavailable"
    pending = make_receipt(status="submitted")
    pending = pending.with_signature(pending.countersign(P[1], "witness", NOW))
    with pytest.raises(VerificationError) as e:
        verify_claim_evidence(claim("invalid_anchor_claim", canonicalize(pending.to_dict()),
                                    finding="rail_failed", receipt_at=""), REGISTRY,
                              reverify=failed)  # fmt: skip
    assert e.value.code == "evidence_not_misbehaviour"


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(extra=1),
        lambda d: d.pop("finding"),
        lambda d: d.update(type="remembrancer.evidence/v2"),
        lambda d: d.update(kind="rudeness"),
        lambda d: d.update(finding="root_mismatch"),  # not a finding of a forgery
        lambda d: d.update(accused="did:vm:node:west1"),
        lambda d: d.update(message="not base64!"),
        lambda d: d.update(message=""),
        lambda d: d.update(receipt_at="content/receipt"),
        lambda d: d.update(reported_at=-1),
        lambda d: d.update(reported_at=1.5),
        lambda d: d.update(signature="AAAA"),
        lambda d: d.update(kind="invalid_anchor_claim", finding="root_mismatch"),  # countersigner
    ],
)
def test_claim_evidence_parse_is_strict(edit: Any) -> None:
    _, msg = forged_setup()
    d = claim("forged_countersignature", msg, countersigner=P[2].did).to_dict()
    edit(d)
    with pytest.raises(FormatError) as e:
        ClaimEvidence.parse(json.dumps(d).encode())
    assert e.value.code == "evidence_malformed"


def test_open_signed_message() -> None:
    _, msg = forged_setup()
    assert open_signed_message(msg, P[1].public)["sender"] == "did:vm:node:west1"
    with pytest.raises(VerificationError) as e:
        open_signed_message(msg, P[2].public)
    assert e.value.code == "message_signature_invalid"
    for bad in (b"[]", b"{", json.dumps({"signature": "@@"}).encode()):
        with pytest.raises(FormatError) as fe:
            open_signed_message(bad, P[1].public)
        assert fe.value.code == "message_malformed"


_, _FORGED_MSG = forged_setup()
GOOD_CLAIM = claim("forged_countersignature", _FORGED_MSG, countersigner=P[2].did).to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD_CLAIM)), st.integers(0, 255),
                          st.sampled_from(["flip", "delete", "insert"])),
                min_size=1, max_size=3))  # fmt: skip
def test_mutated_claim_evidence_raises_only_our_errors(edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(GOOD_CLAIM)
    for pos, byte, op in edits:
        pos = min(pos, len(data) - 1)
        if op == "flip":
            data[pos] ^= byte or 1
        elif op == "delete":
            del data[pos]
        else:
            data.insert(pos, byte)
    try:
        ev = parse_evidence(bytes(data))
        if isinstance(ev, ClaimEvidence):
            verify_claim_evidence(ev, REGISTRY)
    except RemembrancerError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["message", "receipt_at", "countersigner", "accused"]),
                       st.one_of(st.text(max_size=40), st.integers(), st.none()), max_size=4))  # fmt: skip
def test_mutated_claim_fields_raise_only_our_errors(changes: dict[str, Any]) -> None:
    d = json.loads(GOOD_CLAIM)
    d.update(changes)
    if isinstance(d.get("message"), str) and "message" in changes:
        d["message"] = base64.b64encode(d["message"].encode()).decode()
    try:
        verify_claim_evidence(ClaimEvidence.parse(json.dumps(d).encode()), REGISTRY)
    except RemembrancerError:
        pass


def test_an_origin_with_unusual_characters_round_trips() -> None:
    origin = "ünïcode.example/dao:x\x7f"
    key = SigningKey.generate(b"\x09" * 32)
    ta, tb = fork(2, 5, 5)
    ev = EquivocationEvidence.build(
        format_vkey(origin, key.public), note(ta, 5, key, origin), note(tb, 5, key, origin)
    )
    assert EquivocationEvidence.parse(ev.to_bytes()) == ev
    assert verify_equivocation(ev).origin == origin
