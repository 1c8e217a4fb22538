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
pure helpers below (:func:`validate_batch`, :func:`merge_tile`,
:func:`find_reuse`, :func:`plan_bundles`, :func:`slice_bundles`), so that they
refuse the same batches for the same reasons and store the same bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, Protocol, TypeAlias

from remembrancer.core.errors import ConflictError, FormatError, StorageError
from remembrancer.core.rfc6962 import HASH_SIZE
from remembrancer.core.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, decode_entry_bundle

BUNDLE_WIDTH: Final = TILE_WIDTH  # entries per full entry bundle (C2SP tlog-tiles)
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
class AppendBatch:
    """Entries ``[start, start + len(entries))`` of one log, the tiles they change,
    and the log state after them (whose signed checkpoint covers them)."""

    namespace: str
    start: int
    entries: Sequence[EntryRow]
    tiles: Sequence[tuple[int, int, bytes]]  # (level, index, hashes)
    state: LogState
    checkpoint_time: int = 0  # seconds since the epoch at signing


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


# --- pure checks shared by every backend --------------------------------------


def _invalid(message: str, **details: object) -> StorageError:
    return StorageError(message, code="batch_invalid", details=details)


def validate_batch(batch: AppendBatch) -> None:
    """Refuse a batch that is not self-consistent (``StorageError``, ``batch_invalid``).

    Checks only what needs no stored data; the backends check ``start`` and
    uniqueness inside their transaction.
    """
    ns = batch.namespace
    if not isinstance(ns, str) or not ns:
        raise _invalid("the batch has no namespace")
    state = batch.state
    if state.namespace != ns:
        raise _invalid(
            "the batch's log state belongs to another namespace",
            namespace=ns,
            state_namespace=state.namespace,
        )
    if batch.start < 0:
        raise _invalid("the batch starts at a negative index", start=batch.start)
    if state.size != batch.start + len(batch.entries):
        raise _invalid(
            "the batch's log state size is not start + number of entries",
            start=batch.start,
            entries=len(batch.entries),
            size=state.size,
        )
    if len(state.root_hash) != HASH_SIZE:
        raise _invalid("the root hash is not 32 bytes", length=len(state.root_hash))
    if not state.checkpoint:
        raise _invalid("the batch carries no signed checkpoint")
    if batch.checkpoint_time < 0:
        raise _invalid("the checkpoint time is negative", time=batch.checkpoint_time)
    for offset, entry in enumerate(batch.entries):
        if len(entry.leaf) > MAX_ENTRY_SIZE:
            raise _invalid(
                f"an entry is larger than {MAX_ENTRY_SIZE:,} bytes",
                index=batch.start + offset,
                length=len(entry.leaf),
            )
        if entry.event_hash is not None and len(entry.event_hash) != HASH_SIZE:
            raise _invalid("an event hash is not 32 bytes", index=batch.start + offset)
    seen: set[tuple[int, int]] = set()
    for level, index, hashes in batch.tiles:
        width, rest = divmod(len(hashes), HASH_SIZE)
        if level < 0 or index < 0 or rest or not 1 <= width <= TILE_WIDTH:
            raise _invalid(
                "a tile is not 1 to 256 hashes at a non-negative position",
                level=level,
                index=index,
                length=len(hashes),
            )
        if (level, index) in seen:
            raise _invalid("the batch writes one tile twice", level=level, index=index)
        seen.add((level, index))


def merge_tile(
    namespace: str, level: int, index: int, stored: bytes | None, new: bytes
) -> bytes | None:
    """What to store for a tile write: ``new`` if it widens ``stored``, ``None`` for a no-op.

    Raises ``ConflictError`` (``tile_conflict``) when the two disagree on the
    hashes they both hold: a tile, once written, never changes.
    """
    if stored is None:
        return new
    common = min(len(stored), len(new))
    if stored[:common] != new[:common]:
        raise ConflictError(
            "a tile write disagrees with the stored tile",
            code="tile_conflict",
            details={
                "namespace": namespace,
                "level": level,
                "index": index,
                "stored_width": len(stored) // HASH_SIZE,
                "new_width": len(new) // HASH_SIZE,
            },
        )
    return new if len(new) > len(stored) else None


def _inconsistent(message: str, **details: object) -> StorageError:
    return StorageError(message, code="log_inconsistent", details=details)


