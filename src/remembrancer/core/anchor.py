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

The conflict order, the same on every node that verified the same anchors,
for competing claims on the same digest: verified before unverified; then
``btc`` > ``eip155`` > ``rfc3161``; then the earliest anchor time; then the
byte-wise smallest ``txRef``.  Losers are kept with ``superseded_by``.
"Verified" means verified *by the node that orders*: the caller names the
anchors its own rails verified (``verified=``); an anchor's own ``status``
field, which a peer may have set to anything, is never read here, so a
claim of ``verified`` that this node could not or did not verify never
outranks an anchor it did verify.  Within the verified (and within the
unverified) anchors the order uses the anchors' times and txRefs; a caller
that orders someone else's claims first checks that the verdict's facts
agree with them (:meth:`remembrancer.anchoring.base.Verdict.disagreement`).

The bound.  A receipt holds at most :data:`MAX_ANCHORS` anchors;
:func:`bound_anchors` is the one rule that keeps it there, for the
scheduler's own receipts and for the merge every node applies to claims
(:func:`remembrancer.federation.antientropy.claims.merge_anchors`): it
drops failed and reorged anchors first, then the oldest, and depends only
on the anchors, never on their order.

Direct and aggregated anchors.  A *direct* anchor commits the checkpoint
digest itself (``root == checkpoint_digest(body)``).  An *aggregated* anchor
(collaborative anchoring, DESIGN.md 3.8 and 3.10) commits the root of an
RFC 6962 tree whose leaves are checkpoint digests; it carries an
:class:`Aggregation` (leaf index, tree size, inclusion path) from which
anyone recomputes ``root`` from the digest.  :func:`covers` is the one test
of "this anchor commits to this checkpoint": every verifier uses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.jcs import canonicalize
from remembrancer.core.rfc6962 import HASH_SIZE, hash_leaf, root_from_inclusion_proof

Status = Literal["pending", "submitted", "verified", "failed", "reorged"]
STATUSES: tuple[Status, ...] = ("pending", "submitted", "verified", "failed", "reorged")
CHAINS = {"rfc3161": "TSA", "eip155": "EVM", "btc": "BTC"}
_RANK = {"btc": 0, "eip155": 1, "rfc3161": 2}
MAX_ANCHORS = 64  # per receipt
MAX_AGGREGATION_LEAVES = 1 << 16  # leaves of one aggregation tree
MAX_AGGREGATION_PATH = 16  # = log2(MAX_AGGREGATION_LEAVES): the longest inclusion path
_ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "submitted", "verified", "failed"}),
    "submitted": frozenset({"submitted", "verified", "failed"}),
    "verified": frozenset({"verified", "reorged", "failed"}),
    "failed": frozenset({"failed"}),
    "reorged": frozenset({"reorged"}),
}


def allowed_transition(old: str, new: str) -> bool:
    return new in _ALLOWED.get(old, frozenset())


REORG_MARGIN = 6  # keep re-checking a final chain anchor until this many blocks past its depth


def needs_reverify(a: Anchor) -> bool:
    """Not-final anchors, and chain anchors still within reorg reach of their depth.

    A receipt none of whose anchors needs re-verification is *finished*: the
    store indexes that flag so that re-verification pages only the others."""
    if a.status in ("failed", "reorged"):
        return False
    if a.status != "verified" or a.finality.state != "final":
        return True
    required = a.finality.required_depth
    return required > 0 and a.finality.observed_depth < required + REORG_MARGIN


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


def _hash_text(value: Any, what: str) -> bytes:
    if (
        not isinstance(value, str)
        or not value.startswith("sha256:")
        or len(value) != 71
        or value[7:] != value[7:].lower()
    ):
        raise FormatError(f"{what} must be sha256:<64 lowercase hex>", code="aggregation_malformed")
    try:
        return bytes.fromhex(value[7:])
    except ValueError as e:
        raise FormatError(f"{what} is not hex", code="aggregation_malformed") from e


