"""Ed25519 keys, their ``did:key`` identities, and the private-key file.

Every signature in Remembrancer is Ed25519 (RFC 8032), made and checked with
PyNaCl (libsodium) only, so one library decides acceptance everywhere
(DESIGN 3.3).

- :class:`SigningKey` wraps a 32-byte RFC 8032 seed; :class:`PublicKey` wraps
  the 32-byte public key.  ``PublicKey.verify`` returns a bool and never
  raises on a bad signature; ``verify_or_raise`` raises
  :class:`~remembrancer.core.errors.VerificationError`.
- A key's DID is ``did:key:z6Mk...``: the multibase base58btc (``z``)
  encoding of the ed25519-pub multicodec varint ``0xed 0x01`` followed by the
  32 key bytes (W3C did:key method, section "Ed25519").  Parsing is strict:
  nothing but that exact 34-byte form is accepted.
- The key file (``docs/spec/keyfile.md``) is three text lines: a version
  line, the base64 seed, and the ``did:key`` for humans to check:
  :func:`format_key_file` and :func:`parse_key_file` (reading and writing
  the file is :mod:`remembrancer.node.keyfile`; the core touches no file).

Parsers raise only :class:`~remembrancer.core.errors.FormatError`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.signing
import nacl.utils

from remembrancer.core.errors import (
    FormatError,
    VerificationError,
)

__all__ = [
    "KEY_FILE_HEADER",
    "MAX_KEY_FILE_BYTES",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "PublicKey",
    "SigningKey",
    "base58btc_decode",
    "base58btc_encode",
    "did_key_from_public",
    "format_key_file",
    "parse_key_file",
    "public_from_did_key",
]

SEED_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64

# --------------------------------------------------------------------------
# base58btc (Bitcoin alphabet)
# --------------------------------------------------------------------------

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}
# base58 decoding is quadratic in the input length; nothing we decode is long.
_B58_MAX_CHARS: Final = 256


def base58btc_encode(data: bytes) -> str:
    """Encode bytes with the Bitcoin base58 alphabet.

    Each leading zero byte becomes a leading ``1``; the rest is the big-endian
    number written in base 58.
    """
    zeros = len(data) - len(data.lstrip(b"\x00"))
    n = int.from_bytes(data, "big")
    digits: list[str] = []
    while n:
        n, r = divmod(n, 58)
        digits.append(_B58_ALPHABET[r])
    return "1" * zeros + "".join(reversed(digits))


def base58btc_decode(text: str) -> bytes:
    """Decode Bitcoin-alphabet base58; the inverse of :func:`base58btc_encode`.

    Raises FormatError (``base58_invalid``) on characters outside the
    alphabet or input longer than 256 characters.
    """
    if len(text) > _B58_MAX_CHARS:
        raise FormatError("base58 text is too long", code="base58_invalid")
    n = 0
    for ch in text:
        digit = _B58_INDEX.get(ch)
        if digit is None:
            raise FormatError(f"{ch!r} is not a base58btc character", code="base58_invalid")
        n = n * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * zeros + body


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------

_DID_KEY_PREFIX: Final = "did:key:"
_MULTIBASE_BASE58BTC: Final = "z"
_ED25519_PUB_MULTICODEC: Final = b"\xed\x01"  # varint of 0xed, "ed25519-pub"
_DID_KEY_MAX_CHARS: Final = 128


def _require_bytes(value: object, size: int, what: str, code: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise FormatError(f"{what} must be bytes", code=code)
    raw = bytes(value)
    if len(raw) != size:
        raise FormatError(f"{what} must be {size} bytes, not {len(raw)}", code=code)
    return raw


@dataclass(frozen=True, slots=True, repr=False)
class PublicKey:
    """A 32-byte Ed25519 public key (RFC 8032 section 5.1.5 encoding)."""

    raw: bytes
    _nacl: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = _require_bytes(
            self.raw, PUBLIC_KEY_SIZE, "an Ed25519 public key", "public_key_invalid"
        )
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "_nacl", nacl.signing.VerifyKey(raw))

    def __repr__(self) -> str:
        return f"PublicKey({self.did!r})"

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        return cls(data)

    def to_bytes(self) -> bytes:
        return self.raw

    @classmethod
    def from_did(cls, did: str) -> PublicKey:
        return public_from_did_key(did)

    @property
    def did(self) -> str:
        """``did:key:z6Mk...`` for this key."""
        return did_key_from_public(self)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is a valid Ed25519 signature of ``message``.

        Never raises for a wrong, truncated or garbage signature.
        """
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            return False
        try:
            self._nacl.verify(bytes(message), signature)
        except nacl.exceptions.BadSignatureError:
            return False
        except (nacl.exceptions.ValueError, nacl.exceptions.TypeError, TypeError):
            return False
        return True

    def verify_or_raise(self, message: bytes, signature: bytes) -> None:
        """Raise VerificationError (``signature_invalid``) unless the signature verifies."""
        if not self.verify(message, signature):
            raise VerificationError(
                "the Ed25519 signature does not verify",
                code="signature_invalid",
                details={"key": self.did},
            )


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """An Ed25519 private key, held as its 32-byte RFC 8032 seed.

    ``repr`` never shows the seed.
    """

    seed: bytes = field(repr=False)
    _nacl: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    _public: PublicKey = field(init=False, compare=False)

    def __post_init__(self) -> None:
        seed = _require_bytes(self.seed, SEED_SIZE, "an Ed25519 seed", "signing_key_invalid")
        signer = nacl.signing.SigningKey(seed)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "_nacl", signer)
        object.__setattr__(self, "_public", PublicKey(bytes(signer.verify_key)))

    @classmethod
    def generate(cls, seed: bytes | None = None) -> SigningKey:
        """A new key from ``seed``, or from 32 fresh random bytes if none is given."""
        return cls(nacl.utils.random(SEED_SIZE) if seed is None else seed)

    def __repr__(self) -> str:
        return f"SigningKey(public={self.did!r})"

    @classmethod
    def from_bytes(cls, data: bytes) -> SigningKey:
        return cls(data)

    def to_bytes(self) -> bytes:
        return self.seed

    @property
    def public(self) -> PublicKey:
        return self._public

    @property
    def did(self) -> str:
        return self._public.did

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (deterministic, RFC 8032)."""
        return bytes(self._nacl.sign(bytes(message)).signature)


def did_key_from_public(public_key: PublicKey) -> str:
    """``did:key:z`` + base58btc(0xed 0x01 || 32-byte key)."""
    return (
        _DID_KEY_PREFIX
        + _MULTIBASE_BASE58BTC
        + base58btc_encode(_ED25519_PUB_MULTICODEC + public_key.raw)
    )


def public_from_did_key(did: str) -> PublicKey:
    """Parse an Ed25519 ``did:key``.

    Accepts exactly ``did:key:z<base58btc>`` whose decoding is the
    ed25519-pub multicodec prefix ``0xed 0x01`` and 32 key bytes; no DID URL
    parts (path, query, fragment), no other multibase or key type.
    FormatError codes: ``did_key_malformed``, ``did_key_multibase_unsupported``,
    ``did_key_type_unsupported``, ``did_key_length_invalid``.
    """
    if not isinstance(did, str) or len(did) > _DID_KEY_MAX_CHARS:
        raise FormatError("not a did:key string", code="did_key_malformed")
    if not did.startswith(_DID_KEY_PREFIX):
        raise FormatError("a did:key must start with 'did:key:'", code="did_key_malformed")
    identifier = did[len(_DID_KEY_PREFIX) :]
    if not identifier:
        raise FormatError("the did:key has no key", code="did_key_malformed")
    if identifier[0] != _MULTIBASE_BASE58BTC:
        raise FormatError(
            "only base58btc ('z') multibase did:keys are supported",
            code="did_key_multibase_unsupported",
        )
    try:
        decoded = base58btc_decode(identifier[1:])
    except FormatError as e:
        raise FormatError(
            f"the did:key is not base58btc: {e.message}", code="did_key_malformed"
        ) from e
    if not decoded.startswith(_ED25519_PUB_MULTICODEC):
        raise FormatError(
            "only Ed25519 (multicodec 0xed01) did:keys are supported",
            code="did_key_type_unsupported",
        )
    if len(decoded) != len(_ED25519_PUB_MULTICODEC) + PUBLIC_KEY_SIZE:
        raise FormatError(
            f"an Ed25519 did:key holds 34 bytes, not {len(decoded)}", code="did_key_length_invalid"
        )
    key = PublicKey(decoded[len(_ED25519_PUB_MULTICODEC) :])
    if did_key_from_public(key) != did:  # base58 is bijective; belt and braces
        raise FormatError("the did:key is not in canonical form", code="did_key_malformed")
    return key


# --------------------------------------------------------------------------
# Key file (docs/spec/keyfile.md)
# --------------------------------------------------------------------------

KEY_FILE_HEADER: Final = "remembrancer-ed25519-private-key-v1"
MAX_KEY_FILE_BYTES: Final = 4096


def format_key_file(key: SigningKey) -> bytes:
    """The exact bytes of ``key``'s key file."""
    seed_b64 = base64.b64encode(key.seed).decode("ascii")
    return f"{KEY_FILE_HEADER}\n{seed_b64}\n{key.did}\n".encode("ascii")


