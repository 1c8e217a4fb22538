"""C2SP tlog-tiles: tile coordinates and paths, entry bundles, tiled trees.

A tiled log (c2sp.org/tlog-tiles) serves its Merkle tree as *tiles*: tile
``(L, N)`` holds the hashes of tree level ``8 * L`` with indices
``N * 256 .. N * 256 + 255``, i.e. the complete subtrees of height ``8 * L``
over leaves ``[(N * 256 + i) * 256**L, (N * 256 + i + 1) * 256**L)``.  Only
every eighth tree level is stored; the seven levels in between are recomputed
by hashing a tile's hashes pairwise, the way tlog-tiles clients do.  The
rightmost tile of a level is *partial* (width 1..255) unless the level's hash
count is a multiple of 256.  Entries are served in *entry bundles*: the entries
of one level-0 tile, each prefixed by its length as a big-endian uint16.

Paths (relative to the log prefix)::

    tile/<L>/<N>[.p/<W>]         e.g. tile/0/x001/x234/067.p/12
    tile/entries/<N>[.p/<W>]

``<N>`` is written in zero-padded groups of three digits, all but the last
prefixed with ``x``; ``<L>`` (0..63) and ``<W>`` (1..255) have no leading
zeroes.  Parsers accept exactly the canonical form and nothing else.

Layer invariants: pure, no I/O.  :class:`TileTree` is an in-memory tree for
sequencing and tests; :class:`TileNodeReader` turns any ``fetch_tiles``
callable (a storage backend, an HTTP client) into a
:class:`~remembrancer.core.rfc6962.NodeReader`, so proofs cost O(log n) tile
reads.  Neither class is thread-safe; give each thread its own, or lock.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from remembrancer.core import rfc6962
from remembrancer.core.errors import FormatError, NotFoundError
from remembrancer.core.rfc6962 import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE, NodeId

__all__ = [
    "MAX_BUNDLE_ENTRIES",
    "MAX_ENTRY_SIZE",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "FetchTiles",
    "NodeLocation",
    "Tile",
    "TileNodeReader",
    "TileTree",
    "bundle_leaf_hashes",
    "changed_tiles",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "node_location",
    "parse_entries_path",
    "parse_tile_path",
    "tile_width",
    "tiles_for_size",
]

TILE_HEIGHT = 8
"""Tree levels spanned by one tile."""

TILE_WIDTH = 256
"""Hashes in a full tile (``2**TILE_HEIGHT``); entries in a full bundle."""

MAX_ENTRY_SIZE = 65535
"""Largest entry an entry bundle can carry (its length prefix is a uint16)."""

MAX_BUNDLE_ENTRIES = TILE_WIDTH
"""Most entries in one bundle."""

MAX_TILE_LEVEL = 63
"""Largest ``<L>`` the path grammar allows."""

# Hash states that have already absorbed the RFC 6962 prefix byte: copying one
# and feeding it the rest is cheaper than concatenating the prefix.
_LEAF_STATE = hashlib.sha256(b"\x00")
_NODE_STATE = hashlib.sha256(b"\x01")
_SYNC_CHUNK = 1 << 13  # leaves per batch of interior hashing (a power of two)


# --- coordinates and paths ---------------------------------------------------


def _encode_index(n: int) -> str:
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


@dataclass(frozen=True, slots=True)
class Tile:
    """Tile coordinates: tile ``level`` (tree level ``8 * level``), ``index``, ``width``.

    ``width`` is the number of hashes (1..256); below 256 the tile is partial.
    The same coordinates at level 0 name the entry bundle of those leaves.
    """

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_TILE_LEVEL:
            raise FormatError(f"tile level {self.level} is outside 0..63", code="tile_invalid")
        if not 0 <= self.index <= MAX_TREE_SIZE:
            raise FormatError(f"tile index {self.index} is outside uint64", code="tile_invalid")
        if not 1 <= self.width <= TILE_WIDTH:
            raise FormatError(f"tile width {self.width} is outside 1..256", code="tile_invalid")

    @property
    def is_partial(self) -> bool:
        """Whether the tile holds fewer than 256 hashes."""
        return self.width < TILE_WIDTH

    @property
    def byte_size(self) -> int:
        """Length of the tile's bytes: ``32 * width``."""
        return self.width * HASH_SIZE

    def _suffix(self) -> str:
        n = _encode_index(self.index)
        return n if self.width == TILE_WIDTH else f"{n}.p/{self.width}"

    def path(self) -> str:
        """The hash tile's path, ``tile/<L>/<N>[.p/<W>]``."""
        return f"tile/{self.level}/{self._suffix()}"

    def entries_path(self) -> str:
        """The entry bundle's path, ``tile/entries/<N>[.p/<W>]`` (level 0 only)."""
        if self.level != 0:
            raise FormatError(
                f"entry bundles exist only at level 0, not {self.level}", code="tile_invalid"
            )
        return f"tile/entries/{self._suffix()}"


