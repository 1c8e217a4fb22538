"""Transparency-log checkpoints (https://c2sp.org/tlog-checkpoint).

A checkpoint is a signed note whose text is the origin, the tree size and the
base64 root hash, one per line, then optional extension lines::

    example.com/behind-the-sofa
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

    — example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=

- **origin**: non-empty, no control characters.  The spec only RECOMMENDS a
  schema-less URL without spaces or ``+``; we parse any origin but sign only
  origins that are valid key names, since our log key's name is the origin
  (DESIGN 3.6).
- **tree size**: ASCII decimal, no leading zeros except ``0``, at most
  2^64 - 1 (the project's unsigned 64-bit sizes, as in ``rfc6962``; Go's
  ``sumdb/tlog`` stops at 2^63 - 1, which our own logs never approach).
- **root hash**: canonical standard base64 of exactly 32 bytes.
- **extension lines**: non-empty; tolerated and kept when parsing, never
  written by us (:meth:`Checkpoint.to_body` refuses a checkpoint that has
  them, so what is signed is always what the value says).

A body is at most :data:`MAX_CHECKPOINT_BODY_BYTES` (64 KiB).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from remembrancer.core.cosignature import Cosignature, CosignatureVerifier
from remembrancer.core.encoding import decode_base64
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.note import (
    Note,
    NoteSignature,
    NoteVerifier,
    Signer,
    check_key_name,
    sign_note,
    verify_note,
)
from remembrancer.core.rfc6962 import HASH_SIZE, MAX_TREE_SIZE

__all__ = [
    "MAX_CHECKPOINT_BODY_BYTES",
    "Checkpoint",
    "SignedCheckpoint",
    "open_checkpoint",
    "parse_decimal",
    "require_cosigners",
    "sign_checkpoint",
]

MAX_CHECKPOINT_BODY_BYTES: Final = 64 * 1024

_DECIMAL: Final = re.compile("0|[1-9][0-9]{0,19}")
_CONTROL: Final = re.compile("[\x00-\x1f]")


def parse_decimal(text: str, *, what: str, code: str, maximum: int = MAX_TREE_SIZE) -> int:
    """Parse ASCII decimal with no leading zeros (except ``0``), at most ``maximum``."""
    if not _DECIMAL.fullmatch(text):
        raise FormatError(f"{what} must be ASCII decimal without leading zeros", code=code)
    value = int(text)
    if value > maximum:
        raise FormatError(f"{what} is larger than {maximum}", code=code)
    return value


def _check_line(line: object, what: str, code: str) -> str:
    if not isinstance(line, str) or not line or _CONTROL.search(line):
        raise FormatError(f"{what} must be a non-empty line without control characters", code=code)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FormatError(f"{what} is not valid Unicode", code=code) from e
    return line


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's signed statement of (origin, tree size, root hash)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "the origin", "checkpoint_origin_invalid")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise FormatError("the tree size is an int", code="checkpoint_size_invalid")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise FormatError(
                "the tree size is between 0 and 2^64 - 1", code="checkpoint_size_invalid"
            )
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise FormatError("the root hash is 32 bytes", code="checkpoint_root_invalid")
        extensions = tuple(self.extensions)
        for line in extensions:
            _check_line(line, "an extension line", "checkpoint_extension_invalid")
        object.__setattr__(self, "extensions", extensions)

    def to_body(self) -> str:
        """The note text: origin, decimal size, base64 root hash, each with a newline.

        Remembrancer never writes extension lines; a checkpoint that carries
        some (parsed from another log) raises FormatError
        ``checkpoint_extensions_unsupported`` rather than silently dropping them.
        """
        if self.extensions:
            raise FormatError(
                "Remembrancer does not write checkpoint extension lines",
                code="checkpoint_extensions_unsupported",
            )
        root = base64.b64encode(self.root_hash).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint body (a note text) strictly.

        Codes: ``checkpoint_malformed``, ``checkpoint_too_large``,
        ``checkpoint_origin_invalid``, ``checkpoint_size_invalid``,
        ``checkpoint_root_invalid``, ``checkpoint_extension_invalid``.
        """
        if not isinstance(body, str):
            raise FormatError("a checkpoint body is a str", code="checkpoint_malformed")
        if len(body) > MAX_CHECKPOINT_BODY_BYTES:  # cheap bound before encoding
            raise FormatError(
                f"a checkpoint body is at most {MAX_CHECKPOINT_BODY_BYTES} bytes",
                code="checkpoint_too_large",
            )
        try:
            size_bytes = len(body.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise FormatError(
                "a checkpoint body is not valid Unicode", code="checkpoint_malformed"
            ) from e
        if size_bytes > MAX_CHECKPOINT_BODY_BYTES:
            raise FormatError(
                f"a checkpoint body is at most {MAX_CHECKPOINT_BODY_BYTES} bytes",
                code="checkpoint_too_large",
            )
        if not body.endswith("\n"):
            raise FormatError("a checkpoint body ends with a newline", code="checkpoint_malformed")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError(
                "a checkpoint body has an origin, a tree size and a root hash line",
                code="checkpoint_malformed",
            )
        origin, size_text, root_text, *extensions = lines
        size = parse_decimal(size_text, what="the tree size", code="checkpoint_size_invalid")
        root = decode_base64(root_text, what="the root hash", code="checkpoint_root_invalid")
        if len(root) != HASH_SIZE:
            raise FormatError("the root hash is 32 bytes", code="checkpoint_root_invalid")
        return cls(origin, size, root, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose log signature (and any known cosignatures) verified.

    ``note`` is the exact note bytes; ``body`` the exact signed text (which
    includes any extension lines).
    """

    checkpoint: Checkpoint
    body: str
    note: bytes
    log_signature: NoteSignature
    cosignatures: tuple[Cosignature, ...]
    unverified: tuple[NoteSignature, ...]

    def distinct_cosigners(self, log_key: PublicKey | None) -> tuple[Cosignature, ...]:
        """The rule for counting witnesses, the one place it is stated: one
        cosignature per distinct key (a key listed under two names counts
        once, its first cosignature stands), and the log's own key
        ``log_key`` never counts."""
        counted: dict[bytes, Cosignature] = {}
        for cosig in self.cosignatures:
            if cosig.public_key != log_key:
                counted.setdefault(cosig.public_key.raw, cosig)
        return tuple(counted.values())


def require_cosigners(
    signed: SignedCheckpoint, log_key: PublicKey | None, required: int
) -> tuple[Cosignature, ...]:
    """:meth:`SignedCheckpoint.distinct_cosigners`, at least ``required`` of them;
    else VerificationError ``cosigner_quorum_not_met``."""
    counted = signed.distinct_cosigners(log_key)
    if len(counted) < required:
        raise VerificationError(
            f"the checkpoint has {len(counted)} valid cosignatures from distinct witnesses, "
            f"{required} are required",
            code="cosigner_quorum_not_met",
            details={"required": required, "verified": len(counted),
                     "cosigners": [c.name for c in counted]},
        )  # fmt: skip
    return counted


def sign_checkpoint(
    cp: Checkpoint, signing_key: SigningKey, origin_name: str | None = None
) -> bytes:
    """Sign ``cp`` as a note whose Ed25519 key name is the checkpoint's origin.

    ``origin_name``, if given, must equal ``cp.origin`` (DESIGN 3.6); the
    origin must be a valid key name.  Returns the note bytes.
    """
    name = cp.origin if origin_name is None else origin_name
    if name != cp.origin:
        raise FormatError(
            "a checkpoint is signed under its origin as key name",
            code="checkpoint_key_name_mismatch",
            details={"origin": cp.origin, "key_name": name},
        )
    check_key_name(name, code="checkpoint_origin_invalid")
    return sign_note(cp.to_body(), [Signer(name, signing_key)])


def open_checkpoint(
    data: bytes,
    log_verifier: NoteVerifier,
    cosigner_verifiers: Sequence[CosignatureVerifier] = (),
) -> SignedCheckpoint:
    """Parse and verify a checkpoint note.

    The log's verifier must be named after the checkpoint's origin and its
    signature must verify.  Cosignatures from ``cosigner_verifiers`` are
    verified and returned with their timestamps; a known cosignature that
    fails rejects the note (as a known signature does in Go's
    ``note.Open``).  Other signatures are ignored.

    FormatError for malformed notes or bodies; VerificationError codes:
    ``checkpoint_unsigned`` (no log signature), ``checkpoint_signature_invalid``,
    ``cosignature_invalid``, ``checkpoint_origin_mismatch``,
    ``note_verifier_ambiguous``.
    """
    note = Note.from_bytes(data)
    log_id = (log_verifier.name, log_verifier.key_id)
    by_id = {(v.name, v.key_id): v for v in cosigner_verifiers}
    try:
        opened = verify_note(note, [log_verifier, *cosigner_verifiers])
    except VerificationError as e:
        failed = (e.details.get("name"), e.details.get("key_id"))
        if e.code == "note_unverified":
            raise VerificationError(
                f"the checkpoint is not signed by {log_verifier.name}",
                code="checkpoint_unsigned",
                details=e.details,
            ) from e
        if e.code == "note_signature_invalid":
            if failed == (log_id[0], f"{log_id[1]:08x}"):
                raise VerificationError(
                    "the log signature on the checkpoint does not verify",
                    code="checkpoint_signature_invalid",
                    details=e.details,
                ) from e
            raise VerificationError(
                f"the cosignature of {failed[0]} does not verify",
                code="cosignature_invalid",
                details=e.details,
            ) from e
        raise
    log_signature = opened.verified_by(*log_id)
    if log_signature is None:
        raise VerificationError(
            f"the checkpoint is not signed by {log_verifier.name}",
            code="checkpoint_unsigned",
            details={"name": log_verifier.name},
        )
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != log_verifier.name:
        raise VerificationError(
            "the checkpoint's origin is not the log key's name",
            code="checkpoint_origin_mismatch",
            details={"origin": checkpoint.origin, "key_name": log_verifier.name},
        )
    cosignatures = tuple(
        by_id[(sig.name, sig.key_id)].cosignature(sig)
        for sig in opened.verified
        if (sig.name, sig.key_id) != log_id and (sig.name, sig.key_id) in by_id
    )
    return SignedCheckpoint(
        checkpoint=checkpoint,
        body=opened.text,
        note=bytes(data),
        log_signature=log_signature,
        cosignatures=cosignatures,
        unverified=opened.unverified,
    )
