"""OpenTimestamps proofs: strict parsing and the attestations they carry.

:func:`parse_ots` takes a detached ``.ots`` proof under a size cap, with no
trailing bytes (``ots_too_large``, ``ots_truncated``, ``ots_unsupported``,
``ots_malformed``); :func:`ots_attestations` lists its Bitcoin block-header
attestations (height and the Merkle root the proof reaches) and its pending
calendar promises.  :func:`url_allowed` decides which calendars a pending
attestation may send this node to.  Pure; opentimestamps is imported lazily.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from remembrancer.anchoring.btc.headers import proof_error
from remembrancer.anchoring.settings import DEFAULT_MAX_OTS_BYTES

OTS_ACCEPT = "application/vnd.opentimestamps.v1"


def parse_ots(data: bytes, *, max_bytes: int = DEFAULT_MAX_OTS_BYTES) -> Any:
    """Parse a detached ``.ots`` proof strictly (no trailing bytes); raise
    VerificationError ``ots_too_large``, ``ots_truncated``, ``ots_unsupported``
    or ``ots_malformed``.  Returns an opentimestamps ``DetachedTimestampFile``."""
    if len(data) > max_bytes:
        raise proof_error(
            f".ots proof is {len(data)} bytes, over the {max_bytes}-byte cap",
            "ots_too_large",
            size=len(data),
            limit=max_bytes,
        )
    from opentimestamps.core import serialize  # type: ignore[import-untyped]
    from opentimestamps.core.timestamp import DetachedTimestampFile  # type: ignore[import-untyped]

    magic: bytes = DetachedTimestampFile.HEADER_MAGIC
    try:
        return DetachedTimestampFile.deserialize(serialize.BytesDeserializationContext(data))
    except serialize.BadMagicError as e:
        if len(data) < len(magic) and magic.startswith(data):
            raise proof_error(".ots proof is truncated", "ots_truncated") from e
        raise proof_error("not an OpenTimestamps proof (bad magic)", "ots_malformed") from e
    except serialize.TruncationError as e:
        raise proof_error(f".ots proof is truncated: {e}", "ots_truncated") from e
    except serialize.UnsupportedMajorVersion as e:
        raise proof_error(f"unsupported .ots proof: {e}", "ots_unsupported") from e
    except RecursionError as e:
        raise proof_error(".ots proof nests too deeply", "ots_malformed") from e
    except Exception as e:  # the library raises many types on garbage
        raise proof_error(f"malformed .ots proof: {type(e).__name__}: {e}", "ots_malformed") from e


def serialize_ots(dtf: Any) -> bytes:
    from opentimestamps.core.serialize import BytesSerializationContext  # type: ignore[import-untyped]

    ctx = BytesSerializationContext()
    dtf.serialize(ctx)
    data: bytes = ctx.getbytes()
    return data


def walk_stamps(root: Any) -> Iterator[Any]:
    """Every Timestamp node below ``root`` (iterative: proofs may be deep)."""
    stack = [root]
    while stack:
        stamp = stack.pop()
        yield stamp
        stack.extend(stamp.ops.values())


def has_bitcoin_below(stamp: Any) -> bool:
    from opentimestamps.core.notary import BitcoinBlockHeaderAttestation  # type: ignore[import-untyped]

    return any(
        isinstance(att, BitcoinBlockHeaderAttestation)
        for node in walk_stamps(stamp)
        for att in node.attestations
    )


@dataclass(frozen=True, slots=True)
class OtsAttestations:
    bitcoin: tuple[tuple[int, bytes], ...]  # (height, message: the expected Merkle root)
    pending: tuple[str, ...]  # calendar URIs


def ots_attestations(dtf: Any) -> OtsAttestations:
    from opentimestamps.core.notary import (
        BitcoinBlockHeaderAttestation,
        PendingAttestation,
    )

    bitcoin: set[tuple[int, bytes]] = set()
    pending: set[str] = set()
    for stamp in walk_stamps(dtf.timestamp):
        for att in stamp.attestations:
            if isinstance(att, BitcoinBlockHeaderAttestation):
                bitcoin.add((int(att.height), bytes(stamp.msg)))
            elif isinstance(att, PendingAttestation):
                pending.add(str(att.uri))
    return OtsAttestations(tuple(sorted(bitcoin)), tuple(sorted(pending)))


def url_allowed(url: str, configured: Sequence[str], whitelist: Sequence[str]) -> bool:
    from fnmatch import fnmatch

    if url.rstrip("/") in {c.rstrip("/") for c in configured}:
        return True
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        return False
    for pattern in whitelist:
        allowed = urllib.parse.urlsplit(pattern)
        if (
            parts.scheme == allowed.scheme
            and parts.path.rstrip("/") == allowed.path.rstrip("/")
            and fnmatch(parts.netloc, allowed.netloc)
        ):
            return True
    return False
