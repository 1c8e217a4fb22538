"""Incremental tile maintenance for one log, in flat memory.

:class:`TileWriter` keeps the right edge of the tree (a
:class:`~remembrancer.core.rfc6962.CompactRange`) and, for each tile level,
the hashes of the rightmost, still partial tile.  Appending leaf hashes yields
the tiles that changed (full ones once, partial ones rewritten wider), ready
for one storage transaction.  Memory is bounded by 256 hashes per tile level
plus 64 edge hashes, whatever the log size.

:class:`BatchProofs` answers the inclusion proofs of a batch just appended
without touching storage: every node a proof for a new leaf needs is either a
node of the old right edge or one the writer computed for the batch (the
incomplete subtree at the right border is hashed once per level).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from remembrancer.core.rfc6962 import CompactRange, NodeId, hash_children, range_nodes
from remembrancer.core.tiles import TILE_HEIGHT, TILE_WIDTH

TileBytes = tuple[int, int, bytes]  # (tile level, tile index, concatenated hashes)


class TileWriter:
    """Appends leaf hashes to one log's tiles; see the module docstring."""

    __slots__ = ("_edge", "_partial", "levels")

    def __init__(self, edge: CompactRange, partial: dict[int, bytearray]) -> None:
        self._edge = edge
        self._partial = partial  # tile level -> hashes of its rightmost partial tile
        # The nodes the last append computed, per tree level from 0: (index of
        # the first, their hashes); what :class:`BatchProofs` reads proofs from.
        self.levels: list[tuple[int, list[bytes]]] = []

    @classmethod
    def empty(cls) -> TileWriter:
        return cls(CompactRange(), {})

    @classmethod
    def resume(
        cls, size: int, read_nodes: Callable[[Sequence[NodeId]], list[bytes]],
        read_tiles: Callable[[Sequence[tuple[int, int]]], dict[tuple[int, int], bytes]],
    ) -> TileWriter:  # fmt: skip
        """Rebuild the writer for a log of ``size`` leaves from storage."""
        ids = range_nodes(0, size)
        edge = CompactRange(size, read_nodes(ids) if ids else [])
        wanted = {}
        level = 0
        while (size >> (TILE_HEIGHT * level)) > 0:
            count = size >> (TILE_HEIGHT * level)  # stored hashes at this tile level
            if count % TILE_WIDTH:
                wanted[(level, count // TILE_WIDTH)] = count % TILE_WIDTH
            level += 1
        found = read_tiles(list(wanted)) if wanted else {}
        partial: dict[int, bytearray] = {}
        for (lvl, idx), width in wanted.items():
            data = found.get((lvl, idx), b"")
            if len(data) < width * 32:
                from remembrancer.core.errors import StorageError

                raise StorageError(
                    f"tile {lvl}/{idx} holds {len(data) // 32} hashes, the log needs {width}",
                    code="tile_missing",
                )
            partial[lvl] = bytearray(data[: width * 32])
        return cls(edge, partial)

    @property
    def size(self) -> int:
        return self._edge.size

    def root(self) -> bytes:
        return self._edge.root()

    def edge(self) -> CompactRange:
        return CompactRange(self._edge.size, self._edge.hashes)

    def copy(self) -> TileWriter:
        """An independent copy (to restore if a commit fails)."""
        return TileWriter(self.edge(), {k: bytearray(v) for k, v in self._partial.items()})

    def append(self, leaf_hashes: Sequence[bytes]) -> list[TileBytes]:
        """Append leaves; return every tile that changed, with its new contents.

        Works level by level over the whole batch (one pass per tree level,
        hashing pairs) rather than leaf by leaf: the nodes completed at tree
        level ``l`` start at index ``old_size >> l``; when that index is odd
        their left sibling is the old right edge's node at level ``l``.
        """
        self.levels = []
        if not leaf_hashes:
            return []
        old = self._edge
        old_size = old.size
        new_size = old_size + len(leaf_hashes)
        # The old edge's node per level (one per set bit of old_size).
        edge_at: dict[int, bytes] = {}
        for (level, _), h in zip(old.node_ids(), old.hashes, strict=True):
            edge_at[level] = h
        partial = self._partial
        touched: dict[tuple[int, int], bytes] = {}
        new_edge: dict[int, bytes] = {}
        nodes = list(leaf_hashes)
        first = old_size
        level = 0
        sha = hashlib.sha256
        while nodes:
            if level % TILE_HEIGHT == 0:
                self._write_tile_level(level // TILE_HEIGHT, first, nodes, touched)
            if first & 1:
                nodes.insert(0, edge_at[level])
                first -= 1
            self.levels.append((first, nodes))
            if (new_size >> level) & 1:
                new_edge[level] = nodes[-1]
            nodes = [
                sha(b"\x01" + nodes[i] + nodes[i + 1]).digest() for i in range(0, len(nodes) - 1, 2)
            ]
            first >>= 1
            level += 1
        while (new_size >> level) > 0:  # higher levels the batch did not reach
            if (new_size >> level) & 1:
                new_edge[level] = edge_at[level]
            level += 1
        self._edge = CompactRange(new_size, [new_edge[lv] for lv in sorted(new_edge, reverse=True)])
        out: list[TileBytes] = []
        for (tlevel, tindex), data in touched.items():
            out.append((tlevel, tindex, data if data else bytes(partial[tlevel])))
        return out

    def _write_tile_level(self, tlevel: int, first: int, nodes: list[bytes],
                          touched: dict[tuple[int, int], bytes]) -> None:  # fmt: skip
        """Add the completed nodes ``nodes`` (indices from ``first``) of tile level
        ``tlevel`` to the partial tile buffers, recording full and partial tiles."""
        buf = self._partial.get(tlevel)
        if buf is None:
            buf = self._partial[tlevel] = bytearray()
        index = first
        pos = 0
        count = len(nodes)
        while pos < count:
            room = TILE_WIDTH - (index % TILE_WIDTH)
            take = nodes[pos : pos + room]
            buf += b"".join(take)
            tindex = index // TILE_WIDTH
            if len(buf) == TILE_WIDTH * 32:
                touched[(tlevel, tindex)] = bytes(buf)
                buf.clear()
            else:
                touched[(tlevel, tindex)] = b""  # partial: materialised by the caller
            index += len(take)
            pos += len(take)


class BatchProofs:
    """Inclusion proofs of the leaves of a batch just appended, in the tree of
    ``size`` leaves (the size after the batch), read from the nodes the
    :class:`TileWriter` computed while appending (``writer.levels``) and the
    old right edge: no node is hashed twice, and the proofs of a batch share
    their common upper parts (each is built once per batch, not per record).

    The audit path of leaf ``i`` holds, level by level from the leaves, the
    sibling of the path node ``k = i >> level``: the complete node ``k - 1``
    when ``k`` is odd; else the node ``k + 1`` when it exists, complete, or the
    incomplete subtree at the right border of the tree (hashed once per
    level); nothing when ``k`` is the last node of its level (it is promoted).
    """

    __slots__ = ("_border", "_edge", "_levels", "_size", "_suffix")

    def __init__(
        self, edge: CompactRange, levels: Sequence[tuple[int, list[bytes]]], size: int
    ) -> None:
        self._edge = dict(zip(edge.node_ids(), edge.hashes, strict=True))
        self._levels = levels
        self._size = size
        self._border: dict[int, bytes] = {}
        self._suffix: dict[tuple[int, int], tuple[bytes, ...]] = {}

    def node(self, level: int, index: int) -> bytes:
        """The hash of the complete node ``index`` at ``level``."""
        if level < len(self._levels):
            first, nodes = self._levels[level]
            if 0 <= index - first < len(nodes):
                return nodes[index - first]
        return self._edge[(level, index)]

    def _incomplete(self, level: int, index: int) -> bytes:
        """The hash of the subtree ``index`` at ``level`` cut at the tree's size
        (the last node of its level; a complete node if the size allows)."""
        if (index + 1) << level <= self._size:
            return self.node(level, index)
        h = self._border.get(level)
        if h is None:
            right = 2 * index + 1
            if right << (level - 1) >= self._size:
                h = self._incomplete(level - 1, 2 * index)
            else:
                h = hash_children(
                    self.node(level - 1, 2 * index), self._incomplete(level - 1, right)
                )
            self._border[level] = h
        return h

    def proofs(self, start: int) -> list[tuple[bytes, ...]]:
        """The inclusion proofs of leaves ``start`` to ``size - 1`` (the batch's
        leaves, or its last ones), in order.

        A leaf's sibling is read from the batch's level 0 directly (it holds
        the leaf before the batch too when the batch starts at an odd index);
        above it, :meth:`_path`, shared by the two leaves of a pair."""
        size = self._size
        if size <= 1:
            return [()] * (size - start)
        first, nodes = self._levels[0]
        path = self._path
        out: list[tuple[bytes, ...]] = []
        for i in range(start, size):
            above = path(1, i >> 1)
            if i & 1:
                out.append((nodes[i - 1 - first], *above))
            elif i + 1 < size:
                out.append((nodes[i + 1 - first], *above))
            else:
                out.append(above)
        return out

    def _path(self, level: int, k: int) -> tuple[bytes, ...]:
        key = (level, k)
        out = self._suffix.get(key)
        if out is not None:
            return out
        size = self._size
        if (size - 1) >> level == 0:  # the root
            out = ()
        elif k & 1:
            out = (self.node(level, k - 1), *self._path(level + 1, k >> 1))
        elif (k + 1) << level < size:
            out = (self._incomplete(level, k + 1), *self._path(level + 1, k >> 1))
        else:
            out = self._path(level + 1, k >> 1)
        self._suffix[key] = out
        return out
