"""The registry's quorum-approved changes: :class:`RegistryState`, pure and deterministic.

After bootstrap the registry changes only through
``federation.registry.set@1.0.0`` records (the whole new registry, see
:meth:`~remembrancer.federation.registry.model.Registry.registry_record_payload`)
approved by ``quorum`` distinct peers that are ``active`` in the registry in
force.  Every node that folds the same records reaches the same registry:

- :meth:`RegistryState.propose` takes the record.  The proposer's own
  signature, and any ``witness`` signatures the record carries, count as
  approvals when their keys belong to active peers.  Anyone may propose (a
  joining node proposes its own addition); only active peers' approvals count.
- Pending slots (so that strangers cannot block the registry's changes):
  a proposal signed (as actor or witness) by a *member*, a peer that the
  registry in force does not list as ``suspended``, is *sponsored* by the
  first such signer that has room: each member sponsors at most
  :data:`MAX_PENDING_PER_SPONSOR` pending proposals (PolicyError
  ``sponsor_quota_exceeded`` when all its member signers are full).  A
  proposal no member signed is a *candidate*: at most
  :data:`MAX_CANDIDATES` of them (``too_many_candidates``) and one per
  actor key (``candidate_pending``), in a pool apart, so they never take a
  sponsored proposal's place; a member's approval sponsors it.  Pending
  proposals expire :data:`PROPOSAL_TTL` (sponsored) or
  :data:`CANDIDATE_TTL` (candidates) seconds after they were received
  (:meth:`RegistryState.expire`; the receiver's time, never the record's
  claim), and an operator may drop one (:meth:`RegistryState.drop`; the
  last :data:`MAX_DROPPED` dropped ids are refused again,
  ``proposal_dropped``).
- :meth:`RegistryState.approve` adds an approval: an Ed25519 signature by the
  approver's key over the proposal record's signing input (the bytes a record
  witness signs), or a ``vote.cast`` record with ``proposalId`` equal to the
  proposal's ``event:id`` and ``choice`` ``approve``.  Unknown and non-active
  approvers are refused; a repeated approval counts once.
- :meth:`RegistryState.apply` installs the proposed registry once ``quorum``
  (of the registry in force) distinct active peers approved.  Every proposal
  replaces the whole registry and was written against the registry in force,
  so applying one drops all other pending proposals (they are listed as
  superseded and must be proposed again).  A proposal for another
  federation, one that changes nothing, or one that would leave fewer active
  peers than its quorum is refused.

Joining is a proposal that adds a peer; leaving, one that removes it;
reinstating a peer on probation, one that sets it ``active``.  Immutable
values, no clock (callers pass ``now``), no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    NotFoundError,
    PolicyError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.identifiers import MAX_DID_CHARS
from remembrancer.core.keys import SIGNATURE_SIZE, PublicKey
from remembrancer.core.record import Record
from remembrancer.federation.registry.model import (
    ChangeStatus,
    Peer,
    Registry,
    StatusChange,
)
from remembrancer.federation.registry.parse import registry_from_payload

__all__ = ["REGISTRY_SCHEMA", "AppliedChange", "Approval", "Proposal", "RegistryState"]


REGISTRY_SCHEMA: Final = "federation.registry.set"
VOTE_SCHEMA: Final = "vote.cast"
APPROVE_CHOICES: Final = frozenset({"approve", "yes"})


MAX_PENDING_PER_SPONSOR: Final = 4  # pending proposals one member may sponsor
MAX_CANDIDATES: Final = 16  # pending proposals that no member signed
PROPOSAL_TTL: Final = 7 * 86400  # seconds a sponsored proposal stays pending
CANDIDATE_TTL: Final = 86400  # seconds a candidate stays pending
MAX_DROPPED: Final = 256  # dropped proposal ids remembered (and refused again)


@dataclass(frozen=True, slots=True)
class Approval:
    """One counted approval: which peer, with which key, how, and its reference.

    ``via`` is ``proposer`` (the proposal's actor signature), ``witness`` (a
    witness signature on the proposal record), ``signature`` (a detached
    signature over the record's signing input) or ``record`` (a ``vote.cast``
    record; ``ref`` is its eventHash).
    """

    peer: str
    key: str
    via: Literal["proposer", "witness", "signature", "record"]
    ref: str

    def to_dict(self) -> dict[str, str]:
        return {"peer": self.peer, "key": self.key, "via": self.via, "ref": self.ref}


@dataclass(frozen=True, slots=True)
class Proposal:
    """A pending ``federation.registry.set`` record and its approvals so far."""

    proposal_id: str  # the record's event:id
    event_hash: str  # sha256:<hex> of its signing input
    namespace: str
    proposer: str  # the actor's did:key
    registry: Registry
    memo: str | None
    proposed_at: int  # the record's timestamp (a claim: never used for expiry)
    signing_input: bytes
    approvals: tuple[Approval, ...] = ()
    sponsor: str | None = None  # the member whose slot it takes; None: a candidate
    received_at: int = 0  # when this node took it (expiry counts from here)

    def approvers(self) -> tuple[str, ...]:
        return tuple(a.peer for a in self.approvals)

    @property
    def expires_at(self) -> int:
        return self.received_at + (PROPOSAL_TTL if self.sponsor is not None else CANDIDATE_TTL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposal_id": self.proposal_id,
            "event_hash": self.event_hash,
            "namespace": self.namespace,
            "proposer": self.proposer,
            "registry": self.registry.to_dict(),
            "memo": self.memo,
            "proposed_at": self.proposed_at,
            "approvals": [a.to_dict() for a in self.approvals],
            "sponsor": self.sponsor,
            "received_at": self.received_at,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A proposal that was applied: who approved it, when, and what it superseded."""

    proposal_id: str
    event_hash: str
    registry_digest: str
    approved_by: tuple[str, ...]
    at: int
    superseded: tuple[str, ...] = ()
    memo: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposal_id": self.proposal_id,
            "event_hash": self.event_hash,
            "registry_digest": self.registry_digest,
            "approved_by": list(self.approved_by),
            "at": self.at,
            "superseded": list(self.superseded),
            "memo": self.memo,
        }


