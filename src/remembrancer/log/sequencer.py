"""The sequencer: admits records, integrates them in batches, signs checkpoints.

One :class:`Sequencer` serves every namespace of a node.  For each record:

1. on receipt, in the caller's task: parse (rule 1), namespace lookup, time
   window, schema policy and payload (rules 2 to 4), governance sanity;
2. queued to its namespace's batcher, which gathers up to ``max_batch``
   records or waits ``max_wait`` seconds, then checks signatures (rules 5
   and 6) on a thread pool, split across the cores (PyNaCl releases the GIL),
   or, with ``verify_processes``, for batches of at
   least ``process_min_batch`` records, in worker processes that need no GIL
   of ours (:mod:`remembrancer.log.verifier`); up to two batches are being
   checked at once, so the workers start on the next batch while this
   process decides on and commits the previous one;
3. integrated in the order the batches were formed, on the namespace's
   writer thread: replay check against storage and the batch itself
   (rule 7), leaf hashes, tiles, a new checkpoint signed
   by the node key with origin ``<prefix>/<namespace>``, and ONE storage
   transaction holding entries, tiles and the checkpoint;
4. only after that commit, each record is acknowledged with its receipt
   (index, inclusion proof at the new size, the signed checkpoint).

A failed batch commit fails every record of the batch and restores the
in-memory tree, so nothing unacknowledged is half-applied and nothing
acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Protocol, TypeVar

from remembrancer.core import governance
from remembrancer.core.admission import (
    SignatureReport,
    check_policy,
    check_replay,
    check_signatures,
    lookup_namespace,
    signature_jobs,
)
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    NotFoundError,
    PushbackError,
    RemembrancerError,
    StorageError,
)
from remembrancer.core.frozen import positional_maker
from remembrancer.core.keys import PublicKey, SigningKey, public_from_did_key
from remembrancer.core.namespace import NamespaceConfig
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import (
    CompactRange,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
)
from remembrancer.core.schema import SchemaRegistry
from remembrancer.core.tiles import MAX_ENTRY_SIZE, Tile, TileNodeReader
from remembrancer.log.schemas import bundled_schemas
from remembrancer.log.tiles import BatchProofs, TileWriter
from remembrancer.log.verifier import discard_pool, pack_jobs, shared_pool, verify_packed
from remembrancer.storage.base import AppendBatch, EntryRow, Fence, FoundEntry, LogState, Store

log = logging.getLogger("remembrancer.sequencer")
T = TypeVar("T")
GOVERNANCE_SCOPE = "governance"
# Batches whose signatures are being checked at once, per log: the next batch is
# queued to the workers before the previous one's verdicts are back.  One more
# batch may wait for integration; beyond that the loop waits.
VERIFY_DEPTH = 2
# A batch is appended without looking its keys up first; when the store refuses
# one for reusing a key, it and the next batches of its log look them up.
KEY_REUSE_CODES = frozenset(("event_id_reused", "nonce_reused"))
LOOKUP_BATCHES_AFTER_REUSE = 16
GOVERNANCE_SAVE_EVERY = 10_000  # entries between saves of an unchanged governance state


class NamespaceProvider(Protocol):
    def current(self) -> Mapping[str, NamespaceConfig]: ...


@dataclass(frozen=True, slots=True)
class Receipt:
    """The API's JSON receipt (DESIGN.md 3.7) for one admitted record."""

    event_hash: str
    namespace: str
    origin: str
    index: int
    size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed note
    anchors: tuple[Mapping[str, Any], ...] = ()
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "eventHash": self.event_hash,
            "namespace": self.namespace,
            "origin": self.origin,
            "index": self.index,
            "treeSize": self.size,
            "proof": [_b2a(h, newline=False).decode("ascii") for h in self.proof],
            "checkpoint": self.checkpoint.decode("utf-8"),
            "anchors": [dict(a) for a in self.anchors],
        }


_make_receipt: Final = positional_maker(Receipt)  # one per admitted record
# How the canonical form of a record that governance.fold looks at names its type.
_FOLDED_MARKERS: Final = tuple(
    b'"event:type":' + json.dumps(t).encode() for t in sorted(governance.FOLDED_TYPES)
)
_b2a: Final = binascii.b2a_base64  # base64.b64encode without its Python layer


@dataclass(slots=True)
class _Pending:
    record: Record
    ns: NamespaceConfig
    future: asyncio.Future[Receipt]
    report: SignatureReport | None = None