_N_RE = r"((?:x[0-9]{3}/){0,6}[0-9]{3})"
_W_RE = r"(?:\.p/([1-9][0-9]{0,2}))?"
_TILE_RE = re.compile(r"tile/(0|[1-9][0-9]?)/" + _N_RE + _W_RE)
_ENTRIES_RE = re.compile(r"tile/entries/" + _N_RE + _W_RE)
_MAX_PATH = 64


def _bad_path(path: object, why: str) -> FormatError:
    shown = repr(path[:_MAX_PATH]) if isinstance(path, str) else type(path).__name__
    return FormatError(f"invalid tile path {shown}: {why}", code="tile_path_invalid")


def _parse(path: str, pattern: re.Pattern[str], kind: str) -> tuple[int, int, int]:
    if not isinstance(path, str):
        raise _bad_path(path, "not a string")
    if len(path) > _MAX_PATH:
        raise _bad_path(path, "too long")
    m = pattern.fullmatch(path)
    if m is None:
        raise _bad_path(path, f"not a canonical {kind} path")
    groups = m.groups()
    if kind == "tile":
        level = int(groups[0])
        if level > MAX_TILE_LEVEL:
            raise _bad_path(path, "level above 63")
        n_text, w_text = groups[1], groups[2]
    else:
        level = 0
        n_text, w_text = groups[0], groups[1]
    if n_text.startswith("x000/"):
        raise _bad_path(path, "index has a leading zero group")
    index = int(n_text.replace("x", "").replace("/", ""))
    if index > MAX_TREE_SIZE:
        raise _bad_path(path, "index beyond uint64")
    width = TILE_WIDTH
    if w_text is not None:
        width = int(w_text)
        if width >= TILE_WIDTH:
            raise _bad_path(path, "partial width must be 1..255")
    return level, index, width


def parse_tile_path(path: str) -> Tile:
    """Parse a canonical ``tile/<L>/<N>[.p/<W>]`` path (no leading slash).

    Raises :class:`~remembrancer.core.errors.FormatError` (``tile_path_invalid``)
    for anything else: other prefixes, levels above 63, leading zeroes, an
    ``x000/`` leading group, a width of 0 or 256 and above in ``.p/``, indices
    beyond uint64, trailing characters.
    """
    return Tile(*_parse(path, _TILE_RE, "tile"))


def parse_entries_path(path: str) -> Tile:
    """Parse a canonical ``tile/entries/<N>[.p/<W>]`` path into level-0 coordinates.

    Same rules and errors as :func:`parse_tile_path`.
    """
    return Tile(*_parse(path, _ENTRIES_RE, "entry bundle"))


# --- tree geometry -----------------------------------------------------------


def tile_width(level: int, index: int, size: int) -> int:
    """Width of tile ``(level, index)`` in a tree of ``size`` leaves (0 if it has none)."""
    count = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


