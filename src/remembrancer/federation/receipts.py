"""Countersigned federation receipts (the seed's "geo-redundant proofs").

The node that anchored a checkpoint proposes a federation receipt; every peer
re-verifies the rail evidence with its own trust settings and the checkpoint
with the log's key, then countersigns; at ``quorum`` distinct active peers the
receipt is final.  Format (JSON, the seed's fields plus the evidence)::

    {
      "type": "remembrancer.federation-receipt/v1",
      "federation_id": "vaultmesh-primary",
      "receipt_type": "anchor_federation",
      "namespace": "dao:vaultmesh",
      "origin": "alpha.example.org/dao:vaultmesh",
      "anchor": {"batch_root": "sha256:…", "target": "rfc3161:tsa", "tx_hash": "…",
                 "block": null, "timestamp": 1764100000},
      "evidence": {"checkpoint": "<signed note>", "anchor": {<anchor, as in receipt.v1>}},
      "signatures": [{"node": "did:key:…", "role": "anchor|witness", "timestamp": 1764100001,
                      "sig": "<base64url Ed25519>"}],
      "quorum_met": true,
      "finalized_at": 1764100002
    }

Every signature signs the RFC 8785 canonical form of the *statement*: the
receipt without ``signatures``, ``quorum_met`` and ``finalized_at``, with the
signer's ``node``, ``role`` and ``timestamp`` added under ``"countersigner"``.
So a signature commits to the checkpoint, the anchor and its evidence, and to
who signed when.  ``verify_federation_receipt`` checks, offline, that at least
``quorum`` distinct keys of active registry peers signed, that they span at
least ``min_regions`` distinct regions as the registry lists them (a
signer's region is part of its signed registry entry, never a claim in the
receipt; a node adds a ``regions`` summary when it stores a final receipt,
which nothing reads back as evidence), and that the anchor
covers the evidence checkpoint (:func:`remembrancer.core.anchor.covers`): its
root is the SHA-256 of the checkpoint body, or, for an aggregated anchor
(collaborative anchoring), the aggregation path in ``evidence.anchor`` leads
from that digest to the anchored root (``anchor.batch_root``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from remembrancer.core.anchor import Anchor, checkpoint_digest, require_covers
from remembrancer.core.encoding import b64url_decode, b64url_encode
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.note import Note

TYPE = "remembrancer.federation-receipt/v1"
Role = Literal["anchor", "witness"]


@dataclass(frozen=True, slots=True)
class Countersignature:
    node: str  # the signer's DID (did:key)
    role: Role
    timestamp: int
    sig: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "role": self.role,
            "timestamp": self.timestamp,
            "sig": b64url_encode(self.sig),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Countersignature:
        if not isinstance(d, dict) or set(d) != {"node", "role", "timestamp", "sig"}:
            raise FormatError(
                "a countersignature has node, role, timestamp and sig", code="receipt_malformed"
            )
        if (
            d["role"] not in ("anchor", "witness")
            or type(d["timestamp"]) is not int
            or not isinstance(d["node"], str)
        ):
            raise FormatError(
                "countersignature fields have the wrong types", code="receipt_malformed"
            )
        return cls(d["node"], d["role"], d["timestamp"], b64url_decode(d["sig"], what="sig"))


@dataclass(frozen=True, slots=True)
class FederationReceipt:
    federation_id: str
    namespace: str
    origin: str
    checkpoint: bytes  # the signed note that was anchored
    anchor: Anchor
    signatures: tuple[Countersignature, ...] = ()
    finalized_at: int | None = None

    @property
    def id(self) -> str:
        """A stable identity: ``<hex checkpoint digest>/<target>/<txRef>``.

        For a direct anchor the checkpoint digest is the anchored root.  An
        aggregated anchor is shared by every checkpoint in its tree, so the
        digest of this receipt's own checkpoint tells the receipts apart
        (FormatError if that checkpoint is not a note)."""
        a = self.anchor
        digest = a.root if a.aggregation is None else self.checkpoint_digest
        return f"{digest.hex()}/{a.target}/{a.tx_ref}"

    @property
    def checkpoint_digest(self) -> bytes:
        """SHA-256 of the evidence checkpoint's body (FormatError if it is not a note)."""
        return checkpoint_digest(Note.from_bytes(self.checkpoint).text.encode("utf-8"))

    def statement(self) -> dict[str, Any]:
        a = self.anchor
        return {
            "type": TYPE,
            "federation_id": self.federation_id,
            "receipt_type": "anchor_federation",
            "namespace": self.namespace,
            "origin": self.origin,
            "anchor": {
                "batch_root": "sha256:" + a.root.hex(),
                "target": a.target,
                "tx_hash": a.tx_ref,
                "block": a.block_number,
                "timestamp": a.anchor_ts,
            },
            "evidence": {"checkpoint": self.checkpoint.decode("utf-8"), "anchor": a.to_dict()},
        }

    def signing_input(self, node: str, role: str, timestamp: int) -> bytes:
        body = self.statement()
        body["countersigner"] = {"node": node, "role": role, "timestamp": timestamp}
        return canonicalize(body)

    def countersign(self, key: SigningKey, role: Role, timestamp: int) -> Countersignature:
        sig = key.sign(self.signing_input(key.did, role, timestamp))
        return Countersignature(key.did, role, timestamp, sig)

    def with_signature(self, cs: Countersignature) -> FederationReceipt:
        kept = [s for s in self.signatures if s.node != cs.node]
        return replace(self, signatures=(*kept, cs))

    def to_dict(self, *, quorum: int | None = None) -> dict[str, Any]:
        out = self.statement()
        out["signatures"] = [s.to_dict() for s in self.signatures]
        out["quorum_met"] = (
            self.finalized_at is not None if quorum is None else len(self.signatures) >= quorum
        )
        out["finalized_at"] = self.finalized_at
        return out

    @classmethod
    def from_dict(cls, d: Any) -> FederationReceipt:
        if not isinstance(d, dict) or d.get("type") != TYPE:
            raise FormatError(f"not a {TYPE}", code="receipt_malformed")
        try:
            evidence = d["evidence"]
            anchor = Anchor.from_dict(evidence["anchor"])
            note = evidence["checkpoint"].encode("utf-8")
            receipt = cls(
                federation_id=str(d["federation_id"]),
                namespace=str(d["namespace"]),
                origin=str(d["origin"]),
                checkpoint=note,
                anchor=anchor,
                signatures=tuple(Countersignature.from_dict(s) for s in d.get("signatures", [])),
                finalized_at=d.get("finalized_at"),
            )
        except (KeyError, TypeError, AttributeError, UnicodeError) as e:
            raise FormatError(f"malformed federation receipt: {e}", code="receipt_malformed") from e
        # The summary fields must agree with the evidence they summarise.
        if (
            d.get("anchor") != receipt.statement()["anchor"]
            or d.get("receipt_type") != "anchor_federation"
        ):
            raise FormatError(
                "the anchor summary does not match the evidence", code="receipt_malformed"
            )
        return receipt


