"""C2SP signed notes: the spec's example, Go's sumdb/note vectors, grammar and policy."""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Note,
    NoteSignature,
    Signer,
    Verifier,
    VerifierKey,
    check_note_text,
    format_vkey,
    is_valid_key_name,
    key_id,
    open_note,
    parse_vkey,
    sign_note,
    verify_note,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
EM = "\u2014"

# golang.org/x/mod/sumdb/note, note_test.go (BSD-3-Clause, The Go Authors).
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
PETER_SIG = f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
GO_NOTE = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()

# The Go checksum database's key (cmd/go/internal/modfetch/key.go) and a tree head it
# signed (from transparency-dev's tests): its key material contains '+'.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    f"{EM} sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
).encode()


def c2sp_example() -> dict[str, str]:
    path = VECTORS / "signed-note" / "c2sp-example.json"
    assert path.is_file(), f"test vector missing: {path}"
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


def signer(i: int, name: str | None = None) -> Signer:
    return Signer(name or f"signer{i}.example/log", SigningKey(i.to_bytes(32, "big")))


ALICE = signer(1, "alice.example/log")
BOB = signer(2, "bob.example/log")
TEXT = "hello\nworld\n"


# --- vectors ------------------------------------------------------------------------------


def test_c2sp_spec_example() -> None:
    v = c2sp_example()
    verifier = parse_vkey(v["vkey"])
    assert verifier.name == "example.com/foo"
    assert f"{verifier.key_id:08x}" == v["key_id_hex"]
    assert verifier.vkey == v["vkey"]
    opened = open_note(v["note"].encode(), [verifier])
    assert opened.text == v["text"]
    assert [s.name for s in opened.verified] == ["example.com/foo"]
    assert opened.unverified == ()
    assert Note.from_bytes(v["note"].encode()).to_bytes() == v["note"].encode()


def test_c2sp_key_id_vector() -> None:
    v = c2sp_example()
    parsed = VerifierKey.parse(v["vkey"])
    assert parsed.sig_type == SIG_TYPE_ED25519
    assert f"{key_id(parsed.name, SIG_TYPE_ED25519, parsed.key):08x}" == v["key_id_hex"]


def test_go_note_vectors() -> None:
    peter, enoch = parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)
    opened = open_note(GO_NOTE, [peter, enoch])
    assert opened.text == GO_TEXT
    assert [s.name for s in opened.verified] == ["PeterNeumann", "EnochRoot"]
    only_enoch = open_note(GO_NOTE, [enoch])
    assert [s.name for s in only_enoch.verified] == ["EnochRoot"]
    assert [s.name for s in only_enoch.unverified] == ["PeterNeumann"]


def test_signing_reproduces_go_bytes() -> None:
    # Go's private key format: PRIVATE+KEY+<name>+<id>+base64(0x01 || seed).
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    peter = Signer("PeterNeumann", SigningKey(seed))
    assert peter.verifier.vkey == PETER_VKEY
    assert sign_note(GO_TEXT, [peter]) == (GO_TEXT + "\n" + PETER_SIG).encode()


def test_sumdb_checkpoint_and_plus_in_vkey() -> None:
    verifier = parse_vkey(SUMDB_VKEY)
    assert verifier.name == "sum.golang.org"
    assert verifier.key_id == 0x033DE0AE
    assert format_vkey(verifier.name, verifier.public_key) == SUMDB_VKEY
    opened = open_note(SUMDB_NOTE, [verifier])
    assert opened.text.startswith("go.sum database tree\n6476701\n")


