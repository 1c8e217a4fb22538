"""The Store protocol: everything a node keeps durably.

Invariants every backend upholds (the conformance suite in
``tests/integration/test_store_conformance.py`` checks them):

- ``append`` is atomic: either every entry, tile and the new log state of the
  batch are committed together, or nothing is.  It returns only after the
  commit is durable, so a caller may acknowledge records once it returns.
- ``append`` refuses a batch whose ``start`` is not the current log size
  (:class:`~remembrancer.core.errors.ConflictError`, code ``log_size_moved``),
  so two writers can never interleave one log.
- Uniqueness: ``(namespace, event_id)`` and ``(actor, nonce)`` are unique
  across everything ever appended; a batch that would break either is refused
  whole (``ConflictError``, code ``event_id_reused`` or ``nonce_reused``).
- Tiles are stored per ``(namespace, level, index)`` as the concatenated
  32-byte hashes of that tile (C2SP tlog-tiles); a later write of the same
  tile replaces it with a wider one, never a narrower one.
- Small named state values support compare-and-swap, for the witness's
  atomic check-and-update and for scheduler state.
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
- A store refuses to open a database written by a newer schema version
  (``StorageError``, code ``schema_too_new``), and a database that holds
  tables but no Remembrancer schema marker (code ``schema_unknown``).
- Using a closed store raises ``StorageError`` (code ``store_closed``).

Only this package knows SQL.  The backends share no SQL; they share only the
pure checks below (:func:`validate_batch`, :func:`merge_tile`), so that they
refuse the same batches for the same reasons.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeAlias

from remembrancer.core.errors import ConflictError, StorageError

HASH_SIZE: Final = 32
TILE_WIDTH: Final = 256  # hashes per full tile (C2SP tlog-tiles)
MAX_ENTRY_SIZE: Final = 65535  # the tlog-tiles entry bundle limit


class _AnyValue(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _AnyValue.ANY
"""The ``expect`` of an unconditional :meth:`Store.put_state`."""

Expect: TypeAlias = bytes | Literal[_AnyValue.ANY] | None
"""What ``put_state`` compares with: ``ANY``, ``None`` (absent) or the exact bytes."""


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One log entry as stored: its leaf bytes and the keys it is found by.

    ``event_hash`` is 32 raw bytes (the SHA-256 of the record's signing
    input); ``event_id``, ``actor`` and ``nonce`` are ``None`` for raw entries
    that are not records.
    """

    leaf: bytes
    event_hash: bytes | None = None
    event_id: str | None = None
    actor: str | None = None
    nonce: str | None = None


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
        """Leaf bytes of entries ``[start, end)`` (fewer if the log is shorter)."""
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
                "an entry is larger than 65,535 bytes",
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