@dataclass(frozen=True, slots=True)
class Aggregation:
    """Where a checkpoint digest sits in an aggregation tree (collaborative anchoring).

    The tree is RFC 6962 (RFC 9162 section 2.1) over leaves that are 32-byte
    checkpoint digests: leaf hash ``SHA-256(0x00 || digest)``.  ``path`` is
    the inclusion proof of leaf ``leaf_index`` in the tree of ``tree_size``
    leaves; :meth:`root_for` recomputes the tree root from a digest.
    """

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if (
            type(self.leaf_index) is not int
            or type(self.tree_size) is not int
            or not 0 <= self.leaf_index < self.tree_size <= MAX_AGGREGATION_LEAVES
        ):
            raise FormatError(
                f"an aggregation has 0 <= leafIndex < treeSize <= {MAX_AGGREGATION_LEAVES}",
                code="aggregation_malformed",
            )
        path = tuple(self.path)
        if len(path) > MAX_AGGREGATION_PATH or any(
            not isinstance(h, bytes) or len(h) != HASH_SIZE for h in path
        ):
            raise FormatError(
                f"an aggregation path is at most {MAX_AGGREGATION_PATH} hashes of 32 bytes",
                code="aggregation_malformed",
            )
        object.__setattr__(self, "path", path)

    def root_for(self, digest: bytes) -> bytes:
        """The tree root that this path and ``digest`` (a leaf) lead to.

        VerificationError ``proof_wrong_length`` when the path's length does
        not fit the index and tree size."""
        return root_from_inclusion_proof(
            self.leaf_index, self.tree_size, hash_leaf(digest), self.path
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "leafIndex": self.leaf_index,
            "treeSize": self.tree_size,
            "path": ["sha256:" + h.hex() for h in self.path],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Aggregation:
        if not isinstance(d, Mapping) or set(d) != {"leafIndex", "treeSize", "path"}:
            raise FormatError(
                "an aggregation has exactly leafIndex, treeSize and path",
                code="aggregation_malformed",
            )
        path = d["path"]
        if not isinstance(path, list) or len(path) > MAX_AGGREGATION_PATH:
            raise FormatError(
                f"an aggregation path is a list of at most {MAX_AGGREGATION_PATH} hashes",
                code="aggregation_malformed",
            )
        return cls(
            d["leafIndex"],
            d["treeSize"],
            tuple(_hash_text(h, f"path[{i}]") for i, h in enumerate(path)),
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    """One commitment of ``root`` (32 bytes) to ``target``, with its evidence.

    ``aggregation`` is set when ``root`` is an aggregation tree's root rather
    than the checkpoint digest itself (see :func:`covers`)."""

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
    aggregation: Aggregation | None = None

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
        if self.aggregation is not None and not isinstance(self.aggregation, Aggregation):
            raise FormatError("aggregation must be an Aggregation", code="aggregation_malformed")

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
        """The seed's ``receipt.v1`` anchor fields, plus ``aggregation`` when aggregated
        (a direct anchor's dict has no ``aggregation`` member)."""
        out = {
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
        if self.aggregation is not None:
            out["aggregation"] = self.aggregation.to_dict()
        return out

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
                aggregation=(
                    Aggregation.from_dict(d["aggregation"])
                    if d.get("aggregation") is not None
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise FormatError(f"malformed anchor: {e}", code="anchor_malformed") from e


def covered_root(anchor: Anchor, digest: bytes) -> bytes:
    """The root that ``anchor`` must commit to if it covers ``digest``: the
    digest itself for a direct anchor, the aggregation path's root otherwise
    (VerificationError ``proof_wrong_length`` for a path that fits no tree)."""
    if anchor.aggregation is None:
        return digest
    return anchor.aggregation.root_for(digest)


def covers(anchor: Anchor, digest: bytes) -> bool:
    """Whether ``anchor`` commits to the checkpoint digest ``digest``.

    Direct: ``anchor.root == digest``.  Aggregated: the inclusion path from
    leaf ``digest`` at ``leafIndex`` in a tree of ``treeSize`` leaves leads
    to ``anchor.root``.  Says nothing about the rail evidence: a covering
    anchor counts only once its rail verified it."""
    try:
        return covered_root(anchor, digest) == anchor.root
    except VerificationError:
        return False


def require_covers(anchor: Anchor, digest: bytes, *, code: str = "anchor_root_mismatch") -> None:
    """:func:`covers`, or VerificationError ``code`` saying why not."""
    if covers(anchor, digest):
        return
    if anchor.aggregation is None:
        message = "the anchored root is not this checkpoint's digest"
    else:
        message = (
            "the aggregation path from this checkpoint's digest does not lead to the anchored root"
        )
    raise VerificationError(
        message,
        code=code,
        details={
            "anchored_root": "sha256:" + anchor.root.hex(),
            "checkpoint_digest": "sha256:" + digest.hex(),
            "aggregated": anchor.aggregation is not None,
        },
    )


def conflict_key(anchor: Anchor, *, verified: bool) -> tuple[int, int, float, bytes, bytes]:
    """Sort key of the conflict order: smaller wins.  ``verified``: whether the
    node that orders verified ``anchor`` itself (never ``anchor.status``).  The
    last member (the byte-wise target) only breaks ties the design's order
    leaves open: two TSAs of one scheme can issue tokens with the same serial
    (txRef) and genTime, and the winner must not depend on arrival order."""
    return (
        0 if verified else 1,
        _RANK[anchor.scheme],
        float(anchor.anchor_ts) if anchor.anchor_ts is not None else float("inf"),
        anchor.tx_ref.encode("utf-8"),
        anchor.target.encode("utf-8"),
    )


_DEAD = ("failed", "reorged")


def _age(a: Anchor) -> int:
    """When an anchor was made: the target's own time, or, for one that has
    none yet (pending, submitted), when it was last observed (recently)."""
    return a.anchor_ts if a.anchor_ts is not None else a.observed_at


def bound_anchors(anchors: Iterable[Anchor], limit: int = MAX_ANCHORS) -> tuple[Anchor, ...]:
    """``anchors`` with at most ``limit`` of them: the others are dropped,
    failed and reorged ones first, then the oldest (:func:`_age`), ties by
    key and then by content.  Which anchors stay depends only on the
    anchors, never on their order (two nodes holding the same anchors keep
    the same ones); the kept anchors keep their order.  An anchor just made
    (no anchor time yet) is never taken for the oldest."""
    out = tuple(anchors)
    if len(out) <= limit:
        return out
    order = sorted(
        range(len(out)),
        key=lambda i: (out[i].status not in _DEAD, _age(out[i]), out[i].key,
                       canonicalize(out[i].to_dict())),
    )  # fmt: skip
    drop = set(order[: len(out) - limit])
    return tuple(a for i, a in enumerate(out) if i not in drop)


def resolve_conflicts(anchors: Iterable[Anchor], *, verified: Collection[str]) -> list[Anchor]:
    """Order competing anchors of one digest; every loser names the winner in
    ``superseded_by``.  ``verified`` holds the keys (:attr:`Anchor.key`) of
    the anchors the calling node verified itself; every other anchor ranks
    as unverified, whatever its ``status`` says.  Deterministic: the same
    list on every node with the same verdicts."""
    ordered = sorted(anchors, key=lambda a: conflict_key(a, verified=a.key in verified))
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

    @property
    def finished(self) -> bool:
        """No anchor of this receipt needs re-verification (:func:`needs_reverify`)."""
        return not any(needs_reverify(a) for a in self.anchors)

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
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise FormatError(
                f"malformed anchor receipt: {e}", code="anchor_receipt_malformed"
            ) from e
