"""Merkle roots and proofs against a naive RFC 6962 reference, under Hypothesis.

``remembrancer.testing.naive_merkle`` is MTH/PATH/PROOF/SUBPROOF straight from
RFC 6962 section 2.1.  Roots, inclusion and consistency proofs from
:class:`TileTree` (direct lookups) and from :class:`TileNodeReader` (tiles, the
storage path) must equal it for every size, the verifiers must accept them,
and every mutation of a proof must be rejected with a typed error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remembrancer.core.errors import FormatError, NotFoundError, VerificationError
from remembrancer.core.rfc6962 import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    range_nodes,
    root_from_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from remembrancer.core.tiles import Tile, TileNodeReader, TileTree, tiles_for_size
from remembrancer.testing.naive_merkle import NaiveTree

MAX_SIZE = 4200  # > 16 level-0 tiles, > 1 level-1 tile's worth of level 8
ENTRIES = [b"entry-%d" % i for i in range(MAX_SIZE)]
TREE = TileTree()
TREE.append_many(ENTRIES)
NAIVE = NaiveTree.from_entries(ENTRIES)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.one_of(st.integers(1, 70), st.integers(1, MAX_SIZE))


class CountingFetch:
    """A fetch_tiles over TREE that records each batch."""

    def __init__(self) -> None:
        self.batches: list[list[Tile]] = []

    def __call__(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.batches.append(list(tiles))
        return TREE.fetch_tiles(tiles)


def _reader(size: int, cache_tiles: int = 4) -> TileNodeReader:
    return TileNodeReader(TREE.fetch_tiles, size, cache_tiles=cache_tiles)


# --- the RFC 9162 bookkeeping, to know which mutations are invisible by design ----


def _inclusion_trace(index: int, size: int) -> tuple[bool, ...]:
    """Per proof element: is it hashed on the left?  (RFC 9162 2.1.3.2 index steps.)"""
    fn, sn = index, size - 1
    out = []
    while sn:
        if fn & 1 or fn == sn:
            out.append(True)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            out.append(False)
        fn >>= 1
        sn >>= 1
    return tuple(out)


def _consistency_trace(size1: int, size2: int) -> tuple[bool, tuple[bool, ...]]:
    """(root1 prepended?, per later element: does it update fr too?)  (2.1.4.2.)"""
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    out = []
    while sn:
        if fn & 1 or fn == sn:
            out.append(True)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            out.append(False)
        fn >>= 1
        sn >>= 1
    return (size1 & (size1 - 1) == 0, tuple(out))


def _flip(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    out = list(proof)
    e = bytearray(out[element])
    e[bit // 8] ^= 1 << (bit % 8)
    out[element] = bytes(e)
    return out


# --- roots --------------------------------------------------------------------


@SETTINGS
@given(size=sizes)
def test_root_matches_reference(size: int) -> None:
    want = NAIVE.root(size)
    assert TREE.root(size) == want
    assert root_hash(size, _reader(size)) == want
    assert root_hash(size, _reader(MAX_SIZE)) == want  # a bigger tree's tiles serve too


def test_small_roots_exhaustively() -> None:
    for size in range(0, 300):
        want = NAIVE.root(size)
        assert TREE.root(size) == want
        assert root_hash(size, _reader(size)) == want


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.integers(0, 600), min_size=1, max_size=8), data=st.data())
def test_incremental_appends(chunks: list[int], data: st.DataObject) -> None:
    # Any interleaving of append, append_many, append_leaf_hashes and reads
    # gives the same tree.
    tree = TileTree()
    compact = CompactRange()
    for n in chunks:
        start = tree.size
        batch = ENTRIES[start : start + n]
        how = data.draw(st.sampled_from(["one", "many", "hashes"]))
        if how == "one":
            for i, e in enumerate(batch):
                assert tree.append(e) == start + i
        elif how == "many":
            assert tree.append_many(iter(batch)) == start
        else:
            assert tree.append_leaf_hashes([hash_leaf(e) for e in batch]) == start
        compact.extend(hash_leaf(e) for e in batch)
        assert tree.size == compact.size == len(tree) == start + len(batch)
        assert tree.root() == compact.root() == NAIVE.root(tree.size)
    size = tree.size
    for tile in tiles_for_size(size):
        assert tree.tile(tile) == TREE.tile(tile)


# --- inclusion ------------------------------------------------------------------


@SETTINGS
@given(size=sizes, data=st.data())
def test_inclusion_proofs_match_reference(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    want = NAIVE.inclusion_proof(index, size)
    assert TREE.inclusion_proof(index, size) == want
    fetch = CountingFetch()
    reader = TileNodeReader(fetch, size)
    assert inclusion_proof(index, size, reader) == want
    assert len(fetch.batches) <= 1  # one batch of tiles per proof
    leaf = TREE.leaf_hash(index)
    root = NAIVE.root(size)
    verify_inclusion(index, size, leaf, want, root)
    assert root_from_inclusion_proof(index, size, leaf, want) == root


@SETTINGS
@given(size=sizes, data=st.data())
def test_mutated_inclusion_proofs_are_rejected(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    proof = TREE.inclusion_proof(index, size)
    leaf = TREE.leaf_hash(index)
    root = TREE.root(size)

    def rejected(i: int, n: int, lh: bytes, p: list[bytes], r: bytes) -> None:
        with pytest.raises(VerificationError):
            verify_inclusion(i, n, lh, p, r)

    if proof:
        element = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        rejected(index, size, leaf, _flip(proof, element, bit), root)
        cut = data.draw(st.integers(0, len(proof) - 1))
        rejected(index, size, leaf, proof[:cut], root)
        rejected(
            index, size, leaf, [*proof[:element], proof[element][:31], *proof[element + 1 :]], root
        )
    extra = data.draw(st.binary(min_size=32, max_size=32))
    rejected(index, size, leaf, [*proof, extra], root)
    rejected(index, size, leaf, [extra, *proof], root)
    rejected(index, size, _flip([leaf], 0, data.draw(st.integers(0, 255)))[0], proof, root)
    rejected(index, size, leaf, proof, _flip([root], 0, data.draw(st.integers(0, 255)))[0])
    rejected(index, size, leaf, proof, root[:31])
    # Another leaf of the same tree, with this leaf's proof.
    other = data.draw(st.integers(0, size - 1))
    if other != index:
        rejected(other, size, leaf, proof, root)
        rejected(other, size, TREE.leaf_hash(other), proof, root)
    # Other tree sizes: rejected unless the RFC bookkeeping is identical (then
    # the computation is identical and the size is not bound by the proof).
    for wrong in {size - 1, size + 1, size * 2, size // 2, data.draw(sizes)}:
        if wrong == size:
            continue
        if 0 <= index < wrong and _inclusion_trace(index, wrong) == _inclusion_trace(index, size):
            verify_inclusion(index, wrong, leaf, proof, root)
        else:
            rejected(index, wrong, leaf, proof, root)
    rejected(-1, size, leaf, proof, root)
    rejected(index, 2**64, leaf, proof, root)


def test_inclusion_error_codes() -> None:
    proof = TREE.inclusion_proof(5, 100)
    leaf, root = TREE.leaf_hash(5), TREE.root(100)
    cases = [
        ((100, 100, leaf, proof, root), "index_out_of_range"),
        ((5, 100, leaf[:31], proof, root), "leaf_hash_invalid"),
        ((5, 100, leaf, proof[:-1], root), "proof_wrong_length"),
        ((5, 100, leaf, [proof[0] + b"x", *proof[1:]], root), "inclusion_proof_invalid"),
        ((5, 100, leaf, proof, EMPTY_ROOT), "inclusion_root_mismatch"),
    ]
    for args, code in cases:
        with pytest.raises(VerificationError) as info:
            verify_inclusion(*args)
        assert info.value.code == code


# --- consistency ----------------------------------------------------------------


@SETTINGS
@given(size2=sizes, data=st.data())
def test_consistency_proofs_match_reference(size2: int, data: st.DataObject) -> None:
    size1 = data.draw(st.integers(1, size2))
    want = NAIVE.consistency_proof(size1, size2)
    assert TREE.consistency_proof(size1, size2) == want
    fetch = CountingFetch()
    assert consistency_proof(size1, size2, TileNodeReader(fetch, size2)) == want
    assert len(fetch.batches) <= 1
    verify_consistency(size1, size2, NAIVE.root(size1), NAIVE.root(size2), want)


@SETTINGS
@given(size2=sizes, data=st.data())
def test_mutated_consistency_proofs_are_rejected(size2: int, data: st.DataObject) -> None:
    size1 = data.draw(st.integers(1, size2))
    proof = TREE.consistency_proof(size1, size2)
    root1, root2 = TREE.root(size1), TREE.root(size2)

    def rejected(s1: int, s2: int, r1: bytes, r2: bytes, p: list[bytes]) -> None:
        with pytest.raises(VerificationError):
            verify_consistency(s1, s2, r1, r2, p)

    if proof:
        element = data.draw(st.integers(0, len(proof) - 1))
        rejected(size1, size2, root1, root2, _flip(proof, element, data.draw(st.integers(0, 255))))
        rejected(size1, size2, root1, root2, proof[: data.draw(st.integers(0, len(proof) - 1))])
        rejected(size1, size2, root1, root2, proof[:element] + proof[element + 1 :])
    extra = data.draw(st.binary(min_size=32, max_size=32))
    rejected(size1, size2, root1, root2, [*proof, extra])
    rejected(size1, size2, root1, root2, [extra, *proof])
    rejected(size1, size2, _flip([root1], 0, data.draw(st.integers(0, 255)))[0], root2, proof)
    rejected(size1, size2, root1, _flip([root2], 0, data.draw(st.integers(0, 255)))[0], proof)
    if size1 != size2:
        rejected(size1, size2, root2, root1, proof)
    rejected(0, size2, EMPTY_ROOT, root2, proof)
    rejected(size2 + 1, size2, root1, root2, proof)
    # Other sizes: rejected unless the RFC bookkeeping is identical.
    for s1, s2 in {(size1 - 1, size2), (size1 + 1, size2), (size1, size2 + 1), (size1, size2 - 1)}:
        if not 0 < s1 <= s2 or (s1, s2) == (size1, size2):
            continue
        same = s1 != s2 and size1 != size2
        if same and _consistency_trace(s1, s2) == _consistency_trace(size1, size2):
            verify_consistency(s1, s2, root1, root2, proof)
        else:
            rejected(s1, s2, root1, root2, proof)


# --- the right edge and the node reader ------------------------------------------


def test_compact_range_reports_every_new_node() -> None:
    compact = CompactRange()
    seen = 0
    for index in range(600):
        created = compact.append(TREE.leaf_hash(index))
        assert created[0] == (0, index, TREE.leaf_hash(index))
        for level, node_index, node_hash in created:
            assert TREE.node(level, node_index) == node_hash
            assert (node_index + 1) << level == index + 1  # completed just now
        seen += len(created)
        assert compact.root() == NAIVE.root(index + 1)
        assert compact.node_ids() == range_nodes(0, index + 1)
    assert seen == 2 * 600 - (600).bit_count()  # every node of the tree, once
    resumed = CompactRange.from_reader(600, _reader(MAX_SIZE))
    assert resumed.hashes == compact.hashes
    resumed.append(TREE.leaf_hash(600))
    assert resumed.root() == NAIVE.root(601)
    assert CompactRange(600, compact.hashes).root() == compact.root()
    with pytest.raises(FormatError):
        CompactRange(600, compact.hashes[:-1])
    with pytest.raises(FormatError):
        compact.append(b"short")


def test_range_nodes_cover_ranges() -> None:
    for begin in range(0, 70):
        for end in range(begin, 140):
            nodes = range_nodes(begin, end)
            pos = begin
            for level, index in nodes:
                assert index << level == pos
                pos += 1 << level
            assert pos == end
    with pytest.raises(FormatError):
        range_nodes(5, 4)


def test_tile_node_reader_cache_is_bounded_and_batched() -> None:
    fetch = CountingFetch()
    reader = TileNodeReader(fetch, MAX_SIZE, cache_tiles=2)
    for index in range(0, MAX_SIZE, 97):
        assert inclusion_proof(index, MAX_SIZE, reader) == NAIVE.inclusion_proof(index, MAX_SIZE)
    assert all(len(batch) == len(set(batch)) for batch in fetch.batches)
    assert len(reader._cache) <= 2
    fetched = len(fetch.batches)
    inclusion_proof(MAX_SIZE - 1, MAX_SIZE, reader)
    inclusion_proof(MAX_SIZE - 1, MAX_SIZE, reader)
    assert len(fetch.batches) <= fetched + 1  # the second one came from the cache
    reader.clear_cache()
    nocache = TileNodeReader(fetch, MAX_SIZE, cache_tiles=0)
    assert root_hash(MAX_SIZE, nocache) == NAIVE.root(MAX_SIZE)
    assert len(nocache._cache) == 0


def test_tile_node_reader_follows_a_growing_size() -> None:
    reader = _reader(100)
    assert root_hash(100, reader) == NAIVE.root(100)
    with pytest.raises(NotFoundError):
        reader.read_nodes([(0, 100)])
    reader.set_size(1000)
    assert reader.size == 1000
    assert reader.read_nodes([(0, 100)]) == [TREE.leaf_hash(100)]
    assert root_hash(1000, reader) == NAIVE.root(1000)


def test_tile_node_reader_rejects_bad_tiles() -> None:
    reader = TileNodeReader(lambda tiles: [b"\x00" * 31 for _ in tiles], 10)
    with pytest.raises(FormatError) as info:
        reader.read_nodes([(0, 3)])
    assert info.value.code == "tile_wrong_size"
    reader = TileNodeReader(lambda tiles: [], 10)
    with pytest.raises(FormatError) as info:
        reader.read_nodes([(0, 3)])
    assert info.value.code == "tile_count_mismatch"
    with pytest.raises(NotFoundError):
        _reader(10).read_nodes([(-1, 0)])
    with pytest.raises(NotFoundError):
        _reader(10).read_nodes([(1, 5)])  # leaves 10..11: not complete


def test_generators_refuse_impossible_proofs() -> None:
    with pytest.raises(FormatError):
        TREE.inclusion_proof(10, 10)
    with pytest.raises(FormatError):
        TREE.inclusion_proof(-1, 10)
    with pytest.raises(FormatError):
        TREE.consistency_proof(0, 10)
    with pytest.raises(FormatError):
        TREE.consistency_proof(11, 10)
    with pytest.raises(NotFoundError):
        TREE.inclusion_proof(0, MAX_SIZE + 1)
    with pytest.raises(NotFoundError):
        TREE.node(1, MAX_SIZE // 2)
    assert TREE.consistency_proof(7, 7) == []
    assert TREE.root(0) == EMPTY_ROOT


def test_entries_are_hashed_as_rfc6962_leaves() -> None:
    assert TREE.leaf_hash(3) == hashlib.sha256(b"\x00" + ENTRIES[3]).digest()
    tree = TileTree()
    with pytest.raises(FormatError):
        tree.append(b"x" * 65536)
    with pytest.raises(FormatError):
        tree.append_many([b"ok", b"x" * 65536])
    with pytest.raises(FormatError):
        tree.append_leaf_hashes([b"x" * 31, b"y" * 33])
    assert tree.size == 0
    assert tree.append(b"x" * 65535) == 0
