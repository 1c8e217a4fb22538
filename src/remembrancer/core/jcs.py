"""Canonical JSON, RFC 8785 (JSON Canonicalization Scheme).

A fast canonicaliser checked against the ``rfc8785`` package (which it
uses for non-integral numbers) under Hypothesis: values that RFC 8785
cannot represent (NaN, infinities, integers beyond the IEEE 754 exact range
of section 3.2.2.3, non-string keys, lone surrogates) raise
:class:`~remembrancer.core.errors.FormatError` with code ``jcs_invalid``.
Never substitute sorted ``json.dumps``: it differs for numbers and for
non-ASCII text.
"""

from __future__ import annotations

import hashlib
import json
import re
from json.encoder import encode_basestring as _encode_string
from typing import Any

import rfc8785

from remembrancer.core.errors import FormatError

MAX_DEPTH = 64


_MAX_SAFE = 2**53 - 1


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _float_text(value: float) -> str:
    # RFC 8785 section 3.2.2.3: ECMAScript Number serialisation.  Integral values
    # in the exact range print as integers (-0 as 0); the rest go to rfc8785.
    if value.is_integer() and -_MAX_SAFE <= value <= _MAX_SAFE:
        return str(int(value))
    return rfc8785.dumps(value).decode("ascii")


def _emit(value: Any, out: list[str], depth: int) -> None:
    kind = type(value)
    if kind is str:
        out.append(_encode_string(value))
    elif kind is dict:
        if depth > MAX_DEPTH:
            raise FormatError(f"JSON nesting deeper than {MAX_DEPTH}", code="jcs_invalid")
        keys = list(value)
        for k in keys:
            if type(k) is not str:
                raise FormatError("object keys must be strings", code="jcs_invalid")
        # Section 3.2.3: sort by UTF-16 code units; for ASCII keys that is plain order.
        if all(k.isascii() for k in keys):
            keys.sort()
        else:
            keys.sort(key=_utf16_key)
        out.append("{")
        first = True
        for k in keys:
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(k))
            out.append(":")
            _emit(value[k], out, depth + 1)
        out.append("}")
    elif kind is list or kind is tuple:
        if depth > MAX_DEPTH:
            raise FormatError(f"JSON nesting deeper than {MAX_DEPTH}", code="jcs_invalid")
        out.append("[")
        first = True
        for item in value:
            if not first:
                out.append(",")
            first = False
            _emit(item, out, depth + 1)
        out.append("]")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif kind is int:
        if not -_MAX_SAFE <= value <= _MAX_SAFE:
            raise FormatError(
                f"integer {value} is outside the I-JSON exact range", code="jcs_invalid"
            )
        out.append(str(value))
    elif kind is float:
        try:
            out.append(_float_text(value))
        except (rfc8785.CanonicalizationError, ValueError, OverflowError) as e:
            raise FormatError(f"number cannot be canonicalised: {e}", code="jcs_invalid") from e
    else:
        raise FormatError(f"{kind.__name__} is not a JSON value", code="jcs_invalid")


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``.

    Strings are escaped as section 3.2.2.2 requires (the standard library's
    JSON string encoder escapes exactly that set, with lowercase hex), object
    members are sorted by UTF-16 code units (3.2.3), numbers follow
    ECMAScript (3.2.2.3).  Lone surrogates, non-string keys, NaN, infinities
    and integers outside +-(2**53 - 1) raise FormatError (code ``jcs_invalid``).
    """
    out: list[str] = []
    _emit(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as e:
        raise FormatError("string holds a lone surrogate", code="jcs_invalid") from e


def canonical_members(value: dict[str, Any]) -> dict[str, str]:
    """Canonical text of each member ``"key":value`` of a top-level object.

    Lets a caller build the canonical form of the object with and without some
    members (e.g. a record with and without ``signatures``) while serialising
    each member once; see :func:`join_members`.
    """
    members: dict[str, str] = {}
    for k, v in value.items():
        if type(k) is not str:
            raise FormatError("object keys must be strings", code="jcs_invalid")
        out = [_encode_string(k), ":"]
        _emit(v, out, 1)
        members[k] = "".join(out)
    return members


def join_members(members: dict[str, str], *, exclude: str | None = None) -> bytes:
    """Canonical bytes of the object whose members :func:`canonical_members` produced."""
    keys = [k for k in members if k != exclude]
    if all(k.isascii() for k in keys):
        keys.sort()
    else:
        keys.sort(key=_utf16_key)
    try:
        return ("{" + ",".join(members[k] for k in keys) + "}").encode("utf-8")
    except UnicodeEncodeError as e:
        raise FormatError("string holds a lone surrogate", code="jcs_invalid") from e


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
        raise FormatError(
            "a hash must be 'sha256:' and 64 lowercase hex digits", code="hash_malformed"
        )
    return bytes.fromhex(text[7:])


def _reject_constant(name: str) -> Any:
    raise FormatError(f"JSON constant {name} is not allowed", code="json_malformed")


def check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise FormatError(f"JSON nesting deeper than {MAX_DEPTH}", code="json_too_deep")
    if isinstance(value, dict):
        for v in value.values():
            check_depth(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_depth(v, depth + 1)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"duplicate JSON key {k!r}", code="json_duplicate_key")
        out[k] = v
    return out


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS_ONLY = bytes(range(256)).translate(None, b"[]{}")


def check_nesting(data: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON text nested deeper than ``limit`` *before* parsing it.

    The standard library's decoder recurses once per level and relies on the
    interpreter's recursion limit, which some libraries raise (py_ecc sets it
    to 100,000); a deeply nested body could then overflow the C stack.  Cheap
    for ordinary input: when there are at most ``limit`` brackets in all, the
    depth cannot exceed it."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return
    depth = 0
    for c in _JSON_STRING.sub(b"", data).translate(None, _BRACKETS_ONLY):
        if c == 91 or c == 123:
            depth += 1
            if depth > limit:
                raise FormatError(f"JSON nesting deeper than {limit}", code="json_too_deep")
        else:
            depth -= 1


def loads_strict(data: bytes | str, *, max_bytes: int = 1 << 20) -> Any:
    """Parse JSON strictly: UTF-8, no duplicate keys, no NaN/Infinity, bounded size and depth."""
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise FormatError(f"JSON larger than {max_bytes} bytes", code="json_too_large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError("JSON is not valid UTF-8", code="json_malformed") from e
        check_nesting(data)
    else:
        text = data
        if len(text) > max_bytes:
            raise FormatError(f"JSON larger than {max_bytes} bytes", code="json_too_large")
        check_nesting(text.encode("utf-8", "surrogatepass"))
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
    check_depth(value)
    return value