def changed_tiles(old_size: int, new_size: int) -> list[Tile]:
    """The tiles a tree must (re)write when it grows from ``old_size`` to ``new_size``.

    For each tile level: every tile whose content differs between the two sizes
    (new full tiles, and the new rightmost partial tile), with its width at
    ``new_size``, lowest level first, then by index.
    """
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise FormatError(
            f"cannot grow a tree from {old_size} to {new_size}", code="size_out_of_range"
        )
    out: list[Tile] = []
    level = 0
    while True:
        shift = TILE_HEIGHT * level
        old_count = old_size >> shift
        new_count = new_size >> shift
        if new_count == 0:
            break
        if new_count != old_count:
            for index in range(old_count // TILE_WIDTH, (new_count - 1) // TILE_WIDTH + 1):
                out.append(Tile(level, index, min(TILE_WIDTH, new_count - index * TILE_WIDTH)))
        level += 1
    return out


def tiles_for_size(size: int) -> list[Tile]:
    """Every tile of a tree of ``size`` leaves: full ones and the partial ones.

    Matches c2sp.org/tlog-tiles: a tree of 70,000 leaves has 273 full level-0
    tiles, a level-0 tile of width 112, a full level-1 tile, a level-1 tile of
    width 17 and a level-2 tile of width 1.
    """
    return changed_tiles(0, size)


@dataclass(frozen=True, slots=True)
class NodeLocation:
    """Where the hash of a complete subtree lives in the tiles.

    Node ``(level, index)`` is the Merkle root of the ``2**height`` hashes
    ``[offset * 2**height, (offset + 1) * 2**height)`` of tile
    ``(tile_level, tile_index)``; with ``height == 0`` it is stored there
    directly at ``offset``.
    """

    tile_level: int
    tile_index: int
    height: int
    offset: int

    @property
    def first(self) -> int:
        """Position in the tile of the first hash under the node."""
        return self.offset << self.height

    @property
    def count(self) -> int:
        """Number of the tile's hashes under the node."""
        return 1 << self.height

    def tile(self, size: int) -> Tile:
        """The tile to read for this node in a tree of ``size`` leaves."""
        width = tile_width(self.tile_level, self.tile_index, size)
        if width < self.first + self.count:
            raise NotFoundError(
                f"tile ({self.tile_level}, {self.tile_index}) of a tree of size {size} "
                "does not cover this node",
                code="node_not_found",
            )
        return Tile(self.tile_level, self.tile_index, width)


def node_location(level: int, index: int) -> NodeLocation:
    """The tile and position that hold node ``(level, index)``.

    Levels that are multiples of 8 are stored in tiles; any other node is
    recomputed from the hashes at the level below it that is a multiple of 8.
    """
    if not 0 <= level < TILE_HEIGHT * (MAX_TILE_LEVEL + 1) or index < 0:
        raise FormatError(f"no node ({level}, {index})", code="node_invalid")
    tile_level, height = divmod(level, TILE_HEIGHT)
    per_tile = TILE_WIDTH >> height
    tile_index, offset = divmod(index, per_tile)
    return NodeLocation(tile_level, tile_index, height, offset)


def _check_node(level: int, index: int, size: int) -> None:
    if level < 0 or index < 0 or (index + 1) << level > size:
        raise NotFoundError(
            f"node ({level}, {index}) is not a complete subtree of a tree of size {size}",
            code="node_not_found",
            details={"level": level, "index": index, "size": size},
        )


def _parents(src: bytes) -> bytes:
    # One tree level up: hash consecutive pairs of 32-byte hashes (a trailing
    # unpaired hash has no parent yet).
    out: list[bytes] = []
    put = out.append
    fresh = _NODE_STATE.copy
    for j in range(0, len(src) - 63, 64):
        h = fresh()
        h.update(src[j : j + 64])
        put(h.digest())
    return b"".join(out)


# --- the in-memory tree ------------------------------------------------------


class TileTree:
    """An appendable RFC 6962 tree that keeps every level, 32 bytes per hash.

    Level ``k`` is one contiguous ``bytearray`` of the complete nodes at that
    level (about 64 bytes per leaf in all), so node reads, tiles and proofs are
    direct lookups.  Appends only hash the leaf; interior nodes are computed in
    batches the next time anything is read (amortised one interior hash per
    leaf), which keeps appending close to the raw speed of ``hashlib``.
    Implements :class:`~remembrancer.core.rfc6962.NodeReader`.  The tree keeps
    hashes only, not entries.
    """

    __slots__ = ("_built", "_leaves", "_levels")

    def __init__(self) -> None:
        self._leaves = bytearray()
        self._levels: list[bytearray] = [self._leaves]
        self._built = 0

    # appending

    def append(self, entry: bytes) -> int:
        """Append one entry (at most 65,535 bytes); return its index."""
        if len(entry) > MAX_ENTRY_SIZE:
            raise FormatError(
                f"entry of {len(entry)} bytes exceeds {MAX_ENTRY_SIZE}", code="entry_too_large"
            )
        h = _LEAF_STATE.copy()
        h.update(entry)
        leaves = self._leaves
        leaves += h.digest()
        return (len(leaves) >> 5) - 1

    def append_many(self, entries: Iterable[bytes]) -> int:
        """Append entries in order; return the index of the first one."""
        batch = entries if isinstance(entries, list) else list(entries)
        first = len(self._leaves) >> 5
        if not batch:
            return first
        longest = max(map(len, batch))
        if longest > MAX_ENTRY_SIZE:
            raise FormatError(
                f"entry of {longest} bytes exceeds {MAX_ENTRY_SIZE}", code="entry_too_large"
            )
        fresh = _LEAF_STATE.copy
        leaves = self._leaves
        step = _SYNC_CHUNK
        for start in range(0, len(batch), step):
            # Hash in chunks and build the interior nodes while the new leaf
            # hashes are still in the CPU cache.
            hashes: list[bytes] = []
            put = hashes.append
            for e in batch[start : start + step]:
                h = fresh()
                h.update(e)
                put(h.digest())
            leaves += b"".join(hashes)
            self._sync()
        return first

    def append_leaf_hashes(self, hashes: Iterable[bytes]) -> int:
        """Append precomputed leaf hashes in order; return the index of the first one."""
        batch = hashes if isinstance(hashes, list) else list(hashes)
        first = len(self._leaves) >> 5
        if batch and set(map(len, batch)) != {HASH_SIZE}:
            raise FormatError(
                f"leaf hashes must be {HASH_SIZE} bytes each", code="leaf_hash_invalid"
            )
        self._leaves += b"".join(batch)
        return first

    def _sync(self) -> None:
        # Compute the interior nodes completed since the last sync, in chunks
        # of _SYNC_CHUNK leaves so the working set stays in the CPU cache.
        size = len(self._leaves) >> 5
        built = self._built
        levels = self._levels
        while built < size:
            upto = min(size, (built | (_SYNC_CHUNK - 1)) + 1)
            level = 0
            while True:
                lo = built >> (level + 1)
                hi = upto >> (level + 1)
                if lo == hi:
                    break
                src = bytes(levels[level][lo * 64 : hi * 64])
                if level + 1 == len(levels):
                    levels.append(bytearray())
                levels[level + 1] += _parents(src)
                level += 1
            built = upto
            self._built = built

    # reading

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._leaves) >> 5

    def _size_arg(self, size: int | None) -> int:
        current = len(self._leaves) >> 5
        if size is None:
            return current
        if not 0 <= size <= current:
            raise NotFoundError(
                f"tree size {size} is beyond the current size {current}",
                code="size_out_of_range",
            )
        return size

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        return self.read_nodes([(0, index)])[0]

    def node(self, level: int, index: int) -> bytes:
        """The hash of complete subtree ``(level, index)``."""
        return self.read_nodes([(level, index)])[0]

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Hashes of complete subtrees, by direct lookup (NodeReader)."""
        if len(self._leaves) >> 5 != self._built:
            self._sync()
        size = self._built
        levels = self._levels
        out: list[bytes] = []
        for level, index in ids:
            if level < 0 or index < 0 or (index + 1) << level > size:
                _check_node(level, index, size)
            start = index << 5
            out.append(bytes(levels[level][start : start + 32]))
        return out

    def root(self, size: int | None = None) -> bytes:
        """Root hash at ``size`` (default: the current size)."""
        size = self._size_arg(size)
        return rfc6962.root_hash(size, self) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of leaf ``index`` in the tree of ``size`` (default: current)."""
        return rfc6962.inclusion_proof(index, self._size_arg(size), self)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Consistency proof from ``size1`` to ``size2`` (default: current)."""
        return rfc6962.consistency_proof(size1, self._size_arg(size2), self)

    def tile_bytes(self, level: int, index: int, width: int = TILE_WIDTH) -> bytes:
        """The bytes of tile ``(level, index)`` with ``width`` hashes.

        Any width up to what the tree holds is served (a partial tile of an
        earlier tree size is a prefix of the later one).
        """
        if not (0 <= level <= MAX_TILE_LEVEL and index >= 0 and 1 <= width <= TILE_WIDTH):
            raise FormatError(f"no tile ({level}, {index}, {width})", code="tile_invalid")
        if len(self._leaves) >> 5 != self._built:
            self._sync()
        tree_level = level * TILE_HEIGHT
        start = index * TILE_WIDTH
        have = (self._built >> tree_level) if tree_level < len(self._levels) else 0
        if start + width > have:
            raise NotFoundError(
                f"tile ({level}, {index}) of width {width} is beyond the tree",
                code="tile_not_found",
            )
        return bytes(self._levels[tree_level][start * 32 : (start + width) * 32])

    def tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``."""
        return self.tile_bytes(tile.level, tile.index, tile.width)

    def fetch_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """A ``fetch_tiles`` callable for :class:`TileNodeReader`."""
        return [self.tile_bytes(t.level, t.index, t.width) for t in tiles]

    def __len__(self) -> int:
        return len(self._leaves) >> 5

    def __repr__(self) -> str:
        return f"TileTree(size={self.size})"


