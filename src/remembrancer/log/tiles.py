"""Incremental tile maintenance for one log, in flat memory.

:class:`TileWriter` keeps the right edge of the tree (a
:class:`~remembrancer.core.rfc6962.CompactRange`) and, for each tile level,
the hashes of the rightmost, still partial tile.  Appending leaf hashes yields
the tiles that changed (full ones once, partial ones rewritten wider), ready
for one storage transaction.  Memory is bounded by 256 hashes per tile level
plus 64 edge hashes, whatever the log size.

:class:`BatchNodeReader` answers proof queries for a batch just appended
without touching storage: every node a proof for a new leaf needs is either a
node of the old right edge, a node inside the batch, or a node straddling
both, which it folds from the other two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from remembrancer.core.rfc6962 import CompactRange, NodeId, hash_children, range_nodes
from remembrancer.core.tiles import TILE_HEIGHT, TILE_WIDTH

TileBytes = tuple[int, int, bytes]  # (tile level, tile index, concatenated hashes)


class TileWriter:
    """Appends leaf hashes to one log's tiles; see the module docstring."""

    __slots__ = ("_edge", "_partial")

    def __init__(self, edge: CompactRange, partial: dict[int, bytearray]) -> None:
        self._edge = edge
        self._partial = partial  # tile level -> hashes of its rightmost partial tile

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


class BatchNodeReader:
    """Nodes of the tree ``[0, end)`` right after appending ``[start, end)``.

    ``edge`` is the right edge of ``[0, start)``; ``leaf_hashes`` the batch.
    """

    def __init__(self, edge: CompactRange, leaf_hashes: Sequence[bytes]) -> None:
        self._start = edge.size
        self._end = edge.size + len(leaf_hashes)
        self._memo: dict[NodeId, bytes] = dict(zip(edge.node_ids(), edge.hashes, strict=True))
        for i, h in enumerate(leaf_hashes):
            self._memo[(0, self._start + i)] = h

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        return [self._node(level, index) for level, index in ids]

    def _node(self, level: int, index: int) -> bytes:
        h = self._memo.get((level, index))
        if h is None:
            if level == 0 or (index + 1) << level > self._end:
                raise KeyError((level, index))
            h = hash_children(
                self._node(level - 1, 2 * index), self._node(level - 1, 2 * index + 1)
            )
            self._memo[(level, index)] = h
        return h