@dataclass(slots=True)
class _Log:
    namespace: str
    origin: str
    writer: TileWriter | None = None
    queue: list[_Pending] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    inflight: int = 0
    gov: governance.GovernanceState = field(default_factory=governance.GovernanceState)
    gov_saved: int = 0  # the log size the stored governance state covers
    checkpoint: bytes = b""
    # Batches left that look their keys up before appending (after a key reuse).
    lookups: int = 0


class Sequencer:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        node_key: SigningKey,
        origin_prefix: str,
        namespaces: NamespaceProvider,
        schemas: SchemaRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_batch: int = 2048,
        max_wait: float = 0.0,
        max_pending: int = 20_000,
        verify_threads: int = 2,
        verify_processes: bool = False,
        process_min_batch: int = 32,
    ) -> None:
        self.store = store
        self.node_key = node_key
        self.origin_prefix = origin_prefix.rstrip("/")
        self.namespaces = namespaces
        self.schemas = schemas or bundled_schemas()
        self.clock = clock
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_pending = max_pending
        self._verify_pool = ThreadPoolExecutor(verify_threads, thread_name_prefix="verify")
        self._verify_threads = verify_threads
        # Batches of at least ``process_min_batch`` records have their signatures
        # verified by worker processes (remembrancer.log.verifier); smaller ones
        # (and every batch if the workers fail) by the thread pool.
        self.verify_processes = verify_processes
        self.process_min_batch = process_min_batch
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="integrate")
        self._logs: dict[str, _Log] = {}
        self._heads: dict[str, LogState] = {}
        self._readers: dict[str, TileNodeReader] = {}
        self._readers_lock = threading.Lock()
        self._closing = False
        self.on_batch: list[Callable[[str, int, int, bytes], None]] = []  # ns, start, end, note
        # Several processes over one store (node/ha.py): ``fence`` gives the
        # lease's fencing token every append carries; ``authoritative`` says
        # whether this process's cached log heads are the truth (it sequences),
        # else every read takes the head from the store; ``on_fenced`` hears of
        # an append the store refused because the lease moved on.
        self.fence: Callable[[], Fence | None] = lambda: None
        self.authoritative: Callable[[], bool] = lambda: True
        self.on_fenced: Callable[[], None] = lambda: None
        # CPU seconds spent per stage, summed over every batch (for the benchmark's
        # per-stage account; measured per batch, so it costs nothing per record).
        self.stage_cpu: dict[str, float] = {"verify": 0.0, "integrate": 0.0}

    def origin(self, namespace: str) -> str:
        return f"{self.origin_prefix}/{namespace}"

    # --- submission ----------------------------------------------------------
    def precheck(self, data: bytes | Record) -> tuple[Record, NamespaceConfig]:
        """Rules 1 to 4 (cheap, no signature checks); raises on refusal."""
        record = data if isinstance(data, Record) else Record.from_bytes(data)
        ns = lookup_namespace(record, self.namespaces.current())
        check_policy(record, ns, int(self.clock()), self.schemas)
        governance.check_proposal(record, ns)
        return record, ns

    async def submit(self, data: bytes | Record) -> Receipt:
        """Admit one record; return its receipt once it is durably in the log."""
        if self._closing:
            raise PushbackError("the node is shutting down", code="shutting_down", retry_after=5)
        record, ns = self.precheck(data)
        return await self._enqueue(record, ns)

    async def submit_checked(self, record: Record, ns: NamespaceConfig) -> Receipt:
        """:meth:`submit` for a record that :meth:`precheck` has just passed
        (``ns`` is what it returned): rules 1 to 4 are not checked twice."""
        if self._closing:
            raise PushbackError("the node is shutting down", code="shutting_down", retry_after=5)
        return await self._enqueue(record, ns)

    def _enqueue(self, record: Record, ns: NamespaceConfig) -> asyncio.Future[Receipt]:
        """Queue a prechecked record; the future is its receipt (a plain call, so
        the caller's task waits on the future itself, one coroutine less)."""
        handle = self._handle(record.namespace)
        if len(handle.queue) >= self.max_pending:
            raise PushbackError(
                f"{record.namespace} has {len(handle.queue)} records waiting; retry shortly",
                code="overloaded",
                retry_after=1,
            )
        assert handle.task is not None  # running in this loop (see _handle)
        future: asyncio.Future[Receipt] = handle.task.get_loop().create_future()
        handle.queue.append(_Pending(record, ns, future))
        handle.wakeup.set()
        return future

    async def close(self) -> None:
        """Stop accepting records, drain every queue, stop the workers."""
        self._closing = True
        for handle in self._logs.values():
            handle.wakeup.set()
        tasks = [h.task for h in self._logs.values() if h.task is not None]
        for handle in self._logs.values():
            while handle.queue or handle.inflight:
                await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._verify_pool.shutdown(wait=True)
        self._write_pool.shutdown(wait=True)

    def _handle(self, namespace: str) -> _Log:
        handle = self._logs.get(namespace)
        if handle is None:
            handle = self._logs[namespace] = _Log(namespace, self.origin(namespace))
        if handle.task is None or handle.task.done():
            handle.task = asyncio.get_running_loop().create_task(
                self._run(handle), name=f"sequencer:{namespace}"
            )
        return handle

    async def _run(self, handle: _Log) -> None:
        """Gather batches, check their signatures and integrate them in order.

        Up to :data:`VERIFY_DEPTH` batches are being verified at once, and
        verification overlaps integration: the workers (processes or threads)
        start on batch N+1 as soon as it is formed, not once batch N's verdicts
        are back, so they are not left idle while this process decides on N's
        verdicts and commits it.  Batches are integrated strictly in the order
        they were formed."""
        integrating: asyncio.Task[None] | None = None
        verifying: collections.deque[asyncio.Task[None]] = collections.deque()
        stages: collections.deque[asyncio.Task[None]] = collections.deque()
        loop = asyncio.get_running_loop()
        while True:
            for tasks in (verifying, stages):
                while tasks and tasks[0].done():
                    tasks.popleft()
            if len(verifying) >= VERIFY_DEPTH or len(stages) > VERIFY_DEPTH:
                await asyncio.wait((stages[0],) if len(stages) > VERIFY_DEPTH else (verifying[0],))
                continue
            if not handle.queue:
                handle.wakeup.clear()
                await handle.wakeup.wait()
                continue
            # Group commit: whatever arrived while the previous batches were being
            # verified forms the next batch; ``max_wait`` adds an
            # optional gathering delay for small queues.
            if len(handle.queue) < self.max_batch and not self._closing:
                await asyncio.sleep(self.max_wait)
            batch = handle.queue[: self.max_batch]
            del handle.queue[: len(batch)]
            handle.inflight += len(batch)
            verified = loop.create_task(self._verify(batch))
            verifying.append(verified)
            integrating = loop.create_task(
                self._verified_then_integrate(handle, batch, verified, integrating)
            )
            stages.append(integrating)

    async def _verified_then_integrate(
        self,
        handle: _Log,
        batch: list[_Pending],
        verified: asyncio.Task[None],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Integrate ``batch`` once its signatures are checked and the batch
        before it (``previous``) is integrated; a failed verification fails
        this batch only."""
        try:
            await asyncio.wait((verified,))
            if previous is not None:
                await asyncio.wait((previous,))
        except BaseException:
            self._fail(handle, batch, PushbackError("the node is shutting down",
                                                    code="shutting_down", retry_after=5))  # fmt: skip
            handle.inflight -= len(batch)
            raise
        error = None if verified.cancelled() else verified.exception()
        if verified.cancelled() or error is not None:
            if not isinstance(error, Exception):
                error = RuntimeError(f"signature verification did not finish ({error!r})")
            self._fail(handle, batch, error)
            handle.inflight -= len(batch)
            return
        await self._integrate_batch(handle, batch)

    async def _integrate_batch(self, handle: _Log, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            good = [p for p in batch if not p.future.done()]
            if good:
                receipts = await loop.run_in_executor(
                    self._write_pool, self._integrate, handle, good
                )
                for pending, receipt in zip(good, receipts, strict=True):
                    if not pending.future.done():
                        if isinstance(receipt, RemembrancerError):
                            pending.future.set_exception(receipt)
                        else:
                            pending.future.set_result(receipt)
        except Exception as e:  # a storage failure: fail the batch, keep serving
            self._fail(handle, batch, e)
        finally:
            handle.inflight -= len(batch)

    def _fail(self, handle: _Log, batch: list[_Pending], e: Exception) -> None:
        log.error("batch for %s failed: %s", handle.namespace, e)
        err = (
            e
            if isinstance(e, RemembrancerError)
            else StorageError(f"the batch could not be committed: {e}", code="storage_failed")
        )
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(err)

    async def _verify(self, batch: list[_Pending]) -> None:
        if self.verify_processes and len(batch) >= self.process_min_batch:
            pool = shared_pool(self._verify_threads)
            try:
                await self._verify_in_processes(batch, pool)
                return
            except (BrokenProcessPool, OSError, RuntimeError) as e:
                log.warning("verification workers failed (%s); verifying in threads", e)
                discard_pool(pool)
                for pending in batch:
                    pending.report = None
        loop = asyncio.get_running_loop()
        n = self._verify_threads
        chunks = [batch[i::n] for i in range(n)]
        node_did = self.node_key.did
        spent = await asyncio.gather(
            *(loop.run_in_executor(self._verify_pool, self._verify_chunk, c, node_did)
              for c in chunks if c)
        )  # fmt: skip
        self.stage_cpu["verify"] += sum(spent)

    async def _verify_in_processes(self, batch: list[_Pending], pool: ProcessPoolExecutor) -> None:
        """Rules 5 and 6 with the signatures verified by worker processes
        (:mod:`remembrancer.log.verifier`), then decided here by the same code
        (``check_signatures`` with their verdicts)."""
        started = time.thread_time()
        owners: list[tuple[int, str, bytes]] = []  # (batch position, kid, sig) per job
        skipped: set[int] = set()  # positions of records with a job not sent
        chunks: list[bytes] = []
        per_chunk = max(1, -(-len(batch) // self._verify_threads))  # records per worker
        for first in range(0, len(batch), per_chunk):
            parts: list[bytes] = []
            for pos in range(first, min(first + per_chunk, len(batch))):
                pending = batch[pos]
                pairs = []
                for kid, sig in signature_jobs(pending.record, pending.ns):
                    try:
                        pairs.append((_public_raw(kid), sig))
                    except RemembrancerError:
                        skipped.add(pos)  # check_signatures meets it again and refuses the record
                        continue
                    owners.append((pos, kid, sig))
                if pairs:
                    pack_jobs(parts, pending.record.signing_input, pairs)
            if parts:
                chunks.append(b"".join(parts))
        spent = time.thread_time() - started
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, verify_packed, c) for c in chunks)
        )  # fmt: skip
        started = time.thread_time()
        flat = b"".join(r[0] for r in results)
        # The records with a signature that failed, or that was not sent (its kid
        # is no key): their verdicts by (kid, sig).  Every other record had all its
        # signature_jobs verify, and check_signatures asks only for those (a test
        # holds the two to that: test_check_signatures_verifies_only_its_jobs).
        known: dict[int, dict[tuple[str, bytes], bool]] = {pos: {} for pos in skipped}
        for (pos, _, _), ok in zip(owners, flat, strict=True):
            if ok != 1 and pos not in known:
                known[pos] = {}
        if known:
            for (pos, kid, sig), ok in zip(owners, flat, strict=True):
                if pos in known:
                    known[pos][(kid, sig)] = ok == 1
        node_did = self.node_key.did
        for pos, pending in enumerate(batch):
            record = pending.record
            verdicts = known.get(pos)
            verify = _every_job_verified if verdicts is None else _verdict_of(verdicts, record)
            try:
                pending.report = check_signatures(record, pending.ns, node_did=node_did,
                                                  verify=verify)  # fmt: skip
            except RemembrancerError as e:
                pending.report = None
                if not pending.future.done():
                    pending.future.set_exception(e)
        worker = sum(r[1] for r in results)
        self.stage_cpu["verify"] += spent + time.thread_time() - started + worker
        self.stage_cpu["worker"] = self.stage_cpu.get("worker", 0.0) + worker

    @staticmethod
    def _verify_chunk(chunk: list[_Pending], node_did: str) -> float:
        started = time.thread_time()
        for pending in chunk:
            try:
                pending.report = check_signatures(pending.record, pending.ns, node_did=node_did)
            except RemembrancerError as e:
                fut = pending.future
                fut.get_loop().call_soon_threadsafe(_set_exception, fut, e)
                pending.report = None
        return time.thread_time() - started

    def attach_cosignatures(self, namespace: str, size: int, note: bytes) -> bool:
        """Replace the stored checkpoint note at ``size`` with ``note`` (the same
        checkpoint with witness cosignatures added) if ``size`` is still the
        log's size; serialised with integration on the writer thread.  Returns
        whether it was attached.  The caller has verified the cosignatures."""

        def work() -> bool:
            state = self.head(namespace)
            if state is None or state.size != size:
                return False
            new = LogState(namespace, size, state.root_hash, note)
            try:
                self.store.append(
                    AppendBatch(namespace, size, [], [], new, checkpoint_time=int(self.clock()),
                                fence=self.fence())
                )  # fmt: skip
            except ConflictError:
                return False  # the log moved on meanwhile
            self._heads[namespace] = new
            handle = self._logs.get(namespace)
            if handle is not None and handle.writer is not None and handle.writer.size == size:
                handle.checkpoint = note
            return True

        return self._write_pool.submit(work).result()

    def append_raw(self, namespace: str, entries: Sequence[bytes]) -> tuple[int, int]:
        """Append pre-verified raw entries (no admission) durably; return [start, end).

        For trusted bulk loads and benchmarks; entries are tlog-tiles entries
        of at most 65,535 bytes.  Runs on the writer thread, serialised with
        record batches.
        """
        for e in entries:
            if len(e) > MAX_ENTRY_SIZE:
                raise FormatError(
                    f"an entry is at most {MAX_ENTRY_SIZE:,} bytes", code="entry_too_large"
                )

        def work() -> tuple[int, int]:
            handle = self._logs.get(namespace) or self._logs.setdefault(
                namespace, _Log(namespace, self.origin(namespace))
            )
            writer = self._writer(handle)
            start = writer.size
            rows = [EntryRow(e) for e in entries]
            self._commit(handle, writer, rows, [hash_leaf(e) for e in entries])
            return start, writer.size

        return self._write_pool.submit(work).result()

    # --- integration (writer thread) ------------------------------------------
    def _writer(self, handle: _Log) -> TileWriter:
        if handle.writer is None:
            state = self.store.log_state(handle.namespace)
            size = state.size if state else 0
            reader = self._store_reader(handle.namespace, size)
            handle.writer = TileWriter.resume(
                size, reader.read_nodes, lambda ids: self.store.read_tiles(handle.namespace, ids)
            )
            handle.checkpoint = state.checkpoint if state else b""
            handle.gov = self._load_governance(handle.namespace, size)
            handle.gov_saved = size
        return handle.writer

    def _integrate(self, handle: _Log, batch: list[_Pending]) -> list[Receipt | RemembrancerError]:
        started = time.thread_time()
        try:
            if handle.lookups <= 0:
                # Optimistic: no record of the batch reuses a stored key (the store's
                # unique keys refuse the whole batch if one does); keys repeated
                # within the batch are found here all the same.
                try:
                    return self._integrate_timed(handle, batch, lookup=False)
                except ConflictError as e:
                    if e.code not in KEY_REUSE_CODES:
                        raise
                    # A resubmission or a replay: rule 7 decides record by record,
                    # with the stored keys looked up, for this and the next batches.
                    handle.lookups = LOOKUP_BATCHES_AFTER_REUSE
            handle.lookups -= 1
            return self._integrate_timed(handle, batch, lookup=True)
        finally:
            self.stage_cpu["integrate"] += time.thread_time() - started

    def _integrate_timed(
        self, handle: _Log, batch: list[_Pending], *, lookup: bool
    ) -> list[Receipt | RemembrancerError]:
        writer = self._writer(handle)
        start = writer.size
        results: list[Receipt | RemembrancerError | int | None] = [None] * len(batch)
        new_rows: list[EntryRow] = []
        folded: list[tuple[Record, NamespaceConfig]] = []  # governance records, in log order
        folded_types = governance.FOLDED_TYPES
        seen_id: dict[str, tuple[int, bytes]] = {}
        seen_nonce: dict[tuple[str, str], tuple[int, bytes]] = {}
        duplicates: dict[int, int] = {}  # batch position -> existing index
        by_id: Mapping[str, FoundEntry] = {}
        by_nonce: Mapping[tuple[str, str], FoundEntry] = {}
        if lookup:
            verified = [p.record for p in batch if p.report is not None]
            by_id, by_nonce = self.store.find_keys(
                handle.namespace,
                [r.event_id for r in verified],
                [(r.actor, r.nonce) for r in verified],
            )
        for pos, pending in enumerate(batch):
            if pending.report is None:
                continue
            rec = pending.record
            key_nonce = (rec.actor, rec.nonce)
            if by_id or by_nonce or rec.event_id in seen_id or key_nonce in seen_nonce:
                # A key seen before (rare): rule 7 decides between a byte-identical
                # resubmission (its original receipt) and a refusal.
                try:
                    found = self._replayed(rec, seen_id, seen_nonce, by_id, by_nonce)
                except RemembrancerError as e:
                    results[pos] = e
                    continue
                if found is not None:
                    duplicates[pos] = found
                    continue
            index = start + len(new_rows)
            seen_id[rec.event_id] = seen_nonce[key_nonce] = (index, rec.leaf)
            new_rows.append(EntryRow(rec.leaf, rec.event_hash, rec.event_id, rec.actor, rec.nonce))
            if rec.event_type in folded_types:
                folded.append((rec, pending.ns))
            results[pos] = index

        gov_before = handle.gov
        if new_rows:
            leaf_hashes = [hash_leaf(r.leaf) for r in new_rows]
            edge_before = self._commit(handle, writer, new_rows, leaf_hashes)
            for rec, ns in folded:  # in log order
                handle.gov = governance.fold(handle.gov, rec, ns)
            changed = handle.gov is not gov_before
            if changed or writer.size - handle.gov_saved >= GOVERNANCE_SAVE_EVERY:
                # Also every so many entries: whoever loads it next (a restart, the
                # process taking over the lease, a follower's read) folds only the rest.
                self._save_governance(handle.namespace, handle.gov, writer.size)
                handle.gov_saved = writer.size
            if changed:
                _log_governance(handle.namespace, gov_before, handle.gov)
            proofs = BatchProofs(edge_before, writer.levels, writer.size).proofs(start)
        else:
            proofs = []
        size = writer.size
        note = handle.checkpoint
        out: list[Receipt | RemembrancerError] = []
        store_reader = None
        for pos, pending in enumerate(batch):
            res = results[pos]
            if isinstance(res, RemembrancerError):
                out.append(res)
            elif isinstance(res, int):
                out.append(_make_receipt("sha256:" + pending.record.event_hash.hex(),
                                         handle.namespace, handle.origin, res, size,
                                         proofs[res - start], note, (), False))  # fmt: skip
            elif pos in duplicates:
                store_reader = store_reader or self._store_reader(handle.namespace, size)
                index = duplicates[pos]
                out.append(self._receipt(pending.record, index, size, note, store_reader, dup=True))
            else:  # signature failure already reported
                out.append(ConflictError("not integrated", code="not_integrated"))
        return out

    def _commit(
        self, handle: _Log, writer: TileWriter, rows: list[EntryRow], leaf_hashes: list[bytes]
    ) -> CompactRange:
        """Append, sign and commit; return the right edge before the batch."""
        before = writer.edge()
        start = writer.size
        try:
            tiles = writer.append(leaf_hashes)
            root = writer.root()
            now = int(self.clock())
            note = sign_checkpoint(
                Checkpoint(handle.origin, writer.size, root), self.node_key, handle.origin
            )
            state = LogState(handle.namespace, writer.size, root, note)
            self.store.append(
                AppendBatch(handle.namespace, start, rows, tiles, state, checkpoint_time=now,
                            fence=self.fence())
            )  # fmt: skip
        except BaseException as e:
            # The store may have committed although it raised (its answer was lost
            # with the connection): the next batch resumes from the durable state.
            handle.writer = None
            self._heads.pop(handle.namespace, None)
            if isinstance(e, ConflictError) and e.code == "fenced":
                log.warning("%s: append refused, another process holds the sequencer lease",
                            handle.namespace)  # fmt: skip
                self.on_fenced()
            raise
        handle.checkpoint = note
        self._heads[handle.namespace] = state
        for hook in self.on_batch:
            try:
                hook(handle.namespace, start, writer.size, note)
            except Exception:
                log.exception("on_batch hook failed")
        return before

    def _replayed(
        self,
        rec: Record,
        seen_id: Mapping[str, tuple[int, bytes]],
        seen_nonce: Mapping[tuple[str, str], tuple[int, bytes]],
        by_id: Mapping[str, FoundEntry],
        by_nonce: Mapping[tuple[str, str], FoundEntry],
    ) -> int | None:
        """Rule 7 for a record one of whose keys is stored or used earlier in its
        batch: the index of the entry it resubmits byte for byte, None if it is
        new after all; raises for any other reuse."""
        key_nonce = (rec.actor, rec.nonce)
        by_event = seen_id.get(rec.event_id) or self._stored(by_id.get(rec.event_id))
        by_pair = seen_nonce.get(key_nonce) or self._stored(by_nonce.get(key_nonce))
        if not check_replay(rec, by_event[1] if by_event else None,
                            by_pair[1] if by_pair else None):  # fmt: skip
            return None
        found = by_event or by_pair
        assert found is not None
        return found[0]

    def _stored(self, found: FoundEntry | None) -> tuple[int, bytes] | None:
        """(index, leaf) of an entry the store found under a key (rare: replays)."""
        if found is None:
            return None
        leaves = self.store.read_entries(found.namespace, found.index, found.index + 1)
        return (found.index, leaves[0]) if leaves else None

    def _receipt(
        self, rec: Record, index: int, size: int, note: bytes, reader: Any, *, dup: bool = False
    ) -> Receipt:
        proof = inclusion_proof(index, size, reader)
        return Receipt(
            event_hash=rec.event_hash_hex,
            namespace=rec.namespace,
            origin=self.origin(rec.namespace),
            index=index,
            size=size,
            proof=tuple(proof),
            checkpoint=note,
            duplicate=dup,
        )

    # --- governance persistence ---------------------------------------------------
    def _load_governance(self, namespace: str, size: int) -> governance.GovernanceState:
        raw = self.store.get_state(GOVERNANCE_SCOPE, namespace)
        covered = 0
        state = governance.GovernanceState()
        if raw:
            doc = json.loads(raw)
            covered = int(doc.get("size", 0))
            state = governance.GovernanceState.from_dict(doc["state"])
        if covered < size:  # a crash between commit and save: fold what is missing
            ns = self.namespaces.current().get(namespace)
            if ns is not None:
                for i in range(covered, size, 1024):
                    for leaf in self.store.read_entries(namespace, i, min(size, i + 1024)):
                        # Admission folds records of FOLDED_TYPES, and stores a record
                        # as its canonical form, which names its type as one of these
                        # exact texts: any other entry is skipped unparsed (most of
                        # them: over a million raw entries, parsing and refusing each
                        # took about 8 s of CPU, sampled under load; now about 1 s).
                        if not any(marker in leaf for marker in _FOLDED_MARKERS):
                            continue
                        try:
                            rec = Record.from_bytes(leaf)
                        except RemembrancerError:
                            continue
                        if rec.leaf == leaf:  # canonical, as admission stores a record
                            state = governance.fold(state, rec, ns)
                try:
                    self._save_governance(namespace, state, size)
                except StorageError as e:  # only a shortcut for the next load: reads go on
                    log.warning("could not save the governance state of %s: %s", namespace, e)
        return state

    def _save_governance(
        self, namespace: str, state: governance.GovernanceState, size: int
    ) -> None:
        doc = {"size": size, "state": state.to_dict()}
        self.store.put_state(GOVERNANCE_SCOPE, namespace, json.dumps(doc).encode())

    def governance_state(self, namespace: str) -> governance.GovernanceState:
        handle = self._logs.get(namespace)
        if handle is not None and handle.writer is not None:
            return handle.gov
        state = self.store.log_state(namespace)
        return self._load_governance(namespace, state.size if state else 0)

    def governance_view(self, namespace: str) -> dict[str, Any]:
        """The namespace's governance rule, pending proposals and applied changes."""
        ns = self.namespaces.current().get(namespace)
        if ns is None:
            raise NotFoundError(
                f"namespace {namespace} is not hosted here", code="namespace_unknown"
            )
        out = governance.view(ns, self.governance_state(namespace), int(self.clock()))
        return {"namespace": namespace, **out}

    def effective_config(self, namespace: str) -> dict[str, Any]:
        ns = self.namespaces.current().get(namespace)
        if ns is None:
            raise NotFoundError(
                f"namespace {namespace} is not hosted here", code="namespace_unknown"
            )
        gov = self.governance_state(namespace)
        out = ns.to_dict()
        out["cadence"] = governance.effective_cadence(ns, gov, int(self.clock())).to_dict()
        out["governance_state"] = gov.to_dict()
        return out

    # --- reads -----------------------------------------------------------------------
    def _store_reader(self, namespace: str, size: int, cache: int = 64) -> TileNodeReader:
        """Proof nodes of the tree of ``size`` from the stored tiles (stored
        partial tiles only ever grow, so a prefix is the tile at an older size)."""

        def fetch(tiles: Sequence[Tile]) -> list[bytes]:
            found = self.store.read_tiles(namespace, [(t.level, t.index) for t in tiles])
            return [found.get((t.level, t.index), b"")[: t.width * 32] for t in tiles]

        return TileNodeReader(fetch, size, cache_tiles=cache)

    def reset(self) -> None:
        """Forget every log's in-memory head and tree (on the writer thread, after
        the batch under way): the next batch resumes from the store.  A process
        that gains or loses the sequencer lease calls this."""

        def work() -> None:
            for handle in self._logs.values():
                handle.writer = None
            self._heads.clear()

        if threading.current_thread().name.startswith("integrate"):
            work()  # called from a batch (a fenced append): already on the writer thread
        else:
            self._write_pool.submit(work).result()

    def head(self, namespace: str) -> LogState | None:
        """The latest durable state of a log (cached and refreshed by every commit
        while this process sequences; else read from the shared store)."""
        if not self.authoritative():
            return self.store.log_state(namespace)
        state = self._heads.get(namespace)
        if state is None:
            state = self.store.log_state(namespace)
            if state is not None:
                self._heads.setdefault(namespace, state)
        return state

    def _with_reader(self, namespace: str, size: int, fn: Callable[[TileNodeReader], T]) -> T:
        """Run ``fn`` with this log's shared tile reader (its LRU of expanded
        tiles is keyed by width, so it serves every size correctly)."""
        with self._readers_lock:
            reader = self._readers.get(namespace)
            if reader is None:
                reader = self._readers[namespace] = self._store_reader(namespace, size, cache=1024)
            reader.set_size(size)
            return fn(reader)

    def proof_inclusion(
        self, namespace: str, index: int, size: int | None = None
    ) -> tuple[list[bytes], LogState]:
        state = self.head(namespace)
        if state is None:
            raise NotFoundError(f"log {namespace} is empty or unknown", code="log_unknown")
        size = state.size if size is None else size
        if not 0 <= index < size <= state.size:
            raise NotFoundError(
                f"no entry {index} in a tree of size {size} (log size {state.size})",
                code="index_out_of_range",
            )
        proof = self._with_reader(namespace, size, lambda r: inclusion_proof(index, size, r))
        return proof, state

    def proof_consistency(self, namespace: str, old: int, new: int) -> list[bytes]:
        state = self.head(namespace)
        if state is None or not 0 <= old <= new <= state.size:
            raise NotFoundError("sizes outside the log", code="size_out_of_range")
        return self._with_reader(namespace, new, lambda r: consistency_proof(old, new, r))


@lru_cache(maxsize=4096)
def _public_key(did: str) -> PublicKey:
    return public_from_did_key(did)


def _every_job_verified(kid: str, sig: bytes) -> bool:
    """The verdict for a record whose every signature job verified (see
    ``_verify_in_processes``)."""
    return True


def _verdict_of(
    known: dict[tuple[str, bytes], bool], record: Record
) -> Callable[[str, bytes], bool]:
    """The verdicts of a record with a failed job: the workers', and for a
    signature that was not a job, a check here (same library, same verdict)."""

    def verify(kid: str, sig: bytes) -> bool:
        found = known.get((kid, sig))
        if found is None:
            return _public_key(kid).verify(record.signing_input, sig)
        return found

    return verify


def _public_raw(did: str) -> bytes:
    return _public_key(did).raw


def _set_exception(fut: asyncio.Future[Receipt], e: BaseException) -> None:
    if not fut.done():
        fut.set_exception(e)


__all__ = ["Receipt", "Sequencer"]


def _log_governance(
    namespace: str, before: governance.GovernanceState, after: governance.GovernanceState
) -> None:
    """One log line per governance event a batch brought: a proposal waiting for
    votes, a vote counted, a change approved (and when it takes effect)."""
    for change in after.applied[len(before.applied) :]:
        log.info("governance: %s approved cadence change %s (proposal %s, approved by %s);"
                 " in effect from %d%s", namespace, json.dumps(change.cadence, sort_keys=True),
                 change.proposal, ", ".join(change.approved_by), change.effective_from,
                 f" ({change.memo})" if change.memo else "")  # fmt: skip
    for key, p in after.pending.items():
        old = before.pending.get(key)
        if old is None:
            log.info("governance: %s proposal %s by %s is waiting for votes: cadence %s",
                     namespace, key, p.actor, json.dumps(p.cadence, sort_keys=True))  # fmt: skip
        elif len(p.votes) > len(old.votes):
            log.info("governance: %s proposal %s has %d vote(s): %s", namespace, key,
                     len(p.votes), ", ".join(p.votes))  # fmt: skip
