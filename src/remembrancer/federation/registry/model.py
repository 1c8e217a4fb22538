"""The federation's peers and registry as values: :class:`Peer`, :class:`Registry`, :class:`StatusChange`.

Invariants (checked at construction, so no invalid value exists): a
registry has 1 to :data:`MAX_PEERS` peers kept sorted by DID, no two peers
share a DID or an Ed25519 key, ``quorum >= 1``, a known anchor strategy and
an epoch length from 1 to 86400 seconds.  ``pubkey`` is the peer's Ed25519
node key; :meth:`Registry.to_dict` always writes it as a ``did:key`` and
peers sorted by DID, so one registry has one canonical form and one
:meth:`Registry.digest`.  Acceptance always checks keys, never aliases:
:meth:`Registry.peer_by_key` is how a signature is mapped to a peer.

``anchor_propagation.epoch_seconds`` (default 60) is the length of a
collaborative-anchoring epoch (:mod:`remembrancer.core.aggregation`); it
lives in the registry because every node must use the same one, and
:meth:`Registry.to_dict` writes it only when it is not the default, so
registries that never set it keep their digest.

Parsing plain data (``federation.yaml``, record payloads) is in
:mod:`remembrancer.federation.registry.parse`; :meth:`Registry.from_dict`
and :meth:`Registry.from_record_payload` call it.  Pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias, cast

from remembrancer.core.aggregation import DEFAULT_EPOCH_SECONDS, MAX_EPOCH_SECONDS
from remembrancer.core.errors import FormatError, NotFoundError
from remembrancer.core.identifiers import FEDERATION_ID_RE, MAX_DID_CHARS
from remembrancer.core.jcs import canonicalize, sha256_hex
from remembrancer.core.keys import PublicKey, public_from_did_key

__all__ = ["ROLES", "STATUSES", "STRATEGIES", "Peer", "Registry", "StatusChange"]


PeerStatus: TypeAlias = Literal["active", "probation", "suspended"]
ChangeStatus: TypeAlias = Literal["active", "probation", "suspended", "absent"]
Role: TypeAlias = Literal["witness", "anchor", "countersign", "relay", "coordinator"]
AnchorStrategy: TypeAlias = Literal["independent", "collaborative", "hybrid"]

STATUSES: Final[tuple[PeerStatus, ...]] = ("active", "probation", "suspended")
ROLES: Final[tuple[Role, ...]] = ("witness", "anchor", "countersign", "relay", "coordinator")
STRATEGIES: Final[tuple[AnchorStrategy, ...]] = ("independent", "collaborative", "hybrid")


MAX_PEERS: Final = 256


MAX_MEMO_CHARS: Final = 280


REGION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
REGION_RE: Final = re.compile(REGION_PATTERN)
"""A region or jurisdiction label: ``eu-west``, ``us:ca``, ``CH`` (compared exactly)."""


_SEVERITY: Final[dict[str, int]] = {"active": 0, "probation": 1, "suspended": 2}


@dataclass(frozen=True, slots=True)
class Peer:
    """One federation member: its DID (alias or did:key), endpoint, key, status, roles."""

    did: str
    endpoint: str
    pubkey: PublicKey
    status: PeerStatus
    roles: frozenset[Role]
    region: str | None = None  # where it runs (a region or jurisdiction), as the registry says

    def __post_init__(self) -> None:
        if not isinstance(self.pubkey, PublicKey):
            raise FormatError("a peer's pubkey is a PublicKey", code="peer_pubkey_invalid")
        if self.region is not None and not (
            isinstance(self.region, str) and REGION_RE.fullmatch(self.region)
        ):
            raise FormatError(f"bad region {self.region!r}", code="peer_region_invalid")
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
            **({} if self.region is None else {"region": self.region}),
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
    receipt_regions: int = 0  # distinct regions a federation receipt needs besides the quorum
    _by_did: dict[str, Peer] = field(init=False, repr=False, compare=False)
    _by_key: dict[bytes, Peer] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.federation_id, str) or not FEDERATION_ID_RE.fullmatch(
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
        if type(self.receipt_regions) is not int or not 0 <= self.receipt_regions <= MAX_PEERS:
            raise FormatError(
                f"receipts.min_regions is an integer from 0 to {MAX_PEERS}",
                code="receipt_regions_invalid",
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

    def active_regions(self) -> frozenset[str]:
        """The distinct regions of the active peers (what ``receipt_regions`` can reach)."""
        return frozenset(p.region for p in self.peers if p.status == "active" and p.region)

    def regions(self) -> dict[str, str | None]:
        """Each peer's DID -> its registry region (None: it declares none)."""
        return {p.did: p.region for p in self.peers}

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
        if self.receipt_regions:
            out["receipts"] = {"min_regions": self.receipt_regions}
        return out

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<federation>") -> Registry:
        """Validate a ``federation.yaml`` document.

        Raises ConfigError whose message starts ``<source>: <key>:`` and whose
        ``details`` hold ``file`` and ``key``.  Codes: ``config_invalid``,
        ``config_key_unknown``, ``config_version_unsupported``,
        ``federation_id_invalid``, ``quorum_invalid``, ``quorum_unreachable``,
        ``receipt_regions_invalid``, ``receipt_regions_unreachable``, ``peer_region_invalid``,
        ``anchor_strategy_invalid``, ``anchor_strategy_conflict``,
        ``anchor_epoch_invalid``, ``peers_invalid``, ``peer_invalid``, ``peer_did_invalid``,
        ``peer_did_duplicate``, ``peer_endpoint_invalid``,
        ``peer_pubkey_invalid``, ``peer_pubkey_missing``,
        ``peer_pubkey_mismatch``, ``peer_pubkey_duplicate``,
        ``peer_status_invalid``, ``peer_roles_invalid``, ``peer_role_duplicate``.
        """
        from remembrancer.federation.registry.parse import registry_from_config

        return registry_from_config(doc, source)

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
        if self.receipt_regions:
            payload["registry"]["receipts"] = {"min_regions": self.receipt_regions}
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
        from remembrancer.federation.registry.parse import registry_from_payload

        return registry_from_payload(payload, source)[0]

    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical JSON of :meth:`to_dict`: this version's identity."""
        return sha256_hex(canonicalize(self.to_dict()))


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


def worse_status(a: str, b: str) -> PeerStatus:
    return cast(PeerStatus, a if _SEVERITY[a] >= _SEVERITY[b] else b)
