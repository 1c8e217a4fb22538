"""RFC 6962 Merkle tree hashing, proofs and their RFC 9162 verification.

The tree is the one of RFC 6962 section 2.1 (RFC 9162 section 2.1): SHA-256,
leaf hash ``SHA-256(0x00 || data)``, interior hash ``SHA-256(0x01 || left ||
right)``, the split at the largest power of two smaller than the size, and the
empty tree's root ``SHA-256("")``.

Node ids.  A *complete subtree* (a "node") is named ``(level, index)``: level 0
holds the leaf hashes, and node ``(level, index)`` is the Merkle Tree Hash of
leaves ``[index * 2**level, (index + 1) * 2**level)``.  A node exists in a tree
of size ``n`` once ``(index + 1) * 2**level <= n`` and never changes after
that.  Proof elements on the right edge of a tree whose size is not a power of
two are not complete subtrees ("ephemeral" nodes); they are computed by folding
the complete subtrees that cover their range.

Layer invariants: pure functions and values only, no I/O.  Proof *generation*
reads node hashes through the :class:`NodeReader` protocol, in one batch per
proof, so a storage backend can answer with one query.  Verifiers raise
:class:`~remembrancer.core.errors.VerificationError` (or its subclass
:class:`~remembrancer.core.errors.InconsistencyError`) with a specific ``code``;
generators raise :class:`~remembrancer.core.errors.FormatError` for arguments
that name no proof.  Sizes and indices are unsigned 64-bit integers in every
wire format; Python integers beyond that range are refused the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import NoReturn, Protocol

from remembrancer.core.errors import FormatError, InconsistencyError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "CompactRange",
    "NodeHash",
    "NodeId",
    "NodeReader",
    "consistency_proof",
    "consistency_proof_nodes",
    "fold_right",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "range_nodes",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in one SHA-256 hash."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size (and one more than the largest leaf index) accepted."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root hash of the empty tree, ``SHA-256("")`` (RFC 6962 section 2.1)."""

NodeId = tuple[int, int]
"""``(level, index)`` of a complete subtree."""

NodeHash = tuple[int, int, bytes]
"""``(level, index, hash)`` of a complete subtree."""

# Hash states that have already absorbed the RFC 6962 prefix byte: copying one
# and feeding it the rest is cheaper than concatenating the prefix.
_LEAF_STATE = hashlib.sha256(b"\x00")
_NODE_STATE = hashlib.sha256(b"\x01")


def hash_leaf(data: bytes) -> bytes:
    """The leaf hash ``SHA-256(0x00 || data)`` (RFC 6962 section 2.1)."""
    h = _LEAF_STATE.copy()
    h.update(data)
    return h.digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """The interior node hash ``SHA-256(0x01 || left || right)``."""
    h = _NODE_STATE.copy()
    h.update(left)
    h.update(right)
    return h.digest()


class NodeReader(Protocol):
    """A source of complete-subtree hashes (a tree in memory, tiles, a database)."""

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Return the hashes of the complete subtrees ``ids``, in the same order.

        Every id names a complete subtree of the tree the reader holds; a reader
        that does not hold one raises (typically
        :class:`~remembrancer.core.errors.NotFoundError`).  Implementations
        should fetch the whole batch at once.
        """
        ...


# --- node arithmetic -------------------------------------------------------


def range_nodes(begin: int, end: int) -> list[NodeId]:
    """The complete subtrees that exactly cover leaves ``[begin, end)``, left to right.

    This is the minimal ("compact range") decomposition: at each step the
    largest aligned subtree starting at ``begin`` that fits before ``end``.
    For ``begin == 0`` it is one node per set bit of ``end``, largest first.
    """
    if not 0 <= begin <= end:
        raise FormatError(f"invalid leaf range [{begin}, {end})", code="range_invalid")
    out: list[NodeId] = []
    while begin < end:
        fit = (end - begin).bit_length() - 1
        if begin:
            align = (begin & -begin).bit_length() - 1
            level = min(align, fit)
        else:
            level = fit
        out.append((level, begin >> level))
        begin += 1 << level
    return out


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Fold subtree hashes right to left: ``H(h0, H(h1, ... H(h[-2], h[-1])))``.

    Applied to :func:`range_nodes` ``(begin, size)`` with ``begin`` aligned to a
    power of two at least ``size - begin`` (the right edge of a tree, or the
    whole tree when ``begin == 0``), this is the RFC 6962 Merkle Tree Hash of that
    range.  ``hashes`` must not be empty.
    """
    if not hashes:
        raise FormatError("nothing to fold", code="range_invalid")
    r = hashes[-1]
    fresh = _NODE_STATE.copy
    for i in range(len(hashes) - 2, -1, -1):
        h = fresh()
        h.update(hashes[i])
        h.update(r)
        r = h.digest()
    return r


