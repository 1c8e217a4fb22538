"""The cadence scheduler: anchors every namespace's log on its cadence.

For each namespace and each level of its *effective* cadence (after
governance changes), the scheduler anchors the SHA-256 of the latest
checkpoint body to the level's target when the level is due:

- due when ``period`` seconds have passed since the level's last anchor and
  any backoff has expired;
- not re-anchored when the log has not grown since that level's last anchor;
- on failure, the next attempt waits ``5 * phi**k`` seconds (k capped at 7),
  doubled for authentication errors and halved for validation errors
  (:func:`remembrancer.core.cadence.backoff_delay`); the delay is enforced;
- anchors that are not final are re-verified periodically, driving the
  finality state machine; a ``reorged`` anchor makes its level anchor again.

State (per namespace and level) and anchor receipts (per namespace and
checkpoint size) live in the store, so they survive restarts.  Health per
namespace: ``ok``, ``backing_off`` (more than 3 failures in a row on a
level), ``stale`` (the newest verified anchor is over an hour old while the
log has grown since), ``not_configured`` (no level's target has a rail in
the node's ``anchoring`` configuration: nothing is attempted, nothing
fails).  Each level also has its own ``state``: ``ok``, ``backing_off`` or
``not_configured``.

Delegation.  A :class:`AnchorDelegate` (collaborative anchoring, in the
federation layer; the scheduler knows nothing of it) may take a due level
over instead of this node's rail: the level then counts as anchored at that
size, and the delegate later hands back a covering anchor with this node's
own verdict on it, :meth:`Scheduler.add_anchor` (which fires ``on_verified``
once it is verified) or, if it gives up, asks for
:meth:`Scheduler.anchor_direct`.  ``anchor_now`` never delegates.

Own verdicts only.  Every anchor status the scheduler stores is this node's
own verdict (:func:`~remembrancer.anchoring.base.judged`): from its rail's
``submit`` or ``verify``, never what an anchor made elsewhere says about
itself.  Depths come from the *governed* cadence (after
``governance.cadence.set``), the same accessor for anchoring and
re-verification, and a rail requires at least its own ``confirmations``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from remembrancer.anchoring.base import (
    RailError,
    RailRegistry,
    Verdict,
    VerifyContext,
    judged,
    recheck,
)
from remembrancer.core import governance
from remembrancer.core.anchor import (
    Anchor,
    AnchorReceipt,
    bound_anchors,
    checkpoint_digest,
    covers,
    needs_reverify,
    require_covers,
    resolve_conflicts,
)
from remembrancer.core.cadence import LevelSpec, backoff_delay
from remembrancer.core.errors import ConfigError, ConflictError, NotFoundError
from remembrancer.core.note import Note
from remembrancer.net.http import ErrorClass
from remembrancer.storage.base import AnchorReceiptRow, LogState, Store

log = logging.getLogger("remembrancer.scheduler")
STATE_SCOPE = "scheduler"
ANCHOR_SCOPE = "anchors"
STALE_AFTER = 3600
RECEIPT_PAGE = 100  # anchor receipts per store read

BACKING_OFF_AFTER = 3


class SequencerView(Protocol):
    """What the scheduler needs from the log layer."""

    namespaces: Any

    def head(self, namespace: str) -> LogState | None: ...

    def governance_state(self, namespace: str) -> governance.GovernanceState: ...

    def origin(self, namespace: str) -> str: ...


@dataclass
class LevelState:
    last_size: int = 0
    last_anchor_at: int = 0
    failures: int = 0
    retry_at: int = 0
    last_error: str | None = None
    last_error_class: str | None = None
    last_verified_at: int = 0

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> LevelState:
        if not raw:
            return cls()
        return cls(**json.loads(raw))

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class Delegation:
    """A due level that a delegate may anchor instead of this node's rail."""

    namespace: str
    level: str
    target: str
    size: int
    checkpoint: bytes  # the signed note
    digest: bytes  # checkpoint_digest of its body: what must be covered
    depth: int  # confirmations the level requires
    now: int


class AnchorDelegate(Protocol):
    async def delegate(self, request: Delegation) -> bool:
        """Take ``request`` over (True) or let the scheduler anchor it now (False).

        Called with the scheduler's lock held: must not call back into the
        scheduler, and should return quickly (send in the background)."""
        ...


class AnchorMetrics(Protocol):
    def anchor_event(self, outcome: str, namespace: str, level: str, target: str) -> None: ...


class _NoMetrics:
    def anchor_event(self, outcome: str, namespace: str, level: str, target: str) -> None:
        return None


