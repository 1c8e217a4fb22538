"""Ed25519 witness cosignatures, ``cosignature/v1`` (https://c2sp.org/tlog-cosignature).

A cosignature is a note signature line on a checkpoint::

    — witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==

- key ID = SHA-256(name || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4];
- the signature bytes (after the key ID) are a ``timestamped_signature``:
  the 8-byte big-endian POSIX ``timestamp`` (at most 2^63 - 1), then the
  64-byte Ed25519 signature;
- the signed message is ``cosignature/v1\\ntime <timestamp>\\n`` followed by
  the whole checkpoint body (the note text, extension lines included).

The message does not commit to the cosigner's name, so one key must never
serve two cosigner names; :func:`remembrancer.core.tlogproof.verify_tlog_proof`
counts cosigners by public key for that reason.

Cosigner keys may be written as vkeys of type 0x04
(:func:`format_cosigner_vkey`, :func:`parse_cosigner_vkey`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from remembrancer.core.errors import FormatError
from remembrancer.core.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PublicKey, SigningKey
from remembrancer.core.note import (
    SIG_TYPE_COSIGNATURE_V1,
    NoteSignature,
    VerifierKey,
    check_key_name,
    check_note_text,
    key_id,
)

__all__ = [
    "COSIGNATURE_SIZE",
    "MAX_TIMESTAMP",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "cosign",
    "cosignature_message",
    "format_cosigner_vkey",
    "parse_cosigner_vkey",
]

MAX_TIMESTAMP: Final = (1 << 63) - 1
COSIGNATURE_SIZE: Final = 8 + SIGNATURE_SIZE
_HEADER: Final = b"cosignature/v1\n"


def _check_timestamp(timestamp: object) -> int:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise FormatError("a cosignature timestamp is an int", code="cosignature_timestamp_invalid")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise FormatError(
            "a cosignature timestamp is between 0 and 2^63 - 1",
            code="cosignature_timestamp_invalid",
        )
    return timestamp


def cosignature_message(checkpoint_body: str, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signs: header line, time line, checkpoint body."""
    check_note_text(checkpoint_body)
    _check_timestamp(timestamp)
    return _HEADER + b"time %d\n" % timestamp + checkpoint_body.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: who (name, key ID, public key) and when (POSIX seconds)."""

    name: str
    key_id: int
    public_key: PublicKey
    timestamp: int


@dataclass(frozen=True, slots=True)
class CosignatureVerifier:
    """Verifies ``cosignature/v1`` signatures of one witness; plugs into ``open_note``."""

    name: str
    public_key: PublicKey
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.public_key, PublicKey):
            raise FormatError("public_key must be a PublicKey", code="public_key_invalid")
        object.__setattr__(
            self, "key_id", key_id(self.name, SIG_TYPE_COSIGNATURE_V1, self.public_key.raw)
        )

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Check a timestamped signature over ``message`` (the note text). Never raises."""
        if len(signature) != COSIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        signed = _HEADER + b"time %d\n" % timestamp + bytes(message)
        return self.public_key.verify(signed, signature[8:])

    def timestamp(self, signature: bytes) -> int:
        """The timestamp carried by a cosignature's signature bytes."""
        if len(signature) != COSIGNATURE_SIZE:
            raise FormatError(
                f"a cosignature/v1 signature is {COSIGNATURE_SIZE} bytes",
                code="cosignature_malformed",
            )
        return _check_timestamp(int.from_bytes(signature[:8], "big"))

    def cosignature(self, sig: NoteSignature) -> Cosignature:
        """Describe a signature line of this witness (already verified by ``open_note``)."""
        if (sig.name, sig.key_id) != (self.name, self.key_id):
            raise FormatError(
                "the signature is not from this witness", code="cosignature_malformed"
            )
        return Cosignature(self.name, self.key_id, self.public_key, self.timestamp(sig.signature))

    @property
    def vkey(self) -> str:
        return format_cosigner_vkey(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class Cosigner:
    """Makes ``cosignature/v1`` signatures at a fixed timestamp; plugs into ``sign_note``."""

    name: str
    key: SigningKey = field(repr=False)
    timestamp: int
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.key, SigningKey):
            raise FormatError("key must be a SigningKey", code="signing_key_invalid")
        _check_timestamp(self.timestamp)
        object.__setattr__(
            self, "key_id", key_id(self.name, SIG_TYPE_COSIGNATURE_V1, self.key.public.raw)
        )

    def sign(self, message: bytes) -> bytes:
        signed = _HEADER + b"time %d\n" % self.timestamp + bytes(message)
        return self.timestamp.to_bytes(8, "big") + self.key.sign(signed)

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.key.public)


def cosign(
    checkpoint_body: str, witness_key: SigningKey, witness_name: str, timestamp: int
) -> NoteSignature:
    """Cosign a checkpoint body at ``timestamp`` (POSIX seconds, a parameter: no clock).

    Returns the signature line to add to the checkpoint note, for example with
    :meth:`remembrancer.core.note.Note.with_signatures`.
    """
    check_note_text(checkpoint_body)
    cosigner = Cosigner(witness_name, witness_key, timestamp)
    return NoteSignature(
        cosigner.name, cosigner.key_id, cosigner.sign(checkpoint_body.encode("utf-8"))
    )


def format_cosigner_vkey(name: str, public_key: PublicKey) -> str:
    """``<name>+<key ID>+<base64(0x04 || key)>``."""
    return VerifierKey(check_key_name(name), SIG_TYPE_COSIGNATURE_V1, public_key.raw).format()


def parse_cosigner_vkey(vkey: str) -> CosignatureVerifier:
    """Parse a type 0x04 vkey; other types are FormatError ``vkey_type_unsupported``."""
    parsed = VerifierKey.parse(vkey)
    if parsed.sig_type != SIG_TYPE_COSIGNATURE_V1:
        raise FormatError(
            f"vkey type 0x{parsed.sig_type:02x} is not a cosignature/v1 key (0x04)",
            code="vkey_type_unsupported",
        )
    if len(parsed.key) != PUBLIC_KEY_SIZE:
        raise FormatError("a cosignature/v1 vkey holds a 32-byte key", code="vkey_malformed")
    return CosignatureVerifier(parsed.name, PublicKey(parsed.key))
