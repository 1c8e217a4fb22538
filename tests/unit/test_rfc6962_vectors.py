"""RFC 6962 proofs against transparency-dev/merkle's public test vectors.

The vectors are copied into the repository under ``tests/vectors/rfc6962`` (see
``tests/vectors/README.md`` for their origin and licence): 98 inclusion and 98 consistency cases, good and
bad.  Every one must give the expected verdict, and every bad one must fail
with a typed :class:`VerificationError`, never anything else.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from remembrancer.core.errors import InconsistencyError, VerificationError
from remembrancer.core.rfc6962 import (
    EMPTY_ROOT,
    CompactRange,
    hash_children,
    hash_leaf,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from remembrancer.core.tiles import TileTree
from remembrancer.testing.naive_merkle import NaiveTree

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RFC6962 = VECTORS / "rfc6962"

INCLUSION_CODES = {
    "index_out_of_range",
    "leaf_hash_invalid",
    "proof_wrong_length",
    "inclusion_proof_invalid",
    "inclusion_root_mismatch",
}
CONSISTENCY_CODES = {
    "consistency_sizes_reversed",
    "consistency_from_empty_tree",
    "proof_wrong_length",
    "consistency_proof_invalid",
    "consistency_root_mismatch",
    "consistency_root1_mismatch",
    "consistency_root2_mismatch",
}

# RFC 6962's classic 8-leaf tree (tests/vectors/README.md).
CLASSIC_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CLASSIC_ROOT = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    if not RFC6962.is_dir():  # fail, never skip: they are part of the repository
        raise FileNotFoundError(f"test vectors not found at {RFC6962}")
    out = []
    for path in sorted((RFC6962 / kind).rglob("*.json")):
        out.append((str(path.relative_to(RFC6962)), json.loads(path.read_text())))
    return out


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value, validate=True) if value else b""


def _proof(value: list[str] | None) -> list[bytes]:
    return [_b64(p) for p in value or []]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def test_vector_counts() -> None:
    assert len(INCLUSION) == 98
    assert len(CONSISTENCY) == 98
    assert len(INCLUSION) + len(CONSISTENCY) == 196


@pytest.mark.parametrize(("name", "case"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_vector(name: str, case: dict[str, Any]) -> None:
    args = (
        case["leafIdx"],
        case["treeSize"],
        _b64(case["leafHash"]),
        _proof(case["proof"]),
        _b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(VerificationError) as info:
            verify_inclusion(*args)
        assert info.value.code in INCLUSION_CODES, info.value.code
    else:
        verify_inclusion(*args)
        assert root_from_inclusion_proof(*args[:4]) == args[4]


@pytest.mark.parametrize(("name", "case"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_vector(name: str, case: dict[str, Any]) -> None:
    size1, size2 = case["size1"], case["size2"]
    root1, root2 = _b64(case["root1"]), _b64(case["root2"])
    proof = _proof(case["proof"])
    if case["wantErr"]:
        with pytest.raises(VerificationError) as info:
            verify_consistency(size1, size2, root1, root2, proof)
        assert info.value.code in CONSISTENCY_CODES, info.value.code
        if "modified proof" in case["desc"] or "wrong root" in case["desc"]:
            assert isinstance(info.value, InconsistencyError)
            assert info.value.details["size1"] == size1
    else:
        verify_consistency(size1, size2, root1, root2, proof)
        assert root_from_consistency_proof(size1, size2, root1, proof) == root2


def test_happy_vectors_match_our_proofs() -> None:
    # The 8-leaf happy paths are proofs of the classic tree: we generate them too.
    tree = TileTree()
    tree.append_many(CLASSIC_LEAVES)
    checked = 0
    for name, case in INCLUSION:
        if case["wantErr"] or case["treeSize"] != 8 or case["root"] != _enc(CLASSIC_ROOT):
            continue
        assert tree.inclusion_proof(case["leafIdx"], 8) == _proof(case["proof"]), name
        checked += 1
    for name, case in CONSISTENCY:
        if case["wantErr"] or case["size2"] > 8 or case["size1"] == case["size2"]:
            continue
        assert _b64(case["root2"]) == tree.root(case["size2"]), name
        got = tree.consistency_proof(case["size1"], case["size2"])
        assert got == _proof(case["proof"]), name
        checked += 1
    assert checked == 6


def _enc(value: bytes) -> str:
    return base64.b64encode(value).decode()


def test_classic_tree_root() -> None:
    tree = TileTree()
    tree.append_many(CLASSIC_LEAVES)
    assert tree.root() == CLASSIC_ROOT
    assert NaiveTree.from_entries(CLASSIC_LEAVES).root(8) == CLASSIC_ROOT
    compact = CompactRange()
    for leaf in CLASSIC_LEAVES:
        compact.append(hash_leaf(leaf))
    assert compact.root() == CLASSIC_ROOT


def test_empty_tree_and_hash_functions() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert TileTree().root() == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert hash_leaf(b"") == hashlib.sha256(b"\x00").digest()
    left, right = b"L" * 32, b"R" * 32
    assert hash_children(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
