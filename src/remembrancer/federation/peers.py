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
