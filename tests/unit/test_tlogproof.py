"""c2sp.org/tlog-proof@v1 files: exact bytes, strict parsing and offline verification."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.cosignature import CosignatureVerifier, Cosigner, cosign
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, NoteSignature, Signer, sign_note
from remembrancer.core.tlogproof import (
    HEADER,
    MAX_PROOF_HASHES,
    MAX_TLOG_PROOF_BYTES,
    TlogProof,
    verify_tlog_proof,
)

# --- a naive RFC 6962 reference (section 2.1), independent of remembrancer.core.rfc6962 ---


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return _leaf(leaves[0])
    k = _split(len(leaves))
    return _node(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


# --- fixtures ---------------------------------------------------------------------------------

ORIGIN = "alpha.example.org/dao:vaultmesh"
LOG_KEY = SigningKey(b"\x11" * 32)
LOG = Signer(ORIGIN, LOG_KEY)
WITNESSES = [
    Cosigner(f"w{i}.example", SigningKey(bytes([0x60 + i]) * 32), 1700000000 + i) for i in range(4)
]
LEAVES = [b"record %d" % i for i in range(13)]
CP = Checkpoint(ORIGIN, len(LEAVES), mth(LEAVES))


def checkpoint_note(witnesses: list[Cosigner] = WITNESSES) -> bytes:
    note = Note.from_bytes(sign_checkpoint(CP, LOG_KEY))
    body = CP.to_body()
    return note.with_signatures(
        cosign(body, w.key, w.name, w.timestamp) for w in witnesses
    ).to_bytes()


NOTE = checkpoint_note()


def proof_for(index: int, extra: bytes | None = None, note: bytes = NOTE) -> TlogProof:
    return TlogProof(index, tuple(path(index, LEAVES)), note, extra)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- format -----------------------------------------------------------------------------------


def test_exact_bytes() -> None:
    hashes = path(5, LEAVES)
    proof = TlogProof(5, tuple(hashes), NOTE)
    expected = (
        "c2sp.org/tlog-proof@v1\nindex 5\n" + "".join(b64(h) + "\n" for h in hashes) + "\n"
    ).encode() + NOTE
    assert proof.to_bytes() == expected
    assert TlogProof.parse(expected) == proof


def test_exact_bytes_with_extra() -> None:
    proof = TlogProof(0, tuple(path(0, LEAVES)), NOTE, b"extra information")
    data = proof.to_bytes()
    assert data.startswith(f"{HEADER}\nextra {b64(b'extra information')}\nindex 0\n".encode())
    assert TlogProof.parse(data) == proof


def test_no_hashes() -> None:
    single = Checkpoint(ORIGIN, 1, _leaf(b"only"))
    note = sign_checkpoint(single, LOG_KEY)
    proof = TlogProof(0, (), note)
    assert proof.to_bytes() == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + note
    assert TlogProof.parse(proof.to_bytes()) == proof
    verified = verify_tlog_proof(proof, b"only", LOG.verifier)
    assert verified.checkpoint == single


def test_spec_example_proof_lines() -> None:
    """The proof lines of the spec's example, with a checkpoint we can sign."""
    head = (
        b"c2sp.org/tlog-proof@v1\n"
        b"extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
        b"index 73894\n"
        b"gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
        b"B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
        b"EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
        b"RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
        b"AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
        b"\n"
    )
    fancy = Checkpoint(
        "example.com/fancylog",
        109482,
        base64.b64decode("sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08="),
    )
    data = head + sign_checkpoint(fancy, LOG_KEY)
    proof = TlogProof.parse(data)
    assert proof.index == 73894
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert len(proof.proof_hashes) == 5
    assert proof.checkpoint == fancy
    assert proof.to_bytes() == data


@given(
    st.integers(0, len(LEAVES) - 1),
    st.one_of(st.none(), st.binary(min_size=1, max_size=100)),
)
@settings(max_examples=50, deadline=None)
def test_round_trip(index: int, extra: bytes | None) -> None:
    proof = proof_for(index, extra)
    assert TlogProof.parse(proof.to_bytes()) == proof


GOOD = proof_for(3).to_bytes()
HEAD, _, REST = GOOD.partition(b"\n\n")
LINES = HEAD.split(b"\n")


