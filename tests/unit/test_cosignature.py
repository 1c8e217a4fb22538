"""cosignature/v1 (c2sp.org/tlog-cosignature): the spec's example and both directions."""

from __future__ import annotations

import base64
import hashlib

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.cosignature import (
    MAX_TIMESTAMP,
    CosignatureVerifier,
    Cosigner,
    cosign,
    cosignature_message,
    format_cosigner_vkey,
    parse_cosigner_vkey,
)
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import (
    SIG_TYPE_COSIGNATURE_V1,
    Note,
    NoteSignature,
    Signer,
    open_note,
    parse_vkey,
    sign_note,
)

EM = "\u2014"
# c2sp.org/tlog-cosignature, the example at the top of the spec.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_BODY
    + "\n"
    + f"{EM} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    + f"{EM} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
).encode()
# The spec's "Ed25519 signed message" example, verbatim.
SPEC_SIGNED_MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

WITNESS = SigningKey(bytes(range(32)))
NAME = "witness.example.com/w1"
LOG = Signer("example.com/behind-the-sofa", SigningKey(bytes(32)))


def test_spec_example_structure() -> None:
    note = Note.from_bytes(SPEC_NOTE)
    assert note.text == SPEC_BODY
    cosig = note.signatures[1]
    assert cosig.name == NAME
    assert f"{cosig.key_id:08x}" == "8d66cf3f"
    assert len(cosig.signature) == 8 + 64
    assert int.from_bytes(cosig.signature[:8], "big") == 1679315147


def test_spec_signed_message() -> None:
    assert cosignature_message(SPEC_BODY, 1679315147) == SPEC_SIGNED_MESSAGE


def test_cosign_is_byte_correct() -> None:
    """Rebuild the line from the spec's definitions with PyNaCl directly."""
    timestamp = 1679315147
    public = bytes(nacl.signing.SigningKey(WITNESS.seed).verify_key)
    kid = hashlib.sha256(NAME.encode() + b"\n" + b"\x04" + public).digest()[:4]
    raw_sig = nacl.signing.SigningKey(WITNESS.seed).sign(SPEC_SIGNED_MESSAGE).signature
    expected = (
        f"{EM} {NAME} "
        + base64.b64encode(kid + timestamp.to_bytes(8, "big") + raw_sig).decode()
        + "\n"
    )
    line = cosign(SPEC_BODY, WITNESS, NAME, timestamp)
    assert line.to_line() == expected
    assert line.key_id == int.from_bytes(kid, "big")


def test_cosign_and_verify_in_a_note() -> None:
    verifier = CosignatureVerifier(NAME, WITNESS.public)
    logged = Note.from_bytes(sign_note(SPEC_BODY, [LOG]))
    cosigned = logged.with_signatures([cosign(SPEC_BODY, WITNESS, NAME, 1700000000)])
    opened = open_note(cosigned.to_bytes(), [LOG.verifier, verifier])
    assert [s.name for s in opened.verified] == [LOG.name, NAME]
    cosignature = verifier.cosignature(opened.verified[1])
    assert cosignature.timestamp == 1700000000
    assert cosignature.public_key == WITNESS.public
    assert verifier.timestamp(opened.verified[1].signature) == 1700000000


def test_cosigner_plugs_into_sign_note() -> None:
    cosigner = Cosigner(NAME, WITNESS, 42)
    data = sign_note(SPEC_BODY, [LOG, cosigner])
    opened = open_note(data, [cosigner.verifier])
    assert opened.verified[0].signature[:8] == (42).to_bytes(8, "big")
    assert [s.name for s in opened.unverified] == [LOG.name]


def test_many_cosigners() -> None:
    cosigners = [
        Cosigner(f"w{i}.example", SigningKey(bytes([i]) * 32), 1000 + i) for i in range(16)
    ]
    data = sign_note(SPEC_BODY, [LOG, *cosigners])
    opened = open_note(data, [LOG.verifier, *(c.verifier for c in cosigners)])
    stamps = [
        c.verifier.timestamp(s.signature)
        for c, s in zip(cosigners, opened.verified[1:], strict=True)
    ]
    assert stamps == [1000 + i for i in range(16)]


def test_verification_failures() -> None:
    verifier = CosignatureVerifier(NAME, WITNESS.public)
    sig = cosign(SPEC_BODY, WITNESS, NAME, 5).signature
    message = SPEC_BODY.encode()
    assert verifier.verify(message, sig)
    assert not verifier.verify(message, (6).to_bytes(8, "big") + sig[8:])  # other time
    assert not verifier.verify(message.replace(b"20852163", b"20852164"), sig)
    assert not verifier.verify(message, sig[:-1])
    assert not verifier.verify(message, sig + b"\x00")
    assert not verifier.verify(message, sig[8:])
    assert not CosignatureVerifier(NAME, SigningKey.generate().public).verify(message, sig)
    # A plain Ed25519 signature of the checkpoint is not a cosignature.
    plain = WITNESS.sign(message)
    assert not verifier.verify(message, (0).to_bytes(8, "big") + plain)


