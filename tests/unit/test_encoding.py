"""The strict base64 decoders (core/encoding.py) check canonical form in one
pass; here they are held to the definition: a text is accepted exactly when
decoding it and encoding the result gives the text back (the round trip the
decoders no longer make)."""

from __future__ import annotations

import base64
import binascii
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.encoding import b64url_decode, b64url_decode_64, b64url_encode, decode_base64
from remembrancer.core.errors import FormatError


def _by_round_trip_url(text: str) -> bytes | None:
    if len(text) % 4 == 1 or not text.isascii():
        return None
    padded = (text + ("", "", "==", "=")[len(text) % 4]).encode("ascii")
    try:
        raw = binascii.a2b_base64(padded.translate(bytes.maketrans(b"-_", b"+/")), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return raw if b64url_encode(raw) == text else None


def _by_round_trip_std(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _url(text: str) -> bytes | None:
    try:
        return b64url_decode(text)
    except FormatError:
        return None


def _std(text: str) -> bytes | None:
    try:
        return decode_base64(text, what="x", code="c")
    except FormatError:
        return None


def test_every_short_text_is_judged_as_the_round_trip_judges_it() -> None:
    for n in range(6):
        for chars in itertools.product("AQgw+/-_= ", repeat=n):
            text = "".join(chars)
            assert _url(text) == _by_round_trip_url(text), text
            assert _std(text) == _by_round_trip_std(text), text


_ALPHABET = st.sampled_from(list("ABQgw09az+/-_= \n\x00é"))
_TEXTS = st.one_of(
    st.text(_ALPHABET, max_size=14),
    st.binary(max_size=70).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=70).map(lambda b: b64url_encode(b)),
)


@settings(max_examples=3000)
@given(_TEXTS, st.integers(0, 100), st.sampled_from(list("AB+/-_=Qgw ")), st.booleans())
def test_encodings_and_their_mutants_are_judged_as_the_round_trip_judges_them(
    text: str, at: int, char: str, mutate: bool
) -> None:
    if mutate and text:
        at %= len(text)
        text = text[:at] + char + text[at + 1 :]
    assert _url(text) == _by_round_trip_url(text)
    assert _std(text) == _by_round_trip_std(text)


def test_non_strings_are_refused_with_the_callers_code() -> None:
    for value in (b"AAAA", None, 5):
        for decode in (lambda v: b64url_decode(v, code="k"),
                       lambda v: decode_base64(v, what="x", code="k")):  # fmt: skip
            try:
                decode(value)
            except FormatError as e:
                assert e.code == "k"
            else:
                raise AssertionError(f"{value!r} accepted")


_URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=64, max_size=64), st.integers(0, 85),
       st.sampled_from([*_URL, "=", "+", "/", "!", " ", "\n", "\u00e9", "\u20ac", "\ud800"]))  # fmt: skip
def test_the_signature_decoder_is_the_round_trip_for_64_bytes(raw: bytes, at: int, c: str) -> None:
    text = b64url_encode(raw)
    assert b64url_decode_64(text) == raw
    changed = text[:at] + c + text[at + 1 :]
    expected = _by_round_trip_url(changed)
    assert b64url_decode_64(changed) == (expected if expected and len(expected) == 64 else None)
    for other in (text[:-1], text + "A", text + "==", None, 64):
        assert b64url_decode_64(other) is None


def test_the_signature_decoder_checks_every_last_character() -> None:
    text = b64url_encode(bytes(range(64)))
    for c in [*_URL, "=", "é"]:
        changed = text[:85] + c
        expected = _by_round_trip_url(changed)
        assert b64url_decode_64(changed) == expected, c
    assert sum(b64url_decode_64(text[:85] + c) is not None for c in _URL) == 4  # A, Q, g, w
