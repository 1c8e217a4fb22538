"""The sequencer lease and the fencing epoch in a real PostgreSQL
(storage/lease.py): who may take the lease and when, and that an append
carrying a stale epoch is refused inside its own transaction."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import pytest
import yaml

from remembrancer.core.errors import ConflictError, StorageError
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.sequencer import Sequencer
from remembrancer.storage import postgres
from remembrancer.storage.base import AppendBatch, EntryRow, Fence, LogState
from remembrancer.storage.lease import PgLease
from remembrancer.storage.memory import MemoryStore
from remembrancer.storage.postgres import PostgresStore
from remembrancer.storage.sqlite import SqliteStore

NS = "dao:vaultmesh"
KEY = SigningKey.generate()


@pytest.fixture
def stores(pg_dsn: str) -> Iterator[Callable[[], PostgresStore]]:
    """Opens PostgresStores on one fresh schema (as separate processes would)."""
    import psycopg

    schema = f"lease_{os.getpid()}_{random.randrange(1 << 30)}"
    opened: list[PostgresStore] = []

    def open_one() -> PostgresStore:
        store = PostgresStore(pg_dsn, schema=schema)
        opened.append(store)
        return store

    yield open_one
    for s in opened:
        s.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _lease(store: PostgresStore, holder: str, seconds: float = 0.6) -> PgLease:
    return PgLease(store, "sequencer", holder, f"http://{holder}:1", seconds, statement_timeout=2)


def _expired(lease: PgLease, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (current := lease.current()) is not None and current.expires_in > 0:
        assert time.monotonic() < deadline, "the lease did not expire"
        time.sleep(0.02)


def _sequencer(store: PostgresStore) -> Sequencer:
    doc = yaml.safe_load(
        resources.files("remembrancer.examples").joinpath("namespaces.yaml").read_text()
    )
    return Sequencer(store, KEY, "lease.test", StaticNamespaces(parse_namespaces(doc)))


def test_acquire_renew_release_and_strictly_growing_epochs(
    stores: Callable[[], PostgresStore],
) -> None:
    one, two = _lease(stores(), "one"), _lease(stores(), "two")
    try:
        assert one.acquire() == 1
        assert two.acquire() is None  # held and not expired
        assert two.renew(1) is False  # not its lease
        assert one.renew(1) is True
        current = two.current()
        assert current is not None and (current.holder, current.url, current.epoch) == (
            "one", "http://one:1", 1)  # fmt: skip
        _expired(two)
        assert two.acquire() == 2  # expired: taken over, with a new epoch
        assert one.renew(1) is False  # the former holder cannot renew its way back
        assert one.acquire() is None
        two.release(2)  # a graceful stop: free at once
        assert one.acquire() == 3
    finally:
        one.close()
        two.close()


def test_an_append_with_a_stale_epoch_is_refused_and_changes_nothing(
    stores: Callable[[], PostgresStore],
) -> None:
    store_a, store_b = stores(), stores()
    lease_a, lease_b = _lease(store_a, "a"), _lease(store_b, "b")
    seq_a, seq_b = _sequencer(store_a), _sequencer(store_b)
    fenced: list[bool] = []
    try:
        epoch_a = lease_a.acquire()
        assert epoch_a == 1
        seq_a.fence = lambda: Fence("sequencer", epoch_a)
        seq_a.on_fenced = lambda: fenced.append(True)
        assert seq_a.append_raw(NS, [b"one", b"two"]) == (0, 2)

        _expired(lease_b)  # A is "paused": it does not renew
        epoch_b = lease_b.acquire()
        assert epoch_b == 2
        before = store_b.log_state(NS)
        with pytest.raises(ConflictError) as e:
            seq_a.append_raw(NS, [b"three"])  # A still believes it leads
        assert e.value.code == "fenced" and e.value.details["epoch"] == 1
        assert fenced == [True]
        assert store_b.log_state(NS) == before  # nothing written
        assert store_b.read_entries(NS, 0, 10) == [b"one", b"two"]
        # A cosigned note attached by the old leader is refused too (the same fence).
        cosigned = before.checkpoint + "\u2014 witness.example AAAA\n".encode() if before else b""
        assert seq_a.attach_cosignatures(NS, 2, cosigned) is False
        assert store_b.log_state(NS) == before

        # The new holder appends from the durable state, with its epoch.
        seq_b.fence = lambda: Fence("sequencer", epoch_b)
        assert seq_b.append_raw(NS, [b"three"]) == (2, 3)
        # An append with no lease row at that epoch at all (epoch 0: a follower) is refused.
        seq_a.fence = lambda: Fence("sequencer", 0)
        with pytest.raises(ConflictError):
            seq_a.append_raw(NS, [b"four"])
        assert store_a.read_entries(NS, 0, 10) == [b"one", b"two", b"three"]
    finally:
        for lease in (lease_a, lease_b):
            lease.close()
        seq_a._write_pool.shutdown()
        seq_b._write_pool.shutdown()


def test_a_takeover_waits_for_an_append_under_way(stores: Callable[[], PostgresStore]) -> None:
    """An append holds the lease row FOR SHARE until it commits: the takeover's
    UPDATE cannot pass it (here it times out), and goes through once it commits."""
    store = stores()
    holder, other = _lease(store, "holder"), _lease(store, "other")
    try:
        assert holder.acquire() == 1
        conn = store.dedicated_connection()
        try:
            conn.execute("BEGIN")
            # The fencing statement every append runs first, in its transaction.
            assert conn.execute(postgres._FENCE, ("sequencer", 1)).fetchone() is not None
            _expired(other)
            with pytest.raises(StorageError) as e:
                other.acquire()  # blocked by the append under way: statement timeout
            assert e.value.details.get("sqlstate") == "57014"  # query_canceled
            conn.execute("COMMIT")
        finally:
            conn.close()
        assert other.acquire() == 2
    finally:
        holder.close()
        other.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_store_not_shared_between_processes_refuses_a_fence(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "s.db")
    try:
        batch = AppendBatch(NS, 0, [EntryRow(b"x")], [], LogState(NS, 1, b"\x00" * 32, b"cp"),
                            fence=Fence("sequencer", 1))  # fmt: skip
        with pytest.raises(StorageError) as e:
            store.append(batch)
        assert e.value.code == "fencing_unsupported"
        assert store.log_state(NS) is None
    finally:
        store.close()
