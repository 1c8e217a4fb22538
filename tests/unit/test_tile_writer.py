"""The sequencer's TileWriter against TileTree: same roots, same tiles, for
batches of every awkward size, and resuming from stored tiles."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.rfc6962 import hash_leaf
from remembrancer.core.tiles import TileTree
from remembrancer.log.tiles import TileWriter


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([1, 2, 3, 7, 255, 256, 257, 511, 1000, 3000]), min_size=1, max_size=6)
)
def test_writer_matches_tile_tree(batches: list[int]) -> None:
    writer, tree, stored = TileWriter.empty(), TileTree(), {}
    for n in batches:
        leaves = [os.urandom(6) for _ in range(n)]
        for level, index, data in writer.append([hash_leaf(x) for x in leaves]):
            assert len(data) >= len(stored.get((level, index), b""))  # tiles only grow
            stored[(level, index)] = data
        tree.append_many(leaves)
        assert writer.size == tree.size and writer.root() == tree.root()
        # Resuming from what was stored gives the same writer.
        resumed = TileWriter.resume(
            writer.size, tree.read_nodes, lambda ids: {k: stored[k] for k in ids if k in stored}
        )
        assert resumed.root() == writer.root()
    for (level, index), data in stored.items():
        assert data == tree.tile_bytes(level, index, len(data) // 32)
