"""Bitcoin transactions and BIP 37 Merkle blocks (``gettxoutproof``), strictly parsed.

:func:`check_op_return` requires exactly one zero-value output
``OP_RETURN <"RV" || digest>`` and refuses 64-byte transactions (they can
pose as inner Merkle nodes).  :func:`parse_merkle_block` follows Bitcoin
Core's partial Merkle tree rules, including the CVE-2012-2459 duplicate
check, up to the header's Merkle root; every count is bounded by the data
that carries it.  Pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from remembrancer.anchoring.btc.headers import HEADER_SIZE, BlockHeader, dsha256, proof_error

OP_RETURN_TAG = b"RV"


MAX_TX_BYTES = 400_000  # a standard transaction is at most 400,000 weight units
MAX_TXOUTPROOF_BYTES = 64 * 1024
MAX_BLOCK_TRANSACTIONS = 4_000_000 // 240  # MAX_BLOCK_WEIGHT / MIN_TRANSACTION_WEIGHT


def op_return_script(digest: bytes) -> bytes:
    """``OP_RETURN <"RV" || digest>`` with the minimal 34-byte push."""
    payload = OP_RETURN_TAG + digest
    return bytes([0x6A, len(payload)]) + payload


def parse_tx(raw: bytes) -> Any:
    """A transaction (python-bitcoinlib ``CTransaction``), strictly parsed."""
    if len(raw) > MAX_TX_BYTES:
        raise proof_error("transaction over the size cap", "btc_tx_malformed")
    from bitcoin.core import CTransaction  # type: ignore[import-untyped]

    try:
        return CTransaction.deserialize(raw)
    except Exception as e:
        raise proof_error(f"malformed transaction: {e}", "btc_tx_malformed") from e


def txid_hex(tx: Any) -> str:
    txid: bytes = tx.GetTxid()
    return txid[::-1].hex()


def check_op_return(tx: Any, digest: bytes) -> None:
    """Raise unless ``tx`` has exactly one output ``OP_RETURN "RV"||digest`` (value 0)."""
    expected = op_return_script(digest)
    found = [out for out in tx.vout if bytes(out.scriptPubKey) == expected]
    if len(found) != 1 or found[0].nValue != 0:
        raise proof_error(
            "the transaction has no OP_RETURN output carrying 'RV' || digest",
            "btc_op_return_mismatch",
            expected=expected.hex(),
        )
    if len(tx.serialize(params={"include_witness": False})) == 64:
        # a 64-byte transaction can pose as an inner Merkle node
        raise proof_error("64-byte transactions are refused", "btc_tx_malformed")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise proof_error("txoutproof is truncated", "btc_txoutproof_malformed")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def compact_size(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        value = int.from_bytes(self.take(size), "little")
        if value < {2: 0xFD, 4: 0x10000, 8: 0x100000000}[size]:
            raise proof_error("non-canonical CompactSize", "btc_txoutproof_malformed")
        return value


@dataclass(frozen=True, slots=True)
class MerkleBlockProof:
    """A BIP 37 merkle block (what ``gettxoutproof`` returns), checked."""

    header: BlockHeader
    total_transactions: int
    matches: tuple[bytes, ...]  # matched txids, internal byte order
    indexes: tuple[int, ...]

    def matched_txids(self) -> tuple[str, ...]:
        return tuple(t[::-1].hex() for t in self.matches)


def parse_merkle_block(data: bytes) -> MerkleBlockProof:
    """Parse and check a merkle block as Bitcoin Core's
    ``CPartialMerkleTree::ExtractMatches`` does: the partial tree must use
    every hash and flag bit, have no identical sibling pair, and hash to
    the header's Merkle root.  Raises VerificationError
    ``btc_txoutproof_malformed`` or ``btc_merkle_path_invalid``."""
    if len(data) > MAX_TXOUTPROOF_BYTES:
        raise proof_error("txoutproof over the size cap", "btc_txoutproof_malformed")
    r = _Reader(data)
    header = BlockHeader(r.take(HEADER_SIZE))
    total = r.u32()
    hashes = [r.take(32) for _ in range(_bounded(r.compact_size(), len(data) // 32))]
    flags = r.take(_bounded(r.compact_size(), len(data)))
    if r.pos != len(data):
        raise proof_error("trailing bytes after the txoutproof", "btc_txoutproof_malformed")
    if total == 0 or total > MAX_BLOCK_TRANSACTIONS or len(hashes) > total:
        raise proof_error("impossible transaction count", "btc_merkle_path_invalid")
    bits = [(flags[i // 8] >> (i % 8)) & 1 for i in range(len(flags) * 8)]
    if len(bits) < len(hashes):
        raise proof_error("fewer flag bits than hashes", "btc_merkle_path_invalid")

    def width(height: int) -> int:
        return (total + (1 << height) - 1) >> height

    used_bits = used_hashes = 0
    matches: list[bytes] = []
    indexes: list[int] = []

    def walk(height: int, pos: int) -> bytes:
        nonlocal used_bits, used_hashes
        if used_bits >= len(bits):
            raise proof_error("ran out of flag bits", "btc_merkle_path_invalid")
        parent_of_match = bits[used_bits]
        used_bits += 1
        if height == 0 or not parent_of_match:
            if used_hashes >= len(hashes):
                raise proof_error("ran out of hashes", "btc_merkle_path_invalid")
            node = hashes[used_hashes]
            used_hashes += 1
            if height == 0 and parent_of_match:
                matches.append(node)
                indexes.append(pos)
            return node
        left = walk(height - 1, pos * 2)
        if pos * 2 + 1 < width(height - 1):
            right = walk(height - 1, pos * 2 + 1)
            if right == left:  # CVE-2012-2459
                raise proof_error("identical sibling hashes", "btc_merkle_path_invalid")
        else:
            right = left
        return dsha256(left + right)

    tree_height = 0
    while width(tree_height) > 1:
        tree_height += 1
    root = walk(tree_height, 0)
    if (used_bits + 7) // 8 != len(flags) or used_hashes != len(hashes):
        raise proof_error("unused hashes or flag bits", "btc_merkle_path_invalid")
    if root != header.merkle_root:
        raise proof_error(
            "the Merkle path does not lead to the header's Merkle root",
            "btc_merkle_path_invalid",
            block_hash=header.hash_hex,
        )
    return MerkleBlockProof(header, total, tuple(matches), tuple(indexes))


def _bounded(n: int, limit: int) -> int:
    if n > limit:
        raise proof_error("txoutproof count exceeds its data", "btc_txoutproof_malformed")
    return n
