"""The federation's peer registry, its quorum-approved changes, and peer scoring.

``federation.yaml`` (DESIGN.md 3.10)::

    version: 1                          # optional; only 1 exists
    federation_id: vaultmesh-primary    # ^[a-z0-9][a-z0-9-]{0,62}$
    quorum: 2                           # >= 1 and <= the number of active peers
    anchor_strategy: collaborative      # independent | collaborative | hybrid
    peers:
      - did: did:vm:node:east1          # a readable alias DID, or the peer's did:key
        endpoint: https://east1.vaultmesh.example
        pubkey: did:key:z6Mk...         # or the standard base64 of the 32 key bytes
        status: active                  # active | probation | suspended (default active)
        roles: [witness, anchor, countersign, relay, coordinator]   # default: all five

The seed's template wrote the strategy as ``anchor_propagation: {mode:
collaborative, retry_strategy: geometric-backoff}``; that spelling is read
too (it must agree with ``anchor_strategy`` when both are present).
``anchor_propagation.epoch_seconds`` (an integer from 1 to 86400, default
60) is the length of a collaborative-anchoring epoch
(:mod:`remembrancer.core.aggregation`); it lives in the registry because
every node must use the same one.  :meth:`Registry.to_dict` writes
``anchor_propagation: {epoch_seconds: N}`` only when N is not the default,
so registries that never set it keep their digest.

Keys.  ``pubkey`` is the peer's Ed25519 node key, given as a ``did:key`` or as
canonical standard base64 of its 32 bytes.  It is required when ``did`` is
an alias; when ``did`` is itself a ``did:key`` it may be left out, and when
both are present they must be the same key (``peer_pubkey_mismatch``).  No
two peers share a DID or a key.  Acceptance always checks keys, never
aliases: :meth:`Registry.peer_by_key` is how a signature is mapped to a
peer.  :meth:`Registry.to_dict` always writes ``pubkey`` as a ``did:key``
and peers sorted by DID, so one registry has one canonical form.

Changes.  After bootstrap the registry changes only through
``federation.registry.set@1.0.0`` records (the whole new registry, see
:meth:`Registry.registry_record_payload`) approved by ``quorum`` distinct
peers that are ``active`` in the registry in force.  :class:`RegistryState`
is that state machine, pure and deterministic, so every node that folds the
same records reaches the same registry:

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
reinstating a peer on probation, one that sets it ``active``.

Scoring: :class:`PeerScores` (the rule is in ``docs/federation-scoring.md``)
keeps each node's *local, automatic* view of its peers: a score in [0, 100]
from liveness and message validity, and statuses imposed at once on proven
misbehaviour.  A peer's effective status is the more severe of its registry
status and its automatic status (:func:`effective_status`).  Every status
change, automatic or by registry change, is a :class:`StatusChange` with its
reason and a reference to its evidence.

Everything here is pure (no clock, no I/O) except :func:`load_federation_file`.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias, cast
from urllib.parse import urlsplit

from remembrancer.configfile import read_yaml
from remembrancer.core.aggregation import DEFAULT_EPOCH_SECONDS, MAX_EPOCH_SECONDS
from remembrancer.core.errors import (
    ConfigError,
    ConflictError,
    FormatError,
    NotFoundError,
    PolicyError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.jcs import canonicalize, sha256_hex
from remembrancer.core.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PublicKey, public_from_did_key
from remembrancer.core.record import Record

__all__ = [
    "MISBEHAVIOUR_KINDS",
    "REGISTRY_SCHEMA",
    "ROLES",
    "STATUSES",
    "STRATEGIES",
    "AppliedChange",
    "Approval",
    "Misbehaviour",
    "Peer",
    "PeerScore",
    "PeerScores",
    "Proposal",
    "ProvenMisbehaviour",
    "Registry",
    "RegistryState",
    "StatusChange",
    "effective_active_peers",
    "effective_peers",
    "effective_status",
    "load_federation_file",
]

PeerStatus: TypeAlias = Literal["active", "probation", "suspended"]
ChangeStatus: TypeAlias = Literal["active", "probation", "suspended", "absent"]
Role: TypeAlias = Literal["witness", "anchor", "countersign", "relay", "coordinator"]
AnchorStrategy: TypeAlias = Literal["independent", "collaborative", "hybrid"]

STATUSES: Final[tuple[PeerStatus, ...]] = ("active", "probation", "suspended")
ROLES: Final[tuple[Role, ...]] = ("witness", "anchor", "countersign", "relay", "coordinator")
STRATEGIES: Final[tuple[AnchorStrategy, ...]] = ("independent", "collaborative", "hybrid")
# What a peer can be proven to have done (docs/spec/federation.md, "Evidence"): each
# is a statement it signed that is false on its face.  A countersignature that
# does not verify is nobody's statement, so "forged_countersignature" is none.
MISBEHAVIOUR_KINDS: Final = ("equivocation", "invalid_anchor_claim")

REGISTRY_SCHEMA: Final = "federation.registry.set"
VOTE_SCHEMA: Final = "vote.cast"
APPROVE_CHOICES: Final = frozenset({"approve", "yes"})

MAX_CONFIG_BYTES: Final = 1 << 20
MAX_PEERS: Final = 256
MAX_DID_CHARS: Final = 512
MAX_ENDPOINT_CHARS: Final = 512
MAX_MEMO_CHARS: Final = 280
MAX_PENDING_PER_SPONSOR: Final = 4  # pending proposals one member may sponsor
MAX_CANDIDATES: Final = 16  # pending proposals that no member signed
PROPOSAL_TTL: Final = 7 * 86400  # seconds a sponsored proposal stays pending
CANDIDATE_TTL: Final = 86400  # seconds a candidate stays pending
MAX_DROPPED: Final = 256  # dropped proposal ids remembered (and refused again)

_FEDERATION_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# W3C DID syntax: did:<method>:<method-specific id>, without DID URL parts.
_DID_RE: Final = re.compile(r"did:[a-z0-9]+:(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2}|:)*[A-Za-z0-9._-]")
_SEVERITY: Final[dict[str, int]] = {"active": 0, "probation": 1, "suspended": 2}
_TOP_KEYS: Final = frozenset(
    {"version", "federation_id", "quorum", "anchor_strategy", "anchor_propagation", "peers"}
)
_PEER_KEYS: Final = frozenset({"did", "endpoint", "pubkey", "status", "roles"})


# --------------------------------------------------------------------------
# Validation of plain data (federation.yaml and record payloads)
# --------------------------------------------------------------------------


class _Invalid(Exception):
    """A validation failure at ``key``; wrapped as ConfigError or FormatError."""

    def __init__(self, key: str, message: str, code: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.code = code


def _at(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _did(value: Any, key: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_DID_CHARS or not _DID_RE.fullmatch(value):
        raise _Invalid(key, f"{value!r} is not a DID (did:<method>:<id>)", "peer_did_invalid")
    return value


def _pubkey(value: Any, key: str) -> PublicKey:
    if isinstance(value, str) and value.startswith("did:key:"):
        try:
            return public_from_did_key(value)
        except FormatError as e:
            raise _Invalid(key, f"{e.message}", "peer_pubkey_invalid") from e
    if isinstance(value, str) and len(value) <= 64:
        try:
            raw = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) == PUBLIC_KEY_SIZE and base64.b64encode(raw).decode("ascii") == value:
            return PublicKey(raw)
    raise _Invalid(
        key,
        f"{value!r} is neither a did:key nor the standard base64 of a 32-byte Ed25519 key",
        "peer_pubkey_invalid",
    )


def _endpoint(value: Any, key: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ENDPOINT_CHARS:
        raise _Invalid(key, "must be an http(s) URL string", "peer_endpoint_invalid")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise _Invalid(key, f"{value!r} is not a valid URL: {e}", "peer_endpoint_invalid") from e
    if (
        parts.scheme not in ("http", "https")
        or not value.startswith(f"{parts.scheme}://")
        or not host
        or parts.username is not None
        or parts.fragment
        or any(c.isspace() or ord(c) < 0x20 for c in value)
    ):
        raise _Invalid(
            key,
            f"{value!r} must be an http:// or https:// URL with a host, no credentials and no fragment",
            "peer_endpoint_invalid",
        )
    return value


def _peer(value: Any, key: str, *, default_status: bool) -> Peer:
    if not isinstance(value, Mapping):
        raise _Invalid(key, "a peer must be a mapping", "peer_invalid")
    extra = sorted(str(k) for k in value if k not in _PEER_KEYS)
    if extra:
        raise _Invalid(_at(key, extra[0]), "unknown key", "config_key_unknown")
    if "did" not in value:
        raise _Invalid(_at(key, "did"), "is required", "peer_did_invalid")
    did = _did(value["did"], _at(key, "did"))
    if "endpoint" not in value:
        raise _Invalid(_at(key, "endpoint"), "is required", "peer_endpoint_invalid")
    endpoint = _endpoint(value["endpoint"], _at(key, "endpoint"))
    did_is_key = did.startswith("did:key:")
    pubkey: PublicKey | None = None
    if "pubkey" in value:
        pubkey = _pubkey(value["pubkey"], _at(key, "pubkey"))
    if did_is_key:
        try:
            own = public_from_did_key(did)
        except FormatError as e:
            raise _Invalid(_at(key, "did"), e.message, "peer_did_invalid") from e
        if pubkey is not None and pubkey != own:
            raise _Invalid(
                _at(key, "pubkey"),
                f"is not the key of the did:key {did}",
                "peer_pubkey_mismatch",
            )
        pubkey = own
    if pubkey is None:
        raise _Invalid(
            _at(key, "pubkey"),
            f"is required: {did} is an alias, not a did:key",
            "peer_pubkey_missing",
        )
    if "status" in value or not default_status:
        status = value.get("status")
        if status not in STATUSES:
            raise _Invalid(
                _at(key, "status"),
                f"{status!r} is not one of {', '.join(STATUSES)}",
                "peer_status_invalid",
            )
    else:
        status = "active"
    roles_raw = value.get("roles", list(ROLES))
    if not isinstance(roles_raw, list):
        raise _Invalid(_at(key, "roles"), "must be a list", "peer_roles_invalid")
    roles: list[Role] = []
    for i, role in enumerate(roles_raw):
        if role not in ROLES:
            raise _Invalid(
                f"{_at(key, 'roles')}[{i}]",
                f"{role!r} is not one of {', '.join(ROLES)}",
                "peer_roles_invalid",
            )
        if role in roles:
            raise _Invalid(
                f"{_at(key, 'roles')}[{i}]", f"{role!r} is repeated", "peer_role_duplicate"
            )
        roles.append(role)
    return Peer(did, endpoint, pubkey, cast(PeerStatus, status), frozenset(roles))


def _registry(
    federation_id: Any,
    body: Mapping[str, Any],
    prefix: str,
    *,
    default_status: bool,
    reachable_quorum: bool,
) -> Registry:
    if not isinstance(federation_id, str) or not _FEDERATION_ID_RE.fullmatch(federation_id):
        raise _Invalid(
            "federation_id",
            f"{federation_id!r} must match ^[a-z0-9][a-z0-9-]{{0,62}}$",
            "federation_id_invalid",
        )
    quorum = body.get("quorum")
    if type(quorum) is not int or quorum < 1:
        raise _Invalid(_at(prefix, "quorum"), "must be an integer >= 1", "quorum_invalid")
    strategy = body.get("anchor_strategy")
    if strategy not in STRATEGIES:
        raise _Invalid(
            _at(prefix, "anchor_strategy"),
            f"{strategy!r} is not one of {', '.join(STRATEGIES)}",
            "anchor_strategy_invalid",
        )
    peers_raw = body.get("peers")
    if not isinstance(peers_raw, list) or not 1 <= len(peers_raw) <= MAX_PEERS:
        raise _Invalid(
            _at(prefix, "peers"), f"must be a list of 1 to {MAX_PEERS} peers", "peers_invalid"
        )
    peers: list[Peer] = []
    by_did: dict[str, int] = {}
    by_key: dict[bytes, int] = {}
    for i, entry in enumerate(peers_raw):
        where = f"{_at(prefix, 'peers')}[{i}]"
        peer = _peer(entry, where, default_status=default_status)
        if peer.did in by_did:
            raise _Invalid(
                f"{where}.did",
                f"{peer.did} is already peers[{by_did[peer.did]}]",
                "peer_did_duplicate",
            )
        if peer.pubkey.raw in by_key:
            raise _Invalid(
                f"{where}.pubkey",
                f"is the same key as peers[{by_key[peer.pubkey.raw]}]",
                "peer_pubkey_duplicate",
            )
        by_did[peer.did] = i
        by_key[peer.pubkey.raw] = i
        peers.append(peer)
    active = sum(1 for p in peers if p.status == "active")
    if reachable_quorum and quorum > active:
        raise _Invalid(
            _at(prefix, "quorum"),
            f"is {quorum} but only {active} peers are active, so nothing could ever be approved",
            "quorum_unreachable",
        )
    epoch = _epoch_seconds(body.get("anchor_propagation"), _at(prefix, "anchor_propagation"))
    return Registry(federation_id, quorum, cast(AnchorStrategy, strategy), tuple(peers), epoch)


def _epoch_seconds(propagation: Any, key: str) -> int:
    if propagation is None or "epoch_seconds" not in propagation:
        return DEFAULT_EPOCH_SECONDS
    value = propagation["epoch_seconds"]
    if type(value) is not int or not 1 <= value <= MAX_EPOCH_SECONDS:
        raise _Invalid(
            f"{key}.epoch_seconds",
            f"must be an integer from 1 to {MAX_EPOCH_SECONDS}",
            "anchor_epoch_invalid",
        )
    return value


def _parse_config(doc: Any) -> Registry:
    if not isinstance(doc, Mapping):
        raise _Invalid("", "the document must be a mapping", "config_invalid")
    extra = sorted(str(k) for k in doc if k not in _TOP_KEYS)
    if extra:
        raise _Invalid(extra[0], "unknown key", "config_key_unknown")
    if type(doc.get("version", 1)) is not int or doc.get("version", 1) != 1:
        raise _Invalid("version", "must be 1", "config_version_unsupported")
    body = dict(doc)
    propagation = doc.get("anchor_propagation")
    if propagation is not None:
        if not isinstance(propagation, Mapping) or any(
            k not in ("mode", "retry_strategy", "epoch_seconds") for k in propagation
        ):
            raise _Invalid(
                "anchor_propagation",
                "must hold only mode, retry_strategy and epoch_seconds",
                "anchor_strategy_invalid",
            )
        if propagation.get("retry_strategy", "geometric-backoff") != "geometric-backoff":
            raise _Invalid(
                "anchor_propagation.retry_strategy",
                "only geometric-backoff exists",
                "anchor_strategy_invalid",
            )
        if "mode" in propagation or "anchor_strategy" not in doc:
            mode = propagation.get("mode")
            if mode not in STRATEGIES:
                raise _Invalid(
                    "anchor_propagation.mode",
                    f"{mode!r} is not one of {', '.join(STRATEGIES)}",
                    "anchor_strategy_invalid",
                )
            if "anchor_strategy" in doc and doc["anchor_strategy"] != mode:
                raise _Invalid(
                    "anchor_strategy",
                    f"{doc['anchor_strategy']!r} disagrees with anchor_propagation.mode {mode!r}",
                    "anchor_strategy_conflict",
                )
            body["anchor_strategy"] = mode
    return _registry(doc.get("federation_id"), body, "", default_status=True, reachable_quorum=True)


def _parse_payload(payload: Any) -> tuple[Registry, str | None]:
    if not isinstance(payload, Mapping):
        raise _Invalid("", "the payload must be an object", "registry_payload_invalid")
    extra = sorted(str(k) for k in payload if k not in ("federation_id", "registry", "memo"))
    if extra:
        raise _Invalid(extra[0], "unknown key", "registry_payload_invalid")
    body = payload.get("registry")
    if not isinstance(body, Mapping):
        raise _Invalid("registry", "must be an object", "registry_payload_invalid")
    extra = sorted(
        str(k)
        for k in body
        if k not in ("peers", "quorum", "anchor_strategy", "anchor_propagation")
    )
    if extra:
        raise _Invalid(f"registry.{extra[0]}", "unknown key", "registry_payload_invalid")
    propagation = body.get("anchor_propagation")
    if propagation is not None and (
        not isinstance(propagation, Mapping) or set(propagation) != {"epoch_seconds"}
    ):
        raise _Invalid("registry.anchor_propagation", "holds exactly epoch_seconds",
                       "registry_payload_invalid")  # fmt: skip
    memo = payload.get("memo")
    if memo is not None and (not isinstance(memo, str) or len(memo) > MAX_MEMO_CHARS):
        raise _Invalid("memo", f"must be a string of at most {MAX_MEMO_CHARS} characters",
                       "registry_payload_invalid")  # fmt: skip
    registry = _registry(
        payload.get("federation_id"), body, "registry", default_status=False,
        reachable_quorum=False,
    )  # fmt: skip
    return registry, memo


# --------------------------------------------------------------------------
# Peers and the registry
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """One federation member: its DID (alias or did:key), endpoint, key, status, roles."""

    did: str
    endpoint: str
    pubkey: PublicKey
    status: PeerStatus
    roles: frozenset[Role]

    def __post_init__(self) -> None:
        if not isinstance(self.pubkey, PublicKey):
            raise FormatError("a peer's pubkey is a PublicKey", code="peer_pubkey_invalid")
        if self.status not in STATUSES:
            raise FormatError(f"unknown peer status {self.status!r}", code="peer_status_invalid")
        roles = frozenset(self.roles)
        if not roles <= frozenset(ROLES):
            raise FormatError(
                f"unknown roles {sorted(roles - set(ROLES))}", code="peer_roles_invalid"
            )
        object.__setattr__(self, "roles", roles)

    @property
    def key_did(self) -> str:
        """The peer's ``did:key`` (what signatures are checked against)."""
        return self.pubkey.did

    @property
    def active(self) -> bool:
        return self.status == "active"

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def to_dict(self) -> dict[str, Any]:
        """The peer as in ``federation.yaml`` and in a registry record (roles in ROLES order)."""
        return {
            "did": self.did,
            "endpoint": self.endpoint,
            "pubkey": self.key_did,
            "status": self.status,
            "roles": [r for r in ROLES if r in self.roles],
        }


