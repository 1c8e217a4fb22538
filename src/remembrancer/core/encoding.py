"""Base64 in the project's two forms, each encoded and decoded in one place.

- *Standard* base64 with padding (RFC 4648 section 4): signed-note
  signatures, tlog-proof and evidence files, hashes in JSON.
  :func:`decode_base64` accepts only the canonical encoding: the standard
  alphabet, padding present, zero padding bits, no white space.
- *Unpadded base64url* (RFC 4648 section 5): record and federation message
  signatures, backup manifest signatures.  :func:`b64url_decode` accepts
  only the canonical encoding.

Every decoder raises :class:`~remembrancer.core.errors.FormatError` with
the caller's code and names what was being decoded.  Pure.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from remembrancer.core.errors import FormatError

__all__ = ["b64url_decode", "b64url_decode_64", "b64url_encode", "decode_base64", "encode_base64"]

_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_URL_TO_STRICT: Final = bytes.maketrans(b"-_+/=", b"+/!!!")  # see b64url_decode_64
_PAD: Final = (b"", b"", b"==", b"=")
_URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_STD_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The 6-bit value of each character of either alphabet (0 for anything else).
_VALUE: Final = bytes(
    _URL_ALPHABET.find(c) if c in _URL_ALPHABET else max(_STD_ALPHABET.find(c), 0)
    for c in range(256)
)
# The low bits of the last character that a canonical encoding leaves zero,
# by the length of the final group (2 characters: 4 bits; 3 characters: 2 bits).
_PAD_BITS: Final = (0, 0, 0x0F, 0x03)


def encode_base64(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def decode_base64(text: str, *, what: str, code: str) -> bytes:
    """Decode canonical, padded, standard base64 (RFC 4648 section 4).

    Anything else (other alphabets, missing padding, non-zero padding bits,
    white space) is a FormatError with ``code``.  Checked in one pass, without
    encoding the result again: the alphabet, the length, at most two ``=``
    at the end, and zero padding bits in the last character.
    """
    if type(text) is not str or not text.isascii():
        raise FormatError(f"{what} is not valid base64", code=code)
    raw = text.encode("ascii")
    body = raw.rstrip(b"=")
    pad = len(raw) - len(body)
    if len(raw) % 4 or pad > 2 or body.translate(None, _STD_ALPHABET):
        raise FormatError(f"{what} is not valid base64", code=code)
    if pad and (len(body) % 4 != 4 - pad or _VALUE[body[-1]] & _PAD_BITS[4 - pad]):
        raise FormatError(f"{what} is not canonical base64", code=code)
    return binascii.a2b_base64(raw)


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), the encoding of record signatures."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode_64(text: object) -> bytes | None:
    """The 64 bytes (an Ed25519 signature) of their canonical unpadded base64url
    encoding, or None for anything else (which :func:`b64url_decode` then
    decodes or refuses with its reason).  86 characters of the alphabet; the
    last holds 2 bits of data and 4 zero bits, so it is A, Q, g or w.

    One translation and one strict decode: ``-`` and ``_`` become the standard
    alphabet's ``+`` and ``/``, and the standard ``+``, ``/`` and ``=`` become a
    character of neither, which the strict decoder refuses (as it refuses
    anything outside the alphabet)."""
    if type(text) is not str or len(text) != 86 or text[85] not in "AQgw":
        return None
    try:
        raw = text.encode("latin-1").translate(_URL_TO_STRICT)
        return binascii.a2b_base64(raw + b"==", strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        return None


def b64url_decode(text: str, *, what: str = "value", code: str = "record_field_type") -> bytes:
    """Strict unpadded base64url: the canonical encoding only.

    Checked in one pass, without encoding the result again: only the
    base64url alphabet (no ``+``, ``/``, ``=`` or white space), a length that
    is not 1 modulo 4, and zero padding bits in the last character."""
    if type(text) is not str or not text.isascii():
        raise FormatError(f"{what} is not unpadded base64url", code=code)
    raw = text.encode("ascii")
    tail = len(raw) % 4
    if tail == 1 or raw.translate(None, _URL_ALPHABET):
        raise FormatError(f"{what} is not unpadded base64url", code=code)
    if tail and _VALUE[raw[-1]] & _PAD_BITS[tail]:
        raise FormatError(f"{what} is not canonical base64url", code=code)
    return binascii.a2b_base64(raw.translate(_TO_STANDARD) + _PAD[tail])
