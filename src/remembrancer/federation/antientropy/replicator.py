"""The anti-entropy federation extension: heartbeats, rounds, requests and bundles.

:class:`Replicator` drives a :class:`~remembrancer.federation.antientropy.engine.ReplicaEngine`
from federation messages: heartbeats start syncs of the logs a peer hosts,
a periodic round retries what failed, and signed ``request`` messages are
answered with at most :data:`~remembrancer.federation.antientropy.claims.MAX_REPLY_MESSAGES`
``bundle`` messages from a per-peer cursor (:data:`CURSOR_SLACK`, a full
exchange every :data:`FULL_RESYNC_SECONDS` and after a partition heals).

A sync pass fetches the checkpoints of its candidate sources at once (at
most :data:`PROBE_CONCURRENCY` in flight), then syncs, one source at a
time, from those that answered (everything still verified by the engine):
a pass costs about one fetch however many sources are unreachable, and a
heartbeat from a host while a pass still waits on unreachable sources
starts the pass again with that host.  Each round asks
:data:`EXCHANGE_FANOUT` peers (in rotation, so every peer in turn) and
every peer that came back after being away, not every peer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx

from remembrancer.anchoring.base import RailRegistry
from remembrancer.core.anchor import AnchorReceipt, checkpoint_digest, covers
from remembrancer.core.errors import FormatError, PeerError, RemembrancerError, VerificationError
from remembrancer.core.keys import PublicKey
from remembrancer.core.note import format_vkey
from remembrancer.core.tiles import Tile
from remembrancer.federation.antientropy.claims import (
    ClaimBudget,
    federation_receipt_time,
    pack_bundles,
    receipt_time,
)
from remembrancer.federation.antientropy.engine import (
    DEFAULT_MEMORY_BUDGET,
    OwnLogs,
    ReplicaEngine,
)
from remembrancer.federation.antientropy.metrics import ReplicaMetrics
from remembrancer.federation.antientropy.model import ReplicaSpec, namespace_of
from remembrancer.federation.antientropy.source import (
    FETCH_CONCURRENCY,
    FETCH_TIMEOUT,
    HttpSource,
    Source,
)
from remembrancer.federation.evidence.equivocation import EquivocationEvidence
from remembrancer.federation.ports import (
    EquivocationReports,
    Inbox,
    Outbox,
    PeerView,
    ReceiptKeeper,
)
from remembrancer.federation.protocol.contents import (
    BundleContent,
    HeartbeatContent,
    RequestContent,
)
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import TYPE as FEDERATION_RECEIPT_TYPE
from remembrancer.federation.receipts import FederationReceipt
from remembrancer.federation.transport import FederationClient, RetryPolicy
from remembrancer.storage.base import Store

__all__ = ["Replicator"]


log = logging.getLogger("remembrancer.antientropy")


CURSOR_SLACK: Final = 60  # seconds of anchor time asked again each round
FULL_RESYNC_SECONDS: Final = 600
SYNC_DEADLINE: Final = 120.0  # replication.sync_deadline_s: one sync from one source
FAULT_BACKOFF_MAX: Final = 600.0  # seconds a faulty source stays at the back of the line
PROBE_CONCURRENCY: Final = 32  # checkpoints of candidate sources fetched at once in a pass
EXCHANGE_FANOUT: Final = 3  # peers asked for anchors and receipts each round (in rotation)
CONNECT_TIMEOUT: Final = 3.0  # seconds to connect to a source (the fetch deadline bounds the rest)


@dataclass
class _Cursor:
    from_ts: int = 0  # anchor time to ask from (0: everything)
    full_at: float = 0.0  # when the last exchange from 0 was asked


class SequencerLogs:
    """This node's own logs as the engine needs them (:class:`~.engine.OwnLogs`):
    the sequencer's origins, the node key's vkey for each, the scheduler's receipts."""

    def __init__(self, logs: Any, key: PublicKey,
                 receipts: Callable[[str], list[AnchorReceipt]]) -> None:  # fmt: skip
        self.logs = logs  # the sequencer: origin(), namespaces
        self.key = key
        self._receipts = receipts

    def origins(self) -> dict[str, str]:
        logs = self.logs
        return {logs.origin(ns): ns for ns in logs.namespaces.current()}

    def spec(self, origin: str) -> ReplicaSpec:
        return ReplicaSpec(origin, (format_vkey(origin, self.key),))

    def receipts(self, namespace: str) -> list[AnchorReceipt]:
        return self._receipts(namespace)


