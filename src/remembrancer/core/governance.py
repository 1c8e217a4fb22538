"""Cadence governance (DESIGN.md section 3.9), as a pure state machine.

A ``governance.cadence.set`` record proposes a cadence change for its own
namespace.  It is approved

- at once, when its actor is one of the namespace's ``governance.admins``; or
- when ``governance.vote_threshold`` distinct ``governance.voters`` have
  recorded ``vote.cast`` with ``proposalId`` equal to the proposal's
  ``event:id`` and ``choice`` ``approve`` (votes before the proposal, votes
  by others, and repeated votes do not count).

An approved change takes effect from ``effective_after`` (RFC 3339), or from
the approving record's timestamp when absent.  The state is plain data that
the sequencer persists with the log and folds records into as they are
admitted; ``effective_cadence`` answers "which cadence holds at time t".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from remembrancer.core.cadence import Cadence
from remembrancer.core.errors import ConfigError, FormatError, PolicyError
from remembrancer.core.namespace import NamespaceConfig
from remembrancer.core.record import Record

PROPOSAL_SCHEMA = "governance.cadence.set"
VOTE_SCHEMA = "vote.cast"
# The event types :func:`fold` looks at; it leaves the state as it is for any other.
FOLDED_TYPES: frozenset[str] = frozenset((PROPOSAL_SCHEMA, VOTE_SCHEMA))
APPROVE = frozenset({"approve", "yes"})


@dataclass(frozen=True, slots=True)
class Proposal:
    event_id: str
    event_hash: str
    actor: str
    cadence: dict[str, Any]
    effective_after: int | None
    memo: str | None
    votes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AppliedChange:
    proposal: str  # event:id of the proposal
    event_hash: str
    cadence: dict[str, Any]
    effective_from: int
    approved_by: tuple[str, ...]
    memo: str | None = None


@dataclass(frozen=True, slots=True)
class GovernanceState:
    pending: dict[str, Proposal] = field(default_factory=dict)
    applied: tuple[AppliedChange, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": {
                k: {"event_hash": p.event_hash, "actor": p.actor, "cadence": p.cadence,
                    "effective_after": p.effective_after, "memo": p.memo, "votes": list(p.votes)}
                for k, p in self.pending.items()
            },
            "applied": [
                {"proposal": a.proposal, "event_hash": a.event_hash, "cadence": a.cadence,
                 "effective_from": a.effective_from, "approved_by": list(a.approved_by),
                 "memo": a.memo}
                for a in self.applied
            ],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> GovernanceState:
        pending = {
            k: Proposal(k, p["event_hash"], p["actor"], p["cadence"], p["effective_after"],
                        p["memo"], tuple(p["votes"]))
            for k, p in value.get("pending", {}).items()
        }  # fmt: skip
        applied = tuple(
            AppliedChange(a["proposal"], a["event_hash"], a["cadence"], a["effective_from"],
                          tuple(a["approved_by"]), a.get("memo"))
            for a in value.get("applied", [])
        )  # fmt: skip
        return cls(pending, applied)


def parse_rfc3339(text: str) -> int:
    """Seconds since the epoch of an RFC 3339 date-time with an offset."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise FormatError(f"{text!r} is not an RFC 3339 date-time", code="payload_invalid") from e
    if dt.tzinfo is None:
        raise FormatError(f"{text!r} has no time zone offset", code="payload_invalid")
    return int(dt.timestamp())


def check_proposal(record: Record, ns: NamespaceConfig) -> None:
    """Admission-time checks on a governance record (part of payload validity):
    it targets its own namespace and the resulting cadence is valid."""
    if record.schema_name != PROPOSAL_SCHEMA:
        return
    payload = record.payload
    if payload.get("namespace") != record.namespace:
        raise PolicyError(
            f"a cadence change recorded in {record.namespace} must target {record.namespace},"
            f" not {payload.get('namespace')}",
            code="governance_namespace_mismatch",
        )
    if "effective_after" in payload:
        parse_rfc3339(payload["effective_after"])
    try:
        ns.cadence.merged(payload["cadence"])
    except ConfigError as e:
        raise FormatError(
            f"the proposed cadence is invalid: {e.message}", code="cadence_invalid"
        ) from e