@dataclass(frozen=True, slots=True)
class FederationReceiptReport:
    signers: tuple[str, ...]
    quorum: int
    root_matches_checkpoint: bool
    regions: tuple[str, ...] = ()  # the distinct registry regions of the counted signers
    min_regions: int = 0


def signer_regions(signers: Sequence[str], regions: Mapping[str, str | None]) -> tuple[str, ...]:
    """The distinct regions (sorted) that the registry gives ``signers``; a
    signer without a region adds none."""
    return tuple(sorted({r for s in signers if (r := regions.get(s))}))


def verify_countersignature(
    receipt: FederationReceipt, cs: Countersignature, key: PublicKey
) -> bool:
    return key.verify(receipt.signing_input(cs.node, cs.role, cs.timestamp), cs.sig)


def verified_countersignatures(
    receipt: FederationReceipt, peers: Mapping[str, PublicKey]
) -> tuple[FederationReceipt, tuple[tuple[Countersignature, str], ...]]:
    """``receipt`` with only the countersignatures that verify against the registry.

    ``peers`` maps each registry peer's DID to its key (every status: a peer on
    probation still made a valid signature).  A countersignature is kept when
    its ``node`` is a registry DID and it verifies under that peer's key, once
    per key.  What a node stores and relays goes through this filter, so a
    node never vouches for a signature it did not check (docs/spec/federation.md,
    "Evidence").  Returns the filtered receipt and each dropped countersignature
    with why: ``countersignature_signer_unknown``, ``countersignature_invalid``
    or ``countersignature_duplicate``.
    """
    kept: list[Countersignature] = []
    dropped: list[tuple[Countersignature, str]] = []
    keys_seen: set[bytes] = set()
    for cs in receipt.signatures:
        key = peers.get(cs.node)
        if key is None:
            dropped.append((cs, "countersignature_signer_unknown"))
        elif not verify_countersignature(receipt, cs, key):
            dropped.append((cs, "countersignature_invalid"))
        elif key.raw in keys_seen:
            dropped.append((cs, "countersignature_duplicate"))
        else:
            kept.append(cs)
            keys_seen.add(key.raw)
    if not dropped:
        return receipt, ()
    return replace(receipt, signatures=tuple(kept)), tuple(dropped)