# --- reading nodes from tiles -------------------------------------------------

FetchTiles = Callable[[Sequence[Tile]], Sequence[bytes]]
"""Returns the bytes of each requested tile, in order, in one batch."""


def node_tiles(ids: Iterable[NodeId], size: int) -> list[Tile]:
    """The tiles a :class:`TileNodeReader` of a tree of ``size`` reads to answer
    ``ids``, each once, in first-use order: what to fetch before a computation
    that reads those nodes (fetch first, compute after)."""
    out: dict[_TileKey, Tile] = {}
    for level, index in ids:
        _check_node(level, index, size)
        tile_level, height = level >> 3, level & 7
        tile_index = (index << height) >> 8
        width = min(TILE_WIDTH, (size >> (tile_level << 3)) - (tile_index << 8))
        key = (tile_level, tile_index, width)
        if key not in out:
            out[key] = Tile(*key)
    return list(out.values())


def prefetched_reader(size: int, tiles: Mapping[Tile, bytes]) -> TileNodeReader:
    """A reader of a tree of ``size`` over tiles fetched already: it does no I/O;
    a tile it was not given raises FormatError ``tile_not_prefetched``."""

    def fetch(wanted: Sequence[Tile]) -> list[bytes]:
        missing = [t.path() for t in wanted if t not in tiles]
        if missing:
            raise FormatError(f"tiles not fetched: {', '.join(missing)}",
                              code="tile_not_prefetched")  # fmt: skip
        return [tiles[t] for t in wanted]

    return TileNodeReader(fetch, size, cache_tiles=0)


