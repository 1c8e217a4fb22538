"""Collaborative anchoring, the pure part: aggregation trees, epochs,
coordinator choice, and the ``remembrancer.aggregate-anchor/v1`` claim
(DESIGN.md 3.8 and 3.10; the format is docs/spec/aggregate-anchor.md).

Aggregation tree.  An RFC 6962 tree whose leaves are 32-byte checkpoint
digests (:func:`remembrancer.core.anchor.checkpoint_digest`), leaf hash
``SHA-256(0x00 || digest)``.  The leaves are the distinct digests in
ascending byte order, so the tree depends only on the *set* of checkpoints:
every node that knows the set builds the same root, and a member's position
says nothing about who sent first.  One anchor of the root covers every
leaf; each member keeps its :class:`~remembrancer.core.anchor.Aggregation`
(leaf index, tree size, inclusion path) beside the rail evidence.

Epochs.  Time is cut into epochs of ``epoch_seconds`` (the registry's
``anchor_propagation.epoch_seconds``, the same on every node): epoch ``e``
is ``[e * E, (e + 1) * E)``.  A member sends the checkpoints that fall due
during epoch ``e`` to the epoch's coordinator; the coordinator takes them
until the *cut-off* ``(e + 1) * E + grace`` (``grace`` absorbs transit and
clock skew), anchors one root, and hands out the paths.  A member that has
no acceptable aggregate by the *deadline* ``(e + 2) * E`` gives up on that
coordinator for this checkpoint.  So a coordinator that is down, slow or
lying costs its members at most one epoch.

Coordinator choice.  Per (target, epoch), from the registry's active peers
with the ``coordinator`` role (none: those with the ``anchor`` role), sorted
by DID: the candidate at ``(offset + epoch) mod n`` where ``offset`` is the
first 8 bytes, big-endian, of ``SHA-256(federation_id || 0x0A || target)``.
The offset spreads targets over peers; the epoch rotates the choice, so two
consecutive epochs never have the same coordinator when there are two or
more candidates (a plain hash per epoch would repeat one with probability
``1/n``, letting a bad coordinator cost several epochs in a row).

Everything here is pure (time is a parameter).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from remembrancer.core.anchor import (
    MAX_AGGREGATION_LEAVES,
    Aggregation,
    Anchor,
    covered_root,
)
from remembrancer.core.errors import FormatError, NotFoundError, VerificationError
from remembrancer.core.identifiers import MAX_DID_CHARS
from remembrancer.core.rfc6962 import (
    HASH_SIZE,
    NodeId,
    hash_children,
    hash_leaf,
    inclusion_proof,
    root_hash,
)

__all__ = [
    "AGGREGATE_ANCHOR_TYPE",
    "DEFAULT_EPOCH_SECONDS",
    "MAX_EPOCH_SECONDS",
    "AggregateAnchor",
    "AggregationTree",
    "EpochClock",
    "choose_coordinator",
    "coordinator_candidates",
    "verify_aggregate",
]

AGGREGATE_ANCHOR_TYPE: Final = "remembrancer.aggregate-anchor/v1"
DEFAULT_EPOCH_SECONDS: Final = 60
MAX_EPOCH_SECONDS: Final = 86_400
MAX_ORIGIN_CHARS: Final = 255


# --------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------


class _Levels:
    """Every complete subtree of a small tree, kept in memory (a NodeReader)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [hash_children(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        return [self.levels[level][index] for level, index in ids]


@dataclass(frozen=True, slots=True)
class AggregationTree:
    """The RFC 6962 tree over distinct checkpoint digests in ascending order."""

    leaves: tuple[bytes, ...]
    root: bytes
    _levels: _Levels = field(repr=False, compare=False)

    @classmethod
    def build(cls, digests: Iterable[bytes]) -> AggregationTree:
        """The tree of ``digests`` (duplicates count once; order does not matter).

        FormatError ``aggregation_leaf_invalid`` for a digest that is not 32
        bytes, ``aggregation_empty`` for none, ``aggregation_too_large`` for
        more than MAX_AGGREGATION_LEAVES distinct ones."""
        unique: set[bytes] = set()
        for d in digests:
            if not isinstance(d, bytes) or len(d) != HASH_SIZE:
                raise FormatError(
                    "an aggregation leaf is a 32-byte digest", code="aggregation_leaf_invalid"
                )
            unique.add(d)
        if not unique:
            raise FormatError("an aggregation tree needs a leaf", code="aggregation_empty")
        if len(unique) > MAX_AGGREGATION_LEAVES:
            raise FormatError(
                f"more than {MAX_AGGREGATION_LEAVES} leaves", code="aggregation_too_large"
            )
        leaves = tuple(sorted(unique))
        levels = _Levels([hash_leaf(d) for d in leaves])
        return cls(leaves, root_hash(len(leaves), levels), levels)

    @property
    def size(self) -> int:
        return len(self.leaves)

    def index(self, digest: bytes) -> int:
        """The leaf index of ``digest`` (NotFoundError ``aggregation_leaf_unknown``)."""
        lo, hi = 0, len(self.leaves)
        while lo < hi:  # the leaves are sorted
            mid = (lo + hi) // 2
            if self.leaves[mid] < digest:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(self.leaves) or self.leaves[lo] != digest:
            raise NotFoundError(
                "this digest is not a leaf of the aggregation", code="aggregation_leaf_unknown"
            )
        return lo

    def aggregation(self, digest: bytes) -> Aggregation:
        """Where ``digest`` sits: leaf index, tree size and its inclusion path."""
        i = self.index(digest)
        return Aggregation(i, self.size, tuple(inclusion_proof(i, self.size, self._levels)))


# --------------------------------------------------------------------------
# Epochs and coordinators
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpochClock:
    """The epoch arithmetic every node shares (see the module docstring)."""

    epoch_seconds: int = DEFAULT_EPOCH_SECONDS

    def __post_init__(self) -> None:
        if type(self.epoch_seconds) is not int or not 1 <= self.epoch_seconds <= MAX_EPOCH_SECONDS:
            raise FormatError(
                f"epoch_seconds is an integer from 1 to {MAX_EPOCH_SECONDS}",
                code="anchor_epoch_invalid",
            )

    @property
    def grace(self) -> float:
        """Seconds after an epoch's end during which its coordinator still takes
        checkpoints (transit and clock skew): a quarter epoch, at most 2 s."""
        return min(2.0, self.epoch_seconds / 4)

    def epoch(self, now: float) -> int:
        return int(now // self.epoch_seconds)

    def start(self, epoch: int) -> int:
        return epoch * self.epoch_seconds

    def cutoff(self, epoch: int) -> float:
        """When the coordinator of ``epoch`` stops taking checkpoints and anchors."""
        return (epoch + 1) * self.epoch_seconds + self.grace

    def deadline(self, epoch: int) -> int:
        """When a member gives up waiting for ``epoch``'s aggregate."""
        return (epoch + 2) * self.epoch_seconds

    @property
    def judging_grace(self) -> int:
        """How long past the deadline a member still waits for its own verdict on
        a claim that reached it before the deadline: one epoch, at least 10 s
        (a rail's call to its node or TSA may take that long)."""
        return max(10, self.epoch_seconds)


def coordinator_candidates(peers: Iterable[Any]) -> tuple[str, ...]:
    """The DIDs that may coordinate: peers (with ``did``, ``status`` and
    ``roles``) whose status is ``active`` and that have the ``coordinator``
    role, else those with the ``anchor`` role; sorted, distinct.

    Pass the registry's peers (their registry status) so that every node
    derives the same list; a node's local scoring does not enter here."""
    active = [p for p in peers if p.status == "active"]
    chosen = [p.did for p in active if "coordinator" in p.roles]
    if not chosen:
        chosen = [p.did for p in active if "anchor" in p.roles]
    return tuple(sorted(set(chosen)))


def choose_coordinator(
    federation_id: str, target: str, epoch: int, candidates: Sequence[str]
) -> str | None:
    """The coordinator of ``target`` in ``epoch`` (None without candidates)."""
    ordered = sorted(set(candidates))
    if not ordered:
        return None
    if type(epoch) is not int or epoch < 0:
        raise FormatError("an epoch is an integer >= 0", code="anchor_epoch_invalid")
    seed = hashlib.sha256(f"{federation_id}\n{target}".encode()).digest()
    offset = int.from_bytes(seed[:8], "big")
    return ordered[(offset + epoch) % len(ordered)]


# --------------------------------------------------------------------------
# The claim a coordinator hands each member
# --------------------------------------------------------------------------

_FIELDS: Final = frozenset(
    {"type", "federation_id", "coordinator", "target", "epoch", "origin", "size", "checkpoint",
     "anchor"}
)  # fmt: skip


def _str(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise FormatError(f"{what} is a string of 1 to {limit} characters",
                          code="aggregate_malformed")  # fmt: skip
    return value


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**53:
        raise FormatError(f"{what} is an integer from 0 to 2^53 - 1", code="aggregate_malformed")
    return value


@dataclass(frozen=True, slots=True)
class AggregateAnchor:
    """``remembrancer.aggregate-anchor/v1``: the coordinator's statement that
    ``anchor`` (an aggregated anchor of ``target``, made in ``epoch``) covers
    the checkpoint of ``origin`` at ``size`` whose digest is ``checkpoint``.

    It travels in a signed ``receipt`` message, so the coordinator is bound
    to it: a path that does not lead from ``checkpoint`` to the anchored
    root, or an anchor claimed ``verified`` that fails on the member's own
    rail, is offline-provable misbehaviour."""

    federation_id: str
    coordinator: str
    target: str
    epoch: int
    origin: str
    size: int
    checkpoint: bytes  # the checkpoint digest (the leaf)
    anchor: Anchor

    def __post_init__(self) -> None:
        _str(self.federation_id, "federation_id", 63)
        _str(self.coordinator, "coordinator", MAX_DID_CHARS)
        _str(self.origin, "origin", MAX_ORIGIN_CHARS)
        _uint(self.epoch, "epoch")
        _uint(self.size, "size")
        if not isinstance(self.checkpoint, bytes) or len(self.checkpoint) != HASH_SIZE:
            raise FormatError("checkpoint is a 32-byte digest", code="aggregate_malformed")
        if not isinstance(self.anchor, Anchor) or self.anchor.aggregation is None:
            raise FormatError("anchor is an aggregated anchor (with aggregation)",
                              code="aggregate_malformed")  # fmt: skip
        if self.anchor.target != self.target:
            raise FormatError(
                f"the anchor is for {self.anchor.target}, the aggregate for {self.target}",
                code="aggregate_malformed",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": AGGREGATE_ANCHOR_TYPE,
            "federation_id": self.federation_id,
            "coordinator": self.coordinator,
            "target": self.target,
            "epoch": self.epoch,
            "origin": self.origin,
            "size": self.size,
            "checkpoint": "sha256:" + self.checkpoint.hex(),
            "anchor": self.anchor.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any) -> AggregateAnchor:
        """Parse strictly: exactly the fields of :meth:`to_dict` (FormatError
        ``aggregate_malformed``, or the anchor's own codes)."""
        if not isinstance(d, Mapping) or set(d) != _FIELDS:
            raise FormatError(
                f"an aggregate anchor has exactly the fields {', '.join(sorted(_FIELDS))}",
                code="aggregate_malformed",
            )
        if d["type"] != AGGREGATE_ANCHOR_TYPE:
            raise FormatError(f"type must be {AGGREGATE_ANCHOR_TYPE}", code="aggregate_malformed")
        digest = d["checkpoint"]
        if (
            not isinstance(digest, str)
            or len(digest) != 71
            or not digest.startswith("sha256:")
            or digest[7:] != digest[7:].lower()
        ):
            raise FormatError("checkpoint is sha256:<64 lowercase hex>", code="aggregate_malformed")
        try:
            checkpoint = bytes.fromhex(digest[7:])
        except ValueError as e:
            raise FormatError("checkpoint is not hex", code="aggregate_malformed") from e
        if not isinstance(d["anchor"], Mapping):
            raise FormatError("anchor is an object", code="aggregate_malformed")
        return cls(
            federation_id=_str(d["federation_id"], "federation_id", 63),
            coordinator=_str(d["coordinator"], "coordinator", MAX_DID_CHARS),
            target=_str(d["target"], "target", 128),
            epoch=_uint(d["epoch"], "epoch"),
            origin=_str(d["origin"], "origin", MAX_ORIGIN_CHARS),
            size=_uint(d["size"], "size"),
            checkpoint=checkpoint,
            anchor=Anchor.from_dict(d["anchor"]),
        )

    def consistent(self) -> bool:
        """Whether the claim holds together on its face: the path leads from
        ``checkpoint`` to the anchored root.  False is offline proof that the
        signer of the claim lied."""
        try:
            return covered_root(self.anchor, self.checkpoint) == self.anchor.root
        except VerificationError:
            return False


def verify_aggregate(
    aggregate: AggregateAnchor,
    *,
    federation_id: str,
    target: str,
    origin: str,
    size: int,
    digest: bytes,
) -> None:
    """A member's checks of an aggregate for its own checkpoint, before the rail.

    VerificationError codes, in the order checked:

    - ``aggregate_path_invalid``: the path does not lead from the claimed
      checkpoint digest to the anchored root.  The claim contradicts itself:
      proof that the coordinator lied (``consistent()`` is False).
    - ``aggregate_not_ours``: another federation, target, origin, size or
      checkpoint digest than the member's.  The claim may be true of some
      other checkpoint; it is refused, not proof of a lie.

    The anchor's rail evidence is checked afterwards, by the member's own rail.
    """
    if not aggregate.consistent():
        raise VerificationError(
            "the aggregation path does not lead from the claimed checkpoint to the anchored root",
            code="aggregate_path_invalid",
            details={
                "checkpoint": "sha256:" + aggregate.checkpoint.hex(),
                "anchored_root": "sha256:" + aggregate.anchor.root.hex(),
            },
        )
    mine = {"federation_id": federation_id, "target": target, "origin": origin, "size": size,
            "checkpoint": "sha256:" + digest.hex()}  # fmt: skip
    theirs = {"federation_id": aggregate.federation_id, "target": aggregate.target,
              "origin": aggregate.origin, "size": aggregate.size,
              "checkpoint": "sha256:" + aggregate.checkpoint.hex()}  # fmt: skip
    wrong = [k for k in mine if mine[k] != theirs[k]]
    if wrong:
        raise VerificationError(
            f"the aggregate is for another {wrong[0]} ({theirs[wrong[0]]!r}, ours {mine[wrong[0]]!r})",
            code="aggregate_not_ours",
            details={"field": wrong[0]},
        )
