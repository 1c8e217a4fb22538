"""The Store protocol: everything a node keeps durably.

Invariants every backend upholds (the conformance suite in
``tests/integration/test_store_conformance.py`` checks them):

- ``append`` is atomic: either every entry, tile and the new log state of the
  batch are committed together, or nothing is.  It returns only after the
  commit is durable, so a caller may acknowledge records once it returns.
- ``append`` refuses a batch whose ``start`` is not the current log size
  (:class:`~remembrancer.core.errors.ConflictError`, code ``log_size_moved``),
  so two writers can never interleave one log.
- Entries are stored as C2SP tlog-tiles *entry bundles*: bundle ``N`` holds
  entries ``[N * 256, N * 256 + n)``, each prefixed by its big-endian uint16
  length (:func:`~remembrancer.core.tiles.encode_entry_bundle`).  A full
  bundle (256 entries) is written once and never changes; the rightmost
  bundle of a log is partial until it fills, and each append that reaches it
  rewrites it wider (its stored bytes only ever grow, keeping their prefix).
  :meth:`Store.read_bundle` returns the stored bytes as they are, ready to be
  served as ``tile/entries/N`` (``.p/W`` while partial).  Stored bundles that
  disagree with the log size refuse the append (``StorageError``, code
  ``log_inconsistent``).
- Only entries that carry keys (an event hash, event id or actor and nonce:
  records) are indexed; raw entries cost their bundle bytes and nothing else.
  Every ``find_*`` lookup, and :meth:`Store.find_keys` (the bulk lookup a
  sequencer makes once per batch), sees only such entries.
- Uniqueness: ``(namespace, event_id)`` and ``(actor, nonce)`` are unique
  across everything ever appended; a batch that would break either is refused
  whole (``ConflictError``, code ``event_id_reused`` or ``nonce_reused``,
  naming the first culprit in batch order, see :func:`find_reuse`).
- Tiles are stored per ``(namespace, level, index)`` as the concatenated
  32-byte hashes of that tile (C2SP tlog-tiles); a later write of the same
  tile replaces it with a wider one, never a narrower one.
- Tiles never shrink and never change: a write narrower than (or as wide as)
  the stored tile is a no-op, and a write whose hashes disagree with the
  stored ones on their common prefix refuses the whole batch
  (``ConflictError``, code ``tile_conflict``).
- Every batch stores its signed checkpoint under ``(namespace, state.size)``;
  a later batch that signs the same size again (an empty batch) replaces the
  stored note, which is how cosignatures gathered later can be kept.
- A batch that is not self-consistent (``state.size != start + len(entries)``,
  hashes of the wrong length, an entry over 65,535 bytes, a tile that is not
  1 to 256 hashes wide, ...) is refused before anything is written
  (``StorageError``, code ``batch_invalid``).
- Small named state values support compare-and-swap, for the witness's
  atomic check-and-update and for scheduler state: ``put_state(...,
  expect=ANY)`` always writes, ``expect=None`` writes only if the key is
  absent, ``expect=b"..."`` writes only if the stored value equals it.
  :meth:`Store.list_state_page` reads a scope a page at a time, in code
  point order of the keys on every backend (a cursor is the last key read);
  ``limit`` is 1 to :data:`MAX_STATE_PAGE` (``FormatError``
  ``state_page_invalid`` otherwise).
- Typed state (schema version 2) has its own tables, read a page at a time
  by the keys it is queried by, never by a scan of every row:

  * anchor receipts, one per ``(namespace, checkpoint size)``
    (:class:`AnchorReceiptRow`): :meth:`Store.anchor_receipts` pages one
    namespace in size order, :meth:`Store.unfinished_anchor_receipts` pages
    the receipts whose ``finished`` flag is false (anchors that still need
    re-verification) in ``(namespace, size)`` order;
  * the witness's latest cosigned checkpoint per origin (:class:`CosignedRow`):
    :meth:`Store.put_cosigned` is a compare-and-swap on the stored size
    (``expect_size=None`` meaning "no row");
  * federation receipts, one per ``(namespace, receipt id)``
    (:class:`FederationReceiptRow`): :meth:`Store.put_federation_receipt`
    compares and swaps the stored document as ``put_state`` does,
    :meth:`Store.federation_receipts` pages them in ``(namespace, id)`` order;
  * misbehaviour evidence files, one per ``evidence_ref``
    (:class:`EvidenceRow`), at most one per ``(subject, incident)``:
    :meth:`Store.keep_evidence` checks the incident and the per-subject bound
    and stores the file in one atomic step; :meth:`Store.evidence_page` pages
    them in ref order.

  Opening a schema-1 database moves the rows of the old generic scopes
  (``anchors``, ``witness``, ``federation-receipts``, ``federation-evidence``
  and its index ``federation-evidence-subjects``) into these tables in the
  migration's transaction (:mod:`remembrancer.storage.legacy`).
- A store refuses to open a database written by a newer schema version
  (``StorageError``, code ``schema_too_new``), and a database that holds
  tables but no Remembrancer schema marker (code ``schema_unknown``).
- Using a closed store raises ``StorageError`` (code ``store_closed``).
- Export and import (backup and restore, backend to backend):
  :meth:`Store.snapshot` is one consistent, read-only view of every table
  while appends go on (a read transaction); its iterators stream rows in a
  fixed order and hold no more than a few rows in memory.
  :meth:`Store.load` fills an *empty* store in one transaction: it refuses a
  store holding anything (``StorageError``, code ``store_not_empty``) and
  changes nothing then; rows it cannot store (malformed, or breaking a
  uniqueness invariant) refuse the whole load (``load_invalid``); if the
  ``with`` block raises, nothing is kept.  Loading a snapshot's rows into any
  backend gives a store that answers every read the same way.

Only this package knows SQL.  The backends share no SQL; they share only the
pure helpers of :mod:`remembrancer.storage.checks` (:func:`validate_batch`,
:func:`merge_tile`, :func:`find_reuse`, :func:`plan_bundles`,
:func:`slice_bundles`) and :mod:`remembrancer.storage.loading`, so that they
refuse the same batches and loads for the same reasons and store the same bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, Protocol, TypeAlias, TypeVar

from remembrancer.core.errors import FormatError
from remembrancer.core.tiles import TILE_WIDTH

BUNDLE_WIDTH: Final = TILE_WIDTH  # entries per full entry bundle (C2SP tlog-tiles)
_T = TypeVar("_T")
MAX_STATE_PAGE: Final = 10_000  # rows one list_state_page call returns at most


class _AnyValue(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _AnyValue.ANY
"""The ``expect`` of an unconditional :meth:`Store.put_state`."""

Expect: TypeAlias = bytes | Literal[_AnyValue.ANY] | None
"""What ``put_state`` compares with: ``ANY``, ``None`` (absent) or the exact bytes."""


def check_page(limit: int) -> None:
    """The ``limit`` of :meth:`Store.list_state_page`: an int from 1 to :data:`MAX_STATE_PAGE`."""
    if type(limit) is not int or not 1 <= limit <= MAX_STATE_PAGE:
        raise FormatError(f"a page holds 1 to {MAX_STATE_PAGE} rows", code="state_page_invalid")


class EntryRow(NamedTuple):
    """One log entry as stored: its leaf bytes and the keys it is found by.

    (A NamedTuple rather than a frozen dataclass: millions are built per
    minute on the append path, and tuples are built several times faster.)

    ``event_hash`` is 32 raw bytes (the SHA-256 of the record's signing
    input); ``event_id``, ``actor`` and ``nonce`` are ``None`` for raw entries
    that are not records.  An entry with any key is indexed (see
    :attr:`has_keys`); a nonce is indexed only together with its actor.
    """

    leaf: bytes
    event_hash: bytes | None = None
    event_id: str | None = None
    actor: str | None = None
    nonce: str | None = None

    @property
    def has_keys(self) -> bool:
        """Whether the entry is found by a key (and so takes a row besides its bundle)."""
        return (
            self.event_hash is not None
            or self.event_id is not None
            or self.actor is not None
            or self.nonce is not None
        )


@dataclass(frozen=True, slots=True)
class LogState:
    """The durable head of one log: size, root hash and the latest signed checkpoint."""

    namespace: str
    size: int
    root_hash: bytes
    checkpoint: bytes  # the signed note, exactly as signed


@dataclass(frozen=True, slots=True)
class Fence:
    """A sequencer lease's fencing token (docs/operations.md, "Several processes"):
    an append carrying it commits only while ``epoch`` is still the lease
    ``name``'s epoch, checked inside the append's own transaction.  Only
    stores shared by several processes (PostgreSQL) take one."""

    name: str
    epoch: int


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Entries ``[start, start + len(entries))`` of one log, the tiles they change,
    and the log state after them (whose signed checkpoint covers them)."""

    namespace: str
    start: int
    entries: Sequence[EntryRow]
    tiles: Sequence[tuple[int, int, bytes]]  # (level, index, hashes)
    state: LogState
    checkpoint_time: int = 0  # seconds since the epoch at signing
    fence: Fence | None = None  # commit only while this lease epoch is current


