"""Federation receipts: countersigning, quorum, and every forgery refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from remembrancer.core.anchor import Anchor, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    verified_countersignatures,
    verify_federation_receipt,
)

LOG = SigningKey.generate()
PEERS = [SigningKey.generate() for _ in range(4)]
KEYS = {k.did: k.public for k in PEERS}
NOTE = sign_checkpoint(Checkpoint("alpha.test/dao:vaultmesh", 10, bytes(range(32))), LOG)
ROOT = checkpoint_digest(Note.from_bytes(NOTE).text.encode())


def receipt() -> FederationReceipt:
    anchor = Anchor(
        "rfc3161:tsa",
        ROOT,
        "verified",
        tx_ref="abc",
        anchor_ts=1_764_100_000,
        evidence={"tsr": "AAA"},
    )
    r = FederationReceipt(
        "vaultmesh-primary", "dao:vaultmesh", "alpha.test/dao:vaultmesh", NOTE, anchor
    )
    r = r.with_signature(r.countersign(PEERS[0], "anchor", 1))
    for k in PEERS[1:3]:
        r = r.with_signature(r.countersign(k, "witness", 2))
    return r


def test_quorum_of_countersignatures_verifies_and_round_trips() -> None:
    r = receipt()
    report = verify_federation_receipt(r, KEYS, 3)
    assert set(report.signers) == {k.did for k in PEERS[:3]}
    again = FederationReceipt.from_dict(r.to_dict(quorum=3))
    assert again == r and r.to_dict(quorum=3)["quorum_met"] is True
    with pytest.raises(VerificationError) as e:
        verify_federation_receipt(r, KEYS, 4)
    assert e.value.code == "receipt_quorum_not_met"


def test_forged_duplicate_unknown_and_suspended_signatures_do_not_count() -> None:
    r = receipt()
    forged = Countersignature(PEERS[3].did, "witness", 3, bytes(64))
    stranger = SigningKey.generate()
    r2 = r.with_signature(forged).with_signature(r.countersign(stranger, "witness", 3))
    with pytest.raises(VerificationError):
        verify_federation_receipt(r2, KEYS, 4)
    # A suspended peer's (valid) countersignature does not count.
    with pytest.raises(VerificationError):
        verify_federation_receipt(r, KEYS, 3, active=[PEERS[0].did, PEERS[1].did, PEERS[3].did])
    # A peer claiming another peer's identity: B's key, A's DID.
    impostor = Countersignature(
        PEERS[3].did, "witness", 4, PEERS[0].sign(r.signing_input(PEERS[3].did, "witness", 4))
    )
    with pytest.raises(VerificationError):
        verify_federation_receipt(r.with_signature(impostor), KEYS, 4)


def test_tampering_with_the_evidence_breaks_every_signature() -> None:
    r = receipt()
    other = replace(r, anchor=replace(r.anchor, tx_ref="other"))
    with pytest.raises(VerificationError) as e:
        verify_federation_receipt(other, KEYS, 1)
    assert e.value.code == "receipt_quorum_not_met"
    wrong_root = replace(r, anchor=replace(r.anchor, root=bytes(32)))
    with pytest.raises(VerificationError) as e:
        verify_federation_receipt(wrong_root, KEYS, 1)
    assert e.value.code == "receipt_root_mismatch"
    d = r.to_dict()
    d["anchor"]["tx_hash"] = "zzz"  # the summary no longer matches the evidence
    with pytest.raises(FormatError):
        FederationReceipt.from_dict(d)


def test_the_relay_filter_keeps_only_countersignatures_that_verify_against_the_registry() -> None:
    r = receipt()
    stranger = SigningKey.generate()
    junk = [
        Countersignature(stranger.did, "witness", 3, r.countersign(stranger, "witness", 3).sig),
        Countersignature(PEERS[3].did, "witness", 3, bytes(64)),  # in a peer's name
        # a peer's real signature under another peer's DID
        Countersignature(PEERS[3].did, "witness", 4,
                         PEERS[0].sign(r.signing_input(PEERS[3].did, "witness", 4))),
        # a second valid signature by a key already kept
        r.countersign(PEERS[1], "witness", 9),
    ]  # fmt: skip
    carrying = replace(r, signatures=(*r.signatures, *junk))
    kept, dropped = verified_countersignatures(carrying, KEYS)
    assert kept.signatures == r.signatures
    assert [code for _, code in dropped] == [
        "countersignature_signer_unknown",
        "countersignature_invalid",
        "countersignature_invalid",
        "countersignature_duplicate",
    ]
    assert [cs for cs, _ in dropped] == junk
    # A receipt with nothing to drop is returned as it is.
    assert verified_countersignatures(r, KEYS) == (r, ())
    # A peer on probation or suspended still signs validly: kept (quorum is another matter).
    assert verified_countersignatures(r, {k.did: k.public for k in PEERS[:3]})[1] == ()
