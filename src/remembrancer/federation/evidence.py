"""Misbehaviour evidence that anyone can re-check offline.

Three offences put a peer on probation at once (DESIGN.md 3.10).  Each has
an evidence format whose verification needs no trust in whoever holds it.

Equivocation (a split view)
---------------------------
Two checkpoints of one origin, both validly signed by the log's key, that
cannot both describe one append-only log.  The file (``.equivocation``)::

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

What makes it conclusive (:func:`verify_equivocation`): both notes are for
``origin``, the vkey is named ``origin`` and signs both, and either

(i) the sizes are equal and the root hashes differ: conclusive on its own; or
(ii) size a < size b, and ``prefix`` with ``proof`` form an RFC 6962
     consistency proof from ``(size a, prefix)`` to B's ``(size b, root b)``
     that verifies, while ``prefix`` differs from A's root.  A consistency
     proof that verifies shows (short of a SHA-256 collision) that
     ``prefix`` *is* the root of the first ``size a`` entries of the tree
     B commits to, so B's tree does not extend A's.  Anyone holding B's
     tiles (the log serves them; ``EquivocationEvidence.build`` takes any
     NodeReader such as ``TileTree`` or ``TileNodeReader``) can make this
     proof without the accused log's cooperation, and nobody can make it
     for two consistent checkpoints.  For size a = 0 the prefix is the
     empty tree's root and the proof is empty.

So a consistency proof that a log served and that fails is *not* evidence
by itself (it may be a bug or a corrupted transfer, and it is unsigned); the
holder computes the proof above from B's tiles instead, which either shows
the fork or shows there is none.

Invalid anchor claims (and why "forged countersignatures" prove nothing)
-----------------------------------------------------------------------
Evidence proves misbehaviour only through a statement the accused itself
signed that is false on its face (docs/spec/federation.md, "Evidence").
Equivocation (above) is one.  The other is a countersignature, or a
coordinator's signed aggregate claim, over an anchor that does not hold.
The evidence is a JSON object, signed by the reporting peer (RFC 8785 of
the object without ``signature``, Ed25519, unpadded base64url)::

    {
      "type": "remembrancer.evidence/v1",
      "kind": "invalid_anchor_claim" | "forged_countersignature",
      "federation_id": "vaultmesh-primary",
      "accused": "did:key:z6Mk…",               the accused peer's key
      "message": "<base64 of the exact bytes received>",
      "receipt_at": "/content/receipt",          RFC 6901 pointer to the receipt
      "countersigner": "did:key:z6Mk…",         the countersignature at issue
      "finding": "root_mismatch" | "rail_failed" | "signature_invalid",
      "reporter": "did:key:z6Mk…",
      "reported_at": 1764100000,
      "signature": "<base64url>"
    }

- ``invalid_anchor_claim``: ``message`` holds (at ``receipt_at``) a receipt
  that the accused itself countersigned, validly, although its claim is
  false: ``root_mismatch`` - the anchored root is not the SHA-256 of the
  checkpoint body the receipt carries (offline, conclusive); or
  ``rail_failed`` - the anchor, claimed ``verified``, comes back ``failed``
  from the verifier's own rail (offline for ``rfc3161`` with the verifier's
  trust bundle; chains need the verifier's RPC).  The countersignature
  itself attributes the claim, wherever the receipt travelled, so no message
  signature is needed.  The anchor "covers" the checkpoint as
  :func:`remembrancer.core.anchor.covers` says: its root is the checkpoint's
  digest, or (aggregated) its path leads from that digest to the root; a
  covering anchor is no ``root_mismatch``.
- ``invalid_anchor_claim`` by a collaborative-anchoring coordinator:
  ``message`` is a ``receipt`` message signed by the accused (checked with
  ``open_message``) that carries at ``/content/receipt`` (the only place
  where a coordinator makes a claim) a ``remembrancer.aggregate-anchor/v1``
  claim (docs/spec/aggregate-anchor.md) whose ``coordinator`` is the
  accused.  ``root_mismatch``: the claim's aggregation path does not lead
  from its ``checkpoint`` digest to the anchored root (offline, conclusive);
  ``rail_failed``: its anchor, claimed ``verified``, comes back ``failed``
  from the verifier's own rail.
- ``forged_countersignature`` still parses (older nodes made such files)
  but never verifies (``evidence_not_attributable``): a countersignature
  that does not verify is nobody's statement, and a message that carries
  one, in whatever envelope its sender signed, is a relay; relaying is never
  misbehaviour.  Nodes drop such countersignatures on arrival instead
  (:func:`remembrancer.federation.receipts.verified_countersignatures`).

The reporter's signature makes the report accountable; it is not what makes
it true: the verifier re-derives every finding.

Each verified report has ``evidence_ref`` (``sha256:`` of the evidence
bytes) and ``incident`` (``sha256:`` of the offence itself, so several files
proving one offence count once; see ``PeerScores.on_misbehaviour``).

Parsers raise FormatError; verification raises VerificationError with the
codes listed on each function.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from remembrancer.core.aggregation import AGGREGATE_ANCHOR_TYPE, AggregateAnchor
from remembrancer.core.anchor import Anchor, checkpoint_digest, covers
from remembrancer.core.checkpoint import HASH_SIZE, Checkpoint, open_checkpoint
from remembrancer.core.errors import FormatError, NotFoundError, VerificationError
from remembrancer.core.jcs import canonicalize, loads_strict, sha256_hex
from remembrancer.core.keys import PublicKey, SigningKey, public_from_did_key
from remembrancer.core.note import Note, Verifier, check_key_name, decode_base64, parse_vkey
from remembrancer.core.record import b64url_decode, b64url_encode
from remembrancer.core.rfc6962 import (
    EMPTY_ROOT,
    NodeReader,
    consistency_proof,
    root_hash,
    verify_consistency,
)
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    verify_countersignature,
)
from remembrancer.federation.registry.model import Registry

__all__ = [
    "CLAIM_EVIDENCE_TYPE",
    "EQUIVOCATION_HEADER",
    "MAX_CLAIM_EVIDENCE_BYTES",
    "MAX_EQUIVOCATION_BYTES",
    "MAX_EVIDENCE_NOTE_BYTES",
    "MAX_MESSAGE_BYTES",
    "ClaimEvidence",
    "ClaimReport",
    "EquivocationEvidence",
    "EquivocationReport",
    "open_signed_message",
    "parse_evidence",
    "verify_claim_evidence",
    "verify_equivocation",
]

EQUIVOCATION_HEADER: Final = "remembrancer.equivocation/v1"
MAX_EQUIVOCATION_BYTES: Final = 512 * 1024
MAX_EVIDENCE_NOTE_BYTES: Final = 128 * 1024
MAX_EQUIVOCATION_PROOF: Final = 128

CLAIM_EVIDENCE_TYPE: Final = "remembrancer.evidence/v1"
MAX_CLAIM_EVIDENCE_BYTES: Final = 512 * 1024
MAX_MESSAGE_BYTES: Final = 256 * 1024
MAX_POINTER_CHARS: Final = 1024

ClaimKind: TypeAlias = Literal["forged_countersignature", "invalid_anchor_claim"]
Finding: TypeAlias = Literal["signature_invalid", "root_mismatch", "rail_failed"]
_FINDINGS: Final[dict[str, tuple[str, ...]]] = {
    "forged_countersignature": ("signature_invalid",),
    "invalid_anchor_claim": ("root_mismatch", "rail_failed"),
}
_LINE_CONTROL: Final = re.compile("[\x00-\x09\x0b-\x1f]")  # as in signed notes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------
# Equivocation
# --------------------------------------------------------------------------


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
            f"note-a {_b64(self.note_a)}",
            f"note-b {_b64(self.note_b)}",
        ]
        if self.prefix_root is not None:
            lines.append(f"prefix {_b64(self.prefix_root)}")
        lines.extend(f"proof {_b64(h)}" for h in self.proof)
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
        return _incident("equivocation", body_a, body_b)


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
            return {"size": c.size, "root": _b64(c.root_hash)}

        return {
            "kind": self.kind,
            "origin": self.origin,
            "log_key": self.log_key.did,
            "a": cp(self.checkpoint_a),
            "b": cp(self.checkpoint_b),
            "conflict": self.conflict,
            "prefix_root": None if self.prefix_root is None else _b64(self.prefix_root),
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


# --------------------------------------------------------------------------
# Signed federation messages (DESIGN 3.10)
# --------------------------------------------------------------------------


def open_signed_message(data: bytes, sender_key: PublicKey) -> dict[str, Any]:
    """Parse a federation message and check its sender's signature.

    The message is a JSON object whose ``signature`` is the unpadded
    base64url Ed25519 signature, by the sender's key, of the RFC 8785 form of
    the object without ``signature`` (DESIGN 3.10).  FormatError
    ``message_malformed``; VerificationError ``message_signature_invalid``.
    """
    try:
        value = loads_strict(data, max_bytes=MAX_MESSAGE_BYTES)
    except FormatError as e:
        raise FormatError(f"the message is not JSON: {e.message}", code="message_malformed") from e
    if not isinstance(value, dict) or not isinstance(value.get("signature"), str):
        raise FormatError("a message is a JSON object with a signature", code="message_malformed")
    try:
        sig = b64url_decode(value["signature"], what="signature")
    except FormatError as e:
        raise FormatError(e.message, code="message_malformed") from e
    body = {k: v for k, v in value.items() if k != "signature"}
    if not sender_key.verify(canonicalize(body), sig):
        raise VerificationError(
            "the message's signature does not verify under the sender's key",
            code="message_signature_invalid",
            details={"key": sender_key.did},
        )
    return value


MessageOpener: TypeAlias = Callable[[bytes, PublicKey], Mapping[str, Any]]
AnchorReverifier: TypeAlias = Callable[[Anchor], Anchor]


def _resolve_pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` in ``doc`` (FormatError ``evidence_pointer_invalid``)."""
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        raise FormatError("a JSON pointer is empty or starts with '/'",
                          code="evidence_pointer_invalid")  # fmt: skip
    value = doc
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            if token not in value:
                raise FormatError(f"no member {token!r}", code="evidence_pointer_invalid")
            value = value[token]
        elif isinstance(value, list):
            if not re.fullmatch(r"0|[1-9][0-9]{0,8}", token) or int(token) >= len(value):
                raise FormatError(f"no element {token!r}", code="evidence_pointer_invalid")
            value = value[int(token)]
        else:
            raise FormatError(f"cannot descend into a scalar at {token!r}",
                              code="evidence_pointer_invalid")  # fmt: skip
    return value