def _check_size(size: int, what: str = "tree size") -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise FormatError(f"{what} {size} is outside 0..2**64-1", code="size_out_of_range")


# A proof "slot" is one proof element: a single complete node, or several whose
# right fold is an ephemeral right-edge node.
_Slots = list[list[NodeId]]


def _edge_slot(level: int, index: int, size: int) -> list[NodeId]:
    """The nodes for proof element ``(level, index)`` of a tree of ``size`` leaves."""
    begin = index << level
    if begin + (1 << level) <= size:
        return [(level, index)]
    return range_nodes(begin, size)


def _path_slots(index: int, size: int, start_level: int, slots: _Slots) -> None:
    # The audit path of leaf `index` in a tree of `size` leaves, from
    # `start_level` up (RFC 6962 PATH, expressed with node ids).  Below level
    # `inner` the path lies in a complete left subtree; at level inner - 1 the
    # sibling is the right edge (maybe ephemeral); above, the path climbs the
    # right border and has a (complete, left) sibling wherever index has a 1 bit.
    last = size - 1
    inner = (index ^ last).bit_length()
    for level in range(start_level, inner - 1):
        slots.append([(level, (index >> level) ^ 1)])
    if inner - 1 >= start_level:
        level = inner - 1
        slots.append(_edge_slot(level, (index >> level) ^ 1, size))
    for level in range(inner, last.bit_length()):
        if (index >> level) & 1:
            slots.append([(level, (index >> level) ^ 1)])


def inclusion_proof_nodes(index: int, size: int) -> list[list[NodeId]]:
    """The node ids behind each element of the inclusion proof of leaf ``index``.

    Precondition: ``0 <= index < size``.  Element ``i`` of the proof is the
    :func:`fold_right` of the hashes of ``result[i]`` (a single node when the
    element is a complete subtree).
    """
    _check_size(size)
    if not 0 <= index < size:
        raise FormatError(
            f"leaf index {index} is outside a tree of size {size}", code="index_out_of_range"
        )
    slots: _Slots = []
    _path_slots(index, size, 0, slots)
    return slots


def consistency_proof_nodes(size1: int, size2: int) -> list[list[NodeId]]:
    """The node ids behind each element of the consistency proof ``size1 -> size2``.

    Precondition: ``0 < size1 <= size2``; the proof for equal sizes is empty.
    The proof is RFC 6962 ``PROOF(size1, D[size2])``: the largest complete
    subtree ending at leaf ``size1 - 1`` (left out when it is the whole old
    tree, i.e. ``size1`` is a power of two), then that subtree's audit path in
    the new tree.
    """
    _check_size(size2)
    if not 0 < size1 <= size2:
        raise FormatError(
            f"no consistency proof from size {size1} to size {size2}",
            code="size_out_of_range",
        )
    slots: _Slots = []
    if size1 == size2:
        return slots
    level = (size1 & -size1).bit_length() - 1
    if size1 != 1 << level:
        slots.append([(level, (size1 - 1) >> level)])
    _path_slots(size1 - 1, size2, level, slots)
    return slots


def _resolve(slots: _Slots, reader: NodeReader) -> list[bytes]:
    ids = [node for slot in slots for node in slot]
    if not ids:
        return []
    hashes = reader.read_nodes(ids)
    if len(hashes) != len(ids):
        raise FormatError(
            f"node reader returned {len(hashes)} hashes for {len(ids)} ids",
            code="node_count_mismatch",
        )
    out: list[bytes] = []
    pos = 0
    for slot in slots:
        n = len(slot)
        out.append(hashes[pos] if n == 1 else fold_right(hashes[pos : pos + n]))
        pos += n
    return out


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """The RFC 6962 inclusion proof (audit path) of leaf ``index`` in a tree of ``size``.

    Precondition: ``0 <= index < size`` and ``reader`` holds every complete
    subtree of a tree of at least ``size`` leaves.  Reads one batch of nodes.
    """
    return _resolve(inclusion_proof_nodes(index, size), reader)


