"""Ed25519 keys, did:key (W3C did:key test vectors), base58btc and key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    NotFoundError,
    VerificationError,
)
from remembrancer.core.keys import (
    KEY_FILE_HEADER,
    MAX_KEY_FILE_BYTES,
    PublicKey,
    SigningKey,
    base58btc_decode,
    base58btc_encode,
    did_key_from_public,
    format_key_file,
    parse_key_file,
    public_from_did_key,
)
from remembrancer.node.keyfile import read_key_file, write_key_file

# w3c-ccg/did-method-key, test-vectors/ed25519-x25519.json: seed -> (did, publicKeyBase58).
W3C_ED25519 = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000002",
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
        "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000003",
        "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
        "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000004",
        "did:key:z6MkwW6aqMnjgrhJXFUko3NnZPGzVpkNzhYK7yEhnsibmLwL",
        "J3qYF7YJMKCqQke47UQwiHizgFUXapHxRxKmxbkar89x",
    ),
]

# Bitcoin Core src/test/data/base58_encode_decode.json
BITCOIN_BASE58 = [
    ("", ""),
    ("61", "2g"),
    ("626262", "a3gV"),
    ("636363", "aPEr"),
    ("73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"),
    ("00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"),
    ("516b6fcd0f", "ABnLTmg"),
    ("bf4f89001e670274dd", "3SEo3LWLoPntC"),
    ("572e4794", "3EFU7m"),
    ("ecac89cad93923c02321", "EJDM8drfXA6uyA"),
    ("10c8511e", "Rt5zm"),
    ("00000000000000000000", "1111111111"),
]

seeds = st.binary(min_size=32, max_size=32)


# --- base58btc -------------------------------------------------------------------------


@pytest.mark.parametrize(("hex_data", "text"), BITCOIN_BASE58)
def test_base58_bitcoin_vectors(hex_data: str, text: str) -> None:
    assert base58btc_encode(bytes.fromhex(hex_data)) == text
    assert base58btc_decode(text) == bytes.fromhex(hex_data)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=5))
def test_base58_round_trip_keeps_leading_zeros(data: bytes, zeros: int) -> None:
    data = b"\x00" * zeros + data
    assert base58btc_decode(base58btc_encode(data)) == data


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "abc+", " 2g", "2g\n", "é"])
def test_base58_rejects_characters_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(FormatError) as e:
        base58btc_decode(bad)
    assert e.value.code == "base58_invalid"


def test_base58_rejects_long_input() -> None:
    with pytest.raises(FormatError):
        base58btc_decode("2" * 257)


# --- keys and did:key --------------------------------------------------------------------


@pytest.mark.parametrize(("seed_hex", "did", "public_b58"), W3C_ED25519)
def test_w3c_did_key_vectors(seed_hex: str, did: str, public_b58: str) -> None:
    key = SigningKey(bytes.fromhex(seed_hex))
    assert key.did == did
    assert key.public.did == did
    assert did_key_from_public(key.public) == did
    assert base58btc_encode(key.public.raw) == public_b58
    assert public_from_did_key(did) == key.public
    assert PublicKey.from_did(did).raw == base58btc_decode(public_b58)


@given(seeds)
def test_did_key_round_trip(seed: bytes) -> None:
    public = SigningKey(seed).public
    did = public.did
    assert did.startswith("did:key:z6Mk")
    assert len(did) == 56
    assert public_from_did_key(did) == public


@pytest.mark.parametrize(
    ("did", "code"),
    [
        ("did:key:", "did_key_malformed"),
        ("did:web:example.com", "did_key_malformed"),
        ("DID:KEY:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "did_key_malformed"),
        ("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp#frag", "did_key_malformed"),
        ("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp ", "did_key_malformed"),
        (" did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "did_key_malformed"),
        ("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooW0", "did_key_malformed"),
        # base64url multibase 'u' of the same bytes
        (
            "did:key:u7QE7aie8zrakLWKjqNAqbw1zZTIVdx3iQ6Y6wEihi1naKQ",
            "did_key_multibase_unsupported",
        ),
        # X25519 key agreement key (multicodec 0xec01) from the same W3C vector
        ("did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW", "did_key_type_unsupported"),
        # secp256k1 (0xe701), from the W3C secp256k1 vectors
        ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "did_key_type_unsupported"),
        ("did:key:z6Mk", "did_key_type_unsupported"),
        ("did:key:z" + base58btc_encode(b"\xed\x01" + bytes(31)), "did_key_length_invalid"),
        ("did:key:z" + base58btc_encode(b"\xed\x01" + bytes(33)), "did_key_length_invalid"),
        ("did:key:z" + "2" * 200, "did_key_malformed"),
    ],
)
def test_did_key_parsing_is_strict(did: str, code: str) -> None:
    with pytest.raises(FormatError) as e:
        public_from_did_key(did)
    assert e.value.code == code


@given(st.text(max_size=80))
def test_did_key_parser_raises_only_format_error(text: str) -> None:
    try:
        key = public_from_did_key(text)
    except FormatError:
        return
    assert key.did == text


def test_sign_and_verify() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"hello")
    assert len(sig) == 64
    assert key.public.verify(b"hello", sig)
    assert not key.public.verify(b"hellO", sig)
    assert not key.public.verify(b"hello", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not SigningKey.generate().public.verify(b"hello", sig)
    key.public.verify_or_raise(b"hello", sig)
    with pytest.raises(VerificationError) as e:
        key.public.verify_or_raise(b"other", sig)
    assert e.value.code == "signature_invalid"


def test_rfc8032_test_1() -> None:
    # RFC 8032 section 7.1, TEST 1 (empty message).
    key = SigningKey(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    assert key.public.raw.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert key.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


@given(seeds, st.binary(max_size=200), st.binary(max_size=100))
@settings(max_examples=50)
def test_verify_never_raises(seed: bytes, message: bytes, signature: bytes) -> None:
    assert SigningKey(seed).public.verify(message, signature) in (True, False)


def test_generate() -> None:
    assert SigningKey.generate() != SigningKey.generate()
    assert SigningKey.generate(bytes(32)) == SigningKey(bytes(32))
    assert SigningKey.from_bytes(bytes(32)).to_bytes() == bytes(32)
    assert (
        PublicKey.from_bytes(SigningKey(bytes(32)).public.to_bytes())
        == SigningKey(bytes(32)).public
    )


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_key_sizes(size: int) -> None:
    with pytest.raises(FormatError) as e:
        SigningKey(bytes(size))
    assert e.value.code == "signing_key_invalid"
    with pytest.raises(FormatError) as e:
        PublicKey(bytes(size))
    assert e.value.code == "public_key_invalid"


def test_repr_hides_the_seed() -> None:
    seed = bytes(range(32))
    key = SigningKey(seed)
    text = repr(key) + str(key)
    assert seed.hex() not in text
    assert repr(seed) not in text
    assert base64.b64encode(seed).decode() not in text
    assert key.did in text


# --- key files ---------------------------------------------------------------------------

EXAMPLE_FILE = (
    b"remembrancer-ed25519-private-key-v1\n"
    b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=\n"
    b"did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG\n"
)


def test_key_file_example_from_the_spec() -> None:
    key = SigningKey(bytes(31) + b"\x01")
    assert format_key_file(key) == EXAMPLE_FILE
    assert len(EXAMPLE_FILE) == 138
    assert parse_key_file(EXAMPLE_FILE) == key
    spec = Path(__file__).resolve().parents[2] / "docs" / "spec" / "keyfile.md"
    assert EXAMPLE_FILE.decode() in spec.read_text()


@given(seeds)
def test_key_file_round_trip(seed: bytes) -> None:
    key = SigningKey(seed)
    data = format_key_file(key)
    assert len(data) == 138
    assert parse_key_file(data) == key


OTHER_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "keyfile_malformed"),
        (EXAMPLE_FILE[:-1], "keyfile_malformed"),
        (EXAMPLE_FILE.replace(b"\n", b"\r\n"), "keyfile_version"),
        (b"\xef\xbb\xbf" + EXAMPLE_FILE, "keyfile_malformed"),
        (EXAMPLE_FILE + b"\n", "keyfile_malformed"),
        (EXAMPLE_FILE + b"# comment\n", "keyfile_malformed"),
        (EXAMPLE_FILE.replace(b"-v1", b"-v2"), "keyfile_version"),
        (EXAMPLE_FILE.replace(b"AAE=", b"AAF="), "keyfile_seed_invalid"),  # padding bits
        (EXAMPLE_FILE.replace(b"AAE=", b"AE="), "keyfile_seed_invalid"),
        (EXAMPLE_FILE.replace(b"AAE=", b"AAE"), "keyfile_seed_invalid"),
        (EXAMPLE_FILE.replace(b"AAE=\n", b"AAE= \n"), "keyfile_seed_invalid"),
        (EXAMPLE_FILE.replace(b"AAAA", b"AA-_", 1), "keyfile_seed_invalid"),
        (
            EXAMPLE_FILE.replace(
                b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=", b"A" * 42 + b"=="
            ),
            "keyfile_seed_invalid",
        ),
        (
            EXAMPLE_FILE.replace(
                b"did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG", OTHER_DID.encode()
            ),
            "keyfile_did_mismatch",
        ),
        (EXAMPLE_FILE.replace(b"VJG\n", b"VJG \n"), "keyfile_did_mismatch"),
        (EXAMPLE_FILE.replace(b"did:key:", b""), "keyfile_did_mismatch"),
        (EXAMPLE_FILE.replace(b"remembrancer", "rémembrancer".encode()), "keyfile_malformed"),
        (b"x" * (MAX_KEY_FILE_BYTES + 1), "keyfile_too_large"),
    ],
)
def test_key_file_parsing_is_strict(data: bytes, code: str) -> None:
    with pytest.raises(FormatError) as e:
        parse_key_file(data)
    assert e.value.code == code


@given(st.binary(max_size=300))
def test_key_file_parser_random_bytes(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_key_file(data)


@given(st.integers(min_value=0, max_value=len(EXAMPLE_FILE) - 1), st.integers(1, 255))
def test_key_file_parser_rejects_every_single_byte_change(pos: int, xor: int) -> None:
    data = bytearray(EXAMPLE_FILE)
    data[pos] ^= xor
    with pytest.raises(FormatError):
        parse_key_file(bytes(data))


@given(st.data())
def test_key_file_parser_truncations_and_insertions(data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(EXAMPLE_FILE)))
    insert = data.draw(st.binary(max_size=4))
    cut = data.draw(st.integers(0, 4))
    mutated = EXAMPLE_FILE[:pos] + insert + EXAMPLE_FILE[pos + cut :]
    if mutated == EXAMPLE_FILE:
        assert parse_key_file(mutated) == SigningKey(bytes(31) + b"\x01")
    else:
        with pytest.raises(FormatError):
            parse_key_file(mutated)


def test_write_and_read_key_file(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "node.key"
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        write_key_file(path, key)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == format_key_file(key)
    assert read_key_file(path) == key
    assert read_key_file(str(path)) == key


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, second = SigningKey.generate(), SigningKey.generate()
    write_key_file(path, first)
    with pytest.raises(ConfigError) as e:
        write_key_file(path, second)
    assert e.value.code == "keyfile_exists"
    assert read_key_file(path) == first


def test_write_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "node.key"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as e:
        write_key_file(link, SigningKey.generate())
    assert e.value.code == "keyfile_exists"
    assert not target.exists()


def test_overwrite_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, second = SigningKey.generate(), SigningKey.generate()
    write_key_file(path, first)
    path.chmod(0o644)
    write_key_file(path, second, overwrite=True)
    assert read_key_file(path) == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]


def test_overwrite_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = SigningKey.generate()
    write_key_file(path, key, overwrite=True)
    assert read_key_file(path) == key


def test_write_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        write_key_file(tmp_path / "nope" / "node.key", SigningKey.generate())
    assert e.value.code == "keyfile_unwritable"


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as e:
        read_key_file(tmp_path / "absent.key")
    assert e.value.code == "keyfile_not_found"


def test_read_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        read_key_file(tmp_path)
    assert e.value.code == "keyfile_unreadable"


def test_read_refuses_large_files(tmp_path: Path) -> None:
    path = tmp_path / "big.key"
    path.write_bytes(EXAMPLE_FILE + b"x" * MAX_KEY_FILE_BYTES)
    with pytest.raises(FormatError) as e:
        read_key_file(path)
    assert e.value.code == "keyfile_too_large"


def test_read_rejects_a_tampered_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(EXAMPLE_FILE.replace(KEY_FILE_HEADER.encode(), b"ssh-ed25519"))
    with pytest.raises(FormatError) as e:
        read_key_file(path)
    assert e.value.code == "keyfile_version"