def with_head(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n\n" + REST


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "tlog_proof_malformed"),
        (HEAD, "tlog_proof_malformed"),
        (with_head(*LINES[1:]), "tlog_proof_header"),
        (with_head(b"c2sp.org/tlog-proof@v2", *LINES[1:]), "tlog_proof_header"),
        (with_head(b"c2sp.org/tlog-proof@v1 ", *LINES[1:]), "tlog_proof_header"),
        (b"\n" + GOOD, "tlog_proof_header"),
        (GOOD.replace(b"\n", b"\r\n", 1), "tlog_proof_header"),
        (with_head(LINES[0]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], *LINES[2:]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], b"index 03", *LINES[2:]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], b"index -3", *LINES[2:]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], b"index +3", *LINES[2:]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], b"index  3", *LINES[2:]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], b"index 3 ", *LINES[2:]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], b"index three", *LINES[2:]), "tlog_proof_index_invalid"),
        (
            with_head(LINES[0], b"index 18446744073709551615", *LINES[2:]),
            "tlog_proof_index_invalid",
        ),
        (with_head(LINES[0], b"Index 3", *LINES[2:]), "tlog_proof_index_invalid"),
        (with_head(LINES[0], b"extra ", *LINES[1:]), "tlog_proof_extra_invalid"),
        (with_head(LINES[0], b"extra !!notbase64!!", *LINES[1:]), "tlog_proof_extra_invalid"),
        (with_head(LINES[0], b"extra QQ", *LINES[1:]), "tlog_proof_extra_invalid"),
        (with_head(LINES[0], *LINES[1:], b"extra QQ=="), "tlog_proof_hash_invalid"),
        (with_head(LINES[0], b"extra QQ==", b"extra QQ==", *LINES[1:]), "tlog_proof_index_invalid"),
        (with_head(*LINES[:2], LINES[2] + b"x"), "tlog_proof_hash_invalid"),
        (with_head(*LINES[:2], b64(bytes(31)).encode()), "tlog_proof_hash_invalid"),
        (with_head(*LINES[:2], b64(bytes(33)).encode()), "tlog_proof_hash_invalid"),
        (with_head(*LINES[:2], b"not-valid-base64!!!"), "tlog_proof_hash_invalid"),
        (
            with_head(*LINES[:2], *[b64(bytes(32)).encode()] * (MAX_PROOF_HASHES + 1)),
            "tlog_proof_too_long",
        ),
        (with_head(*LINES[:2], "\u00e9".encode()), "tlog_proof_malformed"),
        (HEAD + b"\n\n", "note_malformed"),
        (HEAD + b"\n\nnot a checkpoint\n", "note_malformed"),
        (GOOD + b"junk", "note_malformed"),
        (GOOD + b"\n", "note_malformed"),
        (GOOD + b"x" * MAX_TLOG_PROOF_BYTES, "tlog_proof_too_large"),
    ],
)
def test_parse_is_strict(data: bytes, code: str) -> None:
    with pytest.raises(FormatError) as e:
        TlogProof.parse(data)
    assert e.value.code == code


def test_signed_body_that_is_not_a_checkpoint() -> None:
    data = HEAD + b"\n\n" + sign_note("hello\n", [LOG])
    with pytest.raises(FormatError) as e:
        TlogProof.parse(data)
    assert e.value.code.startswith("checkpoint_")


def test_value_checks() -> None:
    hashes = tuple(path(3, LEAVES))
    for args in [
        (-1, hashes, NOTE, None),
        (True, hashes, NOTE, None),
        (3, (*hashes[:-1], b"short"), NOTE, None),
        (3, hashes, NOTE, b""),
        (3, hashes, NOTE, b"x" * (64 * 1024 + 1)),
        (3, hashes, b"not a note", None),
        (3, (bytes(32),) * (MAX_PROOF_HASHES + 1), NOTE, None),
    ]:
        with pytest.raises(FormatError):
            TlogProof(*args)


# --- verification -------------------------------------------------------------------------------

VERIFIERS = [w.verifier for w in WITNESSES]


@pytest.mark.parametrize("index", range(len(LEAVES)))
def test_verify_every_leaf(index: int) -> None:
    verified = verify_tlog_proof(proof_for(index), LEAVES[index], LOG.verifier, VERIFIERS, 4)
    assert verified.index == index
    assert verified.leaf_hash == _leaf(LEAVES[index])
    assert verified.checkpoint == CP
    assert [c.name for c in verified.cosigners] == [w.name for w in WITNESSES]
    assert [c.timestamp for c in verified.cosigners] == [w.timestamp for w in WITNESSES]
    assert verified.extra is None


def test_extra_is_carried_unauthenticated() -> None:
    proof = proof_for(2, b"context")
    assert verify_tlog_proof(proof, LEAVES[2], LOG.verifier).extra == b"context"


def test_quorum() -> None:
    proof = proof_for(4)
    verify_tlog_proof(proof, LEAVES[4], LOG.verifier, VERIFIERS[:2], 2)
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(proof, LEAVES[4], LOG.verifier, VERIFIERS[:2], 3)
    assert e.value.code == "cosigner_quorum_not_met"
    assert e.value.details["verified"] == 2
    # cosignatures missing from the note do not count
    bare = proof_for(4, note=checkpoint_note(WITNESSES[:1]))
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(bare, LEAVES[4], LOG.verifier, VERIFIERS, 2)
    assert e.value.code == "cosigner_quorum_not_met"


