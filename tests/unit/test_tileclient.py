"""core.tileclient: proofs from tiles that an independent writer laid out, every
tile checked against the checkpoint root; tampered tiles and bundles are caught."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.errors import FormatError, NotFoundError, VerificationError
from remembrancer.core.rfc6962 import (
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from remembrancer.core.tileclient import MAX_ENTRIES_PER_READ, VerifiedTileReader, edge_tiles
from remembrancer.core.tiles import Tile
from remembrancer.testing.naive_merkle import NaiveTree
from remembrancer.testing.naive_tlog import NaiveLog

SEED = bytes(range(32))


class Host:
    """Serves a NaiveLog's files from memory and counts what was asked."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.asked: list[str] = []

    def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.asked.extend(t.path() for t in tiles)
        return [self.files[t.path()] for t in tiles]

    def bundles(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.asked.extend(t.entries_path() for t in tiles)
        return [self.files[t.entries_path()] for t in tiles]


def make(size: int, *, entries: int | None = None) -> tuple[NaiveLog, Host]:
    log = NaiveLog("log.example.org/naive", SEED)
    log.append(b"entry %d" % i for i in range(entries or size))
    return log, Host(log.files([size]))


BIG = make(70_000)  # three tile levels, as in the spec's example


def test_the_spec_example_of_70000_leaves() -> None:
    log, host = BIG
    assert [(t.level, t.index, t.width) for t in edge_tiles(70_000)] == [
        (0, 273, 112),
        (1, 1, 17),
        (2, 0, 1),
    ]
    reader = VerifiedTileReader(host.tiles, 70_000, log.root(70_000))
    assert sorted(t.path() for t in reader.verify()) == sorted(
        ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"]
    )
    naive = NaiveTree(log.leaves)
    for index in (0, 255, 256, 65_535, 65_536, 69_887, 69_999):
        host.asked.clear()
        proof = inclusion_proof(index, 70_000, reader)
        assert proof == naive.inclusion_proof(index, 70_000)
        verify_inclusion(index, 70_000, log.leaves[index], proof, log.root(70_000))
        assert len(host.asked) <= 3  # at most one tile per level, the rest is cached
    for old in (1, 256, 65_536, 69_999):
        proof = consistency_proof(old, 70_000, reader)
        assert proof == naive.consistency_proof(old, 70_000)
        verify_consistency(old, 70_000, log.root(old), log.root(70_000), proof)
        assert root_hash(old, reader) == log.root(old)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 1200), st.data())
def test_proofs_match_the_naive_reference(size: int, data: st.DataObject) -> None:
    log, host = make(size)
    reader = VerifiedTileReader(host.tiles, size, log.root(size), cache_tiles=2)
    naive = NaiveTree(log.leaves)
    index = data.draw(st.integers(0, size - 1))
    assert inclusion_proof(index, size, reader) == naive.inclusion_proof(index, size)
    old = data.draw(st.integers(1, size))
    assert consistency_proof(old, size, reader) == naive.consistency_proof(old, size)
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, min(size, start + 600)))
    assert reader.read_entries(start, end, host.bundles) == log.entries[start:end]


def test_reads_the_tree_of_an_older_checkpoint_from_newer_tiles() -> None:
    """A reader at size 300 of a log now at 1000 uses the partial tiles of 300."""
    log = NaiveLog("log.example.org/naive", SEED)
    log.append(b"e%d" % i for i in range(1000))
    host = Host(log.files([300, 1000]))
    reader = VerifiedTileReader(host.tiles, 300, log.root(300))
    assert inclusion_proof(299, 300, reader) == NaiveTree(log.leaves).inclusion_proof(299, 300)
    assert "tile/0/001.p/44" in host.asked


