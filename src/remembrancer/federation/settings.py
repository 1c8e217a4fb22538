"""The typed peer settings of node.yaml: ``witnessing`` and ``federation``.

::

    witnessing:
      peers:                      # witnesses asked to cosign this node's checkpoints
        - {url: "http://beta:8080/witness", vkey: "beta.example/witness+1a2b3c4d+BA..."}
      quorum: 1                   # cosignatures a checkpoint needs (default: every peer)
    federation:
      file: federation.yaml       # the registry (federation.registry parses it)
      did: did:vm:node:alpha      # this node's DID in it (default: its did:key)
      heartbeat_seconds: 2
      antientropy_seconds: 5
      budget:                     # what peers may cost this node (docs/operations.md)
        evidence_bytes: {rfc3161: 32768, eip155: 8192, btc: 32768}
        unverified_claims_per_peer_log: 16
        unverified_bytes_per_peer_log: 262144
        anchors_per_epoch: 2

Strict models (:mod:`remembrancer.configfile`), each default in one place;
the registry itself (``federation.yaml``) keeps its own strict parser, which
also reads registry records from the wire (docs/adr/0011).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from remembrancer.configfile import (
    ConfigPath,
    DefaultText,
    Expect,
    HttpUrl,
    NullIsEmpty,
    NullIsEmptyList,
    Settings,
    invalid,
)
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.errors import RemembrancerError

# The registry's DID syntax (W3C: did:<method>:<method-specific id>).
_DID = re.compile(r"did:[a-z0-9]+:(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2}|:)*[A-Za-z0-9._-]")
MAX_DID_CHARS = 512
Interval = Annotated[float, Field(ge=0.1, le=3600)]


def _cosigner_vkey(value: Any) -> str:
    expected = "a cosignature/v1 vkey (<name>+<key id>+<key>)"
    if type(value) is not str:
        raise invalid(expected, code="vkey_invalid")
    try:
        parse_cosigner_vkey(value)
    except RemembrancerError as e:
        raise invalid(f"a cosignature/v1 vkey ({e.message})", code="vkey_invalid") from None
    except (ValueError, UnicodeError):
        raise invalid(expected, code="vkey_invalid") from None
    return value


def _did(value: Any) -> str:
    if type(value) is not str or len(value) > MAX_DID_CHARS or not _DID.fullmatch(value):
        raise invalid("a DID (did:<method>:<id>)")
    return value


CosignerVkey = Annotated[
    str, Expect("a cosignature/v1 vkey (<name>+<key id>+<key>)"), BeforeValidator(_cosigner_vkey)
]


class WitnessPeerSettings(Settings):
    """``witnessing.peers[]``: a witness this node asks for cosignatures."""

    url: HttpUrl  # the witness's submission prefix, e.g. http://beta:8080/witness
    vkey: CosignerVkey


class WitnessingSettings(Settings):
    """``witnessing``: the peers that cosign this node's checkpoints."""

    peers: Annotated[
        tuple[WitnessPeerSettings, ...], Expect("a list of peers {url, vkey}"), NullIsEmptyList,
        Field(strict=False),
    ] = ()  # fmt: skip
    quorum: Annotated[
        int, Expect("an integer from 0 to the number of peers"), DefaultText("every peer")
    ] | None = None  # fmt: skip

    @field_validator("quorum", mode="after")
    @classmethod
    def _reachable(cls, value: int | None, info: ValidationInfo) -> int | None:
        peers = info.data.get("peers", ())
        if value is not None and not 0 <= value <= len(peers):
            raise invalid(f"an integer from 0 to {len(peers)} (the number of peers)")
        return value


class EvidenceBytesSettings(Settings):
    """``federation.budget.evidence_bytes``: the largest anchor ``evidence`` per rail."""

    rfc3161: Annotated[int, Field(ge=1024, le=1 << 20)] = 32 * 1024
    eip155: Annotated[int, Field(ge=1024, le=1 << 20)] = 8 * 1024
    btc: Annotated[int, Field(ge=1024, le=1 << 20)] = 32 * 1024


class BudgetSettings(Settings):
    """``federation.budget``: what a peer may cost this node (docs/operations.md,
    "Resource budget: storage and anchoring")."""

    evidence_bytes: Annotated[EvidenceBytesSettings, NullIsEmpty] = Field(
        default_factory=EvidenceBytesSettings
    )
    unverified_claims_per_peer_log: Annotated[int, Field(ge=1, le=10_000)] = 16
    unverified_bytes_per_peer_log: Annotated[int, Field(ge=1024, le=1 << 30)] = 256 * 1024
    anchors_per_epoch: Annotated[int, Field(ge=1, le=1000)] = 2


class FederationSettings(Settings):
    """``federation``: the registry file and this node's place in it."""

    file: ConfigPath
    did: Annotated[
        str, Expect("a DID (did:<method>:<id>)"), DefaultText("the node key's did:key"),
        BeforeValidator(_did),
    ] | None = None  # fmt: skip
    heartbeat_seconds: Interval = 2.0
    antientropy_seconds: Interval = 5.0
    budget: Annotated[BudgetSettings, NullIsEmpty] = Field(default_factory=BudgetSettings)