def consistency_proof(size1: int, size2: int, reader: NodeReader) -> list[bytes]:
    """The RFC 6962 consistency proof between tree sizes ``size1`` and ``size2``.

    Precondition: ``0 < size1 <= size2`` and ``reader`` holds every complete
    subtree of a tree of at least ``size2`` leaves.  Reads one batch of nodes.
    """
    return _resolve(consistency_proof_nodes(size1, size2), reader)


def root_hash(size: int, reader: NodeReader) -> bytes:
    """The root hash of the tree of ``size`` leaves (:data:`EMPTY_ROOT` for 0)."""
    _check_size(size)
    if size == 0:
        return EMPTY_ROOT
    ids = range_nodes(0, size)
    hashes = reader.read_nodes(ids)
    if len(hashes) != len(ids):
        raise FormatError(
            f"node reader returned {len(hashes)} hashes for {len(ids)} ids",
            code="node_count_mismatch",
        )
    return fold_right(hashes)


# --- verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2) -------------------


def _show(value: bytes) -> str:
    return ("sha256:" + value.hex()) if len(value) == HASH_SIZE else value.hex()


def _bad_elements(proof: Sequence[bytes]) -> list[int]:
    return [i for i, p in enumerate(proof) if len(p) != HASH_SIZE]


def _inclusion_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root hash that ``proof`` implies for leaf ``index`` of a tree of ``size``.

    This is the RFC 9162 section 2.1.3.2 algorithm up to its final comparison.
    Preconditions checked (raising :class:`VerificationError`):
    ``0 <= index < size <= 2**64 - 1`` (``index_out_of_range``), ``leaf_hash`` is
    32 bytes (``leaf_hash_invalid``), ``proof`` has exactly the length a tree of
    ``size`` needs (``proof_wrong_length``).  A proof element that is not 32 bytes
    cannot yield a correct root; :func:`verify_inclusion` names it
    (``inclusion_proof_invalid``).
    """
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise VerificationError(
            f"leaf index {index} is outside a tree of size {size}",
            code="index_out_of_range",
            details={"index": index, "size": size},
        )
    if len(leaf_hash) != HASH_SIZE:
        raise VerificationError(
            f"leaf hash is {len(leaf_hash)} bytes, not {HASH_SIZE}", code="leaf_hash_invalid"
        )
    want = _inclusion_length(index, size)
    if len(proof) != want:
        raise VerificationError(
            f"inclusion proof for leaf {index} of {size} has {len(proof)} hashes, needs {want}",
            code="proof_wrong_length",
            details={"index": index, "size": size, "length": len(proof), "expected": want},
        )
    fresh = _NODE_STATE.copy
    fn = index  # step 2
    sn = size - 1
    r = leaf_hash  # step 3
    for p in proof:  # step 4
        if sn == 0:  # 4a; unreachable after the length check
            raise VerificationError("inclusion proof is too long", code="proof_wrong_length")
        h = fresh()
        if fn & 1 or fn == sn:  # 4b: r = HASH(0x01 || p || r)
            h.update(p)
            h.update(r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:  # otherwise: r = HASH(0x01 || r || p)
            h.update(r)
            h.update(p)
        r = h.digest()
        fn >>= 1  # 4c
        sn >>= 1
    if sn != 0:  # step 5; unreachable after the length check
        raise VerificationError("inclusion proof is too short", code="proof_wrong_length")
    return r


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` shows leaf ``leaf_hash`` at ``index`` in the tree ``(size, root)``.

    RFC 9162 section 2.1.3.2.  Returns ``None`` or raises
    :class:`~remembrancer.core.errors.VerificationError` with code
    ``index_out_of_range``, ``leaf_hash_invalid``, ``proof_wrong_length``,
    ``inclusion_proof_invalid`` (an element is not a 32-byte hash) or
    ``inclusion_root_mismatch``.
    """
    computed = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if computed != root:
        bad = _bad_elements(proof)
        details = {
            "index": index,
            "size": size,
            "leaf_hash": _show(leaf_hash),
            "root": _show(root),
            "computed_root": _show(computed),
            "proof": [_show(p) for p in proof],
        }
        if bad:
            raise VerificationError(
                f"inclusion proof element {bad[0]} is not a {HASH_SIZE}-byte hash",
                code="inclusion_proof_invalid",
                details=details,
            )
        raise VerificationError(
            f"inclusion proof for leaf {index} does not lead to the root of tree size {size}",
            code="inclusion_root_mismatch",
            details=details,
        )


