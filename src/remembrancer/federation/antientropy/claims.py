"""Anchor claims: the one merge every node applies, and the bundles that carry them.

:func:`merge_anchors` keeps one version per anchor (the most advanced, ties
broken by fixed rules) and puts them in the conflict order of
:func:`~remembrancer.core.anchor.resolve_conflicts`.  It is commutative,
associative and idempotent, so nodes that saw the same claims in any order,
and verified the same anchors, hold the same list; only anchors this node
verified on its own rails rank as verified.  :func:`pack_bundles` packs
receipts and anchor claims, oldest first, into bounded ``bundle`` message
contents.  Pure: no clock, no I/O.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from remembrancer.core.anchor import Anchor, AnchorReceipt, bound_anchors, resolve_conflicts
from remembrancer.core.errors import FormatError, RemembrancerError
from remembrancer.core.jcs import canonicalize
from remembrancer.core.note import Note
from remembrancer.federation.protocol.contents import BundleContent
from remembrancer.federation.protocol.grammar import MAX_LIST_ITEMS

__all__ = [
    "ClaimBudget",
    "check_evidence",
    "evidence_size",
    "merge_anchors",
    "pack_bundles",
    "receipt_time",
]


log = logging.getLogger("remembrancer.antientropy")


BUNDLE_BUDGET: Final = 200 * 1024  # bytes of items per bundle message (the limit is 256 KiB)
MAX_REPLY_MESSAGES: Final = 8  # bundles answering one request


DEFAULT_EVIDENCE_BYTES: Final = {"rfc3161": 32 * 1024, "eip155": 8 * 1024, "btc": 32 * 1024}
DEFAULT_UNVERIFIED_CLAIMS: Final = 16  # checkpoints with unverified claims per (peer, log)
DEFAULT_UNVERIFIED_BYTES: Final = 256 * 1024  # bytes of unverified anchors per (peer, log)


@dataclass(frozen=True, slots=True)
class ClaimBudget:
    """What anchor claims from peers may cost this node's store (docs/operations.md,
    "Resource budget: storage and anchoring").

    ``evidence_bytes``: the largest ``evidence`` (canonical JSON bytes) an
    anchor may carry, per rail (the target's scheme); larger is refused
    (``anchor_evidence_too_large``) and the sender blamed.
    ``unverified_claims`` and ``unverified_bytes``: per (peer, log), how many
    checkpoints' worth of anchors nobody verified here, and how many bytes of
    them, are kept; past either, the oldest (smallest checkpoint size) are
    dropped first.  Anchors verified here and this node's own are never
    dropped by the budget."""

    evidence_bytes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_EVIDENCE_BYTES))
    unverified_claims: int = DEFAULT_UNVERIFIED_CLAIMS
    unverified_bytes: int = DEFAULT_UNVERIFIED_BYTES

    def evidence_cap(self, target: str) -> int:
        scheme = target.partition(":")[0]
        return self.evidence_bytes.get(scheme, min(DEFAULT_EVIDENCE_BYTES.values()))


def evidence_size(a: Anchor) -> int:
    """The bytes of an anchor's evidence, as canonical JSON."""
    return len(json.dumps(a.evidence, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def anchor_size(a: Anchor) -> int:
    """The bytes an anchor takes in a stored claim."""
    return len(json.dumps(a.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8"))


def check_evidence(anchors: Iterable[Anchor], budget: ClaimBudget) -> None:
    """FormatError ``anchor_evidence_too_large`` for the first anchor whose
    evidence is over its rail's cap."""
    for a in anchors:
        size, cap = evidence_size(a), budget.evidence_cap(a.target)
        if size > cap:
            raise FormatError(
                f"anchor {a.key} carries {size} bytes of evidence; {a.scheme} allows {cap}",
                code="anchor_evidence_too_large",
                details={"anchor": a.key[:200], "bytes": size, "cap": cap},
            )


_STATUS_RANK: Final = {"pending": 0, "submitted": 1, "verified": 2, "failed": 3, "reorged": 4}


def version_key(a: Anchor) -> tuple[int, int, int, bytes]:
    """Order of two versions of one anchor (same target and txRef): the later wins.

    Every allowed status transition raises the rank, so the greatest version
    is the most advanced one; ties are broken by depth, observation time and
    the canonical bytes, so the choice does not depend on arrival order."""
    return (_STATUS_RANK[a.status], a.finality.observed_depth, a.observed_at,
            canonicalize(a.to_dict()))  # fmt: skip


def merge_anchors(*groups: Iterable[Anchor], verified: Collection[str]) -> tuple[Anchor, ...]:
    """Merge claims on one digest: one version per anchor (the latest, see
    :func:`version_key`), in the conflict order of
    :func:`~remembrancer.core.anchor.resolve_conflicts`, losers naming the winner.
    ``verified``: the keys of the anchors this node verified on its own
    rails; only those rank as verified (a claim's own status does not).

    Commutative, associative and idempotent, so nodes that saw the same
    claims in any order, and verified the same anchors, hold the same list."""
    by_key: dict[str, Anchor] = {}
    for group in groups:
        for a in group:
            a = replace(a, superseded_by=None)
            held = by_key.get(a.key)
            if held is None or version_key(a) > version_key(held):
                by_key[a.key] = a
    # The conflict order ends with txRef; two targets can share one (two TSAs'
    # serial numbers): presorting by key (target/txRef) makes that last tie
    # break the same way on every node (resolve_conflicts sorts stably).
    return tuple(resolve_conflicts(sorted(bound_anchors(by_key.values()), key=lambda a: a.key),
                                   verified=verified))  # fmt: skip


def note_rank(note: bytes) -> tuple[int, bytes]:
    """Which of two notes of one checkpoint to keep: more signatures, then the
    greater bytes (any fixed rule will do: it must not depend on arrival order)."""
    try:
        sigs = len(Note.from_bytes(note).signatures)
    except RemembrancerError:
        sigs = 0
    return (sigs, note)


def receipt_time(receipt: AnchorReceipt) -> int:
    """The anchor time of an anchor receipt, as requests select it: the latest
    anchor time or observation of its anchors."""
    return max((max(a.anchor_ts or 0, a.observed_at) for a in receipt.anchors), default=0)


def federation_receipt_time(d: Mapping[str, Any]) -> int:
    anchor = (d.get("evidence") or {}).get("anchor") or {}
    values = [d.get("finalized_at"), anchor.get("anchorTs"), anchor.get("observedAt")]
    return max((v for v in values if type(v) is int), default=0)


def pack_bundles(
    namespace: str,
    receipts: Sequence[tuple[int, dict[str, Any]]],
    anchors: Sequence[tuple[int, dict[str, Any]]],
    *,
    in_reply_to: int | None = None,
    budget: int = BUNDLE_BUDGET,
    max_messages: int = MAX_REPLY_MESSAGES,
) -> list[BundleContent]:
    """Pack ``(time, item)`` pairs, oldest first, into bundle contents of at most
    ``budget`` bytes of items and :data:`MAX_LIST_ITEMS` items per list; at most
    ``max_messages`` of them (the rest waits for the next request).  An item
    larger than the budget on its own is left out."""
    items = sorted([(t, 0, json.dumps(d, sort_keys=True), d) for t, d in receipts]
                   + [(t, 1, json.dumps(d, sort_keys=True), d) for t, d in anchors],
                   key=lambda x: (x[0], x[1], x[2]))  # fmt: skip
    out: list[BundleContent] = []
    cur: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    used = 0
    for _, kind, text, d in items:
        size = len(text.encode("utf-8")) + 1
        if size > budget:
            log.warning("a %s item of %d bytes does not fit in a bundle", namespace, size)
            continue
        full = used + size > budget or len(cur[kind]) >= MAX_LIST_ITEMS
        if full and (cur[0] or cur[1]):
            out.append(BundleContent(namespace, tuple(cur[0]), tuple(cur[1]), in_reply_to))
            if len(out) >= max_messages:
                return out
            cur, used = ([], []), 0
        cur[kind].append(d)
        used += size
    if cur[0] or cur[1]:
        out.append(BundleContent(namespace, tuple(cur[0]), tuple(cur[1]), in_reply_to))
    return out