def _schema_is_registry_set(record: Record) -> bool:
    return record.schema_name == REGISTRY_SCHEMA and record.schema_version.startswith("1.0.")


def _signature_by(record: Record, did_key: str, role: str) -> bytes | None:
    for s in record.signatures:
        if s.kid == did_key and s.role == role:
            return s.sig
    return None


@dataclass(frozen=True, slots=True)
class RegistryState:
    """The registry in force, pending proposals (by ``event:id``) and the audit trail.

    Immutable: every method returns a new state.  ``history`` holds the
    :class:`StatusChange` entries caused by applied changes (joins, leaves,
    status changes), each referring to the applied record's eventHash.
    """

    registry: Registry
    pending: Mapping[str, Proposal] = field(default_factory=dict)
    applied: tuple[AppliedChange, ...] = ()
    history: tuple[StatusChange, ...] = ()
    dropped: tuple[str, ...] = ()

    # --- proposals ------------------------------------------------------------

    def check_proposal(self, record: Record) -> Registry:
        """Check that ``record`` is an acceptable proposal; return the proposed registry.

        Raises PolicyError ``proposal_schema_unsupported``,
        ``federation_id_mismatch``, ``quorum_unreachable``,
        ``proposal_no_change``; FormatError (the payload's key) for a bad
        payload; VerificationError ``proposal_signature_invalid`` when the
        actor's signature does not verify.  Admission can call this so that
        refused proposals never enter the log.
        """
        if not _schema_is_registry_set(record):
            raise PolicyError(
                f"{record.schema} is not a federation.registry.set@1.0.x record",
                code="proposal_schema_unsupported",
            )
        proposed, _ = registry_from_payload(record.payload, f"record {record.event_id}")
        current = self.registry
        if proposed.federation_id != current.federation_id:
            raise PolicyError(
                f"the proposal is for federation {proposed.federation_id}, this is {current.federation_id}",
                code="federation_id_mismatch",
                details={"proposal": record.event_id},
            )
        active = len(proposed.active_peers())
        if active < proposed.quorum:
            raise PolicyError(
                f"the proposed registry has {active} active peers but quorum {proposed.quorum}",
                code="quorum_unreachable",
                details={"proposal": record.event_id, "active": active, "quorum": proposed.quorum},
            )
        regions = len(proposed.active_regions())
        if proposed.receipt_regions > regions:
            raise PolicyError(
                f"the proposed registry needs receipts from {proposed.receipt_regions} regions"
                f" but its active peers span {regions}",
                code="receipt_regions_unreachable",
                details={"proposal": record.event_id, "regions": regions,
                         "min_regions": proposed.receipt_regions},
            )  # fmt: skip
        if proposed == current:
            raise PolicyError(
                "the proposal does not change the registry",
                code="proposal_no_change",
                details={"proposal": record.event_id},
            )
        actor_sig = _signature_by(record, record.actor, "actor")
        if actor_sig is None or not PublicKey.from_did(record.actor).verify(
            record.signing_input, actor_sig
        ):
            raise VerificationError(
                "the proposal's actor signature does not verify",
                code="proposal_signature_invalid",
                details={"proposal": record.event_id},
            )
        return proposed

    def propose(self, record: Record, now: int | None = None) -> RegistryState:
        """Add a proposal received at ``now`` (default: the record's timestamp, as
        when folding a log); count its proposer and witnesses that are active peers.

        Proposals expired at ``now`` are dropped first (:meth:`expire`).  A
        byte-identical proposal already pending changes nothing; another
        record with the same ``event:id`` is ConflictError
        ``proposal_id_conflict``; a dropped one ConflictError
        ``proposal_dropped``.  Slots (see the module docstring): PolicyError
        ``sponsor_quota_exceeded``, ``too_many_candidates``,
        ``candidate_pending``.  See :meth:`check_proposal`.
        """
        now = record.timestamp if now is None else now
        return self.expire(now)._propose(record, now)

    def _propose(self, record: Record, now: int) -> RegistryState:
        existing = self.pending.get(record.event_id)
        if existing is not None:
            if existing.event_hash == record.event_hash_hex:
                return self
            raise ConflictError(
                f"another proposal already has event:id {record.event_id}",
                code="proposal_id_conflict",
                details={"proposal": record.event_id},
            )
        if any(a.proposal_id == record.event_id for a in self.applied):
            raise ConflictError(
                f"proposal {record.event_id} was already applied",
                code="proposal_id_conflict",
                details={"proposal": record.event_id},
            )
        if record.event_id in self.dropped:
            raise ConflictError(
                f"proposal {record.event_id} was dropped by this node's operator",
                code="proposal_dropped",
                details={"proposal": record.event_id},
            )
        proposed = self.check_proposal(record)
        approvals: list[Approval] = []
        seen: set[str] = set()
        signers: list[tuple[bool, str]] = []  # (not the actor, DID) of members that signed
        for s in record.signatures:
            peer = self.registry.peer_by_key(s.kid)
            if peer is None or peer.did in seen:
                continue
            key = PublicKey.from_did(s.kid)
            if not key.verify(record.signing_input, s.sig):
                continue  # a bad witness signature approves nothing
            seen.add(peer.did)
            if peer.status != "suspended":
                signers.append((s.role != "actor", peer.did))
            if peer.status != "active":
                continue
            via: Literal["proposer", "witness"] = "proposer" if s.role == "actor" else "witness"
            approvals.append(Approval(peer.did, peer.key_did, via, record.event_hash_hex))
        members = [did for _, did in sorted(signers, key=lambda x: x[0])]  # the actor first
        sponsor = next((m for m in members if self._room(m)), None)
        if sponsor is None and members:
            raise PolicyError(
                f"{', '.join(members)} already sponsor {MAX_PENDING_PER_SPONSOR} pending proposals"
                " each",
                code="sponsor_quota_exceeded",
                details={"proposal": record.event_id, "members": members},
            )
        if sponsor is None:
            candidates = [p for p in self.pending.values() if p.sponsor is None]
            if any(p.proposer == record.actor for p in candidates):
                raise PolicyError(
                    f"{record.actor} already has a proposal pending that no member signed",
                    code="candidate_pending",
                    details={"proposal": record.event_id},
                )
            if len(candidates) >= MAX_CANDIDATES:
                raise PolicyError(
                    f"{MAX_CANDIDATES} proposals that no member signed are pending; ask a"
                    " member to sign (approve) yours",
                    code="too_many_candidates",
                    details={"proposal": record.event_id},
                )
        memo = record.payload.get("memo")
        proposal = Proposal(
            proposal_id=record.event_id,
            event_hash=record.event_hash_hex,
            namespace=record.namespace,
            proposer=record.actor,
            registry=proposed,
            memo=memo if isinstance(memo, str) else None,
            proposed_at=record.timestamp,
            signing_input=record.signing_input,
            approvals=tuple(approvals),
            sponsor=sponsor,
            received_at=now,
        )
        return replace(self, pending={**self.pending, proposal.proposal_id: proposal})

    def _room(self, member: str) -> bool:
        held = sum(1 for p in self.pending.values() if p.sponsor == member)
        return held < MAX_PENDING_PER_SPONSOR

    def expire(self, now: int) -> RegistryState:
        """Drop the proposals whose time ran out at ``now`` (see :attr:`Proposal.expires_at`)."""
        keep = {k: p for k, p in self.pending.items() if p.expires_at > now}
        return self if len(keep) == len(self.pending) else replace(self, pending=keep)

    def drop(self, proposal_id: str) -> RegistryState:
        """Remove a pending proposal (an operator's decision); NotFoundError
        ``proposal_unknown`` if it is not pending.  The id is remembered, so the
        same proposal is refused again (``proposal_dropped``)."""
        self._proposal(proposal_id)
        pending = {k: p for k, p in self.pending.items() if k != proposal_id}
        dropped = (*[d for d in self.dropped if d != proposal_id], proposal_id)[-MAX_DROPPED:]
        return replace(self, pending=pending, dropped=dropped)

    # --- approvals ------------------------------------------------------------

    def _proposal(self, proposal_id: str) -> Proposal:
        proposal = self.pending.get(proposal_id)
        if proposal is None:
            raise NotFoundError(
                f"no pending proposal {proposal_id!r}",
                code="proposal_unknown",
                details={"proposal": str(proposal_id)[:128]},
            )
        return proposal

    def approve(
        self, proposal_id: str, approver_did: str, signature_or_record: bytes | Record
    ) -> RegistryState:
        """Record ``approver_did``'s approval of a pending proposal.

        ``signature_or_record`` is a 64-byte Ed25519 signature by the
        approver's key over the proposal's signing input, or a ``vote.cast``
        record by that key in the proposal's namespace, ``proposalId`` =
        ``proposal_id``, ``choice`` ``approve``.  A repeated approval by the
        same peer returns the state unchanged.

        Errors: NotFoundError ``proposal_unknown``; PolicyError
        ``approver_unknown``, ``approver_not_active``, ``approval_mismatch``
        (the vote is for something else, or is not an approval);
        VerificationError ``approval_signature_invalid``.
        """
        proposal = self._proposal(proposal_id)
        peer = self.registry.get(approver_did)
        if peer is None:
            raise PolicyError(
                f"{approver_did} is not a peer of federation {self.registry.federation_id}",
                code="approver_unknown",
                details={"approver": str(approver_did)[:MAX_DID_CHARS]},
            )
        if peer.status != "active":
            raise PolicyError(
                f"{peer.did} is {peer.status}; only active peers approve registry changes",
                code="approver_not_active",
                details={"approver": peer.did, "status": peer.status},
            )
        if isinstance(signature_or_record, Record):
            approval = self._approval_from_vote(proposal, peer, signature_or_record)
        elif isinstance(signature_or_record, bytes | bytearray):
            sig = bytes(signature_or_record)
            if len(sig) != SIGNATURE_SIZE or not peer.pubkey.verify(proposal.signing_input, sig):
                raise VerificationError(
                    f"the approval signature of {peer.did} does not verify",
                    code="approval_signature_invalid",
                    details={"approver": peer.did, "proposal": proposal_id},
                )
            approval = Approval(peer.did, peer.key_did, "signature",
                                base64.b64encode(sig).decode("ascii"))  # fmt: skip
        else:
            raise FormatError(
                "an approval is a signature (bytes) or a vote.cast Record",
                code="approval_malformed",
            )
        if peer.did in proposal.approvers():
            return self
        sponsor = proposal.sponsor
        if sponsor is None:  # a candidate: the approving member sponsors it
            if not self._room(peer.did):
                raise PolicyError(
                    f"{peer.did} already sponsors {MAX_PENDING_PER_SPONSOR} pending proposals",
                    code="sponsor_quota_exceeded",
                    details={"proposal": proposal_id, "members": [peer.did]},
                )
            sponsor = peer.did
        updated = replace(proposal, approvals=(*proposal.approvals, approval), sponsor=sponsor)
        return replace(self, pending={**self.pending, proposal_id: updated})

    def _approval_from_vote(self, proposal: Proposal, peer: Peer, vote: Record) -> Approval:
        payload = vote.payload
        if (
            vote.schema_name != VOTE_SCHEMA
            or vote.namespace != proposal.namespace
            or payload.get("proposalId") != proposal.proposal_id
            or payload.get("choice") not in APPROVE_CHOICES
        ):
            raise PolicyError(
                f"record {vote.event_id} is not an approving vote.cast for {proposal.proposal_id}"
                f" in {proposal.namespace}",
                code="approval_mismatch",
                details={"proposal": proposal.proposal_id, "record": vote.event_id},
            )
        if vote.actor != peer.key_did:
            raise PolicyError(
                f"the vote's actor is not {peer.did}'s key",
                code="approval_mismatch",
                details={"approver": peer.did, "actor": vote.actor},
            )
        sig = _signature_by(vote, vote.actor, "actor")
        if sig is None or not peer.pubkey.verify(vote.signing_input, sig):
            raise VerificationError(
                f"the vote's signature by {peer.did} does not verify",
                code="approval_signature_invalid",
                details={"approver": peer.did, "record": vote.event_id},
            )
        return Approval(peer.did, peer.key_did, "record", vote.event_hash_hex)

    def approvals(self, proposal_id: str) -> tuple[str, ...]:
        """The peers whose approvals count now: distinct and active in the registry in force."""
        proposal = self._proposal(proposal_id)
        out: list[str] = []
        for a in proposal.approvals:
            peer = self.registry.get(a.peer)
            if peer is not None and peer.active and peer.key_did == a.key and a.peer not in out:
                out.append(a.peer)
        return tuple(out)

    def ready(self, proposal_id: str) -> bool:
        """True when the proposal has ``quorum`` counted approvals."""
        return len(self.approvals(proposal_id)) >= self.registry.quorum

    # --- applying -------------------------------------------------------------

    def apply(self, proposal_id: str, at: int) -> RegistryState:
        """Install the proposal's registry (PolicyError ``quorum_not_met`` before quorum).

        Every other pending proposal is dropped as superseded.  ``history``
        gains one StatusChange per peer that joined, left or changed status.
        """
        proposal = self._proposal(proposal_id)
        counted = self.approvals(proposal_id)
        quorum = self.registry.quorum
        if len(counted) < quorum:
            raise PolicyError(
                f"proposal {proposal_id} has {len(counted)} approvals from active peers;"
                f" quorum is {quorum}",
                code="quorum_not_met",
                details={"proposal": proposal_id, "approvals": list(counted), "quorum": quorum},
            )
        old, new = self.registry, proposal.registry
        reason = f"registry change {proposal_id}"
        changes: list[StatusChange] = []
        for did in sorted({p.did for p in old.peers} | {p.did for p in new.peers}):
            before = old._by_did.get(did)
            after = new._by_did.get(did)
            was: ChangeStatus = before.status if before else "absent"
            now: ChangeStatus = after.status if after else "absent"
            if was != now:
                changes.append(StatusChange(did, was, now, reason, proposal.event_hash, at))
        superseded = tuple(k for k in self.pending if k != proposal_id)
        change = AppliedChange(
            proposal_id=proposal_id,
            event_hash=proposal.event_hash,
            registry_digest=new.digest(),
            approved_by=counted,
            at=at,
            superseded=superseded,
            memo=proposal.memo,
        )
        return RegistryState(
            registry=new,
            pending={},
            applied=(*self.applied, change),
            history=(*self.history, *changes),
            dropped=self.dropped,
        )

    def apply_signed(self, record: Record, at: int) -> RegistryState:
        """Apply a change another node applied (registry catch-up): ``record``
        must carry, as its actor and witness signatures, the approvals of
        ``quorum`` distinct peers that are active in the registry in force
        *here*, the quorum this node knew.  Pending proposals here are
        superseded as by :meth:`apply`; a proposal this node dropped is still
        applied (the federation approved it).  Errors: those of
        :meth:`check_proposal`; VerificationError ``registry_change_unapproved``
        when the signatures that verify fall short of the quorum."""
        if any(a.proposal_id == record.event_id for a in self.applied):
            raise ConflictError(
                f"proposal {record.event_id} was already applied",
                code="proposal_id_conflict",
                details={"proposal": record.event_id},
            )
        staged = replace(self, pending={}, dropped=())._propose(record, at)
        counted = staged.approvals(record.event_id)
        if len(counted) < self.registry.quorum:
            raise VerificationError(
                f"change {record.event_id} carries {len(counted)} valid approvals of active"
                f" peers; the registry in force here needs {self.registry.quorum}",
                code="registry_change_unapproved",
                details={"proposal": record.event_id, "approvals": list(counted),
                         "quorum": self.registry.quorum},
            )  # fmt: skip
        done = staged.apply(record.event_id, at)
        change = replace(done.applied[-1], superseded=tuple(self.pending))
        return replace(done, applied=(*done.applied[:-1], change), dropped=self.dropped)

    def fold(self, record: Record) -> tuple[RegistryState, RemembrancerError | None]:
        """Fold one admitted record of the federation namespace into the state.

        A ``federation.registry.set`` is proposed, a ``vote.cast`` naming a
        pending proposal approves it (the voter is the peer with the actor's
        key), and a proposal that reaches quorum is applied at the record's
        timestamp.  Other records change nothing.  A refused proposal or vote
        leaves the state unchanged and is returned as the second element, so
        that every node folding the same log reaches the same state.
        """
        try:
            if _schema_is_registry_set(record):
                state = self.propose(record)
                if record.event_id in state.pending and state.ready(record.event_id):
                    state = state.apply(record.event_id, record.timestamp)
                return state, None
            if record.schema_name == VOTE_SCHEMA:
                target = record.payload.get("proposalId")
                if not isinstance(target, str) or target not in self.pending:
                    return self, None
                peer = self.registry.peer_by_key(record.actor)
                state = self.approve(target, peer.did if peer else record.actor, record)
                if state.ready(target):
                    state = state.apply(target, record.timestamp)
                return state, None
        except RemembrancerError as e:
            return self, e
        return self, None

    def to_dict(self) -> dict[str, Any]:
        """What the API shows: the registry, pending proposals, applied changes, history."""
        return {
            "registry": self.registry.to_dict(),
            "registry_digest": self.registry.digest(),
            "pending": [p.to_dict() for p in self.pending.values()],
            "applied": [a.to_dict() for a in self.applied],
            "history": [h.to_dict() for h in self.history],
        }
