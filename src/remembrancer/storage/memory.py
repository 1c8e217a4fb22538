"""An in-memory Store for tests: the same semantics as the durable backends.

Nothing survives the process.  One lock serialises every call, so the store
is thread-safe and every ``append`` is trivially atomic: it checks the whole
batch before it changes anything.

Layout, per log: its entry bundles (a list of the encoded tlog-tiles bundles,
the last one possibly partial, exactly the bytes the durable backends store),
and for entries with keys only, the index of each event id and event hash
and the keys of each index; ``(actor, nonce)`` pairs are indexed across
logs.  Tiles and checkpoints are dictionaries.

:meth:`MemoryStore.snapshot` copies the (immutable) rows under the lock;
:meth:`MemoryStore.load` builds a new store aside and swaps it in at the end.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from remembrancer.core.errors import ConflictError, StorageError
from remembrancer.storage.base import (
    ANY,
    BUNDLE_WIDTH,
    AnchorReceiptRow,
    AppendBatch,
    CosignedRow,
    EvidenceRow,
    Expect,
    FederationReceiptRow,
    FoundEntry,
    LogState,
    RecordRow,
    StoredCheckpoint,
    StoreStats,
    _AnyValue,
    check_page,
    check_typed_rows,
)
from remembrancer.storage.checks import (
    find_reuse,
    merge_tile,
    plan_bundles,
    slice_bundles,
    validate_batch,
)
from remembrancer.storage.loading import LoadChecks, load_invalid, not_empty

SCHEMA_VERSION: Final = 2


@dataclass(slots=True)
class _Log:
    state: LogState
    bundles: list[bytes] = field(default_factory=list)  # bundle N holds entries N*256..
    tiles: dict[tuple[int, int], bytes] = field(default_factory=dict)
    records: dict[int, RecordRow] = field(default_factory=dict)  # entries with keys
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
        self._typed = _Typed()

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
                    "entries": sum(log.state.size for log in self._logs.values()),
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
            rewrite: tuple[int, bytes] | None = None
            new_bundles: list[tuple[int, bytes]] = []
            if batch.entries:
                first = batch.start // BUNDLE_WIDTH
                bundles = [] if log is None else log.bundles
                stored = bundles[first] if first < len(bundles) else None
                rewrite, new_bundles = plan_bundles(batch, stored)
                if new_bundles and new_bundles[0][0] != len(bundles):
                    raise StorageError(
                        f"the log {ns} holds entries beyond its recorded size",
                        code="log_inconsistent",
                        details={"namespace": ns, "start": batch.start},
                    )
            # Everything is checked: from here on nothing can fail.
            if log is None:
                log = self._logs[ns] = _Log(state=batch.state)
            if rewrite is not None:
                log.bundles[rewrite[0]] = rewrite[1]
            log.bundles.extend(data for _, data in new_bundles)
            for offset, entry in enumerate(batch.entries):
                if not entry.has_keys:
                    continue
                index = batch.start + offset
                log.records[index] = RecordRow(
                    index, entry.event_hash, entry.event_id, entry.actor, entry.nonce
                )
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
            start = max(start, 0)
            if log is None or end <= start:
                return []
            first, last = start // BUNDLE_WIDTH, (end - 1) // BUNDLE_WIDTH
            bundles = log.bundles
            covering = [(i, bundles[i]) for i in range(first, min(last + 1, len(bundles)))]
            return slice_bundles(namespace, start, end, covering)

    def read_bundle(self, namespace: str, index: int) -> bytes | None:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            if log is None or not 0 <= index < len(log.bundles):
                return None
            return log.bundles[index]

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
            return FoundEntry(namespace, index, log.records[index].event_hash)

    def find_nonce(self, actor: str, nonce: str) -> FoundEntry | None:
        with self._lock:
            self._check_open()
            return self._found_nonce((actor, nonce))

    def _found_nonce(self, pair: tuple[str, str]) -> FoundEntry | None:
        found = self._nonces.get(pair)
        if found is None:
            return None
        ns, index = found
        return FoundEntry(ns, index, self._logs[ns].records[index].event_hash)

    def find_keys(
        self,
        namespace: str,
        event_ids: Sequence[str],
        nonces: Sequence[tuple[str, str]],
    ) -> tuple[dict[str, FoundEntry], dict[tuple[str, str], FoundEntry]]:
        with self._lock:
            self._check_open()
            log = self._logs.get(namespace)
            by_id: dict[str, FoundEntry] = {}
            if log is not None:
                for event_id in event_ids:
                    index = log.by_event_id.get(event_id)
                    if index is not None:
                        by_id[event_id] = FoundEntry(
                            namespace, index, log.records[index].event_hash
                        )
            by_nonce: dict[tuple[str, str], FoundEntry] = {}
            for actor, nonce in nonces:
                found = self._found_nonce((actor, nonce))
                if found is not None:
                    by_nonce[(actor, nonce)] = found
            return by_id, by_nonce

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

    def list_state_page(
        self, scope: str, *, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> list[tuple[str, bytes]]:
        check_page(limit)
        with self._lock:
            self._check_open()
            keys = sorted(k for (s, k) in self._state if s == scope and k.startswith(prefix)
                          and (after is None or k > after))  # fmt: skip
            return [(k, self._state[(scope, k)]) for k in keys[:limit]]

    # --- typed state ---------------------------------------------------------------------

    def anchor_receipt(self, namespace: str, size: int) -> AnchorReceiptRow | None:
        with self._lock:
            self._check_open()
            return self._typed.anchors.get((namespace, size))

    def put_anchor_receipt(self, row: AnchorReceiptRow) -> None:
        with self._lock:
            self._check_open()
            self._typed.anchors[(row.namespace, row.size)] = row

    def anchor_receipts(
        self, namespace: str, *, after: int = -1, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        check_page(limit)
        with self._lock:
            self._check_open()
            rows = [r for (ns, size), r in self._typed.anchors.items()
                    if ns == namespace and size > after]  # fmt: skip
        return sorted(rows, key=lambda r: r.size)[:limit]

    def unfinished_anchor_receipts(
        self, *, after: tuple[str, int] | None = None, limit: int = 100
    ) -> list[AnchorReceiptRow]:
        check_page(limit)
        with self._lock:
            self._check_open()
            keys = sorted(k for k, r in self._typed.anchors.items()
                          if not r.finished and (after is None or k > after))  # fmt: skip
            return [self._typed.anchors[k] for k in keys[:limit]]

    def get_cosigned(self, origin: str) -> CosignedRow | None:
        with self._lock:
            self._check_open()
            return self._typed.cosigned.get(origin)

    def put_cosigned(self, row: CosignedRow, *, expect_size: int | None) -> bool:
        with self._lock:
            self._check_open()
            held = self._typed.cosigned.get(row.origin)
            if (None if held is None else held.size) != expect_size:
                return False
            self._typed.cosigned[row.origin] = row
            return True

    def cosigned_origins(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(self._typed.cosigned)

    def federation_receipt(self, namespace: str, receipt_id: str) -> FederationReceiptRow | None:
        with self._lock:
            self._check_open()
            return self._typed.receipts.get((namespace, receipt_id))

    def put_federation_receipt(self, row: FederationReceiptRow, *, expect: Expect = ANY) -> bool:
        with self._lock:
            self._check_open()
            key = (row.namespace, row.receipt_id)
            held = self._typed.receipts.get(key)
            if expect is not ANY and (None if held is None else held.receipt) != expect:
                return False
            self._typed.receipts[key] = row
            return True

    def federation_receipts(
        self,
        namespace: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[FederationReceiptRow]:
        check_page(limit)
        with self._lock:
            self._check_open()
            keys = sorted(k for k in self._typed.receipts
                          if (namespace is None or k[0] == namespace)
                          and (after is None or k > after))  # fmt: skip
            return [self._typed.receipts[k] for k in keys[:limit]]

    def federation_receipt_count(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._typed.receipts)

    def keep_evidence(self, row: EvidenceRow, *, per_subject: int) -> str | None:
        with self._lock:
            self._check_open()
            kept = self._typed.evidence_incidents(row.subject)
            if row.incident in kept:
                return kept[row.incident]
            if len(kept) >= per_subject:
                return None
            self._typed.evidence.setdefault(row.ref, row)
            return row.ref

    def evidence_file(self, ref: str) -> bytes | None:
        with self._lock:
            self._check_open()
            row = self._typed.evidence.get(ref)
            return None if row is None else row.data

    def evidence_incidents(self, subject: str) -> dict[str, str]:
        with self._lock:
            self._check_open()
            return self._typed.evidence_incidents(subject)

    def evidence_page(self, *, after: str | None = None, limit: int = 100) -> list[EvidenceRow]:
        check_page(limit)
        with self._lock:
            self._check_open()
            refs = sorted(r for r in self._typed.evidence if after is None or r > after)
            return [self._typed.evidence[r] for r in refs[:limit]]

    # --- export and import -----------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[_MemorySnapshot]:
        with self._lock:
            self._check_open()
            logs = {
                ns: _Log(
                    state=log.state,
                    bundles=list(log.bundles),
                    tiles=dict(log.tiles),
                    records=dict(log.records),
                    checkpoint_sizes=list(log.checkpoint_sizes),
                    checkpoints=dict(log.checkpoints),
                )
                for ns, log in self._logs.items()
            }
            state = sorted((s, k, v) for (s, k), v in self._state.items())
            typed = self._typed.copy()
        yield _MemorySnapshot(logs, state, typed)

    @contextmanager
    def load(self) -> Iterator[_MemoryLoader]:
        with self._lock:
            self._check_open()
            if self._logs or self._state or self._typed:
                raise not_empty("the in-memory store")
        loader = _MemoryLoader()
        yield loader
        loader.checks.finish()
        with self._lock:
            self._check_open()
            if self._logs or self._state or self._typed:
                raise not_empty("the in-memory store")
            self._logs = loader.logs
            self._nonces = loader.nonces
            self._state = loader.state
            self._typed = loader.typed


@dataclass(slots=True)
class _Typed:
    """The typed tables: anchor receipts, cosigned checkpoints, federation receipts."""

    anchors: dict[tuple[str, int], AnchorReceiptRow] = field(default_factory=dict)
    cosigned: dict[str, CosignedRow] = field(default_factory=dict)
    receipts: dict[tuple[str, str], FederationReceiptRow] = field(default_factory=dict)
    evidence: dict[str, EvidenceRow] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.anchors or self.cosigned or self.receipts or self.evidence)

    def copy(self) -> _Typed:
        return _Typed(dict(self.anchors), dict(self.cosigned), dict(self.receipts),
                      dict(self.evidence))  # fmt: skip

    def evidence_incidents(self, subject: str) -> dict[str, str]:
        return {r.incident: r.ref for r in self.evidence.values() if r.subject == subject}


class _MemorySnapshot:
    def __init__(
        self, logs: dict[str, _Log], state: list[tuple[str, str, bytes]], typed: _Typed
    ) -> None:
        self._logs = logs
        self._state = state
        self._typed = typed

    def anchor_receipts(self) -> Iterator[AnchorReceiptRow]:
        return iter([self._typed.anchors[k] for k in sorted(self._typed.anchors)])

    def cosigned(self) -> Iterator[CosignedRow]:
        return iter([self._typed.cosigned[k] for k in sorted(self._typed.cosigned)])

    def federation_receipts(self) -> Iterator[FederationReceiptRow]:
        return iter([self._typed.receipts[k] for k in sorted(self._typed.receipts)])

    def evidence(self) -> Iterator[EvidenceRow]:
        return iter([self._typed.evidence[k] for k in sorted(self._typed.evidence)])

    def logs(self) -> list[LogState]:
        return [self._logs[ns].state for ns in sorted(self._logs)]

    def bundles(self, namespace: str) -> Iterator[tuple[int, bytes]]:
        log = self._logs.get(namespace)
        return iter(enumerate(log.bundles) if log else ())

    def records(self, namespace: str) -> Iterator[RecordRow]:
        log = self._logs.get(namespace)
        return iter([log.records[i] for i in sorted(log.records)] if log else ())

    def tiles(self, namespace: str) -> Iterator[tuple[int, int, bytes]]:
        log = self._logs.get(namespace)
        return iter(sorted((lv, ix, h) for (lv, ix), h in log.tiles.items()) if log else ())

    def checkpoints(self, namespace: str) -> Iterator[StoredCheckpoint]:
        log = self._logs.get(namespace)
        return iter([log.checkpoints[s] for s in log.checkpoint_sizes] if log else ())

    def state(self) -> Iterator[tuple[str, str, bytes]]:
        return iter(self._state)


class _MemoryLoader:
    """Builds the contents of a store aside; :meth:`MemoryStore.load` swaps them in."""

    def __init__(self) -> None:
        self.checks = LoadChecks()
        self.logs: dict[str, _Log] = {}
        self.nonces: dict[tuple[str, str], tuple[str, int]] = {}
        self.state: dict[tuple[str, str], bytes] = {}
        self.typed = _Typed()

    def add_anchor_receipts(self, rows: Iterable[AnchorReceiptRow]) -> None:
        for row in check_typed_rows(rows, AnchorReceiptRow):
            key = (row.namespace, row.size)
            if key in self.typed.anchors:
                raise load_invalid(f"the anchor receipt {key} is loaded twice")
            self.typed.anchors[key] = row

    def add_cosigned(self, rows: Iterable[CosignedRow]) -> None:
        for row in check_typed_rows(rows, CosignedRow):
            if row.origin in self.typed.cosigned:
                raise load_invalid(f"the cosigned checkpoint of {row.origin} is loaded twice")
            self.typed.cosigned[row.origin] = row

    def add_federation_receipts(self, rows: Iterable[FederationReceiptRow]) -> None:
        for row in check_typed_rows(rows, FederationReceiptRow):
            key = (row.namespace, row.receipt_id)
            if key in self.typed.receipts:
                raise load_invalid(f"the federation receipt {row.cursor} is loaded twice")
            self.typed.receipts[key] = row

    def add_evidence(self, rows: Iterable[EvidenceRow]) -> None:
        for row in check_typed_rows(rows, EvidenceRow):
            if row.ref in self.typed.evidence:
                raise load_invalid(f"the evidence {row.ref} is loaded twice")
            if row.incident in self.typed.evidence_incidents(row.subject):
                raise load_invalid(f"incident {row.incident} of {row.subject} is loaded twice")
            self.typed.evidence[row.ref] = row

    def add_log(self, state: LogState) -> None:
        self.checks.log(state)
        self.logs[state.namespace] = _Log(state=state)

    def add_bundles(self, namespace: str, bundles: Iterable[tuple[int, bytes]]) -> None:
        log = self.logs.get(namespace)
        for _, data in self.checks.bundles(namespace, bundles):
            assert log is not None  # the checks refuse rows of unknown logs
            log.bundles.append(bytes(data))

    def add_records(self, namespace: str, rows: Iterable[RecordRow]) -> None:
        log = self.logs.get(namespace)
        for row in self.checks.records(namespace, rows):
            assert log is not None
            index = row.index
            if index in log.records:
                raise load_invalid(f"record {index} of {namespace} is loaded twice")
            if row.event_id is not None:
                if row.event_id in log.by_event_id:
                    raise load_invalid(
                        f"event id {row.event_id!r} is used twice in {namespace}", index=index
                    )
                log.by_event_id[row.event_id] = index
            if row.event_hash is not None:
                found = log.by_event_hash.get(row.event_hash)
                if found is None or index < found:
                    log.by_event_hash[row.event_hash] = index
            if row.actor is not None and row.nonce is not None:
                pair = (row.actor, row.nonce)
                if pair in self.nonces:
                    raise load_invalid(f"nonce {row.nonce!r} of {row.actor} is used twice")
                self.nonces[pair] = (namespace, index)
            log.records[index] = row

    def add_tiles(self, namespace: str, tiles: Iterable[tuple[int, int, bytes]]) -> None:
        log = self.logs.get(namespace)
        for level, index, hashes in self.checks.tiles(namespace, tiles):
            assert log is not None
            if (level, index) in log.tiles:
                raise load_invalid(f"tile {level}/{index} of {namespace} is loaded twice")
            log.tiles[(level, index)] = bytes(hashes)

    def add_checkpoints(self, namespace: str, checkpoints: Iterable[StoredCheckpoint]) -> None:
        log = self.logs.get(namespace)
        for cp in self.checks.checkpoints(namespace, checkpoints):
            assert log is not None
            if cp.size in log.checkpoints:
                raise load_invalid(f"the checkpoint of {namespace} at {cp.size} is loaded twice")
            bisect.insort(log.checkpoint_sizes, cp.size)
            log.checkpoints[cp.size] = StoredCheckpoint(namespace, cp.size, bytes(cp.note), cp.time)

    def add_state(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        for scope, key, value in self.checks.state(rows):
            if (scope, key) in self.state:
                raise load_invalid(f"the state {scope}/{key} is loaded twice")
            self.state[(scope, key)] = bytes(value)
