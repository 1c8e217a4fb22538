"""The values of anti-entropy: which logs a node replicates and their verified heads.

:class:`ReplicaSpec` names a log (its origin and vkeys, whether to mirror
its entries) and verifies a checkpoint note against those keys only;
:class:`ReplicaHead` is the latest checkpoint that verified and extended the
one before.  The store scopes and the ``replica/<origin>`` log prefix are
fixed here (the mirror's entries and tiles; never a namespace name, those
have no ``/``).  Pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from remembrancer.core.checkpoint import SignedCheckpoint, open_checkpoint
from remembrancer.core.errors import RemembrancerError, VerificationError
from remembrancer.core.identifiers import NAMESPACE_RE
from remembrancer.core.note import parse_vkey

__all__ = [
    "ANCHOR_SCOPE",
    "MIRROR_PREFIX",
    "REPLICA_SCOPE",
    "UNVERIFIED_SCOPE",
    "ReplicaHead",
    "ReplicaSpec",
]


REPLICA_SCOPE: Final = "replicas"
"""Store state scope of replica heads: origin -> JSON :class:`ReplicaHead`."""
ANCHOR_SCOPE: Final = "replica-anchors"
"""Store state scope of anchor claims: ``<origin>/<size, 20 digits>`` -> JSON."""
UNVERIFIED_SCOPE: Final = "replica-anchors-unverified"
"""Store state scope indexing the anchor claims nobody verified here, per
(peer, log): ``<origin>|<sender DID>|<size, 20 digits>`` -> JSON
``{"bytes": n}`` (the storage budget, docs/operations.md)."""
MIRROR_PREFIX: Final = "replica/"
"""A mirrored log's entries and tiles are the store log ``replica/<origin>``
(never a namespace name: those have no ``/``)."""


def namespace_of(origin: str) -> str | None:
    """The namespace of a Remembrancer log origin (``<prefix>/<namespace>``), if it has one."""
    ns = origin.rsplit("/", 1)[-1]
    return ns if NAMESPACE_RE.match(ns) else None


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """A log this node replicates: its origin, its vkeys, whether to mirror its entries."""

    origin: str
    vkeys: tuple[str, ...]
    mirror: bool = False

    @property
    def namespace(self) -> str | None:
        return namespace_of(self.origin)

    def open(self, note: bytes) -> tuple[SignedCheckpoint, str]:
        """Verify a checkpoint note with one of the log's keys; the checkpoint and that vkey.

        VerificationError ``replica_checkpoint_invalid`` (no key of the log
        signed it) or ``replica_origin_mismatch``; FormatError for a note that
        does not parse."""
        last: RemembrancerError | None = None
        for vkey in self.vkeys:
            try:
                signed = open_checkpoint(note, parse_vkey(vkey))
            except VerificationError as e:
                last = e
                continue
            if signed.checkpoint.origin != self.origin:
                raise VerificationError(
                    f"the checkpoint is for {signed.checkpoint.origin!r}, not {self.origin!r}",
                    code="replica_origin_mismatch",
                )
            return signed, vkey
        raise VerificationError(
            f"the checkpoint is not signed by the key of {self.origin}"
            + (f" ({last.code})" if last else ""),
            code="replica_checkpoint_invalid",
            details={"origin": self.origin},
        )


@dataclass(frozen=True, slots=True)
class ReplicaHead:
    """The latest verified checkpoint of a replica."""

    origin: str
    size: int
    root: bytes
    note: bytes
    at: int  # when this node accepted it
    source: str  # where it came from (for status)

    def to_bytes(self) -> bytes:
        return json.dumps({"origin": self.origin, "size": self.size, "root": self.root.hex(),
                           "note": self.note.decode("utf-8"), "at": self.at,
                           "source": self.source}).encode()  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes) -> ReplicaHead:
        d = json.loads(raw)
        return cls(str(d["origin"]), int(d["size"]), bytes.fromhex(d["root"]),
                   str(d["note"]).encode("utf-8"), int(d["at"]), str(d["source"]))  # fmt: skip
