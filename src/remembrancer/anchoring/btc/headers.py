"""Bitcoin block headers: parsing, proof of work, and where headers come from.

A :class:`BlockHeader` is exactly 80 bytes, hashed here (double SHA-256),
and must meet its own proof-of-work target within the network's limit
(:data:`POW_LIMIT_BITS`).  :class:`HeadersFile` reads ``<height> <header
hex>`` lines (offline verification); confirmations from a file count only
the run of consecutive headers that link upwards from the attested one.
Pure except :class:`HeadersFile`, which reads one bounded file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from remembrancer.anchoring.base import RailError
from remembrancer.core.errors import VerificationError

# Bitcoin Core's ``chain`` names (getblockchaininfo) for each target network.
NETWORK_CHAINS: dict[str, frozenset[str]] = {
    "mainnet": frozenset({"main"}),
    "testnet": frozenset({"test", "testnet4"}),
    "regtest": frozenset({"regtest"}),
}
# consensus.powLimit, in compact form.
POW_LIMIT_BITS: dict[str, int] = {
    "mainnet": 0x1D00FFFF,
    "testnet": 0x1D00FFFF,
    "regtest": 0x207FFFFF,
}


HEADER_SIZE = 80


def dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def proof_error(message: str, code: str, **details: Any) -> VerificationError:
    return VerificationError(message, code=code, details=details or None)


def target_from_bits(bits: int) -> int:
    """The target a compact ``nBits`` encodes (Bitcoin Core's ``SetCompact``);
    raises VerificationError for a negative, zero or overflowing target."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000 and mantissa:
        raise proof_error("nBits encodes a negative target", "btc_header_pow_invalid", bits=bits)
    target = mantissa >> (8 * (3 - exponent)) if exponent <= 3 else mantissa << (8 * (exponent - 3))
    if target == 0 or target >= 1 << 256:
        raise proof_error("nBits encodes no valid target", "btc_header_pow_invalid", bits=bits)
    return target


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """An 80-byte Bitcoin block header.  Hashes are kept in internal byte
    order (as serialized); ``hash_hex`` is the usual reversed display form."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != HEADER_SIZE:
            raise proof_error(
                f"a block header is {HEADER_SIZE} bytes, not {len(self.raw)}",
                "btc_header_malformed",
            )

    @classmethod
    def from_hex(cls, text: str) -> BlockHeader:
        try:
            return cls(bytes.fromhex(text))
        except ValueError as e:
            raise proof_error(f"block header is not hex: {e}", "btc_header_malformed") from e

    @property
    def version(self) -> int:
        return int(struct.unpack_from("<i", self.raw, 0)[0])

    @property
    def prev_hash(self) -> bytes:
        return self.raw[4:36]

    @property
    def merkle_root(self) -> bytes:
        return self.raw[36:68]

    @property
    def time(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 68)[0])

    @property
    def bits(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 72)[0])

    @property
    def nonce(self) -> int:
        return int(struct.unpack_from("<I", self.raw, 76)[0])

    @property
    def hash(self) -> bytes:
        return dsha256(self.raw)

    @property
    def hash_hex(self) -> str:
        return self.hash[::-1].hex()

    def check_pow(self, network: str) -> None:
        """Raise VerificationError unless the header's hash meets its own
        target and that target is within the network's proof-of-work limit."""
        target = target_from_bits(self.bits)
        if target > target_from_bits(POW_LIMIT_BITS[network]):
            raise proof_error(
                f"header {self.hash_hex} claims a target above the {network} limit",
                "btc_header_pow_invalid",
                block_hash=self.hash_hex,
            )
        if int.from_bytes(self.hash, "little") > target:
            raise proof_error(
                f"header {self.hash_hex} does not meet its proof-of-work target",
                "btc_header_pow_invalid",
                block_hash=self.hash_hex,
            )


class HeaderSource(Protocol):
    """Where canonical headers come from.  Problems with the source itself
    (unreachable, lying, malformed file) raise RailError; ``None`` means the
    height is not (yet) known."""

    def header_at(self, height: int) -> BlockHeader | None: ...

    def confirmations(self, height: int, header: BlockHeader) -> int: ...

    def describe(self) -> str: ...


def parse_headers_text(text: str) -> dict[int, BlockHeader]:
    """Parse ``<height> <header hex>`` lines (blank lines and ``#`` comments
    allowed); raises VerificationError on anything else or a repeated height."""
    out: dict[int, BlockHeader] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if (
            len(fields) != 2
            or not fields[0].isdigit()
            or len(fields[0]) > 10
            or len(fields[1]) != 2 * HEADER_SIZE
        ):
            raise proof_error(
                f"line {number}: expected '<height> <160 hex digits>'",
                "btc_headers_file_invalid",
            )
        height = int(fields[0])
        if height in out:
            raise proof_error(
                f"line {number}: height {height} repeated", "btc_headers_file_invalid"
            )
        try:
            out[height] = BlockHeader.from_hex(fields[1])
        except VerificationError as e:
            raise proof_error(f"line {number}: {e.message}", "btc_headers_file_invalid") from e
    return out


class HeadersFile:
    """Headers from a local file: verification needs no network at all.

    The file is re-read when its size or mtime changes."""

    def __init__(self, path: str | os.PathLike[str], network: str) -> None:
        self.path = Path(path)
        self.network = network
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._headers: dict[int, BlockHeader] = {}

    def _load(self) -> dict[int, BlockHeader]:
        try:
            st = self.path.stat()
            with self._lock:
                if self._stamp != (st.st_mtime_ns, st.st_size):
                    text = self.path.read_text(encoding="ascii")
                    self._headers = parse_headers_text(text)
                    self._stamp = (st.st_mtime_ns, st.st_size)
                return self._headers
        except (OSError, UnicodeDecodeError) as e:
            raise RailError(
                f"cannot read headers_file {self.path}: {e}",
                code="btc_headers_file_unreadable",
                error_class="transient",
            ) from e
        except VerificationError as e:
            raise RailError(
                f"headers_file {self.path}: {e.message}", code=e.code, error_class="validation"
            ) from e

    def _checked(self, header: BlockHeader) -> BlockHeader:
        try:
            header.check_pow(self.network)
        except VerificationError as e:
            raise RailError(
                f"headers_file {self.path}: {e.message}", code=e.code, error_class="validation"
            ) from e
        return header

    def header_at(self, height: int) -> BlockHeader | None:
        header = self._load().get(height)
        return None if header is None else self._checked(header)

    def confirmations(self, height: int, header: BlockHeader) -> int:
        headers = self._load()
        depth, current = 1, header
        while (following := headers.get(height + depth)) is not None:
            if following.prev_hash != current.hash:
                raise RailError(
                    f"headers_file {self.path}: the header at height {height + depth} does not "
                    f"follow {current.hash_hex}",
                    code="btc_header_chain_broken",
                    error_class="validation",
                )
            current = self._checked(following)
            depth += 1
        return depth

    def describe(self) -> str:
        return f"headers_file {self.path.name}"
