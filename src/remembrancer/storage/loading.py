"""What every backend's loader checks (restore), so that all refuse the same loads.

:class:`LoadChecks` validates rows as they stream into :meth:`Store.load`
(``load_invalid``) and, before the commit, that every log got all its entry
bundles and its head's checkpoint; :func:`not_empty` is the refusal of a
load into a store that holds something (``store_not_empty``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from remembrancer.core.errors import FormatError, StorageError
from remembrancer.core.rfc6962 import HASH_SIZE
from remembrancer.core.tiles import TILE_WIDTH, decode_entry_bundle
from remembrancer.storage.base import BUNDLE_WIDTH, LogState, RecordRow, StoredCheckpoint


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
