"""The PostgreSQL backend's typed state: anchor receipts, witness state, federation state.

The tables of schema version 2 (see :mod:`remembrancer.storage.postgres` for
the layout and :mod:`remembrancer.storage.base` for the invariants), as
mixins of :class:`~remembrancer.storage.postgres.PostgresStore`, its snapshot
and its loader, and the migration step that moves schema 1's JSON state rows
into them (:func:`move_legacy`).  Compare-and-swaps are one guarded
statement (atomic under READ COMMITTED); :meth:`PgTypedState.keep_evidence`
is one transaction holding an advisory lock on its subject.

Tables::

    anchor_receipts (namespace text, size bigint, finished boolean, receipt bytea,
                 PRIMARY KEY (namespace, size))
                 + INDEX (namespace, size) WHERE NOT finished
    witness_cosigned (origin text PRIMARY KEY, size bigint, root_hash bytea,
                 note bytea, cosignature text, time bigint)
    federation_receipts (namespace text, receipt_id text, receipt bytea,
                 PRIMARY KEY (namespace, receipt_id))
    federation_evidence (ref text PRIMARY KEY, subject text, incident text, data bytea,
                 UNIQUE (subject, incident))
                 -- the text keys of the typed tables use the "C" collation:
                    pages go in code point order whatever the database's collation
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

from remembrancer.storage.base import (
    ANY,
    AnchorReceiptRow,
    CosignedRow,
    EvidenceRow,
    Expect,
    FederationReceiptRow,
    check_page,
    check_typed_rows,
)
from remembrancer.storage.legacy import LEGACY_SCOPES, split_legacy

if TYPE_CHECKING:
    from remembrancer.storage.postgres import Conn

__all__ = [
    "MIGRATION_V2",
    "TYPED_TABLES",
    "PgTypedLoader",
    "PgTypedSnapshot",
    "PgTypedState",
    "move_legacy",
]

# Schema version 1 -> 2: the typed tables (the store's migration then calls move_legacy).
MIGRATION_V2: Final[tuple[str, ...]] = (
    """CREATE TABLE anchor_receipts (
        namespace text COLLATE "C" NOT NULL,
        size bigint NOT NULL,
        finished boolean NOT NULL,
        receipt bytea NOT NULL,
        PRIMARY KEY (namespace, size)
    )""",
    "CREATE INDEX anchor_receipts_unfinished ON anchor_receipts (namespace, size)"
    " WHERE NOT finished",
    """CREATE TABLE witness_cosigned (
        origin text COLLATE "C" NOT NULL PRIMARY KEY,
        size bigint NOT NULL CHECK (size >= 0),
        root_hash bytea NOT NULL,
        note bytea NOT NULL,
        cosignature text NOT NULL,
        time bigint NOT NULL
    )""",
    """CREATE TABLE federation_receipts (
        namespace text COLLATE "C" NOT NULL,
        receipt_id text COLLATE "C" NOT NULL,
        receipt bytea NOT NULL,
        PRIMARY KEY (namespace, receipt_id)
    )""",
    """CREATE TABLE federation_evidence (
        ref text COLLATE "C" NOT NULL PRIMARY KEY,
        subject text NOT NULL,
        incident text NOT NULL,
        data bytea NOT NULL,
        UNIQUE (subject, incident)
    )""",
)
TYPED_TABLES: Final = ("anchor_receipts", "witness_cosigned", "federation_receipts",
                       "federation_evidence")  # fmt: skip
_ANCHOR_COLUMNS: Final = "namespace, size, finished, receipt"
_COSIGNED_COLUMNS: Final = "origin, size, root_hash, note, cosignature, time"
_RECEIPT_COLUMNS: Final = "namespace, receipt_id, receipt"
_INSERT_ANCHOR_RECEIPT: Final = (
    f"INSERT INTO anchor_receipts ({_ANCHOR_COLUMNS}) VALUES (%s, %s, %s, %s)"
)
_INSERT_COSIGNED: Final = (
    f"INSERT INTO witness_cosigned ({_COSIGNED_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
)
_INSERT_FEDERATION_RECEIPT: Final = (
    f"INSERT INTO federation_receipts ({_RECEIPT_COLUMNS}) VALUES (%s, %s, %s)"
)
_EVIDENCE_COLUMNS: Final = "ref, subject, incident, data"
_INSERT_EVIDENCE: Final = (
    f"INSERT INTO federation_evidence ({_EVIDENCE_COLUMNS}) VALUES (%s, %s, %s, %s)"
)


class PgTypedState:
    """The typed-state methods of :class:`~remembrancer.storage.postgres.PostgresStore`."""

    if TYPE_CHECKING:

        def _conn(self, what: str) -> AbstractContextManager[Conn]: ...

    def anchor_receipt(self, namespace: str, size: int) -> AnchorReceiptRow | None:
        with self._conn("read an anchor receipt") as conn:
            row = conn.execute(
                f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts WHERE namespace = %s AND size = %s",
                (namespace, size), binary=True,
            ).fetchone()  # fmt: skip
        return None if row is None else _anchor_row(row)

    def put_anchor_receipt(self, row: AnchorReceiptRow) -> None:
        with self._conn("write an anchor receipt") as conn:
            conn.execute(
                _INSERT_ANCHOR_RECEIPT + " ON CONFLICT (namespace, size) DO UPDATE SET"
                " finished = excluded.finished, receipt = excluded.receipt",
                (row.namespace, row.size, row.finished, row.receipt),
            )

    def anchor_receipts(
        self, namespace: str, *, after: int = -1, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        check_page(limit)
        with self._conn("read anchor receipts") as conn:
            rows = conn.execute(
                f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts WHERE namespace = %s"
                " AND size > %s ORDER BY size LIMIT %s",
                (namespace, after, limit), binary=True,
            ).fetchall()  # fmt: skip
        return [_anchor_row(r) for r in rows]

    def unfinished_anchor_receipts(
        self, *, after: tuple[str, int] | None = None, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        check_page(limit)
        ns, size = after if after is not None else ("", -1)
        with self._conn("read unfinished anchor receipts") as conn:
            rows = conn.execute(
                f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts WHERE NOT finished"
                " AND (namespace, size) > (%s, %s) ORDER BY namespace, size LIMIT %s",
                (ns, size, limit), binary=True,
            ).fetchall()  # fmt: skip
        return [_anchor_row(r) for r in rows]

    def get_cosigned(self, origin: str) -> CosignedRow | None:
        with self._conn("read the witness state") as conn:
            row = conn.execute(
                f"SELECT {_COSIGNED_COLUMNS} FROM witness_cosigned WHERE origin = %s",
                (origin,), binary=True,
            ).fetchone()  # fmt: skip
        return None if row is None else _cosigned_row(row)

    def put_cosigned(self, row: CosignedRow, *, expect_size: int | None) -> bool:
        with self._conn("write the witness state") as conn:
            if expect_size is None:
                cur = conn.execute(
                    _INSERT_COSIGNED + " ON CONFLICT (origin) DO NOTHING",
                    (row.origin, row.size, row.root_hash, row.note, row.cosignature, row.time),
                )
            else:
                # Under READ COMMITTED a racing UPDATE re-checks the WHERE on the new row.
                cur = conn.execute(
                    "UPDATE witness_cosigned SET size = %s, root_hash = %s, note = %s,"
                    " cosignature = %s, time = %s WHERE origin = %s AND size = %s",
                    (row.size, row.root_hash, row.note, row.cosignature, row.time, row.origin,
                     expect_size),
                )  # fmt: skip
            return cur.rowcount == 1

    def cosigned_origins(self) -> list[str]:
        with self._conn("list witnessed origins") as conn:
            rows = conn.execute("SELECT origin FROM witness_cosigned ORDER BY origin").fetchall()
        return [r[0] for r in rows]

    def federation_receipt(self, namespace: str, receipt_id: str) -> FederationReceiptRow | None:
        with self._conn("read a federation receipt") as conn:
            row = conn.execute(
                f"SELECT {_RECEIPT_COLUMNS} FROM federation_receipts"
                " WHERE namespace = %s AND receipt_id = %s",
                (namespace, receipt_id), binary=True,
            ).fetchone()  # fmt: skip
        return None if row is None else _receipt_row(row)

    def put_federation_receipt(self, row: FederationReceiptRow, *, expect: Expect = ANY) -> bool:
        key = (row.namespace, row.receipt_id)
        with self._conn("write a federation receipt") as conn:
            if expect is ANY:
                cur = conn.execute(
                    _INSERT_FEDERATION_RECEIPT + " ON CONFLICT (namespace, receipt_id)"
                    " DO UPDATE SET receipt = excluded.receipt",
                    (*key, row.receipt),
                )
            elif expect is None:
                cur = conn.execute(
                    _INSERT_FEDERATION_RECEIPT + " ON CONFLICT (namespace, receipt_id) DO NOTHING",
                    (*key, row.receipt),
                )
            else:
                cur = conn.execute(
                    "UPDATE federation_receipts SET receipt = %s"
                    " WHERE namespace = %s AND receipt_id = %s AND receipt = %s",
                    (row.receipt, *key, expect),
                )
            return cur.rowcount == 1

    def federation_receipts(
        self,
        namespace: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[FederationReceiptRow]:
        check_page(limit)
        sql = f"SELECT {_RECEIPT_COLUMNS} FROM federation_receipts WHERE true"
        args: list[Any] = []
        if namespace is not None:
            sql += " AND namespace = %s"
            args.append(namespace)
        if after is not None:
            sql += " AND (namespace, receipt_id) > (%s, %s)"
            args += [after[0], after[1]]
        with self._conn("read federation receipts") as conn:
            rows = conn.execute(sql + " ORDER BY namespace, receipt_id LIMIT %s",
                                (*args, limit), binary=True).fetchall()  # fmt: skip
        return [_receipt_row(r) for r in rows]

    def federation_receipt_count(self) -> int:
        with self._conn("count federation receipts") as conn:
            row = conn.execute("SELECT count(*) FROM federation_receipts").fetchone()
        assert row is not None
        return int(row[0])

    def keep_evidence(self, row: EvidenceRow, *, per_subject: int) -> str | None:
        with self._conn("keep evidence") as conn, conn.transaction():
            # One keeper per subject at a time (its rows may not exist yet to lock).
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"remembrancer.evidence.{row.subject}",))  # fmt: skip
            kept: dict[str, str] = dict(conn.execute(
                "SELECT incident, ref FROM federation_evidence WHERE subject = %s", (row.subject,)
            ).fetchall())  # fmt: skip
            if row.incident in kept:
                return str(kept[row.incident])
            if len(kept) >= per_subject:
                return None
            conn.execute(
                _INSERT_EVIDENCE + " ON CONFLICT (ref) DO NOTHING",
                (row.ref, row.subject, row.incident, row.data),
            )
            return row.ref

    def evidence_file(self, ref: str) -> bytes | None:
        with self._conn("read evidence") as conn:
            row = conn.execute(
                "SELECT data FROM federation_evidence WHERE ref = %s", (ref,), binary=True
            ).fetchone()
        return None if row is None else bytes(row[0])

    def evidence_incidents(self, subject: str) -> dict[str, str]:
        with self._conn("read evidence") as conn:
            rows = conn.execute(
                "SELECT incident, ref FROM federation_evidence WHERE subject = %s", (subject,)
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def evidence_page(self, *, after: str | None = None, limit: int = 100) -> list[EvidenceRow]:
        check_page(limit)
        with self._conn("read evidence") as conn:
            rows = conn.execute(
                f"SELECT {_EVIDENCE_COLUMNS} FROM federation_evidence WHERE ref > %s"
                " ORDER BY ref LIMIT %s",
                ("" if after is None else after, limit), binary=True,
            ).fetchall()  # fmt: skip
        return [EvidenceRow(r[0], r[1], r[2], bytes(r[3])) for r in rows]


class PgTypedSnapshot:
    """The typed tables of a :meth:`~remembrancer.storage.postgres.PostgresStore.snapshot`."""

    if TYPE_CHECKING:

        def _rows(
            self, sql: str, params: tuple[object, ...], batch: int
        ) -> Iterator[tuple[Any, ...]]: ...

    def anchor_receipts(self) -> Iterator[AnchorReceiptRow]:
        for r in self._rows(f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts"
                            " ORDER BY namespace, size", (), 500):  # fmt: skip
            yield _anchor_row(r)

    def cosigned(self) -> Iterator[CosignedRow]:
        for r in self._rows(f"SELECT {_COSIGNED_COLUMNS} FROM witness_cosigned ORDER BY origin",
                            (), 500):  # fmt: skip
            yield _cosigned_row(r)

    def federation_receipts(self) -> Iterator[FederationReceiptRow]:
        for r in self._rows(f"SELECT {_RECEIPT_COLUMNS} FROM federation_receipts"
                            " ORDER BY namespace, receipt_id", (), 500):  # fmt: skip
            yield _receipt_row(r)

    def evidence(self) -> Iterator[EvidenceRow]:
        for r in self._rows(f"SELECT {_EVIDENCE_COLUMNS} FROM federation_evidence ORDER BY ref",
                            (), 100):  # fmt: skip
            yield EvidenceRow(r[0], r[1], r[2], bytes(r[3]))


class PgTypedLoader:
    """The typed tables of a :meth:`~remembrancer.storage.postgres.PostgresStore.load`."""

    if TYPE_CHECKING:

        def _copy(
            self, table: str, columns: str, types: list[str], rows: Iterable[Sequence[Any]]
        ) -> None: ...

    def add_anchor_receipts(self, rows: Iterable[AnchorReceiptRow]) -> None:
        self._copy("anchor_receipts", _ANCHOR_COLUMNS, ["text", "int8", "bool", "bytea"],
                   ((r.namespace, r.size, r.finished, r.receipt)
                    for r in check_typed_rows(rows, AnchorReceiptRow)))  # fmt: skip

    def add_cosigned(self, rows: Iterable[CosignedRow]) -> None:
        self._copy("witness_cosigned", _COSIGNED_COLUMNS,
                   ["text", "int8", "bytea", "bytea", "text", "int8"],
                   ((r.origin, r.size, r.root_hash, r.note, r.cosignature, r.time)
                    for r in check_typed_rows(rows, CosignedRow)))  # fmt: skip

    def add_federation_receipts(self, rows: Iterable[FederationReceiptRow]) -> None:
        self._copy("federation_receipts", _RECEIPT_COLUMNS, ["text", "text", "bytea"],
                   ((r.namespace, r.receipt_id, r.receipt)
                    for r in check_typed_rows(rows, FederationReceiptRow)))  # fmt: skip

    def add_evidence(self, rows: Iterable[EvidenceRow]) -> None:
        self._copy("federation_evidence", _EVIDENCE_COLUMNS, ["text", "text", "text", "bytea"],
                   ((r.ref, r.subject, r.incident, r.data)
                    for r in check_typed_rows(rows, EvidenceRow)))  # fmt: skip


def move_legacy(conn: Conn) -> None:
    """Schema 1 to 2: move the legacy scopes' JSON rows into the typed tables."""
    rows = conn.execute(
        "SELECT scope, key, value FROM state WHERE scope = ANY(%s::text[])",
        (list(LEGACY_SCOPES),), binary=True,
    ).fetchall()  # fmt: skip
    split = split_legacy(rows)
    with conn.cursor() as cur:
        if split.anchor_receipts:
            cur.executemany(_INSERT_ANCHOR_RECEIPT, [(r.namespace, r.size, r.finished, r.receipt)
                                                     for r in split.anchor_receipts])  # fmt: skip
        if split.cosigned:
            cur.executemany(_INSERT_COSIGNED, [(r.origin, r.size, r.root_hash, r.note,
                                                r.cosignature, r.time) for r in split.cosigned])  # fmt: skip
        if split.federation_receipts:
            cur.executemany(_INSERT_FEDERATION_RECEIPT, [(r.namespace, r.receipt_id, r.receipt)
                                                         for r in split.federation_receipts])  # fmt: skip
        if split.evidence:
            cur.executemany(_INSERT_EVIDENCE, [(r.ref, r.subject, r.incident, r.data)
                                               for r in split.evidence])  # fmt: skip
        if split.moved:
            cur.executemany("DELETE FROM state WHERE scope = %s AND key = %s", split.moved)


def _anchor_row(r: tuple[Any, ...]) -> AnchorReceiptRow:
    return AnchorReceiptRow(r[0], int(r[1]), bytes(r[3]), bool(r[2]))


def _cosigned_row(r: tuple[Any, ...]) -> CosignedRow:
    return CosignedRow(r[0], int(r[1]), bytes(r[2]), bytes(r[3]), r[4], int(r[5]))


def _receipt_row(r: tuple[Any, ...]) -> FederationReceiptRow:
    return FederationReceiptRow(r[0], r[1], bytes(r[2]))
