"""The SQLite backend: the embedded default, one database file per node.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so every
commit fsyncs the write-ahead log before ``append`` (or ``put_state``)
returns; an acknowledged record survives ``kill -9`` and power loss.

Concurrency: one writer connection, guarded by a lock, does every write; each
write is one transaction (``BEGIN IMMEDIATE`` takes SQLite's write lock at
once, so another process on the same file waits rather than interleaving).
Reads go through one connection per thread and, thanks to WAL, never wait
for the writer.  ``append`` checks ``start`` against the stored size inside
its transaction; the unique indexes enforce the uniqueness invariants.

Entries are stored 256 to a row, as tlog-tiles entry bundles: an append
inserts one row per bundle it starts and rewrites the partial bundle it
starts in (read, widened and written back inside its transaction), so a raw
entry costs its bytes plus 2, and no index entry.  Entries with keys (records)
also take one row each in ``records``, which every lookup queries.

Export: :meth:`SqliteStore.snapshot` opens a connection of its own and holds
one read transaction (a WAL snapshot) while its rows stream out; the writer
goes on meanwhile, though the WAL cannot be checkpointed past the snapshot
until it ends.  Import: :meth:`SqliteStore.load` holds one ``BEGIN
IMMEDIATE`` transaction on the writer for the whole load.

Tables (schema version 2; version 1 had all but the last four, and kept
their rows in ``state``: opening it moves them, see
:mod:`remembrancer.storage.legacy`; the last four are read and written by
:mod:`remembrancer.storage.sqlite_typed`)::

    meta        (key TEXT PRIMARY KEY, value INTEGER)        -- 'schema_version'
    logs        (id INTEGER PRIMARY KEY, namespace TEXT UNIQUE,
                 size INTEGER, root_hash BLOB, checkpoint BLOB)
    bundles     (log_id, idx, data BLOB, PRIMARY KEY (log_id, idx))
                 -- data: the entry bundle of entries [idx*256, idx*256 + n)
    records     (log_id, idx, event_hash BLOB, event_id TEXT, actor TEXT,
                 nonce TEXT, PRIMARY KEY (log_id, idx)) WITHOUT ROWID
                 + INDEX (log_id, event_hash), UNIQUE (log_id, event_id),
                   UNIQUE (actor, nonce)               -- partial: non-NULL keys
                 -- only entries with keys; idx is the entry's index in its log
    tiles       (log_id, level, idx, hashes BLOB, PRIMARY KEY (log_id, level, idx))
    checkpoints (log_id, size, note BLOB, time INTEGER, PRIMARY KEY (log_id, size))
    state       (scope TEXT, key TEXT, value BLOB, PRIMARY KEY (scope, key))
    anchor_receipts, witness_cosigned, federation_receipts, federation_evidence
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

from remembrancer.core.errors import ConflictError, RemembrancerError, StorageError
from remembrancer.storage.base import (
    ANY,
    BUNDLE_WIDTH,
    AppendBatch,
    Expect,
    FoundEntry,
    LogState,
    RecordRow,
    StoredCheckpoint,
    StoreStats,
    _AnyValue,
    check_page,
)
from remembrancer.storage.checks import (
    find_reuse,
    merge_tile,
    plan_bundles,
    record_rows,
    slice_bundles,
    validate_batch,
)
from remembrancer.storage.loading import LoadChecks, load_invalid, not_empty
from remembrancer.storage.sqlite_typed import (
    MIGRATION_V2,
    TYPED_TABLES,
    SqliteTypedLoader,
    SqliteTypedSnapshot,
    SqliteTypedState,
    move_legacy,
)

SCHEMA_VERSION: Final = 2

# _MIGRATIONS[v] takes a database from schema version v to v + 1.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE logs (
            id INTEGER PRIMARY KEY,
            namespace TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL CHECK (size >= 0),
            root_hash BLOB NOT NULL,
            checkpoint BLOB NOT NULL
        )""",
        """CREATE TABLE bundles (
            log_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (log_id, idx)
        )""",
        """CREATE TABLE records (
            log_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            event_hash BLOB,
            event_id TEXT,
            actor TEXT,
            nonce TEXT,
            PRIMARY KEY (log_id, idx)
        ) WITHOUT ROWID""",
        "CREATE INDEX records_event_hash ON records (log_id, event_hash)"
        " WHERE event_hash IS NOT NULL",
        "CREATE UNIQUE INDEX records_event_id ON records (log_id, event_id)"
        " WHERE event_id IS NOT NULL",
        "CREATE UNIQUE INDEX records_nonce ON records (actor, nonce)"
        " WHERE actor IS NOT NULL AND nonce IS NOT NULL",
        """CREATE TABLE tiles (
            log_id INTEGER NOT NULL,
            level INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            hashes BLOB NOT NULL,
            PRIMARY KEY (log_id, level, idx)
        )""",
        """CREATE TABLE checkpoints (
            log_id INTEGER NOT NULL,
            size INTEGER NOT NULL,
            note BLOB NOT NULL,
            time INTEGER NOT NULL,
            PRIMARY KEY (log_id, size)
        )""",
        """CREATE TABLE state (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (scope, key)
        ) WITHOUT ROWID""",
    ),
    MIGRATION_V2,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION
_TABLES: Final = ("logs", "state", "bundles", "records", "tiles", "checkpoints", *TYPED_TABLES)
_BUSY_TIMEOUT_MS: Final = 30_000
# Tuning, measured with bench/storage.py (random record keys, logs of up to 1M
# entries): the three key indexes take random inserts, so a 1,000-entry commit
# dirties ~3 index pages per entry.  A large writer cache keeps those pages
# hot; checkpointing every 128 MiB instead of 4 MiB lets pages touched by
# consecutive batches reach the main file once (32 MiB: -15% mean append time
# against 4 MiB; 128 MiB: another -1.2 µs of CPU per admitted record, of ~22,
# integrating 30,000 signed records in batches of 1,024).  The WAL keeps its
# size between checkpoints instead of being cut back and regrown.
_WRITER_CACHE_KIB: Final = 65_536
_READER_CACHE_KIB: Final = 8_192
_WAL_AUTOCHECKPOINT_PAGES: Final = 32_768
_WAL_SIZE_LIMIT: Final = 128 * 1024 * 1024  # truncate the WAL back to this after a checkpoint
_SYNCHRONOUS_NAMES: Final = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
# Keys per lookup statement: under SQLite's oldest default variable limit (999).
_LOOKUP_CHUNK: Final = 900  # event ids per IN (...) list
_PAIR_CHUNK: Final = 450  # (actor, nonce) pairs per VALUES list

_INSERT_RECORD: Final = (
    "INSERT INTO records (log_id, idx, event_hash, event_id, actor, nonce)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_BUNDLE: Final = "INSERT INTO bundles (log_id, idx, data) VALUES (?, ?, ?)"
_READ_BUNDLE: Final = "SELECT data FROM bundles WHERE log_id = ? AND idx = ?"
_UPSERT_TILE: Final = (
    "INSERT INTO tiles (log_id, level, idx, hashes) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (log_id, level, idx) DO UPDATE SET hashes = excluded.hashes"
)
_UPSERT_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (log_id, size, note, time) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (log_id, size) DO UPDATE SET note = excluded.note, time = excluded.time"
)