def _consistency_details(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> dict[str, object]:
    return {
        "size1": size1,
        "size2": size2,
        "root1": _show(root1),
        "root2": _show(root2),
        "proof": [_show(p) for p in proof],
    }


def _consistency_roots(
    size1: int, size2: int, root1: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    # RFC 9162 section 2.1.4.2 steps 2-7 for 0 < size1 < size2 and a non-empty
    # proof; returns (fr, sr).
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # step 2: size1 is a power of two
        path.insert(0, root1)
    fn = size1 - 1  # step 3
    sn = size2 - 1
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fresh = _NODE_STATE.copy
    fr = sr = path[0]  # step 5
    for i in range(1, len(path)):  # step 6
        c = path[i]
        if sn == 0:  # 6a
            raise VerificationError(
                "consistency proof is too long",
                code="proof_wrong_length",
                details={"size1": size1, "size2": size2, "length": len(proof)},
            )
        if fn & 1 or fn == sn:  # 6b: fr = HASH(0x01 || c || fr), sr likewise
            h = fresh()
            h.update(c)
            h.update(fr)
            fr = h.digest()
            h = fresh()
            h.update(c)
            h.update(sr)
            sr = h.digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:  # otherwise: sr = HASH(0x01 || sr || c)
            h = fresh()
            h.update(sr)
            h.update(c)
            sr = h.digest()
        fn >>= 1  # 6c
        sn >>= 1
    if sn != 0:  # step 7
        raise VerificationError(
            "consistency proof is too short",
            code="proof_wrong_length",
            details={"size1": size1, "size2": size2, "length": len(proof)},
        )
    return fr, sr


def _check_consistency_args(size1: int, size2: int, proof: Sequence[bytes]) -> None:
    if not (0 <= size1 <= MAX_TREE_SIZE and 0 <= size2 <= MAX_TREE_SIZE):
        raise VerificationError(
            f"tree sizes {size1}, {size2} are outside 0..2**64-1",
            code="size_out_of_range",
            details={"size1": size1, "size2": size2},
        )
    if size2 < size1:
        raise VerificationError(
            f"tree size {size2} is smaller than the earlier size {size1}",
            code="consistency_sizes_reversed",
            details={"size1": size1, "size2": size2},
        )
    if size1 == 0:
        # A proof from the empty tree proves nothing; following
        # transparency-dev/merkle's vectors it is refused, not accepted.
        raise VerificationError(
            "a consistency proof from the empty tree is meaningless",
            code="consistency_from_empty_tree",
            details={"size1": size1, "size2": size2},
        )
    if size1 == size2:
        if proof:
            raise VerificationError(
                f"consistency proof between equal sizes must be empty, has {len(proof)} hashes",
                code="proof_wrong_length",
                details={"size1": size1, "size2": size2, "length": len(proof)},
            )
    elif not proof:
        raise VerificationError(
            f"empty consistency proof from size {size1} to {size2}",
            code="proof_wrong_length",
            details={"size1": size1, "size2": size2, "length": 0},
        )


def root_from_consistency_proof(
    size1: int, size2: int, root1: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root of tree size ``size2`` that ``proof`` implies, given ``(size1, root1)``.

    Runs RFC 9162 section 2.1.4.2, checks the recomputed old root against
    ``root1`` and returns the recomputed new root.  Preconditions as for
    :func:`verify_consistency`; for ``size1 == size2`` it returns ``root1``.
    """
    _check_consistency_args(size1, size2, proof)
    if size1 == size2:
        return root1
    fr, sr = _consistency_roots(size1, size2, root1, proof)
    if fr != root1:
        _raise_consistency_mismatch(size1, size2, root1, b"", proof, which=1)
    return sr


def _raise_consistency_mismatch(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes], which: int
) -> NoReturn:
    details = _consistency_details(size1, size2, root1, root2, proof)
    bad = _bad_elements(proof)
    if bad:
        raise InconsistencyError(
            f"consistency proof element {bad[0]} is not a {HASH_SIZE}-byte hash",
            code="consistency_proof_invalid",
            details=details,
        )
    raise InconsistencyError(
        f"consistency proof does not lead to the root of tree size {size1 if which == 1 else size2}",
        code=f"consistency_root{which}_mismatch",
        details=details,
    )


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that tree ``(size2, root2)`` extends tree ``(size1, root1)``.

    RFC 9162 section 2.1.4.2.  Preconditions, each refused with
    :class:`~remembrancer.core.errors.VerificationError`: sizes within uint64
    (``size_out_of_range``), ``size1 <= size2`` (``consistency_sizes_reversed``),
    ``size1 > 0`` (``consistency_from_empty_tree``: the empty tree is a prefix of
    every tree, so such a proof shows nothing), an empty proof exactly when the
    sizes are equal (``proof_wrong_length``).  A proof that does not tie the two
    roots raises :class:`~remembrancer.core.errors.InconsistencyError` with
    ``consistency_root_mismatch`` (equal sizes, different roots),
    ``consistency_root1_mismatch``, ``consistency_root2_mismatch`` or
    ``consistency_proof_invalid`` (an element is not a 32-byte hash); its
    ``details`` carry both sizes, both roots and the proof.
    """
    _check_consistency_args(size1, size2, proof)
    if size1 == size2:
        if root1 != root2:
            raise InconsistencyError(
                f"two different roots for tree size {size1}",
                code="consistency_root_mismatch",
                details=_consistency_details(size1, size2, root1, root2, proof),
            )
        return
    fr, sr = _consistency_roots(size1, size2, root1, proof)
    if fr != root1:
        _raise_consistency_mismatch(size1, size2, root1, root2, proof, which=1)
    if sr != root2:
        _raise_consistency_mismatch(size1, size2, root1, root2, proof, which=2)


# --- the right edge ----------------------------------------------------------


class CompactRange:
    """The right edge of a tree: the complete subtrees that cover ``[0, size)``.

    Holds one hash per set bit of ``size`` (at most 64), largest subtree first,
    so a sequencer can append any number of leaves in flat memory and still
    know the root and every complete node it creates (to write tiles).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        """Resume from ``size`` and the hashes of :func:`range_nodes` ``(0, size)``."""
        _check_size(size)
        hs = list(hashes)
        if len(hs) != size.bit_count() or any(len(h) != HASH_SIZE for h in hs):
            raise FormatError(
                f"a compact range of size {size} needs {size.bit_count()} hashes of "
                f"{HASH_SIZE} bytes, got {len(hs)}",
                code="compact_range_invalid",
            )
        self._size = size
        self._hashes = hs

    @classmethod
    def from_reader(cls, size: int, reader: NodeReader) -> CompactRange:
        """Load the right edge of tree ``size`` from a node source (one batch)."""
        _check_size(size)
        ids = range_nodes(0, size)
        return cls(size, reader.read_nodes(ids) if ids else [])

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The subtree hashes, largest (leftmost) first."""
        return tuple(self._hashes)

    def node_ids(self) -> list[NodeId]:
        """The ids of :attr:`hashes`, i.e. :func:`range_nodes` ``(0, size)``."""
        return range_nodes(0, self._size)

    def append(self, leaf_hash: bytes) -> list[NodeHash]:
        """Append one leaf hash; return every node it completes, the leaf first.

        The list holds ``(level, index, hash)`` for the leaf and for each
        interior node that became complete, bottom-up.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise FormatError(
                f"leaf hash is {len(leaf_hash)} bytes, not {HASH_SIZE}", code="leaf_hash_invalid"
            )
        size = self._size
        if size >= MAX_TREE_SIZE:
            raise FormatError("tree is full", code="size_out_of_range")
        hashes = self._hashes
        created: list[NodeHash] = [(0, size, leaf_hash)]
        h = leaf_hash
        level = 0
        index = size
        while index & 1:
            state = _NODE_STATE.copy()
            state.update(hashes.pop())
            state.update(h)
            h = state.digest()
            level += 1
            index >>= 1
            created.append((level, index, h))
        hashes.append(h)
        self._size = size + 1
        return created

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append many leaf hashes, discarding the created nodes."""
        for leaf_hash in leaf_hashes:
            self.append(leaf_hash)

    def root(self) -> bytes:
        """The root hash of the tree of :attr:`size` leaves."""
        if not self._hashes:
            return EMPTY_ROOT
        return fold_right(self._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"
