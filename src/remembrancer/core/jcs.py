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
import math
import re
from collections.abc import Callable
from json.encoder import encode_basestring as _encode_string
from typing import Any, Final, TypeVar

import msgspec
import rfc8785

from remembrancer.core.errors import FormatError

MAX_DEPTH = 64
T = TypeVar("T")


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


# --- parsing: the one strict JSON parser --------------------------------------------------
#
# Every input from outside (records, federation messages, HTTP bodies, files the
# command line reads, backup archives) is parsed here, by :func:`loads_strict`, or,
# for input that is already canonical, by its fast path :func:`parse_canonical`.
# Both refuse exactly what RFC 8785 cannot represent, so that anything they return
# can be canonicalised and hashed as it was signed.

_MAX_INT_DIGITS = 16  # 2**53 - 1 has 16 digits


def _number_invalid(text: str, why: str) -> FormatError:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return FormatError(
        f"the JSON number {shown} {why}, which RFC 8785 cannot represent",
        code="json_number_invalid",
        details={"number": shown},
    )


def _reject_constant(name: str) -> Any:
    raise _number_invalid(name, "is not a finite number")


def _strict_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _number_invalid(text, "overflows an IEEE 754 double")
    return value


def _strict_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > _MAX_INT_DIGITS or not -_MAX_SAFE <= (value := int(text)) <= _MAX_SAFE:
        raise _number_invalid(text, "is an integer outside +-(2**53 - 1)")
    return value


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
# A \u escape of a UTF-16 surrogate (D800-DFFF): only such text can decode to a
# string holding a lone surrogate (strict UTF-8 decoding refuses encoded ones).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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


