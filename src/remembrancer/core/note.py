"""C2SP signed notes (https://c2sp.org/signed-note) and verifier keys (vkeys).

A signed note is a UTF-8 text ending in a newline, a blank line, then one or
more signature lines ``— <key name> <base64(4-byte key ID || signature)>``::

    This is an example message.

    — example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=

Behaviour follows the spec and, where the spec leaves room, Go's
``golang.org/x/mod/sumdb/note``:

- The whole note must be valid UTF-8 with no ASCII control character other
  than newline; the text is everything up to the *last* blank line.
- Key names are non-empty, with no Unicode white space (Go's
  ``unicode.IsSpace`` set), no ``+``, and (stricter than Go, as a note could
  not carry them anyway) no ASCII control characters.
- Base64 is RFC 4648 standard base64 with padding; we also require the
  canonical encoding (zero padding bits), so that parse and format round-trip
  byte for byte.  Go's encoder always writes that form.
- Signatures from unknown keys (no verifier with both that name and that key
  ID) are ignored; every signature from a known key is verified and one that
  fails rejects the whole note; at least one known signature must verify.
  Repeated identical signatures of one key count once.  (Go verifies only
  the first signature of a key and skips later ones; the spec says a known
  key's signature MUST be verified, so we verify each.)

Limits: a note is at most :data:`MAX_NOTE_BYTES` (1 MiB) and carries at most
:data:`MAX_SIGNATURES` (100, Go's limit; the spec requires at least 16)
signature lines.  A vkey is at most :data:`MAX_VKEY_CHARS` characters.

Parsers raise only :class:`~remembrancer.core.errors.FormatError`; verifying
raises :class:`~remembrancer.core.errors.VerificationError`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeGuard

from remembrancer.core.encoding import decode_base64, encode_base64
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import PUBLIC_KEY_SIZE, PublicKey, SigningKey

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "MAX_VKEY_CHARS",
    "SIG_TYPE_COSIGNATURE_V1",
    "SIG_TYPE_ED25519",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "OpenedNote",
    "Signer",
    "Verifier",
    "VerifierKey",
    "check_key_name",
    "check_note_text",
    "format_vkey",
    "is_valid_key_name",
    "key_id",
    "open_note",
    "parse_vkey",
    "sign_note",
    "verify_note",
]

SIG_TYPE_ED25519: Final = 0x01
SIG_TYPE_COSIGNATURE_V1: Final = 0x04

MAX_NOTE_BYTES: Final = 1 << 20
MAX_SIGNATURES: Final = 100
MAX_VKEY_CHARS: Final = 8192

_SIG_PREFIX: Final = "\u2014 "  # em dash, space
# Go's unicode.IsSpace: the Unicode White_Space property.
_WHITE_SPACE: Final = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_CONTROL: Final = re.compile("[\x00-\x09\x0b-\x1f]")
# What a key name may not hold, in one class: "+", White_Space, the other
# control characters and lone surrogates (text that is not UTF-8).  One regex
# search instead of a Python test per character: a heartbeat names its logs,
# and this check was a tenth of verifying one.
_NOT_IN_KEY_NAME: Final = re.compile(
    "[+" + re.escape("".join(sorted(_WHITE_SPACE))) + "\x00-\x1f\ud800-\udfff]"
)
_HEX8: Final = re.compile("[0-9a-fA-F]{8}")


# --------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------


def is_valid_key_name(name: object) -> TypeGuard[str]:
    """True for a valid signed-note key name (see the module docstring)."""
    return isinstance(name, str) and bool(name) and _NOT_IN_KEY_NAME.search(name) is None


def check_key_name(name: object, *, code: str = "key_name_invalid") -> str:
    """Return ``name`` if it is a valid key name, else raise FormatError."""
    if not is_valid_key_name(name):
        raise FormatError(
            "a key name must be non-empty UTF-8 without white space, '+' or control characters",
            code=code,
            details={"name": repr(name)[:200]},
        )
    return name


def check_note_text(text: object) -> str:
    """Return ``text`` if it can be the text of a signed note, else raise FormatError.

    It must be a str ending in a newline, encodable as UTF-8, with no control
    character other than newline, and short enough to fit a note.
    """
    if not isinstance(text, str):
        raise FormatError("note text must be a str", code="note_text_invalid")
    if not text.endswith("\n"):
        raise FormatError("note text must end with a newline", code="note_text_invalid")
    if _CONTROL.search(text):
        raise FormatError(
            "note text must not contain control characters other than newline",
            code="note_text_invalid",
        )
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise FormatError("note text is not valid Unicode", code="note_text_invalid") from e
    if size > MAX_NOTE_BYTES:
        raise FormatError(f"a note is at most {MAX_NOTE_BYTES} bytes", code="note_too_large")
    return text


def key_id(name: str, sig_type: int, key: bytes) -> int:
    """The RECOMMENDED key ID: SHA-256(name || 0x0A || type || key)[:4] as a big-endian uint32."""
    if not 0 <= sig_type <= 0xFF:
        raise FormatError("a signature type is one byte", code="vkey_type_invalid")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + key).digest()
    return int.from_bytes(digest[:4], "big")


# --------------------------------------------------------------------------
# Verifier keys
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A parsed vkey: ``<name>+<8 hex key ID>+<base64(type || public key)>``.

    The key ID must equal :func:`key_id` of the name, type and key (as Go's
    ``note.NewVerifier`` requires).
    """

    name: str
    sig_type: int
    key: bytes
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name, code="vkey_malformed")
        if not isinstance(self.key, bytes) or not self.key:
            raise FormatError("a vkey needs key material", code="vkey_malformed")
        object.__setattr__(self, "key_id", key_id(self.name, self.sig_type, self.key))

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parse a vkey.  Splits on the first two ``+`` only: base64 may contain ``+``."""
        if not isinstance(vkey, str) or len(vkey) > MAX_VKEY_CHARS:
            raise FormatError("not a vkey string", code="vkey_malformed")
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise FormatError("a vkey is <name>+<key ID>+<key>", code="vkey_malformed")
        name, hex_id, key_b64 = parts
        if not _HEX8.fullmatch(hex_id):
            raise FormatError("a vkey key ID is 8 hex digits", code="vkey_malformed")
        raw = decode_base64(key_b64, what="the vkey key", code="vkey_malformed")
        if len(raw) < 2:
            raise FormatError("a vkey key is a type byte and a key", code="vkey_malformed")
        parsed = cls(name, raw[0], raw[1:])
        if parsed.key_id != int(hex_id, 16):
            raise FormatError(
                "the vkey key ID does not match its name and key",
                code="vkey_key_id_mismatch",
                details={"expected": f"{parsed.key_id:08x}", "got": hex_id},
            )
        return parsed

    def format(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{encode_base64(bytes([self.sig_type]) + self.key)}"

    def __str__(self) -> str:
        return self.format()


class NoteVerifier(Protocol):
    """Anything that can check one kind of note signature for one key."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool:
        """``message`` is the note text; ``signature`` excludes the key ID. Never raises."""
        ...