def test_one_key_under_two_names_counts_once() -> None:
    key = WITNESSES[0].key
    alias = Cosigner("alias.example", key, 5)
    note = Note.from_bytes(checkpoint_note(WITNESSES[:1])).with_signatures(
        [cosign(CP.to_body(), key, alias.name, 5)]
    )
    proof = proof_for(1, note=note.to_bytes())
    verifiers = [WITNESSES[0].verifier, alias.verifier]
    verified = verify_tlog_proof(proof, LEAVES[1], LOG.verifier, verifiers, 1)
    assert len(verified.signed_checkpoint.cosignatures) == 2
    assert len(verified.cosigners) == 1
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(proof, LEAVES[1], LOG.verifier, verifiers, 2)
    assert e.value.code == "cosigner_quorum_not_met"


def test_the_log_key_does_not_witness_itself() -> None:
    self_witness = Cosigner("self.example", LOG_KEY, 5)
    note = Note.from_bytes(sign_checkpoint(CP, LOG_KEY)).with_signatures(
        [cosign(CP.to_body(), LOG_KEY, self_witness.name, 5)]
    )
    proof = proof_for(1, note=note.to_bytes())
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(proof, LEAVES[1], LOG.verifier, [self_witness.verifier], 1)
    assert e.value.code == "cosigner_quorum_not_met"


def test_wrong_leaf() -> None:
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(proof_for(3), b"something else", LOG.verifier)
    assert e.value.code == "inclusion_root_mismatch"
    with pytest.raises(VerificationError):
        verify_tlog_proof(proof_for(3), LEAVES[4], LOG.verifier)


def test_wrong_index_or_path() -> None:
    good = proof_for(3)
    moved = TlogProof(4, good.proof_hashes, NOTE)
    with pytest.raises(VerificationError):
        verify_tlog_proof(moved, LEAVES[3], LOG.verifier)
    beyond = TlogProof(len(LEAVES), good.proof_hashes, NOTE)
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(beyond, LEAVES[3], LOG.verifier)
    assert e.value.code == "index_out_of_range"
    short = TlogProof(3, good.proof_hashes[:-1], NOTE)
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(short, LEAVES[3], LOG.verifier)
    assert e.value.code == "proof_wrong_length"
    flipped = TlogProof(3, (bytes(32), *good.proof_hashes[1:]), NOTE)
    with pytest.raises(VerificationError):
        verify_tlog_proof(flipped, LEAVES[3], LOG.verifier)


def test_wrong_log_key() -> None:
    other = Signer(ORIGIN, SigningKey.generate())
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(proof_for(3), LEAVES[3], other.verifier)
    assert e.value.code == "checkpoint_unsigned"


def test_bad_cosignature_in_the_proof() -> None:
    note = Note.from_bytes(NOTE)
    w = note.signatures[1]
    broken = NoteSignature(w.name, w.key_id, (7).to_bytes(8, "big") + w.signature[8:])
    proof = proof_for(3, note=note.with_signatures([broken]).to_bytes())
    with pytest.raises(VerificationError) as e:
        verify_tlog_proof(proof, LEAVES[3], LOG.verifier, VERIFIERS)
    assert e.value.code == "cosignature_invalid"


def test_min_cosigners_must_be_sensible() -> None:
    with pytest.raises(FormatError):
        verify_tlog_proof(proof_for(3), LEAVES[3], LOG.verifier, VERIFIERS, -1)


def test_cosigner_verifier_type() -> None:
    assert isinstance(VERIFIERS[0], CosignatureVerifier)


# --- robustness --------------------------------------------------------------------------------


def mutate(data: bytes, draw: st.DataObject) -> bytes:
    out = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 3))):
        pos = draw.draw(st.integers(0, len(out) - 1))
        kind = draw.draw(st.sampled_from(["flip", "insert", "delete"]))
        if kind == "flip":
            out[pos] ^= draw.draw(st.integers(1, 255))
        elif kind == "insert":
            out[pos:pos] = draw.draw(st.binary(min_size=1, max_size=3))
        else:
            del out[pos]
    return bytes(out)


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_mutated_proofs_raise_only_format_or_verification_errors(data: st.DataObject) -> None:
    mutated = mutate(GOOD, data)
    try:
        proof = TlogProof.parse(mutated)
    except FormatError:
        return
    assert proof.to_bytes() == mutated
    try:
        verified = verify_tlog_proof(proof, LEAVES[3], LOG.verifier, VERIFIERS)
    except (FormatError, VerificationError):
        return
    assert verified.checkpoint == CP
    assert verified.index == 3


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        TlogProof.parse(HEADER.encode() + b"\n" + data)
    with contextlib.suppress(FormatError):
        TlogProof.parse(data)
