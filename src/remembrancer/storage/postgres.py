"""The PostgreSQL backend, for large deployments (psycopg 3, synchronous API).

psycopg is imported only when a ``PostgresStore`` is created, so a node
without the ``postgres`` extra still starts; asking for this backend without
it raises :class:`~remembrancer.core.errors.StorageError` (code
``backend_unavailable``) naming the extra to install.

Concurrency: a small pool of autocommit connections of our own (no extra
dependency).  ``append`` is one transaction that locks the log's head row in
``logs`` with ``SELECT ... FOR UPDATE``, so appends to one log serialise
across connections and processes while appends to different logs run side
by side; it checks ``start`` against the locked size (reading the partial
entry bundle and the stored tiles in the same round trip), streams the
records in with binary ``COPY`` and pipelines the remaining statements.

Entries are stored 256 to a row, as tlog-tiles entry bundles: an append
inserts one row per bundle it starts and rewrites the partial bundle it
starts in, so a raw entry costs its bytes plus 2, and no index entry.
Entries with keys (records) also take one row each in ``records``, which
every lookup queries; :meth:`PostgresStore.find_keys` passes its keys as
arrays (``= ANY`` and ``unnest``), one statement per kind.  State
compare-and-swap is one statement (``INSERT ... ON CONFLICT`` or a guarded
``UPDATE``), atomic under READ COMMITTED.

Durability: ``append`` returns after ``COMMIT``; a connection whose
``synchronous_commit`` is ``off`` is switched back to ``on``.

Isolation: ``schema=`` (or ``?schema=`` in the store URL) puts every table in
that PostgreSQL schema, created if missing; tests use a fresh one each.

Export: :meth:`PostgresStore.snapshot` is one ``REPEATABLE READ, READ ONLY``
transaction on a connection of its own, whose rows stream through
server-side cursors.  Import: :meth:`PostgresStore.load` is one transaction
that first locks every table (``SHARE ROW EXCLUSIVE``: readers go on,
writers wait) and checks that they are empty, then streams the rows in with
binary ``COPY``.

Tables (schema version 2; version 1 had all but the last four, and kept
their rows in ``state``: opening it moves them, see
:mod:`remembrancer.storage.legacy`; the last four are read and written by
:mod:`remembrancer.storage.postgres_typed`)::

    meta        (key text PRIMARY KEY, value bigint)          -- 'schema_version'
    logs        (id bigint identity PRIMARY KEY, namespace text UNIQUE,
                 size bigint, root_hash bytea, checkpoint bytea)
    bundles     (log_id bigint, idx bigint, data bytea, PRIMARY KEY (log_id, idx))
                 -- data: the entry bundle of entries [idx*256, idx*256 + n),
                    lz4-compressed where the server has lz4, else uncompressed
    records     (log_id bigint, idx bigint, event_hash bytea, event_id text,
                 actor text, nonce text, PRIMARY KEY (log_id, idx))
                 + INDEX (log_id, event_hash), UNIQUE (log_id, event_id),
                   UNIQUE (actor, nonce)               -- partial: non-NULL keys
                 -- only entries with keys; idx is the entry's index in its log
    tiles       (log_id bigint, level int, idx bigint, hashes bytea,
                 PRIMARY KEY (log_id, level, idx))      -- hashes stored uncompressed
    checkpoints (log_id bigint, size bigint, note bytea, time bigint,
                 PRIMARY KEY (log_id, size))
    state       (scope text, key text, value bytea, PRIMARY KEY (scope, key))
    anchor_receipts, witness_cosigned, federation_receipts, federation_evidence

Several processes over one schema (``ha.enabled``, node/ha.py): an append
whose batch carries a :class:`~remembrancer.storage.base.Fence` first locks
its lease row in ``leases`` ``FOR SHARE`` where the epoch is still the
fence's, and refuses (``ConflictError``, ``fenced``) otherwise; the table
and the lease statements are in :mod:`remembrancer.storage.lease`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from remembrancer.core.errors import ConflictError, RemembrancerError, StorageError
from remembrancer.storage import postgres_typed as typed
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

if TYPE_CHECKING:
    import psycopg

    Conn: TypeAlias = psycopg.Connection[tuple[Any, ...]]

SCHEMA_VERSION: Final = 2
EXTRA: Final = "postgres"  # pip install 'remembrancer[postgres]'

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# _MIGRATIONS[v] takes a database from schema version v to v + 1.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE logs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            namespace text NOT NULL UNIQUE,
            size bigint NOT NULL CHECK (size >= 0),
            root_hash bytea NOT NULL,
            checkpoint bytea NOT NULL
        )""",
        """CREATE TABLE bundles (
            log_id bigint NOT NULL,
            idx bigint NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (log_id, idx)
        )""",
        """CREATE TABLE records (
            log_id bigint NOT NULL,
            idx bigint NOT NULL,
            event_hash bytea,
            event_id text,
            actor text,
            nonce text,
            PRIMARY KEY (log_id, idx)
        )""",
        "CREATE INDEX records_event_hash ON records (log_id, event_hash)"
        " WHERE event_hash IS NOT NULL",
        "CREATE UNIQUE INDEX records_event_id ON records (log_id, event_id)"
        " WHERE event_id IS NOT NULL",
        "CREATE UNIQUE INDEX records_nonce ON records (actor, nonce)"
        " WHERE actor IS NOT NULL AND nonce IS NOT NULL",
        """CREATE TABLE tiles (
            log_id bigint NOT NULL,
            level integer NOT NULL,
            idx bigint NOT NULL,
            hashes bytea NOT NULL,
            PRIMARY KEY (log_id, level, idx)
        )""",
        # Hashes do not compress: do not try.
        "ALTER TABLE tiles ALTER COLUMN hashes SET STORAGE EXTERNAL",
        """CREATE TABLE checkpoints (
            log_id bigint NOT NULL,
            size bigint NOT NULL,
            note bytea NOT NULL,
            time bigint NOT NULL,
            PRIMARY KEY (log_id, size)
        )""",
        """CREATE TABLE state (
            scope text NOT NULL,
            key text NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (scope, key)
        )""",
    ),
    typed.MIGRATION_V2,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_COPY_RECORDS: Final = (
    "COPY records (log_id, idx, event_hash, event_id, actor, nonce) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES: Final = ["int8", "int8", "bytea", "text", "text", "text"]
_INSERT_BUNDLE: Final = "INSERT INTO bundles (log_id, idx, data) VALUES (%s, %s, %s)"
_READ_BUNDLE: Final = (
    "SELECT data FROM bundles"
    " WHERE log_id = (SELECT id FROM logs WHERE namespace = %s) AND idx = %s"
)
_FIND_EVENT_IDS: Final = (
    "SELECT event_id, idx, event_hash FROM records"
    " WHERE log_id = (SELECT id FROM logs WHERE namespace = %s)"
    " AND event_id = ANY(%s::text[])"
)
_FIND_NONCES: Final = (
    "SELECT r.actor, r.nonce, l.namespace, r.idx, r.event_hash"
    " FROM unnest(%s::text[], %s::text[]) AS k (actor, nonce)"
    " JOIN records r ON r.actor = k.actor AND r.nonce = k.nonce"
    " JOIN logs l ON l.id = r.log_id"
)
_UPSERT_TILE: Final = (
    "INSERT INTO tiles (log_id, level, idx, hashes) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (log_id, level, idx) DO UPDATE SET hashes = excluded.hashes"
)
_UPSERT_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (log_id, size, note, time) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (log_id, size) DO UPDATE SET note = excluded.note, time = excluded.time"
)
_FENCE: Final = "SELECT 1 FROM leases WHERE name = %s AND epoch = %s FOR SHARE"
_TABLES: Final = (
    "logs",
    "bundles",
    "records",
    "tiles",
    "checkpoints",
    "state",
    *typed.TYPED_TABLES,
)
_READ_TILES: Final = (
    "SELECT level, idx, hashes FROM tiles"
    " WHERE log_id = (SELECT id FROM logs WHERE namespace = %s)"
    " AND (level, idx) IN (SELECT * FROM unnest(%s::int4[], %s::int8[]))"
)


