"""An in-memory Store for tests: the same semantics as the durable backends.

Nothing survives the process.  One lock serialises every call, so the store
is thread-safe and every ``append`` is trivially atomic: it checks the whole
batch before it changes anything.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from remembrancer.core.errors import ConflictError, StorageError
from remembrancer.storage.base import (
    ANY,
    AppendBatch,
    EntryRow,
    Expect,
    FoundEntry,
    LogState,
    StoredCheckpoint,
    StoreStats,
    _AnyValue,
    find_reuse,
    merge_tile,
    validate_batch,
)

SCHEMA_VERSION: Final = 1


@dataclass(slots=True)
class _Log:
    state: LogState
    entries: list[EntryRow] = field(default_factory=list)
    tiles: dict[tuple[int, int], bytes] = field(default_factory=dict)
    by_event_id: dict[str, int] = field(default_factory=dict)
    by_event_hash: dict[bytes, int] = field(default_factory=dict)
    checkpoint_sizes: list[int] = field(default_factory=list)  # sorted
    checkpoints: dict[int, StoredCheckpoint] = field(default_factory=dict)


class MemoryStore:
    """A :class:`~remembrancer.storage.base.Store` held in dictionaries."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._logs: dict[str, _Log] = {}
        self._nonces: dict[tuple[str, str], tuple[str, int]] = {}
        self._state: dict[tuple[str, str], bytes] = {}

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the in-memory store is closed", code="store_closed")

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def stats(self) -> StoreStats:
        with self._lock:
            self._check_open()
            return StoreStats(
                backend=self.backend,
                schema_version=SCHEMA_VERSION,
                extra={
                    "logs": len(self._logs),
                    "entries": sum(len(log.entries) for log in self._logs.values()),
                },
            )

    # --- logs ------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(self._logs)

    def log_state(self, namespace: str) -> LogState | None:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            return None if log is None else log.state

    def append(self, batch: AppendBatch) -> None:
        validate_batch(batch)
        ns = batch.namespace
        with self._lock:
            self._check_open()
            log = self._logs.get(ns)
            size = 0 if log is None else log.state.size
            if size != batch.start:
                raise ConflictError(
                    f"the log {ns} has size {size}, not {batch.start}",
                    code="log_size_moved",
                    details={"namespace": ns, "size": size, "start": batch.start},
                )
            by_event_id = {} if log is None else log.by_event_id
            conflict = find_reuse(
                batch,
                lambda ids: {i for i in ids if i in by_event_id},
                lambda pairs: {p for p in pairs if p in self._nonces},
            )
            if conflict is not None:
                raise conflict
            stored_tiles = {} if log is None else log.tiles
            tile_writes = {}
            for level, index, hashes in batch.tiles:
                merged = merge_tile(ns, level, index, stored_tiles.get((level, index)), hashes)
                if merged is not None:
                    tile_writes[(level, index)] = bytes(merged)
            # Everything is checked: from here on nothing can fail.
            if log is None:
                log = self._logs[ns] = _Log(state=batch.state)
            for offset, entry in enumerate(batch.entries):
                index = batch.start + offset
                entry = EntryRow(
                    bytes(entry.leaf), entry.event_hash, entry.event_id, entry.actor, entry.nonce
                )
                log.entries.append(entry)
                if entry.event_id is not None:
                    log.by_event_id[entry.event_id] = index
                if entry.event_hash is not None:
                    log.by_event_hash.setdefault(entry.event_hash, index)
                if entry.actor is not None and entry.nonce is not None:
                    self._nonces[(entry.actor, entry.nonce)] = (ns, index)
            log.tiles.update(tile_writes)
            log.state = batch.state
            size = batch.state.size
            if size not in log.checkpoints:
                bisect.insort(log.checkpoint_sizes, size)
            log.checkpoints[size] = StoredCheckpoint(
                ns, size, bytes(batch.state.checkpoint), batch.checkpoint_time
            )

    def read_tiles(
        self, namespace: str, tiles: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            if log is None:
                return {}
            return {t: log.tiles[t] for t in tiles if t in log.tiles}

    def read_entries(self, namespace: str, start: int, end: int) -> list[bytes]:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            if log is None:
                return []
            start = max(start, 0)
            return [e.leaf for e in log.entries[start:end]] if end > start else []

    def find_event_hash(self, namespace: str, event_hash: bytes) -> FoundEntry | None:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            index = None if log is None else log.by_event_hash.get(event_hash)
            return None if index is None else FoundEntry(namespace, index, event_hash)

    def find_event_id(self, namespace: str, event_id: str) -> FoundEntry | None:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            index = None if log is None else log.by_event_id.get(event_id)
            if log is None or index is None:
                return None
            return FoundEntry(namespace, index, log.entries[index].event_hash)

    def find_nonce(self, actor: str, nonce: str) -> FoundEntry | None:
        with self._lock:
            self._check_open()
            found = self._nonces.get((actor, nonce))
            if found is None:
                return None
            ns, index = found
            return FoundEntry(ns, index, self._logs[ns].entries[index].event_hash)

    def checkpoint_at(self, namespace: str, size: int) -> StoredCheckpoint | None:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            return None if log is None else log.checkpoints.get(size)

    def checkpoints(
        self, namespace: str, *, after_size: int = -1, limit: int = 100
    ) -> list[StoredCheckpoint]:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            if log is None or limit <= 0:
                return []
            first = bisect.bisect_right(log.checkpoint_sizes, after_size)
            sizes = log.checkpoint_sizes[first : first + limit]
            return [log.checkpoints[s] for s in sizes]

    # --- small named state ----------------------------------------------------------

    def get_state(self, scope: str, key: str) -> bytes | None:
        with self._lock:
            self._check_open()
            return self._state.get((scope, key))

    def put_state(self, scope: str, key: str, value: bytes, *, expect: Expect = ANY) -> bool:
        with self._lock:
            self._check_open()
            if expect is not ANY and self._state.get((scope, key)) != expect:
                return False
            self._state[(scope, key)] = bytes(value)
            return True

    def delete_state(
        self, scope: str, key: str, *, expect: bytes | Literal[_AnyValue.ANY] = ANY
    ) -> bool:
        with self._lock:
            self._check_open()
            current = self._state.get((scope, key))
            if current is None or (expect is not ANY and current != expect):
                return False
            del self._state[(scope, key)]
            return True

    def list_state(self, scope: str) -> dict[str, bytes]:
        with self._lock:
            self._check_open()
            return {k: v for (s, k), v in sorted(self._state.items()) if s == scope}