# --- vkeys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vkey", "code"),
    [
        ("", "vkey_malformed"),
        ("PeterNeumann", "vkey_malformed"),
        ("PeterNeumann+c74f20a3", "vkey_malformed"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "vkey_malformed"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "vkey_malformed"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "vkey_malformed"),
        ("PeterNeumann+0xc74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "vkey_malformed"),
        ("PeterNeumann+c74f20g3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "vkey_malformed"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq_LDE4izWy10TW", "vkey_malformed"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "vkey_malformed"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n", "vkey_malformed"),
        (
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "vkey_key_id_mismatch",
        ),
        ("EnochRoot+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "vkey_key_id_mismatch"),
        ("x" * 9000, "vkey_malformed"),
    ],
)
def test_vkey_parsing_is_strict(vkey: str, code: str) -> None:
    with pytest.raises(FormatError) as e:
        parse_vkey(vkey)
    assert e.value.code == code


def test_vkey_key_id_accepts_upper_case_hex_like_go() -> None:
    assert parse_vkey(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == parse_vkey(PETER_VKEY)


def test_vkey_types() -> None:
    public = ALICE.key.public
    cosigner_vkey = VerifierKey(ALICE.name, SIG_TYPE_COSIGNATURE_V1, public.raw).format()
    with pytest.raises(FormatError) as e:
        parse_vkey(cosigner_vkey)
    assert e.value.code == "vkey_type_unsupported"
    short = VerifierKey(ALICE.name, SIG_TYPE_ED25519, public.raw[:31]).format()
    with pytest.raises(FormatError) as e:
        parse_vkey(short)
    assert e.value.code == "vkey_malformed"
    assert VerifierKey.parse(cosigner_vkey).key_id != ALICE.key_id  # domain separation


@given(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=30))
def test_vkey_round_trip(seed: bytes, name: str) -> None:
    assume(is_valid_key_name(name))
    verifier = Verifier(name, SigningKey(seed).public)
    assert parse_vkey(verifier.vkey) == verifier
    assert verifier.vkey.count("+") >= 2


@given(st.text(max_size=120))
def test_vkey_parser_raises_only_format_error(text: str) -> None:
    with contextlib.suppress(FormatError):
        VerifierKey.parse(text)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a b",
        "a+b",
        "a\tb",
        "a\u00a0b",
        "a\u2003b",
        "a\u3000b",
        "a\u2028b",
        "a\x00b",
        "a\x1fb",
        "\ud800",
    ],
)
def test_invalid_key_names(name: str) -> None:
    assert not is_valid_key_name(name)
    with pytest.raises(FormatError):
        Verifier(name, ALICE.key.public)


@pytest.mark.parametrize("name", ["example.com/log", "a", "日本.example", "x\u200by", "a\x7fb"])
def test_valid_key_names(name: str) -> None:
    assert is_valid_key_name(name)


def test_a_key_name_refuses_exactly_plus_space_controls_and_surrogates() -> None:
    # Every code point in the middle of a name: refused exactly when it is "+",
    # Unicode White_Space (str.isspace, which adds only the controls
    # U+001C-U+001F), a control below U+0020 or a lone surrogate.
    refused = [c for c in range(0x110000) if not is_valid_key_name(f"a{chr(c)}b")]
    expected = [c for c in range(0x110000) if chr(c) == "+" or chr(c).isspace() or c < 0x20
                or 0xD800 <= c <= 0xDFFF]  # fmt: skip
    assert refused == expected


# --- signing and opening ----------------------------------------------------------------------


def test_sign_and_open() -> None:
    note = sign_note(TEXT, [ALICE, BOB])
    assert note.startswith(b"hello\nworld\n\n\xe2\x80\x94 alice.example/log ")
    opened = open_note(note, [ALICE.verifier, BOB.verifier])
    assert opened.text == TEXT
    assert [s.name for s in opened.verified] == [ALICE.name, BOB.name]
    assert opened.verified_by(ALICE.name, ALICE.key_id) is not None
    assert opened.verified_by(ALICE.name, BOB.key_id) is None


def test_many_signers() -> None:
    signers = [signer(i) for i in range(1, 21)]
    note = sign_note(TEXT, signers)
    opened = open_note(note, [s.verifier for s in signers])
    assert len(opened.verified) == 20
    some = open_note(note, [s.verifier for s in signers[5:8]])
    assert [s.name for s in some.verified] == [s.name for s in signers[5:8]]
    assert len(some.unverified) == 17


def test_maximum_signature_count() -> None:
    signers = [signer(i) for i in range(1, MAX_SIGNATURES + 1)]
    note = sign_note(TEXT, signers)
    assert len(open_note(note, [signers[-1].verifier]).unverified) == MAX_SIGNATURES - 1
    extra = NoteSignature("one.too.many", 1, b"x").to_line().encode()
    with pytest.raises(FormatError) as e:
        open_note(note + extra, [signers[0].verifier])
    assert e.value.code == "note_too_many_signatures"
    with pytest.raises(FormatError) as e:
        sign_note(TEXT, [*signers, signer(MAX_SIGNATURES + 1)])
    assert e.value.code == "note_too_many_signatures"


