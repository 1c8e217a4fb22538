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

__all__ = ["b64url_decode", "b64url_encode", "decode_base64", "encode_base64"]

_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_PAD: Final = ("", "", "==", "=")


def encode_base64(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def decode_base64(text: str, *, what: str, code: str) -> bytes:
    """Decode canonical, padded, standard base64 (RFC 4648 section 4).

    Anything else (other alphabets, missing padding, non-zero padding bits,
    white space) is a FormatError with ``code``.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise FormatError(f"{what} is not valid base64", code=code) from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what} is not canonical base64", code=code)
    return raw


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), the encoding of record signatures."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str = "value", code: str = "record_field_type") -> bytes:
    """Strict unpadded base64url: the canonical encoding only."""
    if not isinstance(text, str) or len(text) % 4 == 1 or not text.isascii():
        raise FormatError(f"{what} is not unpadded base64url", code=code)
    try:
        raw = binascii.a2b_base64(
            (text + _PAD[len(text) % 4]).encode("ascii").translate(_TO_STANDARD), strict_mode=True
        )
    except (binascii.Error, ValueError) as e:
        raise FormatError(f"{what} is not unpadded base64url", code=code) from e
    if b64url_encode(raw) != text:  # '+', '/', '=' or non-zero padding bits
        raise FormatError(f"{what} is not canonical base64url", code=code)
    return raw
