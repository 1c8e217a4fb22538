"""Geo-redundant federation receipts: peers' registry regions and the policy
``receipts.min_regions`` (the seed's "geo-redundant proofs")."""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from typing import Any

import pytest

from remembrancer.core.anchor import Anchor, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import ConfigError, FormatError, PolicyError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note
from remembrancer.core.record import sign_envelope, unsigned_envelope
from remembrancer.federation.receipts import FederationReceipt, verify_federation_receipt
from remembrancer.federation.registry.model import Registry
from remembrancer.federation.registry.proposals import RegistryState
from remembrancer.log.schemas import bundled_schemas

FED = "geo-fed"
LOG = SigningKey.generate()
PEERS = [SigningKey.generate() for _ in range(4)]
REGIONS = ["eu-west", "eu-west", "us-east", "ap-south"]
NOTE = sign_checkpoint(Checkpoint("alpha.test/dao:vaultmesh", 10, bytes(range(32))), LOG)
ROOT = checkpoint_digest(Note.from_bytes(NOTE).text.encode())


def doc(min_regions: int | None = 2, regions: list[str | None] | None = None) -> dict[str, Any]:
    peers = []
    for k, region in zip(PEERS, regions or REGIONS, strict=True):
        peer: dict[str, Any] = {"did": k.did, "endpoint": "http://127.0.0.1:9", "pubkey": k.did}
        if region is not None:
            peer["region"] = region
        peers.append(peer)
    out: dict[str, Any] = {"federation_id": FED, "quorum": 2, "anchor_strategy": "independent",
                           "peers": peers}  # fmt: skip
    if min_regions is not None:
        out["receipts"] = {"min_regions": min_regions}
    return out


def signed_by(*signers: int) -> FederationReceipt:
    anchor = Anchor("rfc3161:tsa", ROOT, "verified", tx_ref="abc", anchor_ts=1_764_100_000,
                    evidence={"tsr": "AAA"})  # fmt: skip
    r = FederationReceipt(FED, "dao:vaultmesh", "alpha.test/dao:vaultmesh", NOTE, anchor)
    for i in signers:
        r = r.with_signature(r.countersign(PEERS[i], "witness", 1))
    return r


def check(registry: Registry, r: FederationReceipt) -> Any:
    return verify_federation_receipt(
        r, {p.did: p.pubkey for p in registry.peers}, registry.quorum,
        regions=registry.regions(), min_regions=registry.receipt_regions,
    )  # fmt: skip


def test_regions_are_part_of_the_registry_and_its_digest() -> None:
    reg = Registry.from_dict(doc())
    assert reg.receipt_regions == 2
    assert reg.regions()[PEERS[2].did] == "us-east"
    assert reg.active_regions() == {"eu-west", "us-east", "ap-south"}
    again = Registry.from_dict(reg.to_dict())
    assert again == reg and again.digest() == reg.digest()
    assert reg.to_dict()["receipts"] == {"min_regions": 2}
    # A region changes the signed registry: another digest.
    moved = Registry.from_dict(doc(regions=["eu-west", "eu-west", "us-east", "eu-west"]))
    assert moved.digest() != reg.digest()
    # A registry without regions keeps the form (and digest) it always had.
    plain = Registry.from_dict(doc(None, [None] * 4))
    assert "receipts" not in plain.to_dict()
    assert all("region" not in p for p in plain.to_dict()["peers"])
    # The record payload carries them, and the bundled schema accepts it.
    payload = reg.registry_record_payload()
    bundled_schemas().validate("federation.registry.set@1.0.0", payload)
    assert Registry.from_record_payload(payload) == reg


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (lambda d: d["peers"][0].update(region="not a region"), "peer_region_invalid"),
        (lambda d: d["peers"][0].update(region=7), "peer_region_invalid"),
        (lambda d: d.update(receipts={"min_regions": -1}), "receipt_regions_invalid"),
        (lambda d: d.update(receipts={"min_regions": True}), "receipt_regions_invalid"),
        (lambda d: d.update(receipts={"min_regions": 1, "other": 2}), "receipt_regions_invalid"),
        (lambda d: d.update(receipts={"min_regions": 4}), "receipt_regions_unreachable"),
        # Regions of peers that are not active do not count towards reachability.
        (lambda d: (d["peers"][3].update(status="suspended"), d.update(receipts={"min_regions": 3})),
         "receipt_regions_unreachable"),
    ],
)  # fmt: skip
def test_bad_region_settings_are_refused_naming_the_key(edit: Any, code: str) -> None:
    d = doc()
    edit(d)
    with pytest.raises(ConfigError) as e:
        Registry.from_dict(d, source="federation.yaml")
    assert e.value.code == code
    assert e.value.message.startswith("federation.yaml: ")


