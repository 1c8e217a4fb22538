"""A bounded reader of BER/DER tag-length-value structure (ITU-T X.690), no schema.

The RFC 3161 rail reads tokens that real TSAs encode in BER where nothing is
signed (Bouncy Castle's indefinite lengths, certificate sets not in DER order)
while the parts a signature covers must be verified over the bytes exactly as
received.  :func:`read` gives the exact byte span of every element, so the
verifier can take the signed attributes and the encapsulated TSTInfo from the
input itself rather than from a re-encoding; :func:`der_framing_error` says
whether an element is framed as DER requires (definite, minimal lengths and
tags, primitive strings).

Pure and bounded: at most :data:`MAX_DEPTH` levels of nesting and
:data:`MAX_ELEMENTS` elements, exactly one element with no trailing byte;
anything else raises :class:`BerError` (a ``ValueError``).

Example::

    >>> data = bytes.fromhex("3080020105" "0000")  # a SEQUENCE of indefinite length
    >>> top = read(data)
    >>> top.indefinite, top.children[0].content(data)
    (True, b'\\x05')
    >>> der_framing_error(top)
    'indefinite length at offset 0'
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH = 48
MAX_ELEMENTS = 20_000

# Universal types DER encodes only in primitive form (X.690 section 10.2): the
# string types and times, which BER may also split into constructed pieces.
_PRIMITIVE_ONLY = frozenset({1, 2, 3, 4, 5, 6, 9, 10, 12, 13, 18, 19, 20, 21, 22, 23, 24,
                             25, 26, 27, 28, 29, 30})  # fmt: skip


# Universal types that are primitive in BER too (X.690 section 8): BOOLEAN, INTEGER,
# NULL, OBJECT IDENTIFIER, REAL, ENUMERATED, RELATIVE-OID.
_ALWAYS_PRIMITIVE = frozenset({1, 2, 5, 6, 9, 10, 13})


class BerError(ValueError):
    """The bytes are not one well-formed, bounded BER element."""


@dataclass(frozen=True, slots=True)
class Tlv:
    """One element: its identifier, where its parts lie in the input, its children."""

    tag_class: int  # 0 universal, 1 application, 2 context-specific, 3 private
    constructed: bool
    tag_number: int
    start: int  # offset of the identifier octets
    content_start: int
    content_end: int  # exclusive; before the end-of-contents octets of an indefinite length
    end: int  # exclusive; after the end-of-contents octets
    indefinite: bool
    minimal_header: bool  # tag and length octets in their shortest form
    children: tuple[Tlv, ...]

    def raw(self, data: bytes) -> bytes:
        """The element exactly as received (identifier, length, contents)."""
        return data[self.start : self.end]

    def content(self, data: bytes) -> bytes:
        """The contents octets as received (for a primitive element, its value)."""
        return data[self.content_start : self.content_end]

    def is_(self, tag_class: int, tag_number: int) -> bool:
        return self.tag_class == tag_class and self.tag_number == tag_number

    def string_value(self, data: bytes) -> bytes:
        """The value of a string element, primitive or constructed (X.690 section 8.7.3)."""
        if not self.constructed:
            return self.content(data)
        return b"".join(child.string_value(data) for child in self.children)


def read(data: bytes, *, max_depth: int = MAX_DEPTH) -> Tlv:
    """Parse ``data`` as exactly one BER element; raises :class:`BerError`."""
    budget = [MAX_ELEMENTS]
    tlv = _read_one(data, 0, len(data), 0, max_depth, budget)
    if tlv.end != len(data):
        raise BerError(f"{len(data) - tlv.end} byte(s) of trailing data after the element")
    return tlv


def _read_one(data: bytes, pos: int, limit: int, depth: int, max_depth: int,
              budget: list[int]) -> Tlv:  # fmt: skip
    if depth > max_depth:
        raise BerError(f"nested deeper than {max_depth} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise BerError(f"more than {MAX_ELEMENTS} elements")
    start = pos
    if pos >= limit:
        raise BerError(f"truncated at offset {pos}")
    first = data[pos]
    pos += 1
    tag_class, constructed, number = first >> 6, bool(first & 0x20), first & 0x1F
    minimal = True
    if number == 0x1F:  # high tag number form (X.690 section 8.1.2.4)
        number = 0
        if pos < limit and data[pos] == 0x80:
            minimal = False
        for _ in range(4):
            if pos >= limit:
                raise BerError(f"truncated tag at offset {start}")
            octet = data[pos]
            pos += 1
            number = (number << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
        else:
            raise BerError(f"tag number too large at offset {start}")
        if number < 0x1F:
            minimal = False
    if pos >= limit:
        raise BerError(f"truncated length at offset {start}")
    length_octet = data[pos]
    pos += 1
    indefinite = length_octet == 0x80
    length = 0
    if length_octet == 0xFF:
        raise BerError(f"reserved length octet at offset {start}")
    if length_octet & 0x80 and not indefinite:
        count = length_octet & 0x7F
        if count > 4 or pos + count > limit:
            raise BerError(f"bad length at offset {start}")
        raw_length = data[pos : pos + count]
        pos += count
        length = int.from_bytes(raw_length, "big")
        if raw_length[0] == 0 or length < 0x80:
            minimal = False
    elif not indefinite:
        length = length_octet
    if indefinite:
        if not constructed:
            raise BerError(f"indefinite length on a primitive element at offset {start}")
        children: list[Tlv] = []
        cursor = pos
        while True:
            if cursor + 2 <= limit and data[cursor] == 0 and data[cursor + 1] == 0:
                return Tlv(tag_class, True, number, start, pos, cursor, cursor + 2, True, False,
                           tuple(children))  # fmt: skip
            child = _read_one(data, cursor, limit, depth + 1, max_depth, budget)
            children.append(child)
            cursor = child.end
    end = pos + length
    if end > limit:
        raise BerError(f"element at offset {start} runs past its container")
    if tag_class == 0 and number == 0:
        raise BerError(f"end-of-contents octets out of place at offset {start}")
    if tag_class == 0:
        if constructed and number in _ALWAYS_PRIMITIVE:
            raise BerError(f"universal type {number} in constructed form at offset {start}")
        if not constructed and number in (16, 17):
            raise BerError(f"a SEQUENCE or SET in primitive form at offset {start}")
        if not constructed:
            _check_primitive(number, data[pos:end], start)
    kids: list[Tlv] = []
    if constructed:
        cursor = pos
        while cursor < end:
            child = _read_one(data, cursor, end, depth + 1, max_depth, budget)
            kids.append(child)
            cursor = child.end
    return Tlv(tag_class, constructed, number, start, pos, end, end, False, minimal, tuple(kids))


def _check_primitive(number: int, value: bytes, start: int) -> None:
    """The BER rules for the contents of a few universal types (X.690 section 8),
    which BER and DER share and OpenSSL enforces."""
    if number == 1 and len(value) != 1:
        raise BerError(f"a BOOLEAN is one octet (offset {start})")
    if number == 5 and value:
        raise BerError(f"a NULL has no contents (offset {start})")
    if number in (2, 10):  # INTEGER, ENUMERATED: at least one octet, shortest form
        if not value:
            raise BerError(f"an empty INTEGER at offset {start}")
        if len(value) > 1 and (
            (value[0] == 0 and not value[1] & 0x80) or (value[0] == 0xFF and value[1] & 0x80)
        ):
            raise BerError(f"an INTEGER with superfluous leading octets at offset {start}")
    if number in (6, 13):  # OBJECT IDENTIFIER, RELATIVE-OID: shortest sub-identifiers
        if not value or value[-1] & 0x80:
            raise BerError(f"a truncated OBJECT IDENTIFIER at offset {start}")
        previous_ended = True
        for octet in value:
            if previous_ended and octet == 0x80:
                raise BerError(f"an OBJECT IDENTIFIER sub-identifier padded at offset {start}")
            previous_ended = not octet & 0x80


def der_framing_error(tlv: Tlv) -> str | None:
    """Why ``tlv`` (and everything inside it) is not framed as DER requires, or None.

    Checks the framing only: definite lengths, shortest tag and length forms,
    primitive encoding of strings and times.  Value rules (SET OF order,
    DEFAULT values) need the schema and are not checked here."""
    if tlv.indefinite:
        return f"indefinite length at offset {tlv.start}"
    if not tlv.minimal_header:
        return f"a tag or length not in its shortest form at offset {tlv.start}"
    if tlv.constructed and tlv.tag_class == 0 and tlv.tag_number in _PRIMITIVE_ONLY:
        return f"a constructed string or time at offset {tlv.start}"
    for child in tlv.children:
        reason = der_framing_error(child)
        if reason is not None:
            return reason
    return None