def test_timestamp_above_2_63_is_refused() -> None:
    big = 1 << 63
    signed = b"cosignature/v1\ntime %d\n" % big + SPEC_BODY.encode()
    sig = big.to_bytes(8, "big") + WITNESS.sign(signed)
    verifier = CosignatureVerifier(NAME, WITNESS.public)
    assert not verifier.verify(SPEC_BODY.encode(), sig)
    with pytest.raises(FormatError):
        verifier.timestamp(sig)


@pytest.mark.parametrize("timestamp", [-1, MAX_TIMESTAMP + 1, True, 1.5, "1"])
def test_cosign_rejects_bad_timestamps(timestamp: object) -> None:
    with pytest.raises(FormatError) as e:
        cosign(SPEC_BODY, WITNESS, NAME, timestamp)  # type: ignore[arg-type]
    assert e.value.code == "cosignature_timestamp_invalid"


def test_cosign_extremes() -> None:
    verifier = CosignatureVerifier(NAME, WITNESS.public)
    for t in (0, MAX_TIMESTAMP):
        sig = cosign(SPEC_BODY, WITNESS, NAME, t)
        assert verifier.verify(SPEC_BODY.encode(), sig.signature)
        assert verifier.timestamp(sig.signature) == t


@pytest.mark.parametrize("body", ["no newline", "bad\tchar\n", ""])
def test_cosign_rejects_bad_bodies(body: str) -> None:
    with pytest.raises(FormatError):
        cosign(body, WITNESS, NAME, 1)


def test_cosign_rejects_bad_names() -> None:
    with pytest.raises(FormatError):
        cosign(SPEC_BODY, WITNESS, "bad name", 1)


def test_a_bad_known_cosignature_rejects_the_note() -> None:
    verifier = CosignatureVerifier(NAME, WITNESS.public)
    good = cosign(SPEC_BODY, WITNESS, NAME, 5)
    bad = NoteSignature(good.name, good.key_id, (9).to_bytes(8, "big") + good.signature[8:])
    note = Note.from_bytes(sign_note(SPEC_BODY, [LOG])).with_signatures([bad])
    with pytest.raises(VerificationError) as e:
        open_note(note.to_bytes(), [LOG.verifier, verifier])
    assert e.value.code == "note_signature_invalid"


def test_cosigner_vkeys() -> None:
    vkey = format_cosigner_vkey(NAME, WITNESS.public)
    verifier = parse_cosigner_vkey(vkey)
    assert verifier == CosignatureVerifier(NAME, WITNESS.public)
    assert verifier.vkey == vkey
    assert vkey.split("+", 2)[2].startswith("B")  # base64 of 0x04...
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == SIG_TYPE_COSIGNATURE_V1
    with pytest.raises(FormatError) as e:
        parse_vkey(vkey)
    assert e.value.code == "vkey_type_unsupported"
    with pytest.raises(FormatError) as e:
        parse_cosigner_vkey(LOG.verifier.vkey)
    assert e.value.code == "vkey_type_unsupported"


def test_key_ids_are_domain_separated() -> None:
    as_log = Signer(NAME, WITNESS)
    as_witness = Cosigner(NAME, WITNESS, 0)
    assert as_log.key_id != as_witness.key_id
    # A note signature by the same key and name is not taken for a cosignature.
    data = sign_note(SPEC_BODY, [as_log])
    with pytest.raises(VerificationError) as e:
        open_note(data, [as_witness.verifier])
    assert e.value.code == "note_unverified"


def test_cosignature_of_another_witness_is_refused() -> None:
    verifier = CosignatureVerifier(NAME, WITNESS.public)
    other = cosign(SPEC_BODY, WITNESS, "other.example", 1)
    with pytest.raises(FormatError):
        verifier.cosignature(other)


@given(st.binary(max_size=120), st.binary(max_size=100))
@settings(max_examples=100)
def test_verify_never_raises(message: bytes, signature: bytes) -> None:
    assert CosignatureVerifier(NAME, WITNESS.public).verify(message, signature) in (True, False)


@given(st.integers(min_value=0, max_value=MAX_TIMESTAMP))
@settings(max_examples=40)
def test_round_trip_any_timestamp(timestamp: int) -> None:
    verifier = CosignatureVerifier(NAME, WITNESS.public)
    sig = cosign(SPEC_BODY, WITNESS, NAME, timestamp)
    line = sig.to_line().encode()
    parsed = Note.from_bytes(SPEC_BODY.encode() + b"\n" + line).signatures[0]
    assert parsed == sig
    assert verifier.verify(SPEC_BODY.encode(), parsed.signature)
    assert verifier.timestamp(parsed.signature) == timestamp
    assert cosignature_message(SPEC_BODY, timestamp).startswith(
        b"cosignature/v1\ntime %d\n" % timestamp
    )
