"""The pure checks every backend applies to a batch, so that all refuse the same batches.

:func:`validate_batch` refuses a batch that is not self-consistent before
anything is written (``batch_invalid``); :func:`merge_tile` keeps tiles from
shrinking or changing (``tile_conflict``); :func:`plan_bundles` and
:func:`slice_bundles` decide the entry bundle bytes every backend stores;
:func:`find_reuse` names the first record that would break uniqueness.  No
SQL, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

from remembrancer.core.errors import ConflictError, FormatError, StorageError
from remembrancer.core.rfc6962 import HASH_SIZE
from remembrancer.core.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, decode_entry_bundle
from remembrancer.storage.base import BUNDLE_WIDTH, AppendBatch, EntryRow


def _invalid(message: str, **details: object) -> StorageError:
    return StorageError(message, code="batch_invalid", details=details)


def validate_batch(batch: AppendBatch, *, fencing: bool = False) -> None:
    """Refuse a batch that is not self-consistent (``StorageError``, ``batch_invalid``).

    Checks only what needs no stored data; the backends check ``start`` and
    uniqueness inside their transaction.
    """
    ns = batch.namespace
    if not isinstance(ns, str) or not ns:
        raise _invalid("the batch has no namespace")
    if batch.fence is not None and not fencing:
        raise StorageError(
            "this store is not shared between processes and takes no fencing token"
            " (a sequencer lease needs PostgreSQL)",
            code="fencing_unsupported",
        )
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