_TileKey = tuple[int, int, int]


class TileNodeReader:
    """A :class:`~remembrancer.core.rfc6962.NodeReader` over tiles of a tree of ``size``.

    ``fetch_tiles`` returns the bytes of a batch of tiles (all requested at
    once).  Nodes at levels between the stored ones are recomputed from the
    tile's hashes, as tlog-tiles clients do; expanded tiles are kept in a small
    LRU (``cache_tiles`` tiles).  Only tiles that exist at ``size`` are
    requested (partial tiles with exactly the width that size implies), so the
    reader works against a log that serves the tiles of its current
    checkpoint.  Tile bytes of the wrong length raise
    :class:`~remembrancer.core.errors.FormatError` (``tile_wrong_size``); the
    content is not checked here, proofs built from it are checked by their
    verifiers.
    """

    __slots__ = ("_cache", "_cache_tiles", "_fetch", "_size")

    def __init__(self, fetch_tiles: FetchTiles, size: int, *, cache_tiles: int = 64) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise FormatError(f"tree size {size} is outside uint64", code="size_out_of_range")
        self._fetch = fetch_tiles
        self._size = size
        self._cache_tiles = max(0, cache_tiles)
        self._cache: OrderedDict[_TileKey, list[bytes]] = OrderedDict()

    @property
    def size(self) -> int:
        """The tree size whose tiles are read."""
        return self._size

    def set_size(self, size: int) -> None:
        """Read the tiles of a new tree size from now on (e.g. a newer checkpoint)."""
        if not 0 <= size <= MAX_TREE_SIZE:
            raise FormatError(f"tree size {size} is outside uint64", code="size_out_of_range")
        self._size = size

    def clear_cache(self) -> None:
        """Forget every expanded tile."""
        self._cache.clear()

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Hashes of complete subtrees, fetching every missing tile in one batch."""
        size = self._size
        cache = self._cache
        plan: list[tuple[_TileKey, int, int]] = []
        have: dict[_TileKey, list[bytes]] = {}
        missing: list[_TileKey] = []
        for level, index in ids:
            if level < 0 or index < 0 or (index + 1) << level > size:
                _check_node(level, index, size)
            tile_level = level >> 3
            height = level & 7
            tile_index = (index << height) >> 8
            width = min(TILE_WIDTH, (size >> (tile_level << 3)) - (tile_index << 8))
            key = (tile_level, tile_index, width)
            plan.append((key, height, index - (tile_index << (8 - height))))
            if key not in have:
                expanded = cache.get(key)
                if expanded is None:
                    have[key] = []
                    missing.append(key)
                else:
                    cache.move_to_end(key)
                    have[key] = expanded
        if missing:
            self._load(missing, have)
        out: list[bytes] = []
        for key, height, offset in plan:
            expanded = have[key]
            while len(expanded) <= height:
                expanded.append(_parents(expanded[-1]))
            start = offset << 5
            out.append(expanded[height][start : start + 32])
        return out

    def _load(self, keys: list[_TileKey], have: dict[_TileKey, list[bytes]]) -> None:
        tiles = [Tile(*key) for key in keys]
        blobs = list(self._fetch(tiles))
        if len(blobs) != len(tiles):
            raise FormatError(
                f"asked for {len(tiles)} tiles, got {len(blobs)}", code="tile_count_mismatch"
            )
        cache = self._cache
        for key, tile, blob in zip(keys, tiles, blobs, strict=True):
            if len(blob) != tile.byte_size:
                raise FormatError(
                    f"tile {tile.path()} is {len(blob)} bytes, expected {tile.byte_size}",
                    code="tile_wrong_size",
                )
            expanded = have[key]
            expanded.append(bytes(blob))
            if self._cache_tiles:
                cache[key] = expanded
        while len(cache) > self._cache_tiles:
            cache.popitem(last=False)


# --- entry bundles ------------------------------------------------------------


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Encode 1..256 entries, each prefixed with its big-endian uint16 length.

    Raises :class:`~remembrancer.core.errors.FormatError`: ``entry_too_large``
    (an entry over 65,535 bytes), ``bundle_too_many_entries``, ``bundle_empty``.
    """
    parts: list[bytes] = []
    count = 0
    for entry in entries:
        n = len(entry)
        if n > MAX_ENTRY_SIZE:
            raise FormatError(
                f"entry {count} is {n} bytes, more than {MAX_ENTRY_SIZE}", code="entry_too_large"
            )
        count += 1
        if count > MAX_BUNDLE_ENTRIES:
            raise FormatError(
                f"an entry bundle holds at most {MAX_BUNDLE_ENTRIES} entries",
                code="bundle_too_many_entries",
            )
        parts.append(n.to_bytes(2, "big"))
        parts.append(bytes(entry))
    if not count:
        raise FormatError("an entry bundle holds at least one entry", code="bundle_empty")
    return b"".join(parts)