def test_a_quorum_that_spans_too_few_regions_is_not_final() -> None:
    reg = Registry.from_dict(doc())
    # Two signatures: the quorum, but both in eu-west.
    with pytest.raises(VerificationError) as e:
        check(reg, signed_by(0, 1))
    assert e.value.code == "receipt_regions_not_met"
    assert e.value.details["regions"] == ["eu-west"]
    # Two signers in two regions: final, and the report names the regions.
    report = check(reg, signed_by(0, 2))
    assert report.regions == ("eu-west", "us-east") and report.min_regions == 2
    # Three signers, two regions: final.
    assert check(reg, signed_by(0, 1, 3)).regions == ("ap-south", "eu-west")
    # Without the policy the same quorum is final.
    assert check(replace(reg, receipt_regions=0), signed_by(0, 1)).regions == ("eu-west",)


def test_regions_come_from_the_registry_never_from_the_signer() -> None:
    reg = Registry.from_dict(doc(regions=["eu-west", "eu-west", None, "us-east"]))
    # A signer without a registry region counts for the quorum, never for a region.
    with pytest.raises(VerificationError) as e:
        check(reg, signed_by(0, 2))
    assert e.value.code == "receipt_regions_not_met"
    # Whatever region the stored form of a receipt claims is ignored.
    r = signed_by(0, 1)
    claimed = r.to_dict(quorum=2)
    claimed["regions"] = {"signed": ["eu-west", "us-east"], "min_regions": 2}
    with pytest.raises(VerificationError) as e:
        check(reg, FederationReceipt.from_dict(claimed))
    assert e.value.code == "receipt_regions_not_met"
    # An invalid or inactive signer's region does not count.
    bad = signed_by(0)
    forged = bad.countersign(SigningKey.generate(), "witness", 1)
    forged = replace(forged, node=PEERS[3].did)
    with pytest.raises(VerificationError):
        check(reg, bad.with_signature(forged).with_signature(signed_by(1).signatures[0]))
    suspended = Registry.from_dict(
        {**doc(regions=["eu-west", "eu-west", None, "us-east"]), "peers": [
            {**p, "status": "suspended"} if i == 3 else p
            for i, p in enumerate(doc(regions=["eu-west", "eu-west", None, "us-east"])["peers"])]}
        | {"receipts": {"min_regions": 1}}
    )  # fmt: skip
    with pytest.raises(VerificationError) as e:
        verify_federation_receipt(
            signed_by(0, 3), {p.did: p.pubkey for p in suspended.peers}, 2,
            active=[p.did for p in suspended.active_peers()], regions=suspended.regions(),
            min_regions=2,
        )  # fmt: skip
    assert e.value.code == "receipt_quorum_not_met"


def _proposal(registry: Registry, actor: SigningKey, witnesses: list[SigningKey]) -> Any:
    from remembrancer.core.record import Record

    env = unsigned_envelope(
        namespace=f"fed:{FED}", schema="federation.registry.set@1.0.0",
        payload=registry.registry_record_payload(), actor=actor.did,
        event_id=f"p-{os.urandom(4).hex()}", timestamp=1_764_100_000,
        nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
    )  # fmt: skip
    return Record.from_bytes(sign_envelope(env, actor, witnesses).leaf)


def test_regions_and_the_policy_change_only_by_quorum_proposals() -> None:
    reg = Registry.from_dict(doc(0))
    state = RegistryState(reg)
    stricter = replace(reg, receipt_regions=3)
    state2 = state.propose(_proposal(stricter, PEERS[0], [PEERS[1]]), 1_764_100_000)
    pid = next(iter(state2.pending))
    applied = state2.apply(pid, 1_764_100_001)
    assert applied.registry.receipt_regions == 3
    # A policy no set of active peers could meet is refused as a proposal.
    impossible = replace(reg, receipt_regions=4)
    with pytest.raises(PolicyError) as e:
        state.propose(_proposal(impossible, PEERS[0], []), 1_764_100_000)
    assert e.value.code == "receipt_regions_unreachable"
    # A peer cannot move itself: its region is in the registry entry everyone signed.
    moved = reg.with_peer(replace(reg.peer(PEERS[0].did), region="us-east"))
    lone = state.propose(_proposal(moved, PEERS[0], []), 1_764_100_000)
    assert not lone.ready(next(iter(lone.pending)))


def test_a_malformed_region_in_a_record_payload_is_refused() -> None:
    payload = Registry.from_dict(doc()).registry_record_payload()
    payload["registry"]["peers"][0]["region"] = "bad region"
    with pytest.raises(FormatError) as e:
        Registry.from_record_payload(payload)
    assert e.value.code == "peer_region_invalid"
    payload["registry"]["peers"][0]["region"] = "eu-west"
    payload["registry"]["receipts"] = {"min_regions": "2"}
    with pytest.raises(FormatError) as e:
        Registry.from_record_payload(payload)
    assert e.value.code == "receipt_regions_invalid"