@dataclass(frozen=True, slots=True)
class Registry:
    """A federation's peers, quorum and anchor strategy; peers are kept sorted by DID.

    Construction checks the invariants (distinct DIDs and keys, ``quorum >=
    1``); :meth:`from_dict` and :meth:`from_record_payload` validate plain
    data and name the file or record and the key at fault.
    """

    federation_id: str
    quorum: int
    anchor_strategy: AnchorStrategy
    peers: tuple[Peer, ...]
    anchor_epoch_seconds: int = DEFAULT_EPOCH_SECONDS
    _by_did: dict[str, Peer] = field(init=False, repr=False, compare=False)
    _by_key: dict[bytes, Peer] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.federation_id, str) or not _FEDERATION_ID_RE.fullmatch(
            self.federation_id
        ):
            raise FormatError(
                f"bad federation_id {self.federation_id!r}", code="federation_id_invalid"
            )
        if type(self.quorum) is not int or self.quorum < 1:
            raise FormatError("quorum must be an integer >= 1", code="quorum_invalid")
        if self.anchor_strategy not in STRATEGIES:
            raise FormatError(
                f"unknown anchor strategy {self.anchor_strategy!r}", code="anchor_strategy_invalid"
            )
        if (
            type(self.anchor_epoch_seconds) is not int
            or not 1 <= self.anchor_epoch_seconds <= MAX_EPOCH_SECONDS
        ):
            raise FormatError(
                f"anchor_epoch_seconds is an integer from 1 to {MAX_EPOCH_SECONDS}",
                code="anchor_epoch_invalid",
            )
        peers = tuple(sorted(self.peers, key=lambda p: p.did))
        by_did: dict[str, Peer] = {}
        by_key: dict[bytes, Peer] = {}
        for p in peers:
            if not isinstance(p, Peer):
                raise FormatError("peers must be Peer values", code="peers_invalid")
            if p.did in by_did:
                raise FormatError(f"two peers are {p.did}", code="peer_did_duplicate")
            if p.pubkey.raw in by_key:
                raise FormatError(
                    f"{p.did} and {by_key[p.pubkey.raw].did} share a key",
                    code="peer_pubkey_duplicate",
                )
            by_did[p.did] = p
            by_key[p.pubkey.raw] = p
        if not 1 <= len(peers) <= MAX_PEERS:
            raise FormatError(f"a registry has 1 to {MAX_PEERS} peers", code="peers_invalid")
        object.__setattr__(self, "peers", peers)
        object.__setattr__(self, "_by_did", by_did)
        object.__setattr__(self, "_by_key", by_key)

    # --- lookups -----------------------------------------------------------

    def get(self, did: str) -> Peer | None:
        """The peer configured under ``did`` or, for a ``did:key``, the peer with that key."""
        peer = self._by_did.get(did)
        if peer is None and isinstance(did, str) and did.startswith("did:key:"):
            try:
                peer = self._by_key.get(public_from_did_key(did).raw)
            except FormatError:
                return None
        return peer

    def peer(self, did: str) -> Peer:
        """Like :meth:`get`, but NotFoundError ``peer_unknown`` when there is none."""
        peer = self.get(did)
        if peer is None:
            raise NotFoundError(
                f"{did} is not a peer of federation {self.federation_id}",
                code="peer_unknown",
                details={"did": str(did)[:MAX_DID_CHARS]},
            )
        return peer

    def peer_by_key(self, key: PublicKey | bytes | str) -> Peer | None:
        """The peer whose Ed25519 key is ``key`` (a PublicKey, 32 raw bytes or a did:key)."""
        if isinstance(key, PublicKey):
            raw = key.raw
        elif isinstance(key, bytes):
            raw = key
        else:
            try:
                raw = public_from_did_key(key).raw
            except FormatError:
                return None
        return self._by_key.get(raw)

    def active_peers(self) -> tuple[Peer, ...]:
        """The peers whose registry status is ``active``, sorted by DID."""
        return tuple(p for p in self.peers if p.status == "active")

    def __contains__(self, did: object) -> bool:
        return isinstance(did, str) and self.get(did) is not None

    def __len__(self) -> int:
        return len(self.peers)

    # --- edits (to build proposals) -----------------------------------------

    def with_peer(self, peer: Peer) -> Registry:
        """This registry with ``peer`` added, or replacing the peer with the same DID."""
        kept = tuple(p for p in self.peers if p.did != peer.did)
        return replace(self, peers=(*kept, peer))

    def without_peer(self, did: str) -> Registry:
        """This registry without the peer ``did`` (NotFoundError if it has none)."""
        gone = self.peer(did)
        return replace(self, peers=tuple(p for p in self.peers if p is not gone))

    def with_status(self, did: str, status: PeerStatus) -> Registry:
        """This registry with peer ``did`` in ``status``."""
        return self.with_peer(replace(self.peer(did), status=status))

    # --- plain data ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The canonical ``federation.yaml`` document of this registry."""
        out: dict[str, Any] = {
            "version": 1,
            "federation_id": self.federation_id,
            "quorum": self.quorum,
            "anchor_strategy": self.anchor_strategy,
            "peers": [p.to_dict() for p in self.peers],
        }
        if self.anchor_epoch_seconds != DEFAULT_EPOCH_SECONDS:
            out["anchor_propagation"] = {"epoch_seconds": self.anchor_epoch_seconds}
        return out

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<federation>") -> Registry:
        """Validate a ``federation.yaml`` document.

        Raises ConfigError whose message starts ``<source>: <key>:`` and whose
        ``details`` hold ``file`` and ``key``.  Codes: ``config_invalid``,
        ``config_key_unknown``, ``config_version_unsupported``,
        ``federation_id_invalid``, ``quorum_invalid``, ``quorum_unreachable``,
        ``anchor_strategy_invalid``, ``anchor_strategy_conflict``,
        ``anchor_epoch_invalid``, ``peers_invalid``, ``peer_invalid``, ``peer_did_invalid``,
        ``peer_did_duplicate``, ``peer_endpoint_invalid``,
        ``peer_pubkey_invalid``, ``peer_pubkey_missing``,
        ``peer_pubkey_mismatch``, ``peer_pubkey_duplicate``,
        ``peer_status_invalid``, ``peer_roles_invalid``, ``peer_role_duplicate``.
        """
        try:
            return _parse_config(doc)
        except _Invalid as e:
            where = f"{source}: {e.key}" if e.key else source
            raise ConfigError(
                f"{where}: {e.message}", code=e.code, details={"file": source, "key": e.key}
            ) from None

    def registry_record_payload(self, memo: str | None = None) -> dict[str, Any]:
        """The ``federation.registry.set@1.0.0`` payload that installs this registry."""
        payload: dict[str, Any] = {
            "federation_id": self.federation_id,
            "registry": {
                "peers": [p.to_dict() for p in self.peers],
                "quorum": self.quorum,
                "anchor_strategy": self.anchor_strategy,
            },
        }
        if self.anchor_epoch_seconds != DEFAULT_EPOCH_SECONDS:
            payload["registry"]["anchor_propagation"] = {"epoch_seconds": self.anchor_epoch_seconds}
        if memo is not None:
            if not isinstance(memo, str) or len(memo) > MAX_MEMO_CHARS:
                raise FormatError(
                    f"a memo is a string of at most {MAX_MEMO_CHARS} characters",
                    code="registry_payload_invalid",
                )
            payload["memo"] = memo
        return payload

    @classmethod
    def from_record_payload(cls, payload: Any, *, source: str = "<record>") -> Registry:
        """Validate a ``federation.registry.set`` payload (FormatError naming the key)."""
        return _payload_or_raise(payload, source)[0]

    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical JSON of :meth:`to_dict`: this version's identity."""
        return sha256_hex(canonicalize(self.to_dict()))


