"""A naive RFC 6962 Merkle tree, written straight from RFC 6962 section 2.1.

For tests only: the recursive definitions MTH, PATH, PROOF and SUBPROOF over a
list of leaf hashes, with the Merkle Tree Hash of each ``[start, end)`` range
memoised so that trees of a few thousand leaves stay cheap.  The real code in
``remembrancer.core.rfc6962`` and ``remembrancer.core.tiles`` is checked
against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n > 1``)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


class NaiveTree:
    """The leaves ``D[0:n]`` (given as leaf hashes) and the RFC's functions over them."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.leaves: list[bytes] = list(leaf_hashes)
        self._memo: dict[tuple[int, int], bytes] = {}

    @classmethod
    def from_entries(cls, entries: Sequence[bytes]) -> NaiveTree:
        """A tree whose leaves are the RFC 6962 leaf hashes of ``entries``."""
        return cls([hashlib.sha256(b"\x00" + e).digest() for e in entries])

    def append(self, leaf_hash: bytes) -> None:
        self.leaves.append(leaf_hash)

    def mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end])."""
        key = (start, end)
        memo = self._memo.get(key)
        if memo is not None:
            return memo
        n = end - start
        if n == 0:
            value = hashlib.sha256(b"").digest()
        elif n == 1:
            value = self.leaves[start]
        else:
            k = _split(n)
            value = hashlib.sha256(
                b"\x01" + self.mth(start, start + k) + self.mth(start + k, end)
            ).digest()
        self._memo[key] = value
        return value

    def root(self, size: int) -> bytes:
        """MTH(D[0:size])."""
        return self.mth(0, size)

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]): the audit path of leaf ``start + m``."""
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size])."""
        return self.path(index, 0, size)

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[start:end], b)."""
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = _split(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """PROOF(size1, D[0:size2]) = SUBPROOF(size1, D[0:size2], true)."""
        return self.subproof(size1, 0, size2, True)
