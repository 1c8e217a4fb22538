"""The replica engine: verified heads, the mirror and anchor claims, in a store.

Nothing is kept before it verifies: a checkpoint must be signed by the log's
key and proven to extend the head (a consistency proof from the source's
tiles, or the mirror's recomputed root); a signed checkpoint that does not
extend it is equivocation (evidence built and reported).  The mirror
extends the stored tree chunk by chunk (:data:`CHUNK_BUNDLES` entry
bundles), each chunk checked against the signed root and committed in one
transaction, so a mirror only ever holds a verified prefix of a signed tree.
Anchor claims are re-verified on this node's rails and merged with
:func:`~remembrancer.federation.antientropy.claims.merge_anchors`.
Networking is the caller's (a :class:`~remembrancer.federation.antientropy.source.Source`);
faults of a source are passed to ``blame``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from remembrancer.anchoring.base import DEPTH_INSUFFICIENT, RailError, RailRegistry, VerifyContext
from remembrancer.core.anchor import Anchor, AnchorReceipt, checkpoint_digest, covers
from remembrancer.core.checkpoint import SignedCheckpoint
from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    InconsistencyError,
    NotFoundError,
    PeerError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.note import Note
from remembrancer.core.rfc6962 import HASH_SIZE, consistency_proof, root_hash, verify_consistency
from remembrancer.core.tiles import (
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    Tile,
    TileNodeReader,
    bundle_leaf_hashes,
    decode_entry_bundle,
    encode_entry_bundle,
    parse_entries_path,
    parse_tile_path,
    tile_width,
)
from remembrancer.federation.antientropy.claims import (
    ClaimBudget,
    anchor_size,
    check_evidence,
    merge_anchors,
    note_rank,
    receipt_time,
    version_key,
)
from remembrancer.federation.antientropy.metrics import ReplicaMetrics
from remembrancer.federation.antientropy.model import (
    ANCHOR_SCOPE,
    MIRROR_PREFIX,
    REPLICA_SCOPE,
    UNVERIFIED_SCOPE,
    ReplicaHead,
    ReplicaSpec,
    namespace_of,
)
from remembrancer.federation.antientropy.source import (
    Source,
    consistency_nodes,
    fetch_nodes,
    root_nodes,
)
from remembrancer.federation.evidence.equivocation import EquivocationEvidence
from remembrancer.log.tiles import TileWriter
from remembrancer.storage.base import AppendBatch, EntryRow, LogState, Store

__all__ = ["CHUNK_BUNDLES", "DEFAULT_MEMORY_BUDGET", "ReplicaEngine", "chunk_room"]


log = logging.getLogger("remembrancer.antientropy")


CHUNK_BUNDLES: Final = 64  # entry bundles per verified, committed chunk (16,384 entries)
CLAIM_PAGE: Final = 256  # stored claims read per store query
DEFAULT_MEMORY_BUDGET: Final = 64 << 20  # replication.memory_budget_bytes
FETCH_CONCURRENCY: Final = 16  # bundles fetched at once, when the budget allows
ENTRY_OVERHEAD: Final = 64  # bytes a decoded entry costs beyond its data (object header, list)
COPIES_AT_COMMIT: Final = 3  # the entries, the bundles encoded from them, the store's copy


def bundle_cap(t: Tile) -> int:
    """The most bytes the entry bundle of ``t`` can hold (and the most its entries
    can take once decoded, with :data:`ENTRY_OVERHEAD`)."""
    return t.width * (2 + MAX_ENTRY_SIZE + ENTRY_OVERHEAD)


def chunk_room(held: int, tiles: Sequence[Tile], budget: int) -> bool:
    """Whether a chunk holding ``held`` bytes of entries may fetch the bundles of
    ``tiles`` too, within ``budget`` bytes, whatever they turn out to hold.

    While a bundle is fetched and decoded the raw answer and the entries are
    both alive (twice its size); when the chunk is committed the entries, the
    bundles the store encodes from them and the store's own copy are
    (:data:`COPIES_AT_COMMIT` times).  So the chunk takes another bundle only
    while three times the worst case of what it would then hold fits:
    ``3 * (held + sum of caps) <= budget``.  A budget of at least three
    maximal bundles (:data:`MIN_MEMORY_BUDGET`) always lets one in."""
    return COPIES_AT_COMMIT * (held + sum(bundle_cap(t) for t in tiles)) <= budget


MIN_MEMORY_BUDGET: Final = COPIES_AT_COMMIT * TILE_WIDTH * (2 + MAX_ENTRY_SIZE + ENTRY_OVERHEAD)


class OwnLogs(Protocol):
    """This node's own logs, for merging claims on them."""

    def origins(self) -> Mapping[str, str]:
        """Own origin -> namespace."""
        ...

    def spec(self, origin: str) -> ReplicaSpec:
        """A spec whose vkey is this node's key for the log (to verify claims)."""
        ...

    def receipts(self, namespace: str) -> list[AnchorReceipt]:
        """The anchor receipts the node's scheduler holds for the log."""
        ...