def test_unknown_signatures_are_ignored() -> None:
    note = sign_note(TEXT, [BOB, ALICE])
    opened = open_note(note, [ALICE.verifier])
    assert [s.name for s in opened.verified] == [ALICE.name]
    assert [s.name for s in opened.unverified] == [BOB.name]


def test_same_name_or_same_id_is_not_the_same_key() -> None:
    impostor = Signer(ALICE.name, SigningKey.generate())  # same name, other key: other ID
    note = sign_note(TEXT, [impostor, ALICE])
    assert [s.name for s in open_note(note, [ALICE.verifier]).unverified] == [ALICE.name]
    # same ID, other name: a hand-made line
    line = NoteSignature("mallory.example", ALICE.key_id, ALICE.sign(b"x")).to_line()
    opened = open_note(sign_note(TEXT, [ALICE]) + line.encode(), [ALICE.verifier])
    assert [s.name for s in opened.unverified] == ["mallory.example"]


def test_only_unknown_signatures_reject_the_note() -> None:
    with pytest.raises(VerificationError) as e:
        open_note(sign_note(TEXT, [BOB]), [ALICE.verifier])
    assert e.value.code == "note_unverified"
    with pytest.raises(VerificationError):
        open_note(sign_note(TEXT, [BOB]), [])


def test_a_bad_known_signature_rejects_the_note() -> None:
    good = Note.from_bytes(sign_note(TEXT, [ALICE, BOB]))
    bad_sig = bytes([good.signatures[1].signature[0] ^ 1]) + good.signatures[1].signature[1:]
    bad = Note(TEXT, (good.signatures[0], NoteSignature(BOB.name, BOB.key_id, bad_sig)))
    with pytest.raises(VerificationError) as e:
        open_note(bad.to_bytes(), [ALICE.verifier, BOB.verifier])
    assert e.value.code == "note_signature_invalid"
    assert e.value.details == {"name": BOB.name, "key_id": f"{BOB.key_id:08x}"}
    # the same note with BOB unknown is fine
    assert len(open_note(bad.to_bytes(), [ALICE.verifier]).verified) == 1


def test_signature_over_other_text_rejects() -> None:
    other = Note.from_bytes(sign_note("other\n", [ALICE]))
    forged = Note(TEXT, other.signatures)
    with pytest.raises(VerificationError) as e:
        open_note(forged.to_bytes(), [ALICE.verifier])
    assert e.value.code == "note_signature_invalid"


def test_duplicate_signatures() -> None:
    note = Note.from_bytes(sign_note(TEXT, [ALICE]))
    sig = note.signatures[0]
    twice = Note(TEXT, (sig, sig))
    opened = open_note(twice.to_bytes(), [ALICE.verifier])
    assert opened.verified == (sig,)  # counted once
    # A later, bad signature of the same known key is verified too, and rejects
    # (Go skips repeated signatures of a key without verifying them).
    bad = NoteSignature(sig.name, sig.key_id, bytes(64))
    with pytest.raises(VerificationError) as e:
        open_note(Note(TEXT, (sig, bad)).to_bytes(), [ALICE.verifier])
    assert e.value.code == "note_signature_invalid"
    # repeated unknown signatures are listed once
    unknown = Note.from_bytes(sign_note(TEXT, [BOB])).signatures[0]
    opened = open_note(Note(TEXT, (unknown, sig, unknown)).to_bytes(), [ALICE.verifier])
    assert opened.unverified == (unknown,)


@dataclass(frozen=True)
class FakeVerifier:
    name: str
    key_id: int
    answer: bool

    def verify(self, message: bytes, signature: bytes) -> bool:
        return self.answer


def test_ambiguous_verifiers() -> None:
    note = sign_note(TEXT, [ALICE])
    twin = FakeVerifier(ALICE.name, ALICE.key_id, True)
    with pytest.raises(VerificationError) as e:
        open_note(note, [ALICE.verifier, twin])
    assert e.value.code == "note_verifier_ambiguous"
    # the same verifier twice is not ambiguous
    assert len(open_note(note, [ALICE.verifier, ALICE.verifier]).verified) == 1


def test_pluggable_verifiers() -> None:
    note = sign_note(TEXT, [ALICE])
    assert open_note(note, [FakeVerifier(ALICE.name, ALICE.key_id, True)]).text == TEXT
    with pytest.raises(VerificationError):
        open_note(note, [FakeVerifier(ALICE.name, ALICE.key_id, False)])


