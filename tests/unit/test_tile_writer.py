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


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=5), st.integers(0, 2000))
def test_batch_proofs_are_the_inclusion_proofs(batches: list[int], offset: int) -> None:
    """Every proof BatchProofs reads from the writer's nodes is the RFC 6962
    inclusion proof of the whole tree, for batches of any size at any offset."""
    from remembrancer.core.rfc6962 import inclusion_proof
    from remembrancer.log.tiles import BatchProofs

    writer, tree = TileWriter.empty(), TileTree()
    first = [os.urandom(4) for _ in range(offset)]
    writer.append([hash_leaf(x) for x in first])
    tree.append_many(first)
    for n in batches:
        leaves = [os.urandom(4) for _ in range(n)]
        edge = writer.edge()
        writer.append([hash_leaf(x) for x in leaves])
        tree.append_many(leaves)
        proofs = BatchProofs(edge, writer.levels, writer.size).proofs(edge.size)
        assert len(proofs) == n
        for i, proof in enumerate(proofs, edge.size):
            assert list(proof) == inclusion_proof(i, writer.size, tree), (i, writer.size)


def test_batch_proofs_for_every_small_offset_and_batch() -> None:
    from remembrancer.core.rfc6962 import inclusion_proof
    from remembrancer.log.tiles import BatchProofs

    leaves = [os.urandom(4) for _ in range(80)]
    tree = TileTree()
    tree.append_many(leaves)
    for start in range(0, 60):
        for n in range(1, 20):
            writer = TileWriter.empty()
            writer.append([hash_leaf(x) for x in leaves[:start]])
            edge = writer.edge()
            writer.append([hash_leaf(x) for x in leaves[start : start + n]])
            proofs = BatchProofs(edge, writer.levels, start + n).proofs(start)
            assert len(proofs) == n
            for i, proof in enumerate(proofs, start):
                assert list(proof) == inclusion_proof(i, start + n, tree)