class NoteSigner(Protocol):
    """Anything that can produce one kind of note signature for one key."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes:
        """Sign the note text; the result excludes the key ID."""
        ...


@dataclass(frozen=True, slots=True)
class Verifier:
    """Verifies Ed25519 note signatures (type 0x01) of one named key."""

    name: str
    public_key: PublicKey
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.public_key, PublicKey):
            raise FormatError("public_key must be a PublicKey", code="public_key_invalid")
        object.__setattr__(self, "key_id", key_id(self.name, SIG_TYPE_ED25519, self.public_key.raw))

    def verify(self, message: bytes, signature: bytes) -> bool:
        return self.public_key.verify(message, signature)

    @property
    def vkey(self) -> str:
        return format_vkey(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class Signer:
    """Makes Ed25519 note signatures (type 0x01) under a key name."""

    name: str
    key: SigningKey = field(repr=False)
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.key, SigningKey):
            raise FormatError("key must be a SigningKey", code="signing_key_invalid")
        object.__setattr__(self, "key_id", key_id(self.name, SIG_TYPE_ED25519, self.key.public.raw))

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key.public)


def format_vkey(name: str, public_key: PublicKey) -> str:
    """The vkey of an Ed25519 note key: ``<name>+<key ID>+<base64(0x01 || key)>``."""
    return VerifierKey(check_key_name(name), SIG_TYPE_ED25519, public_key.raw).format()


def parse_vkey(vkey: str) -> Verifier:
    """Parse an Ed25519 (type 0x01) vkey into a :class:`Verifier`.

    Other types are FormatError ``vkey_type_unsupported`` (cosigner vkeys,
    type 0x04, are parsed by :func:`remembrancer.core.cosignature.parse_cosigner_vkey`).
    """
    parsed = VerifierKey.parse(vkey)
    if parsed.sig_type != SIG_TYPE_ED25519:
        raise FormatError(
            f"vkey type 0x{parsed.sig_type:02x} is not an Ed25519 note key (0x01)",
            code="vkey_type_unsupported",
        )
    if len(parsed.key) != PUBLIC_KEY_SIZE:
        raise FormatError("an Ed25519 vkey holds a 32-byte key", code="vkey_malformed")
    return Verifier(parsed.name, PublicKey(parsed.key))


# --------------------------------------------------------------------------
# Notes
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, key ID and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name, code="note_signature_malformed")
        if isinstance(self.key_id, bool) or not isinstance(self.key_id, int):
            raise FormatError("a key ID is an int", code="note_signature_malformed")
        if not 0 <= self.key_id <= 0xFFFFFFFF:
            raise FormatError("a key ID is a uint32", code="note_signature_malformed")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise FormatError("a signature is non-empty bytes", code="note_signature_malformed")

    def to_line(self) -> str:
        """``— <name> <base64(key ID || signature)>`` followed by a newline."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {encode_base64(blob)}\n"

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """Parse one signature line, without its newline."""
        if not line.startswith(_SIG_PREFIX):
            raise FormatError(
                "a signature line starts with an em dash and a space",
                code="note_signature_malformed",
            )
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not b64:
            raise FormatError(
                "a signature line is '— <name> <base64>'", code="note_signature_malformed"
            )
        if not is_valid_key_name(name):
            raise FormatError("a signature names an invalid key", code="note_signature_malformed")
        blob = decode_base64(b64, what="a signature", code="note_signature_malformed")
        if len(blob) < 5:
            raise FormatError(
                "a signature is a 4-byte key ID and at least one byte",
                code="note_signature_malformed",
            )
        return cls(name, int.from_bytes(blob[:4], "big"), blob[4:])