@dataclass(frozen=True, slots=True)
class FoundEntry:
    """Where an entry with a given key sits in its log."""

    namespace: str
    index: int
    event_hash: bytes | None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint of one log at ``size``, as stored by ``append``."""

    namespace: str
    size: int
    note: bytes
    time: int


@dataclass(frozen=True, slots=True)
class RecordRow:
    """The keys of one indexed entry (see :attr:`EntryRow.has_keys`), as exported.

    ``index`` is the entry's position in its log; the keys are those the
    entry was appended with.
    """

    index: int
    event_hash: bytes | None
    event_id: str | None
    actor: str | None
    nonce: str | None


@dataclass(frozen=True, slots=True)
class AnchorReceiptRow:
    """The anchor receipt of one checkpoint of a log, as stored.

    ``receipt`` is the receipt's JSON document (``AnchorReceipt.to_dict``),
    stored as given; ``finished`` is false while one of its anchors still
    needs re-verification (the scheduler decides, the store only indexes it).
    """

    namespace: str
    size: int
    receipt: bytes
    finished: bool


@dataclass(frozen=True, slots=True)
class CosignedRow:
    """What the witness holds of one log origin: its latest cosigned checkpoint."""

    origin: str
    size: int
    root_hash: bytes  # 32 bytes
    note: bytes  # the checkpoint note as offered (the log's signatures)
    cosignature: str  # this witness's cosignature line on it
    time: int  # seconds since the epoch at cosigning


@dataclass(frozen=True, slots=True)
class FederationReceiptRow:
    """A final federation receipt (its JSON document) under ``(namespace, id)``."""

    namespace: str
    receipt_id: str
    receipt: bytes

    @property
    def cursor(self) -> str:
        """The page cursor of this row, ``<namespace>/<receipt id>``."""
        return f"{self.namespace}/{self.receipt_id}"


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    """A misbehaviour evidence file (``data``) under its ``ref`` (``sha256:<hex>``),
    proving ``incident`` of ``subject`` (a peer's DID or a log origin)."""

    ref: str
    subject: str
    incident: str
    data: bytes


def split_receipt_cursor(cursor: str | None) -> tuple[str, str] | None:
    """``<namespace>/<receipt id>`` into its two parts (namespaces have no ``/``)."""
    if cursor is None:
        return None
    namespace, _, receipt_id = cursor.partition("/")
    return namespace, receipt_id


def check_typed_rows(rows: Iterable[object], kind: type[_T]) -> Iterator[_T]:
    """Rows of a typed table as given to a loader: of the right type, else ``load_invalid``."""
    from remembrancer.core.errors import StorageError

    for row in rows:
        if not isinstance(row, kind):
            raise StorageError(f"not a {kind.__name__}: {row!r:.80}", code="load_invalid")
        yield row


@dataclass(slots=True)
class StoreStats:
    """What a store says about itself (for ``/metrics`` and ``remembrancer status``)."""

    backend: str
    schema_version: int
    extra: dict[str, object] = field(default_factory=dict)


class Store(Protocol):
    """The storage interface; implementations are thread-safe."""

    backend: str

    def close(self) -> None: ...

    def stats(self) -> StoreStats: ...

    # --- logs -------------------------------------------------------------
    def namespaces(self) -> list[str]:
        """Namespaces that have at least one appended batch."""
        ...

    def log_state(self, namespace: str) -> LogState | None: ...

    def append(self, batch: AppendBatch) -> None:
        """Commit the batch durably and atomically, or raise and change nothing."""
        ...

    def read_tiles(
        self, namespace: str, tiles: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """Stored bytes of the requested ``(level, index)`` tiles that exist."""
        ...

    def read_entries(self, namespace: str, start: int, end: int) -> list[bytes]:
        """Leaf bytes of entries ``[start, end)`` (fewer if the log is shorter).

        Reads the entry bundles covering the range in one query and slices them.
        """
        ...

    def read_bundle(self, namespace: str, index: int) -> bytes | None:
        """The stored bytes of entry bundle ``index`` (entries ``[index * 256, ...)``).

        Partial (fewer than 256 entries) if it is the log's rightmost bundle and
        the log size is not a multiple of 256; ``None`` if the bundle holds no
        entry yet.  The bytes are the C2SP tlog-tiles entry bundle, as served at
        ``tile/entries/<index>``.
        """
        ...

    def find_event_hash(self, namespace: str, event_hash: bytes) -> FoundEntry | None:
        """The entry of ``namespace`` with this event hash (the lowest index if several)."""
        ...

    def find_event_id(self, namespace: str, event_id: str) -> FoundEntry | None:
        """The entry of ``namespace`` with this event id."""
        ...

    def find_nonce(self, actor: str, nonce: str) -> FoundEntry | None:
        """The entry, in any namespace, that used this ``(actor, nonce)``."""
        ...

    def find_keys(
        self,
        namespace: str,
        event_ids: Sequence[str],
        nonces: Sequence[tuple[str, str]],
    ) -> tuple[dict[str, FoundEntry], dict[tuple[str, str], FoundEntry]]:
        """Bulk :meth:`find_event_id` and :meth:`find_nonce`, for a whole batch.

        Returns the entries found for ``event_ids`` (in ``namespace``) and for
        ``nonces`` (``(actor, nonce)`` pairs, in any namespace), keyed by what
        was asked; keys not found are absent.  One (chunked) query per kind,
        from one consistent snapshot where the backend has snapshots.
        """
        ...

    def checkpoint_at(self, namespace: str, size: int) -> StoredCheckpoint | None: ...

    def checkpoints(
        self, namespace: str, *, after_size: int = -1, limit: int = 100
    ) -> list[StoredCheckpoint]:
        """Signed checkpoints in increasing size order, sizes > ``after_size``."""
        ...

    # --- small named state with compare-and-swap ----------------------------
    def get_state(self, scope: str, key: str) -> bytes | None: ...

    def put_state(self, scope: str, key: str, value: bytes, *, expect: Expect = ANY) -> bool:
        """Set a value.  With ``expect`` given (``None`` meaning "absent"), set it only
        if the current value equals ``expect``, atomically; return whether it was set."""
        ...

    def delete_state(
        self, scope: str, key: str, *, expect: bytes | Literal[_AnyValue.ANY] = ANY
    ) -> bool:
        """Remove a value (only if it equals ``expect`` when given), atomically;
        return whether a value was removed."""
        ...

    def list_state(self, scope: str) -> dict[str, bytes]: ...

    def list_state_page(
        self, scope: str, *, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> list[tuple[str, bytes]]:
        """At most ``limit`` ``(key, value)`` pairs of ``scope`` whose key starts with
        ``prefix`` and sorts after ``after`` (all when None), in ascending key order
        by code point.  The last key of a page is the ``after`` of the next one."""
        ...

    # --- typed state: anchor receipts -----------------------------------------------
    def anchor_receipt(self, namespace: str, size: int) -> AnchorReceiptRow | None: ...

    def put_anchor_receipt(self, row: AnchorReceiptRow) -> None:
        """Store (or replace) the receipt of ``(row.namespace, row.size)``."""
        ...

    def anchor_receipts(
        self, namespace: str, *, after: int = -1, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        """At most ``limit`` receipts of ``namespace`` with sizes > ``after``, by size."""
        ...

    def unfinished_anchor_receipts(
        self, *, after: tuple[str, int] | None = None, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        """At most ``limit`` receipts not ``finished``, after the ``(namespace, size)``
        cursor, in ``(namespace, size)`` order."""
        ...

    # --- typed state: the witness ------------------------------------------------------
    def get_cosigned(self, origin: str) -> CosignedRow | None: ...

    def put_cosigned(self, row: CosignedRow, *, expect_size: int | None) -> bool:
        """Store ``row`` if the stored size of ``row.origin`` is ``expect_size``
        (``None``: no row yet), atomically; return whether it was stored."""
        ...

    def cosigned_origins(self) -> list[str]:
        """Every origin with a cosigned checkpoint, in code point order."""
        ...

    # --- typed state: federation receipts ---------------------------------------------
    def federation_receipt(
        self, namespace: str, receipt_id: str
    ) -> FederationReceiptRow | None: ...

    def put_federation_receipt(self, row: FederationReceiptRow, *, expect: Expect = ANY) -> bool:
        """Store ``row``; with ``expect`` (``None``: absent, else the stored document)
        only if it matches, atomically.  Whether it was stored."""
        ...

    def federation_receipts(
        self,
        namespace: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[FederationReceiptRow]:
        """At most ``limit`` receipts (of ``namespace``, or all) after the
        ``(namespace, receipt id)`` cursor, in ``(namespace, receipt id)`` order."""
        ...

    def federation_receipt_count(self) -> int: ...

    # --- typed state: misbehaviour evidence --------------------------------------------
    def keep_evidence(self, row: EvidenceRow, *, per_subject: int) -> str | None:
        """Atomically: the ref kept earlier for ``(row.subject, row.incident)`` if
        any (``row`` is then not stored); else ``None`` if ``row.subject`` has
        ``per_subject`` incidents kept; else store ``row`` and return ``row.ref``
        (a file already stored under ``row.ref`` is kept as it is)."""
        ...

    def evidence_file(self, ref: str) -> bytes | None: ...

    def evidence_incidents(self, subject: str) -> dict[str, str]:
        """The incidents kept about ``subject``: incident -> evidence ref."""
        ...

    def evidence_page(self, *, after: str | None = None, limit: int = 100) -> list[EvidenceRow]:
        """At most ``limit`` evidence rows with refs after ``after``, in ref order."""
        ...

    # --- export and import --------------------------------------------------------
    def snapshot(self) -> AbstractContextManager[StoreSnapshot]:
        """One consistent read-only view of the whole store, usable inside the ``with``.

        Appends and state writes by others go on meanwhile and are not seen.
        """
        ...

    def load(self) -> AbstractContextManager[StoreLoader]:
        """Fill this empty store in one transaction, committed when the ``with`` ends.

        ``StorageError`` ``store_not_empty`` (nothing changed) if the store
        holds any log or state; ``load_invalid`` for rows it cannot store.
        If the block raises, the store stays empty.
        """
        ...


class StoreSnapshot(Protocol):
    """The rows of a store as of one moment (:meth:`Store.snapshot`).

    Every iterator streams; several may be open at once.
    """

    def logs(self) -> list[LogState]:
        """Every log's head, in namespace order."""
        ...

    def bundles(self, namespace: str) -> Iterator[tuple[int, bytes]]:
        """``(index, entry bundle)`` of one log, in index order."""
        ...

    def records(self, namespace: str) -> Iterator[RecordRow]:
        """The keys of one log's indexed entries, in index order."""
        ...

    def tiles(self, namespace: str) -> Iterator[tuple[int, int, bytes]]:
        """``(level, index, hashes)`` of one log's tiles, by level then index."""
        ...

    def checkpoints(self, namespace: str) -> Iterator[StoredCheckpoint]:
        """One log's stored checkpoints, in size order."""
        ...

    def state(self) -> Iterator[tuple[str, str, bytes]]:
        """Every ``(scope, key, value)`` of the named state, by scope then key."""
        ...

    def anchor_receipts(self) -> Iterator[AnchorReceiptRow]:
        """Every anchor receipt, by namespace then size."""
        ...

    def cosigned(self) -> Iterator[CosignedRow]:
        """The witness's rows, by origin."""
        ...

    def federation_receipts(self) -> Iterator[FederationReceiptRow]:
        """Every federation receipt, by namespace then receipt id."""
        ...

    def evidence(self) -> Iterator[EvidenceRow]:
        """Every evidence file, by ref."""
        ...


class StoreLoader(Protocol):
    """Adds rows to an empty store inside :meth:`Store.load`.

    A log's head comes first (:meth:`add_log`), then its rows, in any order
    and in as many calls as convenient.  Rows are checked as in
    :func:`check_load_rows` and by the store's uniqueness invariants.
    """

    def add_log(self, state: LogState) -> None: ...

    def add_bundles(self, namespace: str, bundles: Iterable[tuple[int, bytes]]) -> None: ...

    def add_records(self, namespace: str, rows: Iterable[RecordRow]) -> None: ...

    def add_tiles(self, namespace: str, tiles: Iterable[tuple[int, int, bytes]]) -> None: ...

    def add_checkpoints(self, namespace: str, checkpoints: Iterable[StoredCheckpoint]) -> None: ...

    def add_state(self, rows: Iterable[tuple[str, str, bytes]]) -> None: ...

    def add_anchor_receipts(self, rows: Iterable[AnchorReceiptRow]) -> None: ...

    def add_cosigned(self, rows: Iterable[CosignedRow]) -> None: ...

    def add_federation_receipts(self, rows: Iterable[FederationReceiptRow]) -> None: ...

    def add_evidence(self, rows: Iterable[EvidenceRow]) -> None: ...
