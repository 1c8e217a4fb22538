"""Collaborative and hybrid anchoring (DESIGN.md 3.8 and 3.10; docs/anchoring.md).

With the registry's ``anchor_strategy`` set to ``collaborative`` or
``hybrid``, a node no longer anchors each due checkpoint on its own rail.
Per epoch and target one coordinator (chosen the same way on every node,
:func:`remembrancer.core.aggregation.choose_coordinator`) anchors one
aggregation root over every member's checkpoints, and each member gets its
aggregation path.  ``independent`` leaves the scheduler alone.

Member (:meth:`CollaborativeAnchoring.delegate`, the scheduler's delegation
hook).  A due level is handed over: the member keeps a *pending delegation*
(in the store, so it survives restarts) and sends its signed checkpoint in a
``checkpoint`` message (with ``namespace``, ``target`` and ``epoch``) to the
epoch's coordinator, or hands it to itself when it is the coordinator.  It
skips coordinators it does not trust now (its own scoring says they are not
``active``, or they failed it recently) by taking the first later epoch
whose coordinator it trusts.  When an aggregate arrives it checks, in order:

1. the claim holds together: the path leads from the claimed checkpoint
   digest to the anchored root (else the coordinator lied: proven);
2. the claim is about its own checkpoint (federation, target, origin, size,
   digest) and comes from the coordinator it delegated to;
3. its own rail judges the anchor's evidence with its own trust settings and
   the level's confirmations, never reading the claim's ``status`` or
   ``finality``: ``failed`` for an anchor claimed ``verified`` is proven
   (``aggregate_anchor_unverified`` and evidence); a verdict that shows no
   commitment yet (an OTS proof with only pending attestations, a
   transaction not mined) is refused, as is one this member cannot check
   (``aggregate_anchor_unchecked``, no blame) or whose facts differ from
   the claim's (``aggregate_anchor_facts_mismatch``).  A refused aggregate
   is never stored, and the member moves on at once.

A claim that arrived before the deadline is judged to the end: the member's
own rail may take past the deadline (a loaded node, a slow RPC), and its
verdict, not the clock, then decides, for at most
:attr:`~remembrancer.core.aggregation.EpochClock.judging_grace` more.  Giving
up on a claim it was still checking would score an on-time coordinator as
having missed and hand the checkpoint to a second coordinator: one
checkpoint in two aggregates, two anchors paid for.

Only then is the anchor added to the member's anchor receipt for that
checkpoint, with the member's own verdict as its status (verified, or
``submitted`` while not as deep as the level asks)
(:meth:`~remembrancer.anchoring.scheduler.Scheduler.add_anchor`),
which fires the scheduler's ``on_verified`` hooks: the federation receipt is
proposed and countersigned as for any anchor (peers check the path too).  A
proven lie becomes signed ``invalid_anchor_claim`` evidence (the
coordinator's signed message; ``remembrancer.federation.evidence``): kept,
the coordinator put on probation, gossiped.  No acceptable aggregate by the
deadline (the end of the epoch after the one delegated to; at once after a
proven lie or when the coordinator cannot be reached): the coordinator is
scored as having missed, then ``hybrid`` anchors alone on the node's own
rail and ``collaborative`` delegates again to the next trusted coordinator
(when there is none, it too anchors alone).

Coordinator.  It takes ``checkpoint`` messages for (target, epoch) only when
the choice names it, until the epoch's cut-off, for a target it has a rail
for, from the node that hosts the log (the note verifies with the sender's
own key, or with a key this node knows for that origin when the sender's
heartbeats list the origin).  At the cut-off it builds the tree over the
distinct digests, submits ONE anchor of the root, waits until its own rail
verifies it, and sends each member a ``receipt`` message holding a
``remembrancer.aggregate-anchor/v1`` claim (docs/spec/aggregate-anchor.md).
What it collected lives in memory: a coordinator that restarts mid-epoch
loses it, and its members move on at their deadline.

Status: :meth:`CollaborativeAnchoring.status` (``GET /v1/federation/anchoring``);
metrics through ``aggregate_event(event, target)`` with events
``delegated``, ``made``, ``received``, ``refused``, ``missed``, ``fallback``,
and each delegation through ``anchor_event(outcome, namespace, level, target,
"delegated")``: ``attempted`` when handed over (again, after a coordinator
failed it), ``succeeded`` when its aggregate is accepted, ``failed`` when none
was by the deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal, Protocol

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    RailError,
    RailRegistry,
    VerifyContext,
    recheck,
)
from remembrancer.anchoring.scheduler import Delegation, Scheduler
from remembrancer.core import governance
from remembrancer.core.aggregation import (
    AGGREGATE_ANCHOR_TYPE,
    AggregateAnchor,
    AggregationTree,
    EpochClock,
    choose_coordinator,
    coordinator_candidates,
    verify_aggregate,
)
from remembrancer.core.anchor import MAX_AGGREGATION_LEAVES, checkpoint_digest
from remembrancer.core.checkpoint import SignedCheckpoint, open_checkpoint
from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import NoteVerifier, Verifier
from remembrancer.federation.evidence.claims import ClaimEvidence
from remembrancer.federation.ports import ClaimReports, Inbox, Outbox, PeerView
from remembrancer.federation.protocol.contents import CheckpointContent, ReceiptContent
from remembrancer.federation.registry.model import Peer
from remembrancer.federation.transport import FederationClient, RetryPolicy
from remembrancer.storage.base import Store

__all__ = ["STATE_SCOPE", "AggregateMetrics", "CollaborativeAnchoring", "Pending"]

log = logging.getLogger("remembrancer.collaborative")
STATE_SCOPE: Final = "collaborative"
MAX_PER_SENDER: Final = 1024  # checkpoints one member may put in one (target, epoch)
DEFAULT_ANCHORS_PER_EPOCH: Final = 2  # aggregates a coordinator submits per epoch (all targets)
MAX_EPOCHS_OPEN: Final = 64  # (target, epoch) collections a coordinator keeps at once
KEEP_REFUSALS: Final = 50
Event = Literal["delegated", "made", "received", "refused", "missed", "fallback", "deferred"]


class AggregateMetrics(Protocol):
    def aggregate_event(self, event: str, target: str) -> None: ...

    def anchor_event(
        self, outcome: str, namespace: str, level: str, target: str, via: str
    ) -> None: ...


class _NoMetrics:
    def aggregate_event(self, event: str, target: str) -> None:
        return None

    def anchor_event(self, outcome: str, namespace: str, level: str, target: str, via: str) -> None:
        return None


@dataclass
class Pending:
    """A member's checkpoint handed to a coordinator, waiting for its aggregate."""

    namespace: str
    level: str
    target: str
    size: int
    origin: str
    checkpoint: str  # the signed note
    digest: str  # hex checkpoint digest
    depth: int
    epoch: int
    coordinator: str
    deadline: float
    delegated_at: int
    attempts: int = 1
    tried: list[str] = field(default_factory=list)  # coordinators that failed it
    refused: str | None = None  # why the coordinator's answer was refused, if it was

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.target}/{self.size:020d}"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Pending:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class _Member:
    sender: str  # registry DID
    namespace: str
    origin: str
    size: int