def _lone_surrogate(value: Any) -> bool:
    """Whether a string (or key) in ``value`` holds a lone surrogate code point
    (a surrogate pair written as two escapes decodes to one code point)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


_strict_decode = json.JSONDecoder(
    object_pairs_hook=_no_duplicate_keys,
    parse_constant=_reject_constant,
    parse_float=_strict_float,
    parse_int=_strict_int,
).decode


def loads_strict(data: bytes | str, *, max_bytes: int = 1 << 20) -> Any:
    """Parse JSON text strictly: the one parser for everything that comes from outside.

    Refused, each with a :class:`FormatError` and its own code:

    - more than ``max_bytes`` (``json_too_large``), nested deeper than
      :data:`MAX_DEPTH` (``json_too_deep``);
    - not UTF-8 (RFC 8259 section 8.1), not JSON, or trailing data
      (``json_malformed``);
    - a member name twice in one object (``json_duplicate_key``: RFC 8785
      section 3.1 needs unique names, and which value counts would be up to
      the parser);
    - ``NaN``, ``Infinity``, ``-Infinity``, a number that overflows a double
      (``1e400``), or an integer outside +-(2**53 - 1) (``json_number_invalid``:
      RFC 8785 section 3.2.2.3 represents numbers as IEEE 754 doubles, and
      I-JSON's exact integer range is what survives a round trip);
    - a string holding a lone surrogate, written as a ``\\uD800`` escape
      (``json_string_invalid``: RFC 8785 section 3.2.2.2 serialises UTF-8).

    So every value it returns can be canonicalised (:func:`canonicalize`)
    and hashes as its signer hashed it.  The API is bytes in, value out
    (``str`` is accepted for text already decoded), so that a faster
    single-pass implementation can replace it.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
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
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise FormatError("JSON text holds a lone surrogate", code="json_string_invalid") from e
        check_nesting(raw)
    try:
        value = _strict_decode(text)
    except FormatError:
        raise
    except RecursionError as e:
        raise FormatError(f"JSON nesting deeper than {MAX_DEPTH}", code="json_too_deep") from e
    except ValueError as e:
        raise FormatError(f"invalid JSON: {e}", code="json_malformed") from e
    check_depth(value)
    if _SURROGATE_ESCAPE.search(text) is not None and _lone_surrogate(value):
        raise FormatError(
            "a JSON string holds a lone surrogate (an unpaired \\uD800-\\uDFFF escape),"
            " which UTF-8 and RFC 8785 cannot represent",
            code="json_string_invalid",
        )
    return value


# --- the fast path for canonical input ------------------------------------------------------


class _NotFast(Exception):
    pass


def _not_fast(text: str) -> Any:
    raise _NotFast


# Digits to 0 (runs of digits found at C speed) and { to [ (brackets counted in one pass).
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789{", b"000000000[")
_SIXTEEN_DIGITS: Final = b"0" * 16
_BELOW_F0: Final = bytes(range(0xF0))


def _ints_exact(data: bytes, zeros: bytes) -> bool:
    """False if ``data`` may hold a number outside the I-JSON exact range.

    ``2**53 - 1`` has 16 digits, so only runs of 16 or more digits matter;
    they are found at C speed (``zeros``: ``data`` translated by
    :data:`_DIGITS_TO_ZERO`).  A run counts when it starts a number token
    (at the start or after ``:``, ``,`` or ``[``, maybe with ``-``); one inside a string that
    looks like that only sends the input down the strict path.
    """
    i = zeros.find(_SIXTEEN_DIGITS)
    while i >= 0:
        j = i + 16
        while j < len(zeros) and zeros[j] == 48:
            j += 1
        start = i - 1 if data[i - 1 : i] == b"-" else i
        if (start == 0 or data[start - 1 : start] in (b":", b",", b"[")) and (
            j - i > 16 or int(data[i:j]) > _MAX_SAFE
        ):
            return False
        i = zeros.find(_SIXTEEN_DIGITS, j)
    return True


_ALL_BUT_QUOTES_AND_BRACKETS: Final = bytes(c for c in range(256) if c not in b'"[]{}')


def _nesting_within(data: bytes, brackets: int, limit: int = MAX_DEPTH) -> bool:
    """True if brackets outside strings nest at most ``limit`` deep (before parsing,
    so the recursive decoder never goes deeper; same rule as :func:`check_nesting`);
    ``brackets``: how many ``[`` and ``{`` ``data`` holds (at most ``limit``: true).

    Escaped backslashes and quotes are removed first (left to right, as a JSON
    parser pairs them), the strings are then what lies between alternate quotes.
    """
    if brackets <= limit:
        return True
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(data.translate(None, _ALL_BUT_QUOTES_AND_BRACKETS).split(b'"')[0::2])
    depth = 0
    for c in outside:
        if c == 91 or c == 123:
            depth += 1
            if depth > limit:
                return False
        else:
            depth -= 1
    return True


# The standard library's sorted compact encoder (dumps_plain): the C encoder
# called directly, what JSONEncoder.encode runs, without its Python layers.
_plain_encoder: Final = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), check_circular=False,
    allow_nan=False,
)  # fmt: skip
_plain_dumps: Callable[[Any], str] = _plain_encoder.encode
try:
    from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]

    _c_plain = c_make_encoder(None, _plain_encoder.default, c_encode_basestring, None, ":", ",",
                              True, False, False)  # fmt: skip

    def _plain_dumps(value: Any) -> str:
        if type(value) is dict:
            return "".join(_c_plain(value, 0))
        return _plain_encoder.encode(value)

    if _plain_dumps({"b": [1, "\u00e9\n"], "a": None}) != '{"a":null,"b":[1,"\u00e9\\n"]}':
        raise ImportError("the C encoder does not encode as JSONEncoder does")
except (ImportError, TypeError):
    _plain_dumps = _plain_encoder.encode


# parse_canonical's engine: msgspec's JSON decoder (a fraction or exponent leaves
# the fast path: its RFC 8785 text is not what an encoder that is not RFC 8785
# writes) and its encoder with sorted keys.  For the values parse_canonical lets
# through (no fractions, integers under 16 digits, strings without characters
# beyond U+FFFF or lone surrogates) that encoder writes RFC 8785: sorted keys (code
# point order, which is UTF-16 code unit order without surrogates), no white
# space, integers in decimal, and the same string escapes (the two-character
# escapes for backspace, tab, line feed, form feed and carriage return, \u00xx in
# lower case for the other control characters, backslash and quote escaped,
# everything else as UTF-8).  Checked once at import against canonicalize, and
# under Hypothesis in tests/unit/test_jcs.py.
_msgspec_decode: Final = msgspec.json.Decoder(float_hook=_not_fast).decode
_msgspec_encode: Final = msgspec.json.Encoder(order="sorted").encode
_ENGINE_PROBE: Final = {"\u00e9\u2028\x7f\x00\b\t\n\x0b\f\r\x1f\"\\/": [-12, None, True, ""],
                        "Z": {}, "a\uffff": False, "a\u00e9": 0}  # fmt: skip
