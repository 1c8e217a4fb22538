"""One rule, one home (issue 16): each rule below is stated once, and every
place that applies it gives the same answer.  A second, diverging copy of
any of them makes one of these tests fail."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest

from remembrancer.cli.tiledlog import check_cosigners
from remembrancer.core.cadence import TARGET_PATTERN, TARGET_RE
from remembrancer.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from remembrancer.core.cosignature import Cosigner, cosign
from remembrancer.core.encoding import b64url_decode, b64url_encode, decode_base64, encode_base64
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.identifiers import (
    FEDERATION_ID_PATTERN,
    FEDERATION_ID_RE,
    MAX_DID_CHARS,
    NAMESPACE_PATTERN,
    NAMESPACE_RE,
    is_did,
)
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, Signer
from remembrancer.core.rfc6962 import hash_leaf
from remembrancer.core.tiles import MAX_ENTRY_SIZE, TileTree
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.federation.protocol.grammar import check_did, check_namespace, check_sig

NAMESPACES = ["dao:vaultmesh", "a:b", "dao:", ":x", "DAO:x", "dao:x\n", "-a:b", "a" * 63 + ":b",
              "a" * 64 + ":b", "dao:vault mesh", "dao:vault:mesh"]  # fmt: skip
DIDS = ["did:vm:node:east1", "did:example:abc", "did:vm:node:east1/path", "did:vm:node:east1#f",
        "did:vm:node:east1?q", "did:vm:", "did:VM:x", "did:vm:%2Fx", "did:vm:%zz", "did:vm:x\n",
        "did:vm:" + "x" * (MAX_DID_CHARS - 7), "did:vm:" + "x" * (MAX_DID_CHARS - 6), "notadid"]  # fmt: skip


def _schema_patterns() -> dict[str, list[tuple[str, str]]]:
    """(schema file, property name) -> pattern, for every pattern in the bundled schemas."""
    out: dict[str, list[tuple[str, str]]] = {}

    def walk(node: Any, name: str, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                out.setdefault(node["pattern"], []).append((where, name))
            for key, value in node.items():
                walk(value, key if key not in ("properties", "items") else name, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, name, where)

    folder = resources.files("remembrancer.core").joinpath("schemas")
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            walk(json.loads(entry.read_text()), "", entry.name)
    return out


def test_the_schemas_state_the_identifier_and_target_grammars_of_core() -> None:
    patterns = _schema_patterns()
    # Every pattern that spells a label (the namespace and federation id grammar)
    # or a target is one of the homes' patterns, exactly.
    for pattern, where in patterns.items():
        if "{0,62}" in pattern and "[a-z0-9.-]" not in pattern:
            assert pattern in (NAMESPACE_PATTERN, FEDERATION_ID_PATTERN), where
        if "rfc3161|eip155|btc" in pattern:
            assert pattern == TARGET_PATTERN, where
    assert NAMESPACE_PATTERN in patterns and FEDERATION_ID_PATTERN in patterns
    assert TARGET_PATTERN in patterns


@pytest.mark.parametrize("value", NAMESPACES)
def test_one_namespace_grammar(value: str) -> None:
    by_pattern = re.fullmatch(NAMESPACE_PATTERN[1:-1], value) is not None
    by_regex = NAMESPACE_RE.match(value) is not None
    try:
        check_namespace(value, "ns")
        by_protocol = True
    except FormatError:
        by_protocol = False
    assert by_pattern == by_regex == by_protocol


def test_federation_ids_and_targets_end_at_the_end() -> None:
    # Python's ``$`` also matches before a final newline; the regexes use \Z.
    assert FEDERATION_ID_RE.match("vaultmesh") and not FEDERATION_ID_RE.match("vaultmesh\n")
    assert TARGET_RE.match("btc:mainnet") and not TARGET_RE.match("btc:mainnet\n")


@pytest.mark.parametrize("value", DIDS)
def test_one_did_grammar_for_the_registry_and_the_protocol(value: str) -> None:
    from remembrancer.federation.registry.model import Registry

    try:
        check_did(value, "sender")
        by_protocol = True
    except FormatError:
        by_protocol = False
    key = SigningKey(b"\x07" * 32)
    doc = {"federation_id": "f", "quorum": 1, "anchor_strategy": "independent",
           "peers": [{"did": value, "endpoint": "https://a.example", "pubkey": key.did}]}  # fmt: skip
    try:
        Registry.from_dict(doc)
        by_registry = True
    except Exception as e:
        assert getattr(e, "code", None) in ("peer_did_invalid", "peer_pubkey_mismatch"), e
        by_registry = False
    assert by_protocol == by_registry == is_did(value)


def test_one_entry_limit() -> None:
    """A record, a tile log and the sequencer's raw appends all stop at MAX_ENTRY_SIZE."""
    tree = TileTree()
    tree.append(b"x" * MAX_ENTRY_SIZE)
    with pytest.raises(FormatError) as e:
        tree.append(b"x" * (MAX_ENTRY_SIZE + 1))
    assert e.value.code == "entry_too_large"
    from remembrancer.demo.keys import demo_key
    from remembrancer.demo.records import make_record

    with pytest.raises(FormatError) as e:
        make_record("dao:x", "ledger.append@1.0.0", {"data": "y" * MAX_ENTRY_SIZE},
                    demo_key("did:vm:actor:demo"), [], timestamp=0)  # fmt: skip
    assert str(MAX_ENTRY_SIZE) in e.value.message and e.value.code == "record_too_large"