def decode_entry_bundle(data: bytes, expected_count: int | None = None) -> list[bytes]:
    """Decode an entry bundle strictly.

    With ``expected_count`` (the tile width, 1..256) the bundle must hold
    exactly that many entries.  Raises
    :class:`~remembrancer.core.errors.FormatError`: ``bundle_empty``,
    ``bundle_truncated`` (a length prefix or entry runs past the end),
    ``bundle_too_many_entries`` (more than 256, or more than expected; also for
    trailing bytes after the expected entries), ``bundle_count_mismatch``
    (fewer than expected), ``bundle_count_invalid`` (a bad ``expected_count``).
    """
    limit = MAX_BUNDLE_ENTRIES
    if expected_count is not None:
        if not 1 <= expected_count <= MAX_BUNDLE_ENTRIES:
            raise FormatError(
                f"expected entry count {expected_count} is outside 1..256",
                code="bundle_count_invalid",
            )
        limit = expected_count
    view = bytes(data)
    end = len(view)
    if end == 0:
        raise FormatError("empty entry bundle", code="bundle_empty")
    out: list[bytes] = []
    pos = 0
    while pos < end:
        if len(out) == limit:
            raise FormatError(
                f"entry bundle has data after {limit} entries (at byte {pos} of {end})",
                code="bundle_too_many_entries",
            )
        if pos + 2 > end:
            raise FormatError(
                f"entry bundle truncated in a length prefix at byte {pos}",
                code="bundle_truncated",
            )
        n = (view[pos] << 8) | view[pos + 1]
        pos += 2
        if pos + n > end:
            raise FormatError(
                f"entry {len(out)} of {n} bytes runs past the end of the bundle",
                code="bundle_truncated",
            )
        out.append(view[pos : pos + n])
        pos += n
    if expected_count is not None and len(out) != expected_count:
        raise FormatError(
            f"entry bundle has {len(out)} entries, expected {expected_count}",
            code="bundle_count_mismatch",
        )
    return out


def bundle_leaf_hashes(entries: Iterable[bytes]) -> bytes:
    """The concatenated leaf hashes of ``entries``: the level-0 tile they belong to."""
    out: list[bytes] = []
    fresh = _LEAF_STATE.copy
    for e in entries:
        h = fresh()
        h.update(e)
        out.append(h.digest())
    return b"".join(out)