class SqliteStore(SqliteTypedState):
    """A :class:`~remembrancer.storage.base.Store` in one SQLite file (WAL, durable)."""

    backend = "sqlite"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise StorageError(
                "SqliteStore needs a file path (use MemoryStore for an in-memory store)",
                code="open_failed",
                details={"path": str(path)},
            )
        self._closed = False
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._log_ids: dict[str, int] = {}  # committed rows only: ids never change
        self._writer = self._connect(cache_kib=_WRITER_CACHE_KIB)
        try:
            self._enable_wal()
            self.schema_version = self._migrate()
        except BaseException:
            self._writer.close()
            raise

    # --- connections ---------------------------------------------------------

    def _connect(self, *, cache_kib: int = _READER_CACHE_KIB) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN / COMMIT ourselves
                check_same_thread=False,  # guarded by our lock, or thread-local
                cached_statements=64,
            )
        except sqlite3.Error as e:
            raise StorageError(
                f"cannot open the SQLite database {self.path}: {e}",
                code="open_failed",
                details={"path": str(self.path)},
            ) from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA cache_size = -{cache_kib}")
            conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.Error as e:
            conn.close()
            raise StorageError(
                f"{self.path} is not a usable SQLite database: {e}",
                code="open_failed",
                details={"path": str(self.path)},
            ) from e
        return conn

    def _enable_wal(self) -> None:
        try:
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
            self._writer.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        except sqlite3.Error as e:
            raise StorageError(
                f"{self.path} is not a usable SQLite database: {e}",
                code="open_failed",
                details={"path": str(self.path)},
            ) from e
        if str(mode).lower() != "wal":
            raise StorageError(
                f"SQLite refused WAL mode for {self.path} (got {mode!r}); "
                "put the database on a local file system",
                code="open_failed",
                details={"path": str(self.path), "journal_mode": str(mode)},
            )

    def _reader(self) -> sqlite3.Connection:
        self._check_open()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    self._check_open()
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the SQLite store is closed", code="store_closed")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn sqlite3 failures into StorageError (our own errors pass through)."""
        try:
            yield
        except sqlite3.Error as e:
            if self._closed:
                raise StorageError("the SQLite store is closed", code="store_closed") from e
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StorageError(
                    f"the disk holding the SQLite database is full: cannot {what}",
                    code="storage_full",
                    details={"path": str(self.path)},
                ) from e
            raise StorageError(
                f"SQLite failed to {what}: {e}",
                details={"path": str(self.path), "sqlite_error": type(e).__name__},
            ) from e

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction on the writer: committed on success, else rolled back."""
        with self._write_lock, self._errors(what):
            self._check_open()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """A read transaction (one consistent snapshot) on this thread's reader."""
        with self._errors(what):
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    # --- schema -----------------------------------------------------------------

    def _migrate(self) -> int:
        with self._write("migrate the schema") as conn:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if has_meta is None:
                (tables,) = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                ).fetchone()
                if tables:
                    raise StorageError(
                        f"{self.path} holds tables but is not a Remembrancer database",
                        code="schema_unknown",
                        details={"path": str(self.path)},
                    )
                conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
                found = 0
            else:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None or not isinstance(row[0], int):
                    raise StorageError(
                        f"{self.path} has no valid schema version",
                        code="schema_unknown",
                        details={"path": str(self.path)},
                    )
                found = row[0]
            if found > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} was written by a newer Remembrancer (schema version "
                    f"{found}, this one knows up to {SCHEMA_VERSION}); upgrade Remembrancer",
                    code="schema_too_new",
                    details={"path": str(self.path), "found": found, "supported": SCHEMA_VERSION},
                )
            for version in range(found, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                if version == 1:
                    move_legacy(conn)
            if found < SCHEMA_VERSION:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (SCHEMA_VERSION,),
                )
        return SCHEMA_VERSION

    # --- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for conn in readers:
                conn.close()
            # Closing the last connection checkpoints the WAL into the main file.
            self._writer.close()

    def stats(self) -> StoreStats:
        with self._read("read statistics") as conn:
            logs, entries = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM logs"
            ).fetchone()
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        with self._write_lock, self._errors("read statistics"):
            self._check_open()
            (mode,) = self._writer.execute("PRAGMA journal_mode").fetchone()
            (sync,) = self._writer.execute("PRAGMA synchronous").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        return StoreStats(
            backend=self.backend,
            schema_version=self.schema_version,
            extra={
                "path": str(self.path),
                "journal_mode": str(mode),
                "synchronous": _SYNCHRONOUS_NAMES.get(int(sync), str(sync)),
                "logs": int(logs),
                "entries": int(entries),
                "database_bytes": int(pages) * int(page_size),
                "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            },
        )

    # --- logs ------------------------------------------------------------------

    def _log_id(self, conn: sqlite3.Connection, namespace: str) -> int | None:
        log_id = self._log_ids.get(namespace)
        if log_id is None:
            row = conn.execute("SELECT id FROM logs WHERE namespace = ?", (namespace,)).fetchone()
            if row is None:
                return None
            log_id = self._log_ids[namespace] = int(row[0])
        return log_id

    def namespaces(self) -> list[str]:
        with self._read("list namespaces") as conn:
            rows = conn.execute("SELECT namespace FROM logs ORDER BY namespace").fetchall()
        return [r[0] for r in rows]

    def log_state(self, namespace: str) -> LogState | None:
        with self._read("read a log state") as conn:
            row = conn.execute(
                "SELECT size, root_hash, checkpoint FROM logs WHERE namespace = ?", (namespace,)
            ).fetchone()
        if row is None:
            return None
        return LogState(namespace=namespace, size=row[0], root_hash=row[1], checkpoint=row[2])

    def append(self, batch: AppendBatch) -> None:
        validate_batch(batch)
        ns = batch.namespace
        new_log = False
        with self._write("append a batch") as conn:
            row = conn.execute("SELECT id, size FROM logs WHERE namespace = ?", (ns,)).fetchone()
            size = 0 if row is None else int(row[1])
            if size != batch.start:
                raise ConflictError(
                    f"the log {ns} has size {size}, not {batch.start}",
                    code="log_size_moved",
                    details={"namespace": ns, "size": size, "start": batch.start},
                )
            if row is None:
                cur = conn.execute(
                    "INSERT INTO logs (namespace, size, root_hash, checkpoint) VALUES (?, 0, x'', x'')",
                    (ns,),
                )
                assert cur.lastrowid is not None
                log_id = cur.lastrowid
                new_log = True
            else:
                log_id = int(row[0])
            start = batch.start
            if batch.entries:
                # The bundle the batch starts in: partial (to widen) or absent.
                partial = None
                if not new_log:
                    found = conn.execute(_READ_BUNDLE, (log_id, start // BUNDLE_WIDTH)).fetchone()
                    partial = None if found is None else bytes(found[0])
                rewrite, new = plan_bundles(batch, partial)
                if rewrite is not None:
                    conn.execute(
                        "UPDATE bundles SET data = ? WHERE log_id = ? AND idx = ?",
                        (rewrite[1], log_id, rewrite[0]),
                    )
                try:
                    conn.executemany(_INSERT_BUNDLE, [(log_id, i, data) for i, data in new])
                except sqlite3.IntegrityError as e:
                    raise StorageError(
                        f"the log {ns} holds entries beyond its recorded size",
                        code="log_inconsistent",
                        details={"namespace": ns, "start": start},
                    ) from e
                keyed = record_rows(batch, log_id)
                if keyed:
                    try:
                        conn.executemany(_INSERT_RECORD, keyed)
                    except sqlite3.IntegrityError as e:
                        conn.rollback()
                        raise self._reuse_error(batch, e) from e
            if batch.tiles:
                writes = []
                for level, index, hashes in batch.tiles:
                    stored = conn.execute(
                        "SELECT hashes FROM tiles WHERE log_id = ? AND level = ? AND idx = ?",
                        (log_id, level, index),
                    ).fetchone()
                    merged = merge_tile(
                        ns, level, index, None if stored is None else stored[0], hashes
                    )
                    if merged is not None:
                        writes.append((log_id, level, index, merged))
                conn.executemany(_UPSERT_TILE, writes)
            state = batch.state
            conn.execute(
                "UPDATE logs SET size = ?, root_hash = ?, checkpoint = ? WHERE id = ?",
                (state.size, state.root_hash, state.checkpoint, log_id),
            )
            conn.execute(
                _UPSERT_CHECKPOINT, (log_id, state.size, state.checkpoint, batch.checkpoint_time)
            )
        if new_log:
            self._log_ids[ns] = log_id

    def _reuse_error(self, batch: AppendBatch, error: sqlite3.IntegrityError) -> RemembrancerError:
        """The ConflictError for a uniqueness failure, naming the first culprit."""
        message = str(error)
        if "records.log_id, records.idx" in message:
            return StorageError(
                f"the log {batch.namespace} holds entries beyond its recorded size",
                code="log_inconsistent",
                details={"namespace": batch.namespace, "start": batch.start},
            )
        # Called with the write lock held and the transaction rolled back.
        conn = self._writer
        log_id = self._log_id(conn, batch.namespace)
        conflict = find_reuse(
            batch,
            lambda ids: _lookup_event_ids(conn, batch.namespace, log_id, ids),
            lambda pairs: _lookup_nonces(conn, pairs),
        )
        if conflict is not None:
            return conflict
        code = "nonce_reused" if "records.actor, records.nonce" in message else "event_id_reused"
        return ConflictError(
            f"the batch reuses a unique key in {batch.namespace}",
            code=code,
            details={"namespace": batch.namespace},
        )

    def read_tiles(
        self, namespace: str, tiles: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        if not tiles:
            return out
        with self._read("read tiles") as conn:
            log_id = self._log_id(conn, namespace)
            if log_id is None:
                return out
            for level, index in tiles:
                row = conn.execute(
                    "SELECT hashes FROM tiles WHERE log_id = ? AND level = ? AND idx = ?",
                    (log_id, level, index),
                ).fetchone()
                if row is not None:
                    out[(level, index)] = row[0]
        return out

    def read_entries(self, namespace: str, start: int, end: int) -> list[bytes]:
        start = max(start, 0)
        if end <= start:
            return []
        with self._read("read entries") as conn:
            log_id = self._log_id(conn, namespace)
            if log_id is None:
                return []
            rows = conn.execute(
                "SELECT idx, data FROM bundles WHERE log_id = ? AND idx >= ? AND idx <= ?"
                " ORDER BY idx",
                (log_id, start // BUNDLE_WIDTH, (end - 1) // BUNDLE_WIDTH),
            ).fetchall()
        return slice_bundles(namespace, start, end, rows)

    def read_bundle(self, namespace: str, index: int) -> bytes | None:
        if index < 0:
            return None
        with self._read("read an entry bundle") as conn:
            log_id = self._log_id(conn, namespace)
            if log_id is None:
                return None
            row = conn.execute(_READ_BUNDLE, (log_id, index)).fetchone()
        return None if row is None else bytes(row[0])

    def find_event_hash(self, namespace: str, event_hash: bytes) -> FoundEntry | None:
        with self._read("find an event hash") as conn:
            row = conn.execute(
                "SELECT r.idx FROM records r JOIN logs l ON l.id = r.log_id"
                " WHERE l.namespace = ? AND r.event_hash = ? ORDER BY r.idx LIMIT 1",
                (namespace, event_hash),
            ).fetchone()
        return None if row is None else FoundEntry(namespace, row[0], event_hash)

    def find_event_id(self, namespace: str, event_id: str) -> FoundEntry | None:
        with self._read("find an event id") as conn:
            row = conn.execute(
                "SELECT r.idx, r.event_hash FROM records r JOIN logs l ON l.id = r.log_id"
                " WHERE l.namespace = ? AND r.event_id = ?",
                (namespace, event_id),
            ).fetchone()
        return None if row is None else FoundEntry(namespace, row[0], row[1])

    def find_nonce(self, actor: str, nonce: str) -> FoundEntry | None:
        with self._read("find a nonce") as conn:
            row = conn.execute(
                "SELECT l.namespace, r.idx, r.event_hash FROM records r JOIN logs l ON l.id = r.log_id"
                " WHERE r.actor = ? AND r.nonce = ?",
                (actor, nonce),
            ).fetchone()
        return None if row is None else FoundEntry(row[0], row[1], row[2])

    def find_keys(
        self,
        namespace: str,
        event_ids: Sequence[str],
        nonces: Sequence[tuple[str, str]],
    ) -> tuple[dict[str, FoundEntry], dict[tuple[str, str], FoundEntry]]:
        with self._read("find keys") as conn:
            log_id = self._log_id(conn, namespace) if event_ids else None
            by_id = _lookup_event_ids(conn, namespace, log_id, event_ids)
            by_nonce = _lookup_nonces(conn, nonces)
        return by_id, by_nonce

    def checkpoint_at(self, namespace: str, size: int) -> StoredCheckpoint | None:
        with self._read("read a checkpoint") as conn:
            row = conn.execute(
                "SELECT c.note, c.time FROM checkpoints c JOIN logs l ON l.id = c.log_id"
                " WHERE l.namespace = ? AND c.size = ?",
                (namespace, size),
            ).fetchone()
        return None if row is None else StoredCheckpoint(namespace, size, row[0], row[1])

    def checkpoints(
        self, namespace: str, *, after_size: int = -1, limit: int = 100
    ) -> list[StoredCheckpoint]:
        if limit <= 0:
            return []
        with self._read("list checkpoints") as conn:
            rows = conn.execute(
                "SELECT c.size, c.note, c.time FROM checkpoints c JOIN logs l ON l.id = c.log_id"
                " WHERE l.namespace = ? AND c.size > ? ORDER BY c.size LIMIT ?",
                (namespace, after_size, limit),
            ).fetchall()
        return [StoredCheckpoint(namespace, r[0], r[1], r[2]) for r in rows]

    # --- small named state ----------------------------------------------------------

    def get_state(self, scope: str, key: str) -> bytes | None:
        with self._read("read state") as conn:
            row = conn.execute(
                "SELECT value FROM state WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def put_state(self, scope: str, key: str, value: bytes, *, expect: Expect = ANY) -> bool:
        with self._write("write state") as conn:
            if expect is ANY:
                cur = conn.execute(
                    "INSERT INTO state (scope, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
                    (scope, key, value),
                )
            elif expect is None:
                cur = conn.execute(
                    "INSERT INTO state (scope, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (scope, key) DO NOTHING",
                    (scope, key, value),
                )
            else:
                cur = conn.execute(
                    "UPDATE state SET value = ? WHERE scope = ? AND key = ? AND value = ?",
                    (value, scope, key, expect),
                )
            return cur.rowcount == 1

    def delete_state(
        self, scope: str, key: str, *, expect: bytes | Literal[_AnyValue.ANY] = ANY
    ) -> bool:
        with self._write("delete state") as conn:
            if expect is ANY:
                cur = conn.execute("DELETE FROM state WHERE scope = ? AND key = ?", (scope, key))
            else:
                cur = conn.execute(
                    "DELETE FROM state WHERE scope = ? AND key = ? AND value = ?",
                    (scope, key, expect),
                )
            return cur.rowcount == 1

    def list_state(self, scope: str) -> dict[str, bytes]:
        with self._read("list state") as conn:
            rows = conn.execute(
                "SELECT key, value FROM state WHERE scope = ? ORDER BY key", (scope,)
            ).fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def list_state_page(
        self, scope: str, *, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> list[tuple[str, bytes]]:
        check_page(limit)
        # TEXT compares with the BINARY collation: UTF-8 byte order, which is code point order.
        sql = "SELECT key, value FROM state WHERE scope = ? AND key >= ? AND substr(key, 1, ?) = ?"
        args: list[Any] = [scope, prefix, len(prefix), prefix]
        if after is not None:
            sql += " AND key > ?"
            args.append(after)
        with self._read("list state") as conn:
            rows = conn.execute(sql + " ORDER BY key LIMIT ?", (*args, limit)).fetchall()
        return [(r[0], bytes(r[1])) for r in rows]

    # --- export and import -----------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[_SqliteSnapshot]:
        self._check_open()
        conn = self._connect()
        try:
            with self._errors("start a snapshot"):
                conn.execute("PRAGMA query_only = ON")
                conn.execute("BEGIN")
                # The first read fixes the snapshot (a deferred BEGIN reads nothing).
                ids = dict(conn.execute("SELECT namespace, id FROM logs").fetchall())
            yield _SqliteSnapshot(self, conn, ids)
        finally:
            conn.close()

    @contextmanager
    def load(self) -> Iterator[_SqliteLoader]:
        with self._write("load rows") as conn:
            for table in _TABLES:
                if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                    raise not_empty(str(self.path))
            loader = _SqliteLoader(conn)
            try:
                yield loader
            except sqlite3.IntegrityError as e:
                raise load_invalid(f"the rows break a uniqueness rule of the store: {e}") from e
            loader.checks.finish()


def _lookup_event_ids(
    conn: sqlite3.Connection, namespace: str, log_id: int | None, event_ids: Sequence[str]
) -> dict[str, FoundEntry]:
    """The records of log ``log_id`` (``namespace``) with these event ids."""
    found: dict[str, FoundEntry] = {}
    if log_id is None:
        return found
    keys = list(dict.fromkeys(event_ids))
    for i in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = keys[i : i + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        for event_id, index, event_hash in conn.execute(
            "SELECT event_id, idx, event_hash FROM records"
            f" WHERE log_id = ? AND event_id IN ({marks})",
            (log_id, *chunk),
        ):
            found[event_id] = FoundEntry(namespace, index, event_hash)
    return found


def _lookup_nonces(
    conn: sqlite3.Connection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], FoundEntry]:
    """The records, in any log, that used these ``(actor, nonce)`` pairs."""
    found: dict[tuple[str, str], FoundEntry] = {}
    keys = list(dict.fromkeys(pairs))
    for i in range(0, len(keys), _PAIR_CHUNK):
        chunk = keys[i : i + _PAIR_CHUNK]
        # A joined VALUES list searches the (actor, nonce) index once per pair;
        # "(actor, nonce) IN (VALUES ...)" would scan the table.
        rows = ",".join(["(?, ?)"] * len(chunk))
        for actor, nonce, namespace, index, event_hash in conn.execute(
            f"WITH k (actor, nonce) AS (VALUES {rows})"
            " SELECT r.actor, r.nonce, l.namespace, r.idx, r.event_hash"
            " FROM k JOIN records r ON r.actor = k.actor AND r.nonce = k.nonce"
            " JOIN logs l ON l.id = r.log_id",
            [x for pair in chunk for x in pair],
        ):
            found[(actor, nonce)] = FoundEntry(namespace, index, event_hash)
    return found


class _SqliteSnapshot(SqliteTypedSnapshot):
    def __init__(self, store: SqliteStore, conn: sqlite3.Connection, ids: dict[str, int]) -> None:
        self._store = store
        self._conn = conn
        self._ids = ids

    def _rows(self, what: str, sql: str, params: tuple[object, ...]) -> Iterator[tuple[Any, ...]]:
        with self._store._errors(what):
            yield from self._conn.execute(sql, params)

    def logs(self) -> list[LogState]:
        rows = self._rows(
            "export logs",
            "SELECT namespace, size, root_hash, checkpoint FROM logs ORDER BY namespace",
            (),
        )
        return [LogState(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in rows]

    def bundles(self, namespace: str) -> Iterator[tuple[int, bytes]]:
        log_id = self._ids.get(namespace, -1)
        for idx, data in self._rows(
            "export entry bundles",
            "SELECT idx, data FROM bundles WHERE log_id = ? ORDER BY idx",
            (log_id,),
        ):
            yield idx, bytes(data)

    def records(self, namespace: str) -> Iterator[RecordRow]:
        log_id = self._ids.get(namespace, -1)
        for idx, event_hash, event_id, actor, nonce in self._rows(
            "export records",
            "SELECT idx, event_hash, event_id, actor, nonce FROM records WHERE log_id = ?"
            " ORDER BY idx",
            (log_id,),
        ):
            yield RecordRow(
                idx, None if event_hash is None else bytes(event_hash), event_id, actor, nonce
            )

    def tiles(self, namespace: str) -> Iterator[tuple[int, int, bytes]]:
        log_id = self._ids.get(namespace, -1)
        for level, idx, hashes in self._rows(
            "export tiles",
            "SELECT level, idx, hashes FROM tiles WHERE log_id = ? ORDER BY level, idx",
            (log_id,),
        ):
            yield level, idx, bytes(hashes)

    def checkpoints(self, namespace: str) -> Iterator[StoredCheckpoint]:
        log_id = self._ids.get(namespace, -1)
        for size, note, time in self._rows(
            "export checkpoints",
            "SELECT size, note, time FROM checkpoints WHERE log_id = ? ORDER BY size",
            (log_id,),
        ):
            yield StoredCheckpoint(namespace, size, bytes(note), time)

    def state(self) -> Iterator[tuple[str, str, bytes]]:
        for scope, key, value in self._rows(
            "export state", "SELECT scope, key, value FROM state ORDER BY scope, key", ()
        ):
            yield scope, key, bytes(value)


class _SqliteLoader(SqliteTypedLoader):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._ids: dict[str, int] = {}
        self.checks = LoadChecks()

    def add_log(self, state: LogState) -> None:
        self.checks.log(state)
        cur = self._conn.execute(
            "INSERT INTO logs (namespace, size, root_hash, checkpoint) VALUES (?, ?, ?, ?)",
            (state.namespace, state.size, state.root_hash, state.checkpoint),
        )
        assert cur.lastrowid is not None
        self._ids[state.namespace] = cur.lastrowid

    def add_bundles(self, namespace: str, bundles: Iterable[tuple[int, bytes]]) -> None:
        rows = self.checks.bundles(namespace, bundles)
        log_id = self._ids.get(namespace)
        self._conn.executemany(_INSERT_BUNDLE, ((log_id, i, d) for i, d in rows))

    def add_records(self, namespace: str, rows: Iterable[RecordRow]) -> None:
        checked = self.checks.records(namespace, rows)
        log_id = self._ids.get(namespace)
        self._conn.executemany(
            _INSERT_RECORD,
            ((log_id, r.index, r.event_hash, r.event_id, r.actor, r.nonce) for r in checked),
        )

    def add_tiles(self, namespace: str, tiles: Iterable[tuple[int, int, bytes]]) -> None:
        rows = self.checks.tiles(namespace, tiles)
        log_id = self._ids.get(namespace)
        self._conn.executemany(
            "INSERT INTO tiles (log_id, level, idx, hashes) VALUES (?, ?, ?, ?)",
            ((log_id, lv, ix, h) for lv, ix, h in rows),
        )

    def add_checkpoints(self, namespace: str, checkpoints: Iterable[StoredCheckpoint]) -> None:
        rows = self.checks.checkpoints(namespace, checkpoints)
        log_id = self._ids.get(namespace)
        self._conn.executemany(
            "INSERT INTO checkpoints (log_id, size, note, time) VALUES (?, ?, ?, ?)",
            ((log_id, c.size, c.note, c.time) for c in rows),
        )

    def add_state(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        self._conn.executemany(
            "INSERT INTO state (scope, key, value) VALUES (?, ?, ?)", self.checks.state(rows)
        )
