"""c2sp.org/tlog-tiles: paths, tile geometry, entry bundles, strict parsers."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.errors import FormatError, NotFoundError
from remembrancer.core.rfc6962 import hash_leaf
from remembrancer.core.tiles import (
    MAX_ENTRY_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileNodeReader,
    TileTree,
    bundle_leaf_hashes,
    changed_tiles,
    decode_entry_bundle,
    encode_entry_bundle,
    node_location,
    parse_entries_path,
    parse_tile_path,
    tile_width,
    tiles_for_size,
)

# --- paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 1234067), "tile/0/x001/x234/067"),  # the spec's example index
        (Tile(0, 1234067, 12), "tile/0/x001/x234/067.p/12"),
        (Tile(0, 0), "tile/0/000"),
        (Tile(0, 0, 1), "tile/0/000.p/1"),
        (Tile(1, 999), "tile/1/999"),
        (Tile(1, 1000), "tile/1/x001/000"),
        (Tile(2, 5, 255), "tile/2/005.p/255"),
        (Tile(63, 0), "tile/63/000"),
        (Tile(0, 2**64 - 1), "tile/0/x018/x446/x744/x073/x709/x551/615"),
    ],
)
def test_tile_paths(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert parse_tile_path(path) == tile


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 1234067), "tile/entries/x001/x234/067"),
        (Tile(0, 1234067, 12), "tile/entries/x001/x234/067.p/12"),
        (Tile(0, 7, 1), "tile/entries/007.p/1"),
    ],
)
def test_entries_paths(tile: Tile, path: str) -> None:
    assert tile.entries_path() == path
    assert parse_entries_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile/0/1",  # not zero-padded
        "tile/0/0001",
        "tile/0/x000/001",  # leading zero group
        "tile/0/001/002",  # inner group without x
        "tile/0/x001",  # last group with x
        "tile/00/001",  # level with leading zero
        "tile/01/001",
        "tile/64/000",  # level above 63
        "tile/100/000",
        "tile/-1/000",
        "tile/0/000.p/0",  # width 0
        "tile/0/000.p/256",  # width 256 is a full tile
        "tile/0/000.p/300",
        "tile/0/000.p/012",  # width with leading zero
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000/",
        "/tile/0/000",
        "tile/0/000\n",
        "tile//000",
        "tile/0/X001/000",
        "tile/0/x01/000",
        "tile/0/\u0661\u0662\u0663",  # non-ASCII digits
        "tile/0/x018/x446/x744/x073/x709/x551/616",  # 2**64
        "tile/0/x001/x001/x001/x001/x001/x001/x001/000",  # too many groups
        "tile/entries/000",  # an entries path is not a hash tile
        "tiles/0/000",
        "tile/0/000.p/1/",
    ],
)
def test_bad_tile_paths(path: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_tile_path(path)
    assert info.value.code == "tile_path_invalid"


@pytest.mark.parametrize(
    "path",
    ["tile/entries/0", "tile/entries/000.p/256", "tile/0/000", "tile/entries/x000/001", ""],
)
def test_bad_entries_paths(path: str) -> None:
    with pytest.raises(FormatError):
        parse_entries_path(path)


def test_tile_values_are_validated() -> None:
    for args in [(-1, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257), (0, 2**64, 1)]:
        with pytest.raises(FormatError):
            Tile(*args)
    with pytest.raises(FormatError):
        Tile(1, 0).entries_path()
    assert Tile(0, 0, 5).is_partial and not Tile(0, 0).is_partial
    assert Tile(0, 0, 5).byte_size == 160


@given(
    level=st.integers(0, 63),
    index=st.integers(0, 2**64 - 1),
    width=st.integers(1, TILE_WIDTH),
)
def test_tile_path_round_trip(level: int, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert parse_tile_path(tile.path()) == tile
    assert parse_entries_path(Tile(0, index, width).entries_path()) == Tile(0, index, width)


_PATH_ALPHABET = "tile/entrsxp.0123456789\u0661 \n"


@settings(max_examples=300)
@given(st.text(alphabet=_PATH_ALPHABET, max_size=70) | st.text(max_size=70))
def test_parse_raises_only_format_error(text: str) -> None:
    for parse in (parse_tile_path, parse_entries_path):
        try:
            tile = parse(text)
        except FormatError:
            continue
        # Whatever parses is canonical: it prints back to exactly the input.
        assert (tile.path() if parse is parse_tile_path else tile.entries_path()) == text


@settings(max_examples=300)
@given(
    level=st.integers(0, 63),
    index=st.integers(0, 2**40),
    width=st.integers(1, TILE_WIDTH),
    data=st.data(),
)
def test_mutated_paths_parse_canonically_or_fail(
    level: int, index: int, width: int, data: st.DataObject
) -> None:
    path = Tile(level, index, width).path()
    pos = data.draw(st.integers(0, len(path)))
    op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    char = data.draw(st.sampled_from(_PATH_ALPHABET))
    if op == "insert":
        mutated = path[:pos] + char + path[pos:]
    elif op == "delete":
        mutated = path[:pos] + path[pos + 1 :]
    else:
        mutated = path[:pos] + char + path[pos + 1 :]
    try:
        tile = parse_tile_path(mutated)
    except FormatError:
        return
    assert tile.path() == mutated


# --- geometry --------------------------------------------------------------------------


def test_spec_example_tree_of_70000() -> None:
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t.level == 0]
    assert len([t for t in level0 if not t.is_partial]) == 273
    assert [t for t in tiles if t.is_partial or t.level > 0] == [
        Tile(0, 273, 112),
        Tile(1, 0),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [Tile(0, 0, 1)]


def test_changed_tiles() -> None:
    assert changed_tiles(10, 10) == []
    assert changed_tiles(10, 20) == [Tile(0, 0, 20)]
    assert changed_tiles(250, 260) == [Tile(0, 0), Tile(0, 1, 4), Tile(1, 0, 1)]
    assert changed_tiles(256, 300) == [Tile(0, 1, 44)]
    assert changed_tiles(0, 600) == tiles_for_size(600)
    with pytest.raises(FormatError):
        changed_tiles(20, 10)
    # Replaying growth step by step writes the same final tiles.
    latest: dict[tuple[int, int], Tile] = {}
    size = 0
    for new in (1, 5, 255, 256, 257, 511, 512, 70_000, 70_001):
        for tile in changed_tiles(size, new):
            latest[(tile.level, tile.index)] = tile
        size = new
    assert sorted(latest.values(), key=lambda t: (t.level, t.index)) == tiles_for_size(size)


def test_tile_width() -> None:
    assert tile_width(0, 0, 0) == 0
    assert tile_width(0, 0, 300) == 256
    assert tile_width(0, 1, 300) == 44
    assert tile_width(0, 2, 300) == 0
    assert tile_width(1, 0, 300) == 1
    assert tile_width(1, 0, 255) == 0


def test_node_locations() -> None:
    loc = node_location(0, 1234067)
    assert (loc.tile_level, loc.tile_index, loc.height, loc.offset) == (0, 4820, 0, 147)
    loc = node_location(8, 3)
    assert (loc.tile_level, loc.tile_index, loc.height, loc.offset) == (1, 0, 0, 3)
    loc = node_location(3, 37)  # leaves 296..303
    assert (loc.tile_level, loc.tile_index, loc.height, loc.offset) == (0, 1, 3, 5)
    assert (loc.first, loc.count) == (40, 8)
    assert loc.tile(304) == Tile(0, 1, 48)
    with pytest.raises(NotFoundError):
        loc.tile(303)
    with pytest.raises(FormatError):
        node_location(-1, 0)


def test_node_location_against_tree() -> None:
    # Recompute a node from its tile's hashes the way the location says.
    tree = TileTree()
    tree.append_many([b"%d" % i for i in range(3000)])
    for level, index in [(0, 17), (5, 70), (7, 3), (8, 10), (9, 2), (11, 0), (3, 370)]:
        loc = node_location(level, index)
        tile = loc.tile(tree.size)
        data = tree.tile(tile)[loc.first * 32 : (loc.first + loc.count) * 32]
        hashes = [data[i : i + 32] for i in range(0, len(data), 32)]
        while len(hashes) > 1:
            hashes = [
                hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
                for i in range(0, len(hashes), 2)
            ]
        assert hashes[0] == tree.node(level, index), (level, index)


def test_tree_tiles_and_bundles_agree() -> None:
    entries = [b"e%d" % i for i in range(700)]
    tree = TileTree()
    tree.append_many(entries)
    for tile in tiles_for_size(700):
        data = tree.tile(tile)
        assert len(data) == tile.byte_size
        if tile.level == 0:
            bundle = entries[tile.index * 256 : tile.index * 256 + tile.width]
            assert bundle_leaf_hashes(bundle) == data
            encoded = encode_entry_bundle(bundle)
            assert decode_entry_bundle(encoded, tile.width) == bundle
    assert tree.tile_bytes(1, 0, 2) == tree.node(8, 0) + tree.node(8, 1)
    with pytest.raises(NotFoundError):
        tree.tile_bytes(0, 2, 189)
    with pytest.raises(NotFoundError):
        tree.tile_bytes(1, 0, 3)
    with pytest.raises(FormatError):
        tree.tile_bytes(0, 0, 0)
    reader = TileNodeReader(tree.fetch_tiles, 700)
    assert reader.read_nodes([(TILE_HEIGHT, 1)]) == [tree.node(8, 1)]
    assert tree.leaf_hash(5) == hash_leaf(entries[5])


# --- entry bundles ------------------------------------------------------------------


def test_bundle_encoding() -> None:
    assert encode_entry_bundle([b""]) == b"\x00\x00"
    assert encode_entry_bundle([b"ab", b"c"]) == b"\x00\x02ab\x00\x01c"
    big = b"z" * MAX_ENTRY_SIZE
    assert encode_entry_bundle([big])[:2] == b"\xff\xff"
    assert decode_entry_bundle(encode_entry_bundle([big, b""])) == [big, b""]
    full = [bytes([i]) for i in range(256)]
    assert decode_entry_bundle(encode_entry_bundle(full), 256) == full


@pytest.mark.parametrize(
    ("entries", "code"),
    [
        ([b"z" * (MAX_ENTRY_SIZE + 1)], "entry_too_large"),
        ([b"x"] * 257, "bundle_too_many_entries"),
        ([], "bundle_empty"),
    ],
)
def test_bundle_encoding_errors(entries: list[bytes], code: str) -> None:
    with pytest.raises(FormatError) as info:
        encode_entry_bundle(entries)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("data", "expected", "code"),
    [
        (b"", None, "bundle_empty"),
        (b"\x00", None, "bundle_truncated"),
        (b"\x00\x03ab", None, "bundle_truncated"),
        (b"\x00\x01a\x00", None, "bundle_truncated"),
        (b"\x00\x01a\x00\x01b", 1, "bundle_too_many_entries"),  # trailing data
        (b"\x00\x01a\xff", 1, "bundle_too_many_entries"),
        (b"\x00\x01a", 2, "bundle_count_mismatch"),
        (b"\x00\x00" * 257, None, "bundle_too_many_entries"),
        (b"\x00\x00", 0, "bundle_count_invalid"),
        (b"\x00\x00", 257, "bundle_count_invalid"),
    ],
)
def test_bundle_decoding_errors(data: bytes, expected: int | None, code: str) -> None:
    with pytest.raises(FormatError) as info:
        decode_entry_bundle(data, expected)
    assert info.value.code == code


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_bundle_round_trip(entries: list[bytes]) -> None:
    data = encode_entry_bundle(entries)
    assert decode_entry_bundle(data) == entries
    assert decode_entry_bundle(data, len(entries)) == entries


@settings(max_examples=300)
@given(st.binary(max_size=600), st.none() | st.integers(-2, 300))
def test_decode_raises_only_format_error(data: bytes, expected: int | None) -> None:
    try:
        entries = decode_entry_bundle(data, expected)
    except FormatError:
        return
    assert encode_entry_bundle(entries) == data  # the encoding is canonical


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=40), min_size=1, max_size=20),
    st.data(),
)
def test_mutated_bundles_decode_canonically_or_fail(
    entries: list[bytes], data: st.DataObject
) -> None:
    encoded = bytearray(encode_entry_bundle(entries))
    op = data.draw(st.sampled_from(["flip", "truncate", "extend", "delete"]))
    pos = data.draw(st.integers(0, len(encoded) - 1))
    if op == "flip":
        encoded[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        del encoded[pos:]
    elif op == "extend":
        encoded += data.draw(st.binary(min_size=1, max_size=4))
    else:
        del encoded[pos]
    expected = data.draw(st.none() | st.just(len(entries)))
    try:
        decoded = decode_entry_bundle(bytes(encoded), expected)
    except FormatError:
        return
    assert encode_entry_bundle(decoded) == bytes(encoded)
    if expected is not None:
        assert len(decoded) == expected


# --- fetch first: the tiles a computation reads, known before it runs -----------------


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 70_000), st.data())
def test_node_tiles_are_exactly_what_a_reader_fetches(size2: int, data: st.DataObject) -> None:
    from collections.abc import Sequence

    from remembrancer.core.rfc6962 import (
        consistency_proof,
        consistency_proof_nodes,
        inclusion_proof,
        inclusion_proof_nodes,
        range_nodes,
        root_hash,
    )
    from remembrancer.core.tiles import TileNodeReader, node_tiles, prefetched_reader

    size1 = data.draw(st.integers(1, size2))
    index = data.draw(st.integers(0, size2 - 1))
    for ids, compute in (
        ([n for s in consistency_proof_nodes(size1, size2) for n in s],
         lambda r: consistency_proof(size1, size2, r)),
        ([n for s in inclusion_proof_nodes(index, size2) for n in s],
         lambda r: inclusion_proof(index, size2, r)),
        (range_nodes(0, size2), lambda r: root_hash(size2, r)),
    ):  # fmt: skip
        asked: list[Tile] = []

        def fetch(tiles: Sequence[Tile], asked: list[Tile] = asked) -> list[bytes]:
            asked.extend(tiles)
            return [bytes([t.index % 251]) * 32 * t.width for t in tiles]

        expected = compute(TileNodeReader(fetch, size2, cache_tiles=0))
        planned = node_tiles(ids, size2)
        assert sorted(planned, key=repr) == sorted(set(asked), key=repr)
        tiles = {t: bytes([t.index % 251]) * 32 * t.width for t in planned}
        assert compute(prefetched_reader(size2, tiles)) == expected  # no I/O, same answer
    with pytest.raises(FormatError) as e:
        prefetched_reader(size2, {}).read_nodes(range_nodes(0, size2))
    assert e.value.code == "tile_not_prefetched"