def split_bundle(namespace: str, index: int, data: bytes) -> list[bytes]:
    """The entries of a stored bundle; ``StorageError`` (``log_inconsistent``) if it is corrupt."""
    try:
        return decode_entry_bundle(data)
    except FormatError as e:
        raise _inconsistent(
            f"the stored entry bundle {index} of {namespace} is corrupt: {e}",
            namespace=namespace,
            bundle=index,
        ) from e


def plan_bundles(
    batch: AppendBatch, stored: bytes | None
) -> tuple[tuple[int, bytes] | None, list[tuple[int, bytes]]]:
    """The bundle writes that store ``batch.entries``: ``(rewrite, new)``.

    ``stored`` is what the store holds for bundle ``batch.start // 256`` (the
    one the batch starts in), ``None`` if nothing.  ``rewrite`` is that bundle
    widened, as ``(index, data)``, when the batch starts inside it (``None``
    otherwise); ``new`` are the bundles the batch starts, in order.  Raises
    ``StorageError`` (``log_inconsistent``) when ``stored`` does not hold
    exactly the entries the log size says it must.  Call it only for a batch
    with entries.
    """
    ns, start, entries = batch.namespace, batch.start, batch.entries
    first, held = divmod(start, BUNDLE_WIDTH)
    count = 0 if stored is None else len(split_bundle(ns, first, stored))
    if count != held:
        raise _inconsistent(
            f"the log {ns} has size {start} but its entry bundle {first} holds {count} entries",
            namespace=ns,
            size=start,
            bundle=first,
            entries=count,
        )
    rewrite: tuple[int, bytes] | None = None
    new: list[tuple[int, bytes]] = []
    offset = 0
    if held:
        offset = BUNDLE_WIDTH - held
        assert stored is not None
        rewrite = (first, stored + _encode(entries[:offset]))
        first += 1
    for index in range(first, first + (len(entries) - offset + BUNDLE_WIDTH - 1) // BUNDLE_WIDTH):
        new.append((index, _encode(entries[offset : offset + BUNDLE_WIDTH])))
        offset += BUNDLE_WIDTH
    return rewrite, new


def _encode(entries: Sequence[EntryRow]) -> bytes:
    """:func:`~remembrancer.core.tiles.encode_entry_bundle` of the leaves, unchecked.

    The batch passed :func:`validate_batch` (every entry fits a uint16 length)
    and :func:`plan_bundles` passes at most 256 entries; this is the hot path
    of a raw append, twice as fast as the checking encoder.
    """
    return b"".join([len(e.leaf).to_bytes(2, "big") + e.leaf for e in entries])


def record_rows(
    batch: AppendBatch, log_id: int
) -> list[tuple[int, int, bytes | None, str | None, str | None, str | None]]:
    """``(log_id, index, event_hash, event_id, actor, nonce)`` of the batch's entries with keys.

    The entries :attr:`EntryRow.has_keys` selects (tested inline: this runs per entry).
    """
    start = batch.start
    return [
        (log_id, start + i, e.event_hash, e.event_id, e.actor, e.nonce)
        for i, e in enumerate(batch.entries)
        if e.event_hash is not None
        or e.event_id is not None
        or e.actor is not None
        or e.nonce is not None
    ]


def slice_bundles(
    namespace: str, start: int, end: int, bundles: Iterable[tuple[int, bytes]]
) -> list[bytes]:
    """Entries ``[start, end)`` out of the stored bundles covering them, in index order.

    Stops at the first missing bundle (the end of the log).
    """
    out: list[bytes] = []
    expect = start // BUNDLE_WIDTH
    for index, data in bundles:
        if index != expect:
            break
        base = index * BUNDLE_WIDTH
        out.extend(split_bundle(namespace, index, data)[max(start - base, 0) : end - base])
        expect += 1
    return out


def find_reuse(
    batch: AppendBatch,
    stored_event_ids: Callable[[list[str]], Collection[str]],
    stored_nonces: Callable[[list[tuple[str, str]]], Collection[tuple[str, str]]],
) -> ConflictError | None:
    """The error for the first entry of ``batch`` that reuses an event id or a nonce.

    ``stored_event_ids`` and ``stored_nonces`` answer, for a list of keys,
    which of them the store already holds (event ids in ``batch.namespace``;
    nonces as ``(actor, nonce)`` in any namespace).  Reuse within the batch
    counts too.  Entries are checked in order, the event id before the nonce,
    so every backend names the same culprit.
    """
    event_ids = [e.event_id for e in batch.entries if e.event_id is not None]
    nonces = [
        (e.actor, e.nonce) for e in batch.entries if e.actor is not None and e.nonce is not None
    ]
    old_ids = set(stored_event_ids(event_ids)) if event_ids else set()
    old_nonces = set(stored_nonces(nonces)) if nonces else set()
    seen_ids: set[str] = set()
    seen_nonces: set[tuple[str, str]] = set()
    for offset, entry in enumerate(batch.entries):
        index = batch.start + offset
        if entry.event_id is not None:
            if entry.event_id in old_ids or entry.event_id in seen_ids:
                return ConflictError(
                    f"event id {entry.event_id!r} was already used in {batch.namespace}",
                    code="event_id_reused",
                    details={
                        "namespace": batch.namespace,
                        "index": index,
                        "event_id": entry.event_id,
                        "within_batch": entry.event_id in seen_ids,
                    },
                )
            seen_ids.add(entry.event_id)
        if entry.actor is not None and entry.nonce is not None:
            pair = (entry.actor, entry.nonce)
            if pair in old_nonces or pair in seen_nonces:
                return ConflictError(
                    f"nonce {entry.nonce!r} was already used by {entry.actor}",
                    code="nonce_reused",
                    details={
                        "namespace": batch.namespace,
                        "index": index,
                        "actor": entry.actor,
                        "nonce": entry.nonce,
                        "within_batch": pair in seen_nonces,
                    },
                )
            seen_nonces.add(pair)
    return None


# --- checks shared by every backend's loader ------------------------------------------


def load_invalid(message: str, **details: object) -> StorageError:
    """The error for rows :meth:`Store.load` cannot store (code ``load_invalid``)."""
    return StorageError(message, code="load_invalid", details=details)


def not_empty(where: str) -> StorageError:
    """The error for a :meth:`Store.load` into a store that holds something."""
    return StorageError(
        f"{where} is not empty: a load (restore) goes into an empty store only",
        code="store_not_empty",
        details={"store": where},
    )


@dataclass(slots=True)
class _LoadedLog:
    size: int
    checkpoint: bytes
    next_bundle: int = 0
    head_checkpoint: bool = False


class LoadChecks:
    """What every backend's loader checks, so that all refuse the same loads.

    Each method validates rows as they stream past (wrap the iterable and
    store what it yields); :meth:`finish` checks, before the commit, that
    every log got all its entry bundles and the checkpoint of its head.
    Bundles must come in index order: bundle ``N`` of a log of size ``s``
    holds ``min(256, s - 256 N)`` entries.  The checkpoint stored at a log's
    size must be its head's checkpoint (``append`` stores both).
    """

    def __init__(self) -> None:
        self._logs: dict[str, _LoadedLog] = {}

    def log(self, state: LogState) -> None:
        ns = state.namespace
        if not isinstance(ns, str) or not ns:
            raise load_invalid("a log has no namespace")
        if ns in self._logs:
            raise load_invalid(f"the log {ns} is loaded twice", namespace=ns)
        if isinstance(state.size, bool) or not isinstance(state.size, int) or state.size < 0:
            raise load_invalid(f"the log {ns} has an invalid size", namespace=ns)
        if not isinstance(state.root_hash, bytes) or len(state.root_hash) != HASH_SIZE:
            raise load_invalid(f"the root hash of {ns} is not 32 bytes", namespace=ns)
        if not isinstance(state.checkpoint, bytes) or not state.checkpoint:
            raise load_invalid(f"the log {ns} has no signed checkpoint", namespace=ns)
        self._logs[ns] = _LoadedLog(state.size, state.checkpoint)

    def _known(self, namespace: str) -> _LoadedLog:
        log = self._logs.get(namespace)
        if log is None:
            raise load_invalid(
                f"rows of {namespace} come before its log (add_log first)", namespace=namespace
            )
        return log

    def bundles(
        self, namespace: str, bundles: Iterable[tuple[int, bytes]]
    ) -> Iterator[tuple[int, bytes]]:
        log = self._known(namespace)
        for index, data in bundles:
            if index != log.next_bundle:
                raise load_invalid(
                    f"entry bundle {index} of {namespace} is out of order "
                    f"(expected bundle {log.next_bundle})",
                    namespace=namespace,
                    bundle=index,
                )
            expected = min(BUNDLE_WIDTH, log.size - index * BUNDLE_WIDTH)
            if expected <= 0:
                raise load_invalid(
                    f"entry bundle {index} of {namespace} lies beyond the log size {log.size}",
                    namespace=namespace,
                    bundle=index,
                )
            if not isinstance(data, bytes):
                raise load_invalid("an entry bundle is not bytes", namespace=namespace)
            try:
                decode_entry_bundle(data, expected)
            except FormatError as e:
                raise load_invalid(
                    f"entry bundle {index} of {namespace} is not a bundle of {expected} "
                    f"entries: {e.message}",
                    namespace=namespace,
                    bundle=index,
                ) from e
            log.next_bundle += 1
            yield index, data

    def records(self, namespace: str, rows: Iterable[RecordRow]) -> Iterator[RecordRow]:
        log = self._known(namespace)
        for row in rows:
            index, event_hash = row.index, row.event_hash
            if not isinstance(index, int) or not 0 <= index < log.size:
                raise load_invalid(
                    f"a record of {namespace} has index {index!r} outside the log",
                    namespace=namespace,
                )
            if event_hash is not None and (
                not isinstance(event_hash, bytes) or len(event_hash) != HASH_SIZE
            ):
                raise load_invalid(
                    "an event hash is not 32 bytes", namespace=namespace, index=index
                )
            keys = (row.event_id, row.actor, row.nonce)
            if not all(k is None or isinstance(k, str) for k in keys) or (
                event_hash is None and keys == (None, None, None)
            ):
                raise load_invalid(
                    "a record row has no keys or a key that is not text",
                    namespace=namespace,
                    index=index,
                )
            yield row

    def tiles(
        self, namespace: str, tiles: Iterable[tuple[int, int, bytes]]
    ) -> Iterator[tuple[int, int, bytes]]:
        self._known(namespace)
        for level, index, hashes in tiles:
            width, rest = divmod(len(hashes), HASH_SIZE) if isinstance(hashes, bytes) else (0, 1)
            if level < 0 or index < 0 or rest or not 1 <= width <= TILE_WIDTH:
                raise load_invalid(
                    "a tile is not 1 to 256 hashes at a non-negative position",
                    namespace=namespace,
                    level=level,
                    index=index,
                )
            yield level, index, hashes

    def checkpoints(
        self, namespace: str, checkpoints: Iterable[StoredCheckpoint]
    ) -> Iterator[StoredCheckpoint]:
        log = self._known(namespace)
        for cp in checkpoints:
            if cp.namespace != namespace:
                raise load_invalid(
                    "a checkpoint belongs to another namespace",
                    namespace=namespace,
                    checkpoint_namespace=cp.namespace,
                )
            if not isinstance(cp.size, int) or not 0 <= cp.size <= log.size:
                raise load_invalid(
                    f"a checkpoint of {namespace} has size {cp.size!r}, beyond the log",
                    namespace=namespace,
                )
            if not isinstance(cp.note, bytes) or not cp.note or cp.time < 0:
                raise load_invalid(
                    "a checkpoint has no note or a negative time",
                    namespace=namespace,
                    size=cp.size,
                )
            if cp.size == log.size:
                if cp.note != log.checkpoint:
                    raise load_invalid(
                        f"the checkpoint of {namespace} at its size {log.size} is not its head's",
                        namespace=namespace,
                    )
                log.head_checkpoint = True
            yield cp

    def state(self, rows: Iterable[tuple[str, str, bytes]]) -> Iterator[tuple[str, str, bytes]]:
        for scope, key, value in rows:
            if not (isinstance(scope, str) and isinstance(key, str) and isinstance(value, bytes)):
                raise load_invalid("a state row is not (text, text, bytes)")
            yield scope, key, value

    def finish(self) -> None:
        for ns, log in self._logs.items():
            bundles = (log.size + BUNDLE_WIDTH - 1) // BUNDLE_WIDTH
            if log.next_bundle != bundles:
                raise load_invalid(
                    f"the log {ns} of size {log.size} got {log.next_bundle} of its "
                    f"{bundles} entry bundles",
                    namespace=ns,
                )
            if not log.head_checkpoint:
                raise load_invalid(
                    f"the log {ns} got no checkpoint at its size {log.size}", namespace=ns
                )
