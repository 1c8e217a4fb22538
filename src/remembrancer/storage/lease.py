"""The sequencer lease in PostgreSQL: who may append, and its fencing epoch.

One row per lease in the table ``leases`` of the store's schema::

    leases (name text PRIMARY KEY, holder text, url text, epoch bigint,
            expires_at timestamptz)

* **Acquire** succeeds only when the row is missing or its ``expires_at`` has
  passed, and then bumps ``epoch``: every holder has an epoch no earlier
  holder had.
* **Renew** pushes ``expires_at`` on only while ``holder`` and ``epoch`` are
  still ours.
* **Fencing**: every append of a leader carries its epoch
  (:class:`~remembrancer.storage.base.Fence`); the append transaction locks
  the lease row ``FOR SHARE`` where ``epoch`` is ours, first thing, and
  refuses (``fenced``) if there is no such row.  A takeover is an ``UPDATE``
  of that row, so it waits for an append under way to commit, and an append
  that starts after it finds another epoch.  A leader that was paused
  (SIGSTOP, a long GC, a partition) past its lease therefore cannot write
  once another process holds the lease, whatever it still believes.

Expiry is judged by the database's clock only (``clock_timestamp()``), so
the processes' clocks need not agree; a holder counts its own lease as
valid until its monotonic clock at the renewal's *start* plus the lease
time, which ends before the database's expiry.

The table is not part of the store's data (not exported by a backup, not in
the schema version): it is created on first use, under an advisory lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from remembrancer.storage.postgres import Conn, PostgresStore

_CREATE: Final = """CREATE TABLE IF NOT EXISTS leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    url text NOT NULL,
    epoch bigint NOT NULL CHECK (epoch > 0),
    expires_at timestamptz NOT NULL
)"""
_ACQUIRE: Final = (
    "INSERT INTO leases (name, holder, url, epoch, expires_at)"
    " VALUES (%(name)s, %(holder)s, %(url)s, 1,"
    " clock_timestamp() + %(seconds)s * interval '1 second')"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, url = excluded.url,"
    " epoch = leases.epoch + 1, expires_at = excluded.expires_at"
    " WHERE leases.expires_at <= clock_timestamp()"
    " RETURNING epoch"
)
_RENEW: Final = (
    "UPDATE leases SET expires_at = clock_timestamp() + %(seconds)s * interval '1 second'"
    " WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s RETURNING epoch"
)
_RELEASE: Final = (
    "UPDATE leases SET expires_at = clock_timestamp()"
    " WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s"
)
_HOLDER: Final = (
    "SELECT holder, url, epoch, extract(epoch FROM expires_at - clock_timestamp())"
    " FROM leases WHERE name = %(name)s"
)


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """The lease row as the database has it now."""

    holder: str
    url: str
    epoch: int
    expires_in: float  # seconds, negative once expired


class PgLease:
    """One lease's statements, on a connection of its own (reconnected after a failure).

    Every method raises :class:`~remembrancer.core.errors.StorageError` when
    the database cannot be reached; the caller (the lease keeper) treats that
    as "renewal failed" and steps down once its lease time has passed.
    """

    def __init__(self, store: PostgresStore, name: str, holder: str, url: str,
                 seconds: float, statement_timeout: float) -> None:  # fmt: skip
        self._store = store
        self.name = name
        self.holder = holder
        self.url = url
        self.seconds = seconds
        self._statement_timeout_ms = max(1, int(statement_timeout * 1000))
        self._conn: Conn | None = None

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = self._store.dedicated_connection()
            # A renewal stuck behind a lock must fail before the lease runs out.
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (str(self._statement_timeout_ms),),
            )
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('remembrancer.leases'))")
                conn.execute(_CREATE)
            self._conn = conn
        return self._conn

    def _run(self, sql: str, what: str, **params: Any) -> list[tuple[Any, ...]]:
        from remembrancer.core.errors import StorageError

        pg = self._store._pg
        try:
            conn = self._connection()
            cur = conn.execute(sql, {"name": self.name, "holder": self.holder, **params})
            return cur.fetchall() if cur.description is not None else []
        except pg.Error as e:
            self.close()
            raise StorageError(
                f"PostgreSQL failed to {what} the sequencer lease: {str(e).strip()[:200]}",
                code="unavailable",
                details={"sqlstate": getattr(e, "sqlstate", None)},
            ) from e

    def acquire(self) -> int | None:
        """The new epoch if the lease was free (missing or expired) and is now ours."""
        rows = self._run(_ACQUIRE, "acquire", url=self.url, seconds=self.seconds)
        return int(rows[0][0]) if rows else None

    def renew(self, epoch: int) -> bool:
        """Whether the lease is still ours at ``epoch`` (and now runs for ``seconds`` more)."""
        return bool(self._run(_RENEW, "renew", epoch=epoch, seconds=self.seconds))

    def release(self, epoch: int) -> None:
        """End our lease now (a graceful stop): the next process need not wait it out."""
        self._run(_RELEASE, "release", epoch=epoch)

    def current(self) -> LeaseHolder | None:
        rows = self._run(_HOLDER, "read")
        if not rows:
            return None
        holder, url, epoch, expires_in = rows[0]
        return LeaseHolder(holder, url, int(epoch), float(expires_in))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
