"""Strict validation of ``federation.yaml`` and ``federation.registry.set`` payloads.

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
        region: eu-west                 # optional: a region or jurisdiction label
    receipts:                           # optional: the federation's receipt policy
      min_regions: 2                    # distinct peer regions a receipt needs (default 0)

The seed's template wrote the strategy as ``anchor_propagation: {mode:
collaborative, retry_strategy: geometric-backoff}``; that spelling is read
too (it must agree with ``anchor_strategy`` when both are present).
``anchor_propagation.epoch_seconds`` is an integer from 1 to 86400 (default 60).
``receipts.min_regions`` (default 0) is how many distinct ``region`` labels
the countersigners of a federation receipt must span, besides the quorum
(the seed's "geo-redundant proofs", docs/federation.md); ``federation.yaml``
refuses a value its active peers cannot reach (``receipt_regions_unreachable``).

Keys.  ``pubkey`` is given as a ``did:key`` or as canonical standard base64
of its 32 bytes.  It is required when ``did`` is an alias; when ``did`` is
itself a ``did:key`` it may be left out, and when both are present they must
be the same key (``peer_pubkey_mismatch``).

Every failure names the file or record and the key at fault: ConfigError
for ``federation.yaml``, FormatError for a record payload.  Unknown keys
are refused.  Pure except :func:`load_federation_file` (one bounded read).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

from remembrancer.configfile import read_yaml
from remembrancer.core.aggregation import DEFAULT_EPOCH_SECONDS, MAX_EPOCH_SECONDS
from remembrancer.core.errors import ConfigError, FormatError
from remembrancer.core.identifiers import FEDERATION_ID_PATTERN, FEDERATION_ID_RE, is_did
from remembrancer.core.keys import PUBLIC_KEY_SIZE, PublicKey, public_from_did_key
from remembrancer.federation.registry.model import (
    MAX_MEMO_CHARS,
    MAX_PEERS,
    REGION_PATTERN,
    REGION_RE,
    ROLES,
    STATUSES,
    STRATEGIES,
    AnchorStrategy,
    Peer,
    PeerStatus,
    Registry,
    Role,
)

__all__ = ["load_federation_file", "registry_from_config", "registry_from_payload"]


MAX_CONFIG_BYTES: Final = 1 << 20


MAX_ENDPOINT_CHARS: Final = 512


_TOP_KEYS: Final = frozenset(
    {"version", "federation_id", "quorum", "anchor_strategy", "anchor_propagation", "peers",
     "receipts"}
)  # fmt: skip
_PEER_KEYS: Final = frozenset({"did", "endpoint", "pubkey", "status", "roles", "region"})


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
    if not is_did(value):
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
    region = value.get("region")
    if region is not None and (not isinstance(region, str) or not REGION_RE.fullmatch(region)):
        raise _Invalid(
            _at(key, "region"),
            f"{region!r} must match {REGION_PATTERN} (a region or jurisdiction label)",
            "peer_region_invalid",
        )
    return Peer(did, endpoint, pubkey, cast(PeerStatus, status), frozenset(roles), region)


def _registry(
    federation_id: Any,
    body: Mapping[str, Any],
    prefix: str,
    *,
    default_status: bool,
    reachable_quorum: bool,
) -> Registry:
    if not isinstance(federation_id, str) or not FEDERATION_ID_RE.fullmatch(federation_id):
        raise _Invalid(
            "federation_id",
            f"{federation_id!r} must match {FEDERATION_ID_PATTERN}",
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
    min_regions = _min_regions(body.get("receipts"), _at(prefix, "receipts"))
    if reachable_quorum and min_regions:
        regions = {p.region for p in peers if p.status == "active" and p.region}
        if min_regions > len(regions):
            raise _Invalid(
                _at(prefix, "receipts.min_regions"),
                f"is {min_regions} but the active peers span only {len(regions)} regions,"
                " so no receipt could ever be final",
                "receipt_regions_unreachable",
            )
    return Registry(
        federation_id, quorum, cast(AnchorStrategy, strategy), tuple(peers), epoch, min_regions
    )


def _min_regions(policy: Any, key: str) -> int:
    if policy is None:
        return 0
    if not isinstance(policy, Mapping) or set(policy) != {"min_regions"}:
        raise _Invalid(key, "holds exactly min_regions", "receipt_regions_invalid")
    value = policy["min_regions"]
    if type(value) is not int or not 0 <= value <= MAX_PEERS:
        raise _Invalid(
            f"{key}.min_regions", f"must be an integer from 0 to {MAX_PEERS}",
            "receipt_regions_invalid",
        )  # fmt: skip
    return value


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
        if k not in ("peers", "quorum", "anchor_strategy", "anchor_propagation", "receipts")
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


def registry_from_config(doc: Any, source: str) -> Registry:
    """A ``federation.yaml`` document as a Registry (ConfigError naming ``source`` and the key)."""
    try:
        return _parse_config(doc)
    except _Invalid as e:
        where = f"{source}: {e.key}" if e.key else source
        raise ConfigError(
            f"{where}: {e.message}", code=e.code, details={"file": source, "key": e.key}
        ) from None


def registry_from_payload(payload: Any, source: str) -> tuple[Registry, str | None]:
    """A ``federation.registry.set`` payload as (registry, memo) (FormatError naming the key)."""
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