# --------------------------------------------------------------------------
# Claim evidence: invalid anchor claims
# --------------------------------------------------------------------------

_CLAIM_FIELDS: Final = frozenset(
    {"type", "kind", "federation_id", "accused", "message", "receipt_at", "countersigner",
     "finding", "reporter", "reported_at", "signature"}
)  # fmt: skip


def _did_key(value: object, what: str) -> PublicKey:
    if not isinstance(value, str):
        raise FormatError(f"{what} is a did:key", code="evidence_malformed")
    try:
        return public_from_did_key(value)
    except FormatError as e:
        raise FormatError(f"{what}: {e.message}", code="evidence_malformed") from e


@dataclass(frozen=True, slots=True)
class ClaimEvidence:
    """A reporter-signed ``remembrancer.evidence/v1`` object (see the module docstring)."""

    kind: ClaimKind
    federation_id: str
    accused: str
    message: bytes
    receipt_at: str
    countersigner: str
    finding: Finding
    reporter: str
    reported_at: int
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in _FINDINGS:
            raise FormatError(f"unknown evidence kind {self.kind!r}", code="evidence_malformed")
        if not isinstance(self.finding, str) or self.finding not in _FINDINGS[self.kind]:
            raise FormatError(
                f"{self.kind} evidence has finding {' or '.join(_FINDINGS[self.kind])}",
                code="evidence_malformed",
            )
        if not isinstance(self.federation_id, str) or not 1 <= len(self.federation_id) <= 63:
            raise FormatError("federation_id is a string", code="evidence_malformed")
        _did_key(self.accused, "accused")
        _did_key(self.reporter, "reporter")
        if not isinstance(self.message, bytes) or not 0 < len(self.message) <= MAX_MESSAGE_BYTES:
            raise FormatError(
                f"message is 1 to {MAX_MESSAGE_BYTES} bytes", code="evidence_malformed"
            )
        if (
            not isinstance(self.receipt_at, str)
            or len(self.receipt_at) > MAX_POINTER_CHARS
            or (self.receipt_at and not self.receipt_at.startswith("/"))
        ):
            raise FormatError("receipt_at is an RFC 6901 JSON pointer", code="evidence_malformed")
        if not isinstance(self.countersigner, str) or not 1 <= len(self.countersigner) <= 512:
            raise FormatError("countersigner is a DID", code="evidence_malformed")
        if self.kind == "invalid_anchor_claim" and self.countersigner != self.accused:
            raise FormatError(
                "an invalid anchor claim is the accused's own countersignature",
                code="evidence_malformed",
            )
        if type(self.reported_at) is not int or not 0 <= self.reported_at < 2**53:
            raise FormatError("reported_at is POSIX seconds", code="evidence_malformed")
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise FormatError("signature is 64 bytes", code="evidence_malformed")

    def _body(self) -> dict[str, Any]:
        return {
            "type": CLAIM_EVIDENCE_TYPE,
            "kind": self.kind,
            "federation_id": self.federation_id,
            "accused": self.accused,
            "message": _b64(self.message),
            "receipt_at": self.receipt_at,
            "countersigner": self.countersigner,
            "finding": self.finding,
            "reporter": self.reporter,
            "reported_at": self.reported_at,
        }

    def signing_input(self) -> bytes:
        """RFC 8785 form of the object without ``signature``: what the reporter signs."""
        return canonicalize(self._body())

    def to_dict(self) -> dict[str, Any]:
        return {**self._body(), "signature": b64url_encode(self.signature)}

    def to_bytes(self) -> bytes:
        """The canonical (RFC 8785) bytes of the whole object."""
        return canonicalize(self.to_dict())

    @classmethod
    def create(
        cls,
        *,
        kind: ClaimKind,
        federation_id: str,
        accused: str,
        message: bytes,
        receipt_at: str,
        countersigner: str,
        finding: Finding,
        reporter_key: SigningKey,
        reported_at: int,
    ) -> ClaimEvidence:
        """Build evidence and sign it with the reporter's key."""
        unsigned = cls(kind, federation_id, accused, message, receipt_at, countersigner,
                       finding, reporter_key.did, reported_at, bytes(64))  # fmt: skip
        sig = reporter_key.sign(unsigned.signing_input())
        return cls(kind, federation_id, accused, message, receipt_at, countersigner,
                   finding, reporter_key.did, reported_at, sig)  # fmt: skip

    @classmethod
    def parse(cls, data: bytes) -> ClaimEvidence:
        """Parse evidence JSON strictly (any formatting; exact field set and types).

        FormatError codes: ``evidence_too_large``, ``evidence_malformed``.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError("evidence is bytes", code="evidence_malformed")
        data = bytes(data)
        if len(data) > MAX_CLAIM_EVIDENCE_BYTES:
            raise FormatError(
                f"evidence is at most {MAX_CLAIM_EVIDENCE_BYTES} bytes", code="evidence_too_large"
            )
        try:
            d = loads_strict(data, max_bytes=MAX_CLAIM_EVIDENCE_BYTES)
        except FormatError as e:
            raise FormatError(
                f"evidence is not JSON: {e.message}", code="evidence_malformed"
            ) from e
        if not isinstance(d, dict) or set(d) != _CLAIM_FIELDS:
            raise FormatError(
                f"evidence has exactly the fields {', '.join(sorted(_CLAIM_FIELDS))}",
                code="evidence_malformed",
            )
        if d["type"] != CLAIM_EVIDENCE_TYPE:
            raise FormatError(f"type must be {CLAIM_EVIDENCE_TYPE}", code="evidence_malformed")
        if not isinstance(d["message"], str):
            raise FormatError("message is base64", code="evidence_malformed")
        message = decode_base64(d["message"], what="message", code="evidence_malformed")
        try:
            signature = b64url_decode(d["signature"], what="signature")
        except FormatError as e:
            raise FormatError(e.message, code="evidence_malformed") from e
        return cls(
            kind=d["kind"],
            federation_id=d["federation_id"],
            accused=d["accused"],
            message=message,
            receipt_at=d["receipt_at"],
            countersigner=d["countersigner"],
            finding=d["finding"],
            reporter=d["reporter"],
            reported_at=d["reported_at"],
            signature=signature,
        )

    @property
    def evidence_ref(self) -> str:
        """``sha256:<hex>`` of :meth:`to_bytes`."""
        return sha256_hex(self.to_bytes())


@dataclass(frozen=True, slots=True)
class ClaimReport:
    """What verified claim evidence proves against ``accused`` (its registry DID)."""

    kind: str
    finding: str
    federation_id: str
    accused: str
    accused_key: str
    countersigner: str
    reporter: str
    reported_at: int
    evidence_ref: str
    incident: str
    detail: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "finding": self.finding,
            "federation_id": self.federation_id,
            "accused": self.accused,
            "accused_key": self.accused_key,
            "countersigner": self.countersigner,
            "reporter": self.reporter,
            "reported_at": self.reported_at,
            "evidence_ref": self.evidence_ref,
            "incident": self.incident,
            "detail": dict(self.detail),
        }


def _claim_error(message: str, code: str, **details: Any) -> VerificationError:
    return VerificationError(message, code=code, details=details)


def _receipt_at(value: Any, pointer: str, federation_id: str) -> FederationReceipt:
    try:
        receipt = FederationReceipt.from_dict(_resolve_pointer(value, pointer))
    except FormatError as e:
        raise _claim_error(
            f"there is no federation receipt at {pointer!r}: {e.message}",
            "evidence_claim_malformed",
            cause=e.code,
        ) from e
    if receipt.federation_id != federation_id:
        raise _claim_error(
            f"the receipt is for federation {receipt.federation_id}",
            "evidence_federation_mismatch",
        )
    return receipt


def _signer_key(node: str, registry: Registry) -> PublicKey | None:
    if node.startswith("did:key:"):
        try:
            return public_from_did_key(node)
        except FormatError:
            return None
    peer = registry.get(node)
    return peer.pubkey if peer else None


def verify_claim_evidence(
    evidence: ClaimEvidence,
    registry: Registry,
    *,
    open_message: MessageOpener = open_signed_message,
    reverify: AnchorReverifier | None = None,
) -> ClaimReport:
    """Re-check invalid-anchor-claim evidence (``forged_countersignature`` never
    verifies: ``evidence_not_attributable``).

    ``registry`` maps keys to peers (the accused must be one);
    ``open_message`` checks a federation message's sender signature (the
    protocol's own, by default :func:`open_signed_message`); ``reverify``
    re-verifies an anchor with this node's rails (needed for ``rail_failed``
    only) and returns it with its new status.

    VerificationError codes: ``evidence_report_signature_invalid``,
    ``evidence_federation_mismatch``, ``evidence_accused_unknown``,
    ``evidence_message_unsigned`` (details ``cause``),
    ``evidence_not_attributable`` (a ``forged_countersignature`` report; the
    message is an ``evidence`` message; its sender is someone else; the
    accused's countersignature is not valid; an aggregate claim not made as
    the receipt of the accused's own ``receipt`` message),
    ``evidence_claim_malformed``, ``evidence_claim_not_found``,
    ``evidence_rail_unavailable``,
    ``evidence_not_misbehaviour`` (the claim checks out: nothing is proven).
    Errors raised by ``reverify`` propagate.
    """
    reporter_key = public_from_did_key(evidence.reporter)
    if not reporter_key.verify(evidence.signing_input(), evidence.signature):
        raise _claim_error("the reporter's signature does not verify",
                           "evidence_report_signature_invalid")  # fmt: skip
    if evidence.federation_id != registry.federation_id:
        raise _claim_error(
            f"the evidence is for federation {evidence.federation_id}, not {registry.federation_id}",
            "evidence_federation_mismatch",
        )
    accused_key = public_from_did_key(evidence.accused)
    accused = registry.peer_by_key(accused_key)
    if accused is None:
        raise _claim_error(
            f"{evidence.accused} is not a peer of {registry.federation_id}",
            "evidence_accused_unknown",
        )
    if evidence.kind != "invalid_anchor_claim":
        raise _claim_error(
            "a countersignature that does not verify is nobody's statement, and carrying one"
            " is a relay: it proves nothing about the accused",
            "evidence_not_attributable",
        )
    detail: dict[str, Any] = {"receipt_at": evidence.receipt_at}
    incident = _verify_anchor_claim(
        evidence, registry, accused_key, accused.did, open_message, reverify, detail
    )
    return ClaimReport(
        kind=evidence.kind,
        finding=evidence.finding,
        federation_id=evidence.federation_id,
        accused=accused.did,
        accused_key=accused.key_did,
        countersigner=evidence.countersigner,
        reporter=evidence.reporter,
        reported_at=evidence.reported_at,
        evidence_ref=evidence.evidence_ref,
        incident=incident,
        detail=detail,
    )


def _verify_anchor_claim(
    evidence: ClaimEvidence,
    registry: Registry,
    accused_key: PublicKey,
    accused_did: str,
    open_message: MessageOpener,
    reverify: AnchorReverifier | None,
    detail: dict[str, Any],
) -> str:
    try:
        value = loads_strict(evidence.message, max_bytes=MAX_MESSAGE_BYTES)
    except FormatError as e:
        raise _claim_error(f"the message is not JSON: {e.message}", "evidence_claim_malformed",
                           cause=e.code) from e  # fmt: skip
    if isinstance(value, dict) and value.get("type") == "evidence":
        raise _claim_error("evidence messages carry others' offences; they are not claims",
                           "evidence_not_attributable")  # fmt: skip
    try:
        claimed = _resolve_pointer(value, evidence.receipt_at)
    except FormatError:
        claimed = None
    if isinstance(claimed, dict) and claimed.get("type") == AGGREGATE_ANCHOR_TYPE:
        return _verify_aggregate_claim(
            evidence, registry, accused_key, accused_did, open_message, reverify, detail
        )
    receipt = _receipt_at(value, evidence.receipt_at, evidence.federation_id)
    own: list[Countersignature] = [
        cs for cs in receipt.signatures if _signer_key(cs.node, registry) == accused_key
    ]
    if not own:
        raise _claim_error("the accused did not countersign this receipt",
                           "evidence_claim_not_found")  # fmt: skip
    if not any(verify_countersignature(receipt, cs, accused_key) for cs in own):
        raise _claim_error(
            "the accused's countersignature does not verify, so the claim is not theirs",
            "evidence_not_attributable",
        )
    anchor = receipt.anchor
    detail.update(receipt=receipt.id, target=anchor.target, tx_ref=anchor.tx_ref)
    if evidence.finding == "root_mismatch":
        try:
            body = Note.from_bytes(receipt.checkpoint).text.encode("utf-8")
        except FormatError as e:
            raise _claim_error("the receipt's checkpoint is not a note",
                               "evidence_claim_malformed", cause=e.code) from e  # fmt: skip
        digest = checkpoint_digest(body)
        if covers(anchor, digest):
            raise _claim_error("the anchor covers the checkpoint's digest",
                               "evidence_not_misbehaviour")  # fmt: skip
        detail.update(anchored_root="sha256:" + anchor.root.hex(),
                      checkpoint_digest="sha256:" + digest.hex())  # fmt: skip
    else:
        _rail_failed(anchor, reverify, detail)
    return _incident(
        "invalid_anchor_claim",
        canonicalize(receipt.statement()),
        accused_key.did.encode("utf-8"),
        b"",
    )


def _rail_failed(anchor: Anchor, reverify: AnchorReverifier | None, detail: dict[str, Any]) -> None:
    """The ``rail_failed`` finding: claimed verified, failed on this node's rail."""
    if reverify is None:
        raise _claim_error("a rail_failed finding needs this node's rails to re-check",
                           "evidence_rail_unavailable")  # fmt: skip
    if anchor.status != "verified":
        raise _claim_error(f"the claim says the anchor is {anchor.status}, not verified",
                           "evidence_not_misbehaviour")  # fmt: skip
    checked = reverify(anchor)
    if checked.status != "failed":
        raise _claim_error(
            f"this node's rail finds the anchor {checked.status}, not failed",
            "evidence_not_misbehaviour",
        )
    detail.update(rail_verifier=checked.verifier, rail_error=checked.error)


def _verify_aggregate_claim(
    evidence: ClaimEvidence,
    registry: Registry,
    accused_key: PublicKey,
    accused_did: str,
    open_message: MessageOpener,
    reverify: AnchorReverifier | None,
    detail: dict[str, Any],
) -> str:
    """A coordinator's signed ``remembrancer.aggregate-anchor/v1`` claim that is false."""
    try:
        message = open_message(evidence.message, accused_key)
    except (VerificationError, FormatError) as e:
        raise _claim_error(f"the message is not signed by the accused: {e.message}",
                           "evidence_message_unsigned", cause=e.code) from e  # fmt: skip
    if message.get("federation_id") != evidence.federation_id:
        raise _claim_error("the message is for another federation", "evidence_federation_mismatch")
    sender = message.get("sender")
    peer = registry.get(sender) if isinstance(sender, str) else None
    if peer is None or peer.did != accused_did:
        raise _claim_error("the message's sender is not the accused", "evidence_not_attributable")
    if message.get("type") != "receipt" or evidence.receipt_at != "/content/receipt":
        # Anything else the accused signed around the claim (a bundle, say) is a relay.
        raise _claim_error("a coordinator claims an aggregate only as the receipt of a receipt"
                           " message", "evidence_not_attributable")  # fmt: skip
    try:
        claim = AggregateAnchor.from_dict(_resolve_pointer(message, evidence.receipt_at))
    except FormatError as e:
        raise _claim_error(f"there is no aggregate anchor at {evidence.receipt_at!r}: {e.message}",
                           "evidence_claim_malformed", cause=e.code) from e  # fmt: skip
    if claim.federation_id != evidence.federation_id:
        raise _claim_error(f"the claim is for federation {claim.federation_id}",
                           "evidence_federation_mismatch")  # fmt: skip
    named = registry.get(claim.coordinator)
    if named is None or named.did != accused_did:
        raise _claim_error("the claim names another coordinator", "evidence_not_attributable")
    anchor = claim.anchor
    detail.update(aggregate_origin=claim.origin, aggregate_size=claim.size,
                  target=anchor.target, tx_ref=anchor.tx_ref, epoch=claim.epoch)  # fmt: skip
    if evidence.finding == "root_mismatch":
        if claim.consistent():
            raise _claim_error("the aggregation path leads from the checkpoint to the root",
                               "evidence_not_misbehaviour")  # fmt: skip
        detail.update(anchored_root="sha256:" + anchor.root.hex(),
                      checkpoint_digest="sha256:" + claim.checkpoint.hex())  # fmt: skip
    else:
        _rail_failed(anchor, reverify, detail)
    return _incident(
        "invalid_anchor_claim",
        canonicalize(claim.to_dict()),
        accused_key.did.encode("utf-8"),
        b"aggregate",
    )


def _incident(kind: str, *parts: bytes) -> str:
    data = kind.encode("ascii") + b"\n"
    for p in parts:
        data += len(p).to_bytes(4, "big") + p
    return sha256_hex(data)


# --------------------------------------------------------------------------
# Either kind
# --------------------------------------------------------------------------


def parse_evidence(data: bytes) -> EquivocationEvidence | ClaimEvidence:
    """Parse an equivocation file or claim evidence, by its first bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError("evidence is bytes", code="evidence_malformed")
    if bytes(data[: len(EQUIVOCATION_HEADER)]) == EQUIVOCATION_HEADER.encode("ascii"):
        return EquivocationEvidence.parse(bytes(data))
    return ClaimEvidence.parse(bytes(data))
