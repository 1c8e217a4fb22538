"""The peers as this node sees them: the registry in force, its scores of them, their heads.

:class:`PeerDirectory` owns that state.  The registry in force changes only
through applied registry changes (:mod:`remembrancer.federation.changes`);
scores move on this node's own observations (heartbeats, valid and invalid
messages, proven misbehaviour, ``docs/federation-scoring.md``) and are saved
at once; every save hands the effective statuses to the message verifier
(``on_change``), so what this node accepts follows its own view of its
peers.  Heads are what each peer's latest heartbeat announced: they say
where to look for a log, never what is true of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Final

from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.federation.registry.scoring import PeerScores, effective_peers
from remembrancer.storage.base import Store

__all__ = ["SCORES_SCOPE", "PeerDirectory"]

log = logging.getLogger("remembrancer.federation")
SCORES_SCOPE: Final = "federation"
"""Store state scope of the scores (key ``scores``) and of this node's own seq (``own-seq``)."""
RAILS_READY_KEY: Final = "rails-ready"
OWN_RAILS_KEY: Final = "own-rails"
MAX_RAIL_TARGETS: Final = 64  # rail targets kept per peer
RAILS_LEAD_EPOCHS: Final = 2  # a rail announced ready coordinates from this many epochs on


class PeerDirectory:
    """The registry in force, this node's scores of its peers, and their announced heads."""

    def __init__(
        self,
        registry: Registry,
        self_did: str,
        store: Store,
        *,
        clock: Callable[[], float],
        heartbeat_seconds: float,
    ) -> None:
        self.registry = registry
        self.self_did = self_did
        self.store = store
        self.clock = clock
        raw = store.get_state(SCORES_SCOPE, "scores")
        self.scores = (
            PeerScores.from_dict(json.loads(raw))
            if raw
            else PeerScores(heartbeat_interval=max(1, int(heartbeat_seconds)))
        )
        # peer -> {"at": t, "at_precise": t, "logs": {origin: (size, root)}}
        self.heads: dict[str, dict[str, Any]] = {}
        # Called with the effective peers after every save (the message verifier's table).
        self.on_change: Callable[[tuple[Peer, ...]], None] | None = None
        self._listed = self.effective()
        # Peers that joined through an applied registry change (set by RegistryChanges):
        # they coordinate a target only from the epoch their heartbeats announced
        # their rail for it ready (docs/federation.md, "Joining").
        self.joined: frozenset[str] = frozenset()
        raw = store.get_state(SCORES_SCOPE, RAILS_READY_KEY)
        # peer DID -> {target: first epoch it coordinates}; the first value heard stays.
        self.rails_ready: dict[str, dict[str, int]] = json.loads(raw) if raw else {}
        raw = store.get_state(SCORES_SCOPE, OWN_RAILS_KEY)
        self.own_rails: dict[str, int] = json.loads(raw) if raw else {}

    def effective(self) -> tuple[Peer, ...]:
        """Every registry peer with its effective status (registry status and scores)."""
        return effective_peers(self.registry, self.scores)

    def listed(self) -> tuple[Peer, ...]:
        """The effective peers as last handed to the message verifier."""
        return self._listed

    def others(self, role: str | None = None) -> list[Peer]:
        """The active peers other than this node (with ``role``, when given)."""
        return [p for p in self.effective() if p.did != self.self_did and p.status == "active"
                and (role is None or role in p.roles)]  # fmt: skip

    def _publish(self) -> None:
        self._listed = self.effective()
        if self.on_change is not None:
            self.on_change(self._listed)

    def save_sync(self) -> None:
        """Persist the scores and hand the effective statuses on (blocking)."""
        self._publish()
        self.store.put_state(SCORES_SCOPE, "scores", json.dumps(self.scores.to_dict()).encode())

    async def save(self) -> None:
        """Persist the scores and hand the effective statuses on.  The snapshot
        is taken on the event loop (the only thread that changes the scores);
        only the write goes to a worker thread."""
        data = json.dumps(self.scores.to_dict()).encode()
        self._publish()
        await asyncio.to_thread(self.store.put_state, SCORES_SCOPE, "scores", data)

    async def score(self, peer: str, event: str, reason: str = "") -> None:
        """An observation of ``peer`` for peer scoring: ``valid``, ``invalid``
        (``reason``: the error code) or ``missed`` (it failed to answer in
        time); saved, and statuses fed back to the verifier."""
        known = self.registry.get(peer)
        if known is None or known.did == self.self_did:
            return
        peer, now = known.did, int(self.clock())
        if event == "valid":
            change = self.scores.on_valid(peer, now)
        elif event == "invalid":
            change = self.scores.on_invalid(peer, reason, now)
        elif event == "missed":
            change = self.scores.on_missed(peer, now)
        else:
            raise ValueError(f"unknown scoring event {event!r}")
        if change is not None:
            log.warning("%s: %s -> %s (%s)", peer, change.old, change.new, change.reason)
        await self.save()

    async def count_invalid(self, peer: str, code: str, now: int) -> None:
        """One invalid message (or refused claim) by ``peer``, saved when its status changes."""
        if self.scores.on_invalid(peer, code, now) is not None:
            await self.save()

    # --- rails readiness (the coordinator rotation) ---------------------------------
    def announce_rails(self, targets: list[str], epoch: int) -> dict[str, int] | None:
        """What this node's heartbeats announce: each configured rail target and
        the first epoch it coordinates it, ``epoch + RAILS_LEAD_EPOCHS`` when the
        target is first announced (kept in the store, so the same epoch is
        announced after a restart).  None while this node is not a peer of the
        registry it holds: a joiner announces only once it knows it joined."""
        if self.registry.get(self.self_did) is None:
            return None
        fresh = [t for t in targets[:MAX_RAIL_TARGETS] if t not in self.own_rails]
        if fresh:
            for t in fresh:
                self.own_rails[t] = epoch + RAILS_LEAD_EPOCHS
            self.store.put_state(SCORES_SCOPE, OWN_RAILS_KEY, json.dumps(self.own_rails).encode())
        return {t: e for t, e in self.own_rails.items() if t in targets}

    def note_rails(self, peer: str, rails: dict[str, int]) -> bool:
        """A registry peer's heartbeat announced ``rails``: keep the first epoch
        heard per target (a later announcement moves nothing).  Whether anything
        new was kept (the caller saves with :meth:`save_rails`)."""
        known = self.registry.get(peer)
        if known is None:
            return False
        held = self.rails_ready.setdefault(known.did, {})
        new = {t: e for t, e in rails.items() if t not in held}
        room = MAX_RAIL_TARGETS - len(held)
        for t, e in list(new.items())[: max(0, room)]:
            held[t] = e
        return bool(new) and room > 0

    def save_rails(self) -> None:
        self.store.put_state(SCORES_SCOPE, RAILS_READY_KEY, json.dumps(self.rails_ready).encode())

    def coordinates(self, did: str, target: str, epoch: int) -> bool:
        """Whether ``did`` is in the coordinator rotation of ``target`` in ``epoch``:
        a peer of the bootstrap registry always is; a peer that joined through
        a registry change only from the epoch it announced for that rail."""
        if did not in self.joined:
            return True
        first = (self.own_rails if did == self.self_did else self.rails_ready.get(did, {})).get(
            target
        )
        return first is not None and first <= epoch
