"""Anchors and anchor receipts (DESIGN.md section 3.8), and the conflict order.

An *anchor* commits a 32-byte digest to an outside target (a "rail"):
``rfc3161:<tsa>``, ``eip155:<chain id>`` or ``btc:<network>``.  Its
``evidence`` is what anyone needs to re-verify it without trusting the node
(a DER TimeStampResp, a transaction reference, an ``.ots`` proof).  An
*anchor receipt* ties one log checkpoint to the anchors that cover it; an
anchor counts only once ``verified``.

Status machine (``allowed_transition``)::

    pending -> submitted -> verified -> reorged
       |           |            \\-> failed (evidence stopped verifying)
       \\-----------+--> failed

``reorged`` and ``failed`` are final for that anchor; the scheduler anchors
again with a new one.

The conflict order, the same on every node, for competing claims on the same
digest: verified before unverified; then ``btc`` > ``eip155`` > ``rfc3161``;
then the earliest anchor time; then the byte-wise smallest ``txRef``.  Losers
are kept with ``superseded_by``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from remembrancer.core.errors import FormatError

Status = Literal["pending", "submitted", "verified", "failed", "reorged"]
STATUSES: tuple[Status, ...] = ("pending", "submitted", "verified", "failed", "reorged")
CHAINS = {"rfc3161": "TSA", "eip155": "EVM", "btc": "BTC"}
_RANK = {"btc": 0, "eip155": 1, "rfc3161": 2}
MAX_ANCHORS = 64  # per receipt
_ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "submitted", "verified", "failed"}),
    "submitted": frozenset({"submitted", "verified", "failed"}),
    "verified": frozenset({"verified", "reorged", "failed"}),
    "failed": frozenset({"failed"}),
    "reorged": frozenset({"reorged"}),
}


def allowed_transition(old: str, new: str) -> bool:
    return new in _ALLOWED.get(old, frozenset())


def checkpoint_digest(checkpoint_body: bytes) -> bytes:
    """What is anchored for one log: SHA-256 of its checkpoint body."""
    return hashlib.sha256(checkpoint_body).digest()


@dataclass(frozen=True, slots=True)
class Finality:
    observed_depth: int = 0
    required_depth: int = 0
    state: Literal["pending", "final", "lost"] = "pending"

    def to_dict(self) -> dict[str, Any]:
        return {
            "observedDepth": self.observed_depth,
            "requiredDepth": self.required_depth,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finality:
        return cls(
            int(d.get("observedDepth", 0)),
            int(d.get("requiredDepth", 0)),
            d.get("state", "pending"),
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    """One commitment of ``root`` (32 bytes) to ``target``, with its evidence."""

    target: str
    root: bytes
    status: Status = "pending"
    tx_ref: str = ""
    block_number: int | None = None
    anchor_ts: int | None = None  # the target's own time for the commitment (genTime, block time)
    observed_at: int = 0  # when this node last checked it
    verifier: str = ""  # what checked it, e.g. "rfc3161-client, trust bundle sha256:..."
    finality: Finality = field(default_factory=Finality)
    evidence: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    superseded_by: str | None = None

    def __post_init__(self) -> None:
        scheme, sep, name = self.target.partition(":")
        if not sep or scheme not in CHAINS or not name:
            raise FormatError(
                f"anchor target {self.target!r} is not rfc3161:|eip155:|btc:<name>",
                code="anchor_target_invalid",
            )
        if len(self.root) != 32:
            raise FormatError("an anchored root is 32 bytes", code="anchor_root_invalid")
        if self.status not in STATUSES:
            raise FormatError(
                f"unknown anchor status {self.status!r}", code="anchor_status_invalid"
            )

    @property
    def scheme(self) -> str:
        return self.target.partition(":")[0]

    @property
    def network(self) -> str:
        return self.target.partition(":")[2]

    @property
    def chain(self) -> str:
        return CHAINS[self.scheme]

    @property
    def key(self) -> str:
        """A stable identity: target and txRef."""
        return f"{self.target}/{self.tx_ref}"

    def moved(self, status: Status, **changes: Any) -> Anchor:
        """This anchor in a new status (raises on a transition the machine forbids)."""
        if not allowed_transition(self.status, status):
            raise FormatError(
                f"an anchor cannot go from {self.status} to {status}",
                code="anchor_transition_invalid",
            )
        return replace(self, status=status, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The seed's ``receipt.v1`` anchor fields."""
        return {
            "target": self.target,
            "root": "sha256:" + self.root.hex(),
            "chain": self.chain,
            "network": self.network,
            "txRef": self.tx_ref,
            "blockNumber": self.block_number,
            "anchorTs": self.anchor_ts,
            "observedAt": self.observed_at,
            "status": self.status,
            "verifier": self.verifier,
            "finality": self.finality.to_dict(),
            "evidence": dict(self.evidence),
            "error": self.error,
            "superseded_by": self.superseded_by,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Anchor:
        try:
            root_text = d["root"]
            if not isinstance(root_text, str) or not root_text.startswith("sha256:"):
                raise FormatError("root must be sha256:<hex>", code="anchor_root_invalid")
            return cls(
                target=d["target"],
                root=bytes.fromhex(root_text[7:]),
                status=d.get("status", "pending"),
                tx_ref=d.get("txRef", "") or "",
                block_number=d.get("blockNumber"),
                anchor_ts=d.get("anchorTs"),
                observed_at=int(d.get("observedAt") or 0),
                verifier=d.get("verifier", "") or "",
                finality=Finality.from_dict(d.get("finality") or {}),
                evidence=dict(d.get("evidence") or {}),
                error=d.get("error"),
                superseded_by=d.get("superseded_by"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"malformed anchor: {e}", code="anchor_malformed") from e


def conflict_key(anchor: Anchor) -> tuple[int, int, float, bytes]:
    """Sort key of the conflict order: smaller wins."""
    return (
        0 if anchor.status == "verified" else 1,
        _RANK[anchor.scheme],
        float(anchor.anchor_ts) if anchor.anchor_ts is not None else float("inf"),
        anchor.tx_ref.encode("utf-8"),
    )


def resolve_conflicts(anchors: Iterable[Anchor]) -> list[Anchor]:
    """Order competing anchors of one digest; every loser names the winner in
    ``superseded_by``.  Deterministic: the same list on every node."""
    ordered = sorted(anchors, key=conflict_key)
    if not ordered:
        return []
    winner = ordered[0]
    return [winner] + [replace(a, superseded_by=winner.key) for a in ordered[1:]]


@dataclass(frozen=True, slots=True)
class AnchorReceipt:
    """The anchors covering one checkpoint of one log."""

    origin: str
    size: int
    checkpoint: bytes  # the signed note
    root: bytes  # checkpoint_digest(body)
    anchors: tuple[Anchor, ...] = ()

    @property
    def verified(self) -> tuple[Anchor, ...]:
        return tuple(a for a in self.anchors if a.status == "verified")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "remembrancer.anchor-receipt/v1",
            "origin": self.origin,
            "size": self.size,
            "checkpoint": self.checkpoint.decode("utf-8"),
            "root": "sha256:" + self.root.hex(),
            "anchors": [a.to_dict() for a in self.anchors],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AnchorReceipt:
        try:
            if d.get("type") != "remembrancer.anchor-receipt/v1":
                raise FormatError(
                    "not a remembrancer.anchor-receipt/v1", code="anchor_receipt_malformed"
                )
            if len(d.get("anchors", [])) > MAX_ANCHORS:
                raise FormatError(
                    f"more than {MAX_ANCHORS} anchors", code="anchor_receipt_malformed"
                )
            return cls(
                origin=d["origin"],
                size=int(d["size"]),
                checkpoint=d["checkpoint"].encode("utf-8"),
                root=bytes.fromhex(d["root"][7:]),
                anchors=tuple(Anchor.from_dict(a) for a in d.get("anchors", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(
                f"malformed anchor receipt: {e}", code="anchor_receipt_malformed"
            ) from e