@dataclass(frozen=True, slots=True)
class Note:
    """A note text with its signatures, verified or not.

    Construction validates everything, so :meth:`to_bytes` always produces a
    note that :meth:`from_bytes` accepts and returns unchanged.
    """

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        check_note_text(self.text)
        sigs = tuple(self.signatures)
        object.__setattr__(self, "signatures", sigs)
        if not sigs:
            raise FormatError("a signed note has at least one signature", code="note_unsigned")
        if len(sigs) > MAX_SIGNATURES:
            raise FormatError(
                f"a note carries at most {MAX_SIGNATURES} signatures",
                code="note_too_many_signatures",
            )
        if not all(isinstance(s, NoteSignature) for s in sigs):
            raise FormatError("signatures must be NoteSignature values", code="note_malformed")
        size = len(self.text.encode("utf-8")) + 1
        size += sum(len(s.to_line().encode("utf-8")) for s in sigs)
        if size > MAX_NOTE_BYTES:
            raise FormatError(f"a note is at most {MAX_NOTE_BYTES} bytes", code="note_too_large")

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.to_line() for s in self.signatures)).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Note:
        """Parse a signed note's syntax (no signature is checked).

        Codes: ``note_too_large``, ``note_not_utf8``, ``note_control_character``,
        ``note_malformed``, ``note_signature_malformed``, ``note_too_many_signatures``.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError("a note is bytes", code="note_malformed")
        data = bytes(data)
        if len(data) > MAX_NOTE_BYTES:
            raise FormatError(f"a note is at most {MAX_NOTE_BYTES} bytes", code="note_too_large")
        try:
            msg = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError("a note must be valid UTF-8", code="note_not_utf8") from e
        if _CONTROL.search(msg):
            raise FormatError(
                "a note must not contain control characters other than newline",
                code="note_control_character",
            )
        split = msg.rfind("\n\n")
        if split < 0:
            raise FormatError(
                "a note is its text, a blank line and signature lines", code="note_malformed"
            )
        text, block = msg[: split + 1], msg[split + 2 :]
        if not block.endswith("\n"):
            raise FormatError(
                "a note ends with a newline-terminated signature line", code="note_malformed"
            )
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise FormatError(
                f"a note carries at most {MAX_SIGNATURES} signatures",
                code="note_too_many_signatures",
            )
        return cls(text, tuple(NoteSignature.parse_line(line) for line in lines))

    def with_signatures(self, signatures: Iterable[NoteSignature]) -> Note:
        """This note with ``signatures`` added.

        A new signature replaces an existing one with the same key name and key
        ID (in place); others are appended in order.
        """
        sigs = list(self.signatures)
        for new in signatures:
            for i, old in enumerate(sigs):
                if (old.name, old.key_id) == (new.name, new.key_id):
                    sigs[i] = new
                    break
            else:
                sigs.append(new)
        return Note(self.text, tuple(sigs))


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note whose signatures were checked.

    ``verified`` holds one signature per known key that verified (in note
    order); ``unverified`` holds the distinct signatures of unknown keys.
    """

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]

    def verified_by(self, name: str, key_id_: int) -> NoteSignature | None:
        """The verified signature of the key (name, key ID), if any."""
        for sig in self.verified:
            if sig.name == name and sig.key_id == key_id_:
                return sig
        return None


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """Sign ``text`` with each signer, in order, and return the note bytes.

    ``text`` must end with a newline.  Signers must be at least one and have
    distinct (name, key ID) pairs.
    """
    check_note_text(text)
    if not signers:
        raise FormatError("a note needs at least one signer", code="note_unsigned")
    seen: set[tuple[str, int]] = set()
    message = text.encode("utf-8")
    sigs: list[NoteSignature] = []
    for signer in signers:
        ident = (check_key_name(signer.name), signer.key_id)
        if ident in seen:
            raise FormatError(
                f"two signers share the key {signer.name}+{signer.key_id:08x}",
                code="note_signer_duplicate",
            )
        seen.add(ident)
        sigs.append(NoteSignature(signer.name, signer.key_id, signer.sign(message)))
    return Note(text, tuple(sigs)).to_bytes()