def _import_psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as e:
        raise StorageError(
            "the PostgreSQL backend needs psycopg 3: install the "
            f"'{EXTRA}' extra (pip install 'remembrancer[{EXTRA}]')",
            code="backend_unavailable",
            details={"extra": EXTRA, "missing": "psycopg"},
        ) from e
    return psycopg


class _Pool:
    """At most ``size`` autocommit connections, made on demand and reused."""

    def __init__(self, connect: Any, size: int, timeout: float) -> None:
        self._connect = connect
        self._size = size
        self._timeout = timeout
        self._idle: list[Conn] = []
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()

    def take(self) -> Conn:
        deadline = time.monotonic() + self._timeout
        with self._cond:
            while True:
                if self._closed:
                    raise StorageError("the PostgreSQL store is closed", code="store_closed")
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.closed and not conn.broken:
                        return conn
                    self._count -= 1
                if self._count < self._size:
                    self._count += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StorageError(
                        f"no PostgreSQL connection free after {self._timeout:g} s",
                        code="pool_exhausted",
                        details={"pool_size": self._size},
                    )
                self._cond.wait(remaining)
        try:
            new: Conn = self._connect()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        return new

    def give(self, conn: Conn) -> None:
        from psycopg.pq import TransactionStatus

        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )
        with self._cond:
            if reusable and not self._closed:
                self._idle.append(conn)
                self._cond.notify()
                return
            self._count -= 1
            self._cond.notify()
        conn.close()

    def drop_idle(self) -> None:
        """Close the idle connections (new ones get the store's current session settings)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()


class PostgresStore(typed.PgTypedState):
    """A :class:`~remembrancer.storage.base.Store` in a PostgreSQL database."""

    backend = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int = 8,
        timeout: float = 30.0,
    ) -> None:
        self._pg = _import_psycopg()
        if schema is not None and not SCHEMA_NAME.match(schema):
            raise StorageError(
                f"invalid PostgreSQL schema name {schema!r} (lowercase letters, digits, _)",
                code="open_failed",
                details={"schema": schema},
            )
        if pool_size < 1:
            raise StorageError("the connection pool needs at least one connection")
        self.schema = schema
        self._dsn = dsn
        self._timeout = timeout
        self._closed = False
        self._log_ids: dict[str, int] = {}  # committed rows only: ids never change
        self._idle_tx_ms: int | None = None
        self._pool = _Pool(self._connect, pool_size, timeout)
        try:
            self.schema_version = self._migrate()
        except BaseException:
            self._pool.close()
            raise

    # --- connections ---------------------------------------------------------

    def _connect(self) -> Conn:
        pg = self._pg
        params: dict[str, Any] = pg.conninfo.conninfo_to_dict(self._dsn)
        params.setdefault("connect_timeout", max(1, int(self._timeout)))
        params.setdefault("application_name", "remembrancer")
        try:
            conn: Conn = pg.connect(autocommit=True, **params)
        except pg.Error as e:
            raise StorageError(
                f"cannot connect to PostgreSQL: {_first_line(e)}",
                code="unavailable",
                details={
                    "host": str(params.get("host", "")),
                    "dbname": str(params.get("dbname", "")),
                },
            ) from e
        try:
            # A durable commit is our promise: undo a session default of "off".
            conn.execute(
                "SELECT set_config('synchronous_commit', 'on', false)"
                " WHERE current_setting('synchronous_commit') = 'off'"
            )
            if self.schema is not None:
                conn.execute("SELECT set_config('search_path', %s, false)", (f'"{self.schema}"',))
            if self._idle_tx_ms is not None:
                conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                    (str(self._idle_tx_ms),),
                )
        except pg.Error as e:
            conn.close()
            raise StorageError(
                f"cannot set up a PostgreSQL session: {_first_line(e)}", code="unavailable"
            ) from e
        return conn

    def limit_idle_transactions(self, seconds: float) -> None:
        """Have the server end any session of ours that sits idle inside a
        transaction for ``seconds`` (a process paused mid-append): its locks,
        the lease row's among them, must not outlive its lease."""
        self._idle_tx_ms = max(1, int(seconds * 1000))
        self._pool.drop_idle()

    def dedicated_connection(self) -> Conn:
        """A connection of its own, outside the pool (the lease keeper's: its
        renewals must not queue behind a busy pool).  The caller closes it."""
        return self._connect()

    @contextmanager
    def _conn(self, what: str) -> Iterator[Conn]:
        """A pooled connection; psycopg failures become StorageError."""
        pg = self._pg
        if self._closed:
            raise StorageError("the PostgreSQL store is closed", code="store_closed")
        conn = self._pool.take()
        try:
            yield conn
        except pg.OperationalError as e:
            raise StorageError(
                f"PostgreSQL failed to {what}: {_first_line(e)}",
                code="unavailable",
                details={"sqlstate": e.sqlstate},
            ) from e
        except pg.Error as e:
            if e.sqlstate == "53100":  # disk_full
                raise StorageError(
                    f"the disk holding the PostgreSQL database is full: cannot {what}",
                    code="storage_full",
                    details={"sqlstate": e.sqlstate},
                ) from e
            raise StorageError(
                f"PostgreSQL failed to {what}: {_first_line(e)}",
                details={"sqlstate": e.sqlstate},
            ) from e
        finally:
            self._pool.give(conn)

    # --- schema ------------------------------------------------------------------

    def _migrate(self) -> int:
        from psycopg import sql

        where = f"schema {self.schema}" if self.schema else "the default schema"
        with self._conn("migrate the schema") as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"remembrancer.migrate.{self.schema or ''}",),
            )
            if self.schema is not None:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            row = conn.execute(
                "SELECT current_schema(), to_regclass('meta') IS NOT NULL,"
                " (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema())"
            ).fetchone()
            assert row is not None
            current, has_meta, tables = row
            if current is None:
                raise StorageError(
                    "PostgreSQL has no schema to create tables in (check search_path)",
                    code="open_failed",
                )
            if not has_meta:
                if tables:
                    raise StorageError(
                        f"{where} holds tables but is not a Remembrancer database",
                        code="schema_unknown",
                        details={"schema": current},
                    )
                conn.execute("CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL)")
                found = 0
            else:
                version = conn.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
                if version is None:
                    raise StorageError(f"{where} has no schema version", code="schema_unknown")
                found = int(version[0])
            if found > SCHEMA_VERSION:
                raise StorageError(
                    f"{where} was written by a newer Remembrancer (schema version {found},"
                    f" this one knows up to {SCHEMA_VERSION}); upgrade Remembrancer",
                    code="schema_too_new",
                    details={"schema": current, "found": found, "supported": SCHEMA_VERSION},
                )
            for v in range(found, SCHEMA_VERSION):
                for statement in _MIGRATIONS[v]:
                    conn.execute(statement)
                if v == 0:
                    conn.execute(_bundle_compression(conn))
                if v == 1:
                    typed.move_legacy(conn)
            if found < SCHEMA_VERSION:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (SCHEMA_VERSION,),
                )
        return SCHEMA_VERSION

    # --- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._pool.close()

    def stats(self) -> StoreStats:
        with self._conn("read statistics") as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM logs), (SELECT coalesce(sum(size), 0) FROM logs),"
                " current_schema(), current_setting('synchronous_commit'),"
                " current_setting('fsync'), pg_total_relation_size('bundles'),"
                " pg_total_relation_size('records')"
            ).fetchone()
        assert row is not None
        return StoreStats(
            backend=self.backend,
            schema_version=self.schema_version,
            extra={
                "logs": int(row[0]),
                "entries": int(row[1]),
                "schema": row[2],
                "synchronous_commit": row[3],
                "fsync": row[4],
                "bundles_bytes": int(row[5]),
                "records_bytes": int(row[6]),
            },
        )

    # --- logs ------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        with self._conn("list namespaces") as conn:
            rows = conn.execute("SELECT namespace FROM logs ORDER BY namespace").fetchall()
        return [r[0] for r in rows]

    def log_state(self, namespace: str) -> LogState | None:
        with self._conn("read a log state") as conn:
            row = conn.execute(
                "SELECT size, root_hash, checkpoint FROM logs WHERE namespace = %s",
                (namespace,),
                binary=True,
            ).fetchone()
        if row is None:
            return None
        return LogState(namespace, int(row[0]), bytes(row[1]), bytes(row[2]))

    def append(self, batch: AppendBatch) -> None:
        validate_batch(batch, fencing=True)
        pg = self._pg
        with self._conn("append a batch") as conn:
            try:
                self._log_ids[batch.namespace] = self._append(conn, batch)
            except pg.errors.UniqueViolation as e:
                # The transaction is rolled back: name the culprit, then refuse.
                raise self._reuse_error(conn, batch, e) from e

    def _append(self, conn: Conn, batch: AppendBatch) -> int:
        ns = batch.namespace
        known_id = self._log_ids.get(ns)
        levels = [t[0] for t in batch.tiles]
        indexes = [t[1] for t in batch.tiles]
        with conn.transaction():
            with conn.pipeline():
                # Fencing first: the lease row, locked FOR SHARE until COMMIT, so a
                # takeover (an UPDATE of that row) waits for this append and this
                # append refuses to run after a takeover (see storage/lease.py).
                fenced = (
                    conn.execute(_FENCE, (batch.fence.name, batch.fence.epoch))
                    if batch.fence is not None
                    else None
                )
                if known_id is None:
                    conn.execute(
                        "INSERT INTO logs (namespace, size, root_hash, checkpoint)"
                        " VALUES (%s, 0, '', '') ON CONFLICT (namespace) DO NOTHING",
                        (ns,),
                    )
                    head = conn.execute(
                        "SELECT id, size FROM logs WHERE namespace = %s FOR UPDATE", (ns,)
                    )
                else:
                    head = conn.execute(
                        "SELECT id, size FROM logs WHERE id = %s FOR UPDATE", (known_id,)
                    )
                stored = (
                    conn.execute(_READ_TILES, (ns, levels, indexes), binary=True)
                    if batch.tiles
                    else None
                )
                # After the head row is locked (statements run in order), so
                # this sees the bundle as the last append to the log left it.
                partial = (
                    conn.execute(_READ_BUNDLE, (ns, batch.start // BUNDLE_WIDTH), binary=True)
                    if batch.entries
                    else None
                )
            if fenced is not None and fenced.fetchone() is None:
                assert batch.fence is not None
                raise ConflictError(
                    f"the sequencer lease {batch.fence.name} has moved past epoch"
                    f" {batch.fence.epoch}: this process no longer sequences {ns}",
                    code="fenced",
                    details={"namespace": ns, "lease": batch.fence.name,
                             "epoch": batch.fence.epoch},
                )  # fmt: skip
            row = head.fetchone()
            assert row is not None
            log_id, size = int(row[0]), int(row[1])
            if size != batch.start:
                raise ConflictError(
                    f"the log {ns} has size {size}, not {batch.start}",
                    code="log_size_moved",
                    details={"namespace": ns, "size": size, "start": batch.start},
                )
            old_tiles = {} if stored is None else {(r[0], r[1]): r[2] for r in stored}
            tile_writes = []
            for level, index, hashes in batch.tiles:
                merged = merge_tile(ns, level, index, old_tiles.get((level, index)), hashes)
                if merged is not None:
                    tile_writes.append((log_id, level, index, merged))
            rewrite: tuple[int, bytes] | None = None
            new_bundles: list[tuple[int, int, bytes]] = []
            if partial is not None:
                found = partial.fetchone()
                rewrite, new = plan_bundles(batch, None if found is None else bytes(found[0]))
                new_bundles = [(log_id, index, data) for index, data in new]
            cur = conn.cursor()
            keyed = record_rows(batch, log_id)
            if keyed:
                with cur.copy(_COPY_RECORDS) as copy:
                    copy.set_types(_COPY_TYPES)
                    for record in keyed:
                        copy.write_row(record)
            state = batch.state
            with conn.pipeline():
                if rewrite is not None:
                    conn.execute(
                        "UPDATE bundles SET data = %s WHERE log_id = %s AND idx = %s",
                        (rewrite[1], log_id, rewrite[0]),
                    )
                if new_bundles:
                    cur.executemany(_INSERT_BUNDLE, new_bundles)
                if tile_writes:
                    cur.executemany(_UPSERT_TILE, tile_writes)
                conn.execute(
                    "UPDATE logs SET size = %s, root_hash = %s, checkpoint = %s WHERE id = %s",
                    (state.size, state.root_hash, state.checkpoint, log_id),
                )
                conn.execute(
                    _UPSERT_CHECKPOINT,
                    (log_id, state.size, state.checkpoint, batch.checkpoint_time),
                )
        return log_id

    def _reuse_error(self, conn: Conn, batch: AppendBatch, error: Exception) -> RemembrancerError:
        """The ConflictError for a uniqueness failure, naming the first culprit."""
        constraint = getattr(getattr(error, "diag", None), "constraint_name", None)
        ns = batch.namespace
        if constraint in ("records_pkey", "bundles_pkey"):
            return StorageError(
                f"the log {ns} holds entries beyond its recorded size",
                code="log_inconsistent",
                details={"namespace": ns, "start": batch.start},
            )

        conflict = find_reuse(
            batch,
            lambda ids: _lookup_event_ids(conn, ns, ids),
            lambda pairs: _lookup_nonces(conn, pairs),
        )
        if conflict is not None:
            return conflict
        return ConflictError(
            f"the batch reuses a unique key in {ns}",
            code="nonce_reused" if constraint == "records_nonce" else "event_id_reused",
            details={"namespace": ns},
        )

    def read_tiles(
        self, namespace: str, tiles: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        if not tiles:
            return {}
        with self._conn("read tiles") as conn:
            rows = conn.execute(
                _READ_TILES,
                (namespace, [t[0] for t in tiles], [t[1] for t in tiles]),
                binary=True,
            ).fetchall()
        return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}

    def read_entries(self, namespace: str, start: int, end: int) -> list[bytes]:
        start = max(start, 0)
        if end <= start:
            return []
        with self._conn("read entries") as conn:
            rows = conn.execute(
                "SELECT idx, data FROM bundles"
                " WHERE log_id = (SELECT id FROM logs WHERE namespace = %s)"
                " AND idx >= %s AND idx <= %s ORDER BY idx",
                (namespace, start // BUNDLE_WIDTH, (end - 1) // BUNDLE_WIDTH),
                binary=True,
            ).fetchall()
        return slice_bundles(namespace, start, end, ((int(r[0]), bytes(r[1])) for r in rows))

    def read_bundle(self, namespace: str, index: int) -> bytes | None:
        if index < 0:
            return None
        with self._conn("read an entry bundle") as conn:
            row = conn.execute(_READ_BUNDLE, (namespace, index), binary=True).fetchone()
        return None if row is None else bytes(row[0])

    def find_event_hash(self, namespace: str, event_hash: bytes) -> FoundEntry | None:
        with self._conn("find an event hash") as conn:
            row = conn.execute(
                "SELECT idx FROM records WHERE log_id = (SELECT id FROM logs WHERE namespace = %s)"
                " AND event_hash = %s ORDER BY idx LIMIT 1",
                (namespace, event_hash),
            ).fetchone()
        return None if row is None else FoundEntry(namespace, int(row[0]), bytes(event_hash))

    def find_event_id(self, namespace: str, event_id: str) -> FoundEntry | None:
        with self._conn("find an event id") as conn:
            row = conn.execute(
                "SELECT idx, event_hash FROM records"
                " WHERE log_id = (SELECT id FROM logs WHERE namespace = %s) AND event_id = %s",
                (namespace, event_id),
                binary=True,
            ).fetchone()
        if row is None:
            return None
        return FoundEntry(namespace, int(row[0]), None if row[1] is None else bytes(row[1]))

    def find_nonce(self, actor: str, nonce: str) -> FoundEntry | None:
        with self._conn("find a nonce") as conn:
            row = conn.execute(
                "SELECT l.namespace, r.idx, r.event_hash FROM records r JOIN logs l ON l.id = r.log_id"
                " WHERE r.actor = %s AND r.nonce = %s",
                (actor, nonce),
                binary=True,
            ).fetchone()
        if row is None:
            return None
        return FoundEntry(row[0], int(row[1]), None if row[2] is None else bytes(row[2]))

    def find_keys(
        self,
        namespace: str,
        event_ids: Sequence[str],
        nonces: Sequence[tuple[str, str]],
    ) -> tuple[dict[str, FoundEntry], dict[tuple[str, str], FoundEntry]]:
        if not event_ids or not nonces:  # one statement: one snapshot
            with self._conn("find keys") as conn:
                return (
                    _lookup_event_ids(conn, namespace, event_ids),
                    _lookup_nonces(conn, nonces),
                )
        with self._conn("find keys") as conn, conn.transaction():
            # Two statements: REPEATABLE READ makes them share one snapshot.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            by_id = _lookup_event_ids(conn, namespace, event_ids)
            by_nonce = _lookup_nonces(conn, nonces)
        return by_id, by_nonce

    def checkpoint_at(self, namespace: str, size: int) -> StoredCheckpoint | None:
        with self._conn("read a checkpoint") as conn:
            row = conn.execute(
                "SELECT note, time FROM checkpoints"
                " WHERE log_id = (SELECT id FROM logs WHERE namespace = %s) AND size = %s",
                (namespace, size),
                binary=True,
            ).fetchone()
        return (
            None if row is None else StoredCheckpoint(namespace, size, bytes(row[0]), int(row[1]))
        )

    def checkpoints(
        self, namespace: str, *, after_size: int = -1, limit: int = 100
    ) -> list[StoredCheckpoint]:
        if limit <= 0:
            return []
        with self._conn("list checkpoints") as conn:
            rows = conn.execute(
                "SELECT size, note, time FROM checkpoints"
                " WHERE log_id = (SELECT id FROM logs WHERE namespace = %s) AND size > %s"
                " ORDER BY size LIMIT %s",
                (namespace, after_size, limit),
                binary=True,
            ).fetchall()
        return [StoredCheckpoint(namespace, int(r[0]), bytes(r[1]), int(r[2])) for r in rows]

    # --- small named state ----------------------------------------------------------

    def get_state(self, scope: str, key: str) -> bytes | None:
        with self._conn("read state") as conn:
            row = conn.execute(
                "SELECT value FROM state WHERE scope = %s AND key = %s", (scope, key), binary=True
            ).fetchone()
        return None if row is None else bytes(row[0])

    def put_state(self, scope: str, key: str, value: bytes, *, expect: Expect = ANY) -> bool:
        with self._conn("write state") as conn:
            if expect is ANY:
                cur = conn.execute(
                    "INSERT INTO state (scope, key, value) VALUES (%s, %s, %s)"
                    " ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
                    (scope, key, value),
                )
            elif expect is None:
                cur = conn.execute(
                    "INSERT INTO state (scope, key, value) VALUES (%s, %s, %s)"
                    " ON CONFLICT (scope, key) DO NOTHING",
                    (scope, key, value),
                )
            else:
                # Under READ COMMITTED a racing UPDATE re-checks the WHERE on the new row.
                cur = conn.execute(
                    "UPDATE state SET value = %s WHERE scope = %s AND key = %s AND value = %s",
                    (value, scope, key, expect),
                )
            return cur.rowcount == 1

    def delete_state(
        self, scope: str, key: str, *, expect: bytes | Literal[_AnyValue.ANY] = ANY
    ) -> bool:
        with self._conn("delete state") as conn:
            if expect is ANY:
                cur = conn.execute("DELETE FROM state WHERE scope = %s AND key = %s", (scope, key))
            else:
                cur = conn.execute(
                    "DELETE FROM state WHERE scope = %s AND key = %s AND value = %s",
                    (scope, key, expect),
                )
            return cur.rowcount == 1

    def list_state(self, scope: str) -> dict[str, bytes]:
        with self._conn("list state") as conn:
            rows = conn.execute(
                "SELECT key, value FROM state WHERE scope = %s ORDER BY key", (scope,), binary=True
            ).fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def list_state_page(
        self, scope: str, *, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> list[tuple[str, bytes]]:
        check_page(limit)
        # The "C" collation orders by code point whatever the database's collation is.
        sql = ('SELECT key, value FROM state WHERE scope = %s AND key COLLATE "C" >= %s'
               " AND left(key, %s) = %s")  # fmt: skip
        args: list[Any] = [scope, prefix, len(prefix), prefix]
        if after is not None:
            sql += ' AND key COLLATE "C" > %s'
            args.append(after)
        with self._conn("list state") as conn:
            rows = conn.execute(sql + ' ORDER BY key COLLATE "C" LIMIT %s', (*args, limit),
                                binary=True).fetchall()  # fmt: skip
        return [(r[0], bytes(r[1])) for r in rows]

    # --- export and import -----------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[_PgSnapshot]:
        with self._conn("read a snapshot") as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snap = _PgSnapshot(conn)
            snap.ids = {ns: int(i) for ns, i in conn.execute("SELECT namespace, id FROM logs")}
            yield snap

    @contextmanager
    def load(self) -> Iterator[_PgLoader]:
        pg = self._pg
        where = f"PostgreSQL schema {self.schema}" if self.schema else "the PostgreSQL database"
        with self._conn("load rows") as conn:
            try:
                with conn.transaction():
                    conn.execute(f"LOCK TABLE {', '.join(_TABLES)} IN SHARE ROW EXCLUSIVE MODE")
                    exists = " OR ".join(f"EXISTS (SELECT 1 FROM {t})" for t in _TABLES)
                    row = conn.execute(f"SELECT {exists}").fetchone()
                    if row is None or row[0]:
                        raise not_empty(where)
                    loader = _PgLoader(conn)
                    yield loader
                    loader.checks.finish()
            except pg.errors.IntegrityError as e:
                raise load_invalid(
                    f"the rows break a uniqueness rule of the store: {_first_line(e)}"
                ) from e


def _lookup_event_ids(
    conn: Conn, namespace: str, event_ids: Sequence[str]
) -> dict[str, FoundEntry]:
    """The records of ``namespace`` with these event ids (one statement)."""
    if not event_ids:
        return {}
    rows = conn.execute(
        _FIND_EVENT_IDS, (namespace, list(dict.fromkeys(event_ids))), binary=True
    ).fetchall()
    return {
        r[0]: FoundEntry(namespace, int(r[1]), None if r[2] is None else bytes(r[2])) for r in rows
    }


def _lookup_nonces(
    conn: Conn, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], FoundEntry]:
    """The records, in any namespace, that used these ``(actor, nonce)`` pairs (one statement)."""
    if not pairs:
        return {}
    keys = list(dict.fromkeys(pairs))
    rows = conn.execute(
        _FIND_NONCES, ([k[0] for k in keys], [k[1] for k in keys]), binary=True
    ).fetchall()
    return {
        (r[0], r[1]): FoundEntry(r[2], int(r[3]), None if r[4] is None else bytes(r[4]))
        for r in rows
    }


def _bundle_compression(conn: Conn) -> str:
    """How to store entry bundles: lz4-compressed if the server can, else uncompressed.

    Bundles are rewritten wider by every append that reaches them and are
    served far more often than written.  Measured with bench/storage.py, lz4
    (PostgreSQL 14+ built with it) halves their size and appends ~2x faster
    than the default pglz; without lz4, not compressing (``EXTERNAL``) is
    ~1.6x faster than pglz for ~2x the space.
    """
    row = conn.execute(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).fetchone()
    if row is not None and row[0]:
        return "ALTER TABLE bundles ALTER COLUMN data SET COMPRESSION lz4"
    return "ALTER TABLE bundles ALTER COLUMN data SET STORAGE EXTERNAL"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _PgSnapshot(typed.PgTypedSnapshot):
    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._cursors = 0
        self.ids: dict[str, int] = {}

    def _rows(self, sql: str, params: tuple[object, ...], batch: int) -> Iterator[tuple[Any, ...]]:
        """Stream a query through a server-side cursor, ``batch`` rows per fetch."""
        self._cursors += 1
        with self._conn.cursor(name=f"remembrancer_export_{self._cursors}", binary=True) as cur:
            cur.itersize = batch
            cur.execute(sql, params)
            yield from cur

    def logs(self) -> list[LogState]:
        rows = self._conn.execute(
            "SELECT namespace, size, root_hash, checkpoint FROM logs ORDER BY namespace",
            binary=True,
        ).fetchall()
        return [LogState(r[0], int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    def bundles(self, namespace: str) -> Iterator[tuple[int, bytes]]:
        for idx, data in self._rows(
            "SELECT idx, data FROM bundles WHERE log_id = %s ORDER BY idx",
            (self.ids.get(namespace, -1),),
            16,  # a bundle is up to 16 MiB; usually tens of KiB
        ):
            yield int(idx), bytes(data)

    def records(self, namespace: str) -> Iterator[RecordRow]:
        for idx, event_hash, event_id, actor, nonce in self._rows(
            "SELECT idx, event_hash, event_id, actor, nonce FROM records WHERE log_id = %s"
            " ORDER BY idx",
            (self.ids.get(namespace, -1),),
            2000,
        ):
            yield RecordRow(
                int(idx), None if event_hash is None else bytes(event_hash), event_id, actor, nonce
            )

    def tiles(self, namespace: str) -> Iterator[tuple[int, int, bytes]]:
        for level, idx, hashes in self._rows(
            "SELECT level, idx, hashes FROM tiles WHERE log_id = %s ORDER BY level, idx",
            (self.ids.get(namespace, -1),),
            200,
        ):
            yield int(level), int(idx), bytes(hashes)

    def checkpoints(self, namespace: str) -> Iterator[StoredCheckpoint]:
        for size, note, time_ in self._rows(
            "SELECT size, note, time FROM checkpoints WHERE log_id = %s ORDER BY size",
            (self.ids.get(namespace, -1),),
            1000,
        ):
            yield StoredCheckpoint(namespace, int(size), bytes(note), int(time_))

    def state(self) -> Iterator[tuple[str, str, bytes]]:
        for scope, key, value in self._rows(
            "SELECT scope, key, value FROM state ORDER BY scope, key", (), 1000
        ):
            yield scope, key, bytes(value)


class _PgLoader(typed.PgTypedLoader):
    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._ids: dict[str, int] = {}
        self.checks = LoadChecks()

    def _copy(
        self, table: str, columns: str, types: list[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        with (
            self._conn.cursor() as cur,
            cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def add_log(self, state: LogState) -> None:
        self.checks.log(state)
        row = self._conn.execute(
            "INSERT INTO logs (namespace, size, root_hash, checkpoint) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (state.namespace, state.size, state.root_hash, state.checkpoint),
        ).fetchone()
        assert row is not None
        self._ids[state.namespace] = int(row[0])

    def add_bundles(self, namespace: str, bundles: Iterable[tuple[int, bytes]]) -> None:
        rows = self.checks.bundles(namespace, bundles)
        log_id = self._ids.get(namespace)
        self._copy(
            "bundles",
            "log_id, idx, data",
            ["int8", "int8", "bytea"],
            ((log_id, i, d) for i, d in rows),
        )

    def add_records(self, namespace: str, rows: Iterable[RecordRow]) -> None:
        checked = self.checks.records(namespace, rows)
        log_id = self._ids.get(namespace)
        self._copy(
            "records",
            "log_id, idx, event_hash, event_id, actor, nonce",
            _COPY_TYPES,
            ((log_id, r.index, r.event_hash, r.event_id, r.actor, r.nonce) for r in checked),
        )

    def add_tiles(self, namespace: str, tiles: Iterable[tuple[int, int, bytes]]) -> None:
        rows = self.checks.tiles(namespace, tiles)
        log_id = self._ids.get(namespace)
        self._copy(
            "tiles",
            "log_id, level, idx, hashes",
            ["int8", "int4", "int8", "bytea"],
            ((log_id, lv, ix, h) for lv, ix, h in rows),
        )

    def add_checkpoints(self, namespace: str, checkpoints: Iterable[StoredCheckpoint]) -> None:
        rows = self.checks.checkpoints(namespace, checkpoints)
        log_id = self._ids.get(namespace)
        self._copy(
            "checkpoints",
            "log_id, size, note, time",
            ["int8", "int8", "bytea", "int8"],
            ((log_id, c.size, c.note, c.time) for c in rows),
        )

    def add_state(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        self._copy("state", "scope, key, value", ["text", "text", "bytea"], self.checks.state(rows))