def fold(state: GovernanceState, record: Record, ns: NamespaceConfig) -> GovernanceState:
    """The state after admitting ``record`` (unchanged for unrelated records)."""
    gov = ns.governance
    kind = record.event_type  # the schema's name (the parser holds them equal)
    if kind == PROPOSAL_SCHEMA:
        payload = record.payload
        eff = payload.get("effective_after")
        proposal = Proposal(
            event_id=record.event_id,
            event_hash=record.event_hash_hex,
            actor=record.actor,
            cadence=payload["cadence"],
            effective_after=parse_rfc3339(eff) if eff else None,
            memo=payload.get("memo"),
        )
        if record.actor in gov.admins:
            return _apply(state, proposal, (record.actor,), record.timestamp)
        if gov.vote_threshold <= 0:
            return state  # recorded, but this namespace has no vote rule: never applies
        return replace(state, pending={**state.pending, proposal.event_id: proposal})
    if kind == VOTE_SCHEMA:
        payload = record.payload
        target = state.pending.get(payload.get("proposalId", ""))
        if target is None or record.actor not in gov.voters:
            return state
        proposal = target
        if payload.get("choice") not in APPROVE or record.actor in proposal.votes:
            return state
        votes = (*proposal.votes, record.actor)
        if len(votes) >= gov.vote_threshold:
            pending = {k: v for k, v in state.pending.items() if k != proposal.event_id}
            return _apply(replace(state, pending=pending), proposal, votes, record.timestamp)
        voted = replace(proposal, votes=votes)
        return replace(state, pending={**state.pending, proposal.event_id: voted})
    return state


def _apply(state: GovernanceState, p: Proposal, by: tuple[str, ...], now: int) -> GovernanceState:
    change = AppliedChange(
        proposal=p.event_id,
        event_hash=p.event_hash,
        cadence=p.cadence,
        effective_from=p.effective_after if p.effective_after is not None else now,
        approved_by=by,
        memo=p.memo,
    )
    return replace(state, applied=(*state.applied, change))


def view(ns: NamespaceConfig, state: GovernanceState, now: int) -> dict[str, Any]:
    """What a user asks of a namespace's governance at time ``now``: its rule,
    the proposals waiting for votes (with who voted and how many more are
    needed), the approved changes (in effect, or scheduled), and the cadence
    in effect."""
    gov = ns.governance
    return {
        "rule": {"admins": list(gov.admins), "voters": list(gov.voters),
                 "vote_threshold": gov.vote_threshold},
        "pending": [
            {"proposal": p.event_id, "eventHash": p.event_hash, "actor": p.actor,
             "cadence": p.cadence, "effective_after": p.effective_after, "memo": p.memo,
             "votes": list(p.votes), "votes_needed": max(0, gov.vote_threshold - len(p.votes))}
            for p in state.pending.values()
        ],
        "applied": [
            {"proposal": a.proposal, "eventHash": a.event_hash, "cadence": a.cadence,
             "effective_from": a.effective_from, "approved_by": list(a.approved_by),
             "memo": a.memo, "state": "in_effect" if a.effective_from <= now else "scheduled"}
            for a in state.applied
        ],
        "cadence": effective_cadence(ns, state, now).to_dict(),
    }  # fmt: skip


def effective_cadence(ns: NamespaceConfig, state: GovernanceState, now: int) -> Cadence:
    """The namespace's cadence at time ``now``: the configured one with every
    applied change whose time has come, in the order they were approved."""
    cadence = ns.cadence
    for change in state.applied:
        if change.effective_from <= now:
            try:
                cadence = cadence.merged(change.cadence)
            except ConfigError:
                continue  # the base config changed under it; the change no longer fits
    return cadence
