"""One conformance suite for every Store backend (memory, SQLite, PostgreSQL).

Each test states an invariant of ``remembrancer/storage/base.py`` and checks
it against every backend.  PostgreSQL tests run in fresh, randomly named
schemas that are dropped when the module ends; they need the ``pg_dsn``
fixture (see ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from remembrancer.core.errors import ConfigError, ConflictError, FormatError, StorageError
from remembrancer.core.tiles import decode_entry_bundle, encode_entry_bundle
from remembrancer.storage import open_store
from remembrancer.storage.base import (
    ANY,
    AnchorReceiptRow,
    AppendBatch,
    CosignedRow,
    EntryRow,
    EvidenceRow,
    FederationReceiptRow,
    FoundEntry,
    LogState,
    RecordRow,
    Store,
    StoredCheckpoint,
)
from remembrancer.storage.memory import MemoryStore
from remembrancer.storage.postgres import PostgresStore
from remembrancer.storage.sqlite import SqliteStore

NS = "test:log"
NS2 = "test:other"
ACTOR = "did:key:z6MkAlice"
ACTOR2 = "did:key:z6MkBob"

# --- building batches ---------------------------------------------------------------


def leaf(ns: str, index: int) -> bytes:
    return f'{{"namespace":"{ns}","n":{index}}}'.encode()


def tree_hash(ns: str, level: int, position: int) -> bytes:
    return hashlib.sha256(f"{ns}/{level}/{position}".encode()).digest()


def tile(ns: str, level: int, index: int, width: int) -> tuple[int, int, bytes]:
    hashes = b"".join(tree_hash(ns, level, index * 256 + k) for k in range(width))
    return (level, index, hashes)


def tiles_for(ns: str, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """The tlog-tiles that growing a tree from ``start`` to ``end`` leaves writes."""
    out = []
    level, lo, hi = 0, start, end
    while hi > 0:
        for index in range(lo // 256, (hi - 1) // 256 + 1):
            out.append(tile(ns, level, index, min(256, hi - index * 256)))
        level, lo, hi = level + 1, lo // 256, hi // 256
    return out


def entry(
    ns: str,
    index: int,
    *,
    event_id: str | None = None,
    nonce: str | None = None,
    actor: str = ACTOR,
) -> EntryRow:
    data = leaf(ns, index)
    return EntryRow(
        leaf=data,
        event_hash=hashlib.sha256(data).digest(),
        event_id=event_id if event_id is not None else f"e-{index}",
        actor=actor,
        nonce=nonce if nonce is not None else f"n-{ns}-{index}",
    )


def state(ns: str, size: int, note: bytes | None = None) -> LogState:
    return LogState(
        namespace=ns,
        size=size,
        root_hash=hashlib.sha256(f"{ns}/root/{size}".encode()).digest(),
        checkpoint=note if note is not None else f"example.org/{ns}\n{size}\nroot\n".encode(),
    )


def batch(
    ns: str,
    start: int,
    n: int,
    *,
    entries: list[EntryRow] | None = None,
    tiles: list[tuple[int, int, bytes]] | None = None,
    note: bytes | None = None,
    time: int = 1_764_100_000,
) -> AppendBatch:
    rows = entries if entries is not None else [entry(ns, start + i) for i in range(n)]
    return AppendBatch(
        namespace=ns,
        start=start,
        entries=rows,
        tiles=tiles if tiles is not None else tiles_for(ns, start, start + len(rows)),
        state=state(ns, start + len(rows), note),
        checkpoint_time=time,
    )


def assert_untouched(store: Store, ns: str, size: int) -> None:
    """The log is exactly as a clean history of ``size`` entries leaves it."""
    current = store.log_state(ns)
    if size == 0:
        assert current is None
        assert ns not in store.namespaces()
    else:
        assert current == state(ns, size)
    assert store.read_entries(ns, 0, size + 10_000) == [leaf(ns, i) for i in range(size)]
    assert store.checkpoint_at(ns, size + 1) is None
    assert [c.size for c in store.checkpoints(ns, after_size=size)] == []
    expected = {(lv, ix): h for lv, ix, h in tiles_for(ns, 0, size)}
    asked = [(lv, ix) for lv in range(3) for ix in range(50)]
    assert store.read_tiles(ns, asked) == expected
    bundles = (size + 255) // 256
    for index in range(bundles):
        leaves = [leaf(ns, i) for i in range(index * 256, min(size, index * 256 + 256))]
        assert store.read_bundle(ns, index) == encode_entry_bundle(leaves)
    assert store.read_bundle(ns, bundles) is None


# --- opening stores -------------------------------------------------------------------


class Opener:
    """Opens (and reopens) one backend's store at one location, and closes them all."""

    def __init__(
        self,
        backend: str,
        open_fn: Callable[[], Store],
        raw_sql: Callable[[str], list[tuple[Any, ...]]] | None = None,
    ) -> None:
        self.backend = backend
        self._open_fn = open_fn
        self.raw_sql = raw_sql
        self.opened: list[Store] = []

    def open(self) -> Store:
        store = self._open_fn()
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(scope="module")
def pg_schemas(request: pytest.FixtureRequest) -> Iterator[Callable[[], tuple[str, str]]]:
    """Hands out fresh PostgreSQL schemas for this module; drops them all at its end."""
    created: list[str] = []
    prefix = f"rmb_test_{secrets.token_hex(4)}"
    dsn_box: list[str] = []

    def fresh() -> tuple[str, str]:
        if not dsn_box:
            dsn_box.append(request.getfixturevalue("pg_dsn"))
        name = f"{prefix}_{len(created)}"
        created.append(name)
        return dsn_box[0], name

    yield fresh
    if created:
        import psycopg
        from psycopg import sql

        with psycopg.connect(dsn_box[0], autocommit=True) as conn:
            for name in created:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )


BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DURABLE = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _opener(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    if backend == "memory":
        shared = MemoryStore()  # "reopening" memory returns the same object
        return Opener(backend, lambda: shared)
    if backend == "sqlite":
        path = tmp_path / "store.db"

        def sqlite_sql(statement: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as conn:
                rows = conn.execute(statement).fetchall()
            conn.close()
            return rows

        return Opener(backend, lambda: SqliteStore(path), sqlite_sql)
    assert backend == "postgres"
    fresh: Callable[[], tuple[str, str]] = request.getfixturevalue("pg_schemas")
    dsn, schema = fresh()

    def pg_sql(statement: str) -> list[tuple[Any, ...]]:
        import psycopg
        from psycopg import sql

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description is not None else []

    return Opener(backend, lambda: PostgresStore(dsn, schema=schema), pg_sql)


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    op = _opener(request.param, tmp_path, request)
    yield op
    op.close_all()


@pytest.fixture(params=DURABLE)
def durable_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    op = _opener(request.param, tmp_path, request)
    yield op
    op.close_all()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener.open()


def run_threads(n: int, target: Callable[[int], object]) -> list[object]:
    """Run ``target(i)`` in ``n`` threads started together; results (or exceptions) by i."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as e:  # reported through results, not as a thread crash
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


# --- append and read back ---------------------------------------------------------------


def test_append_and_read_back(store: Store) -> None:
    store.append(batch(NS, 0, 10))
    store.append(batch(NS, 10, 5))

    assert store.namespaces() == [NS]
    assert store.log_state(NS) == state(NS, 15)
    assert store.read_entries(NS, 0, 15) == [leaf(NS, i) for i in range(15)]
    assert store.read_entries(NS, 8, 12) == [leaf(NS, i) for i in range(8, 12)]
    assert store.read_entries(NS, 12, 100) == [leaf(NS, i) for i in range(12, 15)]
    assert store.read_entries(NS, 5, 5) == []
    assert store.read_entries(NS, 15, 20) == []
    assert store.read_tiles(NS, [(0, 0), (1, 0)]) == {(0, 0): tile(NS, 0, 0, 15)[2]}
    cp = store.checkpoint_at(NS, 15)
    assert cp is not None
    assert (cp.namespace, cp.size, cp.note, cp.time) == (
        NS,
        15,
        state(NS, 15).checkpoint,
        1_764_100_000,
    )
    assert [c.size for c in store.checkpoints(NS)] == [10, 15]


def test_entries_without_keys_are_stored(store: Store) -> None:
    raw = [EntryRow(leaf=b"raw entry"), EntryRow(leaf=b"raw entry"), EntryRow(leaf=b"")]
    store.append(batch(NS, 0, 0, entries=raw))
    assert store.read_entries(NS, 0, 3) == [b"raw entry", b"raw entry", b""]


def test_empty_batch_re_signs_the_same_size(store: Store) -> None:
    store.append(batch(NS, 0, 3))
    store.append(batch(NS, 3, 0, note=b"re-signed note with cosignatures", time=5))
    head = store.log_state(NS)
    assert head is not None and head.checkpoint == b"re-signed note with cosignatures"
    cps = store.checkpoints(NS)
    assert [(c.size, c.note, c.time) for c in cps] == [(3, b"re-signed note with cosignatures", 5)]


def test_a_new_log_may_start_empty(store: Store) -> None:
    store.append(batch(NS, 0, 0))
    assert store.namespaces() == [NS]
    assert store.log_state(NS) == state(NS, 0)
    assert store.read_entries(NS, 0, 10) == []


# --- atomicity ------------------------------------------------------------------------------


def test_in_batch_duplicate_event_id_leaves_nothing(store: Store) -> None:
    rows = [entry(NS, i) for i in range(5)] + [entry(NS, 5, event_id="e-2")]
    with pytest.raises(ConflictError) as info:
        store.append(batch(NS, 0, 0, entries=rows))
    assert info.value.code == "event_id_reused"
    assert info.value.details["index"] == 5
    assert info.value.details["within_batch"] is True
    assert_untouched(store, NS, 0)
    assert store.find_event_id(NS, "e-0") is None
    assert store.find_nonce(ACTOR, f"n-{NS}-0") is None
    # Nothing was half-written: the same positions can be filled cleanly.
    store.append(batch(NS, 0, 6))
    assert_untouched(store, NS, 6)


def test_in_batch_duplicate_nonce_leaves_nothing(store: Store) -> None:
    store.append(batch(NS, 0, 4))
    rows = [entry(NS, 4), entry(NS, 5), entry(NS, 6, nonce=f"n-{NS}-5")]
    with pytest.raises(ConflictError) as info:
        store.append(batch(NS, 4, 0, entries=rows))
    assert info.value.code == "nonce_reused"
    assert info.value.details == {
        "namespace": NS,
        "index": 6,
        "actor": ACTOR,
        "nonce": f"n-{NS}-5",
        "within_batch": True,
    }
    assert_untouched(store, NS, 4)
    assert store.find_event_id(NS, "e-4") is None


def test_reuse_of_an_earlier_batch_refuses_the_whole_batch(store: Store) -> None:
    store.append(batch(NS, 0, 300))
    rows = [entry(NS, 300 + i) for i in range(299)] + [entry(NS, 599, event_id="e-17")]
    with pytest.raises(ConflictError) as info:
        store.append(batch(NS, 300, 0, entries=rows))
    assert info.value.code == "event_id_reused"
    assert info.value.details == {
        "namespace": NS,
        "index": 599,
        "event_id": "e-17",
        "within_batch": False,
    }
    assert_untouched(store, NS, 300)
    assert store.find_event_id(NS, "e-300") is None
    assert store.find_nonce(ACTOR, f"n-{NS}-300") is None


def test_invalid_batches_are_refused_before_writing(store: Store) -> None:
    good = batch(NS, 0, 3)
    bad_batches = [
        AppendBatch(NS, 0, good.entries, good.tiles, state(NS, 4)),  # size != start + n
        AppendBatch(NS, 0, good.entries, good.tiles, state(NS2, 3)),  # other namespace
        AppendBatch(NS, 0, good.entries, [(0, 0, b"\x00" * 31)], good.state),  # not 32*k
        AppendBatch(NS, 0, good.entries, [(0, 0, b"")], good.state),  # empty tile
        AppendBatch(NS, 0, good.entries, [(0, 0, b"\x00" * 32 * 257)], good.state),
        AppendBatch(NS, 0, good.entries, [*good.tiles, *good.tiles], good.state),  # twice
        AppendBatch(NS, 0, [EntryRow(b"x" * 65536), *good.entries[1:]], good.tiles, good.state),
        AppendBatch(
            NS, 0, [EntryRow(b"x", event_hash=b"short"), *good.entries[1:]], good.tiles, good.state
        ),
        AppendBatch(NS, 0, good.entries, good.tiles, LogState(NS, 3, b"\x00" * 31, b"note")),
    ]
    for bad in bad_batches:
        with pytest.raises(StorageError) as info:
            store.append(bad)
        assert info.value.code == "batch_invalid", bad
    assert_untouched(store, NS, 0)
    store.append(good)
    assert_untouched(store, NS, 3)


# --- sequencing -----------------------------------------------------------------------------


def test_start_must_equal_the_current_size(store: Store) -> None:
    with pytest.raises(ConflictError) as info:
        store.append(batch(NS, 5, 3))
    assert info.value.code == "log_size_moved"
    assert info.value.details == {"namespace": NS, "size": 0, "start": 5}
    assert_untouched(store, NS, 0)
    store.append(batch(NS, 0, 10))
    for start in (0, 9, 11):
        with pytest.raises(ConflictError) as info:
            store.append(batch(NS, start, 2))
        assert info.value.code == "log_size_moved"
    assert_untouched(store, NS, 10)


def test_racing_appends_at_one_size_admit_exactly_one(opener: Opener) -> None:
    # One store object per writer, as if each were its own process.
    stores = [opener.open() for _ in range(8)]
    stores[0].append(batch(NS, 0, 1))

    def attempt(i: int) -> object:
        rows = [entry(NS, 1 + k, event_id=f"t{i}-{k}", nonce=f"t{i}-{k}") for k in range(50)]
        stores[i].append(batch(NS, 1, 0, entries=rows))
        return i

    results = run_threads(8, attempt)
    winners = [r for r in results if isinstance(r, int)]
    losers = [r for r in results if not isinstance(r, int)]
    assert len(winners) == 1, results
    assert all(isinstance(e, ConflictError) and e.code == "log_size_moved" for e in losers)
    for store in stores:
        head = store.log_state(NS)
        assert head is not None and head.size == 51
        found = store.find_event_id(NS, f"t{winners[0]}-0")
        assert found is not None and found.index == 1


def test_racing_first_appends_of_a_new_log_admit_exactly_one(opener: Opener) -> None:
    stores = [opener.open() for _ in range(6)]

    def attempt(i: int) -> object:
        rows = [entry(NS, k, event_id=f"t{i}-{k}", nonce=f"t{i}-{k}") for k in range(20)]
        stores[i].append(batch(NS, 0, 0, entries=rows))
        return i

    results = run_threads(6, attempt)
    assert sum(isinstance(r, int) for r in results) == 1, results
    assert all(
        isinstance(r, int) or (isinstance(r, ConflictError) and r.code == "log_size_moved")
        for r in results
    ), results
    assert stores[-1].namespaces() == [NS]


def test_appends_to_different_logs_run_side_by_side(store: Store) -> None:
    def grow(i: int) -> object:
        ns = f"test:log-{i}"
        for start in range(0, 100, 20):
            store.append(batch(ns, start, 20))
        return ns

    results = run_threads(4, grow)
    assert sorted(store.namespaces()) == sorted(str(r) for r in results)
    for ns in results:
        assert isinstance(ns, str)
        assert_untouched(store, ns, 100)


# --- uniqueness across batches and logs ---------------------------------------------------------


def test_uniqueness_across_batches_and_logs(store: Store) -> None:
    store.append(batch(NS, 0, 3))
    # The same event id in another namespace is fine; (actor, nonce) is global.
    other = [entry(NS2, 0, event_id="e-0", nonce="fresh")]
    store.append(batch(NS2, 0, 0, entries=other))
    reused_nonce = [entry(NS2, 1, event_id="e-new", nonce=f"n-{NS}-1")]
    with pytest.raises(ConflictError) as info:
        store.append(batch(NS2, 1, 0, entries=reused_nonce))
    assert info.value.code == "nonce_reused"
    assert info.value.details["within_batch"] is False
    # Another actor may use the same nonce.
    bobs = [entry(NS2, 1, event_id="e-bob", nonce=f"n-{NS}-1", actor=ACTOR2)]
    store.append(batch(NS2, 1, 0, entries=bobs))
    with pytest.raises(ConflictError) as info:
        store.append(batch(NS, 3, 0, entries=[entry(NS, 3, event_id="e-1")]))
    assert info.value.code == "event_id_reused"
    assert_untouched(store, NS, 3)
    found = store.find_nonce(ACTOR2, f"n-{NS}-1")
    assert found is not None and (found.namespace, found.index) == (NS2, 1)


# --- lookups ------------------------------------------------------------------------------------


def test_lookups(store: Store) -> None:
    store.append(batch(NS, 0, 20))
    rows = [entry(NS2, 0), EntryRow(leaf=b"no hash", event_id="only-id")]
    store.append(batch(NS2, 0, 0, entries=rows))
    e7 = entry(NS, 7)
    assert e7.event_hash is not None

    found = store.find_event_hash(NS, e7.event_hash)
    assert found is not None and (found.namespace, found.index, found.event_hash) == (
        NS,
        7,
        e7.event_hash,
    )
    assert store.find_event_hash(NS2, e7.event_hash) is None
    assert store.find_event_hash(NS, b"\x00" * 32) is None

    found = store.find_event_id(NS, "e-7")
    assert found is not None and (found.namespace, found.index, found.event_hash) == (
        NS,
        7,
        e7.event_hash,
    )
    assert store.find_event_id(NS, "e-99") is None
    found = store.find_event_id(NS2, "only-id")
    assert found is not None and (found.index, found.event_hash) == (1, None)

    found = store.find_nonce(ACTOR, f"n-{NS}-7")
    assert found is not None and (found.namespace, found.index, found.event_hash) == (
        NS,
        7,
        e7.event_hash,
    )
    found = store.find_nonce(ACTOR, f"n-{NS2}-0")
    assert found is not None and (found.namespace, found.index) == (NS2, 0)
    assert store.find_nonce(ACTOR2, f"n-{NS}-7") is None


def test_find_keys(store: Store) -> None:
    store.append(batch(NS, 0, 1500))  # e-0..e-1499, nonces n-NS-i
    mixed = [
        entry(NS2, 0, event_id="e-5", nonce="ns2-own"),  # NS2 may reuse NS's event ids
        EntryRow(leaf=b"raw between records"),
        EntryRow(leaf=b"id only", event_id="only-id"),
        entry(NS2, 3, event_id="bob-1", nonce=f"n-{NS}-9", actor=ACTOR2),  # Bob's own nonce
    ]
    store.append(batch(NS2, 0, 0, entries=mixed))

    def found(ns: str, index: int) -> FoundEntry:
        return FoundEntry(ns, index, hashlib.sha256(leaf(ns, index)).digest())

    # Found and not-found mixed, a duplicate key asked twice, more than 1,000 keys.
    ids = [f"e-{i}" for i in range(0, 3000, 2)] + ["e-4", "nope", "only-id"]
    pairs = [(ACTOR, f"n-{NS}-{i}") for i in range(1, 3000, 2)]
    pairs += [
        (ACTOR, f"n-{NS}-3"),
        (ACTOR2, f"n-{NS}-1"),
        (ACTOR, "ns2-own"),
        (ACTOR2, f"n-{NS}-9"),
    ]
    by_id, by_nonce = store.find_keys(NS, ids, pairs)
    assert by_id == {f"e-{i}": found(NS, i) for i in range(0, 1500, 2)}
    assert by_nonce == {
        **{(ACTOR, f"n-{NS}-{i}"): found(NS, i) for i in range(1, 1500, 2)},
        # Nonces are global: found in the namespace that used them.
        (ACTOR, "ns2-own"): found(NS2, 0),
        (ACTOR2, f"n-{NS}-9"): found(NS2, 3),
    }
    # Event ids are per namespace; an entry without an event hash has none.
    by_id, by_nonce = store.find_keys(NS2, ["e-5", "e-6", "only-id", "bob-1"], [])
    assert by_id == {
        "e-5": found(NS2, 0),
        "only-id": FoundEntry(NS2, 2, None),
        "bob-1": found(NS2, 3),
    }
    assert by_nonce == {}
    # An unknown namespace has no event ids, but nonces are still found.
    by_id, by_nonce = store.find_keys("nobody:here", ["e-1"], [(ACTOR, f"n-{NS}-1")])
    assert by_id == {}
    assert by_nonce == {(ACTOR, f"n-{NS}-1"): found(NS, 1)}
    assert store.find_keys(NS, [], []) == ({}, {})
    # The bulk lookup agrees with the point lookups.
    for i in (0, 777, 1499):
        assert store.find_event_id(NS, f"e-{i}") == found(NS, i)
        assert store.find_nonce(ACTOR, f"n-{NS}-{i}") == found(NS, i)


def test_reading_unknown_namespaces(store: Store) -> None:
    store.append(batch(NS, 0, 3))
    for ns in ("nobody:here", ""):
        assert store.log_state(ns) is None
        assert store.read_entries(ns, 0, 10) == []
        assert store.read_bundle(ns, 0) is None
        assert store.find_keys(ns, ["e-0"], []) == ({}, {})
        assert store.read_tiles(ns, [(0, 0), (1, 0)]) == {}
        assert store.checkpoint_at(ns, 3) is None
        assert store.checkpoints(ns) == []
        assert store.find_event_id(ns, "e-0") is None
        assert store.find_event_hash(ns, hashlib.sha256(leaf(NS, 0)).digest()) is None
    assert store.read_tiles(NS, []) == {}
    assert store.read_entries(NS, -5, 2) == [leaf(NS, 0), leaf(NS, 1)]
    assert store.read_entries(NS, 2, 1) == []
    assert store.namespaces() == [NS]


# --- entry bundles ---------------------------------------------------------------------------------


def test_bundles_grow_from_partial_to_full(store: Store) -> None:
    leaves = [leaf(NS, i) for i in range(1000)]
    store.append(batch(NS, 0, 100))
    assert store.read_bundle(NS, 0) == encode_entry_bundle(leaves[:100])
    assert store.read_bundle(NS, 1) is None
    store.append(batch(NS, 100, 156))  # exactly fills bundle 0
    full = store.read_bundle(NS, 0)
    assert full is not None and decode_entry_bundle(full, 256) == leaves[:256]
    assert store.read_bundle(NS, 1) is None
    store.append(batch(NS, 256, 1))  # starts bundle 1
    assert store.read_bundle(NS, 1) == encode_entry_bundle(leaves[256:257])
    store.append(batch(NS, 257, 743))  # widens 1, writes 2 full, starts 3
    for index, width in ((0, 256), (1, 256), (2, 256), (3, 232)):
        data = store.read_bundle(NS, index)
        assert data is not None
        assert decode_entry_bundle(data, width) == leaves[index * 256 : index * 256 + width]
    assert store.read_bundle(NS, 0) == full  # a full bundle never changes
    assert store.read_bundle(NS, 4) is None
    assert store.read_bundle(NS, -1) is None
    assert store.read_bundle(NS2, 0) is None
    assert_untouched(store, NS, 1000)


def test_entries_read_across_bundles_and_batches(store: Store) -> None:
    # Entries of every length class (empty, the largest, in between), batches of
    # awkward sizes: most batches and ranges start and end inside bundles.
    sizes = [1, 254, 3, 256, 300, 0, 511, 7, 2]
    leaves: list[bytes] = []
    for n in sizes:
        rows: list[EntryRow] = []
        for _ in range(n):
            i = len(leaves) + len(rows)
            data = bytes([i % 251]) * (i * 37 % 600)
            if i == 5:
                data = b"\xab" * 65535
            rows.append(EntryRow(leaf=data))
        store.append(batch(NS, len(leaves), 0, entries=rows))
        leaves += [r.leaf for r in rows]
    total = len(leaves)
    assert total == 1334 and b"" in leaves
    ranges = [(0, total), (0, 1), (255, 257), (256, 512), (250, 780), (511, 513), (767, 1025)]
    ranges += [(1024, total + 50), (total - 1, total), (5, 6), (3, 300), (900, 901), (-3, 2)]
    for start, end in ranges:
        assert store.read_entries(NS, start, end) == leaves[max(start, 0) : end], (start, end)
    for index in range(6):
        bundle = store.read_bundle(NS, index)
        assert bundle is not None
        assert decode_entry_bundle(bundle) == leaves[index * 256 : index * 256 + 256]
    assert store.read_bundle(NS, 6) is None


def test_raw_entries_are_not_indexed(store: Store) -> None:
    raw = [EntryRow(leaf=leaf(NS, i)) for i in range(600)]
    store.append(batch(NS, 0, 0, entries=raw))
    assert store.find_keys(NS, ["e-0", "e-599"], [(ACTOR, f"n-{NS}-0")]) == ({}, {})
    rows = [EntryRow(leaf=b"raw"), entry(NS, 601), EntryRow(leaf=b"raw"), entry(NS, 603)]
    store.append(batch(NS, 600, 0, entries=rows))
    assert store.stats().extra["entries"] == 604
    tail = [leaf(NS, 598), leaf(NS, 599), b"raw", leaf(NS, 601), b"raw", leaf(NS, 603)]
    assert store.read_entries(NS, 598, 604) == tail
    assert store.find_event_hash(NS, hashlib.sha256(leaf(NS, 5)).digest()) is None
    found = store.find_event_id(NS, "e-603")
    assert found is not None and found.index == 603
    found = store.find_nonce(ACTOR, f"n-{NS}-601")
    assert found is not None and found.index == 601


def test_raw_entries_add_no_record_rows(durable_opener: Opener) -> None:
    store = durable_opener.open()
    query = durable_opener.raw_sql
    assert query is not None
    store.append(batch(NS, 0, 0, entries=[EntryRow(leaf=leaf(NS, i)) for i in range(700)]))
    assert query("SELECT count(*) FROM records") == [(0,)]
    assert query("SELECT count(*) FROM bundles") == [(3,)]
    store.append(batch(NS, 700, 0, entries=[EntryRow(leaf=b"raw"), entry(NS, 701)]))
    assert query("SELECT idx, event_id FROM records") == [(701, "e-701")]
    assert query("SELECT idx FROM bundles ORDER BY idx") == [(0,), (1,), (2,)]


def test_a_bundle_that_disagrees_with_the_log_size_refuses_the_append(
    durable_opener: Opener,
) -> None:
    store = durable_opener.open()
    store.append(batch(NS, 0, 300))
    assert durable_opener.raw_sql is not None
    durable_opener.raw_sql("DELETE FROM bundles WHERE idx = 1")
    with pytest.raises(StorageError) as info:
        store.append(batch(NS, 300, 5))
    assert info.value.code == "log_inconsistent"
    head = store.log_state(NS)
    assert head is not None and head.size == 300
    assert store.find_event_id(NS, "e-300") is None
    assert store.read_bundle(NS, 1) is None


# --- tiles -----------------------------------------------------------------------------------------


def test_tiles_widen_and_never_shrink_or_change(store: Store) -> None:
    store.append(batch(NS, 0, 5))
    assert store.read_tiles(NS, [(0, 0)]) == {(0, 0): tile(NS, 0, 0, 5)[2]}
    store.append(batch(NS, 5, 5))
    assert store.read_tiles(NS, [(0, 0)]) == {(0, 0): tile(NS, 0, 0, 10)[2]}

    # A narrower (stale) write of the same hashes is a no-op, and so is an equal one.
    store.append(batch(NS, 10, 1, tiles=[tile(NS, 0, 0, 3), (1, 0, tree_hash(NS, 1, 0))]))
    store.append(batch(NS, 11, 1, tiles=[tile(NS, 0, 0, 10)]))
    assert store.read_tiles(NS, [(0, 0), (1, 0)]) == {
        (0, 0): tile(NS, 0, 0, 10)[2],
        (1, 0): tree_hash(NS, 1, 0),
    }

    # A write that disagrees with stored hashes refuses the whole batch.
    changed = bytearray(tile(NS, 0, 0, 12)[2])
    changed[40] ^= 1
    for bad in (bytes(changed), bytes(changed[:64]), bytes(changed[:320])):
        with pytest.raises(ConflictError) as info:
            store.append(batch(NS, 12, 1, tiles=[tile(NS, 0, 1, 1), (0, 0, bad)]))
        assert info.value.code == "tile_conflict"
        assert info.value.details["level"] == 0 and info.value.details["index"] == 0
    assert store.read_tiles(NS, [(0, 0), (0, 1)]) == {(0, 0): tile(NS, 0, 0, 10)[2]}
    head = store.log_state(NS)
    assert head is not None and head.size == 12


def test_full_tiles_and_upper_levels(store: Store) -> None:
    store.append(batch(NS, 0, 700))
    got = store.read_tiles(NS, [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (2, 0)])
    assert got == {
        (0, 0): tile(NS, 0, 0, 256)[2],
        (0, 1): tile(NS, 0, 1, 256)[2],
        (0, 2): tile(NS, 0, 2, 188)[2],
        (1, 0): tile(NS, 1, 0, 2)[2],
    }


# --- checkpoints -----------------------------------------------------------------------------------


def test_checkpoints_listing(store: Store) -> None:
    for start in range(0, 10, 2):
        store.append(batch(NS, start, 2, time=1000 + start))
    assert [c.size for c in store.checkpoints(NS)] == [2, 4, 6, 8, 10]
    assert [c.size for c in store.checkpoints(NS, after_size=4)] == [6, 8, 10]
    assert [c.size for c in store.checkpoints(NS, after_size=5)] == [6, 8, 10]
    assert [c.size for c in store.checkpoints(NS, limit=2)] == [2, 4]
    assert [c.size for c in store.checkpoints(NS, after_size=2, limit=2)] == [4, 6]
    assert store.checkpoints(NS, after_size=10) == []
    assert store.checkpoints(NS, limit=0) == []
    cp = store.checkpoint_at(NS, 6)
    assert cp is not None and (cp.note, cp.time) == (state(NS, 6).checkpoint, 1004)
    assert store.checkpoint_at(NS, 5) is None
    assert store.checkpoint_at(NS, 0) is None


# --- state compare-and-swap ------------------------------------------------------------------------


def test_state_compare_and_swap(store: Store) -> None:
    assert store.get_state("witness", "log-a") is None
    assert store.put_state("witness", "log-a", b"v1", expect=None) is True
    assert store.put_state("witness", "log-a", b"v2", expect=None) is False
    assert store.put_state("witness", "log-a", b"v2", expect=b"wrong") is False
    assert store.get_state("witness", "log-a") == b"v1"
    assert store.put_state("witness", "log-a", b"v2", expect=b"v1") is True
    assert store.put_state("witness", "log-a", b"v3") is True  # unconditional
    assert store.put_state("witness", "log-a", b"v4", expect=ANY) is True
    assert store.put_state("witness", "absent", b"x", expect=b"x") is False
    assert store.get_state("witness", "absent") is None
    # An empty value is a value, not absence.
    assert store.put_state("witness", "empty", b"", expect=None) is True
    assert store.get_state("witness", "empty") == b""
    assert store.put_state("witness", "empty", b"y", expect=None) is False
    assert store.put_state("scheduler", "log-a", b"other scope") is True
    assert store.list_state("witness") == {"empty": b"", "log-a": b"v4"}
    assert store.list_state("nothing") == {}
    # Deleting.
    assert store.delete_state("witness", "log-a", expect=b"v3") is False
    assert store.delete_state("witness", "log-a", expect=b"v4") is True
    assert store.delete_state("witness", "log-a") is False
    assert store.delete_state("witness", "empty") is True
    assert store.list_state("witness") == {}
    assert store.get_state("scheduler", "log-a") == b"other scope"


def test_state_pages_in_code_point_order_with_a_prefix(store: Store) -> None:
    # Keys chosen so that a locale collation would order them differently.
    keys = ["a/B", "a/a", "a/\u00e9", "a/\U0001f600", "a/_", "a", "ab/x", "b/1", "A/z", ""]
    for k in keys:
        assert store.put_state("paged", k, k.encode("utf-8"))
    store.put_state("other", "a/zz", b"not this scope")
    want = sorted(keys)
    got: list[str] = []
    after: str | None = None
    while True:
        page = store.list_state_page("paged", after=after, limit=3)
        assert len(page) <= 3
        if not page:
            break
        got += [k for k, _ in page]
        assert all(v == k.encode("utf-8") for k, v in page)
        after = page[-1][0]
    assert got == want
    prefixed = [k for k, _ in store.list_state_page("paged", prefix="a/", limit=100)]
    assert prefixed == sorted(k for k in keys if k.startswith("a/"))
    rest = store.list_state_page("paged", prefix="a/", after=prefixed[1], limit=2)
    assert [k for k, _ in rest] == prefixed[2:4]
    assert store.list_state_page("paged", prefix="zz", limit=5) == []
    assert store.list_state_page("nothing", limit=5) == []
    for bad in (0, -1, 10_001, True):
        with pytest.raises(FormatError) as e:
            store.list_state_page("paged", limit=bad)
        assert e.value.code == "state_page_invalid"


def test_racing_compare_and_swap_has_exactly_one_winner(opener: Opener) -> None:
    stores = [opener.open() for _ in range(8)]
    stores[0].put_state("witness", "race", b"v0")
    for round_ in range(3):
        old = f"v{round_}".encode()

        def swap(i: int, old: bytes = old, r: int = round_) -> bool:
            return stores[i].put_state("witness", "race", f"v{r + 1}-{i}".encode(), expect=old)

        results = run_threads(8, swap)
        assert results.count(True) == 1 and results.count(False) == 7, results
        winner = results.index(True)
        assert stores[0].get_state("witness", "race") == f"v{round_ + 1}-{winner}".encode()
        stores[0].put_state("witness", "race", f"v{round_ + 1}".encode())
    first = run_threads(8, lambda i: stores[i].put_state("witness", "new", b"%d" % i, expect=None))
    assert first.count(True) == 1, first


def test_compare_and_swap_counter_loses_no_update(opener: Opener) -> None:
    stores = [opener.open() for _ in range(6)]

    def increment(i: int) -> object:
        store = stores[i]
        for _ in range(25):
            while True:
                current = store.get_state("counter", "n")
                value = int(current or b"0")
                if store.put_state("counter", "n", b"%d" % (value + 1), expect=current):
                    break
        return None

    results = run_threads(6, increment)
    assert results == [None] * 6
    assert stores[0].get_state("counter", "n") == b"150"


# --- typed state: anchor receipts, the witness, federation receipts ------------------------------


def cosigned(origin: str, size: int, *, time: int = 1) -> CosignedRow:
    root = hashlib.sha256(f"{origin}/{size}".encode()).digest()
    return CosignedRow(origin, size, root, f"{origin}\n{size}\n".encode(), f"— w {size}\n", time)


def test_anchor_receipts_page_by_size_and_unfinished_by_namespace(store: Store) -> None:
    assert store.anchor_receipts(NS) == [] and store.anchor_receipt(NS, 1) is None
    for size in (30, 10, 20, 250):
        store.put_anchor_receipt(AnchorReceiptRow(NS, size, b"r%d" % size, size != 20))
    store.put_anchor_receipt(AnchorReceiptRow(NS2, 5, b"other", False))
    assert [r.size for r in store.anchor_receipts(NS)] == [10, 20, 30, 250]
    assert [r.size for r in store.anchor_receipts(NS, after=10, limit=2)] == [20, 30]
    assert [r.size for r in store.anchor_receipts(NS, after=250)] == []
    assert store.anchor_receipt(NS, 20) == AnchorReceiptRow(NS, 20, b"r20", False)
    assert [(r.namespace, r.size) for r in store.unfinished_anchor_receipts()] == [
        (NS, 20), (NS2, 5)]  # fmt: skip
    assert store.unfinished_anchor_receipts(after=(NS, 20)) == [
        AnchorReceiptRow(NS2, 5, b"other", False)]  # fmt: skip
    assert store.unfinished_anchor_receipts(limit=1)[0].size == 20
    # A rewrite replaces the document and the flag: finished drops out of the page.
    store.put_anchor_receipt(AnchorReceiptRow(NS, 20, b"r20 final", True))
    assert [r.namespace for r in store.unfinished_anchor_receipts()] == [NS2]
    assert store.anchor_receipt(NS, 20) == AnchorReceiptRow(NS, 20, b"r20 final", True)
    for bad in (0, -1, 10_001):
        with pytest.raises(FormatError):
            store.anchor_receipts(NS, limit=bad)
        with pytest.raises(FormatError):
            store.unfinished_anchor_receipts(limit=bad)


def test_cosigned_is_a_compare_and_swap_on_size(store: Store) -> None:
    origin = "example.org/log"
    assert store.get_cosigned(origin) is None
    assert not store.put_cosigned(cosigned(origin, 5), expect_size=0)  # no row: not size 0
    assert store.put_cosigned(cosigned(origin, 5), expect_size=None)
    assert not store.put_cosigned(cosigned(origin, 6), expect_size=None)  # a row exists now
    assert not store.put_cosigned(cosigned(origin, 6), expect_size=4)
    assert store.get_cosigned(origin) == cosigned(origin, 5)
    assert store.put_cosigned(cosigned(origin, 9, time=2), expect_size=5)
    assert store.get_cosigned(origin) == cosigned(origin, 9, time=2)
    assert store.put_cosigned(cosigned("a.example/x", 1), expect_size=None)
    assert store.cosigned_origins() == ["a.example/x", origin]


def test_racing_cosigned_updates_have_exactly_one_winner(opener: Opener) -> None:
    stores = (
        [opener.open() for _ in range(6)] if opener.backend != "memory" else [opener.open()] * 6
    )
    stores[0].put_cosigned(cosigned("o", 1), expect_size=None)
    results = run_threads(6, lambda i: stores[i].put_cosigned(cosigned("o", 10 + i), expect_size=1))
    assert sorted(results, key=str) == [False] * 5 + [True]
    winner = results.index(True)
    assert stores[0].get_cosigned("o") == cosigned("o", 10 + winner)


def test_federation_receipts_compare_and_swap_and_page(store: Store) -> None:
    row = FederationReceiptRow(NS, "aa/rfc3161/t1", b"v1")
    assert store.federation_receipt(NS, row.receipt_id) is None
    assert store.put_federation_receipt(row, expect=None)
    assert not store.put_federation_receipt(replace(row, receipt=b"v2"), expect=None)
    assert not store.put_federation_receipt(replace(row, receipt=b"v2"), expect=b"v0")
    assert store.put_federation_receipt(replace(row, receipt=b"v2"), expect=b"v1")
    assert store.federation_receipt(NS, row.receipt_id) == replace(row, receipt=b"v2")
    store.put_federation_receipt(FederationReceiptRow(NS, "0b/btc/t", b"b"))
    store.put_federation_receipt(FederationReceiptRow(NS2, "ff/x/y", b"c"))
    store.put_federation_receipt(FederationReceiptRow(NS, "Zz/é", b"d"))
    assert store.federation_receipt_count() == 4
    everything = store.federation_receipts()
    assert [r.cursor for r in everything] == [f"{NS}/0b/btc/t", f"{NS}/Zz/é",
                                              f"{NS}/aa/rfc3161/t1", f"{NS2}/ff/x/y"]  # fmt: skip
    assert [r.receipt_id for r in store.federation_receipts(NS)] == [
        "0b/btc/t", "Zz/é", "aa/rfc3161/t1"]  # fmt: skip
    page = store.federation_receipts(after=(NS, "Zz/é"), limit=1)
    assert [r.cursor for r in page] == [f"{NS}/aa/rfc3161/t1"]
    assert store.federation_receipts(NS2, after=(NS, "zzz")) == [everything[-1]]
    with pytest.raises(FormatError):
        store.federation_receipts(limit=0)


def test_evidence_is_kept_once_per_incident_within_a_bound_per_subject(store: Store) -> None:
    def row(ref: str, subject: str, incident: str) -> EvidenceRow:
        return EvidenceRow(ref, subject, incident, f"file {ref}".encode())

    assert store.keep_evidence(row("sha256:01", "did:a", "i1"), per_subject=2) == "sha256:01"
    # Another file for the same incident: the first stands for it, the new one is not kept.
    assert store.keep_evidence(row("sha256:02", "did:a", "i1"), per_subject=2) == "sha256:01"
    assert store.evidence_file("sha256:02") is None
    assert store.keep_evidence(row("sha256:03", "did:a", "i2"), per_subject=2) == "sha256:03"
    assert store.keep_evidence(row("sha256:04", "did:a", "i3"), per_subject=2) is None  # full
    assert store.evidence_file("sha256:04") is None
    assert store.keep_evidence(row("sha256:05", "did:b", "i1"), per_subject=2) == "sha256:05"
    assert store.evidence_incidents("did:a") == {"i1": "sha256:01", "i2": "sha256:03"}
    assert store.evidence_file("sha256:03") == b"file sha256:03"
    assert [r.ref for r in store.evidence_page()] == ["sha256:01", "sha256:03", "sha256:05"]
    assert store.evidence_page(after="sha256:01", limit=1) == [row("sha256:03", "did:a", "i2")]
    with pytest.raises(FormatError):
        store.evidence_page(limit=0)


def test_racing_evidence_keepers_never_exceed_the_bound(opener: Opener) -> None:
    stores = (
        [opener.open() for _ in range(6)] if opener.backend != "memory" else [opener.open()] * 6
    )
    results = run_threads(6, lambda i: stores[i].keep_evidence(
        EvidenceRow(f"sha256:{i:02d}", "did:a", f"i{i}", b"f"), per_subject=2))  # fmt: skip
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r is not None for r in results) == 2
    assert len(stores[0].evidence_incidents("did:a")) == 2 == len(stores[0].evidence_page())


def test_a_schema_1_database_moves_its_json_state_into_the_typed_tables(
    durable_opener: Opener,
) -> None:
    """Opening a database of schema version 1 (typed state as JSON in ``state``)
    moves every legacy row into its table, in the migration, and keeps the rest."""
    import base64
    import json

    from remembrancer.core.anchor import Anchor, AnchorReceipt, Finality

    store = durable_opener.open()
    store.append(batch(NS, 0, 3))
    store.close()
    assert durable_opener.raw_sql is not None
    # Back to exactly what schema version 1 had: the first migration's tables only.
    for table in (
        "anchor_receipts",
        "witness_cosigned",
        "federation_receipts",
        "federation_evidence",
    ):
        durable_opener.raw_sql(f"DROP TABLE {table}")
    durable_opener.raw_sql("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    final = Anchor("rfc3161:tsa", b"\x01" * 32, status="verified", tx_ref="tx-final",
                   finality=Finality(state="final"))  # fmt: skip
    waiting = Anchor("rfc3161:tsa", b"\x01" * 32, status="submitted", tx_ref="tx-waiting")
    receipts = {3: AnchorReceipt("example.org/log", 3, b"note\n", b"\x01" * 32, (final,)),
                7: AnchorReceipt("example.org/log", 7, b"note\n", b"\x01" * 32, (waiting,))}  # fmt: skip
    witness = {"size": 9, "root": base64.b64encode(b"\x02" * 32).decode(), "note": "o\n9\n",
               "cosignature": "— w x\n", "time": 77}  # fmt: skip
    rows = [("anchors", f"{NS}/{size:020d}", json.dumps(r.to_dict()).encode())
            for size, r in receipts.items()]  # fmt: skip
    rows += [("witness", "example.org/log", json.dumps(witness).encode()),
             ("federation-receipts", f"{NS}/ab12/rfc3161:tsa/tx-final", b'{"id": 1}'),
             ("anchors", f"{NS}/broken", b"not json"),  # kept as it was, not lost
             ("federation-evidence", "sha256:aa", b"evidence file"),
             ("federation-evidence", "sha256:bb", b"a file no index names"),  # stays state
             ("federation-evidence-subjects", ACTOR2,
              b'{"incidents": {"equivocation/x": "sha256:aa"}}'),
             ("scheduler", f"{NS}/fast", b'{"last_size": 3}')]  # fmt: skip
    for scope, key, value in rows:
        hexed = value.hex()
        blob = f"X'{hexed}'" if durable_opener.backend == "sqlite" else f"'\\x{hexed}'::bytea"
        durable_opener.raw_sql(
            f"INSERT INTO state (scope, key, value) VALUES ('{scope}', '{key}', {blob})"
        )

    again = durable_opener.open()
    assert again.stats().schema_version == 2
    got = again.anchor_receipts(NS)
    assert [(r.size, r.finished) for r in got] == [(3, True), (7, False)]
    assert [AnchorReceipt.from_dict(json.loads(r.receipt)) for r in got] == [
        receipts[3],
        receipts[7],
    ]
    assert [r.size for r in again.unfinished_anchor_receipts()] == [7]
    assert again.get_cosigned("example.org/log") == CosignedRow(
        "example.org/log", 9, b"\x02" * 32, b"o\n9\n", "— w x\n", 77)  # fmt: skip
    assert again.federation_receipts() == [
        FederationReceiptRow(NS, "ab12/rfc3161:tsa/tx-final", b'{"id": 1}')]  # fmt: skip
    assert again.list_state("anchors") == {f"{NS}/broken": b"not json"}
    assert again.list_state("witness") == {} and again.list_state("federation-receipts") == {}
    assert again.evidence_page() == [EvidenceRow("sha256:aa", ACTOR2, "equivocation/x",
                                                 b"evidence file")]  # fmt: skip
    assert again.list_state("federation-evidence") == {"sha256:bb": b"a file no index names"}
    assert again.list_state("federation-evidence-subjects") == {}
    assert again.get_state("scheduler", f"{NS}/fast") == b'{"last_size": 3}'
    assert_untouched(again, NS, 3)
    again.close()
    third = durable_opener.open()  # a second open migrates nothing twice
    assert [r.size for r in third.anchor_receipts(NS)] == [3, 7]


# --- durability and schema -------------------------------------------------------------------------


def test_reopen_keeps_everything(durable_opener: Opener) -> None:
    store = durable_opener.open()
    store.append(batch(NS, 0, 300))
    store.append(batch(NS2, 0, 2))
    store.put_state("witness", "k", b"v")
    store.close()
    with pytest.raises(StorageError) as info:
        store.log_state(NS)
    assert info.value.code == "store_closed"
    with pytest.raises(StorageError) as info:
        store.append(batch(NS, 300, 1))
    assert info.value.code == "store_closed"
    store.close()  # closing twice is harmless

    again = durable_opener.open()
    assert again.namespaces() == [NS, NS2]
    assert_untouched(again, NS, 300)
    assert_untouched(again, NS2, 2)
    assert again.get_state("witness", "k") == b"v"
    found = again.find_nonce(ACTOR, f"n-{NS}-299")
    assert found is not None and found.index == 299
    again.append(batch(NS, 300, 10))
    assert_untouched(again, NS, 310)
    stats = again.stats()
    assert stats.schema_version >= 1
    assert stats.extra["entries"] == 312


def test_a_newer_schema_version_is_refused(durable_opener: Opener) -> None:
    store = durable_opener.open()
    version = store.stats().schema_version
    store.append(batch(NS, 0, 1))
    store.close()
    assert durable_opener.raw_sql is not None
    durable_opener.raw_sql(f"UPDATE meta SET value = {version + 1} WHERE key = 'schema_version'")
    with pytest.raises(StorageError) as info:
        durable_opener.open()
    assert info.value.code == "schema_too_new"
    assert info.value.details["found"] == version + 1
    assert info.value.details["supported"] == version


def test_a_foreign_database_is_refused(durable_opener: Opener) -> None:
    assert durable_opener.raw_sql is not None
    if durable_opener.backend == "postgres":
        durable_opener.open().close()  # creates the (empty) schema
        durable_opener.raw_sql(
            "DROP TABLE meta, logs, bundles, records, tiles, checkpoints, state,"
            " anchor_receipts, witness_cosigned, federation_receipts, federation_evidence"
        )
    durable_opener.raw_sql("CREATE TABLE accounts (id integer PRIMARY KEY)")
    with pytest.raises(StorageError) as info:
        durable_opener.open()
    assert info.value.code == "schema_unknown"


# --- export and import (backup and restore) ----------------------------------------------------


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A second, empty store of every backend (the target of a load)."""
    where = tmp_path / "target"
    where.mkdir()
    op = _opener(request.param, where, request)
    yield op.open()
    op.close_all()


def fill(store: Store) -> None:
    """Two logs (records, raw entries, keys of every kind, a re-signed size) and state."""
    store.append(batch(NS, 0, 300))
    rows = [EntryRow(leaf=b"raw"), entry(NS, 301), EntryRow(leaf=b"")]
    rows.append(EntryRow(leaf=leaf(NS, 303), event_hash=hashlib.sha256(b"303").digest()))
    rows.append(EntryRow(leaf=leaf(NS, 304), actor=ACTOR2))  # an actor without a nonce
    store.append(batch(NS, 300, 0, entries=rows))
    store.append(batch(NS, 305, 0, note=b"re-signed with cosignatures", time=7))
    store.append(batch(NS2, 0, 3, entries=[entry(NS2, i, actor=ACTOR2) for i in range(3)]))
    store.put_state("witness", "some.origin/ns", b'{"size": 3}')
    store.put_state("scheduler", "k", bytes(range(256)))
    store.put_anchor_receipt(AnchorReceiptRow(NS, 300, b'{"r": 300}', True))
    store.put_anchor_receipt(AnchorReceiptRow(NS, 305, b'{"r": 305}', False))
    store.put_cosigned(cosigned("example.org/log", 9), expect_size=None)
    store.put_federation_receipt(FederationReceiptRow(NS, "ab/rfc3161/tx", b'{"f": 1}'))
    store.keep_evidence(EvidenceRow("sha256:0e", ACTOR2, "inc", bytes(range(256))), per_subject=8)


def dump(store: Store) -> dict[str, Any]:
    """Every row of a store, as its snapshot streams them."""
    with store.snapshot() as snap:
        logs = snap.logs()
        return {
            "logs": logs,
            "rows": {
                s.namespace: (
                    list(snap.bundles(s.namespace)),
                    list(snap.records(s.namespace)),
                    list(snap.tiles(s.namespace)),
                    list(snap.checkpoints(s.namespace)),
                )
                for s in logs
            },
            "state": list(snap.state()),
            "anchor_receipts": list(snap.anchor_receipts()),
            "cosigned": list(snap.cosigned()),
            "federation_receipts": list(snap.federation_receipts()),
            "evidence": list(snap.evidence()),
        }


def copy_store(source: Store, target: Store) -> None:
    with source.snapshot() as snap, target.load() as loader:
        for head in snap.logs():
            ns = head.namespace
            loader.add_log(head)
            loader.add_checkpoints(ns, snap.checkpoints(ns))
            loader.add_bundles(ns, snap.bundles(ns))
            loader.add_records(ns, snap.records(ns))
            loader.add_tiles(ns, snap.tiles(ns))
        loader.add_state(snap.state())
        loader.add_anchor_receipts(snap.anchor_receipts())
        loader.add_cosigned(snap.cosigned())
        loader.add_federation_receipts(snap.federation_receipts())
        loader.add_evidence(snap.evidence())


def test_a_snapshot_loads_into_every_backend_and_reads_the_same(
    store: Store, target: Store
) -> None:
    fill(store)
    before = dump(store)
    assert [s.namespace for s in before["logs"]] == [NS, NS2]
    bundles, records, _, checkpoints = before["rows"][NS]
    assert [i for i, _ in bundles] == [0, 1]
    assert [r.index for r in records] == [*range(300), 301, 303, 304]
    assert records[-1] == RecordRow(304, None, None, ACTOR2, None)
    assert [(c.size, c.time) for c in checkpoints] == [(300, 1_764_100_000), (305, 7)]

    copy_store(store, target)

    assert dump(target) == before
    assert_untouched(target, NS2, 3)
    assert target.read_entries(NS, 299, 400) == [leaf(NS, 299), b"raw", leaf(NS, 301), b"",
                                                  leaf(NS, 303), leaf(NS, 304)]  # fmt: skip
    head = target.log_state(NS)
    assert head is not None and head.checkpoint == b"re-signed with cosignatures"
    found = target.find_event_hash(NS, hashlib.sha256(b"303").digest())
    assert found == FoundEntry(NS, 303, hashlib.sha256(b"303").digest())
    assert target.find_nonce(ACTOR2, f"n-{NS2}-1") == FoundEntry(
        NS2, 1, hashlib.sha256(leaf(NS2, 1)).digest()
    )
    assert target.list_state("scheduler") == {"k": bytes(range(256))}
    assert [r.size for r in target.unfinished_anchor_receipts()] == [305]
    assert target.get_cosigned("example.org/log") == cosigned("example.org/log", 9)
    assert target.federation_receipt_count() == 1
    assert target.evidence_incidents(ACTOR2) == {"inc": "sha256:0e"}
    # The loaded store goes on like the original: appends continue, keys stay unique.
    with pytest.raises(ConflictError) as info:
        target.append(batch(NS, 305, 1, entries=[entry(NS, 305, nonce=f"n-{NS}-7")]))
    assert info.value.code == "nonce_reused"
    target.append(batch(NS, 305, 2))
    assert target.read_entries(NS, 305, 310) == [leaf(NS, 305), leaf(NS, 306)]
    assert target.read_bundle(NS, 1) == encode_entry_bundle(target.read_entries(NS, 256, 307))


def test_a_snapshot_is_one_moment_while_appends_go_on(store: Store) -> None:
    store.append(batch(NS, 0, 300))
    store.put_state("witness", "a", b"1")
    with store.snapshot() as snap:
        logs = snap.logs()
        bundles = snap.bundles(NS)
        first = next(bundles)  # a stream half read while others write
        store.append(batch(NS, 300, 300))
        store.append(batch(NS2, 0, 1))
        store.put_state("witness", "a", b"2")
        store.put_state("witness", "b", b"3")
        assert [s.size for s in logs] == [300]
        rest = list(bundles)
        assert [first[0], *(i for i, _ in rest)] == [0, 1]
        assert decode_entry_bundle(rest[0][1]) == [leaf(NS, i) for i in range(256, 300)]
        assert [c.size for c in snap.checkpoints(NS)] == [300]
        assert list(snap.records(NS))[-1].index == 299
        assert len(list(snap.tiles(NS))) == len(tiles_for(NS, 0, 300))
        assert list(snap.state()) == [("witness", "a", b"1")]
        assert list(snap.bundles(NS2)) == []
    assert store.log_state(NS) == state(NS, 600)


def test_a_load_into_a_store_that_is_not_empty_is_refused(store: Store) -> None:
    store.put_state("witness", "a", b"1")
    with pytest.raises(StorageError) as info, store.load() as loader:
        loader.add_log(state(NS, 0))
        loader.add_checkpoints(NS, [store_checkpoint(NS, 0)])
    assert info.value.code == "store_not_empty"
    assert store.namespaces() == []
    store.delete_state("witness", "a")
    store.append(batch(NS, 0, 2))
    with pytest.raises(StorageError) as info, store.load():
        pass
    assert info.value.code == "store_not_empty"
    assert_untouched(store, NS, 2)


def store_checkpoint(ns: str, size: int) -> StoredCheckpoint:
    return StoredCheckpoint(ns, size, state(ns, size).checkpoint, 1)


def test_a_load_that_fails_part_way_leaves_the_store_empty(store: Store) -> None:
    source = MemoryStore()
    source.append(batch(NS, 0, 300))
    with pytest.raises(RuntimeError), source.snapshot() as snap, store.load() as loader:
        loader.add_log(snap.logs()[0])
        loader.add_bundles(NS, snap.bundles(NS))
        loader.add_records(NS, snap.records(NS))
        raise RuntimeError("the archive is corrupt")
    assert store.namespaces() == []
    assert store.read_entries(NS, 0, 10) == []
    assert store.find_event_id(NS, "e-1") is None
    copy_store(source, store)  # nothing half-written is in the way
    assert_untouched(store, NS, 300)


def _bad_bundle_order(loader: Any) -> None:
    loader.add_log(state(NS, 300))
    loader.add_bundles(NS, [(1, encode_entry_bundle([leaf(NS, i) for i in range(256, 300)]))])


def _missing_bundle(loader: Any) -> None:
    loader.add_log(state(NS, 300))
    loader.add_checkpoints(NS, [store_checkpoint(NS, 300)])
    loader.add_bundles(NS, [(0, encode_entry_bundle([leaf(NS, i) for i in range(256)]))])


def _short_bundle(loader: Any) -> None:
    loader.add_log(state(NS, 3))
    loader.add_bundles(NS, [(0, encode_entry_bundle([leaf(NS, 0), leaf(NS, 1)]))])


def _no_head_checkpoint(loader: Any) -> None:
    loader.add_log(state(NS, 1))
    loader.add_bundles(NS, [(0, encode_entry_bundle([leaf(NS, 0)]))])
    loader.add_checkpoints(NS, [store_checkpoint(NS, 0)])


def _other_head_checkpoint(loader: Any) -> None:
    loader.add_log(state(NS, 0))
    loader.add_checkpoints(NS, [StoredCheckpoint(NS, 0, b"another note", 1)])


def _rows_before_their_log(loader: Any) -> None:
    loader.add_records(NS, [RecordRow(0, None, "e-0", None, None)])


def _nonce_used_twice(loader: Any) -> None:
    for ns in (NS, NS2):
        loader.add_log(state(ns, 1))
        loader.add_records(ns, [RecordRow(0, None, None, ACTOR, "same-nonce")])


def _anchor_receipt_loaded_twice(loader: Any) -> None:
    row = AnchorReceiptRow(NS, 1, b"{}", True)
    loader.add_anchor_receipts([row, row])


def _cosigned_loaded_twice(loader: Any) -> None:
    loader.add_cosigned([cosigned("o", 1), cosigned("o", 2)])


def _federation_receipt_loaded_twice(loader: Any) -> None:
    loader.add_federation_receipts([FederationReceiptRow(NS, "x", b"1")] * 2)


def _evidence_incident_loaded_twice(loader: Any) -> None:
    loader.add_evidence(
        [EvidenceRow("sha256:1", "s", "i", b"a"), EvidenceRow("sha256:2", "s", "i", b"b")]
    )


def _not_a_typed_row(loader: Any) -> None:
    loader.add_cosigned([("o", 1)])


def _tile_loaded_twice(loader: Any) -> None:
    loader.add_log(state(NS, 1))
    loader.add_tiles(NS, [tile(NS, 0, 0, 1), tile(NS, 0, 0, 1)])


def _record_beyond_the_log(loader: Any) -> None:
    loader.add_log(state(NS, 1))
    loader.add_records(NS, [RecordRow(1, None, "e-1", None, None)])


@pytest.mark.parametrize(
    "rows",
    [_bad_bundle_order, _missing_bundle, _short_bundle, _no_head_checkpoint, _other_head_checkpoint,
     _rows_before_their_log, _nonce_used_twice, _tile_loaded_twice, _record_beyond_the_log,
     _anchor_receipt_loaded_twice, _cosigned_loaded_twice, _federation_receipt_loaded_twice,
     _not_a_typed_row, _evidence_incident_loaded_twice],
)  # fmt: skip
def test_a_load_with_invalid_rows_is_refused_whole(
    store: Store, rows: Callable[[Any], None]
) -> None:
    with pytest.raises(StorageError) as info, store.load() as loader:
        rows(loader)
    assert info.value.code == "load_invalid"
    assert store.namespaces() == []
    assert store.log_state(NS) is None
    assert store.read_tiles(NS, [(0, 0)]) == {}
    assert store.find_nonce(ACTOR, "same-nonce") is None
    assert store.anchor_receipts(NS) == [] and store.get_cosigned("o") is None
    assert store.federation_receipt_count() == 0 and store.evidence_page() == []
    store.append(batch(NS, 0, 1))  # and it is still an empty, usable store


# --- volume ------------------------------------------------------------------------------------------


def test_large_batch_round_trip(store: Store) -> None:
    n = 10_000
    store.append(batch(NS, 0, 3))
    big = batch(NS, 3, n)
    store.append(big)
    assert store.read_entries(NS, 0, n + 3) == [leaf(NS, i) for i in range(n + 3)]
    head = store.log_state(NS)
    assert head is not None and head.size == n + 3
    wanted = [(0, i) for i in range(40)] + [(1, 0), (2, 0)]
    expected = {(lv, ix): h for lv, ix, h in tiles_for(NS, 0, n + 3)}
    assert store.read_tiles(NS, wanted) == expected
    for i in (3, 5_000, n + 2):
        found = store.find_event_id(NS, f"e-{i}")
        assert found is not None and found.index == i


# --- SQLite specifics ----------------------------------------------------------------------------------


def test_sqlite_runs_in_wal_with_synchronous_full(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    store = SqliteStore(path)
    try:
        store.append(batch(NS, 0, 3))
        extra = store.stats().extra
        assert extra["journal_mode"] == "wal"
        assert extra["synchronous"] == "FULL"
        # WAL is a property of the file: an independent connection sees it too.
        probe = sqlite3.connect(path)
        try:
            assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            probe.close()
        assert (tmp_path / "wal.db-wal").exists()
        # Every connection the store made commits with synchronous=FULL (2).
        for conn in [store._writer, store._reader()]:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()


def test_sqlite_refuses_an_in_memory_path() -> None:
    with pytest.raises(StorageError) as info:
        SqliteStore(":memory:")
    assert info.value.code == "open_failed"


def test_sqlite_reports_an_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        SqliteStore(tmp_path / "missing-dir" / "x.db")
    assert info.value.code == "open_failed"


# --- open_store -----------------------------------------------------------------------------------------


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_store("sqlite:///rel.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs%20path.db")
    mem = open_store("memory://")
    try:
        assert isinstance(rel, SqliteStore) and (tmp_path / "rel.db").exists()
        assert isinstance(absolute, SqliteStore) and (tmp_path / "abs path.db").exists()
        assert isinstance(mem, MemoryStore)
    finally:
        for s in (rel, absolute, mem):
            s.close()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("", "store_url_invalid"),
        ("rel.db", "store_url_invalid"),
        ("mysql://localhost/db", "store_scheme_unknown"),
        ("sqlite://host/x.db", "store_url_invalid"),
        ("sqlite:///", "store_url_invalid"),
        ("sqlite:///x.db?mode=ro", "store_url_invalid"),
        ("memory://somewhere", "store_url_invalid"),
        ("postgresql://localhost/db?schema=Bad-Name", "store_url_invalid"),
        ("postgresql://localhost/db?schema=a&schema=b", "store_url_invalid"),
    ],
)
def test_open_store_refuses_bad_urls(url: str, code: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert info.value.code == code
    assert info.value.message


@pytest.mark.postgres
def test_open_store_postgres_with_schema(
    pg_dsn: str, pg_schemas: Callable[[], tuple[str, str]]
) -> None:
    _, schema = pg_schemas()
    sep = "&" if "?" in pg_dsn else "?"
    store = open_store(f"{pg_dsn}{sep}schema={schema}")
    try:
        assert isinstance(store, PostgresStore) and store.schema == schema
        store.append(batch(NS, 0, 2))
        assert store.stats().extra["schema"] == schema
        assert store.stats().extra["synchronous_commit"] != "off"
    finally:
        store.close()


def test_postgres_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(StorageError) as info:
        PostgresStore("postgresql://localhost/db")
    assert info.value.code == "backend_unavailable"
    assert "remembrancer[postgres]" in info.value.message


def test_postgres_unreachable_is_a_storage_error() -> None:
    with pytest.raises(StorageError) as info:
        PostgresStore("postgresql://nobody@127.0.0.1:1/none", timeout=2)
    assert info.value.code == "unavailable"