def verify_note(note: Note, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Check ``note``'s signatures against the known ``verifiers``.

    Raises VerificationError ``note_signature_invalid`` (details: name,
    key_id) when a known key's signature fails, ``note_unverified`` when no
    known key signed, and ``note_verifier_ambiguous`` when two different
    verifiers share the name and key ID of a signature.
    """
    known: dict[tuple[str, int], list[NoteVerifier]] = {}
    for v in verifiers:
        same = known.setdefault((v.name, v.key_id), [])
        if not any(v == other for other in same):
            same.append(v)
    message = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    verified_ids: set[tuple[str, int]] = set()
    unverified: list[NoteSignature] = []
    for sig in note.signatures:
        candidates = known.get((sig.name, sig.key_id))
        if not candidates:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise VerificationError(
                f"more than one verifier is configured for {sig.name}+{sig.key_id:08x}",
                code="note_verifier_ambiguous",
                details={"name": sig.name, "key_id": f"{sig.key_id:08x}"},
            )
        if not candidates[0].verify(message, sig.signature):
            raise VerificationError(
                f"the signature of {sig.name} does not verify",
                code="note_signature_invalid",
                details={"name": sig.name, "key_id": f"{sig.key_id:08x}"},
            )
        if (sig.name, sig.key_id) not in verified_ids:
            verified_ids.add((sig.name, sig.key_id))
            verified.append(sig)
    if not verified:
        raise VerificationError(
            "the note is not signed by any known key",
            code="note_unverified",
            details={"signers": sorted({s.name for s in note.signatures})[:MAX_SIGNATURES]},
        )
    return OpenedNote(note.text, tuple(verified), tuple(unverified))


def open_note(data: bytes, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Parse ``data`` as a signed note and verify it (see :func:`verify_note`).

    Malformed input raises FormatError; signature problems VerificationError.
    """
    return verify_note(Note.from_bytes(data), verifiers)