def test_one_base64_rule() -> None:
    for data in (b"", b"\x00", b"\xff" * 64, bytes(range(31))):
        assert decode_base64(encode_base64(data), what="x", code="c") == data
        assert b64url_decode(b64url_encode(data)) == data
    for bad in ("AA", "AB==", " AA==", "A-==", "AA==\n"):
        with pytest.raises(FormatError):
            decode_base64(bad, what="x", code="c")
    for bad in ("AA==", "AB", "A+", "A/", "A"):
        with pytest.raises(FormatError):
            b64url_decode(bad)
    sig = bytes(range(64))
    assert check_sig(b64url_encode(sig), "signature") == sig
    with pytest.raises(FormatError):
        check_sig(b64url_encode(sig)[:-1] + "B", "signature")  # non-zero padding bits


def test_one_cosigner_count_for_proofs_and_the_tiles_client() -> None:
    """verify_tlog_proof and the tiles client count witnesses by one rule: one
    per distinct key, never the log's own key."""
    log_key = SigningKey(b"\x11" * 32)
    origin = "example.org/dao:x"
    cp = Checkpoint(origin, 1, hash_leaf(b"entry"))
    witness = Cosigner("w.example", SigningKey(b"\x22" * 32), 5)
    alias = Cosigner("alias.example", witness.key, 5)
    self_witness = Cosigner("self.example", log_key, 5)
    note = Note.from_bytes(sign_checkpoint(cp, log_key)).with_signatures([
        cosign(cp.to_body(), witness.key, witness.name, 5),
        cosign(cp.to_body(), alias.key, alias.name, 5),
        cosign(cp.to_body(), log_key, self_witness.name, 5),
    ]).to_bytes()  # fmt: skip
    verifiers = [witness.verifier, alias.verifier, self_witness.verifier]
    log = Signer(origin, log_key).verifier
    proof = TlogProof(0, (), note)
    assert len(verify_tlog_proof(proof, b"entry", log, verifiers, 1).cosigners) == 1
    assert len(check_cosigners(open_checkpoint(note, log, verifiers), log, 1)) == 1
    errors = []
    for check in (lambda: verify_tlog_proof(proof, b"entry", log, verifiers, 2),
                  lambda: check_cosigners(open_checkpoint(note, log, verifiers), log, 2)):  # fmt: skip
        with pytest.raises(VerificationError) as e:
            check()
        errors.append((e.value.code, e.value.message, e.value.details))
    assert errors[0] == errors[1] and errors[0][0] == "cosigner_quorum_not_met"
