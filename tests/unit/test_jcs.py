"""RFC 8785 canonical JSON: the RFC's Appendix B number table and the
reference implementation's published input/output pairs."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.errors import FormatError
from remembrancer.core.jcs import canonicalize, loads_strict, parse_sha256_hex, sha256_hex

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical serialisation.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonicalize(value) == expected.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_appendix_b_invalid_numbers(bits: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    with pytest.raises(FormatError) as e:
        canonicalize(value)
    assert e.value.code == "jcs_invalid"


# Reference test data (input, output) from the JCS reference implementation.
REFERENCE_PAIRS = [
    (
        '{"numbers": [1E30, 4.50, 333333333.33333329, 2e-3, 0.000000000000000000000000001],'
        ' "escaping": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}',
        '{"escaping":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/","literals":[null,true,false],'
        '"numbers":[1e+30,4.5,333333333.3333333,0.002,1e-27]}',
    ),
    (
        '{"\\u20ac": "Euro Sign", "1": "One", "\\u0080": "Control\\u007f",'
        ' "\\ud83d\\ude02": "Smiley", "\\u00f6": "Latin Small Letter O With Diaeresis",'
        ' "\\ufb33": "Hebrew Letter Dalet With Dagesh", "</script>": "Browser Challenge"}',
        '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f602":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    ),
    ('[56, {"d": true, "10": null, "1": []}]', '[56,{"1":[],"10":null,"d":true}]'),
    (
        '{"1": {"f": {"f": "hi", "F": 5}, "\\n": 56.0}, "10": {}, "": "empty", "a": {},'
        ' "111": [{"e": "yes", "E": "no"}], "A": {}}',
        '{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{"E":"no","e":"yes"}],'
        '"A":{},"a":{}}',
    ),
    ('{"Unnormalized Unicode": "A\\u030a"}', '{"Unnormalized Unicode":"A\u030a"}'),
    (
        '{"peach": "This sorting order", "p\\u00e9ch\\u00e9": "is wrong according to French",'
        ' "p\\u00eache": "but canonicalization MUST", "sin": "ignore locale"}',
        '{"peach":"This sorting order","p\u00e9ch\u00e9":"is wrong according to French",'
        '"p\u00eache":"but canonicalization MUST","sin":"ignore locale"}',
    ),
]


@pytest.mark.parametrize(("source", "expected"), REFERENCE_PAIRS)
def test_reference_testdata(source: str, expected: str) -> None:
    assert canonicalize(json.loads(source)) == expected.encode("utf-8")


def test_sorted_json_dumps_is_not_jcs() -> None:
    # The reason DESIGN 3.1 forbids sorted json.dumps: numbers and non-ASCII differ.
    value = {"b": 1e30, "a": "\u20ac"}
    assert canonicalize(value) != json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def test_non_string_keys_and_big_ints_are_refused() -> None:
    with pytest.raises(FormatError):
        canonicalize({1: "x"})
    with pytest.raises(FormatError):
        canonicalize(2**60)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    # Integral floats in [2^53, 1e21) serialise without an exponent and re-parse as
    # integers outside the I-JSON range, which RFC 8785 section 3.2.2.3 refuses.
    | st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda f: not (f.is_integer() and 2**53 <= abs(f) < 1e21)
    )
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_form_is_a_fixed_point(value: object) -> None:
    once = canonicalize(value)
    assert canonicalize(json.loads(once)) == once
    assert canonicalize(loads_strict(once)) == once


def test_sha256_hex_round_trip() -> None:
    h = sha256_hex(b"abc")
    assert h == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert parse_sha256_hex(h).hex() == h[7:]
    for bad in ["", "sha256:" + "A" * 64, "sha256:" + "0" * 63, "sha1:" + "0" * 64, h + "0"]:
        with pytest.raises(FormatError):
            parse_sha256_hex(bad)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"a":1,"a":2}', "json_duplicate_key"),
        (b"[NaN]", "json_number_invalid"),
        (b'{"a":Infinity}', "json_number_invalid"),
        (b'{"a":-Infinity}', "json_number_invalid"),
        (b"[1e400]", "json_number_invalid"),  # overflows a double: would read as Infinity
        (b"[-1e400]", "json_number_invalid"),
        (b"[9007199254740992]", "json_number_invalid"),  # 2**53
        (b"[-9007199254740992]", "json_number_invalid"),
        (b"[" + b"9" * 5000 + b"]", "json_number_invalid"),  # beyond int()'s digit limit
        (b'["\\ud800"]', "json_string_invalid"),  # a lone high surrogate
        (b'{"\\udc00":1}', "json_string_invalid"),  # a lone low surrogate, in a key
        (b'["\\udc00\\ud800"]', "json_string_invalid"),  # a pair in the wrong order
        (b'{"a":{"b":1,"b":1}}', "json_duplicate_key"),  # nested, even with equal values
        (b"[1] [2]", "json_malformed"),  # trailing data
        (b"\xef\xbb\xbf[1]", "json_malformed"),  # a byte order mark
        (b"\xed\xa0\x80", "json_malformed"),  # an encoded surrogate is not UTF-8
        (b"\xff", "json_malformed"),
        (b"[1,", "json_malformed"),
        (b"[" * 100 + b"]" * 100, "json_too_deep"),
        (b"[" * 100000, "json_too_deep"),
        (b" " * 2_000_000, "json_too_large"),
    ],
)
def test_loads_strict_rejects(data: bytes, code: str) -> None:
    with pytest.raises(FormatError) as e:
        loads_strict(data)
    assert e.value.code == code


def test_loads_strict_keeps_what_rfc8785_represents() -> None:
    text = (
        b'{"big":9007199254740991,"neg":-9007199254740991,"f":1e308,"z":-0,"pair":"\\ud83d\\ude00"}'
    )
    value = loads_strict(text)
    assert value == {
        "big": 2**53 - 1,
        "neg": -(2**53) + 1,
        "f": 1e308,
        "z": 0,
        "pair": "\U0001f600",
    }
    assert (
        canonicalize(value)
        == (
            '{"big":9007199254740991,"f":1e+308,"neg":-9007199254740991,"pair":"\U0001f600","z":0}'
        ).encode()
    )
    assert loads_strict('["\\u00e9"]') == ["\u00e9"]  # text already decoded


def test_loads_strict_refuses_a_decoded_lone_surrogate() -> None:
    with pytest.raises(FormatError) as e:
        loads_strict('["\ud800"]')
    assert e.value.code == "json_string_invalid"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"a":NaN}', "json_number_invalid"),
        (b'{"a":[Infinity]}', "json_number_invalid"),
        (b'{"a":"\\ud800"}', "json_string_invalid"),
        (b'{"a":1,"a":1}', "json_duplicate_key"),
    ],
)
def test_the_canonical_fast_path_leaves_to_the_strict_parser_what_it_refuses(
    data: bytes, code: str
) -> None:
    from remembrancer.core.jcs import parse_canonical

    assert parse_canonical(data) is None
    with pytest.raises(FormatError) as e:
        loads_strict(data)
    assert e.value.code == code


def test_the_canonical_fast_path_refuses_deep_nesting() -> None:
    from remembrancer.core.jcs import parse_canonical

    with pytest.raises(FormatError) as e:
        parse_canonical(b"[" * 100 + b"]" * 100)
    assert e.value.code == "json_too_deep"


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":1}',  # not canonical: duplicate
        b'["\\ud800"]',  # a lone surrogate: for the strict parser to refuse
        b"[9007199254740992]",  # out of range: ditto
        b"9007199254740992",  # ditto, at the top level
        b"[1.5]",  # a fraction: RFC 8785's text is not Python's in general
        b"[1.0]",  # a fraction whose RFC 8785 text is 1
        b"[1E2]",  # an exponent
        b"[-0]",  # RFC 8785 writes 0
        b'["\\u0041"]',  # an escape RFC 8785 does not use
        b'["\\/"]',  # ditto
        b'["\\u00E9"]',  # ditto, upper-case hex
        b'["\\u001F"]',  # RFC 8785 writes \u001f
        b'["\\u0008"]',  # RFC 8785 writes \b
        b'{"\xc3\xa9":1,"z":2}',  # not sorted: U+00E9 after z
        b'{"a":1} ',  # trailing whitespace
        b"\xef\xbb\xbf{}",  # byte order mark
        b'{"b":1,"a":2}',  # not sorted
        b"[1, 2]",  # whitespace
    ],
)
def test_the_canonical_fast_path_declines_what_it_cannot_prove(data: bytes) -> None:
    from remembrancer.core.jcs import parse_canonical

    assert parse_canonical(data) is None


@given(json_values)
def test_the_canonical_fast_path_agrees_with_the_strict_parser(value: object) -> None:
    from remembrancer.core.jcs import parse_canonical

    data = canonicalize(value)
    fast = parse_canonical(data)
    if fast is not None:
        assert fast == loads_strict(data)
        assert canonicalize(fast) == data


@given(st.binary(max_size=200))
def test_loads_strict_raises_only_format_errors(data: bytes) -> None:
    try:
        loads_strict(data)
    except FormatError:
        pass


json_values_any_text = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(codec="utf-8"), max_size=6), children, max_size=5
        )
    ),
    max_leaves=25,
)


@given(json_values_any_text)
def test_fast_canonicaliser_matches_rfc8785_reference(value: object) -> None:
    import rfc8785

    assert canonicalize(value) == rfc8785.dumps(value)


_DUMPS_OPTIONS = st.fixed_dictionaries(
    {
        "ensure_ascii": st.booleans(),
        "sort_keys": st.booleans(),
        "separators": st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")]),
        "indent": st.sampled_from([None, 0, 1]),
    }
)


# Values the fast path may accept (integers, text within U+FFFF) and a few it
# must decline (fractions, big integers), in objects of several keys.
_fast_path_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**17), max_value=10**17)
    | st.sampled_from([0.0, 1.0, -0.0, 1.5, 1e21, 1e-7])
    | st.text(alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet="abAB\u00e9\u00ff\x7f/\"\\\n", max_size=3), children,
                          max_size=5)
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=500)
@given(_fast_path_values, _DUMPS_OPTIONS)
def test_the_canonical_fast_path_accepts_only_canonical_text(
    value: object, options: dict[str, Any]
) -> None:
    """Soundness: whatever text ``parse_canonical`` accepts is its own RFC 8785
    form (here, text written by ``json.dumps`` in every style, most of it not
    canonical: escapes, order, spacing, fractions, 1.0 for 1)."""
    from remembrancer.core.jcs import parse_canonical

    data = json.dumps(value, **options).encode("utf-8")
    fast = parse_canonical(data)
    if fast is not None:
        assert canonicalize(loads_strict(data)) == data
        assert fast == loads_strict(data)


@given(st.dictionaries(st.text(max_size=6), json_values_any_text, max_size=6), st.text(max_size=6))
def test_members_join_to_the_canonical_form(value: dict[str, object], drop: str) -> None:
    from remembrancer.core.jcs import canonical_members, join_members

    members = canonical_members(value)
    assert join_members(members) == canonicalize(value)
    rest = {k: v for k, v in value.items() if k != drop}
    assert join_members(members, exclude=drop) == canonicalize(rest)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(FormatError):
        canonicalize({"a": "\ud800"})


def test_deep_nesting_is_refused_even_with_a_raised_recursion_limit() -> None:
    # Regression: py_ecc (pulled in by eth-account) raises the recursion limit to
    # 100,000, after which json.loads on deeply nested input overflowed the C stack.
    import sys

    from remembrancer.core.record import Record

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        for data in (b"[" * 200_000, b'{"a":' * 200_000, b'{"x":"[[[["}' + b"[" * 70 + b"]" * 70):
            with pytest.raises(FormatError) as e:
                loads_strict(data)
            assert e.value.code == "json_too_deep"
        with pytest.raises(FormatError):
            Record.from_bytes(b'{"a":' + b"[" * 200_000)
        assert (
            loads_strict(
                b'["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]'
            )
            is not None
        )
    finally:
        sys.setrecursionlimit(old)