class Replicator:
    """Anti-entropy for one node: a federation extension on the parts it is given.

    ``inbox`` takes its ``heartbeat``, ``request`` and ``bundle`` handlers and
    starts and stops it; ``peers`` says who the peers are and takes blame;
    ``outbox`` sends requests and bundles; ``receipts`` filters and keeps the
    federation receipts that arrive in bundles; ``reports`` takes the
    equivocation the engine proves; ``own`` is this node's own logs."""

    def __init__(
        self,
        inbox: Inbox,
        peers: PeerView,
        outbox: Outbox,
        receipts: ReceiptKeeper,
        reports: EquivocationReports,
        store: Store,
        specs: Iterable[ReplicaSpec],
        rails: RailRegistry,
        *,
        own: OwnLogs | None = None,
        clock: Callable[[], float] = time.time,
        heartbeat_seconds: float = 2.0,
        interval: float = 5.0,
        metrics_registry: Any = None,
        budget: ClaimBudget | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        fetch_deadline: float = FETCH_TIMEOUT,
        sync_deadline: float = SYNC_DEADLINE,
        exchange_fanout: int = EXCHANGE_FANOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.peers = peers
        self.outbox = outbox
        self.receipts = receipts
        self.reports = reports
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        self.interval = interval
        self.metrics = ReplicaMetrics(metrics_registry)
        self.fetch_deadline = fetch_deadline
        self.sync_deadline = sync_deadline
        self.engine = ReplicaEngine(
            store, specs, rails, clock=clock, own=own,
            blame=self._blame, report_equivocation=self._report, metrics=self.metrics,
            budget=budget,
            memory_budget=memory_budget,
        )  # fmt: skip
        self.store = store
        self._claims: dict[str, dict[str, tuple[int, str, float]]] = {}  # origin -> host -> claim
        self._last_beat: dict[str, float] = {}
        self._cursors: dict[tuple[str, str], _Cursor] = {}
        self._syncing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._failures: dict[str, int] = {}
        # peer -> (faults in a row, tried again only as a last resort until then)
        self._faults: dict[str, tuple[int, float]] = {}
        self._no_mirror: dict[tuple[str, str], tuple[int, float]] = {}  # (origin, peer) -> backoff
        self._bad: set[str] = set()  # peers that served bad data (not forgiven by a heartbeat)
        self._probing: dict[str, object] = {}  # origin -> the pass waiting on checkpoint fetches
        # Origins whose waiting pass a heartbeat restarted once already: that pass is
        # not restarted again (heartbeats come faster than a fetch deadline, and a
        # source that drips would otherwise keep every pass from ending).
        self._restarted: set[str] = set()
        self._owed: set[str] = set()  # peers back after being away: asked next round
        self.exchange_fanout = exchange_fanout
        self._transport = transport  # the tiles client's (the simulation's network); else HTTP
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
        inbox.add_handler(HeartbeatContent, self._on_heartbeat)
        inbox.add_handler(RequestContent, self._on_request)
        inbox.add_handler(BundleContent, self._on_bundle)
        inbox.add_extension(self)

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.fetch_deadline,
                                      connect=min(CONNECT_TIMEOUT, self.fetch_deadline)),
                limits=httpx.Limits(max_connections=4 * FETCH_CONCURRENCY,
                                    max_keepalive_connections=2 * FETCH_CONCURRENCY),
                follow_redirects=False, trust_env=False, transport=self._transport,
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
        await self.peers.score(peer, "invalid", code)

    async def _report(self, evidence: EquivocationEvidence) -> None:
        await self.reports.report_equivocation(evidence)

    def _peers(self) -> list[Any]:
        """The other peers to exchange with: every one not suspended (a peer put on
        probation by missed heartbeats, say during a partition, is exactly one to
        catch up with)."""
        return [p for p in self.peers.listed()
                if p.did != self.peers.self_did and p.status != "suspended"]  # fmt: skip

    def _endpoint(self, did: str) -> str | None:
        peer = self.peers.registry.get(did)
        return str(peer.endpoint).rstrip("/") if peer is not None else None

    # --- heartbeats and rounds ----------------------------------------------------------------
    async def _on_heartbeat(self, sender: str, content: HeartbeatContent, raw: bytes) -> None:
        now = self.clock()
        prev = self._last_beat.get(sender)
        self._last_beat[sender] = now
        if prev is not None and now - prev > 3 * self.heartbeat_seconds:
            # It was away: a full exchange with it next round, and the backoff it
            # earned by not answering (not by serving bad data) is over.
            self._restart_exchange(sender)
            self._owed.add(sender)
            if sender not in self._bad:
                self._faults.pop(sender, None)
            for s in content.logs:
                self._failures.pop(s.origin, None)
                self._retry_at.pop(s.origin, None)
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
                # A pass still waiting on sources that do not answer starts again:
                # this heartbeat's sender answered just now.
                self._kick(s.origin, restart=True)

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

    def _kick(self, origin: str, *, restart: bool = False) -> None:
        task = self._syncing.get(origin)
        if task is not None and not task.done():
            if not (restart and origin in self._probing and origin not in self._restarted):
                self._again.add(origin)
                return
            # Only checkpoint fetches are cancelled: nothing was verified or kept yet.
            del self._probing[origin]
            self._restarted.add(origin)
            task.cancel()
        self._syncing[origin] = asyncio.get_running_loop().create_task(
            self._sync_loop(origin), name=f"replica-sync {origin}"
        )

    def _sources(self, origin: str) -> tuple[list[HttpSource], list[HttpSource]]:
        """The log's hosts, and the other peers' mirrors, each in the order they are
        tried: by what this node verified, not by what a heartbeat claims.
        A peer that recently stalled or served bad data comes last; before it,
        the one whose checkpoint of the log verified here at the largest size;
        a heartbeat's claim only orders peers nothing was verified from yet."""
        ns = namespace_of(origin)
        now = self.clock()
        claims = self._claims.get(origin, {})

        def order(did: str) -> tuple[bool, int, int, str]:
            verified = self.engine.verified_from.get((origin, did), 0)
            claim = claims[did][0] if did in claims and not verified else 0
            return (self._faulty(did, now), -verified, -claim, did)

        hosts = sorted(self._claims.get(origin, {}), key=order)
        first = []
        for did in hosts:
            ep = self._endpoint(did)
            if ep is not None and ns is not None:
                first.append(HttpSource(self.client, f"{ep}/logs/{ns}/", peer=did,
                                        deadline=self.fetch_deadline))  # fmt: skip
        host_dids = set(hosts)
        others = sorted((p.did for p in self._peers() if p.did not in host_dids), key=order)
        mirrors = [HttpSource(self.client, f"{ep}/v1/replicas/{origin}/", peer=did,
                              deadline=self.fetch_deadline)
                   for did in others if (ep := self._endpoint(did)) is not None]  # fmt: skip
        return first, mirrors

    def _faulty(self, did: str, now: float) -> bool:
        """Whether ``did`` stalled or served bad data recently (it is tried last)."""
        fault = self._faults.get(did)
        return fault is not None and now < fault[1]

    async def _fault(self, did: str | None, *, stalled: bool) -> None:
        """``did`` stalled (a fetch or a sync over its deadline: scored ``missed``)
        or served bad data (the engine blamed it already): to the back of the
        line, for longer each time it happens again."""
        if did is None:
            return
        if not stalled:
            self._bad.add(did)
        n = self._faults.get(did, (0, 0.0))[0] + 1
        self._faults[did] = (
            n,
            self.clock() + min(FAULT_BACKOFF_MAX, self.interval * 2 ** min(n, 10)),
        )
        if stalled:
            await self.peers.score(did, "missed")

    def _best_claim(self, origin: str) -> int:
        return max((c[0] for c in self._claims.get(origin, {}).values()), default=0)

    async def _sync_one(self, origin: str, source: Source) -> None:
        """One sync from one source, within :attr:`sync_deadline` (what verified by
        then is kept: the mirror commits chunk by chunk)."""
        try:
            async with asyncio.timeout(self.sync_deadline):
                await self.engine.sync(origin, source)
        except TimeoutError as e:
            err = PeerError(f"{source.name}: no complete sync within {self.sync_deadline:g} s",
                            code="replica_sync_timeout", details={"source": source.name})  # fmt: skip
            self.engine.errors[origin] = {**err.to_dict(), "source": source.name,
                                          "peer": source.peer, "at": int(self.clock())}  # fmt: skip
            raise err from e

    async def _sync_loop(self, origin: str) -> None:
        """Sync from the hosts; ask the mirrors only when no host could be reached
        (a host that answered, even with something refused, has had its say).
        Mirrors that stalled, served bad data or had no mirror of the log
        recently are not asked (until their backoff runs out, or a heartbeat
        shows a stalled one back); a host is always asked.  A log that could not
        be synced is retried after one heartbeat or round interval (the shorter),
        then 2, 4, ... of them (at most 60 s), and at once when a heartbeat
        claims a new state."""
        while True:
            self._again.discard(origin)
            hosts, mirrors = self._sources(origin)
            now = self.clock()
            reached = await self._pass(origin, hosts)
            if not reached:
                await self._pass(origin, [
                    m for m in mirrors if m.peer is None or not (
                        self._faulty(m.peer, now)
                        or now < self._no_mirror.get((origin, m.peer), (0, 0.0))[1]
                    )
                ], mirrors=True)  # fmt: skip
            self._update_lag(origin)
            if origin in self.engine.errors:  # back off: the rounds retry later
                self._failures[origin] = n = self._failures.get(origin, 0) + 1
                step = min(self.heartbeat_seconds, self.interval)
                self._retry_at[origin] = self.clock() + min(60.0, step * 2 ** min(n - 1, 6))
            else:
                self._failures.pop(origin, None)
                self._retry_at.pop(origin, None)
            if origin not in self._again:
                return

    async def _probe(self, source: HttpSource, slots: asyncio.Semaphore) -> bytes | PeerError:
        async with slots:
            try:
                return await source.checkpoint()
            except PeerError as e:
                return e

    async def _pass(self, origin: str, sources: Sequence[HttpSource], *,
                    mirrors: bool = False) -> bool:  # fmt: skip
        """Fetch the checkpoints of ``sources`` at once, then sync from those that
        answered, in their order, until the head reaches the best claim; True if
        any source was reached.  A source that stalled is scored and goes to the
        back of the line; one that served bad data is blamed by the engine and
        goes there too; the rest of the line is not asked after a faulty one.
        A mirror that refused (no mirror of the log there, say) is not asked
        again for a doubling backoff."""
        if not sources:
            return False
        # Sources at the back of the line (they stalled or served bad data) are not
        # even asked while another source can be: first the others, then them.
        now = self.clock()
        fresh = [s for s in sources if s.peer is None or not self._faulty(s.peer, now)]
        if fresh and len(fresh) < len(sources):
            if await self._pass(origin, fresh, mirrors=mirrors):
                return True
            sources = [s for s in sources if s not in fresh]
        token = object()
        self._probing[origin] = token
        try:
            slots = asyncio.Semaphore(PROBE_CONCURRENCY)
            notes = await asyncio.gather(*(self._probe(s, slots) for s in sources))
        finally:
            if self._probing.get(origin) is token:
                del self._probing[origin]
                self._restarted.discard(origin)  # this pass's probes ended: restartable again
        reached = False
        for source, note in zip(sources, notes, strict=True):
            did = source.peer
            if reached and did is not None and self._faulty(did, self.clock()):
                break  # the rest are at the back of the line for a reason
            try:
                await self._sync_one(origin, _Fetched(source, note))
            except PeerError as e:
                if e.code in ("replica_fetch_timeout", "replica_sync_timeout"):
                    await self._fault(did, stalled=True)
                elif e.code != "replica_fetch_failed":
                    reached = True
                elif mirrors and did is not None:
                    n = self._no_mirror.get((origin, did), (0, 0.0))[0] + 1
                    self._no_mirror[(origin, did)] = (
                        n,
                        self.clock() + min(FAULT_BACKOFF_MAX, self.interval * 2 ** min(n, 10)),
                    )
                continue
            except (VerificationError, FormatError):
                await self._fault(did, stalled=False)
                reached = True
                continue
            except RemembrancerError:
                reached = True
                continue
            reached = True
            if did is not None:
                self._faults.pop(did, None)
                self._bad.discard(did)
                self._no_mirror.pop((origin, did), None)
            head = self.engine.head(origin)
            if head is not None and head.size >= self._best_claim(origin):
                break
        return reached

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
        silent_after = 3 * self.heartbeat_seconds
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

    def _exchange_peers(self) -> list[Any]:
        """This round's peers to ask: :attr:`exchange_fanout` of them in rotation
        (each node starts the rotation at its own place, from its DID, so the
        peers are not all asked at once), and every peer back after being away."""
        peers = sorted(self._peers(), key=lambda p: p.did)
        if self.exchange_fanout <= 0 or len(peers) <= self.exchange_fanout:
            chosen = peers
        else:
            me = hashlib.sha256(str(self.peers.self_did).encode()).digest()
            start = (int.from_bytes(me[:4], "big") + self.rounds * self.exchange_fanout) % len(
                peers
            )
            chosen = [peers[(start + i) % len(peers)] for i in range(self.exchange_fanout)]
        picked = {p.did for p in chosen}
        chosen += [p for p in peers if p.did in self._owed and p.did not in picked]
        self._owed.clear()
        return chosen

    async def _exchange(self) -> None:
        """Send this round's requests (to :meth:`_exchange_peers`): one task per
        peer (a peer whose previous requests are still on their way is skipped
        this round)."""
        now = self.clock()
        for peer in self._exchange_peers():
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
                (delivery,) = await self.outbox.deliver([peer], content, client=self.messages)
                if not delivery.delivered:
                    return  # unreachable now: the next round tries again
        except Exception:
            log.exception("sending requests to %s failed", peer.did)

    # --- requests and bundles -----------------------------------------------------------------
    async def _on_request(self, sender: str, content: RequestContent, raw: bytes) -> None:
        key = (sender, content.namespace)
        if key in self._answering:
            return  # one answer at a time per peer and namespace
        peer = self.peers.registry.get(sender)
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
                (delivery,) = await self.outbox.deliver([peer], bundle, client=self.messages)
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
        after: tuple[str, str] | None = None
        while True:
            page = self.store.federation_receipts(namespace, after=after, limit=256)
            if not page:
                return out
            after = (page[-1].namespace, page[-1].receipt_id)
            for row in page:
                d = json.loads(row.receipt)
                t = federation_receipt_time(d)
                if (from_ts is not None and t < from_ts) or (to_ts is not None and t > to_ts):
                    continue
                try:
                    receipt = self.receipts.checked_receipt(FederationReceipt.from_dict(d))
                except (FormatError, VerificationError) as e:
                    log.info("not relaying a stored receipt of %s: %s", namespace, e.explain())
                    continue
                out.append((t, receipt.to_dict(quorum=self.peers.registry.quorum)))

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
        if receipt.federation_id != self.peers.registry.federation_id:
            raise VerificationError("a receipt of another federation",
                                    code="replica_receipt_invalid")  # fmt: skip
        signed, _ = await asyncio.to_thread(spec.open, receipt.checkpoint)
        if not covers(receipt.anchor, checkpoint_digest(signed.body.encode("utf-8"))):
            raise VerificationError("the receipt's anchor does not cover its checkpoint",
                                    code="replica_receipt_invalid")  # fmt: skip
        # Against the registry, as `remembrancer federation verify --registry` does:
        # a countersigner that missed heartbeats since is still a valid signer.
        checked = self.receipts.checked_receipt(receipt)
        return await asyncio.to_thread(self.receipts.keep_receipt, checked)

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = int(self.clock())
        receipts: dict[str, int] = {}
        after: tuple[str, str] | None = None
        while page := self.store.federation_receipts(after=after, limit=256):
            after = (page[-1].namespace, page[-1].receipt_id)
            for row in page:
                origin = json.loads(row.receipt).get("origin")
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


class _Fetched:
    """A source whose checkpoint was fetched already (by a pass's probe): the
    engine verifies it as if it fetched it now (or meets the error the fetch
    met), then reads the source's tiles."""

    def __init__(self, source: Source, note: bytes | PeerError) -> None:
        self._source = source
        self._note = note

    @property
    def name(self) -> str:
        return self._source.name

    @property
    def peer(self) -> str | None:
        return self._source.peer

    async def checkpoint(self) -> bytes:
        if isinstance(self._note, PeerError):
            raise self._note
        return self._note

    async def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return await self._source.tiles(tiles)

    async def bundles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return await self._source.bundles(tiles)