def test_text_with_blank_and_signature_like_lines() -> None:
    text = f"a\n\n{EM} alice.example/log AAAA\n\nb\n\n"
    note = sign_note(text, [ALICE])
    opened = open_note(note, [ALICE.verifier])
    assert opened.text == text
    assert opened.unverified == ()


def test_minimal_text() -> None:
    assert open_note(sign_note("\n", [ALICE]), [ALICE.verifier]).text == "\n"


def test_with_signatures() -> None:
    note = Note.from_bytes(sign_note(TEXT, [ALICE]))
    bob_sig = Note.from_bytes(sign_note(TEXT, [BOB])).signatures[0]
    both = note.with_signatures([bob_sig])
    assert [s.name for s in both.signatures] == [ALICE.name, BOB.name]
    assert len(open_note(both.to_bytes(), [ALICE.verifier, BOB.verifier]).verified) == 2
    replaced = both.with_signatures([NoteSignature(ALICE.name, ALICE.key_id, b"junk")])
    assert next(s.signature for s in replaced.signatures) == b"junk"
    assert len(replaced.signatures) == 2


# --- grammar ----------------------------------------------------------------------------------

GOOD = sign_note(TEXT, [ALICE])
LINE = GOOD[len(TEXT) + 1 :]
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# GOOD ends in "<c>=\n" where <c> carries two zero padding bits; set one of them.
NONZERO_PAD = bytes([_B64[_B64.index(GOOD[-3]) | 1]])


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "note_malformed"),
        (TEXT.encode(), "note_malformed"),
        (TEXT.encode() + b"\n", "note_malformed"),
        (GOOD[:-1], "note_malformed"),
        (GOOD + b"trailing", "note_malformed"),
        (GOOD + b"trailing\n", "note_signature_malformed"),
        (GOOD + b"\n", "note_malformed"),
        (GOOD + b" ", "note_malformed"),
        (GOOD.replace(b"\n", b"\r\n"), "note_control_character"),
        (b"hello\tworld\n\n" + LINE, "note_control_character"),
        (b"hello\x00\n\n" + LINE, "note_control_character"),
        (b"\xff\n\n" + LINE, "note_not_utf8"),
        (b"\xed\xa0\x80\n\n" + LINE, "note_not_utf8"),  # an encoded surrogate
        (GOOD.replace("\u2014".encode(), b"-"), "note_signature_malformed"),
        (GOOD.replace("\u2014".encode(), "\u2013".encode()), "note_signature_malformed"),
        (GOOD.replace(b"\xe2\x80\x94 ", b"\xe2\x80\x94"), "note_signature_malformed"),
        (GOOD.replace(b"log ", b"log  "), "note_signature_malformed"),
        (GOOD.replace(b"log ", b"log"), "note_signature_malformed"),
        (GOOD.replace(b"=\n", b"\n"), "note_signature_malformed"),
        (GOOD[:-3] + NONZERO_PAD + b"=\n", "note_signature_malformed"),
        (
            TEXT.encode() + "\n\u2014 alice.example/log AAAAAA==\n".encode(),
            "note_signature_malformed",
        ),
        (TEXT.encode() + "\n\u2014 alice.example/log \n".encode(), "note_signature_malformed"),
        (TEXT.encode() + "\n\u2014 a+b AAAAAAA=\n".encode(), "note_signature_malformed"),
        (TEXT.encode() + "\n\u2014  AAAAAAA=\n".encode(), "note_signature_malformed"),
        (TEXT.encode() + "\n\u2014 a\u00a0b AAAAAAA=\n".encode(), "note_signature_malformed"),
        (b"x" * (MAX_NOTE_BYTES + 1), "note_too_large"),
    ],
)
def test_note_grammar_is_strict(data: bytes, code: str) -> None:
    with pytest.raises(FormatError) as e:
        open_note(data, [ALICE.verifier])
    assert e.value.code == code


def test_size_cap_applies_to_the_whole_note() -> None:
    big = "x" * (MAX_NOTE_BYTES - 100) + "\n"
    with pytest.raises(FormatError) as e:
        sign_note(big, [ALICE])
    assert e.value.code == "note_too_large"
    fits = "x" * (MAX_NOTE_BYTES - 300) + "\n"
    assert open_note(sign_note(fits, [ALICE]), [ALICE.verifier]).text == fits


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("no newline", "note_text_invalid"),
        ("tab\there\n", "note_text_invalid"),
        ("cr\r\n", "note_text_invalid"),
        ("\ud800\n", "note_text_invalid"),
        ("", "note_text_invalid"),
    ],
)
def test_sign_rejects_bad_text(text: str, code: str) -> None:
    with pytest.raises(FormatError) as e:
        sign_note(text, [ALICE])
    assert e.value.code == code
    with pytest.raises(FormatError):
        check_note_text(text)