def _payload_or_raise(payload: Any, source: str) -> tuple[Registry, str | None]:
    try:
        return _parse_payload(payload)
    except _Invalid as e:
        where = f"{source}: {e.key}" if e.key else source
        raise FormatError(
            f"{where}: {e.message}", code=e.code, details={"source": source, "key": e.key}
        ) from None


def load_federation_file(path: str | os.PathLike[str]) -> Registry:
    """Read and validate ``federation.yaml``; every ConfigError names the file (and key)."""
    p = Path(path)
    return Registry.from_dict(read_yaml(p, max_bytes=MAX_CONFIG_BYTES), source=str(p))


# --------------------------------------------------------------------------
# Status changes
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One change of a peer's status, with why and the evidence behind it.

    ``old``/``new`` are statuses, or ``absent`` for a peer that joined or left
    the registry.  ``old == new`` records further proven misbehaviour of a
    peer whose status could not get worse.  ``evidence_ref`` is
    ``sha256:<hex>`` of the evidence file (misbehaviour) or of the approving
    record (registry changes), or None for score-driven changes.
    """

    peer: str
    old: ChangeStatus
    new: ChangeStatus
    reason: str
    evidence_ref: str | None
    at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "evidence_ref": self.evidence_ref,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, d: Any) -> StatusChange:
        if not isinstance(d, Mapping) or set(d) != {
            "peer",
            "old",
            "new",
            "reason",
            "evidence_ref",
            "at",
        }:
            raise FormatError("a status change has peer, old, new, reason, evidence_ref, at",
                              code="status_change_malformed")  # fmt: skip
        allowed = (*STATUSES, "absent")
        if (
            not isinstance(d["peer"], str)
            or d["old"] not in allowed
            or d["new"] not in allowed
            or not isinstance(d["reason"], str)
            or not (d["evidence_ref"] is None or isinstance(d["evidence_ref"], str))
            or type(d["at"]) is not int
        ):
            raise FormatError("a status change has fields of the wrong type",
                              code="status_change_malformed")  # fmt: skip
        return cls(d["peer"], d["old"], d["new"], d["reason"], d["evidence_ref"], d["at"])


def _worse(a: str, b: str) -> PeerStatus:
    return cast(PeerStatus, a if _SEVERITY[a] >= _SEVERITY[b] else b)


# --------------------------------------------------------------------------
# The registry state machine
# --------------------------------------------------------------------------


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
        proposed, _ = _payload_or_raise(record.payload, f"record {record.event_id}")
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


# --------------------------------------------------------------------------
# Peer scoring (docs/federation-scoring.md)
# --------------------------------------------------------------------------

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
        return _worse(self.score_status, self.hold)

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
        rec.hold = _worse(rec.hold, hold)
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
    return _worse(peer.status, scores.status(peer.did))


def effective_peers(registry: Registry, scores: PeerScores) -> tuple[Peer, ...]:
    """The registry's peers with their *effective* status (what a receiver
    passes to ``MessageVerifier.set_peers``, see docs/spec/federation.md)."""
    return tuple(replace(p, status=_worse(p.status, scores.status(p.did))) for p in registry.peers)


def effective_active_peers(registry: Registry, scores: PeerScores) -> tuple[Peer, ...]:
    """The registry's peers whose effective status is ``active`` (they count toward quorum)."""
    return tuple(p for p in effective_peers(registry, scores) if p.status == "active")