def test_a_wrong_full_tile_is_named() -> None:
    log, host = make(1000)
    bad = bytearray(host.files["tile/0/001"])
    bad[100] ^= 1
    host.files["tile/0/001"] = bytes(bad)
    reader = VerifiedTileReader(host.tiles, 1000, log.root(1000))
    assert inclusion_proof(5, 1000, reader)  # other tiles are fine
    with pytest.raises(VerificationError) as e:
        inclusion_proof(300, 1000, reader)
    assert e.value.code == "tile_hash_mismatch" and e.value.details["tile"] == "tile/0/001"


def test_a_wrong_edge_tile_or_root_is_caught() -> None:
    log, host = make(1000)
    bad = bytearray(host.files["tile/1/000.p/3"])
    bad[0] ^= 1
    host.files["tile/1/000.p/3"] = bytes(bad)
    with pytest.raises(VerificationError) as e:
        VerifiedTileReader(host.tiles, 1000, log.root(1000)).verify()
    assert e.value.code == "tiles_root_mismatch"
    _, good = make(1000)
    with pytest.raises(VerificationError) as e:
        inclusion_proof(3, 1000, VerifiedTileReader(good.tiles, 1000, log.root(999)))
    assert e.value.code == "tiles_root_mismatch"
    with pytest.raises(VerificationError):
        VerifiedTileReader(good.tiles, 0, log.root(1))


def test_a_full_tile_forged_together_with_its_parent_is_caught() -> None:
    """Replacing a level-0 tile and its hash in the full level-1 tile above it still
    fails: the level-1 tile no longer matches the right edge above it."""
    log, host = make(65_536 + 10)
    forged_leaf_tile = bytes(32) * 256
    forged_hash = NaiveTree([bytes(32)] * 256).root(256)
    level1 = bytearray(host.files["tile/1/000"])
    level1[0:32] = forged_hash
    host.files["tile/0/000"] = forged_leaf_tile
    host.files["tile/1/000"] = bytes(level1)
    reader = VerifiedTileReader(host.tiles, 65_546, log.root(65_546))
    with pytest.raises(VerificationError) as e:
        inclusion_proof(0, 65_546, reader)
    assert e.value.details["tile"] == "tile/1/000"


def test_wrong_lengths_and_bundles() -> None:
    log, host = make(300)
    host.files["tile/0/000"] += b"\x00"
    with pytest.raises(FormatError) as e:
        inclusion_proof(3, 300, VerifiedTileReader(host.tiles, 300, log.root(300)))
    assert e.value.code == "tile_wrong_size"
    log, host = make(300)
    reader = VerifiedTileReader(host.tiles, 300, log.root(300))
    bundle = host.files["tile/entries/001.p/44"]
    host.files["tile/entries/001.p/44"] = bundle[:-1] + bytes([bundle[-1] ^ 1])
    assert reader.read_entries(0, 256, host.bundles) == log.entries[:256]
    with pytest.raises(VerificationError) as e:
        reader.read_entries(250, 300, host.bundles)
    assert e.value.code == "entry_hash_mismatch" and e.value.details["index"] == 299
    host.files["tile/entries/001.p/44"] = bundle + b"\x00\x00"
    with pytest.raises(FormatError) as e:
        reader.read_entries(256, 257, host.bundles)
    assert e.value.code == "bundle_too_many_entries"
    with pytest.raises(NotFoundError):
        reader.read_entries(0, 301, host.bundles)
    big_log, big_host = BIG
    big = VerifiedTileReader(big_host.tiles, 70_000, big_log.root(70_000))
    with pytest.raises(FormatError) as e:
        big.read_entries(0, MAX_ENTRIES_PER_READ + 1, big_host.bundles)
    assert e.value.code == "range_too_large"
    assert len(big.read_entries(0, MAX_ENTRIES_PER_READ, big_host.bundles)) == MAX_ENTRIES_PER_READ


def test_entries_are_leaves() -> None:
    log, host = make(3)
    reader = VerifiedTileReader(host.tiles, 3, log.root(3))
    assert [hash_leaf(e) for e in reader.read_entries(0, 3, host.bundles)] == log.leaves
    with pytest.raises(NotFoundError):
        reader.read_nodes([(0, 3)])
