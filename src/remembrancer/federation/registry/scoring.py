"""Peer scoring: each node's local, automatic view of its peers (``docs/federation-scoring.md``).

:class:`PeerScores` keeps a score in [0, 100] per peer from liveness and
message validity, and statuses imposed at once on proven misbehaviour.  A
peer's effective status is the more severe of its registry status and its
automatic status (:func:`effective_status`).  Every status change, automatic
or by registry change, is a
:class:`~remembrancer.federation.registry.model.StatusChange` with its
reason and a reference to its evidence.  Pure: callers pass the time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from remembrancer.core.errors import FormatError
from remembrancer.federation.registry.model import (
    STATUSES,
    Peer,
    PeerStatus,
    Registry,
    StatusChange,
    worse_status,
)

__all__ = [
    "MISBEHAVIOUR_KINDS",
    "Misbehaviour",
    "PeerScore",
    "PeerScores",
    "ProvenMisbehaviour",
    "effective_active_peers",
    "effective_peers",
    "effective_status",
]


# What a peer can be proven to have done (docs/spec/federation.md, "Evidence"): each
# is a statement it signed that is false on its face.  A countersignature that
# does not verify is nobody's statement, so "forged_countersignature" is none.
MISBEHAVIOUR_KINDS: Final = ("equivocation", "invalid_anchor_claim")


INITIAL_SCORE: Final = 100.0
ALPHA_HEARTBEAT: Final = 0.1  # weight of one heartbeat interval (on time: 100, missed: 0)
ALPHA_VALID: Final = 0.02  # weight of one valid message (observation 100)
ALPHA_INVALID: Final = 0.1  # weight of one invalid message (observation 0)
PROBATION_BELOW: Final = 50.0  # active -> probation when the score falls below this
RECOVER_AT: Final = 80.0  # score-caused probation -> active at or above this
SUSPEND_FLOOR: Final = 20.0  # below this ...
SUSPEND_AFTER: Final = 3600  # ... for this many seconds without a break: suspended
SUSPEND_AT_OFFENCES: Final = 2  # distinct proven misbehaviours that mean suspended
DEFAULT_HEARTBEAT_INTERVAL: Final = 30
MAX_HISTORY: Final = 4096
MAX_INCIDENTS_KEPT: Final = 256


class ProvenMisbehaviour(Protocol):
    """What :meth:`PeerScores.on_misbehaviour` needs from verified evidence.

    The reports of :mod:`remembrancer.federation.evidence` provide these.
    ``evidence_ref`` names the evidence file (``sha256:<hex>``); ``incident``
    names the offence itself, so that several files proving one offence (say,
    the same fork with different cosignatures, or sent by several peers)
    count once.
    """

    @property
    def kind(self) -> str: ...

    @property
    def evidence_ref(self) -> str: ...

    @property
    def incident(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """A plain :class:`ProvenMisbehaviour` value."""

    kind: str
    evidence_ref: str
    incident: str


@dataclass(slots=True)
class PeerScore:
    """The scoring state of one peer (see ``docs/federation-scoring.md``)."""

    score: float = INITIAL_SCORE
    score_status: PeerStatus = "active"  # from the score alone, with hysteresis
    hold: PeerStatus = "active"  # from proven misbehaviour; cleared only by reinstate()
    below_floor_since: int | None = None
    last_heartbeat: int | None = None
    last_event: int | None = None
    offences: int = 0
    incidents: tuple[str, ...] = ()
    heartbeats: int = 0
    missed: int = 0
    valid: int = 0
    invalid: int = 0
    last_invalid_reason: str | None = None

    @property
    def status(self) -> PeerStatus:
        return worse_status(self.score_status, self.hold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "score_status": self.score_status,
            "hold": self.hold,
            "below_floor_since": self.below_floor_since,
            "last_heartbeat": self.last_heartbeat,
            "last_event": self.last_event,
            "offences": self.offences,
            "incidents": list(self.incidents),
            "heartbeats": self.heartbeats,
            "missed": self.missed,
            "valid": self.valid,
            "invalid": self.invalid,
            "last_invalid_reason": self.last_invalid_reason,
        }

    @classmethod
    def from_dict(cls, d: Any) -> PeerScore:
        def opt_int(v: Any) -> bool:
            return v is None or type(v) is int

        fields = ("score", "score_status", "hold", "below_floor_since", "last_heartbeat",
                  "last_event", "offences", "incidents", "heartbeats", "missed", "valid",
                  "invalid", "last_invalid_reason")  # fmt: skip
        if not isinstance(d, Mapping) or set(d) != set(fields):
            raise FormatError("a peer score has exactly the fields of PeerScore.to_dict",
                              code="peer_scores_malformed")  # fmt: skip
        score = d["score"]
        ok = (
            type(score) in (int, float)
            and math.isfinite(score)
            and 0.0 <= score <= 100.0
            and d["score_status"] in STATUSES
            and d["hold"] in STATUSES
            and all(opt_int(d[k]) for k in ("below_floor_since", "last_heartbeat", "last_event"))
            and all(type(d[k]) is int and d[k] >= 0
                    for k in ("offences", "heartbeats", "missed", "valid", "invalid"))
            and isinstance(d["incidents"], list)
            and all(isinstance(i, str) for i in d["incidents"])
            and (d["last_invalid_reason"] is None or isinstance(d["last_invalid_reason"], str))
        )  # fmt: skip
        if not ok:
            raise FormatError("a peer score has fields of the wrong type or range",
                              code="peer_scores_malformed")  # fmt: skip
        return cls(
            score=float(score),
            score_status=d["score_status"],
            hold=d["hold"],
            below_floor_since=d["below_floor_since"],
            last_heartbeat=d["last_heartbeat"],
            last_event=d["last_event"],
            offences=d["offences"],
            incidents=tuple(d["incidents"]),
            heartbeats=d["heartbeats"],
            missed=d["missed"],
            valid=d["valid"],
            invalid=d["invalid"],
            last_invalid_reason=d["last_invalid_reason"],
        )


class PeerScores:
    """Per-peer scores and automatic statuses, pure and persistable.

    The rule (constants above; ``docs/federation-scoring.md``): the score
    ``S`` in [0, 100] starts at 100 and moves by exponential smoothing,
    ``S <- S + a * (o - S)``, for each observation ``o``: a heartbeat
    received on time (``o = 100``, ``a = 0.1``), a heartbeat interval missed
    (``o = 0``, ``a = 0.1``), a valid message (``o = 100``, ``a = 0.02``),
    an invalid one (``o = 0``, ``a = 0.1``).  Statuses:

    - ``active -> probation`` when ``S < 50``; back to ``active`` when ``S >= 80``;
    - ``suspended`` when ``S < 20`` for 3600 s without a break; back to
      ``probation`` at ``S >= 50`` (and to ``active`` at ``S >= 80``);
    - proven misbehaviour: the first distinct incident puts the peer on
      ``probation`` at once, the second (ever) ``suspended``; these holds are
      lifted only by :meth:`reinstate`, which the node calls when a registry
      change approved by quorum sets the peer ``active``.

    Methods that take ``now`` (POSIX seconds) evaluate the status at once;
    :meth:`on_valid` and :meth:`on_invalid` without ``now`` only move the
    score and the next timed event evaluates it.  Every method that changes
    the effective status returns the :class:`StatusChange` (also appended to
    :meth:`history`); otherwise None.  Peers are keyed by their registry DID
    and created at their first event; a peer never seen is ``active``.
    """

    def __init__(
        self,
        *,
        heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
        history_limit: int = MAX_HISTORY,
    ) -> None:
        if type(heartbeat_interval) is not int or heartbeat_interval < 1:
            raise FormatError("heartbeat_interval is an integer >= 1", code="scores_config_invalid")
        if type(history_limit) is not int or history_limit < 1:
            raise FormatError("history_limit is an integer >= 1", code="scores_config_invalid")
        self.heartbeat_interval = heartbeat_interval
        self.history_limit = history_limit
        self._peers: dict[str, PeerScore] = {}
        self._history: list[StatusChange] = []

    # --- reading --------------------------------------------------------------

    def status(self, peer: str) -> PeerStatus:
        rec = self._peers.get(peer)
        return rec.status if rec else "active"

    def score(self, peer: str) -> float:
        rec = self._peers.get(peer)
        return rec.score if rec else INITIAL_SCORE

    def peer_state(self, peer: str) -> PeerScore:
        """A copy of the peer's scoring state (a fresh one for an unknown peer)."""
        rec = self._peers.get(peer)
        return PeerScore() if rec is None else PeerScore.from_dict(rec.to_dict())

    def peers(self) -> tuple[str, ...]:
        return tuple(sorted(self._peers))

    def history(self, peer: str | None = None) -> tuple[StatusChange, ...]:
        """Status changes, oldest first (of one peer when ``peer`` is given)."""
        if peer is None:
            return tuple(self._history)
        return tuple(h for h in self._history if h.peer == peer)

    # --- events ---------------------------------------------------------------

    def _rec(self, peer: str) -> PeerScore:
        if not isinstance(peer, str) or not peer:
            raise FormatError("a peer is named by its DID", code="peer_invalid")
        rec = self._peers.get(peer)
        if rec is None:
            rec = self._peers[peer] = PeerScore()
        return rec

    @staticmethod
    def _check_now(now: int) -> int:
        if type(now) is not int or now < 0:
            raise FormatError("now is POSIX seconds (an int >= 0)", code="time_invalid")
        return now

    def on_heartbeat(self, peer: str, now: int) -> StatusChange | None:
        """A heartbeat from ``peer`` arrived on time.

        At most one heartbeat counts per half interval, so a peer cannot
        raise its score by sending many.
        """
        self._check_now(now)
        rec = self._rec(peer)
        last = rec.last_heartbeat
        if last is not None and 0 <= now - last < self.heartbeat_interval / 2:
            return None
        rec.last_heartbeat = now
        rec.heartbeats += 1
        rec.score += ALPHA_HEARTBEAT * (100.0 - rec.score)
        return self._evaluate(peer, rec, now)

    def on_missed(self, peer: str, now: int) -> StatusChange | None:
        """One heartbeat interval passed without a heartbeat from ``peer``."""
        self._check_now(now)
        rec = self._rec(peer)
        rec.missed += 1
        rec.score -= ALPHA_HEARTBEAT * rec.score
        return self._evaluate(peer, rec, now)

    def on_valid(self, peer: str, now: int | None = None) -> StatusChange | None:
        """An authenticated message from ``peer`` passed every check."""
        rec = self._rec(peer)
        rec.valid += 1
        rec.score += ALPHA_VALID * (100.0 - rec.score)
        return None if now is None else self._evaluate(peer, rec, self._check_now(now))

    def on_invalid(self, peer: str, reason: str, now: int | None = None) -> StatusChange | None:
        """An authenticated, fresh message from ``peer`` failed a check (``reason``: its code).

        Only messages whose signature verified under the peer's key count:
        anyone can send garbage, a bad signature or a replay in a peer's name.
        """
        rec = self._rec(peer)
        rec.invalid += 1
        rec.last_invalid_reason = str(reason)[:200]
        rec.score -= ALPHA_INVALID * rec.score
        return None if now is None else self._evaluate(peer, rec, self._check_now(now))

    def on_misbehaviour(self, peer: str, evidence: ProvenMisbehaviour, now: int) -> StatusChange:
        """Verified proof that ``peer`` misbehaved: probation at once, suspended if repeated.

        Returns the StatusChange that records it.  Evidence of an incident
        already recorded returns that incident's original entry and changes
        nothing.  A new incident of a peer that is already suspended is
        recorded with ``old == new``.
        """
        self._check_now(now)
        kind, ref, incident = evidence.kind, evidence.evidence_ref, evidence.incident
        if kind not in MISBEHAVIOUR_KINDS:
            raise FormatError(
                f"unknown misbehaviour kind {kind!r}", code="misbehaviour_kind_invalid"
            )
        if not isinstance(ref, str) or not isinstance(incident, str) or not ref or not incident:
            raise FormatError("evidence needs a reference and an incident",
                              code="misbehaviour_malformed")  # fmt: skip
        rec = self._rec(peer)
        if incident in rec.incidents:
            for h in reversed(self._history):
                if h.peer == peer and h.reason.endswith(f"[{incident}]"):
                    return h
            return StatusChange(peer, rec.status, rec.status,
                                f"proven misbehaviour: {kind} [{incident}]", ref, now)  # fmt: skip
        old = rec.status
        rec.offences += 1
        rec.incidents = (*rec.incidents, incident)[-MAX_INCIDENTS_KEPT:]
        rec.last_event = max(now, rec.last_event or 0)
        hold: PeerStatus = "suspended" if rec.offences >= SUSPEND_AT_OFFENCES else "probation"
        rec.hold = worse_status(rec.hold, hold)
        change = StatusChange(
            peer,
            old,
            rec.status,
            f"proven misbehaviour #{rec.offences}: {kind} [{incident}]",
            ref,
            now,
        )
        self._record(change)
        return change

    def reinstate(
        self, peer: str, now: int, *, reason: str, evidence_ref: str | None
    ) -> StatusChange | None:
        """A registry change approved by quorum set ``peer`` active: lift every hold.

        The score restarts at 100; the count of past offences is kept (the
        next proven misbehaviour suspends at once).  ``evidence_ref`` should
        be the approving record's eventHash.
        """
        self._check_now(now)
        rec = self._rec(peer)
        old = rec.status
        rec.hold = "active"
        rec.score_status = "active"
        rec.score = INITIAL_SCORE
        rec.below_floor_since = None
        rec.last_event = max(now, rec.last_event or 0)
        if old == "active":
            return None
        change = StatusChange(peer, old, "active", reason, evidence_ref, now)
        self._record(change)
        return change

    # --- the rule ---------------------------------------------------------------

    def _evaluate(self, peer: str, rec: PeerScore, now: int) -> StatusChange | None:
        old = rec.status
        rec.last_event = max(now, rec.last_event or 0)
        s = rec.score
        if s < SUSPEND_FLOOR:
            if rec.below_floor_since is None:
                rec.below_floor_since = now
        else:
            rec.below_floor_since = None
        reason = ""
        cur = rec.score_status
        if cur == "active" and s < PROBATION_BELOW:
            rec.score_status = "probation"
            reason = f"score {s:.1f} fell below {PROBATION_BELOW:g}"
        elif cur == "probation" and s >= RECOVER_AT:
            rec.score_status = "active"
            reason = f"score {s:.1f} recovered to {RECOVER_AT:g} or more"
        elif cur == "suspended" and s >= PROBATION_BELOW:
            rec.score_status = "active" if s >= RECOVER_AT else "probation"
            reason = f"score {s:.1f} recovered to {PROBATION_BELOW:g} or more"
        since = rec.below_floor_since
        if rec.score_status != "suspended" and since is not None and now - since >= SUSPEND_AFTER:
            rec.score_status = "suspended"
            reason = f"score below {SUSPEND_FLOOR:g} since {since} ({now - since} s >= {SUSPEND_AFTER} s)"
        if rec.status == old:
            return None
        if rec.hold != "active":
            reason = f"{reason}; held {rec.hold} for proven misbehaviour"
        change = StatusChange(peer, old, rec.status, reason, None, now)
        self._record(change)
        return change

    def _record(self, change: StatusChange) -> None:
        self._history.append(change)
        excess = len(self._history) - self.history_limit
        if excess > 0:
            # Drop the oldest score-driven entries first; evidence is kept longest.
            drop = [i for i, h in enumerate(self._history) if h.evidence_ref is None][:excess]
            if len(drop) < excess:
                rest = [i for i in range(len(self._history)) if i not in set(drop)]
                drop += rest[: excess - len(drop)]
            gone = set(drop)
            self._history = [h for i, h in enumerate(self._history) if i not in gone]

    # --- persistence ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "heartbeat_interval": self.heartbeat_interval,
            "history_limit": self.history_limit,
            "peers": {did: rec.to_dict() for did, rec in sorted(self._peers.items())},
            "history": [h.to_dict() for h in self._history],
        }

    @classmethod
    def from_dict(cls, d: Any) -> PeerScores:
        """Restore :meth:`to_dict` output; FormatError ``peer_scores_malformed`` otherwise."""
        if (
            not isinstance(d, Mapping)
            or set(d) != {"version", "heartbeat_interval", "history_limit", "peers", "history"}
            or d["version"] != 1
            or not isinstance(d["peers"], Mapping)
            or not isinstance(d["history"], list)
        ):
            raise FormatError("not a PeerScores document (version 1)", code="peer_scores_malformed")
        try:
            out = cls(heartbeat_interval=d["heartbeat_interval"], history_limit=d["history_limit"])
        except FormatError as e:
            raise FormatError(e.message, code="peer_scores_malformed") from e
        for did, rec in d["peers"].items():
            if not isinstance(did, str) or not did:
                raise FormatError("peers are keyed by DID", code="peer_scores_malformed")
            out._peers[did] = PeerScore.from_dict(rec)
        try:
            out._history = [StatusChange.from_dict(h) for h in d["history"]]
        except FormatError as e:
            raise FormatError(e.message, code="peer_scores_malformed") from e
        return out


def effective_status(registry: Registry, scores: PeerScores, did: str) -> PeerStatus:
    """The more severe of ``did``'s registry status and its automatic status.

    NotFoundError ``peer_unknown`` for a DID that is not in the registry.
    """
    peer = registry.peer(did)
    return worse_status(peer.status, scores.status(peer.did))


def effective_peers(registry: Registry, scores: PeerScores) -> tuple[Peer, ...]:
    """The registry's peers with their *effective* status (what a receiver
    passes to ``MessageVerifier.set_peers``, see docs/spec/federation.md)."""
    return tuple(
        replace(p, status=worse_status(p.status, scores.status(p.did))) for p in registry.peers
    )


def effective_active_peers(registry: Registry, scores: PeerScores) -> tuple[Peer, ...]:
    """The registry's peers whose effective status is ``active`` (they count toward quorum)."""
    return tuple(p for p in effective_peers(registry, scores) if p.status == "active")