class Scheduler:
    def __init__(
        self,
        store: Store,
        sequencer: SequencerView,
        rails: RailRegistry,
        *,
        clock: Callable[[], float] = time.time,
        metrics: AnchorMetrics | None = None,
        tick_seconds: float = 1.0,
        reverify_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.sequencer = sequencer
        self.rails = rails
        self.clock = clock
        self.metrics = metrics or _NoMetrics()
        self.tick_seconds = tick_seconds
        self.reverify_seconds = reverify_seconds
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._last_reverify = 0.0
        # async callables (namespace, anchor, checkpoint note) run when an anchor becomes verified
        self.on_verified: list[Callable[[str, Anchor, bytes], Coroutine[Any, Any, object]]] = []
        self.delegate: AnchorDelegate | None = None  # collaborative anchoring, when set
        self._cadences: dict[str, dict[str, Any]] = {}  # cadence in effect at the last tick
        # Several processes over one store: only the one holding the sequencer
        # lease anchors (node/ha.py); the others' loops idle.
        self.active: Callable[[], bool] = lambda: True

    # --- state -------------------------------------------------------------------
    def level_state(self, namespace: str, level: str) -> LevelState:
        return LevelState.from_bytes(self.store.get_state(STATE_SCOPE, f"{namespace}/{level}"))

    def _save_level(self, namespace: str, level: str, state: LevelState) -> None:
        self.store.put_state(STATE_SCOPE, f"{namespace}/{level}", state.to_bytes())

    def receipt(self, namespace: str, size: int) -> AnchorReceipt | None:
        row = self.store.anchor_receipt(namespace, size)
        return AnchorReceipt.from_dict(json.loads(row.receipt)) if row else None

    def receipts_page(
        self, namespace: str, *, after: int = -1, limit: int = RECEIPT_PAGE
    ) -> list[AnchorReceipt]:
        """At most ``limit`` receipts of ``namespace`` with sizes > ``after``, by size
        (one indexed query: ``GET /v1/namespaces/<ns>/anchors`` reads no more)."""
        rows = self.store.anchor_receipts(namespace, after=after, limit=limit)
        return [AnchorReceipt.from_dict(json.loads(r.receipt)) for r in rows]

    def iter_receipts(self, namespace: str, *, after: int = -1) -> Iterator[AnchorReceipt]:
        """Every receipt of ``namespace`` with sizes > ``after``, by size, a page at a time."""
        while page := self.receipts_page(namespace, after=after):
            yield from page
            after = page[-1].size

    def receipts(self, namespace: str) -> list[AnchorReceipt]:
        return list(self.iter_receipts(namespace))

    def _save_receipt(self, namespace: str, receipt: AnchorReceipt) -> None:
        # Every status here is this node's own verdict, so "verified" in the
        # conflict order is verified by this node.
        here = {a.key for a in receipt.anchors if a.status == "verified"}
        anchors = tuple(resolve_conflicts(receipt.anchors, verified=here))
        receipt = replace(receipt, anchors=anchors)
        doc = json.dumps(receipt.to_dict()).encode()
        self.store.put_anchor_receipt(
            AnchorReceiptRow(namespace, receipt.size, doc, receipt.finished)
        )

    def covering(self, namespace: str, index: int) -> AnchorReceipt | None:
        """The earliest anchored checkpoint that covers entry ``index`` and has
        a verified anchor (else the earliest with any anchor).  Reads receipts
        in size order from ``index`` on and stops at the first verified one."""
        first: AnchorReceipt | None = None
        for r in self.iter_receipts(namespace, after=index):
            kept = tuple(a for a in r.anchors if covers(a, r.root))
            if not kept:
                continue
            candidate = replace(r, anchors=kept)
            if candidate.verified:
                return candidate
            first = first or candidate
        return first

    # --- the loop ------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="anchor-scheduler"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                if not self.active():
                    await asyncio.sleep(self.tick_seconds)
                    continue
                await self.tick()
                if self.clock() - self._last_reverify >= self.reverify_seconds:
                    await self.reverify()
            except Exception:
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.tick_seconds)

    async def tick(self) -> list[tuple[str, str, str]]:
        """Anchor every due level; return (namespace, level, outcome) for each considered."""
        out = []
        async with self._lock:
            now = int(self.clock())
            for namespace, ns in sorted(self.sequencer.namespaces.current().items()):
                cadence = governance.effective_cadence(
                    ns, self.sequencer.governance_state(namespace), now
                )
                self._note_cadence(namespace, cadence.to_dict())
                for spec in cadence.levels:
                    outcome = await self._maybe_anchor(namespace, spec.level, spec.target, spec.period,
                                                       spec.confirmations or 0, now, force=False)  # fmt: skip
                    out.append((namespace, spec.level, outcome))
        return out

    def _note_cadence(self, namespace: str, cadence: dict[str, Any]) -> None:
        """Log the moment a namespace's cadence in effect changes (a governance
        change reaching its ``effective_after``, or an edited namespaces file)."""
        before = self._cadences.get(namespace)
        self._cadences[namespace] = cadence
        if before is not None and before != cadence:
            log.info("cadence of %s now in effect: %s (was %s)", namespace,
                     json.dumps(cadence, sort_keys=True), json.dumps(before, sort_keys=True))  # fmt: skip

    async def anchor_now(self, namespace: str, level: str | None = None) -> list[tuple[str, str]]:
        """Anchor now (ignoring the period and backoff; an unchanged log is still skipped)."""
        ns = self.sequencer.namespaces.current().get(namespace)
        if ns is None:
            raise NotFoundError(
                f"namespace {namespace} is not hosted here", code="namespace_unknown"
            )
        now = int(self.clock())
        cadence = governance.effective_cadence(ns, self.sequencer.governance_state(namespace), now)
        levels = [s for s in cadence.levels if level is None or s.level == level]
        if not levels:
            raise NotFoundError(
                f"{namespace} has no cadence level {level}", code="cadence_level_unknown"
            )
        results = []
        async with self._lock:
            for spec in levels:
                results.append((spec.level, await self._maybe_anchor(
                    namespace, spec.level, spec.target, spec.period, spec.confirmations or 0, now, force=True)))  # fmt: skip
        return results

    async def _maybe_anchor(self, namespace: str, level: str, target: str, period: int, depth: int,
                            now: int, *, force: bool, direct: bool = False) -> str:  # fmt: skip
        state = await asyncio.to_thread(self.level_state, namespace, level)
        if not force and now < state.retry_at:
            return "backing_off"
        if not force and state.last_anchor_at and now < state.last_anchor_at + period:
            return "not_due"
        if not self.rails.is_configured(target):
            return "not_configured"
        head = self.sequencer.head(namespace)
        if head is None or head.size == 0:
            return "empty"
        if direct:
            # The level may count this size as delegated; what matters is whether
            # the receipt already holds a live anchor of the target.
            have = await asyncio.to_thread(self.receipt, namespace, head.size)
            if have is not None and any(a.target == target and a.status in ("submitted", "verified")
                                        for a in have.anchors):  # fmt: skip
                return "unchanged"
        elif head.size == state.last_size:
            return "unchanged"
        body = Note.from_bytes(head.checkpoint).text.encode()
        digest = checkpoint_digest(body)
        if self.delegate is not None and not force and not direct:
            request = Delegation(namespace, level, target, head.size, head.checkpoint, digest,
                                 depth, now)  # fmt: skip
            if await self.delegate.delegate(request):
                state = LevelState(last_size=head.size, last_anchor_at=now, failures=0, retry_at=0,
                                   last_verified_at=state.last_verified_at)  # fmt: skip
                await asyncio.to_thread(self._save_level, namespace, level, state)
                return "delegated"
        self.metrics.anchor_event("attempted", namespace, level, target)
        try:
            rail = self.rails.get(target)
            anchor = await asyncio.to_thread(rail.submit, digest, now=now)
            if anchor.status == "verified" and depth:
                anchor = await asyncio.to_thread(recheck, rail, anchor, VerifyContext(now, depth))
        except (RailError, ConfigError) as e:
            error_class: ErrorClass = e.error_class if isinstance(e, RailError) else "validation"
            state.failures += 1
            state.retry_at = now + round(backoff_delay(state.failures, error_class))
            state.last_error, state.last_error_class = f"{e.code}: {e.message}", error_class
            await asyncio.to_thread(self._save_level, namespace, level, state)
            self.metrics.anchor_event("failed", namespace, level, target)
            log.warning("anchoring %s/%s to %s failed (%s); retry in %d s", namespace, level, target, e.code,
                        state.retry_at - now)  # fmt: skip
            return "failed"
        receipt = await asyncio.to_thread(self.receipt, namespace, head.size) or AnchorReceipt(
            self.sequencer.origin(namespace), head.size, head.checkpoint, digest
        )
        receipt = replace(receipt, anchors=bound_anchors((*receipt.anchors, anchor)))
        await asyncio.to_thread(self._save_receipt, namespace, receipt)
        state = LevelState(last_size=head.size, last_anchor_at=now, failures=0, retry_at=0,
                           last_verified_at=now if anchor.status == "verified" else state.last_verified_at)  # fmt: skip
        await asyncio.to_thread(self._save_level, namespace, level, state)
        self.metrics.anchor_event("succeeded", namespace, level, target)
        if anchor.status == "verified":
            self._notify(namespace, anchor, head.checkpoint)
        return anchor.status

    async def anchor_direct(self, namespace: str, level: str) -> str:
        """Anchor ``level`` of ``namespace`` on this node's own rail now, never
        delegating (the hybrid fallback): skipped only when the head's receipt
        already holds a live anchor of the level's target.  Returns the outcome."""
        ns = self.sequencer.namespaces.current().get(namespace)
        if ns is None:
            return "unknown_namespace"
        now = int(self.clock())
        cadence = governance.effective_cadence(ns, self.sequencer.governance_state(namespace), now)
        spec = next((s for s in cadence.levels if s.level == level), None)
        if spec is None:
            return "unknown_level"
        async with self._lock:
            return await self._maybe_anchor(namespace, level, spec.target, spec.period,
                                            spec.confirmations or 0, now, force=True, direct=True)  # fmt: skip

    async def add_anchor(
        self, namespace: str, size: int, checkpoint: bytes, claim: Anchor, verdict: Verdict
    ) -> Anchor:
        """Add an anchor made elsewhere (a collaborative aggregate) to the receipt
        of ``namespace`` at ``size``, with the status of ``verdict``, this node's
        own rail's verdict on ``claim`` (never the claim's own status); fire
        ``on_verified`` if it is verified.  Returns the anchor as stored.

        VerificationError ``anchor_root_mismatch`` unless the anchor covers the
        checkpoint (see :func:`remembrancer.core.anchor.covers`)."""
        digest = checkpoint_digest(Note.from_bytes(checkpoint).text.encode())
        require_covers(claim, digest)
        anchor = judged(claim, verdict, now=int(self.clock()), prior=None)
        async with self._lock:
            receipt = await asyncio.to_thread(self.receipt, namespace, size) or AnchorReceipt(
                self.sequencer.origin(namespace), size, checkpoint, digest
            )
            if receipt.root != digest:
                raise ConflictError(
                    f"the receipt of {namespace} at {size} is for another checkpoint",
                    code="anchor_receipt_conflict",
                )
            if any(a.key == anchor.key for a in receipt.anchors):
                return anchor
            receipt = replace(receipt, anchors=bound_anchors((*receipt.anchors, anchor)))
            await asyncio.to_thread(self._save_receipt, namespace, receipt)
            if anchor.status == "verified":
                now = int(self.clock())
                ns = self.sequencer.namespaces.current().get(namespace)
                cadence = (governance.effective_cadence(ns, self.sequencer.governance_state(namespace), now)
                           if ns is not None else None)  # fmt: skip
                levels = (
                    [s.level for s in cadence.levels if s.target == anchor.target]
                    if cadence
                    else []
                )
                for level in levels:
                    state = await asyncio.to_thread(self.level_state, namespace, level)
                    state.last_verified_at = now
                    await asyncio.to_thread(self._save_level, namespace, level, state)
        if anchor.status == "verified":
            self._notify(namespace, anchor, checkpoint)
        return anchor

    def _notify(self, namespace: str, anchor: Anchor, checkpoint: bytes) -> None:
        """Tell listeners (federation countersigning) that an anchor became verified."""
        for hook in self.on_verified:
            try:
                asyncio.get_running_loop().create_task(hook(namespace, anchor, checkpoint))
            except Exception:
                log.exception("on_verified hook failed")

    def governed_levels(self, namespace: str, now: int) -> tuple[LevelSpec, ...]:
        """The levels of ``namespace``'s cadence in force at ``now`` (after
        governance changes): the one accessor for anchoring, re-verification
        and resets."""
        ns = self.sequencer.namespaces.current().get(namespace)
        if ns is None:
            return ()
        cadence = governance.effective_cadence(ns, self.sequencer.governance_state(namespace), now)
        return cadence.levels

    def required_depth(self, namespace: str, target: str, now: int) -> int:
        """The confirmations this node's governed cadence asks of ``target`` in
        ``namespace`` (the most any of its levels on that target asks)."""
        return max((s.confirmations or 0 for s in self.governed_levels(namespace, now)
                    if s.target == target), default=0)  # fmt: skip

    async def reverify(self) -> int:
        """Re-verify anchors that are not final yet; return how many changed.

        Each anchor is judged by this node's rail with the depth of the
        governed cadence; the stored status comes from that verdict and this
        node's previous one (:func:`~remembrancer.anchoring.base.recheck`)."""
        self._last_reverify = self.clock()
        now = int(self.clock())
        changed = 0
        hosted = set(self.sequencer.namespaces.current())
        after: tuple[str, int] | None = None
        while True:
            page = await asyncio.to_thread(
                self.store.unfinished_anchor_receipts, after=after, limit=RECEIPT_PAGE
            )
            if not page:
                return changed
            after = (page[-1].namespace, page[-1].size)
            for row in page:
                namespace = row.namespace
                if namespace not in hosted:
                    continue
                receipt = AnchorReceipt.from_dict(json.loads(row.receipt))
                updated = []
                dirty = False
                for a in receipt.anchors:
                    if not needs_reverify(a):
                        updated.append(a)
                        continue
                    try:
                        rail = self.rails.get(a.target)
                    except ConfigError as e:
                        log.info("cannot re-verify %s here: %s", a.key, e.message)
                        updated.append(a)
                        continue
                    ctx = VerifyContext(now, self.required_depth(namespace, a.target, now))
                    new = await asyncio.to_thread(recheck, rail, a, ctx)
                    if new.error != a.error and new.status == a.status and new.status != "verified":
                        log.info("re-verifying %s: %s", a.key, new.error)
                    dirty = dirty or new != a
                    updated.append(new)
                    if new.status == "verified" and a.status != "verified":
                        self._notify(namespace, new, receipt.checkpoint)
                    if new.status == "reorged" and a.status != "reorged":
                        await self._reset_level_for(namespace, a.target, receipt.size)
                if dirty:
                    changed += 1
                    await asyncio.to_thread(
                        self._save_receipt, namespace, replace(receipt, anchors=tuple(updated))
                    )

    async def _reset_level_for(self, namespace: str, target: str, size: int) -> None:
        for spec in self.governed_levels(namespace, int(self.clock())):
            if spec.target == target:
                state = await asyncio.to_thread(self.level_state, namespace, spec.level)
                if state.last_size == size:
                    state.last_size, state.last_anchor_at = 0, 0  # anchor again at the next tick
                    await asyncio.to_thread(self._save_level, namespace, spec.level, state)

    # --- health ------------------------------------------------------------------------
    def health(self, namespace: str) -> dict[str, Any]:
        ns = self.sequencer.namespaces.current().get(namespace)
        if ns is None:
            raise NotFoundError(
                f"namespace {namespace} is not hosted here", code="namespace_unknown"
            )
        now = int(self.clock())
        cadence = governance.effective_cadence(ns, self.sequencer.governance_state(namespace), now)
        head = self.sequencer.head(namespace)
        levels: dict[str, Any] = {}
        status = "ok"
        newest_verified = 0
        configured = 0
        for spec in cadence.levels:
            st = self.level_state(namespace, spec.level)
            newest_verified = max(newest_verified, st.last_verified_at)
            if not self.rails.is_configured(spec.target):
                state = "not_configured"
            elif st.failures > BACKING_OFF_AFTER:
                state = status = "backing_off"
            else:
                state = "ok"
            configured += state != "not_configured"
            levels[spec.level] = {
                "state": state,
                "target": spec.target, "every": spec.every, "period": spec.period,
                "confirmations": spec.confirmations, "last_anchor_at": st.last_anchor_at or None,
                "last_size": st.last_size, "next_due": (max(st.last_anchor_at + spec.period, st.retry_at)
                                                        if st.last_anchor_at else st.retry_at or now),
                "failures": st.failures, "retry_at": st.retry_at or None, "last_error": st.last_error,
            }  # fmt: skip
        if cadence.levels and not configured:
            return {"namespace": namespace, "status": "not_configured", "levels": levels}
        grown = head is not None and any(
            head.size != lv["last_size"]
            for lv in levels.values()
            if lv["state"] != "not_configured"
        )
        if (
            status == "ok"
            and cadence.levels
            and grown
            and newest_verified
            and now - newest_verified > STALE_AFTER
        ):
            status = "stale"
        return {"namespace": namespace, "status": status, "levels": levels}

    def health_all(self) -> Mapping[str, Any]:
        return {ns: self.health(ns) for ns in sorted(self.sequencer.namespaces.current())}