def test_sign_needs_distinct_signers() -> None:
    with pytest.raises(FormatError) as e:
        sign_note(TEXT, [])
    assert e.value.code == "note_unsigned"
    with pytest.raises(FormatError) as e:
        sign_note(TEXT, [ALICE, Signer(ALICE.name, ALICE.key)])
    assert e.value.code == "note_signer_duplicate"


def test_note_signature_values() -> None:
    for bad in [
        ("", 1, b"x"),
        ("a", -1, b"x"),
        ("a", 1 << 32, b"x"),
        ("a", 1, b""),
        ("a", True, b"x"),
    ]:
        with pytest.raises(FormatError):
            NoteSignature(*bad)
    with pytest.raises(FormatError):
        Note(TEXT, ())


# --- properties ---------------------------------------------------------------------------------

note_texts = st.lists(
    st.text(
        st.characters(codec="utf-8", exclude_characters="\n", min_codepoint=0x20),
        max_size=40,
    ),
    min_size=1,
    max_size=6,
).map(lambda lines: "\n".join(lines) + "\n")
key_names = st.text(
    st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), exclude_characters="+"),
    min_size=1,
    max_size=20,
)


@given(note_texts, st.lists(key_names, min_size=1, max_size=4, unique=True))
@settings(max_examples=60, deadline=None)
def test_sign_open_round_trip(text: str, names: list[str]) -> None:
    assume(all(is_valid_key_name(n) for n in names))
    signers = [Signer(n, SigningKey(bytes([i]) * 32)) for i, n in enumerate(names)]
    data = sign_note(text, signers)
    assert Note.from_bytes(data).to_bytes() == data
    opened = open_note(data, [s.verifier for s in signers])
    assert opened.text == text
    assert [s.name for s in opened.verified] == names


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_format_or_verification_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError, VerificationError):
        open_note(data, [ALICE.verifier])


@given(st.text(max_size=300))
def test_random_text_raises_only_format_or_verification_errors(text: str) -> None:
    with contextlib.suppress(FormatError, VerificationError):
        open_note(text.encode("utf-8", "surrogatepass"), [ALICE.verifier])


def mutate(data: bytes, draw: st.DataObject) -> bytes:
    ops = draw.draw(st.integers(1, 3))
    out = bytearray(data)
    for _ in range(ops):
        kind = draw.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = draw.draw(st.integers(0, max(0, len(out) - 1)))
        if kind == "flip" and out:
            out[pos] ^= draw.draw(st.integers(1, 255))
        elif kind == "insert":
            out[pos:pos] = draw.draw(st.binary(min_size=1, max_size=3))
        elif out:
            del out[pos]
    return bytes(out)


TWO = sign_note(TEXT, [ALICE, BOB])


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_notes_raise_only_format_or_verification_errors(data: st.DataObject) -> None:
    mutated = mutate(TWO, data)
    try:
        opened = open_note(mutated, [ALICE.verifier, BOB.verifier])
    except (FormatError, VerificationError):
        return
    # whatever still opens carries exactly the signed text
    assert opened.text == TEXT


@given(st.data())
@settings(max_examples=200)
def test_note_parser_round_trips_whatever_it_accepts(data: st.DataObject) -> None:
    mutated = mutate(TWO, data)
    try:
        note = Note.from_bytes(mutated)
    except FormatError:
        return
    assert note.to_bytes() == mutated


def test_verifier_key_matches_public_key_type() -> None:
    # key_id is computed from the type byte: 0x01 and 0x04 keys never collide by accident
    pk: PublicKey = ALICE.key.public
    assert key_id(ALICE.name, SIG_TYPE_ED25519, pk.raw) == ALICE.key_id
    assert key_id(ALICE.name, SIG_TYPE_COSIGNATURE_V1, pk.raw) != ALICE.key_id
    with pytest.raises(FormatError):
        key_id(ALICE.name, 256, pk.raw)


def test_verify_note_on_parsed_note() -> None:
    note = Note.from_bytes(GO_NOTE)
    assert verify_note(note, [parse_vkey(PETER_VKEY)]).text == GO_TEXT
