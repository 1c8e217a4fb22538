"""Canonical JSON, RFC 8785 (JSON Canonicalization Scheme).

A thin, strict wrapper over the ``rfc8785`` package: values that RFC 8785
cannot represent (NaN, infinities, integers beyond the IEEE 754 exact range
of section 3.2.2.3, non-string keys, lone surrogates) raise
:class:`~remembrancer.core.errors.FormatError` with code ``jcs_invalid``.
Never substitute sorted ``json.dumps``: it differs for numbers and for
non-ASCII text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

from remembrancer.core.errors import FormatError

MAX_DEPTH = 64


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as e:
        raise FormatError(f"value cannot be canonicalised: {e}", code="jcs_invalid") from e
    except (TypeError, ValueError, RecursionError, UnicodeError) as e:
        raise FormatError(f"value cannot be canonicalised: {e}", code="jcs_invalid") from e


def sha256_hex(data: bytes) -> str:
    """``sha256:<64 lowercase hex>``, the JSON form of a hash (DESIGN 3.1)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_sha256_hex(text: str) -> bytes:
    """Parse ``sha256:<64 lowercase hex>`` into 32 bytes."""
    if (
        not isinstance(text, str)
        or len(text) != 71
        or not text.startswith("sha256:")
        or any(c not in "0123456789abcdef" for c in text[7:])
    ):
        raise FormatError("a hash must be 'sha256:' and 64 lowercase hex digits", code="hash_malformed")
    return bytes.fromhex(text[7:])


def _reject_constant(name: str) -> Any:
    raise FormatError(f"JSON constant {name} is not allowed", code="json_malformed")


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise FormatError(f"JSON nesting deeper than {MAX_DEPTH}", code="json_too_deep")
    if isinstance(value, dict):
        for v in value.values():
            _check_depth(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_depth(v, depth + 1)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"duplicate JSON key {k!r}", code="json_duplicate_key")
        out[k] = v
    return out


def loads_strict(data: bytes | str, *, max_bytes: int = 1 << 20) -> Any:
    """Parse JSON strictly: UTF-8, no duplicate keys, no NaN/Infinity, bounded size and depth."""
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise FormatError(f"JSON larger than {max_bytes} bytes", code="json_too_large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError("JSON is not valid UTF-8", code="json_malformed") from e
    else:
        text = data
        if len(text) > max_bytes:
            raise FormatError(f"JSON larger than {max_bytes} bytes", code="json_too_large")
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except FormatError:
        raise
    except RecursionError as e:
        raise FormatError(f"JSON nesting deeper than {MAX_DEPTH}", code="json_too_deep") from e
    except ValueError as e:
        raise FormatError(f"invalid JSON: {e}", code="json_malformed") from e
    _check_depth(value)
    return value
