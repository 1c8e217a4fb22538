"""Reading a tiled log as a client: every tile checked against the checkpoint.

A client of a tiled log (c2sp.org/tlog-tiles) holds a checkpoint it verified
(tree size ``s``, root hash ``r``) and fetches tiles and entry bundles from a
host it does not trust (the log itself, a mirror, a CDN bucket).
:class:`VerifiedTileReader` is a :class:`~remembrancer.core.rfc6962.NodeReader`
that hands out hashes only from tiles it has checked against ``r``:

- The *right edge*.  For each tile level ``L`` with ``floor(s / 256**L) mod
  256 != 0`` the rightmost tile is partial, and every hash in it is part of
  the compact range of ``[0, s)``: together these tiles determine the root.
  The reader fetches them all in one batch, recomputes the root and compares
  it with ``r`` (``tiles_root_mismatch``).  The top level always has one.
- A *full* tile ``(L, N)`` is the complete subtree of its 256 hashes; its
  Merkle hash is hash ``N mod 256`` of tile ``(L + 1, N // 256)`` at size
  ``s``, which is checked the same way, up to the right edge
  (``tile_hash_mismatch``, with the tile's path).

So a node read costs at most one tile per tile level above it (each fetched
once, then cached in a bounded LRU), and a host serving a wrong tile gets a
:class:`~remembrancer.core.errors.VerificationError` naming the tile, never a
wrong hash.  Entry bundles (:meth:`VerifiedTileReader.read_entries`) are
checked entry by entry against the verified level-0 tile.

Example::

    reader = VerifiedTileReader(fetch_tiles, cp.size, cp.root_hash)
    proof = inclusion_proof(index, cp.size, reader)     # from checked tiles
    [entry] = reader.read_entries(index, index + 1, fetch_bundles)

``fetch_tiles`` and ``fetch_bundles`` return the bytes of each requested
tile (or bundle), in order, for the exact width asked; what they do (HTTP,
files) is the caller's business.  Layer invariants: pure, no I/O; not
thread-safe.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from remembrancer.core.errors import FormatError, NotFoundError, VerificationError
from remembrancer.core.rfc6962 import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_TREE_SIZE,
    NodeId,
    fold_right,
    hash_leaf,
    range_nodes,
)
from remembrancer.core.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    FetchTiles,
    Tile,
    decode_entry_bundle,
    tile_width,
)

__all__ = [
    "MAX_ENTRIES_PER_READ",
    "FetchBundles",
    "VerifiedTileReader",
    "edge_tiles",
]

FetchBundles = Callable[[Sequence[Tile]], Sequence[bytes]]
"""Returns the entry bundle of each requested level-0 tile, in order, in one batch."""

MAX_ENTRIES_PER_READ: Final = 16 * TILE_WIDTH
"""Most entries one :meth:`VerifiedTileReader.read_entries` call returns."""

_Key = tuple[int, int, int]  # (tile level, tile index, width)


def edge_tiles(size: int) -> list[Tile]:
    """The partial tiles of a tree of ``size`` leaves, lowest level first.

    Their hashes together are the compact range of ``[0, size)``; a tree of
    size 0 has none.
    """
    if not 0 <= size <= MAX_TREE_SIZE:
        raise FormatError(f"tree size {size} is outside uint64", code="size_out_of_range")
    out = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        if count % TILE_WIDTH:
            out.append(Tile(level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    return out


def _expand(tile_bytes: bytes, height: int) -> list[bytes]:
    """The tile's hash rows from its own level (row 0) up to ``height`` rows above.

    Row ``h`` holds the complete subtrees of ``2**h`` consecutive tile hashes.
    """
    rows = [tile_bytes]
    while len(rows) <= height:
        src = rows[-1]
        out = []
        for j in range(0, len(src) - 2 * HASH_SIZE + 1, 2 * HASH_SIZE):
            out.append(hashlib.sha256(b"\x01" + src[j : j + 2 * HASH_SIZE]).digest())
        rows.append(b"".join(out))
    return rows


def _node(rows: list[bytes], height: int, offset: int) -> bytes:
    start = offset * HASH_SIZE
    return rows[height][start : start + HASH_SIZE]


class VerifiedTileReader:
    """Complete-subtree hashes of the tree ``(size, root)``, from tiles checked
    against ``root``; see the module docstring.

    ``cache_tiles`` bounds the verified tiles kept (the right edge, at most one
    tile per level, is kept besides).  Tiles of the wrong length raise
    :class:`~remembrancer.core.errors.FormatError` ``tile_wrong_size``; tiles
    that do not hash to the root raise
    :class:`~remembrancer.core.errors.VerificationError` ``tiles_root_mismatch``
    (the right edge) or ``tile_hash_mismatch`` (a full tile, ``details.tile``).
    """

    __slots__ = ("_cache", "_cache_tiles", "_edge", "_fetch", "_root", "_size")

    def __init__(
        self, fetch_tiles: FetchTiles, size: int, root: bytes, *, cache_tiles: int = 256
    ) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise FormatError(f"tree size {size} is outside uint64", code="size_out_of_range")
        if not isinstance(root, bytes) or len(root) != HASH_SIZE:
            raise FormatError("a root hash is 32 bytes", code="root_invalid")
        if size == 0 and root != EMPTY_ROOT:
            raise VerificationError(
                "a tree of size 0 has the empty root", code="tiles_root_mismatch"
            )
        self._fetch = fetch_tiles
        self._size = size
        self._root = root
        self._cache_tiles = max(1, cache_tiles)
        self._cache: OrderedDict[_Key, list[bytes]] = OrderedDict()
        self._edge: dict[_Key, list[bytes]] | None = None

    @property
    def size(self) -> int:
        """The tree size whose tiles are read."""
        return self._size

    @property
    def root(self) -> bytes:
        """The root hash every tile is checked against."""
        return self._root

    def verify(self) -> list[Tile]:
        """Fetch and check the right-edge tiles now; return them (none for size 0)."""
        self._ensure([])
        return [Tile(*key) for key in self._edge or {}]

    # --- nodes -----------------------------------------------------------------------

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Hashes of complete subtrees, from verified tiles (NodeReader)."""
        size = self._size
        plan: list[tuple[_Key, int, int]] = []
        for level, index in ids:
            if level < 0 or index < 0 or (index + 1) << level > size:
                raise NotFoundError(
                    f"node ({level}, {index}) is not a complete subtree of a tree of size {size}",
                    code="node_not_found",
                    details={"level": level, "index": index, "size": size},
                )
            tile_level, height = divmod(level, TILE_HEIGHT)
            tile_index = (index << height) >> TILE_HEIGHT
            width = tile_width(tile_level, tile_index, size)
            offset = index - (tile_index << (TILE_HEIGHT - height))
            plan.append(((tile_level, tile_index, width), height, offset))
        have = self._ensure([key for key, _, _ in plan])
        out = []
        for key, height, offset in plan:
            rows = have[key]
            if len(rows) <= height:
                rows.extend(_expand(rows[-1], height - len(rows) + 1)[1:])
            out.append(_node(rows, height, offset))
        return out

    def _parent(self, key: _Key) -> _Key:
        level, index, _ = key
        parent_index = index // TILE_WIDTH
        return (level + 1, parent_index, tile_width(level + 1, parent_index, self._size))

    def _ensure(self, keys: Sequence[_Key]) -> dict[_Key, list[bytes]]:
        """Make sure every tile in ``keys`` is verified; return them (and the edge)."""
        have: dict[_Key, list[bytes]] = {}
        edge_keys = {(t.level, t.index, t.width) for t in edge_tiles(self._size)}
        wanted: list[_Key] = []
        seen: set[_Key] = set()
        if self._edge is None:
            wanted.extend(sorted(edge_keys))
            seen.update(edge_keys)
        else:
            have.update(self._edge)
        for key in keys:
            cur = key
            while cur not in seen and cur not in have:
                cached = self._cache.get(cur)
                if cached is not None:
                    self._cache.move_to_end(cur)
                    have[cur] = cached
                    break
                seen.add(cur)
                wanted.append(cur)
                if cur in edge_keys:
                    break
                if cur[2] != TILE_WIDTH:  # only the edge is partial at this size
                    raise FormatError(f"no partial tile {cur} in a tree of size {self._size}",
                                      code="tile_invalid")  # fmt: skip
                cur = self._parent(cur)
        if wanted:
            self._load(wanted, edge_keys, have)
        return have

    def _load(
        self, wanted: list[_Key], edge_keys: set[_Key], have: dict[_Key, list[bytes]]
    ) -> None:
        tiles = [Tile(*key) for key in wanted]
        blobs = list(self._fetch(tiles))
        if len(blobs) != len(tiles):
            raise FormatError(
                f"asked for {len(tiles)} tiles, got {len(blobs)}", code="tile_count_mismatch"
            )
        fetched: dict[_Key, bytes] = {}
        for key, tile, blob in zip(wanted, tiles, blobs, strict=True):
            if len(blob) != tile.byte_size:
                raise FormatError(
                    f"tile {tile.path()} is {len(blob)} bytes, expected {tile.byte_size}",
                    code="tile_wrong_size",
                    details={"tile": tile.path()},
                )
            fetched[key] = bytes(blob)
        if self._edge is None:
            self._edge = self._check_edge({k: fetched[k] for k in edge_keys})
            have.update(self._edge)
        # Full tiles, top-down: each one's parent is verified before it.
        for key in sorted((k for k in fetched if k not in edge_keys), reverse=True):
            rows = _expand(fetched[key], TILE_HEIGHT)
            parent_key = self._parent(key)
            parent = have[parent_key]
            expected = _node(parent, 0, key[1] % TILE_WIDTH)
            if rows[TILE_HEIGHT] != expected:
                path = Tile(*key).path()
                raise VerificationError(
                    f"tile {path} does not hash to its entry in tile {Tile(*parent_key).path()},"
                    " which the checkpoint's root covers",
                    code="tile_hash_mismatch",
                    details={"tile": path},
                )
            have[key] = rows
            self._cache[key] = rows
        while len(self._cache) > self._cache_tiles:
            self._cache.popitem(last=False)

    def _check_edge(self, tiles: dict[_Key, bytes]) -> dict[_Key, list[bytes]]:
        rows = {key[0]: (key, [blob]) for key, blob in tiles.items()}  # by tile level
        hashes = []
        for level, index in range_nodes(0, self._size):
            tile_level, height = divmod(level, TILE_HEIGHT)
            key, tile_rows = rows[tile_level]
            if len(tile_rows) <= height:
                tile_rows[:] = _expand(tile_rows[0], height)
            offset = index - (key[1] << (TILE_HEIGHT - height))
            hashes.append(_node(tile_rows, height, offset))
        if hashes and fold_right(hashes) != self._root:
            paths = [Tile(*key).path() for key in sorted(tiles)]
            raise VerificationError(
                f"the right-edge tiles ({', '.join(paths)}) do not hash to the checkpoint's "
                f"root at size {self._size}",
                code="tiles_root_mismatch",
                details={"tiles": paths, "size": self._size},
            )
        return {key: tile_rows for key, tile_rows in rows.values()}

    # --- entries ---------------------------------------------------------------------

    def read_entries(self, start: int, end: int, fetch_bundles: FetchBundles) -> list[bytes]:
        """Entries ``[start, end)`` from their entry bundles, each checked against
        its leaf hash in the verified level-0 tile.

        At most :data:`MAX_ENTRIES_PER_READ` entries per call.  Raises
        FormatError for a malformed bundle (``bundle_*``, with ``details.tile``),
        VerificationError ``entry_hash_mismatch`` for an entry that is not the
        one the tree holds.
        """
        if not 0 <= start <= end <= self._size:
            raise NotFoundError(
                f"entries [{start}, {end}) are not in a tree of size {self._size}",
                code="index_out_of_range",
            )
        if end - start > MAX_ENTRIES_PER_READ:
            raise FormatError(
                f"at most {MAX_ENTRIES_PER_READ} entries per read", code="range_too_large"
            )
        if start == end:
            return []
        first, last = start // TILE_WIDTH, (end - 1) // TILE_WIDTH
        keys = [(0, n, tile_width(0, n, self._size)) for n in range(first, last + 1)]
        have = self._ensure(keys)
        tiles = [Tile(*key) for key in keys]
        blobs = list(fetch_bundles(tiles))
        if len(blobs) != len(tiles):
            raise FormatError(
                f"asked for {len(tiles)} entry bundles, got {len(blobs)}",
                code="bundle_count_mismatch",
            )
        out: list[bytes] = []
        for key, tile, blob in zip(keys, tiles, blobs, strict=True):
            try:
                entries = decode_entry_bundle(blob, tile.width)
            except FormatError as e:
                raise FormatError(
                    f"entry bundle {tile.entries_path()}: {e.message}",
                    code=e.code,
                    details={"tile": tile.entries_path()},
                ) from e
            leaves = have[key][0]
            for i, entry in enumerate(entries):
                index = tile.index * TILE_WIDTH + i
                if not start <= index < end:
                    continue
                if hash_leaf(entry) != leaves[i * HASH_SIZE : (i + 1) * HASH_SIZE]:
                    raise VerificationError(
                        f"entry {index} in {tile.entries_path()} does not hash to leaf {index} "
                        "of the verified tree",
                        code="entry_hash_mismatch",
                        details={"tile": tile.entries_path(), "index": index},
                    )
                out.append(entry)
        return out
