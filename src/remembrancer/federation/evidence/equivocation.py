"""Equivocation evidence: two signed checkpoints of one origin that cannot both be true.

The file (``.equivocation``)::

    remembrancer.equivocation/v1
    origin alpha.example.org/dao:vaultmesh
    vkey alpha.example.org/dao:vaultmesh+3c1a77f0+AR2y...
    note-a <base64 of checkpoint note A, verbatim, cosignatures included>
    note-b <base64 of checkpoint note B>
    prefix <base64 of a 32-byte hash>        only when the sizes differ
    proof <base64 of a 32-byte hash>         zero or more, only after prefix

Lines end with ``\\n``, nothing follows the last one, base64 is canonical
standard base64 with padding.  A (size, root) is at most B's: the notes
are in ascending (size, root hash) order, so one pair has one file.
Limits: :data:`MAX_EQUIVOCATION_BYTES` (512 KiB), notes of at most
:data:`MAX_EVIDENCE_NOTE_BYTES` (128 KiB), at most 128 proof lines.
:func:`verify_equivocation` re-derives the fork from the file alone (the
rules are in the package docstring).  Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from remembrancer.core.checkpoint import Checkpoint, open_checkpoint
from remembrancer.core.encoding import decode_base64, encode_base64
from remembrancer.core.errors import FormatError, NotFoundError, VerificationError
from remembrancer.core.jcs import sha256_hex
from remembrancer.core.keys import PublicKey
from remembrancer.core.note import Note, Verifier, check_key_name, parse_vkey
from remembrancer.core.rfc6962 import (
    EMPTY_ROOT,
    HASH_SIZE,
    NodeReader,
    consistency_proof,
    root_hash,
    verify_consistency,
)

__all__ = [
    "EQUIVOCATION_HEADER",
    "MAX_EQUIVOCATION_BYTES",
    "MAX_EVIDENCE_NOTE_BYTES",
    "EquivocationEvidence",
    "EquivocationReport",
    "verify_equivocation",
]


EQUIVOCATION_HEADER: Final = "remembrancer.equivocation/v1"
MAX_EQUIVOCATION_BYTES: Final = 512 * 1024
MAX_EVIDENCE_NOTE_BYTES: Final = 128 * 1024
MAX_EQUIVOCATION_PROOF: Final = 128


_LINE_CONTROL: Final = re.compile("[\x00-\x09\x0b-\x1f]")  # as in signed notes


def _note_checkpoint(note: object, which: str) -> Checkpoint:
    if not isinstance(note, bytes):
        raise FormatError(f"note {which} is bytes", code="equivocation_note_malformed")
    if len(note) > MAX_EVIDENCE_NOTE_BYTES:
        raise FormatError(
            f"note {which} is larger than {MAX_EVIDENCE_NOTE_BYTES} bytes",
            code="equivocation_note_malformed",
            details={"note": which},
        )
    try:
        return Checkpoint.parse(Note.from_bytes(note).text)
    except FormatError as e:
        raise FormatError(
            f"note {which} is not a checkpoint note: {e.message}",
            code="equivocation_note_malformed",
            details={"note": which, "cause": e.code},
        ) from e


@dataclass(frozen=True, slots=True)
class EquivocationEvidence:
    """Two checkpoints of ``origin`` signed by ``log_vkey`` that cannot both be true.

    Construction checks the syntax (notes are checkpoint notes in ascending
    (size, root) order; ``prefix_root`` present exactly when the sizes
    differ), not the signatures: see :func:`verify_equivocation`.
    """

    origin: str
    log_vkey: str
    note_a: bytes
    note_b: bytes
    prefix_root: bytes | None = None
    proof: tuple[bytes, ...] = ()
    checkpoint_a: Checkpoint = field(init=False, repr=False, compare=False)
    checkpoint_b: Checkpoint = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_key_name(self.origin, code="equivocation_malformed")
        if not isinstance(self.log_vkey, str):
            raise FormatError("the vkey is a string", code="equivocation_vkey_invalid")
        try:
            parse_vkey(self.log_vkey)
        except FormatError as e:
            raise FormatError(
                f"the vkey is not an Ed25519 note vkey: {e.message}",
                code="equivocation_vkey_invalid",
                details={"cause": e.code},
            ) from e
        a = _note_checkpoint(self.note_a, "a")
        b = _note_checkpoint(self.note_b, "b")
        if (a.size, a.root_hash) > (b.size, b.root_hash):
            raise FormatError(
                "note a must be the smaller checkpoint (by size, then root hash)",
                code="equivocation_order",
            )
        proof = tuple(self.proof)
        if a.size == b.size:
            if self.prefix_root is not None or proof:
                raise FormatError(
                    "checkpoints of equal size take no prefix or proof",
                    code="equivocation_malformed",
                )
        else:
            if not isinstance(self.prefix_root, bytes) or len(self.prefix_root) != HASH_SIZE:
                raise FormatError(
                    "checkpoints of different sizes need a 32-byte prefix root",
                    code="equivocation_malformed",
                )
            if len(proof) > MAX_EQUIVOCATION_PROOF or any(
                not isinstance(h, bytes) or len(h) != HASH_SIZE for h in proof
            ):
                raise FormatError(
                    f"the proof is at most {MAX_EQUIVOCATION_PROOF} hashes of 32 bytes",
                    code="equivocation_malformed",
                )
        object.__setattr__(self, "proof", proof)
        object.__setattr__(self, "checkpoint_a", a)
        object.__setattr__(self, "checkpoint_b", b)

    def to_bytes(self) -> bytes:
        lines = [
            EQUIVOCATION_HEADER,
            f"origin {self.origin}",
            f"vkey {self.log_vkey}",
            f"note-a {encode_base64(self.note_a)}",
            f"note-b {encode_base64(self.note_b)}",
        ]
        if self.prefix_root is not None:
            lines.append(f"prefix {encode_base64(self.prefix_root)}")
        lines.extend(f"proof {encode_base64(h)}" for h in self.proof)
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> EquivocationEvidence:
        """Parse an equivocation file strictly (exact grammar, canonical base64, no trailing data).

        FormatError codes: ``equivocation_too_large``, ``equivocation_header``,
        ``equivocation_malformed``, ``equivocation_vkey_invalid``,
        ``equivocation_note_malformed``, ``equivocation_order``.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError("an equivocation file is bytes", code="equivocation_malformed")
        data = bytes(data)
        if len(data) > MAX_EQUIVOCATION_BYTES:
            raise FormatError(
                f"an equivocation file is at most {MAX_EQUIVOCATION_BYTES} bytes",
                code="equivocation_too_large",
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError("an equivocation file is UTF-8", code="equivocation_malformed") from e
        if not text.startswith(EQUIVOCATION_HEADER + "\n"):
            raise FormatError(
                f"the first line must be {EQUIVOCATION_HEADER}", code="equivocation_header"
            )
        if not text.endswith("\n") or _LINE_CONTROL.search(text):
            raise FormatError(
                "an equivocation file is newline-terminated lines without control characters",
                code="equivocation_malformed",
            )
        lines = text[:-1].split("\n")[1:]
        fields: list[tuple[str, str]] = []
        for line in lines:
            key, sep, value = line.partition(" ")
            if not sep or not value:
                raise FormatError(
                    f"line {line[:40]!r} is not '<keyword> <value>'", code="equivocation_malformed"
                )
            fields.append((key, value))
        want = ("origin", "vkey", "note-a", "note-b")
        if len(fields) < 4 or tuple(k for k, _ in fields[:4]) != want:
            raise FormatError(
                "the header is followed by origin, vkey, note-a and note-b lines, in that order",
                code="equivocation_malformed",
            )
        origin, vkey = fields[0][1], fields[1][1]
        note_a = decode_base64(fields[2][1], what="note a", code="equivocation_malformed")
        note_b = decode_base64(fields[3][1], what="note b", code="equivocation_malformed")
        rest = fields[4:]
        prefix: bytes | None = None
        if rest and rest[0][0] == "prefix":
            prefix = decode_base64(
                rest[0][1], what="the prefix root", code="equivocation_malformed"
            )
            rest = rest[1:]
        if len(rest) > MAX_EQUIVOCATION_PROOF:
            raise FormatError(
                f"at most {MAX_EQUIVOCATION_PROOF} proof lines", code="equivocation_malformed"
            )
        proof: list[bytes] = []
        for key, value in rest:
            if key != "proof" or prefix is None:
                raise FormatError(
                    f"unexpected {key!r} line: only proof lines follow a prefix line",
                    code="equivocation_malformed",
                )
            proof.append(decode_base64(value, what="a proof hash", code="equivocation_malformed"))
        evidence = cls(origin, vkey, note_a, note_b, prefix, tuple(proof))
        if evidence.to_bytes() != data:  # every byte is accounted for above
            raise FormatError(
                "the equivocation file is not in canonical form", code="equivocation_malformed"
            )
        return evidence

    @classmethod
    def build(
        cls,
        log_vkey: str,
        note_x: bytes,
        note_y: bytes,
        larger_tree: NodeReader | None = None,
    ) -> EquivocationEvidence:
        """Make verified evidence from two checkpoint notes of one log.

        For different sizes, ``larger_tree`` must hold the tree that the
        larger checkpoint commits to (its root at that size is checked): the
        prefix root and the consistency proof are computed from it.  Raises
        what :func:`verify_equivocation` raises when the result would not be
        conclusive (for instance ``equivocation_not_conflicting`` for two
        consistent checkpoints), VerificationError ``equivocation_tree_mismatch``
        when ``larger_tree`` is not B's tree, FormatError
        ``equivocation_tree_missing`` when it is needed and not given.
        """
        cx, cy = _note_checkpoint(note_x, "a"), _note_checkpoint(note_y, "b")
        (ca, na), (cb, nb) = sorted(
            [(cx, note_x), (cy, note_y)], key=lambda p: (p[0].size, p[0].root_hash)
        )
        prefix: bytes | None = None
        proof: tuple[bytes, ...] = ()
        if ca.size != cb.size:
            if larger_tree is None:
                raise FormatError(
                    "checkpoints of different sizes need the larger checkpoint's tree",
                    code="equivocation_tree_missing",
                )
            try:
                held = root_hash(cb.size, larger_tree)
            except NotFoundError as e:
                raise VerificationError(
                    f"the tree given does not reach size {cb.size}: {e.message}",
                    code="equivocation_tree_mismatch",
                ) from e
            if held != cb.root_hash:
                raise VerificationError(
                    f"the tree given is not the one checkpoint b commits to at size {cb.size}",
                    code="equivocation_tree_mismatch",
                )
            prefix = root_hash(ca.size, larger_tree)
            if ca.size:
                proof = tuple(consistency_proof(ca.size, cb.size, larger_tree))
        evidence = cls(ca.origin, log_vkey, na, nb, prefix, proof)
        verify_equivocation(evidence)
        return evidence

    @property
    def evidence_ref(self) -> str:
        """``sha256:<hex>`` of the file bytes."""
        return sha256_hex(self.to_bytes())

    @property
    def incident(self) -> str:
        """``sha256:<hex>`` naming the pair of checkpoint bodies (signatures and proof aside)."""
        body_a = Note.from_bytes(self.note_a).text.encode("utf-8")
        body_b = Note.from_bytes(self.note_b).text.encode("utf-8")
        return incident_ref("equivocation", body_a, body_b)


@dataclass(frozen=True, slots=True)
class EquivocationReport:
    """What a verified equivocation file proves.

    ``conflict`` is ``same_size`` (case i) or ``prefix_mismatch`` (case ii);
    ``log_key`` is the key that signed both (map it to a peer with
    ``Registry.peer_by_key``).
    """

    origin: str
    log_vkey: str
    log_key: PublicKey
    checkpoint_a: Checkpoint
    checkpoint_b: Checkpoint
    conflict: Literal["same_size", "prefix_mismatch"]
    prefix_root: bytes | None
    evidence_ref: str
    incident: str

    @property
    def kind(self) -> str:
        return "equivocation"

    def to_dict(self) -> dict[str, Any]:
        def cp(c: Checkpoint) -> dict[str, Any]:
            return {"size": c.size, "root": encode_base64(c.root_hash)}

        return {
            "kind": self.kind,
            "origin": self.origin,
            "log_key": self.log_key.did,
            "a": cp(self.checkpoint_a),
            "b": cp(self.checkpoint_b),
            "conflict": self.conflict,
            "prefix_root": None if self.prefix_root is None else encode_base64(self.prefix_root),
            "evidence_ref": self.evidence_ref,
            "incident": self.incident,
        }


def verify_equivocation(evidence: EquivocationEvidence) -> EquivocationReport:
    """Check an equivocation file offline; return what it proves or raise.

    VerificationError codes: ``equivocation_vkey_mismatch`` (the vkey is not
    named after the origin), ``equivocation_origin_mismatch`` (a note is for
    another origin), ``equivocation_note_unsigned`` (details ``note`` and
    ``cause``: the log key's signature on that note is missing or invalid),
    ``equivocation_not_conflicting`` (the two checkpoints are consistent, or
    identical), ``equivocation_proof_invalid`` (details ``cause``: the
    prefix proof does not verify against checkpoint b).
    """
    verifier: Verifier = parse_vkey(evidence.log_vkey)
    if verifier.name != evidence.origin:
        raise VerificationError(
            f"the vkey is named {verifier.name!r}, not after the origin {evidence.origin!r}",
            code="equivocation_vkey_mismatch",
        )
    for which, note, cp in (
        ("a", evidence.note_a, evidence.checkpoint_a),
        ("b", evidence.note_b, evidence.checkpoint_b),
    ):
        if cp.origin != evidence.origin:
            raise VerificationError(
                f"note {which} is a checkpoint of {cp.origin!r}, not {evidence.origin!r}",
                code="equivocation_origin_mismatch",
                details={"note": which},
            )
        try:
            open_checkpoint(note, verifier)
        except VerificationError as e:
            raise VerificationError(
                f"note {which} is not signed by the log key: {e.message}",
                code="equivocation_note_unsigned",
                details={"note": which, "cause": e.code},
            ) from e
    a, b = evidence.checkpoint_a, evidence.checkpoint_b
    conflict: Literal["same_size", "prefix_mismatch"]
    if a.size == b.size:
        if a.root_hash == b.root_hash:
            raise VerificationError(
                "both notes state the same checkpoint", code="equivocation_not_conflicting"
            )
        conflict = "same_size"
    else:
        prefix = evidence.prefix_root
        assert prefix is not None  # guaranteed by construction
        if a.size == 0:
            if prefix != EMPTY_ROOT or evidence.proof:
                raise VerificationError(
                    "the prefix of size 0 is the empty tree, with an empty proof",
                    code="equivocation_proof_invalid",
                    details={"cause": "empty_prefix_invalid"},
                )
        else:
            try:
                verify_consistency(a.size, b.size, prefix, b.root_hash, list(evidence.proof))
            except VerificationError as e:
                raise VerificationError(
                    f"the prefix proof does not verify against checkpoint b: {e.message}",
                    code="equivocation_proof_invalid",
                    details={"cause": e.code},
                ) from e
        if prefix == a.root_hash:
            raise VerificationError(
                f"checkpoint b's tree extends checkpoint a's: size {a.size} has the same root",
                code="equivocation_not_conflicting",
            )
        conflict = "prefix_mismatch"
    return EquivocationReport(
        origin=evidence.origin,
        log_vkey=evidence.log_vkey,
        log_key=verifier.public_key,
        checkpoint_a=a,
        checkpoint_b=b,
        conflict=conflict,
        prefix_root=evidence.prefix_root,
        evidence_ref=evidence.evidence_ref,
        incident=evidence.incident,
    )


def incident_ref(kind: str, *parts: bytes) -> str:
    data = kind.encode("ascii") + b"\n"
    for p in parts:
        data += len(p).to_bytes(4, "big") + p
    return sha256_hex(data)
