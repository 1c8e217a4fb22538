"""The Bitcoin rail: ``btc:<mainnet|testnet|regtest>`` (DESIGN.md section 3.8).

Two modes commit a 32-byte digest (a checkpoint-body hash or an aggregation
root) to Bitcoin:

``ots`` (default): OpenTimestamps calendars.
    *What is timestamped.*  The proof is a ``DetachedTimestampFile`` whose
    file hash operation is SHA-256 and whose file digest **is the anchored
    32-byte digest itself**.  For one log the digest is SHA-256 of the
    checkpoint body, so the stock client checks it with
    ``ots verify -f <checkpoint body file> proof.ots``; for an aggregation
    root, ``ots verify -d <hex digest> proof.ots``.  As the ``ots`` client
    does, the digest is first blinded for privacy: append 16 random bytes,
    SHA-256; calendars only see that *commitment* (``tx_ref`` is
    ``ots:<commitment hex>``).  ``submit`` POSTs the commitment to every
    configured calendar (``<calendar>/digest``), merges the answers (each a
    Timestamp ending in a ``PendingAttestation``) and stores the ``.ots``
    bytes, base64, in ``evidence["ots"]``; the anchor is ``submitted``.
    ``verify`` parses the proof strictly (size cap, no trailing bytes),
    asks the calendars named by its pending attestations for an upgrade
    (``<calendar>/timestamp/<commitment hex>``; only calendars that are
    configured or on the whitelist, best effort: offline is fine), and for
    every ``BitcoinBlockHeaderAttestation`` compares the message the proof
    reaches with the Merkle root of the block header at that height (at
    most 16 attestations, lowest heights first).  One matching attestation
    suffices (the ``ots`` client's rule); the lowest matching height gives
    ``block_number`` and ``anchor_ts`` (header time).  A proof whose only
    attestations are pending calendar promises is ``pending``
    (``ots_pending_only``), never verified, whatever the anchor claims.
    With none matching, a mismatch fails the anchor unless another
    attestation names a height whose header this node does not have: then
    the verdict is ``unchecked`` (``btc_header_unavailable``).

``op_return``: a transaction with the output ``OP_RETURN <"RV" || digest>``
    (minimal push, 34 bytes), built, funded, signed and sent by Bitcoin
    Core's wallet (``createrawtransaction`` / ``fundrawtransaction`` /
    ``signrawtransactionwithwallet`` / ``sendrawtransaction``).  The signed
    transaction is decoded here and checked to carry that output before it
    is sent.  ``verify`` looks the transaction up (``getrawtransaction``
    verbose, with the block hash when known, falling back to the wallet's
    ``gettransaction``), fetches ``gettxoutproof`` (a BIP 37 merkle block),
    and checks: the txid is the hash of the stored transaction, its
    ``OP_RETURN`` payload, the partial Merkle tree (Bitcoin Core's rules,
    including the CVE-2012-2459 duplicate check) up to the header's Merkle
    root, the header's proof of work, that the header is the canonical one
    at its height, and the confirmations.  Once found, the transaction, the
    proof and the block height are kept in the evidence, so a later check
    runs offline given the headers (also when the node is down).  A
    verified anchor whose transaction left its block is ``reorged``.

``verify`` follows ``evidence["mode"]``, not the configured mode: a rail set
up for ``ots`` with a ``headers_file`` also re-checks complete
``op_return`` evidence.

Headers come from ``headers_file`` when it is configured (lines
``<height> <80-byte header hex>``; ``#`` comments allowed), which makes
verification fully offline, else from ``bitcoin_rpc`` (``getblockhash`` +
``getblockheader <hash> false``; the node's chain, from
``getblockchaininfo``, must match the target's network).  Every header used
is hashed here and must meet its own proof-of-work target, within the
network's limit.  Confirmations are ``tip - height + 1``: the RPC's
``getblockcount`` as tip, or, for a headers file, the end of the run of
consecutive headers that link (``hashPrevBlock``) upwards from the attested
one; headers after a gap do not count.  The verdict
(:class:`~remembrancer.anchoring.base.Verdict`) is ``verified`` only when
every check passed and the depth reaches ``max(confirmations,
ctx.required_depth)``: the rail's ``confirmations`` setting (default 1, the
least depth this node accepts for any anchor of the target) and the
cadence level's, both this node's own; less deep, it is ``pending``
(``anchor_depth_insufficient``).  Without the header an attestation or a
transaction needs, it is ``unchecked``, never ``verified``.  The anchor's
own ``status`` and ``finality`` are never read.

Failures: a proof that does not verify gives a ``failed`` verdict whose
code comes from the :class:`VerificationError` raised by the pure helpers
here (``ots_too_large``, ``ots_truncated``, ``ots_malformed``,
``ots_unsupported``, ``ots_digest_mismatch``, ``btc_merkle_root_mismatch``,
``btc_op_return_mismatch``, ``btc_merkle_path_invalid``,
``btc_tx_mismatch``, ...); a block that is no longer canonical marks the
verdict ``lost`` (an anchor this node had verified becomes ``reorged``).  A
rail that cannot be asked (calendars or the RPC unreachable or 5xx,
401/403, refusals and bad answers) gives an ``unchecked`` verdict with the
:class:`RailError`'s code; ``submit`` raises those errors.

Limitation: no Bitcoin Core binary can run where this was written, so
``op_return`` mode and the RPC header source were tested against a stub
JSON-RPC server replaying responses shaped like Bitcoin Core's (a regtest
chain built in the test), plus a real ``gettxoutproof`` output from Bitcoin
Core 0.11 for the Merkle-block parser.  ``ots`` verification was tested
offline with a real ``.ots`` proof and the real mainnet header it attests.

The ``bitcoin`` extra provides ``opentimestamps`` (>=0.4.5,<0.5) and
``python-bitcoinlib`` (>=0.12,<0.13); both are imported lazily.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import itertools
import json
import os
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    ErrorClass,
    RailError,
    Verdict,
    VerifyContext,
)
from remembrancer.anchoring.settings import DEFAULT_MAX_OTS_BYTES, BtcSettings, rail_settings
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, FormatError, VerificationError
from remembrancer.core.jcs import loads_strict

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
OP_RETURN_TAG = b"RV"
HEADER_SIZE = 80
MAX_TX_BYTES = 400_000  # a standard transaction is at most 400,000 weight units
MAX_TXOUTPROOF_BYTES = 64 * 1024
MAX_BLOCK_TRANSACTIONS = 4_000_000 // 240  # MAX_BLOCK_WEIGHT / MIN_TRANSACTION_WEIGHT
MAX_UPGRADE_REQUESTS = 8
MAX_BITCOIN_ATTESTATIONS = 16  # checked per proof, lowest heights first
OTS_ACCEPT = "application/vnd.opentimestamps.v1"
USER_AGENT = "remembrancer-btc-rail"

# Error codes after which an anchor that was verified counts as reorged.
_REORG_CODES = frozenset({"btc_merkle_root_mismatch", "btc_block_not_canonical"})


def _dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _fail(message: str, code: str, **details: Any) -> VerificationError:
    return VerificationError(message, code=code, details=details or None)


# --- block headers ---------------------------------------------------------------


def target_from_bits(bits: int) -> int:
    """The target a compact ``nBits`` encodes (Bitcoin Core's ``SetCompact``);
    raises VerificationError for a negative, zero or overflowing target."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000 and mantissa:
        raise _fail("nBits encodes a negative target", "btc_header_pow_invalid", bits=bits)
    target = mantissa >> (8 * (3 - exponent)) if exponent <= 3 else mantissa << (8 * (exponent - 3))
    if target == 0 or target >= 1 << 256:
        raise _fail("nBits encodes no valid target", "btc_header_pow_invalid", bits=bits)
    return target


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """An 80-byte Bitcoin block header.  Hashes are kept in internal byte
    order (as serialized); ``hash_hex`` is the usual reversed display form."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != HEADER_SIZE:
            raise _fail(
                f"a block header is {HEADER_SIZE} bytes, not {len(self.raw)}",
                "btc_header_malformed",
            )

    @classmethod
    def from_hex(cls, text: str) -> BlockHeader:
        try:
            return cls(bytes.fromhex(text))
        except ValueError as e:
            raise _fail(f"block header is not hex: {e}", "btc_header_malformed") from e

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
        return _dsha256(self.raw)

    @property
    def hash_hex(self) -> str:
        return self.hash[::-1].hex()

    def check_pow(self, network: str) -> None:
        """Raise VerificationError unless the header's hash meets its own
        target and that target is within the network's proof-of-work limit."""
        target = target_from_bits(self.bits)
        if target > target_from_bits(POW_LIMIT_BITS[network]):
            raise _fail(
                f"header {self.hash_hex} claims a target above the {network} limit",
                "btc_header_pow_invalid",
                block_hash=self.hash_hex,
            )
        if int.from_bytes(self.hash, "little") > target:
            raise _fail(
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
            raise _fail(
                f"line {number}: expected '<height> <160 hex digits>'",
                "btc_headers_file_invalid",
            )
        height = int(fields[0])
        if height in out:
            raise _fail(f"line {number}: height {height} repeated", "btc_headers_file_invalid")
        try:
            out[height] = BlockHeader.from_hex(fields[1])
        except VerificationError as e:
            raise _fail(f"line {number}: {e.message}", "btc_headers_file_invalid") from e
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


class RpcHeaders:
    """Headers from Bitcoin Core (``getblockhash``, ``getblockheader``,
    ``getblockcount``); the tip is read once per instance (one check)."""

    def __init__(self, rpc: BitcoinRpc, network: str) -> None:
        self.rpc = rpc
        self.network = network
        self._tip: int | None = None

    def tip(self) -> int:
        if self._tip is None:
            self._tip = _expect_int(self.rpc.call("getblockcount"), "getblockcount")
        return self._tip

    def header_at(self, height: int) -> BlockHeader | None:
        if height < 0 or height > self.tip():
            return None
        block_hash = _expect_hash(self.rpc.call("getblockhash", height), "getblockhash")
        text = _expect_str(self.rpc.call("getblockheader", block_hash, False), "getblockheader")
        try:
            header = BlockHeader.from_hex(text)
            header.check_pow(self.network)
        except VerificationError as e:
            raise RailError(
                f"bitcoin_rpc returned a bad header at height {height}: {e.message}",
                code=e.code,
                error_class="validation",
            ) from e
        if header.hash_hex != block_hash:
            raise RailError(
                f"bitcoin_rpc: header at height {height} hashes to {header.hash_hex}, "
                f"not {block_hash}",
                code="btc_rpc_header_mismatch",
                error_class="validation",
            )
        return header

    def confirmations(self, height: int, header: BlockHeader) -> int:
        return max(0, self.tip() - height + 1)

    def describe(self) -> str:
        return "bitcoin_rpc"


# --- HTTP and JSON-RPC -------------------------------------------------------------


def _read_capped(resp: Any, limit: int, what: str) -> bytes:
    body = resp.read(limit + 1)
    if not isinstance(body, bytes):
        raise RailError(f"{what}: unreadable response", code="btc_bad_response")
    if len(body) > limit:
        raise RailError(
            f"{what}: response over {limit} bytes",
            code="btc_response_too_large",
            error_class="validation",
        )
    return body


def _http(
    url: str,
    *,
    data: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
    limit: int,
    what: str,
    direct: bool,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for any HTTP answer and raises
    a transient RailError when there is none."""
    handlers: list[Any] = [urllib.request.ProxyHandler({})] if direct else []
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=data, headers=dict(headers))
    try:
        with opener.open(request, timeout=timeout) as resp:
            return int(resp.status), _read_capped(resp, limit, what)
    except urllib.error.HTTPError as e:
        try:
            body = _read_capped(e, limit, what)
        except (RailError, OSError, http.client.HTTPException):
            body = b""
        finally:
            e.close()
        return int(e.code), body
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise RailError(
            f"{what} unreachable: {reason}", code="btc_unreachable", error_class="transient"
        ) from e


def _class_for_status(status: int) -> ErrorClass:
    if status in (401, 403):
        return "auth"
    if status >= 500 or status in (408, 429):
        return "transient"
    return "validation"


class BitcoinRpcError(RailError):
    """Bitcoin Core answered with a JSON-RPC error; ``rpc_code`` is its code."""

    def __init__(self, message: str, *, rpc_code: int, error_class: ErrorClass) -> None:
        super().__init__(
            message, code="btc_rpc_error", error_class=error_class, details={"rpc_code": rpc_code}
        )
        self.rpc_code = rpc_code


# RPC_IN_WARMUP, RPC_CLIENT_NOT_CONNECTED, RPC_CLIENT_IN_INITIAL_DOWNLOAD
_TRANSIENT_RPC_CODES = frozenset({-28, -9, -10})
# RPC_WALLET_UNLOCK_NEEDED, RPC_WALLET_PASSPHRASE_INCORRECT
_AUTH_RPC_CODES = frozenset({-13, -14})
RPC_INVALID_ADDRESS_OR_KEY = -5  # "No such mempool or blockchain transaction"


class BitcoinRpc:
    """A minimal Bitcoin Core JSON-RPC client (credentials from the URL's
    user info, sent as HTTP Basic; never echoed in errors)."""

    def __init__(self, url: str, *, timeout: float, max_response: int) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("bitcoin_rpc must be an http(s) URL", code="btc_config_invalid")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        self.endpoint = urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path or "/", parts.query, "")
        )
        self._auth: str | None = None
        if parts.username is not None or parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._auth = f"Basic {token}"
        self.timeout = timeout
        self.max_response = max_response
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        request_id = next(self._ids)
        body = json.dumps(
            {"jsonrpc": "1.0", "id": request_id, "method": method, "params": list(params)}
        ).encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self._auth:
            headers["Authorization"] = self._auth
        what = f"bitcoin_rpc {self.endpoint} ({method})"
        status, raw = _http(
            self.endpoint,
            data=body,
            headers=headers,
            timeout=self.timeout,
            limit=self.max_response,
            what=what,
            direct=True,
        )
        if status in (401, 403):
            raise RailError(
                f"{what}: HTTP {status}, check the RPC credentials",
                code="btc_rpc_auth",
                error_class="auth",
            )
        try:
            doc = loads_strict(raw, max_bytes=len(raw) + 1)  # read with a bound above
        except FormatError:
            doc = None
        if not isinstance(doc, dict):
            raise RailError(
                f"{what}: HTTP {status}, not a JSON-RPC answer",
                code="btc_rpc_bad_response",
                error_class=_class_for_status(status),
            )
        error = doc.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(error)
            rpc_code = code if isinstance(code, int) else 0
            if rpc_code in _TRANSIENT_RPC_CODES:
                cls: ErrorClass = "transient"
            elif rpc_code in _AUTH_RPC_CODES:
                cls = "auth"
            else:
                cls = "validation"
            raise BitcoinRpcError(
                f"{what}: error {rpc_code}: {str(message)[:300]}",
                rpc_code=rpc_code,
                error_class=cls,
            )
        if status != 200:
            raise RailError(
                f"{what}: HTTP {status}",
                code="btc_rpc_bad_response",
                error_class=_class_for_status(status),
            )
        if doc.get("id") != request_id:
            raise RailError(
                f"{what}: answer to another request", code="btc_rpc_bad_response",
                error_class="validation",
            )  # fmt: skip
        return doc.get("result")


def _bad_rpc(method: str, what: str) -> RailError:
    return RailError(
        f"bitcoin_rpc {method}: {what}", code="btc_rpc_bad_response", error_class="validation"
    )


def _expect_int(value: Any, method: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_rpc(method, "expected an integer")
    return value


def _expect_str(value: Any, method: str) -> str:
    if not isinstance(value, str):
        raise _bad_rpc(method, "expected a string")
    return value


def _expect_dict(value: Any, method: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_rpc(method, "expected an object")
    return value


def _is_hash_hex(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return value == value.lower()


def _expect_hash(value: Any, method: str) -> str:
    if not _is_hash_hex(value):
        raise _bad_rpc(method, "expected a 64-hex-digit hash")
    return str(value)


# --- OpenTimestamps ------------------------------------------------------------------


def parse_ots(data: bytes, *, max_bytes: int = DEFAULT_MAX_OTS_BYTES) -> Any:
    """Parse a detached ``.ots`` proof strictly (no trailing bytes); raise
    VerificationError ``ots_too_large``, ``ots_truncated``, ``ots_unsupported``
    or ``ots_malformed``.  Returns an opentimestamps ``DetachedTimestampFile``."""
    if len(data) > max_bytes:
        raise _fail(
            f".ots proof is {len(data)} bytes, over the {max_bytes}-byte cap",
            "ots_too_large",
            size=len(data),
            limit=max_bytes,
        )
    from opentimestamps.core import serialize  # type: ignore[import-untyped]
    from opentimestamps.core.timestamp import DetachedTimestampFile  # type: ignore[import-untyped]

    magic: bytes = DetachedTimestampFile.HEADER_MAGIC
    try:
        return DetachedTimestampFile.deserialize(serialize.BytesDeserializationContext(data))
    except serialize.BadMagicError as e:
        if len(data) < len(magic) and magic.startswith(data):
            raise _fail(".ots proof is truncated", "ots_truncated") from e
        raise _fail("not an OpenTimestamps proof (bad magic)", "ots_malformed") from e
    except serialize.TruncationError as e:
        raise _fail(f".ots proof is truncated: {e}", "ots_truncated") from e
    except serialize.UnsupportedMajorVersion as e:
        raise _fail(f"unsupported .ots proof: {e}", "ots_unsupported") from e
    except RecursionError as e:
        raise _fail(".ots proof nests too deeply", "ots_malformed") from e
    except Exception as e:  # the library raises many types on garbage
        raise _fail(f"malformed .ots proof: {type(e).__name__}: {e}", "ots_malformed") from e


def serialize_ots(dtf: Any) -> bytes:
    from opentimestamps.core.serialize import BytesSerializationContext  # type: ignore[import-untyped]

    ctx = BytesSerializationContext()
    dtf.serialize(ctx)
    data: bytes = ctx.getbytes()
    return data


def _stamps(root: Any) -> Iterator[Any]:
    """Every Timestamp node below ``root`` (iterative: proofs may be deep)."""
    stack = [root]
    while stack:
        stamp = stack.pop()
        yield stamp
        stack.extend(stamp.ops.values())


def _has_bitcoin_below(stamp: Any) -> bool:
    from opentimestamps.core.notary import BitcoinBlockHeaderAttestation  # type: ignore[import-untyped]

    return any(
        isinstance(att, BitcoinBlockHeaderAttestation)
        for node in _stamps(stamp)
        for att in node.attestations
    )


@dataclass(frozen=True, slots=True)
class OtsAttestations:
    bitcoin: tuple[tuple[int, bytes], ...]  # (height, message: the expected Merkle root)
    pending: tuple[str, ...]  # calendar URIs


def ots_attestations(dtf: Any) -> OtsAttestations:
    from opentimestamps.core.notary import (
        BitcoinBlockHeaderAttestation,
        PendingAttestation,
    )

    bitcoin: set[tuple[int, bytes]] = set()
    pending: set[str] = set()
    for stamp in _stamps(dtf.timestamp):
        for att in stamp.attestations:
            if isinstance(att, BitcoinBlockHeaderAttestation):
                bitcoin.add((int(att.height), bytes(stamp.msg)))
            elif isinstance(att, PendingAttestation):
                pending.add(str(att.uri))
    return OtsAttestations(tuple(sorted(bitcoin)), tuple(sorted(pending)))


def _url_allowed(url: str, configured: Sequence[str], whitelist: Sequence[str]) -> bool:
    from fnmatch import fnmatch

    if url.rstrip("/") in {c.rstrip("/") for c in configured}:
        return True
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        return False
    for pattern in whitelist:
        allowed = urllib.parse.urlsplit(pattern)
        if (
            parts.scheme == allowed.scheme
            and parts.path.rstrip("/") == allowed.path.rstrip("/")
            and fnmatch(parts.netloc, allowed.netloc)
        ):
            return True
    return False


# --- transactions and Merkle blocks -------------------------------------------------


def op_return_script(digest: bytes) -> bytes:
    """``OP_RETURN <"RV" || digest>`` with the minimal 34-byte push."""
    payload = OP_RETURN_TAG + digest
    return bytes([0x6A, len(payload)]) + payload


def parse_tx(raw: bytes) -> Any:
    """A transaction (python-bitcoinlib ``CTransaction``), strictly parsed."""
    if len(raw) > MAX_TX_BYTES:
        raise _fail("transaction over the size cap", "btc_tx_malformed")
    from bitcoin.core import CTransaction  # type: ignore[import-untyped]

    try:
        return CTransaction.deserialize(raw)
    except Exception as e:
        raise _fail(f"malformed transaction: {e}", "btc_tx_malformed") from e


def txid_hex(tx: Any) -> str:
    txid: bytes = tx.GetTxid()
    return txid[::-1].hex()


def check_op_return(tx: Any, digest: bytes) -> None:
    """Raise unless ``tx`` has exactly one output ``OP_RETURN "RV"||digest`` (value 0)."""
    expected = op_return_script(digest)
    found = [out for out in tx.vout if bytes(out.scriptPubKey) == expected]
    if len(found) != 1 or found[0].nValue != 0:
        raise _fail(
            "the transaction has no OP_RETURN output carrying 'RV' || digest",
            "btc_op_return_mismatch",
            expected=expected.hex(),
        )
    if len(tx.serialize(params={"include_witness": False})) == 64:
        # a 64-byte transaction can pose as an inner Merkle node
        raise _fail("64-byte transactions are refused", "btc_tx_malformed")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _fail("txoutproof is truncated", "btc_txoutproof_malformed")
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
            raise _fail("non-canonical CompactSize", "btc_txoutproof_malformed")
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
        raise _fail("txoutproof over the size cap", "btc_txoutproof_malformed")
    r = _Reader(data)
    header = BlockHeader(r.take(HEADER_SIZE))
    total = r.u32()
    hashes = [r.take(32) for _ in range(_bounded(r.compact_size(), len(data) // 32))]
    flags = r.take(_bounded(r.compact_size(), len(data)))
    if r.pos != len(data):
        raise _fail("trailing bytes after the txoutproof", "btc_txoutproof_malformed")
    if total == 0 or total > MAX_BLOCK_TRANSACTIONS or len(hashes) > total:
        raise _fail("impossible transaction count", "btc_merkle_path_invalid")
    bits = [(flags[i // 8] >> (i % 8)) & 1 for i in range(len(flags) * 8)]
    if len(bits) < len(hashes):
        raise _fail("fewer flag bits than hashes", "btc_merkle_path_invalid")

    def width(height: int) -> int:
        return (total + (1 << height) - 1) >> height

    used_bits = used_hashes = 0
    matches: list[bytes] = []
    indexes: list[int] = []

    def walk(height: int, pos: int) -> bytes:
        nonlocal used_bits, used_hashes
        if used_bits >= len(bits):
            raise _fail("ran out of flag bits", "btc_merkle_path_invalid")
        parent_of_match = bits[used_bits]
        used_bits += 1
        if height == 0 or not parent_of_match:
            if used_hashes >= len(hashes):
                raise _fail("ran out of hashes", "btc_merkle_path_invalid")
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
                raise _fail("identical sibling hashes", "btc_merkle_path_invalid")
        else:
            right = left
        return _dsha256(left + right)

    tree_height = 0
    while width(tree_height) > 1:
        tree_height += 1
    root = walk(tree_height, 0)
    if (used_bits + 7) // 8 != len(flags) or used_hashes != len(hashes):
        raise _fail("unused hashes or flag bits", "btc_merkle_path_invalid")
    if root != header.merkle_root:
        raise _fail(
            "the Merkle path does not lead to the header's Merkle root",
            "btc_merkle_path_invalid",
            block_hash=header.hash_hex,
        )
    return MerkleBlockProof(header, total, tuple(matches), tuple(indexes))


def _bounded(n: int, limit: int) -> int:
    if n > limit:
        raise _fail("txoutproof count exceeds its data", "btc_txoutproof_malformed")
    return n


# --- the rail ------------------------------------------------------------------------


def _library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"opentimestamps {version('opentimestamps')}"
    except PackageNotFoundError:  # pragma: no cover - vendored installs
        return "opentimestamps"


class BitcoinRail:
    """The ``btc:<network>`` rail.  Thread-safe: it keeps no per-call state."""

    def __init__(self, target: str, settings: BtcSettings) -> None:
        scheme, _, network = target.partition(":")
        if scheme != "btc" or network not in NETWORK_CHAINS:
            raise ConfigError(
                f"{target!r} is not btc:<mainnet|testnet|regtest>", code="btc_config_invalid"
            )
        self.target = target
        self.network = network
        self.settings = settings
        self._rpc = (
            BitcoinRpc(
                settings.bitcoin_rpc,
                timeout=settings.timeout,
                max_response=settings.max_rpc_response,
            )
            if settings.bitcoin_rpc
            else None
        )
        self._headers_file = (
            HeadersFile(settings.headers_file, network) if settings.headers_file else None
        )
        self._chain_checked = False

    @classmethod
    def from_config(cls, target: str, settings: BtcSettings | Mapping[str, Any]) -> BitcoinRail:
        return cls(target, rail_settings(target, settings, BtcSettings))

    # -- shared helpers

    def _verifier(self, source: str) -> str:
        mode = self.settings.mode
        return f"remembrancer btc rail ({mode}, {_library_versions()}); headers: {source}"

    def _rpc_client(self) -> BitcoinRpc:
        if self._rpc is None:
            raise RailError(
                f"{self.target}: bitcoin_rpc is not configured",
                code="btc_rpc_not_configured",
                error_class="validation",
            )
        if not self._chain_checked:
            info = _expect_dict(self._rpc.call("getblockchaininfo"), "getblockchaininfo")
            chain = info.get("chain")
            if chain not in NETWORK_CHAINS[self.network]:
                raise RailError(
                    f"bitcoin_rpc is on chain {chain!r}, not {self.network}",
                    code="btc_rpc_wrong_chain",
                    error_class="validation",
                )
            self._chain_checked = True
        return self._rpc

    def _header_source(self) -> HeaderSource:
        if self._headers_file is not None:
            return self._headers_file
        return RpcHeaders(self._rpc_client(), self.network)

    def _required(self, ctx: VerifyContext) -> int:
        return max(self.settings.confirmations, ctx.required_depth)

    def _depth_verdict(self, depth: int, required: int, verifier: str, **facts: Any) -> Verdict:
        if depth >= required:
            return Verdict.ok(verifier, observed_depth=depth, required_depth=required, **facts)
        return Verdict.pending(
            DEPTH_INSUFFICIENT,
            f"{depth} confirmation(s), this node requires {required}",
            verifier,
            observed_depth=depth,
            required_depth=required,
            **facts,
        )

    # -- Rail protocol

    def submit(self, digest: bytes, *, now: int) -> Anchor:
        if len(digest) != 32:
            raise RailError(
                "a Bitcoin anchor commits a 32-byte digest",
                code="btc_digest_invalid",
                error_class="validation",
            )
        if self.settings.mode == "ots":
            return self._submit_ots(digest, now)
        return self._submit_op_return(digest, now)

    def verify(self, anchor: Anchor, ctx: VerifyContext) -> Verdict:
        """Judge the anchor's evidence (see the module docstring).  Never reads
        the anchor's status or finality: a proof with only pending
        attestations is ``pending``, whatever the anchor says."""
        required = self._required(ctx)
        if anchor.target != self.target:
            return Verdict.unchecked(
                "btc_target_mismatch",
                f"anchor for {anchor.target} given to the {self.target} rail",
                required_depth=required,
            )
        mode = anchor.evidence.get("mode")
        try:
            if mode == "ots":
                return self._verify_ots(anchor, required)
            if mode == "op_return":
                return self._verify_op_return(anchor, required)
            raise _fail(f"unknown evidence mode {mode!r}", "btc_evidence_malformed")
        except VerificationError as e:
            return Verdict.failed(e.code, e.message, self._verifier("n/a"),
                                  required_depth=required, lost=e.code in _REORG_CODES)  # fmt: skip
        except RailError as e:
            return Verdict.unchecked(e.code, e.message, required_depth=required)

    # -- OpenTimestamps

    def _calendar_post(self, calendar: str, commitment: bytes) -> Any:
        from opentimestamps.core.serialize import BytesDeserializationContext
        from opentimestamps.core.timestamp import Timestamp

        url = calendar.rstrip("/") + "/digest"
        status, body = _http(
            url,
            data=commitment,
            headers={
                "Accept": OTS_ACCEPT,
                "User-Agent": USER_AGENT,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            timeout=self.settings.timeout,
            limit=self.settings.max_calendar_response,
            what=f"calendar {calendar}",
            direct=False,
        )
        if status != 200:
            raise RailError(
                f"calendar {calendar}: HTTP {status}",
                code="ots_calendar_refused",
                error_class=_class_for_status(status),
            )
        try:
            ctx = BytesDeserializationContext(body)
            stamp = Timestamp.deserialize(ctx, commitment)
            ctx.assert_eof()
        except Exception as e:
            raise RailError(
                f"calendar {calendar}: not a timestamp for our commitment: {e}",
                code="ots_calendar_bad_response",
                error_class="validation",
            ) from e
        return stamp

    def _submit_ots(self, digest: bytes, now: int) -> Anchor:
        from opentimestamps.core.op import OpAppend, OpSHA256  # type: ignore[import-untyped]
        from opentimestamps.core.timestamp import DetachedTimestampFile, Timestamp

        calendars = self.settings.calendars
        if not calendars:
            raise RailError(
                f"{self.target}: no calendars configured",
                code="ots_no_calendars",
                error_class="validation",
            )
        needed = self.settings.min_calendars or min(2, len(calendars))
        timestamp = Timestamp(digest)
        blinded = timestamp.ops.add(OpAppend(os.urandom(16))).ops.add(OpSHA256())
        commitment: bytes = blinded.msg

        def ask(calendar: str) -> Any:
            try:
                return self._calendar_post(calendar, commitment)
            except RailError as e:
                return e

        with ThreadPoolExecutor(max_workers=len(calendars)) as pool:
            answers = list(pool.map(ask, calendars))
        accepted = [
            c for c, a in zip(calendars, answers, strict=True) if not isinstance(a, RailError)
        ]
        errors = [a for a in answers if isinstance(a, RailError)]
        if len(accepted) < needed:
            classes = {e.error_class for e in errors}
            cls: ErrorClass = (
                "transient"
                if "transient" in classes
                else "auth"
                if "auth" in classes
                else "validation"
            )
            raise RailError(
                f"{len(accepted)} of {len(calendars)} calendars accepted the digest, "
                f"{needed} needed: " + "; ".join(e.message for e in errors),
                code="ots_calendars_failed",
                error_class=cls,
                details={"accepted": accepted},
            )
        for answer in answers:
            if not isinstance(answer, RailError):
                blinded.merge(answer)
        proof = serialize_ots(DetachedTimestampFile(OpSHA256(), timestamp))
        if len(proof) > self.settings.max_ots_bytes:
            raise RailError(
                "calendar answers make the proof exceed max_ots_bytes",
                code="ots_too_large",
                error_class="validation",
            )
        return Anchor(
            target=self.target,
            root=digest,
            status="submitted",
            tx_ref=f"ots:{commitment.hex()}",
            observed_at=now,
            verifier=self._verifier("not checked yet"),
            finality=Finality(0, 0, "pending"),
            evidence={
                "mode": "ots",
                "ots": base64.b64encode(proof).decode("ascii"),
                "commitment": commitment.hex(),
                "calendars": accepted,
            },
        )

    def _decode_proof(self, anchor: Anchor) -> bytes:
        text = anchor.evidence.get("ots")
        if not isinstance(text, str):
            raise _fail("evidence has no .ots proof", "ots_malformed")
        cap = self.settings.max_ots_bytes
        if len(text) > 4 * ((cap + 2) // 3):
            raise _fail(f".ots proof is over the {cap}-byte cap", "ots_too_large", limit=cap)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise _fail(f".ots proof is not base64: {e}", "ots_malformed") from e

    def _upgrade(self, dtf: Any) -> bool:
        """Merge calendar upgrades into ``dtf``; best effort, never raises."""
        from opentimestamps.core.notary import PendingAttestation
        from opentimestamps.core.serialize import BytesDeserializationContext
        from opentimestamps.core.timestamp import Timestamp

        changed = False
        asked: set[tuple[bytes, str]] = set()
        for stamp in list(_stamps(dtf.timestamp)):
            for att in list(stamp.attestations):
                if not isinstance(att, PendingAttestation):
                    continue
                key = (bytes(stamp.msg), str(att.uri))
                if key in asked or len(asked) >= MAX_UPGRADE_REQUESTS:
                    continue
                if not _url_allowed(
                    att.uri, self.settings.calendars, self.settings.calendar_whitelist
                ):
                    continue
                if _has_bitcoin_below(stamp):
                    continue
                asked.add(key)
                url = f"{att.uri.rstrip('/')}/timestamp/{stamp.msg.hex()}"
                try:
                    status, body = _http(
                        url,
                        data=None,
                        headers={"Accept": OTS_ACCEPT, "User-Agent": USER_AGENT},
                        timeout=self.settings.timeout,
                        limit=self.settings.max_calendar_response,
                        what=f"calendar {att.uri}",
                        direct=False,
                    )
                except RailError:
                    continue  # offline: verify with what we have
                if status != 200:
                    continue  # 404: still pending
                try:
                    ctx = BytesDeserializationContext(body)
                    upgraded = Timestamp.deserialize(ctx, stamp.msg)
                    ctx.assert_eof()
                    stamp.merge(upgraded)
                except Exception:
                    continue
                changed = True
        return changed

    def _verify_ots(self, anchor: Anchor, required: int) -> Verdict:
        from opentimestamps.core.op import OpSHA256

        raw = self._decode_proof(anchor)
        dtf = parse_ots(raw, max_bytes=self.settings.max_ots_bytes)
        if not isinstance(dtf.file_hash_op, OpSHA256):
            raise _fail(
                f"the proof's file hash is {dtf.file_hash_op}, not sha256", "ots_unsupported"
            )
        if bytes(dtf.file_digest) != anchor.root:
            raise _fail(
                "the proof timestamps another digest",
                "ots_digest_mismatch",
                proof_digest=bytes(dtf.file_digest).hex(),
            )
        evidence = dict(anchor.evidence)
        evidence.pop("bitcoin", None)  # what this node finds, never what the evidence says
        attestations = ots_attestations(dtf)
        if self.settings.upgrade and attestations.pending and self._upgrade(dtf):
            upgraded = serialize_ots(dtf)
            if len(upgraded) <= self.settings.max_ots_bytes:
                evidence["ots"] = base64.b64encode(upgraded).decode("ascii")
                attestations = ots_attestations(dtf)
            else:  # keep the proof we had
                attestations = ots_attestations(parse_ots(raw))
        evidence["pending_calendars"] = list(attestations.pending)
        if not attestations.bitcoin:
            return Verdict.pending(
                "ots_pending_only",
                "the proof holds no Bitcoin attestation, only calendar promises "
                f"({len(attestations.pending)})",
                self._verifier("not needed"),
                required_depth=required,
                evidence=evidence,
            )

        source = self._header_source()
        matched: list[tuple[int, BlockHeader]] = []
        mismatched: list[dict[str, Any]] = []
        unavailable: list[int] = []
        for height, msg in attestations.bitcoin[:MAX_BITCOIN_ATTESTATIONS]:
            header = source.header_at(height)
            if header is None:
                unavailable.append(height)
            elif len(msg) == 32 and header.merkle_root == msg:
                matched.append((height, header))
            else:
                mismatched.append(
                    {
                        "height": height,
                        "block_hash": header.hash_hex,
                        "header_merkle_root": header.merkle_root[::-1].hex(),
                        "proof_merkle_root": msg[::-1].hex(),
                    }
                )
        verifier = self._verifier(source.describe())
        if not matched:
            if not unavailable:
                raise _fail(
                    f"the Merkle root of block {mismatched[0]['height']} is not the one the "
                    "proof commits to",
                    "btc_merkle_root_mismatch",
                    mismatches=mismatched,
                )
            # Without the headers it names, this node cannot tell.
            message = f"no header at height(s) {unavailable}"
            if mismatched:
                message += (
                    f"; the Merkle root differs at height(s) {[m['height'] for m in mismatched]}"
                )
            return Verdict.unchecked("btc_header_unavailable", message, verifier,
                                     required_depth=required, evidence=evidence,
                                     lost=bool(mismatched))  # fmt: skip
        height, header = matched[0]
        depth = source.confirmations(height, header)
        evidence["bitcoin"] = {"height": height, "block_hash": header.hash_hex}
        return self._depth_verdict(depth, required, verifier, evidence=evidence,
                                   block_number=height, anchor_ts=header.time)  # fmt: skip

    # -- OP_RETURN

    def _submit_op_return(self, digest: bytes, now: int) -> Anchor:
        rpc = self._rpc_client()
        payload = OP_RETURN_TAG + digest
        unsigned = _expect_str(
            rpc.call("createrawtransaction", [], [{"data": payload.hex()}]),
            "createrawtransaction",
        )
        options: dict[str, Any] = {}
        if self.settings.fee_rate is not None:
            options["fee_rate"] = self.settings.fee_rate
        funded = _expect_dict(
            rpc.call("fundrawtransaction", unsigned, options), "fundrawtransaction"
        )
        signed = _expect_dict(
            rpc.call("signrawtransactionwithwallet", _expect_str(funded.get("hex"), "fund")),
            "signrawtransactionwithwallet",
        )
        signed_hex = _expect_str(signed.get("hex"), "signrawtransactionwithwallet")
        if signed.get("complete") is not True:
            raise RailError(
                "the wallet could not sign every input",
                code="btc_sign_incomplete",
                error_class="validation",
                details={"errors": signed.get("errors")},
            )
        try:
            tx = parse_tx(bytes.fromhex(signed_hex))
            check_op_return(tx, digest)
        except (ValueError, VerificationError) as e:
            raise RailError(
                f"the wallet's transaction does not carry our OP_RETURN: {e}",
                code="btc_op_return_mismatch",
                error_class="validation",
            ) from e
        expected_txid = txid_hex(tx)
        txid = _expect_hash(rpc.call("sendrawtransaction", signed_hex), "sendrawtransaction")
        if txid != expected_txid:
            raise RailError(
                f"sendrawtransaction returned {txid}, expected {expected_txid}",
                code="btc_txid_mismatch",
                error_class="validation",
            )
        return Anchor(
            target=self.target,
            root=digest,
            status="submitted",
            tx_ref=txid,
            observed_at=now,
            verifier=self._verifier("not checked yet"),
            finality=Finality(0, 0, "pending"),
            evidence={"mode": "op_return", "txid": txid, "tx": signed_hex},
        )

    def _locate(self, rpc: BitcoinRpc, txid: str, known_block: str | None) -> dict[str, Any] | None:
        """``getrawtransaction`` verbose for ``txid``, or None when the node
        does not know it.  Without -txindex a confirmed transaction is found
        through its block hash: the one we knew, else the wallet's."""

        def raw_tx(*params: Any) -> dict[str, Any] | None:
            try:
                result = rpc.call("getrawtransaction", txid, True, *params)
            except BitcoinRpcError as e:
                if e.rpc_code == RPC_INVALID_ADDRESS_OR_KEY:
                    return None
                raise
            return _expect_dict(result, "getrawtransaction")

        if known_block is not None:
            found = raw_tx(known_block)
            if found is not None and found.get("in_active_chain", True):
                return found
        found = raw_tx()
        if found is not None:
            return found
        try:
            wallet_tx = _expect_dict(rpc.call("gettransaction", txid), "gettransaction")
        except BitcoinRpcError:
            return None  # no wallet, or not a wallet transaction
        block = wallet_tx.get("blockhash")
        if _is_hash_hex(block) and block != known_block:
            return raw_tx(block)
        return None

    def _refresh_op_return(
        self, evidence: dict[str, Any], txid: str, block_hash: str | None
    ) -> dict[str, Any]:
        """The evidence with the node's current view of the transaction: its
        raw bytes and, once mined, its block, height and txoutproof."""
        rpc = self._rpc_client()
        found = self._locate(rpc, txid, block_hash)
        if found is None:
            return evidence
        out = dict(evidence)
        out["tx"] = _expect_str(found.get("hex"), "getrawtransaction")
        located = found.get("blockhash")
        if not _is_hash_hex(located):  # in the mempool (again)
            for key in ("block_hash", "block_height", "txoutproof"):
                out.pop(key, None)
            return out
        if located != block_hash or "txoutproof" not in out or "block_height" not in out:
            out["txoutproof"] = _expect_str(
                rpc.call("gettxoutproof", [txid], located), "gettxoutproof"
            )
            info = _expect_dict(rpc.call("getblockheader", located, True), "getblockheader")
            out["block_height"] = _expect_int(info.get("height"), "getblockheader")
            out["block_hash"] = located
        return out

    def _verify_op_return(self, anchor: Anchor, required: int) -> Verdict:
        ev = anchor.evidence
        txid = ev.get("txid")
        if not _is_hash_hex(txid) or txid != anchor.tx_ref:
            raise _fail("evidence has no valid txid", "btc_evidence_malformed")
        evidence = dict(ev)
        block_hash = ev.get("block_hash") if _is_hash_hex(ev.get("block_hash")) else None
        if self._rpc is not None:
            try:
                evidence = self._refresh_op_return(evidence, str(txid), block_hash)
            except RailError as e:
                complete = all(k in evidence for k in ("tx", "txoutproof", "block_height"))
                if e.error_class != "transient" or self._headers_file is None or not complete:
                    raise
                # the node is down, but the stored evidence and the headers suffice

        # The transaction left the block the evidence names: an anchor verified
        # there is lost (reorged), whatever follows.
        lost = block_hash is not None and evidence.get("block_hash") != block_hash
        moved = (
            f"the transaction left block {block_hash} "
            f"(now in {evidence.get('block_hash') or 'no block'}); "
            if lost
            else ""
        )

        def waiting(code: str, message: str, verifier: str = "", **facts: Any) -> Verdict:
            return Verdict.pending("btc_block_not_canonical" if lost else code, moved + message,
                                   verifier, required_depth=required, evidence=evidence,
                                   lost=lost, **facts)  # fmt: skip

        tx_hex = evidence.get("tx")
        if not isinstance(tx_hex, str):
            return waiting("btc_tx_not_found", "the transaction is not known (yet)")
        try:
            tx = parse_tx(bytes.fromhex(tx_hex))
        except ValueError as e:
            raise _fail("evidence transaction is not hex", "btc_tx_malformed") from e
        if txid_hex(tx) != txid:
            raise _fail("the stored transaction does not hash to the txid", "btc_tx_mismatch")
        check_op_return(tx, anchor.root)

        proof_hex = evidence.get("txoutproof")
        if proof_hex is None:
            return waiting("btc_tx_not_mined", "the transaction is not in a block (yet)")
        try:
            proof = parse_merkle_block(bytes.fromhex(str(proof_hex)))
        except ValueError as e:
            raise _fail("txoutproof is not hex", "btc_txoutproof_malformed") from e
        if bytes.fromhex(str(txid))[::-1] not in proof.matches:
            raise _fail("the txoutproof does not prove this txid", "btc_merkle_path_invalid")
        proof.header.check_pow(self.network)
        if "block_hash" in evidence and proof.header.hash_hex != evidence["block_hash"]:
            raise _fail("the txoutproof is for another block", "btc_merkle_path_invalid")
        height = evidence.get("block_height")
        if isinstance(height, bool) or not isinstance(height, int) or height < 0:
            raise _fail("evidence has no block height", "btc_evidence_malformed")

        source = self._header_source()
        verifier = self._verifier(source.describe())
        canonical = source.header_at(height)
        if canonical is None:
            return Verdict.unchecked("btc_header_unavailable", moved + f"no header at height {height}",
                                     verifier, required_depth=required, evidence=evidence,
                                     lost=lost)  # fmt: skip
        if canonical.raw != proof.header.raw:
            return Verdict.pending(
                "btc_block_not_canonical",
                f"block {proof.header.hash_hex} is not the canonical block at height {height} "
                f"({canonical.hash_hex} is)",
                verifier,
                required_depth=required,
                evidence=evidence,
                lost=True,
            )
        depth = source.confirmations(height, canonical)
        verdict = self._depth_verdict(depth, required, verifier, evidence=evidence,
                                      block_number=height, anchor_ts=canonical.time, lost=lost)  # fmt: skip
        return replace(verdict, message=moved + verdict.message) if lost else verdict
