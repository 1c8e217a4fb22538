"""tlog-checkpoint bodies, signing and opening with log signature and cosignatures."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remembrancer.core.checkpoint import (
    MAX_CHECKPOINT_BODY_BYTES,
    Checkpoint,
    open_checkpoint,
    sign_checkpoint,
)
from remembrancer.core.cosignature import CosignatureVerifier, Cosigner, cosign
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, NoteSignature, Signer, open_note, parse_vkey, sign_note
from remembrancer.core.rfc6962 import MAX_TREE_SIZE

EM = "\u2014"
ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFB]) * 32).decode()
ORIGIN = "alpha.example.org/dao:vaultmesh"
LOG_KEY = SigningKey(b"\x07" * 32)
LOG = Signer(ORIGIN, LOG_KEY)
WITNESSES = [
    Cosigner(f"w{i}.example/witness", SigningKey(bytes([0x40 + i]) * 32), 1700000000 + i)
    for i in range(16)
]

# c2sp.org/tlog-checkpoint example body.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

# A tree head signed by sum.golang.org (see test_note.py): origin != key name.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    f"{EM} sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
).encode()


# --- bodies ------------------------------------------------------------------------------------


def test_to_body() -> None:
    cp = Checkpoint(ORIGIN, 5, ROOT)
    assert cp.to_body() == f"{ORIGIN}\n5\n{ROOT_B64}\n"
    assert Checkpoint.parse(cp.to_body()) == cp


def test_spec_example_body() -> None:
    cp = Checkpoint.parse(SPEC_BODY)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert base64.b64encode(cp.root_hash).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert cp.extensions == ()
    assert cp.to_body() == SPEC_BODY


def test_extension_lines_are_kept_but_never_written() -> None:
    cp = Checkpoint.parse(SPEC_BODY + "ext one\n— ext two\n")
    assert cp.extensions == ("ext one", "— ext two")
    with pytest.raises(FormatError) as e:
        cp.to_body()
    assert e.value.code == "checkpoint_extensions_unsupported"
    with pytest.raises(FormatError):
        sign_checkpoint(cp, LOG_KEY)


def test_size_extremes() -> None:
    assert Checkpoint.parse(f"o\n0\n{ROOT_B64}\n").size == 0
    assert Checkpoint.parse(f"o\n{MAX_TREE_SIZE}\n{ROOT_B64}\n").size == MAX_TREE_SIZE
    with pytest.raises(FormatError):
        Checkpoint("o", MAX_TREE_SIZE + 1, ROOT)
    with pytest.raises(FormatError):
        Checkpoint("o", -1, ROOT)


def test_origin_may_contain_spaces_when_parsed() -> None:
    assert (
        Checkpoint.parse(f"go.sum database tree\n1\n{ROOT_B64}\n").origin == "go.sum database tree"
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("", "checkpoint_malformed"),
        (f"o\n1\n{ROOT_B64}", "checkpoint_malformed"),
        ("o\n1\n", "checkpoint_malformed"),
        (f"\n1\n{ROOT_B64}\n", "checkpoint_origin_invalid"),
        (f"o\x01\n1\n{ROOT_B64}\n", "checkpoint_origin_invalid"),
        (f"o\r\n1\n{ROOT_B64}\n", "checkpoint_origin_invalid"),
        (f"o\n01\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n00\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n+1\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n-1\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n 1\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n1 \n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n1_000\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n\u0661\n{ROOT_B64}\n", "checkpoint_size_invalid"),  # ARABIC-INDIC DIGIT ONE
        (f"o\n0x10\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n{MAX_TREE_SIZE + 1}\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        (f"o\n{'9' * 30}\n{ROOT_B64}\n", "checkpoint_size_invalid"),
        ("o\n1\n\n", "checkpoint_root_invalid"),
        (f"o\n1\n{base64.b64encode(bytes(31)).decode()}\n", "checkpoint_root_invalid"),
        (f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n", "checkpoint_root_invalid"),
        (f"o\n1\n{ROOT_B64.rstrip('=')}\n", "checkpoint_root_invalid"),
        (f"o\n1\n{ROOT_B64[:-2]}B=\n", "checkpoint_root_invalid"),  # non-zero padding bits
        (f"o\n1\n{URLSAFE_ROOT}\n", "checkpoint_root_invalid"),
        (f"o\n1\n{ROOT_B64} \n", "checkpoint_root_invalid"),
        (f"o\n1\n{ROOT_B64}\n\n", "checkpoint_extension_invalid"),
        (f"o\n1\n{ROOT_B64}\next\n\nmore\n", "checkpoint_extension_invalid"),
        (f"o\n1\n{ROOT_B64}\nbad\text\n", "checkpoint_extension_invalid"),
        ("x" * (MAX_CHECKPOINT_BODY_BYTES + 1), "checkpoint_too_large"),
        ("\u00e9" * (MAX_CHECKPOINT_BODY_BYTES // 2 + 1), "checkpoint_too_large"),
    ],
)
def test_parse_is_strict(body: str, code: str) -> None:
    with pytest.raises(FormatError) as e:
        Checkpoint.parse(body)
    assert e.value.code == code


def test_value_checks() -> None:
    for args in [
        ("", 1, ROOT),
        ("o\n", 1, ROOT),
        ("o", True, ROOT),
        ("o", 1, ROOT[:31]),
        ("o", 1, "x" * 32),
    ]:
        with pytest.raises(FormatError):
            Checkpoint(*args)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        Checkpoint("o", 1, ROOT, ("",))


origins = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: "\n" not in s
)


@given(origins, st.integers(0, MAX_TREE_SIZE), st.binary(min_size=32, max_size=32))
def test_body_round_trip(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin, size, root)
    assert Checkpoint.parse(cp.to_body()) == cp


@given(st.text(max_size=200))
def test_parse_random_text_raises_only_format_error(text: str) -> None:
    try:
        cp = Checkpoint.parse(text)
    except FormatError:
        return
    rebuilt = Checkpoint(cp.origin, cp.size, cp.root_hash).to_body()
    assert text == rebuilt + "".join(line + "\n" for line in cp.extensions)


# --- signing and opening ------------------------------------------------------------------------


def test_sign_and_open() -> None:
    cp = Checkpoint(ORIGIN, 42, ROOT)
    data = sign_checkpoint(cp, LOG_KEY)
    assert data.startswith(cp.to_body().encode() + f"\n{EM} {ORIGIN} ".encode())
    signed = open_checkpoint(data, LOG.verifier)
    assert signed.checkpoint == cp
    assert signed.body == cp.to_body()
    assert signed.note == data
    assert signed.log_signature.name == ORIGIN
    assert signed.cosignatures == ()
    assert sign_checkpoint(cp, LOG_KEY, ORIGIN) == data


def test_sign_under_another_name_is_refused() -> None:
    with pytest.raises(FormatError) as e:
        sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), LOG_KEY, "other.example")
    assert e.value.code == "checkpoint_key_name_mismatch"
    with pytest.raises(FormatError) as e:
        sign_checkpoint(Checkpoint("has space", 1, ROOT), LOG_KEY)
    assert e.value.code == "checkpoint_origin_invalid"


def cosigned(cp: Checkpoint, witnesses: list[Cosigner]) -> bytes:
    note = Note.from_bytes(sign_checkpoint(cp, LOG_KEY))
    return note.with_signatures(
        cosign(cp.to_body(), w.key, w.name, w.timestamp) for w in witnesses
    ).to_bytes()


def test_open_with_sixteen_cosignatures() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT)
    data = cosigned(cp, WITNESSES)
    signed = open_checkpoint(data, LOG.verifier, [w.verifier for w in WITNESSES])
    assert [(c.name, c.timestamp) for c in signed.cosignatures] == [
        (w.name, w.timestamp) for w in WITNESSES
    ]
    partial = open_checkpoint(data, LOG.verifier, [w.verifier for w in WITNESSES[:3]])
    assert len(partial.cosignatures) == 3
    assert len(partial.unverified) == 13
    alone = open_checkpoint(data, LOG.verifier)
    assert alone.cosignatures == ()
    assert len(alone.unverified) == 16


def test_unsigned_by_the_log() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT)
    only_witness = sign_note(cp.to_body(), [WITNESSES[0]])
    with pytest.raises(VerificationError) as e:
        open_checkpoint(only_witness, LOG.verifier, [WITNESSES[0].verifier])
    assert e.value.code == "checkpoint_unsigned"
    with pytest.raises(VerificationError) as e:
        open_checkpoint(only_witness, LOG.verifier)
    assert e.value.code == "checkpoint_unsigned"
    other_log = sign_checkpoint(cp, SigningKey.generate())
    with pytest.raises(VerificationError) as e:
        open_checkpoint(other_log, LOG.verifier)
    assert e.value.code == "checkpoint_unsigned"


def test_bad_log_signature() -> None:
    note = Note.from_bytes(cosigned(Checkpoint(ORIGIN, 7, ROOT), WITNESSES[:2]))
    log_sig = note.signatures[0]
    broken = NoteSignature(log_sig.name, log_sig.key_id, bytes(64))
    bad = Note(note.text, (broken, *note.signatures[1:]))
    with pytest.raises(VerificationError) as e:
        open_checkpoint(bad.to_bytes(), LOG.verifier, [w.verifier for w in WITNESSES[:2]])
    assert e.value.code == "checkpoint_signature_invalid"


def test_bad_cosignature() -> None:
    note = Note.from_bytes(cosigned(Checkpoint(ORIGIN, 7, ROOT), WITNESSES[:2]))
    w = note.signatures[2]
    broken = NoteSignature(w.name, w.key_id, (1).to_bytes(8, "big") + w.signature[8:])
    bad = note.with_signatures([broken])
    with pytest.raises(VerificationError) as e:
        open_checkpoint(bad.to_bytes(), LOG.verifier, [v.verifier for v in WITNESSES[:2]])
    assert e.value.code == "cosignature_invalid"
    # unknown to this verifier: ignored
    assert (
        len(open_checkpoint(bad.to_bytes(), LOG.verifier, [WITNESSES[0].verifier]).cosignatures)
        == 1
    )


def test_origin_must_be_the_log_key_name() -> None:
    body = Checkpoint("other.example/log", 1, ROOT).to_body()
    data = sign_note(body, [LOG])  # signed by the right key, but about another origin
    with pytest.raises(VerificationError) as e:
        open_checkpoint(data, LOG.verifier)
    assert e.value.code == "checkpoint_origin_mismatch"


def test_go_sumdb_tree_head() -> None:
    verifier = parse_vkey(SUMDB_VKEY)
    cp = Checkpoint.parse(open_note(SUMDB_NOTE, [verifier]).text)
    assert (cp.origin, cp.size) == ("go.sum database tree", 6476701)
    # sum.golang.org's key name is not its origin: our policy refuses it.
    with pytest.raises(VerificationError) as e:
        open_checkpoint(SUMDB_NOTE, verifier)
    assert e.value.code == "checkpoint_origin_mismatch"


def test_signed_body_that_is_not_a_checkpoint() -> None:
    data = sign_note("not a checkpoint\n", [LOG])
    with pytest.raises(FormatError):
        open_checkpoint(data, LOG.verifier)


def test_foreign_checkpoint_with_extensions_opens_and_can_be_cosigned() -> None:
    body = Checkpoint(ORIGIN, 3, ROOT).to_body() + "extension\n"
    witness = WITNESSES[0]
    data = (
        Note.from_bytes(sign_note(body, [LOG]))
        .with_signatures([cosign(body, witness.key, witness.name, 9)])
        .to_bytes()
    )
    signed = open_checkpoint(data, LOG.verifier, [witness.verifier])
    assert signed.checkpoint.extensions == ("extension",)
    assert signed.body == body
    assert signed.cosignatures[0].timestamp == 9


def test_cosigner_with_the_log_key_name_and_id_is_ambiguous() -> None:
    data = sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), LOG_KEY)

    twin = CosignatureVerifier(ORIGIN, SigningKey.generate().public)
    object.__setattr__(twin, "key_id", LOG.key_id)
    with pytest.raises(VerificationError) as e:
        open_checkpoint(data, LOG.verifier, [twin])
    assert e.value.code == "note_verifier_ambiguous"


SIGNED = cosigned(Checkpoint(ORIGIN, 7, ROOT), WITNESSES[:2])


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_checkpoints_raise_only_format_or_verification_errors(data: st.DataObject) -> None:
    out = bytearray(SIGNED)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(out) - 1))
        kind = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if kind == "flip":
            out[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
        else:
            del out[pos]
    try:
        signed = open_checkpoint(bytes(out), LOG.verifier, [w.verifier for w in WITNESSES[:2]])
    except (FormatError, VerificationError):
        return
    assert signed.checkpoint == Checkpoint(ORIGIN, 7, ROOT)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_format_or_verification_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError, VerificationError):
        open_checkpoint(data, LOG.verifier, [WITNESSES[0].verifier])