if _msgspec_encode(_ENGINE_PROBE) != canonicalize(_ENGINE_PROBE):
    raise ImportError(
        f"msgspec {msgspec.__version__} does not write RFC 8785 for plain values:"
        " the canonical fast path would be unsound; install the pinned version"
    )


def dumps_plain(value: Any) -> bytes:
    """The standard library's sorted, compact, non-ASCII-escaping encoding of
    ``value``; it equals :func:`canonicalize` for any value that
    :func:`parse_canonical` returned (and for its members)."""
    return _plain_dumps(value).encode("utf-8")


def parse_canonical(data: bytes) -> Any | None:
    """The value of ``data`` when ``data`` is provably its own RFC 8785 form, else None.

    The fast path of :func:`loads_strict` for input that is usually canonical
    already (signed records, federation messages, log entries).  For text
    without fractions, integers of 16 digits or more, or characters beyond
    U+FFFF (no UTF-8 lead byte 0xF0 or above), RFC 8785 equals msgspec's
    sorted compact encoding (see the engine's comment above), so byte
    equality with that re-encoding proves the input canonical, free of
    duplicate keys (the re-encoding of a value keeps one of them), and free
    of lone surrogates (the decoder refuses them).  None means "not proven":
    the caller parses with :func:`loads_strict`, which also names what is
    wrong (``NaN``, a lone surrogate, a duplicate key).  Raises for nesting
    deeper than :data:`MAX_DEPTH`.
    """
    return parse_canonical_typed(data, _msgspec_decode)


def _fast_candidate(data: bytes) -> bool:
    """Whether ``data`` is free of what the fast path cannot prove canonical
    (characters beyond U+FFFF, integers of 16 digits or more); raises for
    nesting deeper than :data:`MAX_DEPTH`."""
    if not (data.isascii() or not data.translate(None, _BELOW_F0)):
        return False
    zeros = data.translate(_DIGITS_TO_ZERO)
    if not _ints_exact(data, zeros):
        return False
    if not _nesting_within(data, zeros.count(b"[")):
        raise FormatError(f"JSON nesting deeper than {MAX_DEPTH}", code="json_too_deep")
    return True


def typed_decoder(kind: type[T]) -> Callable[[bytes], T]:
    """A decoder of JSON into the :class:`msgspec.Struct` ``kind`` for
    :func:`parse_canonical_typed` (a fraction or exponent anywhere in an
    untyped member leaves the fast path, as in :func:`parse_canonical`)."""
    return msgspec.json.Decoder(kind, float_hook=_not_fast).decode


def parse_canonical_typed(data: bytes, decode: Callable[[bytes], T]) -> T | None:
    """:func:`parse_canonical` into a :class:`msgspec.Struct`: the decoded
    struct when ``data`` is provably its own RFC 8785 form and fits the
    struct's type, else None (the caller then parses as a plain value and
    names what is wrong).

    ``decode`` comes from :func:`typed_decoder` (or is the untyped decoder of
    :func:`parse_canonical`).  The struct must declare its
    fields in the order of their JSON names and give every optional field
    the default ``msgspec.UNSET`` with ``omit_defaults=True``: then the
    sorted encoding of the struct writes exactly the members that were
    present, in RFC 8785 order, and byte equality with ``data`` proves the
    same as in :func:`parse_canonical` (canonical form, no duplicate keys, no
    unknown members if the struct forbids them)."""
    if not _fast_candidate(data):
        return None
    try:
        value = decode(data)
    except (_NotFast, msgspec.DecodeError, RecursionError):
        return None
    if _msgspec_encode(value) != data:
        return None
    return value
