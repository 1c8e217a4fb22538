"""The bounded BER reader (``anchoring.rfc3161.ber``): X.690's rules, exact spans, and
nothing but BerError for any input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remembrancer.anchoring.rfc3161 import ber


def test_spans_of_definite_and_indefinite_elements() -> None:
    data = bytes.fromhex("3080020105a0030401610000")
    top = ber.read(data)
    assert top.indefinite and top.constructed and (top.start, top.end) == (0, len(data))
    assert top.content(data) == bytes.fromhex("020105a003040161")
    integer, tagged = top.children
    assert (
        integer.is_(0, 2)
        and integer.content(data) == b"\x05"
        and integer.raw(data) == b"\x02\x01\x05"
    )
    assert tagged.is_(2, 0) and tagged.children[0].string_value(data) == b"a"
    assert ber.der_framing_error(top) == "indefinite length at offset 0"
    assert ber.der_framing_error(integer) is None


def test_constructed_octet_string_value() -> None:
    data = bytes.fromhex("248004026162248004016300000000")
    top = ber.read(data)
    assert top.string_value(data) == b"abc"
    assert ber.der_framing_error(top) == "indefinite length at offset 0"
    definite = bytes.fromhex("240704026162040163")
    assert ber.der_framing_error(ber.read(definite)) == "a constructed string or time at offset 0"


@pytest.mark.parametrize(
    ("hex_", "reason"),
    [
        ("300302010500", "trailing data"),
        ("3005020105", "runs past"),
        ("30", "truncated"),
        ("3080020105", "truncated"),
        ("0400ff", "trailing"),
        ("3003000100", "end-of-contents"),
        ("0480", "indefinite length on a primitive"),
        ("30ff", "reserved length"),
        ("3085010000000000", "bad length"),
        ("0100", "BOOLEAN"),
        ("010200ff", "BOOLEAN"),
        ("0200", "empty INTEGER"),
        ("02020005", "superfluous"),
        ("0202ff80", "superfluous"),
        ("050100", "NULL"),
        ("06022a80", "truncated OBJECT IDENTIFIER"),
        ("0603808001", "padded"),
        ("1100", "primitive form"),
        ("1000", "primitive form"),
        ("2203020105", "constructed form"),
    ],
)
def test_not_ber(hex_: str, reason: str) -> None:
    with pytest.raises(ber.BerError, match=reason):
        ber.read(bytes.fromhex(hex_))


def test_der_framing_errors() -> None:
    long_form = ber.read(bytes.fromhex("308103020105"))
    assert (
        ber.der_framing_error(long_form) == "a tag or length not in its shortest form at offset 0"
    )
    leading_zero = ber.read(bytes.fromhex("30820003020105"))
    assert ber.der_framing_error(leading_zero) is not None
    high_tag = ber.read(bytes.fromhex("bf0500"))  # [5] in the high-tag-number form
    assert ber.der_framing_error(high_tag) is not None and high_tag.tag_number == 5
    inner = ber.read(bytes.fromhex("3006300404810161"))  # the bad length is inside
    assert ber.der_framing_error(inner) == "a tag or length not in its shortest form at offset 4"
    assert ber.der_framing_error(ber.read(bytes.fromhex("30053003040161"))) is None


def test_depth_and_element_bounds() -> None:
    deep = b"".join(b"\x30\x80" for _ in range(60)) + b"\x00\x00" * 60
    with pytest.raises(ber.BerError, match="nested deeper"):
        ber.read(deep)
    ok = b"".join(b"\x30\x80" for _ in range(10)) + b"\x00\x00" * 10
    assert ber.read(ok).indefinite
    many = b"\x30\x80" + b"\x05\x00" * (ber.MAX_ELEMENTS + 1) + b"\x00\x00"
    with pytest.raises(ber.BerError, match="more than"):
        ber.read(many)


@given(st.binary(max_size=300))
def test_any_bytes_give_an_element_or_ber_error(data: bytes) -> None:
    try:
        top = ber.read(data)
    except ber.BerError:
        return
    assert top.end == len(data) and top.start == 0
    ber.der_framing_error(top)


@given(st.recursive(
    st.binary(max_size=20).map(lambda b: bytes([0x04, len(b)]) + b),
    lambda kids: st.lists(kids, max_size=4).map(
        lambda xs: b"\x30\x80" + b"".join(xs) + b"\x00\x00"),
    max_leaves=20,
))  # fmt: skip
def test_indefinite_trees_read_back_exactly(data: bytes) -> None:
    def walk(tlv: ber.Tlv) -> bytes:
        if not tlv.constructed:
            return tlv.raw(data)
        inner = b"".join(walk(c) for c in tlv.children)
        assert inner == tlv.content(data)
        return data[tlv.start : tlv.content_start] + inner + data[tlv.content_end : tlv.end]

    assert walk(ber.read(data)) == data