Blame = Callable[[str, str], Awaitable[None]]
ReportEquivocation = Callable[[EquivocationEvidence], Awaitable[Any]]


async def _no_blame(peer: str, code: str) -> None:
    return None


async def _no_report(evidence: EquivocationEvidence) -> None:
    return None


@dataclass
class MergeReport:
    """What a batch of anchor claims did."""

    accepted: int = 0  # anchor receipts that changed the replica
    unchanged: int = 0
    ignored: int = 0  # for logs this node does not follow
    refused: list[str] = field(default_factory=list)  # error codes


class ReplicaEngine:
    """Verified replicas in a store: heads, mirrored tiles and anchor claims.

    Networking is the caller's: :meth:`sync` takes a :class:`Source`.  Errors
    that are the source's fault are passed to ``blame(peer, code)``; proven
    equivocation goes to ``report_equivocation(evidence)``."""

    def __init__(
        self,
        store: Store,
        specs: Iterable[ReplicaSpec],
        rails: RailRegistry,
        *,
        clock: Callable[[], float] = time.time,
        own: OwnLogs | None = None,
        blame: Blame = _no_blame,
        report_equivocation: ReportEquivocation = _no_report,
        metrics: ReplicaMetrics | None = None,
        budget: ClaimBudget | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        if memory_budget < MIN_MEMORY_BUDGET:
            raise ConfigError(
                f"a replication memory budget of {memory_budget} bytes cannot hold one entry"
                f" bundle; at least {MIN_MEMORY_BUDGET}",
                code="memory_budget_too_small",
            )
        self.memory_budget = memory_budget
        self.store = store
        self.budget = budget or ClaimBudget()
        self.specs = {s.origin: s for s in specs}
        self.rails = rails
        self.clock = clock
        self.own = own
        self.blame = blame
        self.report_equivocation = report_equivocation
        self.metrics = metrics or ReplicaMetrics()
        self._locks: dict[str, asyncio.Lock] = {}
        self._heads: dict[str, ReplicaHead] = {}
        self._mirrored: dict[str, int] = {}  # origin -> entries mirrored (cache of the store's)
        self.errors: dict[str, dict[str, Any]] = {}  # origin -> last error
        # (origin, peer) -> size of the latest checkpoint of origin that peer served
        # and that verified here (the order sources are tried in)
        self.verified_from: dict[tuple[str, str], int] = {}
        self._offered: dict[str, int] = {}  # origin -> size of the checkpoint being synced
        self.last_sync: dict[str, int] = {}
        self.equivocations: dict[str, str] = {}  # origin -> evidence ref
        self._incidents: set[str] = set()
        # Called with each head accepted (after it is stored), e.g. by the simulation.
        self.on_head: Callable[[str, ReplicaHead], None] = lambda origin, head: None
        self._load()

    def _load(self) -> None:
        for origin, raw in self.store.list_state(REPLICA_SCOPE).items():
            if origin in self.specs:
                try:
                    self._heads[origin] = ReplicaHead.from_bytes(raw)
                except (ValueError, KeyError, TypeError) as e:
                    log.error("replica head of %s is unreadable (%s); starting over", origin, e)
        for origin, spec in self.specs.items():
            if not spec.mirror:
                continue
            state = self.store.log_state(MIRROR_PREFIX + origin)
            self._mirrored[origin] = state.size if state else 0
            head = self._heads.get(origin)
            if state is None or (head is not None and head.size >= state.size):
                continue
            # The mirror committed a chunk after the head was last written:
            # its checkpoint (verified before the commit) is the head, if it
            # is the checkpoint of exactly that size.
            try:
                signed, _ = spec.open(state.checkpoint)
            except RemembrancerError:
                continue
            if signed.checkpoint.size == state.size:
                self._heads[origin] = ReplicaHead(origin, state.size, state.root_hash,
                                                  state.checkpoint, int(self.clock()), "mirror")  # fmt: skip
                self.store.put_state(REPLICA_SCOPE, origin, self._heads[origin].to_bytes())

    def _lock(self, origin: str) -> asyncio.Lock:
        lock = self._locks.get(origin)
        if lock is None:
            lock = self._locks[origin] = asyncio.Lock()
        return lock

    # --- reading ---------------------------------------------------------------------
    def head(self, origin: str) -> ReplicaHead | None:
        return self._heads.get(origin)

    def mirrored(self, origin: str) -> int:
        """Entries of ``origin`` mirrored here (0 when not mirrored)."""
        return self._mirrored.get(origin, 0)

    def mirror_state(self, origin: str) -> LogState | None:
        spec = self.specs.get(origin)
        if spec is None or not spec.mirror:
            return None
        return self.store.log_state(MIRROR_PREFIX + origin)

    def mirror_checkpoint(self, origin: str) -> bytes:
        """The checkpoint a mirror serves: the one its tiles are complete for."""
        state = self.mirror_state(origin)
        head = self._heads.get(origin)
        if state is None:
            raise NotFoundError(f"no mirror of {origin!r} here", code="replica_not_mirrored")
        if head is not None and head.size == state.size:
            return head.note
        if state.checkpoint and _note_size(state.checkpoint) == state.size:
            return state.checkpoint
        raise NotFoundError(f"the mirror of {origin!r} is catching up (at {state.size})",
                            code="replica_catching_up", details={"size": state.size})  # fmt: skip

    def mirror_tile(self, origin: str, path: str) -> tuple[bytes, bool]:
        """A mirrored tile or entry bundle (``tile/...``): its bytes and whether it is full."""
        state = self.mirror_state(origin)
        if state is None:
            raise NotFoundError(f"no mirror of {origin!r} here", code="replica_not_mirrored")
        key = MIRROR_PREFIX + origin
        if path.startswith("tile/entries/"):
            t = parse_entries_path(path)
            first = t.index * TILE_WIDTH
            if first + t.width > state.size:
                raise NotFoundError("no such entry bundle in the mirror", code="tile_not_found")
            stored = self.store.read_bundle(key, t.index) if t.width == TILE_WIDTH else None
            data = stored or encode_entry_bundle(
                self.store.read_entries(key, first, first + t.width)
            )
        else:
            t = parse_tile_path(path)
            if t.index * TILE_WIDTH + t.width > state.size >> (8 * t.level):
                raise NotFoundError("no such tile in the mirror", code="tile_not_found")
            found = self.store.read_tiles(key, [(t.level, t.index)]).get((t.level, t.index), b"")
            if len(found) < t.byte_size:
                raise NotFoundError("tile not stored", code="tile_not_found")
            data = found[: t.byte_size]
        return data, t.width == TILE_WIDTH

    # --- checkpoints and entries --------------------------------------------------------
    async def sync(self, origin: str, source: Source) -> bool:
        """Bring the replica of ``origin`` up to ``source``'s checkpoint, verifying
        everything; True if it grew.  Raises what refused it (after blaming the
        source where the source is at fault)."""
        spec = self.specs[origin]
        async with self._lock(origin):
            try:
                grew = await self._sync(spec, source)
            except PeerError as e:
                self.metrics.add_failure(origin)
                self._error(origin, e, source)
                raise
            except InconsistencyError as e:
                self._error(origin, e, source)
                raise
            except (VerificationError, FormatError) as e:
                self.metrics.add_refused(e.code)
                self._error(origin, e, source)
                if source.peer is not None:
                    await self.blame(source.peer, e.code)
                raise
            self.errors.pop(origin, None)
            self.last_sync[origin] = int(self.clock())
            offered = self._offered.pop(origin, None)
            if source.peer is not None and offered is not None:
                self.verified_from[(origin, source.peer)] = offered
            return grew

    def _error(self, origin: str, e: RemembrancerError, source: Source) -> None:
        level = logging.INFO if isinstance(e, PeerError) else logging.WARNING
        log.log(level, "replica of %s from %s: %s", origin, source.name, e.explain())
        self.errors[origin] = {**e.to_dict(), "source": source.name, "peer": source.peer,
                               "at": int(self.clock())}  # fmt: skip

    async def _sync(self, spec: ReplicaSpec, source: Source) -> bool:
        note = await source.checkpoint()
        signed, vkey = await asyncio.to_thread(spec.open, note)
        cp = signed.checkpoint
        self._offered[spec.origin] = cp.size
        head = self._heads.get(spec.origin)
        mirrored = 0
        if spec.mirror:
            state = await asyncio.to_thread(self.store.log_state, MIRROR_PREFIX + spec.origin)
            mirrored = state.size if state else 0
        if head is not None:
            if cp.size < head.size:
                return False  # the source is behind us: nothing to learn from it
            # Mirroring [mirrored, cp.size) proves that cp extends the stored tree,
            # which extends the head when it reaches it; otherwise a proof is needed.
            mirror_proves = spec.mirror and head.size <= mirrored < cp.size
            if cp.size == head.size:
                if cp.root_hash != head.root:
                    await self._equivocation(spec, vkey, head.note, note, None)
                if not (spec.mirror and mirrored < cp.size):
                    return False  # (else the mirror catches up with the head)
            elif not mirror_proves:
                await self._check_consistency(spec, vkey, source, head, note, signed)
        if spec.mirror and mirrored < cp.size:
            await self._mirror(spec, vkey, source, head, note, signed, mirrored)
        elif spec.mirror and (head is None or head.size < cp.size):
            # The mirror already holds this size (a catch-up that was cut short):
            # the checkpoint must be the stored, verified tree's.
            stored = await asyncio.to_thread(self._stored_root, spec.origin, cp.size)
            if stored != cp.root_hash:
                raise InconsistencyError(
                    f"{spec.origin} signed a checkpoint of size {cp.size} that is not the"
                    " verified tree this mirror holds",
                    code="replica_equivocation",
                    details={"origin": spec.origin, "size": cp.size},
                )
        if head is not None and cp.size == head.size:
            return False
        new = ReplicaHead(spec.origin, cp.size, cp.root_hash, note, int(self.clock()), source.name)
        await asyncio.to_thread(self.store.put_state, REPLICA_SCOPE, spec.origin, new.to_bytes())
        self._heads[spec.origin] = new
        self.on_head(spec.origin, new)
        self.metrics.set_size(spec.origin, cp.size)
        log.info("replica of %s: %d -> %d (from %s)", spec.origin,
                 head.size if head else 0, cp.size, source.name)  # fmt: skip
        return True

    async def _check_consistency(self, spec: ReplicaSpec, vkey: str, source: Source,
                                 head: ReplicaHead, note: bytes, signed: SignedCheckpoint) -> None:  # fmt: skip
        cp = signed.checkpoint
        if head.size == 0:
            return  # the empty tree is a prefix of every tree
        # Fetch first, compute after: the proof's tiles, then the proof (no I/O).
        tree = await fetch_nodes(source, cp.size, consistency_nodes(head.size, cp.size))
        proof = await asyncio.to_thread(consistency_proof, head.size, cp.size, tree)
        try:
            verify_consistency(head.size, cp.size, head.root, cp.root_hash, proof)
        except VerificationError:
            await self._equivocation(spec, vkey, head.note, note, source)

    async def _equivocation(self, spec: ReplicaSpec, vkey: str, held: bytes, offered: bytes,
                            source: Source | None) -> None:  # fmt: skip
        """Two signed checkpoints that do not fit one log: build the evidence (for
        different sizes from ``source``'s tiles of the larger one).  If it is
        conclusive, report it and raise InconsistencyError ``replica_equivocation``;
        otherwise the source served tiles that do not match the signed root:
        VerificationError ``replica_inconsistent``."""
        small, large = sorted((_note_size(held), _note_size(offered)))
        tree: TileNodeReader | None = None
        if source is not None and small != large:
            # Fetch first (the larger tree's tiles the evidence reads), compute after.
            ids = root_nodes(large) + root_nodes(small) + consistency_nodes(small, large)
            tree = await fetch_nodes(source, large, ids)

        try:
            evidence = await asyncio.to_thread(
                EquivocationEvidence.build, vkey, held, offered, tree
            )
        except RemembrancerError as e:
            raise VerificationError(
                f"the tiles served for {spec.origin} do not match its signed checkpoints"
                f" ({e.code})",
                code="replica_inconsistent",
                details={"origin": spec.origin, "cause": e.code},
            ) from e
        if evidence.incident not in self._incidents:  # report each offence once
            self._incidents.add(evidence.incident)
            self.equivocations[spec.origin] = evidence.evidence_ref
            log.error("equivocation by log %s: %s", spec.origin, evidence.evidence_ref)
            await self.report_equivocation(evidence)
        raise InconsistencyError(
            f"{spec.origin} signed two checkpoints that do not fit one log",
            code="replica_equivocation",
            details={"origin": spec.origin, "evidence_ref": evidence.evidence_ref},
        )

    async def _mirror(self, spec: ReplicaSpec, vkey: str, source: Source, head: ReplicaHead | None,
                      note: bytes, signed: SignedCheckpoint, start: int) -> None:  # fmt: skip
        """Fetch, verify and store entries ``[start, size)`` in chunks within the
        memory budget: each chunk is verified and committed before the next
        bundle is fetched (no prefetch)."""
        cp = signed.checkpoint
        key = MIRROR_PREFIX + spec.origin
        size = cp.size
        writer = await asyncio.to_thread(self._writer, key, start)
        while start < size:
            end, entries = await self._fetch_chunk(source, start, size)
            try:
                # Fetch first: the tiles of the proof from this chunk's end to the
                # signed size; verify after, in a worker thread, without I/O.
                proof_tree = await fetch_nodes(source, size, consistency_nodes(end, size))
                commit = asyncio.ensure_future(asyncio.to_thread(
                    self._store_chunk, key, writer, start, end, entries, size, cp.root_hash, note,
                    proof_tree))  # fmt: skip
                try:
                    writer = await asyncio.shield(commit)
                except asyncio.CancelledError:
                    # A sync cut off at its deadline: the worker thread cannot be
                    # stopped, so the next sync must not start before it is done.
                    await asyncio.gather(commit, return_exceptions=True)
                    raise
            except VerificationError as e:
                if head is not None and head.size:
                    await self._equivocation(spec, vkey, head.note, note, source)
                raise VerificationError(
                    f"{source.name} served entries of {spec.origin} that do not match its"
                    f" signed checkpoint of size {size}: {e.message}",
                    code="replica_inconsistent",
                    details={"origin": spec.origin, "size": size, "cause": e.code},
                ) from e
            finally:
                entries.clear()  # the chunk is stored or refused: its memory is free
            self.metrics.add_mirrored(spec.origin, end - start)
            self._mirrored[spec.origin] = end
            start = end

    def _store_chunk(self, key: str, base: TileWriter, begin: int, end: int,
                     entries: list[bytes], size: int, signed_root: bytes, note: bytes,
                     tree: TileNodeReader) -> TileWriter:  # fmt: skip
        """Verify entries ``[begin, end)`` against the signed root (the root itself
        for the last chunk, else a consistency proof from the source's hash
        tiles, fetched before into ``tree``) and commit them; the writer
        extended by them (worker thread, no I/O but the store)."""
        trial = base.copy()
        leaves = bundle_leaf_hashes(entries)
        hashes = [leaves[i : i + HASH_SIZE] for i in range(0, len(leaves), HASH_SIZE)]
        tiles = trial.append(hashes)
        root = trial.root()
        if end == size:
            if root != signed_root:
                raise VerificationError(
                    f"entries {begin}..{end} do not hash to the signed root",
                    code="replica_inconsistent",
                )
        else:
            proof = consistency_proof(end, size, tree)
            verify_consistency(end, size, root, signed_root, proof)
        batch = AppendBatch(key, begin, [EntryRow(e) for e in entries], tiles,
                            LogState(key, end, root, note), int(self.clock()))  # fmt: skip
        self.store.append(batch)
        return trial

    async def _fetch_chunk(self, source: Source, start: int, size: int) -> tuple[int, list[bytes]]:
        """Entries ``[start, end)`` for the chunk starting at ``start``, within the
        memory budget (:func:`chunk_room`); FormatError ``replica_bundle_malformed``
        for a bundle that does not decode."""
        first = start // TILE_WIDTH
        last = min((size - 1) // TILE_WIDTH, first + CHUNK_BUNDLES - 1)
        entries: list[bytes] = []
        held = 0
        index = first
        while index <= last:
            group: list[Tile] = []
            while index + len(group) <= last and len(group) < FETCH_CONCURRENCY:
                t = Tile(0, index + len(group), tile_width(0, index + len(group), size))
                if not chunk_room(held, [*group, t], self.memory_budget):
                    break
                group.append(t)
            if not group:
                break  # the chunk is as large as the budget allows
            blobs = await source.bundles(group)

            # Decoded here, on the loop, bundle by bundle, each raw bundle dropped
            # as soon as it is decoded: the buffers are allocated and freed by
            # one thread (one malloc arena), so what is freed is reused, not
            # kept aside per worker thread (a copy of 256 entries is quick).
            got: list[bytes] = []
            for n, t in enumerate(group):
                blob, blobs[n] = blobs[n], b""
                try:
                    part = decode_entry_bundle(blob, t.width)
                except FormatError as e:
                    raise FormatError(f"entry bundle {t.entries_path()}: {e.message}",
                                      code="replica_bundle_malformed") from e  # fmt: skip
                del blob
                got.extend(part[start - t.index * TILE_WIDTH :] if t.index == first else part)
                del part
                await asyncio.sleep(0)
            del blobs
            held += sum(map(len, got)) + ENTRY_OVERHEAD * len(got)
            entries.extend(got)
            index += len(group)
        end = min(size, index * TILE_WIDTH)
        return end, entries

    def _stored_root(self, origin: str, size: int) -> bytes:
        key = MIRROR_PREFIX + origin

        def fetch(tiles: Sequence[Tile]) -> list[bytes]:
            found = self.store.read_tiles(key, [(t.level, t.index) for t in tiles])
            return [found.get((t.level, t.index), b"")[: t.width * HASH_SIZE] for t in tiles]

        return root_hash(size, TileNodeReader(fetch, size))

    def _writer(self, key: str, size: int) -> TileWriter:
        def fetch(tiles: Sequence[Tile]) -> list[bytes]:
            found = self.store.read_tiles(key, [(t.level, t.index) for t in tiles])
            return [found.get((t.level, t.index), b"")[: t.width * HASH_SIZE] for t in tiles]

        reader = TileNodeReader(fetch, size)
        return TileWriter.resume(
            size, reader.read_nodes, lambda ids: self.store.read_tiles(key, ids)
        )

    # --- anchor claims -------------------------------------------------------------------
    def own_origins(self) -> Mapping[str, str]:
        """This node's own logs: origin -> namespace."""
        return self.own.origins() if self.own is not None else {}

    def spec_for(self, origin: str) -> ReplicaSpec | None:
        """The log's spec (its keys) if this node follows it or hosts it."""
        spec = self.specs.get(origin)
        if spec is None and self.own is not None and origin in self.own.origins():
            spec = self.own.spec(origin)
        return spec

    def _claims(self, origin: str, *, after: int = -1,
                limit: int | None = None) -> dict[int, dict[str, Any]]:  # fmt: skip
        """The stored claims of ``origin`` at sizes > ``after`` (at most ``limit``),
        read a page at a time from the key range ``<origin>/``: never the whole scope."""
        prefix = origin + "/"
        out: dict[int, dict[str, Any]] = {}
        cursor = f"{prefix}{after:020d}" if after >= 0 else None
        while limit is None or len(out) < limit:
            want = CLAIM_PAGE if limit is None else min(CLAIM_PAGE, limit - len(out))
            page = self.store.list_state_page(ANCHOR_SCOPE, prefix=prefix, after=cursor,
                                              limit=want)  # fmt: skip
            for k, v in page:
                if k[len(prefix) :].isdigit():
                    out[int(k[len(prefix) :])] = json.loads(v)
            if len(page) < want:
                break
            cursor = page[-1][0]
        return out

    def _own_receipts(self, origin: str) -> dict[int, AnchorReceipt]:
        if self.own is None:
            return {}
        ns = self.own.origins().get(origin)
        return {r.size: r for r in self.own.receipts(ns)} if ns else {}

    def anchor_receipts(self, origin: str, *, after: int = -1, limit: int | None = None,
                        relay: bool = False) -> list[tuple[AnchorReceipt, list[str]]]:  # fmt: skip
        """The anchor receipts this node holds for ``origin`` (its own scheduler's
        and the claims of others, merged), with the keys of the anchors
        re-verified here, by checkpoint size: those at sizes > ``after``, at
        most ``limit`` of them.  ``relay``: only what this node vouches for
        (anchors verified here and its own scheduler's); receipts left with
        no anchor are left out."""
        claims = self._claims(origin, after=after, limit=limit)
        own = {s: r for s, r in self._own_receipts(origin).items() if s > after}
        out = []
        for size in sorted(set(claims) | set(own))[:limit]:
            doc = claims.get(size)
            held = AnchorReceipt.from_dict(doc["receipt"]) if doc else None
            mine = own.get(size)
            base = mine or held
            assert base is not None
            # Verified here: re-verified on this node's rails, or this node's own
            # scheduler's verdict.  Only those rank as verified in the order.
            marks = set(doc["reverified"]) if doc else set()
            marks |= {a.key for a in (mine.anchors if mine else ()) if a.status == "verified"}
            anchors = merge_anchors(held.anchors if held else (), mine.anchors if mine else (),
                                    verified=marks)  # fmt: skip
            if relay:
                ours = {a.key for a in mine.anchors} if mine else set()
                anchors = tuple(a for a in anchors if a.key in marks or a.key in ours)
                if not anchors:
                    continue
            out.append((replace(base, anchors=anchors),
                        sorted(k for k in marks if any(a.key == k for a in anchors))))  # fmt: skip
        return out

    def anchor_view(self, origin: str, *, after: int = -1,
                    limit: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        return [
            {**r.to_dict(), "reverified_here": marks}
            for r, marks in self.anchor_receipts(origin, after=after, limit=limit)
        ]

    async def merge_claims(
        self, items: Sequence[Mapping[str, Any]], *, sender: str | None
    ) -> MergeReport:
        """Verify and merge anchor receipts (``remembrancer.anchor-receipt/v1``
        objects).  Each one's checkpoint must verify with the log's key and fit
        what this node holds; each anchor must cover the checkpoint; claims of
        verified anchors are re-verified on this node's rail for the target when
        it has one.  A refused item changes nothing."""
        report = MergeReport()
        for item in items:
            try:
                changed = await self._merge_claim(item, sender)
            except InconsistencyError as e:
                report.refused.append(e.code)  # the log equivocated; reported already
                continue
            except (FormatError, VerificationError) as e:
                log.warning("anchor claim from %s refused: %s", sender, e.explain())
                self.metrics.add_refused(e.code)
                report.refused.append(e.code)
                continue
            if changed is None:
                report.ignored += 1
            elif changed:
                report.accepted += 1
            else:
                report.unchanged += 1
        return report

    async def _merge_claim(self, item: Mapping[str, Any], sender: str | None) -> bool | None:
        receipt = AnchorReceipt.from_dict(item)
        spec = self.spec_for(receipt.origin)
        if spec is None:
            return None
        check_evidence(receipt.anchors, self.budget)  # before anything is read or kept
        async with self._lock(receipt.origin):
            changed = await self._merge_claim_locked(spec, receipt)
            if changed and sender is not None:
                await asyncio.to_thread(self._charge, receipt.origin, receipt.size, sender)
            return changed

    # --- the storage budget of unverified claims (docs/operations.md) ----------------------
    def _unverified_bytes(self, origin: str, size: int) -> int:
        """Bytes of the anchors of the stored claim at ``size`` that nobody verified here."""
        raw = self.store.get_state(ANCHOR_SCOPE, f"{origin}/{size:020d}")
        if raw is None:
            return 0
        doc = json.loads(raw)
        marks = set(doc["reverified"])
        held = AnchorReceipt.from_dict(doc["receipt"])
        return sum(anchor_size(a) for a in held.anchors if a.key not in marks)

    def _charge(self, origin: str, size: int, sender: str) -> None:
        """Book the unverified part of the claim at ``size`` to ``sender``; past
        the (peer, log) budget, drop that peer's oldest unverified claims."""
        prefix = f"{origin}|{sender}|"
        used = self._unverified_bytes(origin, size)
        if used == 0:
            self.store.delete_state(UNVERIFIED_SCOPE, f"{prefix}{size:020d}")
            return
        self.store.put_state(UNVERIFIED_SCOPE, f"{prefix}{size:020d}",
                             json.dumps({"bytes": used}).encode())  # fmt: skip
        held: list[tuple[int, int]] = []
        cursor: str | None = None
        while True:  # bounded: at most unverified_claims + 1 entries per (peer, log)
            page = self.store.list_state_page(UNVERIFIED_SCOPE, prefix=prefix, after=cursor,
                                              limit=CLAIM_PAGE)  # fmt: skip
            held += [(int(k[len(prefix) :]), int(json.loads(v)["bytes"])) for k, v in page]
            if len(page) < CLAIM_PAGE:
                break
            cursor = page[-1][0]
        total = sum(b for _, b in held)
        dropped = 0
        for s, b in list(held):  # oldest checkpoint first; the claim just kept goes last
            if len(held) <= self.budget.unverified_claims and total <= self.budget.unverified_bytes:
                break
            if s == size and len(held) > 1:
                continue
            self._evict(origin, s)
            self.store.delete_state(UNVERIFIED_SCOPE, f"{prefix}{s:020d}")
            self.metrics.add_refused("anchor_claims_over_budget")
            held = [h for h in held if h[0] != s]
            total -= b
            dropped += 1
        if dropped:
            log.info("unverified anchor claims of %s from %s over budget: %d dropped", origin,
                     sender, dropped)  # fmt: skip

    def _evict(self, origin: str, size: int) -> None:
        """Drop the anchors nobody verified here from the stored claim at ``size``
        (the whole claim when none is left)."""
        key = f"{origin}/{size:020d}"
        raw = self.store.get_state(ANCHOR_SCOPE, key)
        if raw is None:
            return
        doc = json.loads(raw)
        held = AnchorReceipt.from_dict(doc["receipt"])
        kept = tuple(a for a in held.anchors if a.key in doc["reverified"])
        if not kept:
            self.store.delete_state(ANCHOR_SCOPE, key)
            return
        doc["receipt"] = replace(held, anchors=kept).to_dict()
        self.store.put_state(ANCHOR_SCOPE, key, json.dumps(doc).encode())

    async def _merge_claim_locked(self, spec: ReplicaSpec, receipt: AnchorReceipt) -> bool:
        origin = receipt.origin
        key = f"{origin}/{receipt.size:020d}"
        raw = await asyncio.to_thread(self.store.get_state, ANCHOR_SCOPE, key)
        doc = json.loads(raw) if raw else None
        held = AnchorReceipt.from_dict(doc["receipt"]) if doc else None
        mine = self._own_receipts(origin).get(receipt.size)
        known = {
            a.key: a for a in (*(held.anchors if held else ()), *(mine.anchors if mine else ()))
        }
        fresh = [a for a in receipt.anchors
                 if a.key not in known or version_key(replace(a, superseded_by=None))
                 > version_key(replace(known[a.key], superseded_by=None))]  # fmt: skip
        if not fresh:
            return False
        signed, vkey = await asyncio.to_thread(spec.open, receipt.checkpoint)
        cp = signed.checkpoint
        digest = checkpoint_digest(signed.body.encode("utf-8"))
        if cp.size != receipt.size or receipt.root != digest:
            raise VerificationError(
                f"the receipt's size or root does not match its checkpoint of {origin}",
                code="replica_anchor_invalid",
            )
        if held is not None and held.root != digest:
            await self._equivocation(spec, vkey, held.checkpoint, receipt.checkpoint, None)
        head = self._heads.get(origin)
        if head is not None and head.size == cp.size and head.root != cp.root_hash:
            await self._equivocation(spec, vkey, head.note, receipt.checkpoint, None)
        now = int(self.clock())
        marks = dict(doc["reverified"]) if doc else {}
        here = set(marks) | {
            a.key for a in (mine.anchors if mine else ()) if a.status == "verified"
        }
        accepted: list[Anchor] = []
        for a in fresh:
            if not covers(a, digest):
                raise VerificationError(
                    f"anchor {a.key} does not cover the checkpoint of {origin} at {cp.size}",
                    code="replica_anchor_invalid",
                    details={"anchor": a.key},
                )
            if await self._reverify(a, known.get(a.key), a.key in here, now):
                marks[a.key] = now
            elif a.key in here and a.status not in ("failed", "reorged"):
                continue  # a version we cannot check does not displace one verified here
            else:
                marks.pop(a.key, None)
            accepted.append(a)
        here = set(marks) | {
            a.key for a in (mine.anchors if mine else ()) if a.status == "verified"
        }
        claims = [a for a in merge_anchors(held.anchors if held else (), accepted, verified=here)
                  if mine is None or a.key not in {m.key for m in mine.anchors}]  # fmt: skip
        note = receipt.checkpoint
        if held is not None and note_rank(held.checkpoint) >= note_rank(note):
            note = held.checkpoint
        merged = AnchorReceipt(origin, cp.size, note, digest, tuple(claims))
        kept = {a.key for a in merged.anchors}
        new_doc = {"receipt": merged.to_dict(), "changed_at": now,
                   "reverified": {k: v for k, v in sorted(marks.items()) if k in kept}}  # fmt: skip
        await asyncio.to_thread(self.store.put_state, ANCHOR_SCOPE, key,
                                json.dumps(new_doc).encode())  # fmt: skip
        return True

    async def _reverify(self, a: Anchor, held: Anchor | None, held_verified: bool,
                        now: int) -> bool:  # fmt: skip
        """Judge a claimed anchor on our own rail; whether it is verified here.

        The verdict (:meth:`~remembrancer.anchoring.base.Rail.verify`, with this
        node's own required depth) never depends on what the claim says about
        itself; the claim's status only decides whether the claimant told the
        truth, and a claim that is false is refused (VerificationError):

        - a claim of ``verified`` must come back verified with the facts it
          states (txRef, block, anchor time: what the conflict order uses), or
          committed but not yet as deep as this node requires (kept, not
          verified here); one that fails here is ``replica_anchor_invalid``,
          one that shows no commitment yet (an OTS proof with only pending
          attestations, a transaction not mined) ``replica_anchor_unverified``;
        - a claim that an anchor this node verified (``held_verified``) has
          failed is refused if the held evidence still verifies here;
        - any other claim is kept as made; it counts as verified here only if
          this node's verdict is verified with the facts it states.

        Without the rail, or when this node lacks what it needs to judge
        (``unchecked``), the claim is kept as made and not verified here."""
        try:
            rail = self.rails.get(a.target)
        except ConfigError:
            return False
        ctx = VerifyContext(now)
        if a.status in ("failed", "reorged"):
            if held is None or not held_verified:
                return False
            verdict = await asyncio.to_thread(rail.verify, replace(held, superseded_by=None), ctx)
            if verdict.verified and not verdict.lost:
                raise VerificationError(
                    f"anchor {a.key} is claimed {a.status} but verifies here",
                    code="replica_anchor_invalid",
                    details={"anchor": a.key},
                )
            return False
        verdict = await asyncio.to_thread(rail.verify, a, ctx)
        if verdict.outcome == "unchecked":
            log.info("cannot re-verify %s here: %s", a.key, verdict.explain())
            return False
        if verdict.verified:
            why = verdict.disagreement(a)
            if why is None:
                return True
            if a.status == "verified":
                raise VerificationError(
                    f"anchor {a.key} verifies here with other facts: {why}",
                    code="replica_anchor_invalid",
                    details={"anchor": a.key},
                )
            return False
        if a.status != "verified":
            return False  # an honest claim may lag behind the chain: kept as made
        if verdict.outcome == "failed":
            raise VerificationError(
                f"anchor {a.key} is claimed verified but fails here: {verdict.explain()}",
                code="replica_anchor_invalid",
                details={"anchor": a.key, "cause": verdict.code},
            )
        if verdict.code != DEPTH_INSUFFICIENT:
            raise VerificationError(
                f"anchor {a.key} is claimed verified but is not committed: {verdict.explain()}",
                code="replica_anchor_unverified",
                details={"anchor": a.key, "cause": verdict.code},
            )
        return False  # not deep enough here yet

    async def anchor_head(self, origin: str, target: str) -> dict[str, Any]:
        """Anchor the replica's latest checkpoint on this node's rail ``target``
        (a witness's own timestamp of what it witnessed); the claim joins the
        replica's anchors and spreads with the next bundles.  NotFoundError for
        an unknown replica or rail, PeerError ``rail_unavailable`` when the rail
        fails."""
        spec = self.specs.get(origin)
        head = self._heads.get(origin)
        if spec is None or head is None:
            raise NotFoundError(f"no replica of {origin!r} here", code="replica_unknown")
        try:
            rail = self.rails.get(target)
        except ConfigError as e:
            raise NotFoundError(e.message, code=e.code, details={"target": target}) from e
        body = Note.from_bytes(head.note).text.encode("utf-8")
        digest = checkpoint_digest(body)
        now = int(self.clock())
        try:
            anchor: Anchor = await asyncio.to_thread(rail.submit, digest, now=now)
        except RailError as e:
            raise PeerError(f"{target} did not anchor: {e.message}", code="rail_unavailable",
                            details={"target": target, "cause": e.code}) from e  # fmt: skip
        receipt = AnchorReceipt(origin, head.size, head.note, digest, (anchor,))
        report = await self.merge_claims([receipt.to_dict()], sender=None)
        if report.refused:
            raise VerificationError(f"the new anchor of {origin} did not verify here",
                                    code=report.refused[0], details={"anchor": anchor.to_dict()})  # fmt: skip
        return {"origin": origin, "size": head.size, "anchor": anchor.to_dict(),
                "receipts": [v for v in self.anchor_view(origin) if v["size"] == head.size]}  # fmt: skip

    def bundle_items(self, namespace: str, from_ts: int | None,
                     to_ts: int | None) -> list[tuple[int, dict[str, Any]]]:  # fmt: skip
        """Anchor receipts of every log of ``namespace`` this node holds, with their
        anchor times, within ``[from_ts, to_ts]``."""
        origins = [o for o in self.specs if namespace_of(o) == namespace]
        if self.own is not None:
            origins += [o for o, ns in self.own.origins().items() if ns == namespace]
        out = []
        for origin in origins:
            for receipt, _ in self.anchor_receipts(origin, relay=True):
                t = receipt_time(receipt)
                if (from_ts is None or t >= from_ts) and (to_ts is None or t <= to_ts):
                    out.append((t, receipt.to_dict()))
        return out


def _note_size(note: bytes) -> int:
    lines = note.split(b"\n", 2)
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else -1