def parse_key_file(data: bytes) -> SigningKey:
    """Parse key-file bytes strictly; any deviation is a FormatError.

    Codes: ``keyfile_too_large``, ``keyfile_malformed``, ``keyfile_version``,
    ``keyfile_seed_invalid``, ``keyfile_did_mismatch``.
    """
    if len(data) > MAX_KEY_FILE_BYTES:
        raise FormatError(
            f"a key file is at most {MAX_KEY_FILE_BYTES} bytes", code="keyfile_too_large"
        )
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError as e:
        raise FormatError("a key file is ASCII text", code="keyfile_malformed") from e
    if not text.endswith("\n"):
        raise FormatError("a key file ends with a newline", code="keyfile_malformed")
    lines = text[:-1].split("\n")
    if lines[0] != KEY_FILE_HEADER:
        raise FormatError(
            f"the first line of a key file must be {KEY_FILE_HEADER!r}", code="keyfile_version"
        )
    if len(lines) != 3:
        raise FormatError("a key file has exactly three lines", code="keyfile_malformed")
    _, seed_b64, did = lines
    try:
        seed = base64.b64decode(seed_b64.encode("ascii"), validate=True)
    except (binascii.Error, ValueError) as e:
        raise FormatError("the seed line is not base64", code="keyfile_seed_invalid") from e
    if len(seed) != SEED_SIZE or base64.b64encode(seed).decode("ascii") != seed_b64:
        raise FormatError(
            "the seed line must be the canonical base64 of 32 bytes", code="keyfile_seed_invalid"
        )
    key = SigningKey(seed)
    if did != key.did:
        raise FormatError(
            "the did:key line does not match the seed",
            code="keyfile_did_mismatch",
            details={"expected": key.did},
        )
    if format_key_file(key) != data:  # every byte is accounted for above
        raise FormatError("the key file is not in canonical form", code="keyfile_malformed")
    return key
