"""The SQLite backend's typed state: anchor receipts, witness state, federation state.

The tables of schema version 2 (see :mod:`remembrancer.storage.sqlite` for
the layout and :mod:`remembrancer.storage.base` for the invariants), as
mixins of :class:`~remembrancer.storage.sqlite.SqliteStore`, its snapshot and
its loader, and the migration step that moves schema 1's JSON state rows
into them (:func:`move_legacy`).  Reads go through the store's per-thread
reader connections, writes through its one writer (``BEGIN IMMEDIATE``), so
every compare-and-swap and :meth:`SqliteTypedState.keep_evidence` is one
transaction under SQLite's write lock.

Tables::

    anchor_receipts (namespace TEXT, size INTEGER, finished INTEGER, receipt BLOB,
                 PRIMARY KEY (namespace, size))
                 + INDEX (namespace, size) WHERE finished = 0
    witness_cosigned (origin TEXT PRIMARY KEY, size INTEGER, root_hash BLOB,
                 note BLOB, cosignature TEXT, time INTEGER)
    federation_receipts (namespace TEXT, receipt_id TEXT, receipt BLOB,
                 PRIMARY KEY (namespace, receipt_id))
    federation_evidence (ref TEXT PRIMARY KEY, subject TEXT, incident TEXT, data BLOB,
                 UNIQUE (subject, incident))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
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

__all__ = ["MIGRATION_V2", "TYPED_TABLES", "SqliteTypedLoader", "SqliteTypedSnapshot", "SqliteTypedState",
           "move_legacy"]  # fmt: skip

# Schema version 1 -> 2: the typed tables (the store's migration then calls move_legacy).
MIGRATION_V2: Final[tuple[str, ...]] = (
    """CREATE TABLE anchor_receipts (
        namespace TEXT NOT NULL,
        size INTEGER NOT NULL,
        finished INTEGER NOT NULL,
        receipt BLOB NOT NULL,
        PRIMARY KEY (namespace, size)
    ) WITHOUT ROWID""",
    "CREATE INDEX anchor_receipts_unfinished ON anchor_receipts (namespace, size)"
    " WHERE finished = 0",
    """CREATE TABLE witness_cosigned (
        origin TEXT NOT NULL PRIMARY KEY,
        size INTEGER NOT NULL CHECK (size >= 0),
        root_hash BLOB NOT NULL,
        note BLOB NOT NULL,
        cosignature TEXT NOT NULL,
        time INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE federation_receipts (
        namespace TEXT NOT NULL,
        receipt_id TEXT NOT NULL,
        receipt BLOB NOT NULL,
        PRIMARY KEY (namespace, receipt_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE federation_evidence (
        ref TEXT NOT NULL PRIMARY KEY,
        subject TEXT NOT NULL,
        incident TEXT NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (subject, incident)
    )""",
)
TYPED_TABLES: Final = ("anchor_receipts", "witness_cosigned", "federation_receipts",
                       "federation_evidence")  # fmt: skip
_INSERT_ANCHOR_RECEIPT: Final = (
    "INSERT INTO anchor_receipts (namespace, size, finished, receipt) VALUES (?, ?, ?, ?)"
)
_INSERT_COSIGNED: Final = (
    "INSERT INTO witness_cosigned (origin, size, root_hash, note, cosignature, time)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_FEDERATION_RECEIPT: Final = (
    "INSERT INTO federation_receipts (namespace, receipt_id, receipt) VALUES (?, ?, ?)"
)
_INSERT_EVIDENCE: Final = (
    "INSERT INTO federation_evidence (ref, subject, incident, data) VALUES (?, ?, ?, ?)"
)


class SqliteTypedState:
    """The typed-state methods of :class:`~remembrancer.storage.sqlite.SqliteStore`."""

    if TYPE_CHECKING:

        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

    def anchor_receipt(self, namespace: str, size: int) -> AnchorReceiptRow | None:
        with self._read("read an anchor receipt") as conn:
            row = conn.execute(
                f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts WHERE namespace = ? AND size = ?",
                (namespace, size),
            ).fetchone()
        return None if row is None else _anchor_row(row)

    def put_anchor_receipt(self, row: AnchorReceiptRow) -> None:
        with self._write("write an anchor receipt") as conn:
            conn.execute(
                _INSERT_ANCHOR_RECEIPT + " ON CONFLICT (namespace, size) DO UPDATE SET"
                " finished = excluded.finished, receipt = excluded.receipt",
                (row.namespace, row.size, int(row.finished), row.receipt),
            )

    def anchor_receipts(
        self, namespace: str, *, after: int = -1, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        check_page(limit)
        with self._read("read anchor receipts") as conn:
            rows = conn.execute(
                f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts WHERE namespace = ? AND size > ?"
                " ORDER BY size LIMIT ?",
                (namespace, after, limit),
            ).fetchall()
        return [_anchor_row(r) for r in rows]

    def unfinished_anchor_receipts(
        self, *, after: tuple[str, int] | None = None, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        check_page(limit)
        ns, size = after if after is not None else ("", -1)
        with self._read("read unfinished anchor receipts") as conn:
            rows = conn.execute(
                f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts WHERE finished = 0"
                " AND (namespace > ? OR (namespace = ? AND size > ?))"
                " ORDER BY namespace, size LIMIT ?",
                (ns, ns, size, limit),
            ).fetchall()
        return [_anchor_row(r) for r in rows]

    def get_cosigned(self, origin: str) -> CosignedRow | None:
        with self._read("read the witness state") as conn:
            row = conn.execute(
                f"SELECT {_COSIGNED_COLUMNS} FROM witness_cosigned WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else _cosigned_row(row)

    def put_cosigned(self, row: CosignedRow, *, expect_size: int | None) -> bool:
        values = (row.size, row.root_hash, row.note, row.cosignature, row.time, row.origin)
        with self._write("write the witness state") as conn:
            if expect_size is None:
                cur = conn.execute(
                    _INSERT_COSIGNED + " ON CONFLICT (origin) DO NOTHING",
                    (row.origin, *values[:-1]),
                )
            else:
                cur = conn.execute(
                    "UPDATE witness_cosigned SET size = ?, root_hash = ?, note = ?,"
                    " cosignature = ?, time = ? WHERE origin = ? AND size = ?",
                    (*values, expect_size),
                )
            return cur.rowcount == 1

    def cosigned_origins(self) -> list[str]:
        with self._read("list witnessed origins") as conn:
            rows = conn.execute("SELECT origin FROM witness_cosigned ORDER BY origin").fetchall()
        return [r[0] for r in rows]

    def federation_receipt(self, namespace: str, receipt_id: str) -> FederationReceiptRow | None:
        with self._read("read a federation receipt") as conn:
            row = conn.execute(
                f"SELECT {_RECEIPT_COLUMNS} FROM federation_receipts"
                " WHERE namespace = ? AND receipt_id = ?",
                (namespace, receipt_id),
            ).fetchone()
        return None if row is None else _receipt_row(row)

    def put_federation_receipt(self, row: FederationReceiptRow, *, expect: Expect = ANY) -> bool:
        key = (row.namespace, row.receipt_id)
        with self._write("write a federation receipt") as conn:
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
                    "UPDATE federation_receipts SET receipt = ?"
                    " WHERE namespace = ? AND receipt_id = ? AND receipt = ?",
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
        sql = f"SELECT {_RECEIPT_COLUMNS} FROM federation_receipts WHERE 1 = 1"
        args: list[Any] = []
        if namespace is not None:
            sql += " AND namespace = ?"
            args.append(namespace)
        if after is not None:
            sql += " AND (namespace > ? OR (namespace = ? AND receipt_id > ?))"
            args += [after[0], after[0], after[1]]
        with self._read("read federation receipts") as conn:
            rows = conn.execute(
                sql + " ORDER BY namespace, receipt_id LIMIT ?", (*args, limit)
            ).fetchall()
        return [_receipt_row(r) for r in rows]

    def federation_receipt_count(self) -> int:
        with self._read("count federation receipts") as conn:
            (n,) = conn.execute("SELECT count(*) FROM federation_receipts").fetchone()
        return int(n)

    def keep_evidence(self, row: EvidenceRow, *, per_subject: int) -> str | None:
        with self._write("keep evidence") as conn:  # BEGIN IMMEDIATE: one writer at a time
            kept = dict(conn.execute(
                "SELECT incident, ref FROM federation_evidence WHERE subject = ?", (row.subject,)
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
        with self._read("read evidence") as conn:
            row = conn.execute(
                "SELECT data FROM federation_evidence WHERE ref = ?", (ref,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def evidence_incidents(self, subject: str) -> dict[str, str]:
        with self._read("read evidence") as conn:
            rows = conn.execute(
                "SELECT incident, ref FROM federation_evidence WHERE subject = ?", (subject,)
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def evidence_page(self, *, after: str | None = None, limit: int = 100) -> list[EvidenceRow]:
        check_page(limit)
        with self._read("read evidence") as conn:
            rows = conn.execute(
                "SELECT ref, subject, incident, data FROM federation_evidence WHERE ref > ?"
                " ORDER BY ref LIMIT ?",
                ("" if after is None else after, limit),
            ).fetchall()
        return [EvidenceRow(r[0], r[1], r[2], bytes(r[3])) for r in rows]


class SqliteTypedSnapshot:
    """The typed tables of a :meth:`~remembrancer.storage.sqlite.SqliteStore.snapshot`."""

    if TYPE_CHECKING:

        def _rows(
            self, what: str, sql: str, params: tuple[object, ...]
        ) -> Iterator[tuple[Any, ...]]: ...

    def anchor_receipts(self) -> Iterator[AnchorReceiptRow]:
        for r in self._rows("export anchor receipts",
                            f"SELECT {_ANCHOR_COLUMNS} FROM anchor_receipts ORDER BY namespace, size",
                            ()):  # fmt: skip
            yield _anchor_row(r)

    def cosigned(self) -> Iterator[CosignedRow]:
        for r in self._rows("export the witness state",
                            f"SELECT {_COSIGNED_COLUMNS} FROM witness_cosigned ORDER BY origin",
                            ()):  # fmt: skip
            yield _cosigned_row(r)

    def federation_receipts(self) -> Iterator[FederationReceiptRow]:
        for r in self._rows("export federation receipts",
                            f"SELECT {_RECEIPT_COLUMNS} FROM federation_receipts"
                            " ORDER BY namespace, receipt_id", ()):  # fmt: skip
            yield _receipt_row(r)

    def evidence(self) -> Iterator[EvidenceRow]:
        for r in self._rows("export evidence",
                            "SELECT ref, subject, incident, data FROM federation_evidence"
                            " ORDER BY ref", ()):  # fmt: skip
            yield EvidenceRow(r[0], r[1], r[2], bytes(r[3]))


class SqliteTypedLoader:
    """The typed tables of a :meth:`~remembrancer.storage.sqlite.SqliteStore.load`."""

    _conn: sqlite3.Connection

    def add_anchor_receipts(self, rows: Iterable[AnchorReceiptRow]) -> None:
        _insert_typed(self._conn, check_typed_rows(rows, AnchorReceiptRow), (), ())

    def add_cosigned(self, rows: Iterable[CosignedRow]) -> None:
        _insert_typed(self._conn, (), check_typed_rows(rows, CosignedRow), ())

    def add_federation_receipts(self, rows: Iterable[FederationReceiptRow]) -> None:
        _insert_typed(self._conn, (), (), check_typed_rows(rows, FederationReceiptRow))

    def add_evidence(self, rows: Iterable[EvidenceRow]) -> None:
        self._conn.executemany(_INSERT_EVIDENCE, ((r.ref, r.subject, r.incident, r.data)
                                                  for r in check_typed_rows(rows, EvidenceRow)))  # fmt: skip


def move_legacy(conn: sqlite3.Connection) -> None:
    """Schema 1 to 2: move the legacy scopes' JSON rows into the typed tables."""
    marks = ",".join("?" * len(LEGACY_SCOPES))
    rows = conn.execute(
        f"SELECT scope, key, value FROM state WHERE scope IN ({marks})", LEGACY_SCOPES
    ).fetchall()
    split = split_legacy(rows)
    _insert_typed(conn, split.anchor_receipts, split.cosigned, split.federation_receipts)
    conn.executemany(
        _INSERT_EVIDENCE, ((r.ref, r.subject, r.incident, r.data) for r in split.evidence)
    )
    conn.executemany("DELETE FROM state WHERE scope = ? AND key = ?", split.moved)


def _insert_typed(
    conn: sqlite3.Connection,
    anchors: Iterable[AnchorReceiptRow],
    cosigned: Iterable[CosignedRow],
    receipts: Iterable[FederationReceiptRow],
) -> None:
    conn.executemany(_INSERT_ANCHOR_RECEIPT,
                     ((r.namespace, r.size, int(r.finished), r.receipt) for r in anchors))  # fmt: skip
    conn.executemany(_INSERT_COSIGNED, ((r.origin, r.size, r.root_hash, r.note, r.cosignature,
                                         r.time) for r in cosigned))  # fmt: skip
    conn.executemany(_INSERT_FEDERATION_RECEIPT,
                     ((r.namespace, r.receipt_id, r.receipt) for r in receipts))  # fmt: skip


def _anchor_row(r: tuple[Any, ...]) -> AnchorReceiptRow:
    return AnchorReceiptRow(r[0], r[1], bytes(r[3]), bool(r[2]))


def _cosigned_row(r: tuple[Any, ...]) -> CosignedRow:
    return CosignedRow(r[0], r[1], bytes(r[2]), bytes(r[3]), r[4], r[5])


def _receipt_row(r: tuple[Any, ...]) -> FederationReceiptRow:
    return FederationReceiptRow(r[0], r[1], bytes(r[2]))


_ANCHOR_COLUMNS: Final = "namespace, size, finished, receipt"
_COSIGNED_COLUMNS: Final = "origin, size, root_hash, note, cosignature, time"
_RECEIPT_COLUMNS: Final = "namespace, receipt_id, receipt"
