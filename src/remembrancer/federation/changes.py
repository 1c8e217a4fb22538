"""Registry changes: proposals folded into the registry state, approved, applied at quorum.

``federation.registry.set@1.0.0`` records (namespace ``fed:<federation_id>``)
arrive at ``POST /v1/federation/proposals``; every signature is checked,
then they are folded into the pure
:class:`~remembrancer.federation.registry.proposals.RegistryState`, kept in
the store.  Witness signatures by active peers count as approvals, and at
quorum the new registry is installed in the
:class:`~remembrancer.federation.peers.PeerDirectory` (and persisted: it
takes precedence over ``federation.yaml`` at the next start).  An operator
approves with :meth:`RegistryChanges.approve`, which signs the proposal with
the node key and forwards it to every peer (old and new registry).

Catch-up.  Each applied record is kept with the approvals it gathered (the
last :data:`MAX_KEPT_CHANGES`) and served at ``GET
/v1/federation/registry/changes``.  Heartbeats carry the sender's registry
digest; a node that hears another one (it was down while the registry
changed) pulls that peer's history and applies each change only if it
carries the approvals of a quorum of the registry in force here at that
step (:meth:`RegistryChanges.catch_up`): a forged or unsigned history is
refused (``registry_change_unapproved``, ``proposal_signature_invalid``,
``registry_change_digest_mismatch``) and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import httpx

from remembrancer.core.errors import (
    ConflictError,
    NotFoundError,
    PolicyError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.record import Record, RecordSignature
from remembrancer.federation.peers import PeerDirectory
from remembrancer.federation.registry.model import Registry, StatusChange
from remembrancer.federation.registry.proposals import REGISTRY_SCHEMA, AppliedChange, RegistryState
from remembrancer.log.schemas import bundled_schemas
from remembrancer.net.http import tls_context
from remembrancer.storage.base import Store

__all__ = ["REGISTRY_KEY", "REGISTRY_SCOPE", "RegistryChanges", "load_registry_state"]

log = logging.getLogger("remembrancer.federation")
REGISTRY_SCOPE: Final = "federation-registry"
REGISTRY_KEY: Final = "state"
MAX_KEPT_CHANGES: Final = 256  # applied change records kept (and served) for catch-up
MAX_CATCH_UP_LOG: Final = 50  # catch-up outcomes shown in GET /v1/federation/proposals
MAX_CHANGES_BYTES: Final = 8 << 20  # a peer's change history, at most
PULL_TIMEOUT: Final = 10.0  # seconds for one pull
PULL_INTERVAL: Final = 2.0  # seconds between pulls from one peer


class RegistryChanges:
    """This node's registry state machine: proposals in, approvals out, the registry in force."""

    def __init__(
        self,
        peers: PeerDirectory,
        state: RegistryState,
        records: dict[str, Record],
        key: SigningKey,
        store: Store,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.peers = peers
        self.state = state
        self._records = records
        self.key = key
        self.store = store
        self.clock = clock
        self.schemas = bundled_schemas()
        self._lock = asyncio.Lock()
        # The applied records with the approvals they gathered, oldest first: the
        # signed change history peers pull (GET /v1/federation/registry/changes).
        self._applied_records: dict[str, str] = _stored_applied_records(store)
        self._pulling: set[str] = set()
        self._pulled_at: dict[str, float] = {}
        self.catch_ups: deque[dict[str, Any]] = deque(maxlen=MAX_CATCH_UP_LOG)
        self._tasks: set[asyncio.Task[None]] = set()
        self._update_joined()

    def _update_joined(self) -> None:
        """Tell the peer directory which peers joined through an applied change."""
        added = {h.peer for h in self.state.history if h.old == "absent" and h.new != "absent"}
        self.peers.joined = frozenset(d for d in added if self.state.registry.get(d) is not None)

    @property
    def proposal_namespace(self) -> str:
        return f"fed:{self.peers.registry.federation_id}"

    def _check_record(self, body: bytes) -> Record:
        """Parse a proposal record; check its namespace, payload schema and every signature."""
        record = Record.from_bytes(body)
        if record.schema_name != REGISTRY_SCHEMA:
            raise PolicyError(
                f"{record.schema} is not a {REGISTRY_SCHEMA} record",
                code="proposal_schema_unsupported",
            )
        if record.namespace != self.proposal_namespace:
            raise PolicyError(
                f"a registry proposal of this federation is in {self.proposal_namespace},"
                f" not {record.namespace}",
                code="proposal_namespace_mismatch",
                details={"namespace": record.namespace},
            )
        self.schemas.validate(record.schema, record.payload)
        if not any(s.role == "actor" and s.kid == record.actor for s in record.signatures):
            raise VerificationError(
                "the proposal has no actor signature", code="proposal_signature_invalid"
            )
        for s in record.signatures:
            if not PublicKey.from_did(s.kid).verify(record.signing_input, s.sig):
                raise VerificationError(
                    f"the {s.role} signature by {s.kid} does not verify",
                    code="proposal_signature_invalid",
                    details={"kid": s.kid, "role": s.role},
                )
        return record

    def _fold_proposal(self, record: Record) -> dict[str, Any]:
        """Fold a verified proposal record (or a resubmission with more approvals)."""
        state = self.state.expire(int(self.clock()))
        pid = record.event_id
        done = next((a for a in state.applied if a.proposal_id == pid), None)
        if done is not None:
            if done.event_hash != record.event_hash_hex:
                raise ConflictError(
                    f"another proposal {pid} was already applied",
                    code="proposal_id_conflict",
                    details={"proposal": pid},
                )
            return self._proposal_view(pid)
        existing = state.pending.get(pid)
        if existing is None:
            state = state.propose(record, int(self.clock()))
            merged = record
        else:
            if existing.event_hash != record.event_hash_hex:
                raise ConflictError(
                    f"another proposal already has event:id {pid}",
                    code="proposal_id_conflict",
                    details={"proposal": pid},
                )
            merged = _merge_signatures(self._records[pid], record, state.registry)
            for s in record.signatures:
                peer = state.registry.peer_by_key(s.kid)
                if s.role != "witness" or peer is None or not peer.active:
                    continue
                state = state.approve(pid, peer.did, s.sig)
        records = {k: r for k, r in self._records.items() if k in state.pending}
        records[pid] = merged
        applied = False
        if state.ready(pid):
            state = state.apply(pid, int(self.clock()))
            records = {}
            applied = True
            self._keep_applied(pid, merged)
        self.state = state
        self._records = records
        self._save()
        if applied:
            self._install(state.applied[-1])
        return self._proposal_view(pid)

    def _keep_applied(self, pid: str, record: Record) -> None:
        self._applied_records[pid] = record.leaf.decode("utf-8")
        while len(self._applied_records) > MAX_KEPT_CHANGES:
            del self._applied_records[next(iter(self._applied_records))]

    def _install(self, change: AppliedChange) -> None:
        """Make the newly applied registry the one in force."""
        self.peers.registry = self.state.registry
        self._update_joined()
        now = int(self.clock())
        for h in self.state.history:
            if h.evidence_ref != change.event_hash:
                continue
            log.warning("registry change %s: %s %s -> %s", change.proposal_id, h.peer, h.old, h.new)
            if h.new == "active" and h.old != "absent":
                self.peers.scores.reinstate(
                    h.peer, now, reason=h.reason, evidence_ref=h.evidence_ref
                )
        self.peers.save_sync()  # also hands the new peers to the verifier

    def _save(self) -> None:
        state = self.state
        doc = {
            "version": 1,
            "registry": state.registry.to_dict(),
            "applied": [a.to_dict() for a in state.applied],
            "history": [h.to_dict() for h in state.history],
            "records": {pid: r.leaf.decode("utf-8") for pid, r in sorted(self._records.items())},
            # When each pending proposal was received here (expiry counts from it).
            "received": {pid: p.received_at for pid, p in sorted(state.pending.items())},
            "dropped": list(state.dropped),
            "applied_records": [{"proposal_id": k, "record": v}
                                for k, v in self._applied_records.items()],
        }  # fmt: skip
        self.store.put_state(REGISTRY_SCOPE, REGISTRY_KEY, json.dumps(doc).encode())

    def _proposal_view(self, pid: str) -> dict[str, Any]:
        state = self.state
        quorum = state.registry.quorum
        pending = state.pending.get(pid)
        if pending is not None and pending.expires_at > int(self.clock()):
            counted = state.approvals(pid)
            return {"proposal_id": pid, "event_hash": pending.event_hash, "state": "pending",
                    "applied": False, "approvals": list(counted), "approval_count": len(counted),
                    "quorum": quorum, "proposer": pending.proposer, "memo": pending.memo,
                    "sponsor": pending.sponsor, "received_at": pending.received_at,
                    "expires_at": pending.expires_at,
                    "registry": pending.registry.to_dict()}  # fmt: skip
        for a in state.applied:
            if a.proposal_id == pid:
                return {"proposal_id": pid, "event_hash": a.event_hash, "state": "applied",
                        "applied": True, "approvals": list(a.approved_by),
                        "approval_count": len(a.approved_by), "quorum": quorum,
                        "registry_digest": a.registry_digest, "applied_at": a.at,
                        "memo": a.memo}  # fmt: skip
        if any(pid in a.superseded for a in state.applied):
            return {"proposal_id": pid, "state": "superseded", "applied": False, "quorum": quorum}
        if pid in state.dropped:
            return {"proposal_id": pid, "state": "dropped", "applied": False, "quorum": quorum}
        raise NotFoundError(
            f"no proposal {pid!r}", code="proposal_unknown", details={"proposal": pid[:128]}
        )

    async def submit(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/federation/proposals``: verify, fold, apply at quorum; the proposal's state."""
        record = await asyncio.to_thread(self._check_record, body)
        async with self._lock:
            return await asyncio.to_thread(self._fold_proposal, record)

    async def drop(self, proposal_id: str) -> dict[str, Any]:
        """``POST /v1/admin/federation/proposals/{id}/drop``: remove a pending
        proposal here (an operator's decision, local to this node), and refuse
        it if it comes again."""
        async with self._lock:
            state = self.state.expire(int(self.clock())).drop(proposal_id)
            self.state = state
            self._records = {k: r for k, r in self._records.items() if k in state.pending}
            await asyncio.to_thread(self._save)
            log.warning("registry proposal %s dropped by the operator", proposal_id)
            return self._proposal_view(proposal_id)

    async def approve(self, proposal_id: str) -> dict[str, Any]:
        """Sign a pending proposal with the node key (a witness signature), fold it
        here and forward the record with every approval gathered to every peer."""
        async with self._lock:
            record = self._records.get(proposal_id)
            if proposal_id in self.state.pending and (
                self.state.pending[proposal_id].expires_at <= int(self.clock())
            ):
                record = None  # expired: _proposal_view says so
            if record is None:
                return {**self._proposal_view(proposal_id), "forwarded": {}}
            me = self.peers.registry.peer_by_key(self.key.public)
            if me is None:
                raise PolicyError(
                    f"this node's key {self.key.did} is not a peer of federation"
                    f" {self.peers.registry.federation_id}",
                    code="approver_unknown",
                )
            if not me.active:
                raise PolicyError(
                    f"{me.did} is {me.status}; only active peers approve registry changes",
                    code="approver_not_active",
                )
            proposed = self.state.pending[proposal_id].registry
            targets = sorted(
                {p.endpoint for p in (*self.peers.registry.peers, *proposed.peers)
                 if p.pubkey != self.key.public}
            )  # fmt: skip
            if not any(s.kid == self.key.did and s.role == "witness" for s in record.signatures):
                sig = self.key.sign(record.signing_input)
                env = record.envelope()
                env["signatures"].append(RecordSignature(self.key.did, "witness", sig).to_dict())
                record = Record.from_value(env)
            view = await asyncio.to_thread(self._fold_proposal, record)
        results = await asyncio.gather(*(self._forward(t, record.leaf) for t in targets))
        return {**view, "forwarded": dict(zip(targets, results, strict=True))}

    async def _forward(self, endpoint: str, body: bytes) -> str:
        url = f"{endpoint.rstrip('/')}/v1/federation/proposals"
        try:
            async with httpx.AsyncClient(timeout=10.0, verify=tls_context(True)) as client:
                r = await client.post(url, content=body,
                                      headers={"Content-Type": "application/json"})  # fmt: skip
        except httpx.HTTPError as e:
            log.warning("could not forward a registry proposal to %s: %s", url, e)
            return f"unreachable: {type(e).__name__}"
        if r.status_code >= 400:
            log.warning("%s refused a registry proposal: %s %s", url, r.status_code, r.text[:300])
        return str(r.status_code)

    # --- catching up (a node that was down while the registry changed) ----------------
    def changes_document(self) -> dict[str, Any]:
        """``GET /v1/federation/registry/changes``: the applied changes this node
        keeps (at most :data:`MAX_KEPT_CHANGES`, oldest first), each as the
        signed record with every approval it gathered and the digest of the
        registry it produced.  Evidence a peer checks, never trusts."""
        state = self.state
        out = []
        for a in state.applied:
            leaf = self._applied_records.get(a.proposal_id)
            if leaf is not None:
                out.append({"proposal_id": a.proposal_id, "event_hash": a.event_hash,
                            "registry_digest": a.registry_digest, "record": leaf})  # fmt: skip
        return {"federation_id": state.registry.federation_id,
                "registry_digest": state.registry.digest(), "changes": out}  # fmt: skip

    def catch_up_from(self, peer_did: str) -> None:
        """A registry peer announced another registry than ours: pull its change
        history in the background (one pull per peer at a time, at most one
        every :data:`PULL_INTERVAL` seconds per peer)."""
        peer = self.peers.registry.get(peer_did)
        if peer is None or peer.did in self._pulling or peer.did == self.peers.self_did:
            return
        if self.clock() - self._pulled_at.get(peer.did, -PULL_INTERVAL) < PULL_INTERVAL:
            return
        self._pulling.add(peer.did)
        self._pulled_at[peer.did] = self.clock()
        task = asyncio.get_running_loop().create_task(self._pull_task(peer.did, peer.endpoint))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pull_task(self, did: str, endpoint: str) -> None:
        try:
            await self.pull(did, endpoint)
        except Exception:
            log.exception("registry catch-up from %s failed", did)
        finally:
            self._pulling.discard(did)

    async def pull(self, did: str, endpoint: str) -> dict[str, Any]:
        """Fetch ``endpoint``'s change history (bounded: :data:`MAX_CHANGES_BYTES`,
        :data:`PULL_TIMEOUT` seconds for the whole pull) and fold it with :meth:`catch_up`."""
        url = f"{endpoint.rstrip('/')}/v1/federation/registry/changes"
        try:
            async with (
                asyncio.timeout(PULL_TIMEOUT),  # the whole pull, however slowly it trickles
                httpx.AsyncClient(timeout=PULL_TIMEOUT, verify=tls_context(True)) as client,
                client.stream("GET", url) as r,
            ):
                if r.status_code != 200:
                    return self._note(did, 0, "registry_changes_unavailable",
                                      f"{url} answered {r.status_code}")  # fmt: skip
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_CHANGES_BYTES:
                        return self._note(did, 0, "registry_changes_too_large",
                                          f"{url} sent more than {MAX_CHANGES_BYTES} bytes")  # fmt: skip
        except (httpx.HTTPError, TimeoutError) as e:
            return self._note(did, 0, "registry_changes_unavailable", f"{url}: {type(e).__name__}")
        try:
            doc = json.loads(bytes(body))
        except ValueError:
            return self._note(did, 0, "registry_changes_malformed", "not JSON")
        return await self.catch_up(did, doc)

    def _note(self, source: str, applied: int, code: str | None, why: str = "") -> dict[str, Any]:
        entry = {"at": int(self.clock()), "source": source, "applied": applied, "refused": code,
                 "reason": why[:300], "registry_digest": self.state.registry.digest()}  # fmt: skip
        self.catch_ups.append(entry)
        if code is not None:
            log.warning("registry catch-up from %s: %s (%s)", source, code, why[:300])
        elif applied:
            log.warning("registry catch-up from %s: %d changes applied", source, applied)
        return entry

    async def catch_up(self, source: str, doc: Any) -> dict[str, Any]:
        """Fold a peer's change history: after the change that produced our
        registry (or from the first, when none did), each change must be
        approved by a quorum of the registry in force here at that step
        (:meth:`RegistryState.apply_signed`) and produce the digest it states.
        The first change that fails stops the fold (what came before it stays
        applied); the outcome is kept in :attr:`catch_ups`."""
        async with self._lock:
            return await asyncio.to_thread(self._catch_up, source, doc)

    def _catch_up(self, source: str, doc: Any) -> dict[str, Any]:
        changes = doc.get("changes") if isinstance(doc, dict) else None
        if not isinstance(changes, list) or len(changes) > MAX_KEPT_CHANGES or any(
            not isinstance(c, dict) or not isinstance(c.get("record"), str)
            or not isinstance(c.get("registry_digest"), str) for c in changes
        ):  # fmt: skip
            return self._note(source, 0, "registry_changes_malformed", "no list of changes")
        if doc.get("federation_id") != self.state.registry.federation_id:
            return self._note(
                source, 0, "federation_id_mismatch", str(doc.get("federation_id"))[:80]
            )
        ours = self.state.registry.digest()
        start = max(
            (i + 1 for i, c in enumerate(changes) if c["registry_digest"] == ours), default=0
        )
        state, kept, applied = self.state, dict(self._applied_records), 0
        refused: RemembrancerError | None = None
        for c in changes[start:]:
            try:
                record = self._check_record(c["record"].encode("utf-8"))
                done = next((a for a in state.applied if a.proposal_id == record.event_id), None)
                if done is not None and done.event_hash == record.event_hash_hex:
                    continue
                nxt = state.expire(int(self.clock())).apply_signed(record, int(self.clock()))
                if nxt.registry.digest() != c["registry_digest"]:
                    raise VerificationError(
                        f"change {record.event_id} produces {nxt.registry.digest()}, not the"
                        f" {c['registry_digest'][:80]} it states",
                        code="registry_change_digest_mismatch",
                    )
            except RemembrancerError as e:
                refused = e
                break
            except (ValueError, TypeError, UnicodeError) as e:
                refused = VerificationError(
                    f"unreadable change: {e}", code="registry_change_malformed"
                )
                break
            state = nxt
            kept[record.event_id] = c["record"]
            applied += 1
        if applied:
            installed = state.applied[-applied:]
            self.state = state
            self._records = {}
            self._applied_records = kept
            while len(self._applied_records) > MAX_KEPT_CHANGES:
                del self._applied_records[next(iter(self._applied_records))]
            self._save()
            for change in installed:
                self._install(change)
        if refused is not None:
            return self._note(source, applied, refused.code, refused.message)
        return self._note(source, applied, None)

    def proposals(self) -> dict[str, Any]:
        state = self.state
        now = int(self.clock())
        live = [pid for pid, p in state.pending.items() if p.expires_at > now]
        return {
            "federation_id": state.registry.federation_id,
            "registry_digest": state.registry.digest(),
            "quorum": state.registry.quorum,
            "pending": [self._proposal_view(pid) for pid in live],
            "applied": [a.to_dict() for a in state.applied],
            "history": [h.to_dict() for h in state.history],
            "catch_up": list(self.catch_ups),
        }


def _stored_applied_records(store: Store) -> dict[str, str]:
    raw = store.get_state(REGISTRY_SCOPE, REGISTRY_KEY)
    try:
        rows = json.loads(raw).get("applied_records", []) if raw else []
        return {str(r["proposal_id"]): str(r["record"]) for r in rows[-MAX_KEPT_CHANGES:]}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _merge_signatures(stored: Record, incoming: Record, registry: Registry) -> Record:
    """``stored`` with the witness signatures of ``incoming`` by registry peers it lacks."""
    have = {(s.kid, s.role) for s in stored.signatures}
    extra = [s for s in incoming.signatures if s.role == "witness" and (s.kid, s.role) not in have
             and registry.peer_by_key(s.kid) is not None]  # fmt: skip
    if not extra:
        return stored
    env = stored.envelope()
    env["signatures"] = [*env["signatures"], *(s.to_dict() for s in extra)]
    return Record.from_value(env)


def _applied_from_dict(d: Any) -> AppliedChange:
    return AppliedChange(
        proposal_id=str(d["proposal_id"]),
        event_hash=str(d["event_hash"]),
        registry_digest=str(d["registry_digest"]),
        approved_by=tuple(str(x) for x in d["approved_by"]),
        at=int(d["at"]),
        superseded=tuple(str(x) for x in d["superseded"]),
        memo=d["memo"] if isinstance(d["memo"], str) else None,
    )


def load_registry_state(
    store: Store, configured: Registry, now: int
) -> tuple[RegistryState, dict[str, Record]]:
    """The registry state kept in the store (it takes precedence over
    ``federation.yaml``), or a fresh one from the configured registry."""
    raw = store.get_state(REGISTRY_SCOPE, REGISTRY_KEY)
    if raw is None:
        return RegistryState(configured), {}
    try:
        doc = json.loads(raw)
        registry = Registry.from_dict(doc["registry"], source="store:federation-registry")
        if registry.federation_id != configured.federation_id:
            log.warning("the stored registry is for federation %s, the configured one for %s;"
                        " using the configured one", registry.federation_id, configured.federation_id)  # fmt: skip
            return RegistryState(configured), {}
        state = RegistryState(
            registry,
            applied=tuple(_applied_from_dict(a) for a in doc["applied"]),
            history=tuple(StatusChange.from_dict(h) for h in doc["history"]),
            dropped=tuple(str(d) for d in doc.get("dropped", [])),
        )
    except (RemembrancerError, ValueError, KeyError, TypeError) as e:
        log.error("the stored federation registry is unreadable (%s); using federation.yaml", e)
        return RegistryState(configured), {}
    records: dict[str, Record] = {}
    received = doc.get("received", {})
    stored = doc.get("records", {})
    # In the order they were received, each at its time (a state written before
    # expiry existed has no times: they count from now).
    for pid in sorted(stored, key=lambda k: (int(received.get(k, now)), k)):
        try:
            record = Record.from_bytes(stored[pid].encode("utf-8"))
            state = state.propose(record, int(received.get(pid, now)))
        except (RemembrancerError, ValueError, TypeError) as e:
            log.warning("dropping stored proposal %s: %s", pid, e)
            continue
        records[record.event_id] = record
    state = state.expire(now)
    return state, {k: r for k, r in records.items() if k in state.pending}
