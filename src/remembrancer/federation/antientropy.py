"""Anti-entropy: verified replicas of the logs a node witnesses (DESIGN.md 3.10).

Every node keeps, for each log it witnesses (``witness.logs`` in node.yaml:
the origin and the log's vkeys), a *replica*:

- the latest checkpoint, accepted only when it is signed by the log's key and
  is proven to extend the replica's previous one (an RFC 6962 consistency
  proof computed from the source's tiles, or, for a mirror, the root
  recomputed from the entries).  A second, validly signed checkpoint that
  does not extend the first is equivocation: the node builds the
  offline-verifiable ``remembrancer.equivocation/v1`` file and hands it to the
  federation's existing evidence path (probation, gossip);
- with ``mirror: true``, the log's entries as C2SP tlog-tiles (entry bundles
  and hash tiles, kept in the node's store under the log key
  ``replica/<origin>``), served read-only under ``/v1/replicas/<origin>/``
  so a mirror can answer for its peer;
- the log's anchor receipts: every claim on one of the log's checkpoint
  digests that anyone made (the log's own scheduler, or a witness that
  anchored its replica), merged with :func:`core.anchor.resolve_conflicts`
  so every node applies the one conflict order; each claim's checkpoint must
  verify with the log's key and each anchor must cover it; claims are
  judged with this node's own rails when it has the rail, never on their
  ``status`` or ``requiredDepth`` (``reverified_here``: the anchors verified
  here), a claim of ``verified`` that fails or shows no commitment here is
  refused, and only anchors verified here rank as verified in the order;
- the federation receipts of the log, verified with
  :func:`~remembrancer.federation.receipts.verify_federation_receipt` against
  the registry and kept with the node's own final receipts.

Nothing is kept before it verifies.  A source that serves something that
does not verify is refused and counted against the peer that served it
(``PeerScores.on_invalid``); a transport failure is only retried.

Where the data comes from:

- **Checkpoints and tiles** over HTTP from the log's host (the peer whose
  ``heartbeat`` lists the origin): ``/logs/<namespace>/checkpoint`` and
  ``tile/...``; when no host can be reached, from the other peers' mirrors
  (``/v1/replicas/<origin>/``).  Heartbeats carry each host's
  ``(origin, size, root)``; a larger size (or the same size with another
  root) starts a sync at once, and a periodic round retries what failed.
- **Anchors and federation receipts** with signed ``request`` messages
  answered by ``bundle`` messages (docs/spec/federation.md).  Each round a
  node asks every active peer about each namespace it follows (its own and
  those of the logs it witnesses), from a per-peer cursor: the greatest
  anchor time it received from that peer, less :data:`CURSOR_SLACK`; a node
  restarts from zero (a full exchange) on first contact, when a peer comes
  back after missing heartbeats (a healed partition), and every
  :data:`FULL_RESYNC_SECONDS`.  A responder sends at most
  :data:`MAX_REPLY_MESSAGES` bundles per request, oldest items first, so a
  long catch-up continues over several rounds.

Mirroring fetches the missing entry bundles (256 entries each) in chunks of
:data:`CHUNK_BUNDLES`, :data:`FETCH_CONCURRENCY` at a time, hashes them in
one batch per chunk and extends the stored tree.  A chunk that ends before
the checkpoint is checked with a consistency proof from the chunk's
recomputed root to the signed root (computed from the source's hash tiles);
the last chunk's root must be the signed root.  Each chunk is committed to
the store in one transaction (entries, tiles and state), so a mirror only
ever holds a verified prefix of a signed tree.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import httpx
from prometheus_client import Counter, Gauge

from remembrancer.anchoring.base import DEPTH_INSUFFICIENT, RailError, RailRegistry, VerifyContext
from remembrancer.core.anchor import (
    MAX_ANCHORS,
    Anchor,
    AnchorReceipt,
    checkpoint_digest,
    covers,
    resolve_conflicts,
)
from remembrancer.core.checkpoint import SignedCheckpoint, open_checkpoint
from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    InconsistencyError,
    NotFoundError,
    PeerError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.jcs import canonicalize
from remembrancer.core.note import Note, format_vkey, parse_vkey
from remembrancer.core.record import NAMESPACE_RE
from remembrancer.core.rfc6962 import (
    HASH_SIZE,
    consistency_proof,
    root_hash,
    verify_consistency,
)
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
from remembrancer.federation.evidence import EquivocationEvidence
from remembrancer.federation.protocol import (
    MAX_LIST_ITEMS,
    BundleContent,
    HeartbeatContent,
    Message,
    RequestContent,
)
from remembrancer.federation.receipts import TYPE as FEDERATION_RECEIPT_TYPE
from remembrancer.federation.receipts import FederationReceipt
from remembrancer.federation.service import RECEIPT_SCOPE, FederationService
from remembrancer.federation.transport import FederationClient, RetryPolicy
from remembrancer.log.tiles import TileWriter
from remembrancer.storage.base import AppendBatch, EntryRow, LogState, Store

__all__ = [
    "ANCHOR_SCOPE",
    "CHUNK_BUNDLES",
    "MIRROR_PREFIX",
    "REPLICA_SCOPE",
    "HttpSource",
    "ReplicaEngine",
    "ReplicaHead",
    "ReplicaSpec",
    "Replicator",
    "Source",
    "merge_anchors",
    "pack_bundles",
    "receipt_time",
]

log = logging.getLogger("remembrancer.antientropy")

REPLICA_SCOPE: Final = "replicas"
"""Store state scope of replica heads: origin -> JSON :class:`ReplicaHead`."""
ANCHOR_SCOPE: Final = "replica-anchors"
"""Store state scope of anchor claims: ``<origin>/<size, 20 digits>`` -> JSON."""
MIRROR_PREFIX: Final = "replica/"
"""A mirrored log's entries and tiles are the store log ``replica/<origin>``
(never a namespace name: those have no ``/``)."""

CHUNK_BUNDLES: Final = 64  # entry bundles per verified, committed chunk (16,384 entries)
FETCH_CONCURRENCY: Final = 16  # HTTP requests in flight per source
MAX_CHECKPOINT_BYTES: Final = 64 * 1024
MAX_BUNDLE_BYTES: Final = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)
BUNDLE_BUDGET: Final = 200 * 1024  # bytes of items per bundle message (the limit is 256 KiB)
MAX_REPLY_MESSAGES: Final = 8  # bundles answering one request
CURSOR_SLACK: Final = 60  # seconds of anchor time asked again each round
FULL_RESYNC_SECONDS: Final = 600
FETCH_TIMEOUT: Final = 10.0


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------


def namespace_of(origin: str) -> str | None:
    """The namespace of a Remembrancer log origin (``<prefix>/<namespace>``), if it has one."""
    ns = origin.rsplit("/", 1)[-1]
    return ns if NAMESPACE_RE.match(ns) else None


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """A log this node replicates: its origin, its vkeys, whether to mirror its entries."""

    origin: str
    vkeys: tuple[str, ...]
    mirror: bool = False

    @property
    def namespace(self) -> str | None:
        return namespace_of(self.origin)

    def open(self, note: bytes) -> tuple[SignedCheckpoint, str]:
        """Verify a checkpoint note with one of the log's keys; the checkpoint and that vkey.

        VerificationError ``replica_checkpoint_invalid`` (no key of the log
        signed it) or ``replica_origin_mismatch``; FormatError for a note that
        does not parse."""
        last: RemembrancerError | None = None
        for vkey in self.vkeys:
            try:
                signed = open_checkpoint(note, parse_vkey(vkey))
            except VerificationError as e:
                last = e
                continue
            if signed.checkpoint.origin != self.origin:
                raise VerificationError(
                    f"the checkpoint is for {signed.checkpoint.origin!r}, not {self.origin!r}",
                    code="replica_origin_mismatch",
                )
            return signed, vkey
        raise VerificationError(
            f"the checkpoint is not signed by the key of {self.origin}"
            + (f" ({last.code})" if last else ""),
            code="replica_checkpoint_invalid",
            details={"origin": self.origin},
        )


@dataclass(frozen=True, slots=True)
class ReplicaHead:
    """The latest verified checkpoint of a replica."""

    origin: str
    size: int
    root: bytes
    note: bytes
    at: int  # when this node accepted it
    source: str  # where it came from (for status)

    def to_bytes(self) -> bytes:
        return json.dumps({"origin": self.origin, "size": self.size, "root": self.root.hex(),
                           "note": self.note.decode("utf-8"), "at": self.at,
                           "source": self.source}).encode()  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes) -> ReplicaHead:
        d = json.loads(raw)
        return cls(str(d["origin"]), int(d["size"]), bytes.fromhex(d["root"]),
                   str(d["note"]).encode("utf-8"), int(d["at"]), str(d["source"]))  # fmt: skip


# --------------------------------------------------------------------------
# Anchor claims: the one merge every node applies
# --------------------------------------------------------------------------

_STATUS_RANK: Final = {"pending": 0, "submitted": 1, "verified": 2, "failed": 3, "reorged": 4}


def _version_key(a: Anchor) -> tuple[int, int, int, bytes]:
    """Order of two versions of one anchor (same target and txRef): the later wins.

    Every allowed status transition raises the rank, so the greatest version
    is the most advanced one; ties are broken by depth, observation time and
    the canonical bytes, so the choice does not depend on arrival order."""
    return (_STATUS_RANK[a.status], a.finality.observed_depth, a.observed_at,
            canonicalize(a.to_dict()))  # fmt: skip


def _bounded(anchors: Iterable[Anchor]) -> list[Anchor]:
    """At most MAX_ANCHORS: failed and reorged ones go first, then the oldest."""
    out = list(anchors)
    if len(out) <= MAX_ANCHORS:
        return out
    doomed = sorted(out, key=lambda a: (a.status not in ("failed", "reorged"),
                                        a.anchor_ts or 0, a.key))  # fmt: skip
    drop = {a.key for a in doomed[: len(out) - MAX_ANCHORS]}
    return [a for a in out if a.key not in drop]


def merge_anchors(*groups: Iterable[Anchor], verified: Collection[str]) -> tuple[Anchor, ...]:
    """Merge claims on one digest: one version per anchor (the latest, see
    :func:`_version_key`), in the conflict order of
    :func:`~remembrancer.core.anchor.resolve_conflicts`, losers naming the winner.
    ``verified``: the keys of the anchors this node verified on its own
    rails; only those rank as verified (a claim's own status does not).

    Commutative, associative and idempotent, so nodes that saw the same
    claims in any order, and verified the same anchors, hold the same list."""
    by_key: dict[str, Anchor] = {}
    for group in groups:
        for a in group:
            a = replace(a, superseded_by=None)
            held = by_key.get(a.key)
            if held is None or _version_key(a) > _version_key(held):
                by_key[a.key] = a
    # The conflict order ends with txRef; two targets can share one (two TSAs'
    # serial numbers): presorting by key (target/txRef) makes that last tie
    # break the same way on every node (resolve_conflicts sorts stably).
    return tuple(resolve_conflicts(sorted(_bounded(by_key.values()), key=lambda a: a.key),
                                   verified=verified))  # fmt: skip


def _note_rank(note: bytes) -> tuple[int, bytes]:
    """Which of two notes of one checkpoint to keep: more signatures, then the
    greater bytes (any fixed rule will do: it must not depend on arrival order)."""
    try:
        sigs = len(Note.from_bytes(note).signatures)
    except RemembrancerError:
        sigs = 0
    return (sigs, note)


def receipt_time(receipt: AnchorReceipt) -> int:
    """The anchor time of an anchor receipt, as requests select it: the latest
    anchor time or observation of its anchors."""
    return max((max(a.anchor_ts or 0, a.observed_at) for a in receipt.anchors), default=0)


def federation_receipt_time(d: Mapping[str, Any]) -> int:
    anchor = (d.get("evidence") or {}).get("anchor") or {}
    values = [d.get("finalized_at"), anchor.get("anchorTs"), anchor.get("observedAt")]
    return max((v for v in values if type(v) is int), default=0)


def pack_bundles(
    namespace: str,
    receipts: Sequence[tuple[int, dict[str, Any]]],
    anchors: Sequence[tuple[int, dict[str, Any]]],
    *,
    in_reply_to: int | None = None,
    budget: int = BUNDLE_BUDGET,
    max_messages: int = MAX_REPLY_MESSAGES,
) -> list[BundleContent]:
    """Pack ``(time, item)`` pairs, oldest first, into bundle contents of at most
    ``budget`` bytes of items and :data:`MAX_LIST_ITEMS` items per list; at most
    ``max_messages`` of them (the rest waits for the next request).  An item
    larger than the budget on its own is left out."""
    items = sorted([(t, 0, json.dumps(d, sort_keys=True), d) for t, d in receipts]
                   + [(t, 1, json.dumps(d, sort_keys=True), d) for t, d in anchors],
                   key=lambda x: (x[0], x[1], x[2]))  # fmt: skip
    out: list[BundleContent] = []
    cur: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    used = 0
    for _, kind, text, d in items:
        size = len(text.encode("utf-8")) + 1
        if size > budget:
            log.warning("a %s item of %d bytes does not fit in a bundle", namespace, size)
            continue
        full = used + size > budget or len(cur[kind]) >= MAX_LIST_ITEMS
        if full and (cur[0] or cur[1]):
            out.append(BundleContent(namespace, tuple(cur[0]), tuple(cur[1]), in_reply_to))
            if len(out) >= max_messages:
                return out
            cur, used = ([], []), 0
        cur[kind].append(d)
        used += size
    if cur[0] or cur[1]:
        out.append(BundleContent(namespace, tuple(cur[0]), tuple(cur[1]), in_reply_to))
    return out


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


class Source(Protocol):
    """Where a replica's checkpoint, tiles and entry bundles come from."""

    @property
    def name(self) -> str: ...

    @property
    def peer(self) -> str | None:
        """The DID of the peer that serves it (blamed for bad data)."""
        ...

    async def checkpoint(self) -> bytes: ...

    async def tiles(self, tiles: Sequence[Tile]) -> list[bytes]: ...

    async def bundles(self, tiles: Sequence[Tile]) -> list[bytes]: ...


class HttpSource:
    """A tlog-tiles prefix over HTTP: a log (``<endpoint>/logs/<namespace>/``) or
    a peer's mirror (``<endpoint>/v1/replicas/<origin>/``).  Errors: PeerError
    ``replica_fetch_failed`` (transport, status, or an answer over its size cap)."""

    def __init__(self, client: httpx.AsyncClient, prefix: str, *, peer: str | None = None,
                 concurrency: int = FETCH_CONCURRENCY) -> None:  # fmt: skip
        self.client = client
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._peer = peer
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def name(self) -> str:
        return self.prefix

    @property
    def peer(self) -> str | None:
        return self._peer

    async def _get(self, path: str, cap: int) -> bytes:
        url = self.prefix + path
        async with self._slots:
            try:
                async with self.client.stream("GET", url) as r:
                    if r.status_code != 200:
                        raise PeerError(f"GET {url}: HTTP {r.status_code}",
                                        code="replica_fetch_failed",
                                        details={"url": url, "status": r.status_code})  # fmt: skip
                    declared = r.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > cap:
                        raise PeerError(f"GET {url}: {declared} bytes, over {cap}",
                                        code="replica_fetch_failed", details={"url": url})  # fmt: skip
                    body = bytearray()
                    async for chunk in r.aiter_bytes():
                        body += chunk
                        if len(body) > cap:
                            raise PeerError(f"GET {url}: more than {cap} bytes",
                                            code="replica_fetch_failed", details={"url": url})  # fmt: skip
                    return bytes(body)
            except httpx.HTTPError as e:
                raise PeerError(f"GET {url}: {type(e).__name__}: {e}",
                                code="replica_fetch_failed", details={"url": url}) from e  # fmt: skip

    async def checkpoint(self) -> bytes:
        return await self._get("checkpoint", MAX_CHECKPOINT_BYTES)

    async def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return list(await asyncio.gather(*(self._get(t.path(), t.byte_size) for t in tiles)))

    async def bundles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return list(
            await asyncio.gather(*(self._get(t.entries_path(), MAX_BUNDLE_BYTES) for t in tiles))
        )


def _tiles_reader(source: Source, size: int, loop: asyncio.AbstractEventLoop) -> TileNodeReader:
    """A node reader (for a worker thread) over the source's tiles of ``size``;
    each batch of tiles is fetched concurrently on ``loop``."""

    def fetch(tiles: Sequence[Tile]) -> list[bytes]:
        future = asyncio.run_coroutine_threadsafe(source.tiles(tiles), loop)
        return future.result(timeout=FETCH_TIMEOUT * 3)

    return TileNodeReader(fetch, size)


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


class ReplicaMetrics:
    """Prometheus metrics of the replicas (no-ops without a registry)."""

    def __init__(self, registry: Any = None) -> None:
        self.enabled = registry is not None
        if not self.enabled:
            return
        r = registry
        self.size = Gauge("remembrancer_replica_size", "Verified checkpoint size of each replica",
                          ["origin"], registry=r)  # fmt: skip
        self.lag = Gauge("remembrancer_replica_lag_entries",
                         "Entries the replica is behind the host's last heartbeat", ["origin"],
                         registry=r)  # fmt: skip
        self.mirrored = Counter("remembrancer_replica_entries_mirrored_total",
                                "Entries fetched, verified and stored by mirrors", ["origin"],
                                registry=r)  # fmt: skip
        self.failures = Counter("remembrancer_replica_fetch_failures_total",
                                "Fetches from peers that failed (transport, status)", ["origin"],
                                registry=r)  # fmt: skip
        self.refused = Counter("remembrancer_replica_refused_total",
                               "Items refused because they did not verify, by code", ["code"],
                               registry=r)  # fmt: skip

    def set_size(self, origin: str, size: int) -> None:
        if self.enabled:
            self.size.labels(origin).set(size)

    def set_lag(self, origin: str, lag: int) -> None:
        if self.enabled:
            self.lag.labels(origin).set(lag)

    def add_mirrored(self, origin: str, n: int) -> None:
        if self.enabled:
            self.mirrored.labels(origin).inc(n)

    def add_failure(self, origin: str) -> None:
        if self.enabled:
            self.failures.labels(origin).inc()

    def add_refused(self, code: str) -> None:
        if self.enabled:
            self.refused.labels(code).inc()


# --------------------------------------------------------------------------
# The engine: verification and storage, no networking of its own
# --------------------------------------------------------------------------


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
    ) -> None:
        self.store = store
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
        self.last_sync: dict[str, int] = {}
        self.equivocations: dict[str, str] = {}  # origin -> evidence ref
        self._incidents: set[str] = set()
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
        self.metrics.set_size(spec.origin, cp.size)
        log.info("replica of %s: %d -> %d (from %s)", spec.origin,
                 head.size if head else 0, cp.size, source.name)  # fmt: skip
        return True

    async def _check_consistency(self, spec: ReplicaSpec, vkey: str, source: Source,
                                 head: ReplicaHead, note: bytes, signed: SignedCheckpoint) -> None:  # fmt: skip
        cp = signed.checkpoint
        if head.size == 0:
            return  # the empty tree is a prefix of every tree
        loop = asyncio.get_running_loop()

        def prove() -> list[bytes]:
            return consistency_proof(head.size, cp.size, _tiles_reader(source, cp.size, loop))

        proof = await asyncio.to_thread(prove)
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
        loop = asyncio.get_running_loop()
        sizes = sorted((_note_size(held), _note_size(offered)))

        def build() -> EquivocationEvidence:
            tree = _tiles_reader(source, sizes[1], loop) if source is not None else None
            return EquivocationEvidence.build(vkey, held, offered, tree)

        try:
            evidence = await asyncio.to_thread(build)
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
        """Fetch, verify and store entries ``[start, size)`` in chunks."""
        cp = signed.checkpoint
        key = MIRROR_PREFIX + spec.origin
        size = cp.size
        loop = asyncio.get_running_loop()
        writer = await asyncio.to_thread(self._writer, key, start)
        pending = asyncio.ensure_future(self._fetch_chunk(source, start, size))
        try:
            while start < size:
                end, entries = await pending
                if end < size:
                    pending = asyncio.ensure_future(self._fetch_chunk(source, end, size))

                def verify(begin: int = start, end: int = end, entries: list[bytes] = entries,
                           base: TileWriter = writer) -> tuple[TileWriter, bytes]:  # fmt: skip
                    trial = base.copy()
                    leaves = bundle_leaf_hashes(entries)
                    hashes = [leaves[i : i + HASH_SIZE] for i in range(0, len(leaves), HASH_SIZE)]
                    tiles = trial.append(hashes)
                    root = trial.root()
                    if end == size:
                        if root != cp.root_hash:
                            raise VerificationError(
                                f"entries {begin}..{end} do not hash to the signed root",
                                code="replica_inconsistent",
                            )
                    else:
                        proof = consistency_proof(end, size, _tiles_reader(source, size, loop))
                        verify_consistency(end, size, root, cp.root_hash, proof)
                    batch = AppendBatch(key, begin, [EntryRow(e) for e in entries], tiles,
                                        LogState(key, end, root, note), int(self.clock()))  # fmt: skip
                    self.store.append(batch)
                    return trial, root

                try:
                    writer, _ = await asyncio.to_thread(verify)
                except VerificationError as e:
                    if head is not None and head.size:
                        await self._equivocation(spec, vkey, head.note, note, source)
                    raise VerificationError(
                        f"{source.name} served entries of {spec.origin} that do not match its"
                        f" signed checkpoint of size {size}: {e.message}",
                        code="replica_inconsistent",
                        details={"origin": spec.origin, "size": size, "cause": e.code},
                    ) from e
                self.metrics.add_mirrored(spec.origin, end - start)
                self._mirrored[spec.origin] = end
                start = end
        finally:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def _fetch_chunk(self, source: Source, start: int, size: int) -> tuple[int, list[bytes]]:
        """Entries ``[start, end)`` for the chunk starting at ``start``; FormatError
        ``replica_bundle_malformed`` for a bundle that does not decode."""
        first = start // TILE_WIDTH
        last = min((size - 1) // TILE_WIDTH, first + CHUNK_BUNDLES - 1)
        end = min(size, (last + 1) * TILE_WIDTH)
        tiles = [Tile(0, i, tile_width(0, i, size)) for i in range(first, last + 1)]
        blobs = await source.bundles(tiles)

        def decode() -> list[bytes]:
            entries: list[bytes] = []
            for t, blob in zip(tiles, blobs, strict=True):
                try:
                    got = decode_entry_bundle(blob, t.width)
                except FormatError as e:
                    raise FormatError(f"entry bundle {t.entries_path()}: {e.message}",
                                      code="replica_bundle_malformed") from e  # fmt: skip
                entries.extend(got[start - t.index * TILE_WIDTH :] if t.index == first else got)
            return entries

        return end, await asyncio.to_thread(decode)

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

    def _claims(self, origin: str) -> dict[int, dict[str, Any]]:
        prefix = origin + "/"
        out: dict[int, dict[str, Any]] = {}
        for k, v in self.store.list_state(ANCHOR_SCOPE).items():
            if k.startswith(prefix) and k[len(prefix) :].isdigit():
                out[int(k[len(prefix) :])] = json.loads(v)
        return out

    def _own_receipts(self, origin: str) -> dict[int, AnchorReceipt]:
        if self.own is None:
            return {}
        ns = self.own.origins().get(origin)
        return {r.size: r for r in self.own.receipts(ns)} if ns else {}

    def anchor_receipts(self, origin: str) -> list[tuple[AnchorReceipt, list[str]]]:
        """Every anchor receipt this node holds for ``origin`` (its own scheduler's
        and the claims of others, merged), with the keys of the anchors
        re-verified here, by checkpoint size."""
        claims = self._claims(origin)
        own = self._own_receipts(origin)
        out = []
        for size in sorted(set(claims) | set(own)):
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
            out.append((replace(base, anchors=anchors),
                        sorted(k for k in marks if any(a.key == k for a in anchors))))  # fmt: skip
        return out

    def anchor_view(self, origin: str) -> list[dict[str, Any]]:
        return [
            {**r.to_dict(), "reverified_here": marks} for r, marks in self.anchor_receipts(origin)
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
                changed = await self._merge_claim(item)
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

    async def _merge_claim(self, item: Mapping[str, Any]) -> bool | None:
        receipt = AnchorReceipt.from_dict(item)
        spec = self.spec_for(receipt.origin)
        if spec is None:
            return None
        async with self._lock(receipt.origin):
            return await self._merge_claim_locked(spec, receipt)

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
                 if a.key not in known or _version_key(replace(a, superseded_by=None))
                 > _version_key(replace(known[a.key], superseded_by=None))]  # fmt: skip
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
        if held is not None and _note_rank(held.checkpoint) >= _note_rank(note):
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
            for receipt, _ in self.anchor_receipts(origin):
                t = receipt_time(receipt)
                if (from_ts is None or t >= from_ts) and (to_ts is None or t <= to_ts):
                    out.append((t, receipt.to_dict()))
        return out


def _note_size(note: bytes) -> int:
    lines = note.split(b"\n", 2)
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else -1


# --------------------------------------------------------------------------
# The federation extension: heartbeats, rounds, requests and bundles
# --------------------------------------------------------------------------


@dataclass
class _Cursor:
    from_ts: int = 0  # anchor time to ask from (0: everything)
    full_at: float = 0.0  # when the last exchange from 0 was asked


class _ServiceOwnLogs:
    def __init__(self, service: FederationService,
                 receipts: Callable[[str], list[AnchorReceipt]]) -> None:  # fmt: skip
        self.service = service
        self._receipts = receipts

    def origins(self) -> dict[str, str]:
        logs = self.service.logs
        return {logs.origin(ns): ns for ns in logs.namespaces.current()}

    def spec(self, origin: str) -> ReplicaSpec:
        return ReplicaSpec(origin, (format_vkey(origin, self.service.key.public),))

    def receipts(self, namespace: str) -> list[AnchorReceipt]:
        return self._receipts(namespace)


class Replicator:
    """Anti-entropy for one node, registered on its :class:`FederationService`."""

    def __init__(
        self,
        service: FederationService,
        store: Store,
        specs: Iterable[ReplicaSpec],
        rails: RailRegistry,
        *,
        own_receipts: Callable[[str], list[AnchorReceipt]] | None = None,
        interval: float = 5.0,
        metrics_registry: Any = None,
    ) -> None:
        self.service = service
        self.clock = service.clock
        self.interval = interval
        self.metrics = ReplicaMetrics(metrics_registry)
        self.engine = ReplicaEngine(
            store, specs, rails, clock=service.clock,
            own=_ServiceOwnLogs(service, own_receipts or (lambda ns: [])),
            blame=self._blame, report_equivocation=self._report, metrics=self.metrics,
        )  # fmt: skip
        self.store = store
        self._claims: dict[str, dict[str, tuple[int, str, float]]] = {}  # origin -> host -> claim
        self._last_beat: dict[str, float] = {}
        self._cursors: dict[tuple[str, str], _Cursor] = {}
        self._syncing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._answering: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._sending: dict[str, asyncio.Future[None]] = {}
        self._client: httpx.AsyncClient | None = None
        # Requests and bundles are periodic: a lost one is sent again next round,
        # so they get one retry at most, and never hold up the next round.
        self.messages = FederationClient(
            timeout=FETCH_TIMEOUT, connect_timeout=min(3.0, max(1.0, interval)),
            retry=RetryPolicy(max_attempts=2, deadline=FETCH_TIMEOUT),
        )  # fmt: skip
        self.rounds = 0
        service.add_handler(HeartbeatContent, self._on_heartbeat)
        service.add_handler(RequestContent, self._on_request)
        service.add_handler(BundleContent, self._on_bundle)
        service.add_extension(self)

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(FETCH_TIMEOUT, connect=min(5.0, FETCH_TIMEOUT)),
                limits=httpx.Limits(max_connections=4 * FETCH_CONCURRENCY,
                                    max_keepalive_connections=2 * FETCH_CONCURRENCY),
                follow_redirects=False, trust_env=False,
            )  # fmt: skip
        return self._client

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._rounds(), name="anti-entropy")

    async def stop(self) -> None:
        tasks: list[asyncio.Future[Any]] = [
            t for t in (self._task, *self._syncing.values(), *self._sending.values(), *self._tasks)
            if t is not None
        ]  # fmt: skip
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.messages.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- federation hooks -------------------------------------------------------------------
    async def _blame(self, peer: str, code: str) -> None:
        await self.service.score(peer, "invalid", code)

    async def _report(self, evidence: EquivocationEvidence) -> None:
        await self.service.report_equivocation(evidence)

    def _peers(self) -> list[Any]:
        """The other peers to exchange with: every one not suspended (a peer put on
        probation by missed heartbeats, say during a partition, is exactly one to
        catch up with)."""
        return [p for p in self.service.verifier.peers
                if p.did != self.service.self_did and p.status != "suspended"]  # fmt: skip

    def _endpoint(self, did: str) -> str | None:
        peer = self.service.registry.get(did)
        return str(peer.endpoint).rstrip("/") if peer is not None else None

    # --- heartbeats and rounds ----------------------------------------------------------------
    async def _on_heartbeat(self, sender: str, content: HeartbeatContent, raw: bytes) -> None:
        now = self.clock()
        prev = self._last_beat.get(sender)
        self._last_beat[sender] = now
        if prev is not None and now - prev > 3 * self.service.heartbeat_seconds:
            self._restart_exchange(sender)  # it was away: a full exchange
        for s in content.logs:
            spec = self.engine.specs.get(s.origin)
            if spec is None:
                continue
            claims = self._claims.setdefault(s.origin, {})
            prev_claim = claims.get(sender)
            claims[sender] = (s.size, s.root, now)
            changed = prev_claim is None or prev_claim[:2] != (s.size, s.root)
            if self._behind(s.origin, s.size, s.root) and (
                changed or now >= self._retry_at.get(s.origin, 0.0)
            ):
                self._kick(s.origin)

    def _behind(self, origin: str, size: int, root: str) -> bool:
        head = self.engine.head(origin)
        if head is None:
            return size > 0
        if size > head.size or (size == head.size and root != "sha256:" + head.root.hex()):
            return True
        return self.engine.specs[origin].mirror and self.engine.mirrored(origin) < head.size

    def _restart_exchange(self, peer: str) -> None:
        for (p, _ns), cursor in self._cursors.items():
            if p == peer:
                cursor.from_ts = 0

    def _kick(self, origin: str) -> None:
        task = self._syncing.get(origin)
        if task is not None and not task.done():
            self._again.add(origin)
            return
        self._syncing[origin] = asyncio.get_running_loop().create_task(
            self._sync_loop(origin), name=f"replica-sync {origin}"
        )

    def _sources(self, origin: str) -> tuple[list[HttpSource], list[HttpSource]]:
        """The log's hosts (largest claimed size first), and the other peers' mirrors."""
        ns = namespace_of(origin)
        hosts = sorted(self._claims.get(origin, {}).items(), key=lambda kv: -kv[1][0])
        first = []
        for did, _ in hosts:
            ep = self._endpoint(did)
            if ep is not None and ns is not None:
                first.append(HttpSource(self.client, f"{ep}/logs/{ns}/", peer=did))
        host_dids = {did for did, _ in hosts}
        mirrors = [HttpSource(self.client, f"{str(p.endpoint).rstrip('/')}/v1/replicas/{origin}/",
                              peer=p.did)
                   for p in self._peers() if p.did not in host_dids]  # fmt: skip
        return first, mirrors

    def _best_claim(self, origin: str) -> int:
        return max((c[0] for c in self._claims.get(origin, {}).values()), default=0)

    async def _sync_loop(self, origin: str) -> None:
        """Sync from the hosts; ask the mirrors only when no host could be reached
        (a host that answered, even with something refused, has had its say)."""
        while True:
            self._again.discard(origin)
            hosts, mirrors = self._sources(origin)
            reached = False
            for source in hosts + mirrors:
                if source in mirrors and reached:
                    break
                try:
                    await self.engine.sync(origin, source)
                except PeerError as e:
                    if e.code != "replica_fetch_failed":
                        reached = True
                    continue
                except RemembrancerError:
                    reached = True
                    continue
                reached = True
                head = self.engine.head(origin)
                if head is not None and head.size >= self._best_claim(origin):
                    break
            self._update_lag(origin)
            if origin in self.engine.errors:  # back off: the rounds retry later
                self._failures[origin] = n = self._failures.get(origin, 0) + 1
                self._retry_at[origin] = self.clock() + min(60.0, self.interval * 2 ** min(n, 6))
            else:
                self._failures.pop(origin, None)
                self._retry_at.pop(origin, None)
            if origin not in self._again:
                return

    def _update_lag(self, origin: str) -> None:
        head = self.engine.head(origin)
        self.metrics.set_lag(origin, max(0, self._best_claim(origin) - (head.size if head else 0)))

    async def _rounds(self) -> None:
        await asyncio.sleep(min(1.0, self.interval))
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("anti-entropy round failed")
            await asyncio.sleep(self.interval)

    async def round(self) -> None:
        """One anti-entropy round: retry replicas that are behind or failed, ask
        every active peer for the anchors and receipts of each followed namespace."""
        self.rounds += 1
        now = self.clock()
        silent_after = 3 * self.service.heartbeat_seconds
        for origin in self.engine.specs:
            claims = self._claims.get(origin, {})
            live = [c for c in claims.values() if now - c[2] <= silent_after]
            behind = any(self._behind(origin, c[0], c[1]) for c in claims.values())
            if now < self._retry_at.get(origin, 0.0):
                continue
            known = bool(claims) or self.engine.head(origin) is not None
            if (
                behind
                or origin in self.engine.errors
                or (known and not live and self.rounds % 3 == 1)
            ):
                self._kick(origin)  # without a live host, the mirrors are asked
        await self._exchange()

    def namespaces(self) -> list[str]:
        out = {ns for ns in (s.namespace for s in self.engine.specs.values()) if ns}
        if self.engine.own is not None:
            out |= set(self.engine.own.origins().values())
        return sorted(out)

    async def _exchange(self) -> None:
        """Send this round's requests: one task per peer (a peer whose previous
        requests are still on their way is skipped this round)."""
        now = self.clock()
        for peer in self._peers():
            busy = self._sending.get(peer.did)
            if busy is not None and not busy.done():
                continue
            contents = []
            for ns in self.namespaces():
                cursor = self._cursors.setdefault((peer.did, ns), _Cursor())
                if now - cursor.full_at > FULL_RESYNC_SECONDS:
                    cursor.from_ts, cursor.full_at = 0, now
                elif cursor.from_ts == 0:
                    cursor.full_at = now
                contents.append(RequestContent(ns, from_ts=cursor.from_ts or None))
            self._sending[peer.did] = asyncio.ensure_future(self._send_requests(peer, contents))

    async def _send_requests(self, peer: Any, contents: Sequence[RequestContent]) -> None:
        try:
            for content in contents:
                (delivery,) = await self.service.deliver([peer], content, client=self.messages)
                if not delivery.delivered:
                    return  # unreachable now: the next round tries again
        except Exception:
            log.exception("sending requests to %s failed", peer.did)

    # --- requests and bundles -----------------------------------------------------------------
    async def _on_request(self, sender: str, content: RequestContent, raw: bytes) -> None:
        key = (sender, content.namespace)
        if key in self._answering:
            return  # one answer at a time per peer and namespace
        peer = self.service.registry.get(sender)
        if peer is None:
            return
        self._answering.add(key)
        seq = Message.parse(raw).seq
        self._spawn(self._answer(key, peer, content, seq), f"bundle for {sender}")

    async def _answer(self, key: tuple[str, str], peer: Any, content: RequestContent,
                      seq: int) -> None:  # fmt: skip
        try:
            want = content.want or ("receipts", "anchors")
            anchors = receipts = []
            if "anchors" in want:
                anchors = await asyncio.to_thread(
                    self.engine.bundle_items, content.namespace, content.from_ts, content.to_ts
                )
            if "receipts" in want:
                receipts = await asyncio.to_thread(
                    self._receipt_items, content.namespace, content.from_ts, content.to_ts
                )
            for bundle in pack_bundles(content.namespace, receipts, anchors, in_reply_to=seq):
                (delivery,) = await self.service.deliver([peer], bundle, client=self.messages)
                if not delivery.delivered:
                    break
        except Exception:
            log.exception("answering a request of %s failed", key[0])
        finally:
            self._answering.discard(key)

    def _receipt_items(self, namespace: str, from_ts: int | None,
                       to_ts: int | None) -> list[tuple[int, dict[str, Any]]]:  # fmt: skip
        """The final receipts of ``namespace`` to relay, each through the relay
        filter (:meth:`FederationService.checked_receipt`) against the registry in
        force now: a node relays only countersignatures it verified, and only
        receipts that are final."""
        out: list[tuple[int, dict[str, Any]]] = []
        after: str | None = None
        while True:
            page = self.store.list_state_page(RECEIPT_SCOPE, prefix=namespace + "/", after=after,
                                              limit=256)  # fmt: skip
            if not page:
                return out
            after = page[-1][0]
            for _, v in page:
                d = json.loads(v)
                t = federation_receipt_time(d)
                if (from_ts is not None and t < from_ts) or (to_ts is not None and t > to_ts):
                    continue
                try:
                    receipt = self.service.checked_receipt(FederationReceipt.from_dict(d))
                except (FormatError, VerificationError) as e:
                    log.info("not relaying a stored receipt of %s: %s", namespace, e.explain())
                    continue
                out.append((t, receipt.to_dict(quorum=self.service.registry.quorum)))

    async def _on_bundle(self, sender: str, content: BundleContent, raw: bytes) -> None:
        cursor = self._cursors.get((sender, content.namespace))
        if content.in_reply_to is not None and cursor is not None:
            # An answer to one of our requests (oldest items first): ask on from there.
            times = [federation_receipt_time(r) for r in content.receipts]
            for a in content.anchors:
                try:
                    times.append(receipt_time(AnchorReceipt.from_dict(a)))
                except FormatError:
                    continue  # refused (and counted) by the merge
            if times:
                cursor.from_ts = max(cursor.from_ts, max(times) - CURSOR_SLACK, 1)
        self._spawn(self._merge_bundle(sender, content), f"bundle from {sender}")

    async def _merge_bundle(self, sender: str, content: BundleContent) -> None:
        try:
            anchors = [a for a in content.anchors if _is_anchor_receipt(a)]
            report = await self.engine.merge_claims(anchors, sender=sender)
            refused = list(report.refused)
            for r in content.receipts:
                if r.get("type") != FEDERATION_RECEIPT_TYPE:
                    continue  # other receipt types are not ours to judge
                try:
                    await self._merge_receipt(r)
                except (FormatError, VerificationError) as e:
                    log.warning("federation receipt from %s refused: %s", sender, e.explain())
                    self.metrics.add_refused(e.code)
                    refused.append(e.code)
            blame = [
                c for c in refused if c not in ("replica_equivocation", "receipt_quorum_not_met")
            ]
            if blame:
                await self._blame(sender, blame[0])
        except Exception:
            log.exception("merging a bundle from %s failed", sender)

    async def _merge_receipt(self, d: Mapping[str, Any]) -> bool:
        """Verify a final federation receipt of a log we follow and keep it with ours
        (only its countersignatures that verify: the relay filter)."""
        receipt = FederationReceipt.from_dict(d)
        spec = self.engine.spec_for(receipt.origin)
        if spec is None or namespace_of(receipt.origin) != receipt.namespace:
            return False
        if receipt.federation_id != self.service.registry.federation_id:
            raise VerificationError("a receipt of another federation",
                                    code="replica_receipt_invalid")  # fmt: skip
        signed, _ = await asyncio.to_thread(spec.open, receipt.checkpoint)
        if not covers(receipt.anchor, checkpoint_digest(signed.body.encode("utf-8"))):
            raise VerificationError("the receipt's anchor does not cover its checkpoint",
                                    code="replica_receipt_invalid")  # fmt: skip
        # Against the registry, as `remembrancer federation verify --registry` does:
        # a countersigner that missed heartbeats since is still a valid signer.
        checked = self.service.checked_receipt(receipt)
        return await asyncio.to_thread(self.service.keep_receipt, checked)

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = int(self.clock())
        receipts: dict[str, int] = {}
        for v in self.store.list_state(RECEIPT_SCOPE).values():
            origin = json.loads(v).get("origin")
            receipts[origin] = receipts.get(origin, 0) + 1
        out = []
        for origin, spec in sorted(self.engine.specs.items()):
            head = self.engine.head(origin)
            mirror = self.engine.mirror_state(origin)
            claims = dict(self._claims.get(origin, {}))  # a copy: the loop updates it
            best = max(claims.items(), key=lambda kv: kv[1][0], default=None)
            anchors = self.engine.anchor_receipts(origin)
            self._update_lag(origin)
            out.append({
                "origin": origin, "namespace": spec.namespace, "mirror": spec.mirror,
                "size": head.size if head else 0,
                "root": "sha256:" + head.root.hex() if head else None,
                "checkpoint": head.note.decode("utf-8") if head else None,
                "accepted_at": head.at if head else None, "source": head.source if head else None,
                "mirror_size": (mirror.size if mirror else 0) if spec.mirror else None,
                "host": best[0] if best else None,
                "heartbeat_size": best[1][0] if best else None,
                "heartbeat_age_s": round(now - best[1][2], 1) if best else None,
                "lag": max(0, best[1][0] - (head.size if head else 0)) if best else None,
                "anchor_receipts": len(anchors),
                "anchors": sum(len(r.anchors) for r, _ in anchors),
                "anchors_reverified_here": sum(len(m) for _, m in anchors),
                "federation_receipts": receipts.get(origin, 0),
                "last_sync": self.engine.last_sync.get(origin),
                "last_error": self.engine.errors.get(origin),
                "equivocation": self.engine.equivocations.get(origin),
                "syncing": origin in self._syncing and not self._syncing[origin].done(),
            })  # fmt: skip
        return {"interval_s": self.interval, "rounds": self.rounds,
                "namespaces": self.namespaces(), "replicas": out}  # fmt: skip


def _is_anchor_receipt(d: Mapping[str, Any]) -> bool:
    return d.get("type") == "remembrancer.anchor-receipt/v1"