def verify_federation_receipt(
    receipt: FederationReceipt,
    peers: Mapping[str, PublicKey],
    quorum: int,
    *,
    active: Sequence[str] | None = None,
    regions: Mapping[str, str | None] | None = None,
    min_regions: int = 0,
) -> FederationReceiptReport:
    """Offline: at least ``quorum`` distinct active peers' keys countersigned it,
    those signers span at least ``min_regions`` distinct regions, and the
    anchor covers the evidence checkpoint (its root is the SHA-256 of the
    checkpoint body, or its aggregation path leads from that digest to the
    root).

    ``peers`` maps each registry peer's DID to its key; ``active`` (default:
    all) lists the DIDs whose status is ``active``; ``regions`` maps each
    registry DID to the region the *registry* gives it (never anything the
    receipt says).  Signatures by unknown or inactive peers, invalid
    signatures and repeated keys do not count, and a signer without a region
    counts for the quorum only.  VerificationError ``receipt_quorum_not_met``
    or ``receipt_regions_not_met`` (the geo-redundancy policy).
    """
    require_covers(receipt.anchor, receipt.checkpoint_digest, code="receipt_root_mismatch")
    allowed = set(active if active is not None else peers)
    counted: list[str] = []
    keys_seen: set[bytes] = set()
    for cs in receipt.signatures:
        key = peers.get(cs.node)
        if key is None or cs.node not in allowed or key.raw in keys_seen:
            continue
        if verify_countersignature(receipt, cs, key):
            counted.append(cs.node)
            keys_seen.add(key.raw)
    if len(counted) < quorum:
        raise VerificationError(
            f"{len(counted)} valid countersignatures from active peers; the federation requires {quorum}",
            code="receipt_quorum_not_met",
            details={"counted": counted, "quorum": quorum},
        )
    spanned = signer_regions(counted, regions or {})
    if len(spanned) < min_regions:
        raise VerificationError(
            f"the {len(counted)} valid countersignatures span {len(spanned)} regions"
            f" ({', '.join(spanned) or 'none'}); the federation requires {min_regions}",
            code="receipt_regions_not_met",
            details={"counted": counted, "regions": list(spanned), "min_regions": min_regions},
        )
    return FederationReceiptReport(tuple(counted), quorum, True, spanned, min_regions)
