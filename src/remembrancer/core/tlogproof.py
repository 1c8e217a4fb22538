"""Offline inclusion proofs, ``c2sp.org/tlog-proof@v1`` (https://c2sp.org/tlog-proof).

A proof file (extension ``.tlog-proof``)::

    c2sp.org/tlog-proof@v1
    extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6
    index 73894
    gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
    B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=

    example.com/fancylog
    109482
    sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

    — example.com/fancylog hI2DJw...
    — witness1.example mJirIklj...

1. the header line ``c2sp.org/tlog-proof@v1``;
2. optionally ``extra <base64>``: opaque, unauthenticated data (never
   trusted; an empty ``extra`` line is refused, the spec says to omit it);
3. ``index <decimal>``: zero-based leaf index, no leading zeros;
4. zero or more base64 SHA-256 hashes, the RFC 6962 inclusion proof from
   the leaf's sibling up to the root's child;
5. an empty line, then the checkpoint note verbatim (its signatures and
   cosignatures included).

Limits: a proof file is at most :data:`MAX_TLOG_PROOF_BYTES` (the 1 MiB note
limit plus room for the rest), holds at most :data:`MAX_PROOF_HASHES` (64)
hashes and at most :data:`MAX_EXTRA_BYTES` (64 KiB) of extra data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from remembrancer.core.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    open_checkpoint,
    parse_decimal,
    require_cosigners,
)
from remembrancer.core.cosignature import Cosignature, CosignatureVerifier
from remembrancer.core.encoding import decode_base64, encode_base64
from remembrancer.core.errors import FormatError
from remembrancer.core.note import MAX_NOTE_BYTES, Note, NoteVerifier
from remembrancer.core.rfc6962 import HASH_SIZE, MAX_TREE_SIZE, hash_leaf, verify_inclusion

__all__ = [
    "HEADER",
    "MAX_EXTRA_BYTES",
    "MAX_PROOF_HASHES",
    "MAX_TLOG_PROOF_BYTES",
    "TlogProof",
    "VerifiedProof",
    "verify_tlog_proof",
]

HEADER: Final = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES: Final = 64
MAX_EXTRA_BYTES: Final = 64 * 1024
MAX_TLOG_PROOF_BYTES: Final = MAX_NOTE_BYTES + 128 * 1024


@dataclass(frozen=True, slots=True)
class TlogProof:
    """A parsed ``c2sp.org/tlog-proof@v1`` file.

    ``extra`` is ``None`` when the file has no extra line.  Construction
    checks that the checkpoint note and its body are well formed, so
    :meth:`to_bytes` always yields a file that :meth:`parse` accepts.
    """

    index: int
    proof_hashes: tuple[bytes, ...]
    checkpoint_note: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise FormatError("the leaf index is an int", code="tlog_proof_index_invalid")
        if not 0 <= self.index < MAX_TREE_SIZE:
            raise FormatError(
                "the leaf index is between 0 and 2^64 - 2", code="tlog_proof_index_invalid"
            )
        hashes = tuple(self.proof_hashes)
        if len(hashes) > MAX_PROOF_HASHES:
            raise FormatError(
                f"an inclusion proof has at most {MAX_PROOF_HASHES} hashes",
                code="tlog_proof_too_long",
            )
        for h in hashes:
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                raise FormatError("a proof hash is 32 bytes", code="tlog_proof_hash_invalid")
        object.__setattr__(self, "proof_hashes", hashes)
        if self.extra is not None:
            if not isinstance(self.extra, bytes) or not self.extra:
                raise FormatError(
                    "extra data is non-empty bytes, or None when absent",
                    code="tlog_proof_extra_invalid",
                )
            if len(self.extra) > MAX_EXTRA_BYTES:
                raise FormatError(
                    f"extra data is at most {MAX_EXTRA_BYTES} bytes",
                    code="tlog_proof_extra_invalid",
                )
        if not isinstance(self.checkpoint_note, bytes):
            raise FormatError("the checkpoint note is bytes", code="tlog_proof_malformed")
        Checkpoint.parse(Note.from_bytes(self.checkpoint_note).text)

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint the proof claims (unverified: use :func:`verify_tlog_proof`)."""
        return Checkpoint.parse(Note.from_bytes(self.checkpoint_note).text)

    def to_bytes(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {encode_base64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(encode_base64(h) for h in self.proof_hashes)
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.checkpoint_note

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        """Parse a proof file strictly; any deviation is a FormatError.

        Codes: ``tlog_proof_too_large``, ``tlog_proof_malformed``,
        ``tlog_proof_header``, ``tlog_proof_extra_invalid``,
        ``tlog_proof_index_invalid``, ``tlog_proof_hash_invalid``,
        ``tlog_proof_too_long``, and the note and checkpoint codes for the
        embedded checkpoint.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError("a tlog-proof is bytes", code="tlog_proof_malformed")
        data = bytes(data)
        if len(data) > MAX_TLOG_PROOF_BYTES:
            raise FormatError(
                f"a tlog-proof is at most {MAX_TLOG_PROOF_BYTES} bytes",
                code="tlog_proof_too_large",
            )
        split = data.find(b"\n\n")
        if split < 0:
            raise FormatError(
                "a tlog-proof has an empty line before its checkpoint", code="tlog_proof_malformed"
            )
        try:
            head = data[:split].decode("ascii")
        except UnicodeDecodeError as e:
            raise FormatError("the proof lines are ASCII", code="tlog_proof_malformed") from e
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise FormatError(
                f"a tlog-proof starts with the line {HEADER!r}", code="tlog_proof_header"
            )
        pos = 1
        extra: bytes | None = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = decode_base64(
                lines[pos][len("extra ") :], what="the extra data", code="tlog_proof_extra_invalid"
            )
            if not extra:
                raise FormatError(
                    "an extra line must carry data; omit it when there is none",
                    code="tlog_proof_extra_invalid",
                )
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise FormatError(
                "a tlog-proof has an 'index <n>' line", code="tlog_proof_index_invalid"
            )
        index = parse_decimal(
            lines[pos][len("index ") :],
            what="the leaf index",
            code="tlog_proof_index_invalid",
            maximum=MAX_TREE_SIZE - 1,
        )
        hash_lines = lines[pos + 1 :]
        if len(hash_lines) > MAX_PROOF_HASHES:
            raise FormatError(
                f"an inclusion proof has at most {MAX_PROOF_HASHES} hashes",
                code="tlog_proof_too_long",
            )
        hashes = []
        for line in hash_lines:
            h = decode_base64(line, what="a proof hash", code="tlog_proof_hash_invalid")
            if len(h) != HASH_SIZE:
                raise FormatError("a proof hash is 32 bytes", code="tlog_proof_hash_invalid")
            hashes.append(h)
        return cls(index, tuple(hashes), data[split + 2 :], extra)


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """What a verified tlog-proof establishes.

    ``cosigners`` holds one verified cosignature per distinct witness public
    key (the first in note order).  ``extra`` is carried over unauthenticated.
    """

    index: int
    leaf_hash: bytes
    checkpoint: Checkpoint
    signed_checkpoint: SignedCheckpoint
    cosigners: tuple[Cosignature, ...]
    extra: bytes | None


def verify_tlog_proof(
    proof: TlogProof,
    leaf_bytes: bytes,
    log_verifier: NoteVerifier,
    cosigner_verifiers: Sequence[CosignatureVerifier] = (),
    min_cosigners: int = 0,
) -> VerifiedProof:
    """Verify a tlog-proof for ``leaf_bytes`` offline.

    Checks, in order: the checkpoint note's log signature and known
    cosignatures (:func:`~remembrancer.core.checkpoint.open_checkpoint`), that
    at least ``min_cosigners`` distinct witness keys cosigned (a key listed
    under two names, or the log's own key, counts at most once / not at all:
    ``cosigner_quorum_not_met``), then the RFC 6962 inclusion of
    ``hash_leaf(leaf_bytes)`` at ``proof.index`` under the checkpoint's root.
    Raises VerificationError on any failure.
    """
    if isinstance(min_cosigners, bool) or not isinstance(min_cosigners, int) or min_cosigners < 0:
        raise FormatError("min_cosigners is a non-negative int", code="min_cosigners_invalid")
    signed = open_checkpoint(proof.checkpoint_note, log_verifier, cosigner_verifiers)
    counted = require_cosigners(signed, getattr(log_verifier, "public_key", None), min_cosigners)
    checkpoint = signed.checkpoint
    leaf_hash = hash_leaf(bytes(leaf_bytes))
    verify_inclusion(
        proof.index, checkpoint.size, leaf_hash, proof.proof_hashes, checkpoint.root_hash
    )
    return VerifiedProof(
        index=proof.index,
        leaf_hash=leaf_hash,
        checkpoint=checkpoint,
        signed_checkpoint=signed,
        cosigners=counted,
        extra=proof.extra,
    )