class CollaborativeAnchoring:
    """One node's part in collaborative anchoring: member and coordinator.

    Building it wires it in: the scheduler's delegate, ``checkpoint`` and
    ``receipt`` handlers on ``inbox``, and an extension started and stopped
    with the service.  The parts it uses: ``peers`` (the registry in force,
    scores, announced heads), ``outbox`` (to coordinators and members),
    ``reports`` (a coordinator's false claim, proven), ``key`` (evidence it
    signs as reporter), ``store`` (pending delegations), ``rails`` and
    ``log_verifiers`` (its own judgement of anchors and checkpoints)."""

    def __init__(
        self,
        inbox: Inbox,
        peers: PeerView,
        outbox: Outbox,
        reports: ClaimReports,
        key: SigningKey,
        store: Store,
        rails: RailRegistry,
        log_verifiers: Mapping[str, Sequence[NoteVerifier]],
        scheduler: Scheduler,
        *,
        metrics: AggregateMetrics | None = None,
        clock: Callable[[], float] = time.time,
        anchors_per_epoch: int = DEFAULT_ANCHORS_PER_EPOCH,
    ) -> None:
        self.peers = peers
        self.anchors_per_epoch = anchors_per_epoch
        self._made: dict[int, int] = {}  # epoch -> aggregates submitted in it (the last few)
        self._aggregated: dict[tuple[str, str], int] = {}  # (origin, target) -> size aggregated
        self.outbox = outbox
        self.reports = reports
        self.key = key
        self.store = store
        self.rails = rails
        self.log_verifiers = log_verifiers
        self.scheduler = scheduler
        self.metrics: AggregateMetrics = metrics or _NoMetrics()
        self.clock = clock
        self._collect: dict[tuple[str, int], dict[bytes, _Member]] = {}
        self._closed: deque[tuple[str, int]] = deque(maxlen=256)
        self._failed: dict[str, dict[str, int]] = {}  # target -> coordinator -> epoch it failed us
        self._pending: dict[str, Pending] = {}
        self._judging: dict[int, int] = {}  # id(pending) -> claims for it being judged now
        for raw in store.list_state(STATE_SCOPE).values():
            try:
                p = Pending.from_bytes(raw)
            except (ValueError, TypeError):
                continue
            self._pending[p.key] = p
        self.counters: Counter[str] = Counter()
        self.last_made: dict[str, dict[str, Any]] = {}
        self.last_received: dict[str, dict[str, Any]] = {}
        self.refusals: deque[dict[str, Any]] = deque(maxlen=KEEP_REFUSALS)
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: FederationClient | None = None
        inbox.add_handler(CheckpointContent, self._on_checkpoint)
        inbox.add_handler(ReceiptContent, self._on_receipt)
        inbox.add_extension(self)
        scheduler.delegate = self

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        epoch = self._epochs().epoch_seconds
        # Short enough to reach the coordinator before its cut-off, long enough
        # for a loaded peer.
        self._client = FederationClient(
            timeout=max(2.0, min(10.0, epoch)),
            connect_timeout=2.0,
            retry=RetryPolicy(base=0.2, max_attempts=3, deadline=max(2.0, min(30.0, epoch))),
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="collaborative")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._client is not None:
            await self._client.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("collaborative anchoring round failed")
            await asyncio.sleep(min(0.5, self._epochs().epoch_seconds / 10))

    async def tick(self) -> None:
        """Close the collections whose cut-off passed; expire overdue delegations."""
        now = self.clock()
        epochs = self._epochs()
        current = epochs.epoch(now)

        # Oldest epoch first; within one, the collection with the most distinct
        # members, then an order that rotates with the epoch (no target is
        # always last when the budget is short).
        def order(k: tuple[str, int]) -> tuple[int, int, bytes]:
            senders = len({m.sender for m in self._collect[k].values()})
            return (k[1], -senders, hashlib.sha256(f"{k[0]}/{current}".encode()).digest())

        for key in sorted(self._collect, key=order):
            if now < epochs.cutoff(key[1]):
                continue
            if now >= epochs.deadline(key[1]):
                # Waited past its members' deadline: they have moved on.
                self._collect.pop(key)
                self._closed.append(key)
                self._event("deferred", key[0])
                log.warning("the aggregate of %s for epoch %d waited past its deadline: dropped",
                            key[0], key[1])  # fmt: skip
                continue
            if self._made.get(current, 0) >= self.anchors_per_epoch:
                continue  # the anchoring budget of this epoch is spent: it waits for the next
            members = self._collect.pop(key)
            self._closed.append(key)
            self._made[current] = self._made.get(current, 0) + 1
            for old in [e for e in self._made if e < current - 4]:
                del self._made[old]
            self._spawn(self._aggregate(key[0], key[1], members))
        for p in sorted(self._pending.values(), key=lambda p: p.deadline):
            if now >= p.deadline and not self._judged_now(p, now) and await self._drop(p):
                self._spawn(self._expire(p))

    def _judged_now(self, p: Pending, now: float) -> bool:
        """Whether a claim for ``p`` that arrived before its deadline is still
        being judged here, within the judging grace (see the module docstring)."""
        return id(p) in self._judging and now < p.deadline + self._epochs().judging_grace

    # --- shared ----------------------------------------------------------------------
    @property
    def strategy(self) -> str:
        return self.peers.registry.anchor_strategy

    @property
    def me(self) -> str:
        return self.peers.self_did

    def _epochs(self) -> EpochClock:
        return EpochClock(self.peers.registry.anchor_epoch_seconds)

    def _candidates(self) -> tuple[str, ...]:
        return coordinator_candidates(self.peers.registry.peers)

    def _rotation(self, target: str, epoch: int) -> tuple[str, ...]:
        """The candidates that coordinate ``target`` in ``epoch``: a peer that
        joined through a registry change enters only from the epoch its
        heartbeats announced its rail for ``target`` ready
        (:meth:`~remembrancer.federation.peers.PeerDirectory.coordinates`)."""
        return tuple(c for c in self._candidates() if self.peers.coordinates(c, target, epoch))

    def coordinator(self, target: str, epoch: int) -> str | None:
        """The coordinator of ``target`` in ``epoch`` under the registry in force."""
        return choose_coordinator(
            self.peers.registry.federation_id, target, epoch, self._rotation(target, epoch)
        )

    def _peer(self, did: str) -> Peer | None:
        return self.peers.registry.get(did)

    def _same(self, a: str, b: str) -> bool:
        """Whether two DIDs name the same registry peer (compared by key)."""
        pa, pb = self._peer(a), self._peer(b)
        return pa is not None and pb is not None and pa.pubkey == pb.pubkey

    def _trusted(self, coordinator: str, target: str, epoch: int) -> bool:
        """Whether this member hands checkpoints to ``coordinator`` now."""
        if self._same(coordinator, self.me):
            return True
        peers = self.peers.effective()
        status = next((p.status for p in peers if p.did == coordinator), None)
        if status != "active":
            return False
        failed_at = self._failed.get(target, {}).get(coordinator)
        return failed_at is None or epoch - failed_at > len(self._candidates())

    def _choose(self, target: str, now: float, avoid: list[str]) -> tuple[int, str] | None:
        """The first epoch from now whose coordinator this member trusts."""
        candidates = self._candidates()
        first = self._epochs().epoch(now)
        for epoch in range(first, first + len(candidates)):
            c = self.coordinator(target, epoch)
            if c is not None and c not in avoid and self._trusted(c, target, epoch):
                return epoch, c
        return None

    def _event(self, event: Event, target: str) -> None:
        self.counters[event] += 1
        self.metrics.aggregate_event(event, target)

    def _save(self, p: Pending) -> None:
        self.store.put_state(STATE_SCOPE, p.key, p.to_bytes())

    async def _drop(self, p: Pending) -> bool:
        """Forget ``p`` (False if it was no longer pending)."""
        if self._pending.get(p.key) is not p:
            return False
        del self._pending[p.key]
        await asyncio.to_thread(self.store.delete_state, STATE_SCOPE, p.key)
        return True

    # --- member ----------------------------------------------------------------------
    async def delegate(self, request: Delegation) -> bool:
        """The scheduler's hook: take a due level over (see the module docstring)."""
        if self.strategy == "independent":
            return False
        choice = self._choose(request.target, request.now, [])
        if choice is None:
            log.warning("no trusted coordinator for %s: %s anchors alone", request.target,
                        request.namespace)  # fmt: skip
            self._event("fallback", request.target)
            return False
        epoch, coordinator = choice
        p = Pending(
            namespace=request.namespace, level=request.level, target=request.target,
            size=request.size, origin=self.scheduler.sequencer.origin(request.namespace),
            checkpoint=request.checkpoint.decode("utf-8"), digest=request.digest.hex(),
            depth=request.depth, epoch=epoch, coordinator=coordinator,
            deadline=self._epochs().deadline(epoch), delegated_at=request.now,
        )  # fmt: skip
        self._pending[p.key] = p
        await asyncio.to_thread(self._save, p)
        self._event("delegated", p.target)
        self.metrics.anchor_event("attempted", p.namespace, p.level, p.target, "delegated")
        self._spawn(self._hand_over(p))
        return True

    async def _hand_over(self, p: Pending) -> None:
        """Give the checkpoint to the coordinator (ourselves, or by a message)."""
        content = CheckpointContent(p.origin, p.checkpoint, p.namespace, p.target, p.epoch)
        if self._same(p.coordinator, self.me):
            try:
                self._take(self.me, content)
            except RemembrancerError as e:
                log.warning("our own checkpoint was not taken: %s", e.explain())
                p.deadline = self.clock()
            return
        peer = self._peer(p.coordinator)
        if peer is None or self._client is None:
            p.deadline = self.clock()
            return
        (delivery,) = await self.outbox.deliver([peer], content, client=self._client)
        if not delivery.delivered:
            log.warning("coordinator %s did not take %s@%d for %s (epoch %d): %s", p.coordinator,
                        p.namespace, p.size, p.target, p.epoch, delivery.code)  # fmt: skip
            # Refused, or nobody listening: move on now.  A timeout or a 5xx may
            # have reached it (it may still aggregate us): wait for the deadline.
            status = delivery.status
            if delivery.code == "unreachable" or (
                status is not None and 400 <= status < 500 and status != 429
            ):
                p.deadline = min(p.deadline, self.clock())

    async def _expire(self, p: Pending) -> None:
        """No acceptable aggregate by the deadline (``p`` is dropped already):
        score the coordinator, then delegate again or anchor alone."""
        self.metrics.anchor_event("failed", p.namespace, p.level, p.target, "delegated")
        newer = any(q.namespace == p.namespace and q.target == p.target and q.size > p.size
                    for q in self._pending.values())  # fmt: skip
        if newer:
            return  # a newer checkpoint of the log is on its way: it covers this one
        self._failed.setdefault(p.target, {})[p.coordinator] = p.epoch
        if p.refused is None and not self._same(p.coordinator, self.me):
            self._event("missed", p.target)  # (a proven lie was scored when it was found)
            await self.peers.score(p.coordinator, "missed")
        log.warning("no acceptable aggregate from %s for %s@%d to %s (epoch %d)%s", p.coordinator,
                    p.namespace, p.size, p.target, p.epoch,
                    f": {p.refused}" if p.refused else "")  # fmt: skip
        if self.strategy == "collaborative":
            choice = self._choose(p.target, self.clock(), [*p.tried, p.coordinator])
            if choice is not None:
                epoch, coordinator = choice
                again = replace(p, epoch=epoch, coordinator=coordinator,
                                deadline=self._epochs().deadline(epoch), attempts=p.attempts + 1,
                                tried=[*p.tried, p.coordinator][-16:])  # fmt: skip
                self._pending[again.key] = again
                await asyncio.to_thread(self._save, again)
                self.metrics.anchor_event("attempted", p.namespace, p.level, p.target, "delegated")
                self._spawn(self._hand_over(again))
                return
        self._event("fallback", p.target)
        outcome = await self.scheduler.anchor_direct(p.namespace, p.level)
        log.warning("%s/%s anchored alone to %s: %s", p.namespace, p.level, p.target, outcome)

    async def _on_receipt(self, sender: str, content: ReceiptContent, raw: bytes) -> None:
        if content.receipt.get("type") != AGGREGATE_ANCHOR_TYPE:
            return
        try:
            aggregate = AggregateAnchor.from_dict(content.receipt)
        except FormatError as e:
            self._refuse(sender, None, e.code, e.message)
            await self.peers.score(sender, "invalid", e.code)
            return
        self._spawn(self.judge(sender, content.namespace, aggregate, raw))

    async def judge(self, sender: str, namespace: str, aggregate: AggregateAnchor,
                    raw: bytes | None) -> bool:  # fmt: skip
        """Check an aggregate for one of our pending checkpoints; add it to our
        anchor receipt when it holds.  Returns whether it was accepted."""
        target = aggregate.target
        if not (self._same(aggregate.coordinator, sender)):
            self._refuse(sender, aggregate, "aggregate_coordinator_mismatch",
                         "the claim names another coordinator than its sender")  # fmt: skip
            await self.peers.score(sender, "invalid", "aggregate_coordinator_mismatch")
            return False
        p = self._pending.get(f"{namespace}/{target}/{aggregate.size:020d}")
        if p is None or not self._same(p.coordinator, sender):
            log.info("unsolicited aggregate from %s for %s@%d (late, or not ours)", sender,
                     aggregate.origin, aggregate.size)  # fmt: skip
            return False
        try:
            verify_aggregate(aggregate, federation_id=self.peers.registry.federation_id,
                             target=p.target, origin=p.origin, size=p.size,
                             digest=bytes.fromhex(p.digest))  # fmt: skip
        except VerificationError as e:
            self._refuse(sender, aggregate, e.code, e.message)
            if e.code == "aggregate_path_invalid":
                await self._prove(sender, raw, "root_mismatch", p)
            else:
                await self.peers.score(sender, "invalid", e.code)
            return False
        # Our own rail judges the evidence under our own settings and this
        # level's depth; the claim's status and finality are never read.
        claim = aggregate.anchor
        try:
            rail = self.rails.get(target)
        except ConfigError as e:  # we cannot judge it: no blame
            self._refuse(sender, aggregate, "aggregate_anchor_unchecked", e.explain())
            p.deadline, p.refused = min(p.deadline, self.clock()), "aggregate_anchor_unchecked"
            return False
        # A claim that came in time holds off the deadline while our rail judges it.
        held = self.clock() < p.deadline
        if held:
            self._judging[id(p)] = self._judging.get(id(p), 0) + 1
        try:
            verdict = await asyncio.to_thread(
                rail.verify, claim, VerifyContext(int(self.clock()), p.depth)
            )
        finally:
            if held and (left := self._judging.pop(id(p)) - 1):
                self._judging[id(p)] = left
        refusal: tuple[str, str] | None = None
        if verdict.outcome == "unchecked":
            refusal = ("aggregate_anchor_unchecked", f"cannot be checked here: {verdict.explain()}")
        elif verdict.outcome == "failed" or (
            verdict.outcome == "pending" and verdict.code != DEPTH_INSUFFICIENT
        ):
            refusal = ("aggregate_anchor_unverified",
                       f"the anchor does not verify here: {verdict.explain()}")  # fmt: skip
        elif verdict.outcome == "verified" and (why := verdict.disagreement(claim)) is not None:
            refusal = ("aggregate_anchor_facts_mismatch", why)
        if refusal is not None:
            code, why = refusal
            self._refuse(sender, aggregate, code, why)
            if verdict.outcome == "failed" and claim.status == "verified" and not verdict.lost:
                await self._prove(sender, raw, "rail_failed", p)  # its signed claim is false
            else:
                p.deadline, p.refused = min(p.deadline, self.clock()), code  # move on now
                if code != "aggregate_anchor_unchecked":
                    await self.peers.score(sender, "invalid", code)
            return False
        # Verified here, or committed but not yet as deep as this level asks
        # (then kept ``submitted`` and re-verified like any anchor of ours).
        if not await self._drop(p):
            return False  # expired while we checked: we moved on already
        try:
            checked = await self.scheduler.add_anchor(
                p.namespace, p.size, p.checkpoint.encode("utf-8"), claim, verdict
            )
        except RemembrancerError as e:  # our own receipt disagrees: a local fault
            log.error("could not add the aggregate to %s@%d: %s", p.namespace, p.size, e.explain())
            self.metrics.anchor_event("failed", p.namespace, p.level, target, "delegated")
            return False
        await self.peers.score(sender, "valid")
        self._event("received", target)
        self.metrics.anchor_event("succeeded", p.namespace, p.level, target, "delegated")
        agg = checked.aggregation
        self.last_received[target] = {
            "epoch": aggregate.epoch, "coordinator": aggregate.coordinator,
            "namespace": p.namespace, "size": p.size, "txRef": checked.tx_ref,
            "root": "sha256:" + checked.root.hex(), "status": checked.status,
            "leaf_index": agg.leaf_index if agg else None, "tree_size": agg.tree_size if agg else None,
            "at": int(self.clock()),
        }  # fmt: skip
        log.info("%s@%d anchored to %s in %s's aggregate of epoch %d", p.namespace, p.size,
                 target, aggregate.coordinator, aggregate.epoch)  # fmt: skip
        return True

    def _refuse(self, sender: str, aggregate: AggregateAnchor | None, code: str, why: str) -> None:
        target = aggregate.target if aggregate else "?"
        self._event("refused", target)
        self.refusals.append({
            "at": int(self.clock()), "coordinator": sender, "code": code, "reason": why,
            "target": target, "origin": aggregate.origin if aggregate else None,
            "size": aggregate.size if aggregate else None,
            "epoch": aggregate.epoch if aggregate else None,
        })  # fmt: skip
        log.warning("refused an aggregate from %s: %s: %s", sender, code, why)

    async def _prove(self, sender: str, raw: bytes | None, finding: Literal["root_mismatch", "rail_failed"],
                     p: Pending) -> None:  # fmt: skip
        """The coordinator's signed claim is false: keep and gossip the evidence
        (probation), and stop waiting for it."""
        p.deadline = min(p.deadline, self.clock())
        p.refused = finding
        peer = self._peer(sender)
        if raw is None or peer is None:
            return
        evidence = ClaimEvidence.create(
            kind="invalid_anchor_claim", federation_id=self.peers.registry.federation_id,
            accused=peer.key_did, message=raw, receipt_at="/content/receipt",
            countersigner=peer.key_did, finding=finding, reporter_key=self.key,
            reported_at=int(self.clock()),
        )  # fmt: skip
        try:
            await self.reports.report_claim(evidence)
        except RemembrancerError as e:
            log.error("our own evidence against %s did not verify: %s", sender, e.explain())
            await self.peers.score(sender, "invalid", finding)

    # --- coordinator -----------------------------------------------------------------
    async def _on_checkpoint(self, sender: str, content: CheckpointContent, raw: bytes) -> None:
        if not content.for_aggregation or self.strategy == "independent":
            return
        try:
            self._take(sender, content)
        except VerificationError as e:
            log.warning("refused %s's checkpoint for %s: %s", sender, content.target, e.explain())
            await self.peers.score(sender, "invalid", e.code)
        except RemembrancerError as e:
            log.info("not taking %s's checkpoint for %s: %s", sender, content.target, e.explain())

    def _take(self, sender: str, content: CheckpointContent) -> None:
        """Collect one member checkpoint for (target, epoch), or raise why not:
        VerificationError for a bad checkpoint (the sender's fault), other
        RemembrancerErrors for timing and capacity (nobody's fault)."""
        if content.target is None or content.epoch is None or content.namespace is None:
            raise FormatError("not a checkpoint for a coordinator", code="aggregate_malformed")
        target, epoch = content.target, content.epoch
        epochs = self._epochs()
        now = self.clock()
        if not self._same(self.coordinator(target, epoch) or "", self.me):
            raise ConfigError(f"this node is not the coordinator of {target} in epoch {epoch}",
                              code="aggregate_not_coordinator")  # fmt: skip
        key = (target, epoch)
        if now > epochs.cutoff(epoch) or key in self._closed:
            raise ConfigError(f"epoch {epoch} of {target} is closed", code="aggregate_epoch_closed")
        if epoch > epochs.epoch(now) + len(self._candidates()):
            raise ConfigError(f"epoch {epoch} is too far ahead", code="aggregate_epoch_ahead")
        self.rails.get(target)  # ConfigError: we cannot anchor there
        peer = self._peer(sender)
        if peer is None:
            raise ConfigError(f"{sender} is not a peer", code="aggregate_member_unknown")
        signed = self._open_member_checkpoint(peer, content)
        last = self._aggregated.get((content.origin, target))
        if last is not None and signed.checkpoint.size <= last:
            raise ConfigError(f"{content.origin} at {signed.checkpoint.size} adds nothing to the"
                              f" aggregate of {target} at {last}", code="aggregate_checkpoint_stale")  # fmt: skip
        digest = checkpoint_digest(signed.body.encode("utf-8"))
        bucket = self._collect.get(key)
        if bucket is None:
            if len(self._collect) >= MAX_EPOCHS_OPEN:
                raise ConfigError("too many open epochs", code="aggregate_busy")
            bucket = self._collect[key] = {}
        if digest in bucket:
            return
        mine = sum(1 for m in bucket.values() if m.sender == peer.did)
        if len(bucket) >= MAX_AGGREGATION_LEAVES or mine >= MAX_PER_SENDER:
            raise ConfigError(f"the aggregate of {target} in epoch {epoch} is full",
                              code="aggregate_full")  # fmt: skip
        bucket[digest] = _Member(peer.did, content.namespace, content.origin,
                                 signed.checkpoint.size)  # fmt: skip

    def _open_member_checkpoint(self, peer: Peer, content: CheckpointContent) -> SignedCheckpoint:
        """The member's checkpoint, if ``peer`` hosts its log: the note is signed
        with the peer's registry key and, unless the peer is this node, the log
        is one this node follows (``witness.logs``) under that same key.  A
        heartbeat saying a peer hosts a log is not enough, and neither is a
        log nobody here knows (an invented origin)."""
        note = content.note.encode("utf-8")
        theirs = Verifier(content.origin, peer.pubkey)
        try:
            signed = open_checkpoint(note, theirs)
        except RemembrancerError:
            raise VerificationError(
                f"the checkpoint of {content.origin} is not signed by {peer.did}'s registry key",
                code="aggregate_checkpoint_unsigned",
            ) from None
        if self._same(peer.did, self.me) or any(
            v.name == theirs.name and v.key_id == theirs.key_id
            for v in self.log_verifiers.get(content.origin, ())
        ):
            return signed
        raise VerificationError(
            f"{content.origin} is not a log that {peer.did} hosts (none this node follows"
            " is signed by its registry key)",
            code="aggregate_log_not_hosted",
        )

    async def _aggregate(self, target: str, epoch: int, members: dict[bytes, _Member]) -> None:
        """Anchor one root over the epoch's checkpoints; hand every member its path."""
        if not members:
            return
        tree = AggregationTree.build(members)
        deadline = self._epochs().deadline(epoch) - min(1.0, self._epochs().epoch_seconds / 10)
        try:
            rail = self.rails.get(target)
            anchor = await asyncio.to_thread(rail.submit, tree.root, now=int(self.clock()))
            checks = 0
            while anchor.status != "verified":
                if anchor.status in ("failed", "reorged") or self.clock() >= deadline:
                    raise RailError(f"the aggregate anchor is {anchor.status}: {anchor.error or ''}",
                                    code="aggregate_anchor_unverified")  # fmt: skip
                if checks:  # the first check at once: a rail whose submit waited for
                    await asyncio.sleep(0.25)  # the block is usually verified already
                checks += 1
                anchor = await asyncio.to_thread(
                    recheck, rail, anchor, VerifyContext(int(self.clock()))
                )
        except (RailError, ConfigError) as e:
            log.error("the aggregate of %d checkpoints for %s (epoch %d) was not anchored: %s",
                      tree.size, target, epoch, e.explain())  # fmt: skip
            return
        self._event("made", target)
        for m in members.values():
            k = (m.origin, target)
            self._aggregated[k] = max(self._aggregated.get(k, -1), m.size)
        self.last_made[target] = {
            "epoch": epoch, "leaves": tree.size, "members": sorted({m.sender for m in members.values()}),
            "root": "sha256:" + tree.root.hex(), "txRef": anchor.tx_ref, "at": int(self.clock()),
        }  # fmt: skip
        log.info("anchored the aggregate of %d checkpoints for %s (epoch %d): %s", tree.size,
                 target, epoch, anchor.tx_ref)  # fmt: skip
        sends = []
        for digest, m in members.items():
            claim = AggregateAnchor(
                self.peers.registry.federation_id, self.me, target, epoch, m.origin, m.size,
                digest, replace(anchor, aggregation=tree.aggregation(digest)),
            )  # fmt: skip
            if self._same(m.sender, self.me):
                self._spawn(self.judge(self.me, m.namespace, claim, None))
            else:
                sends.append(self._send_claim(m, claim))
        await asyncio.gather(*sends)

    async def _send_claim(self, member: _Member, claim: AggregateAnchor) -> None:
        peer = self._peer(member.sender)
        if peer is None or self._client is None:
            return
        content = ReceiptContent(member.namespace, claim.to_dict())
        (delivery,) = await self.outbox.deliver([peer], content, client=self._client)
        if not delivery.delivered:
            log.warning("could not hand %s its aggregate path: %s", member.sender, delivery.code)

    # --- status ----------------------------------------------------------------------
    def _targets(self) -> list[str]:
        now = int(self.clock())
        found: set[str] = set(self.rails.targets())
        seq = self.scheduler.sequencer
        for name, ns in seq.namespaces.current().items():
            cadence = governance.effective_cadence(ns, seq.governance_state(name), now)
            found.update(s.target for s in cadence.levels)
        found.update(p.target for p in self._pending.values())
        found.update(t for t, _ in self._collect)
        return sorted(found)

    def status(self) -> dict[str, Any]:
        """Epoch, coordinators, collections, pending delegations, last aggregates."""
        epochs = self._epochs()
        now = self.clock()
        epoch = epochs.epoch(now)
        targets: dict[str, Any] = {}
        for t in self._targets():
            targets[t] = {
                "coordinator": self.coordinator(t, epoch),
                "next_coordinator": self.coordinator(t, epoch + 1),
                "rotation": list(self._rotation(t, epoch)),
                "collecting": {str(e): [{"member": m.sender, "origin": m.origin, "size": m.size}
                                        for m in bucket.values()]
                               for (tt, e), bucket in sorted(self._collect.items()) if tt == t},
                "last_aggregate": self.last_made.get(t),
                "last_received": self.last_received.get(t),
            }  # fmt: skip
        return {
            "strategy": self.strategy,
            "epoch_seconds": epochs.epoch_seconds,
            "epoch": epoch,
            "epoch_ends_at": epochs.start(epoch + 1),
            "self": self.me,
            "candidates": list(self._candidates()),
            "targets": targets,
            "pending": [
                {
                    "namespace": p.namespace,
                    "level": p.level,
                    "target": p.target,
                    "size": p.size,
                    "epoch": p.epoch,
                    "coordinator": p.coordinator,
                    "deadline": p.deadline,
                    "attempts": p.attempts,
                    "judging": id(p) in self._judging,
                }
                for p in sorted(self._pending.values(), key=lambda p: p.key)
            ],
            "counters": {
                e: self.counters[e]
                for e in (
                    "delegated",
                    "made",
                    "received",
                    "refused",
                    "missed",
                    "fallback",
                    "deferred",
                )
            },
            "refusals": list(self.refusals),
        }
