"""The Bitcoin rail (``btc:<network>``, the package src/remembrancer/anchoring/btc/).

Real data first: the OpenTimestamps ``hello-world.txt.ots`` proof checked
offline against the real header of mainnet block 358391, the pending-only
``incomplete.txt.ots``, and a ``gettxoutproof`` answer of Bitcoin Core 0.11
(provenance: tests/fixtures/btc/README.md).  Calendars and Bitcoin Core are
replaced by local HTTP stubs: the calendar stub answers with timestamps built
by the opentimestamps library itself, the JSON-RPC stub replays answers
shaped like Bitcoin Core's over a regtest chain built (and mined) here.  No
test touches the network: ``offline`` makes any connection attempt fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("opentimestamps", reason="the 'bitcoin' extra is not installed")
pytest.importorskip("bitcoin", reason="the 'bitcoin' extra is not installed")

from bitcoin.core import (
    COIN,
    CBlock,
    CMutableTxIn,
    CMutableTxOut,
    COutPoint,
    CTransaction,
    CTxInWitness,
    CTxWitness,
    b2lx,
    lx,
)
from bitcoin.core.script import OP_RETURN, OP_TRUE, CScript, CScriptWitness
from opentimestamps.bitcoin import make_timestamp_from_block
from opentimestamps.core.notary import (
    BitcoinBlockHeaderAttestation,
    PendingAttestation,
)
from opentimestamps.core.op import OpAppend, OpPrepend, OpSHA256
from opentimestamps.core.serialize import BytesSerializationContext
from opentimestamps.core.timestamp import DetachedTimestampFile, Timestamp

from remembrancer.anchoring.base import RailError, RailRegistry, VerifyContext, recheck
from remembrancer.anchoring.btc.headers import BlockHeader
from remembrancer.anchoring.btc.merkleblock import op_return_script, parse_merkle_block
from remembrancer.anchoring.btc.ots import ots_attestations, parse_ots, serialize_ots
from remembrancer.anchoring.btc.rail import BitcoinRail
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, VerificationError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "btc"
HELLO = (FIXTURES / "hello-world.txt").read_bytes()
HELLO_OTS = (FIXTURES / "hello-world.txt.ots").read_bytes()
INCOMPLETE = (FIXTURES / "incomplete.txt").read_bytes()
INCOMPLETE_OTS = (FIXTURES / "incomplete.txt.ots").read_bytes()
HEADERS_358391 = FIXTURES / "headers-mainnet-358391.txt"
HEADER_358391 = BlockHeader.from_hex(HEADERS_358391.read_text().split()[-1])
GENESIS = BlockHeader.from_hex((FIXTURES / "mainnet-genesis-header.hex").read_text().strip())
TXOUTPROOF_0_11 = bytes.fromhex((FIXTURES / "txoutproof-core-0.11.hex").read_text().strip())

BLOCK_358391_HASH = "000000000000000003e892881a8cdcdc117c06d444057c98b6f04a9ee75a2319"
BLOCK_358391_TIME = 1432827678  # 2015-05-28T15:41:18Z
OTS_CODES = {"ots_malformed", "ots_truncated", "ots_too_large", "ots_unsupported"}
NOW = 1_800_000_000
REGTEST_BITS = 0x207FFFFF


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def dsha256(data: bytes) -> bytes:
    return sha256(sha256(data))


def ots_anchor(
    target: str, root: bytes, proof: bytes, *, status: str = "submitted", **evidence: Any
) -> Anchor:
    return Anchor(
        target=target,
        root=root,
        status=status,  # type: ignore[arg-type]
        tx_ref="ots:test",
        evidence={"mode": "ots", "ots": base64.b64encode(proof).decode(), **evidence},
    )


def write_headers(path: Path, headers: dict[int, bytes]) -> Path:
    path.write_text("".join(f"{h} {raw.hex()}\n" for h, raw in sorted(headers.items())))
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail every DNS lookup and connection; returns what was attempted."""
    attempts: list[Any] = []

    def no_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(host)
        raise socket.gaierror("network disabled in this test")

    def no_connect(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return attempts


def mainnet_rail(**settings_: Any) -> BitcoinRail:
    return BitcoinRail.from_config(
        "btc:mainnet", {"headers_file": str(HEADERS_358391), "calendars": [], **settings_}
    )


# --- the fixtures are what they claim ------------------------------------------------


def test_fixture_header_is_block_358391() -> None:
    assert HEADER_358391.hash_hex == BLOCK_358391_HASH
    assert HEADER_358391.time == BLOCK_358391_TIME
    HEADER_358391.check_pow("mainnet")
    assert GENESIS.hash_hex == "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
    GENESIS.check_pow("mainnet")


def test_fixture_proof_attests_block_358391_merkle_root() -> None:
    dtf = parse_ots(HELLO_OTS)
    assert bytes(dtf.file_digest) == sha256(HELLO)
    found = ots_attestations(dtf)
    assert found.pending == ()
    assert found.bitcoin == ((358391, HEADER_358391.merkle_root),)
    assert serialize_ots(dtf) == HELLO_OTS  # canonical round trip


# --- OTS verification, offline, real data ---------------------------------------------


def test_real_proof_verifies_offline_against_real_header(offline: list[Any]) -> None:
    anchor = ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS)
    out = recheck(mainnet_rail(), anchor, VerifyContext(now=NOW, required_depth=1))
    assert out.status == "verified"
    assert out.error is None
    assert out.block_number == 358391
    assert out.anchor_ts == BLOCK_358391_TIME
    assert out.observed_at == NOW
    assert out.finality == Finality(1, 1, "final")
    assert out.evidence["bitcoin"] == {"height": 358391, "block_hash": BLOCK_358391_HASH}
    assert out.evidence["ots"] == anchor.evidence["ots"]
    assert "headers_file" in out.verifier and "opentimestamps" in out.verifier
    assert offline == []


def test_real_proof_not_deep_enough_stays_submitted(offline: list[Any]) -> None:
    anchor = ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS)
    out = recheck(mainnet_rail(), anchor, VerifyContext(now=NOW, required_depth=6))
    assert out.status == "submitted"
    assert out.block_number == 358391
    assert out.finality == Finality(1, 6, "pending")


def test_real_proof_against_wrong_header_fails(tmp_path: Path, offline: list[Any]) -> None:
    # a real header with valid proof of work, at the wrong height: the genesis block
    headers = write_headers(tmp_path / "h.txt", {358391: GENESIS.raw})
    rail = BitcoinRail.from_config("btc:mainnet", {"headers_file": str(headers)})
    out = recheck(
        rail,
        ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS),
        VerifyContext(now=NOW, required_depth=1),
    )
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("btc_merkle_root_mismatch:")
    assert out.block_number is None


def test_verified_proof_whose_block_changed_is_reorged(tmp_path: Path, offline: list[Any]) -> None:
    headers = write_headers(tmp_path / "h.txt", {358391: GENESIS.raw})
    rail = BitcoinRail.from_config("btc:mainnet", {"headers_file": str(headers)})
    anchor = ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS, status="verified")
    out = recheck(rail, anchor, VerifyContext(now=NOW, required_depth=1))
    assert out.status == "reorged"
    assert out.finality.state == "lost"


def test_header_without_proof_of_work_is_refused(tmp_path: Path, offline: list[Any]) -> None:
    forged = bytearray(HEADER_358391.raw)
    forged[68] ^= 1  # another time: the hash no longer meets the target
    headers = write_headers(tmp_path / "h.txt", {358391: bytes(forged)})
    rail = BitcoinRail.from_config("btc:mainnet", {"headers_file": str(headers)})
    # The node's own headers are unusable: it cannot judge, so never "verified".
    verdict = rail.verify(
        ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS), VerifyContext(now=NOW)
    )
    assert verdict.outcome == "unchecked" and verdict.code == "btc_header_pow_invalid"


def test_regtest_target_is_refused_on_mainnet() -> None:
    header = mine_header(b"\x00" * 32, b"\x11" * 32, 1_700_000_000)
    header.check_pow("regtest")
    with pytest.raises(VerificationError) as e:
        header.check_pow("mainnet")
    assert e.value.code == "btc_header_pow_invalid"


def test_extra_bogus_attestation_does_not_spoil_a_valid_one(offline: list[Any]) -> None:
    # the ots client's rule: one attestation that checks out suffices
    dtf = parse_ots(HELLO_OTS)
    dtf.timestamp.ops.add(OpSHA256()).attestations.add(BitcoinBlockHeaderAttestation(358391))
    proof = serialize_ots(dtf)
    out = recheck(
        mainnet_rail(),
        ots_anchor("btc:mainnet", sha256(HELLO), proof),
        VerifyContext(now=NOW, required_depth=1),
    )
    assert out.status == "verified"
    assert out.block_number == 358391
    # only the bogus one, plus one at a height not known yet: wait, do not fail
    stamp = Timestamp(sha256(HELLO))
    stamp.ops.add(OpSHA256()).attestations.add(BitcoinBlockHeaderAttestation(358391))
    stamp.ops.add(OpAppend(b"x")).attestations.add(BitcoinBlockHeaderAttestation(999999))
    proof = serialize_ots(DetachedTimestampFile(OpSHA256(), stamp))
    out = recheck(
        mainnet_rail(), ots_anchor("btc:mainnet", sha256(HELLO), proof), VerifyContext(now=NOW)
    )
    assert out.status == "submitted"
    assert out.error is not None and out.error.startswith("btc_header_unavailable")
    assert "Merkle root differs at height(s) [358391]" in out.error


def test_proof_for_another_digest_fails(offline: list[Any]) -> None:
    out = recheck(
        mainnet_rail(),
        ots_anchor("btc:mainnet", sha256(b"something else"), HELLO_OTS),
        VerifyContext(now=NOW),
    )
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("ots_digest_mismatch:")


@pytest.mark.parametrize("cut", [1, 10, 31, 32, 33, 65, 66, 200, 600, 687])
def test_truncated_proof_fails(cut: int, offline: list[Any]) -> None:
    out = recheck(
        mainnet_rail(),
        ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS[:cut]),
        VerifyContext(now=NOW),
    )
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("ots_truncated:")
    with pytest.raises(VerificationError) as e:
        parse_ots(HELLO_OTS[:cut])
    assert e.value.code == "ots_truncated"


def test_trailing_bytes_after_proof_fail() -> None:
    with pytest.raises(VerificationError) as e:
        parse_ots(HELLO_OTS + b"\x00")
    assert e.value.code == "ots_malformed"


def test_proof_over_size_cap_fails(offline: list[Any]) -> None:
    # a well-formed proof of about 120 KiB: 30 appends of 4000 bytes each
    digest = sha256(b"big")
    stamp = tip = Timestamp(digest)
    for i in range(30):
        tip = tip.ops.add(OpAppend(bytes([i]) * 4000)).ops.add(OpSHA256())
    tip.attestations.add(PendingAttestation("https://alice.btc.calendar.opentimestamps.org"))
    big = serialize_ots(DetachedTimestampFile(OpSHA256(), stamp))
    assert len(big) > 100 * 1024
    out = recheck(mainnet_rail(), ots_anchor("btc:mainnet", digest, big), VerifyContext(now=NOW))
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("ots_too_large:")
    # and the cap is a setting: the real 688-byte proof over a 600-byte cap
    small = recheck(
        mainnet_rail(max_ots_bytes=600),
        ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS),
        VerifyContext(now=NOW),
    )
    assert small.status == "failed" and small.error is not None
    assert small.error.startswith("ots_too_large:")


def test_evidence_not_base64_fails() -> None:
    anchor = Anchor(
        "btc:mainnet", sha256(HELLO), "submitted", evidence={"mode": "ots", "ots": "not base64!"}
    )
    out = recheck(mainnet_rail(), anchor, VerifyContext(now=NOW))
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("ots_malformed:")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(max_size=600), after_magic=st.booleans())
def test_random_bytes_never_verify(garbage: bytes, after_magic: bool) -> None:
    data = (DetachedTimestampFile.HEADER_MAGIC + b"\x01\x08" + garbage) if after_magic else garbage
    try:
        parse_ots(data)  # the rare garbage that parses must still not verify
    except VerificationError as e:
        assert e.code in OTS_CODES
    out = recheck(
        mainnet_rail(upgrade=False),
        ots_anchor("btc:mainnet", sha256(HELLO), data),
        VerifyContext(now=NOW, required_depth=1),
    )
    assert out.status == "failed"


def test_pending_only_proof_stays_submitted(offline: list[Any]) -> None:
    anchor = ots_anchor("btc:mainnet", sha256(INCOMPLETE), INCOMPLETE_OTS)
    out = recheck(mainnet_rail(), anchor, VerifyContext(now=NOW, required_depth=1))
    assert out.status == "submitted"
    assert out.error is not None and out.error.startswith("ots_pending_only")
    assert out.block_number is None
    assert out.evidence["pending_calendars"] == ["https://alice.btc.calendar.opentimestamps.org"]
    assert out.evidence["ots"] == anchor.evidence["ots"]
    # it tried to upgrade from the (whitelisted) calendar, offline, and carried on
    assert "alice.btc.calendar.opentimestamps.org" in offline


def test_pending_only_proof_without_upgrade_asks_nobody(offline: list[Any]) -> None:
    rail = mainnet_rail(upgrade=False)
    out = recheck(
        rail, ots_anchor("btc:mainnet", sha256(INCOMPLETE), INCOMPLETE_OTS), VerifyContext(now=NOW)
    )
    assert out.status == "submitted"
    assert offline == []


# --- a regtest chain, mined here --------------------------------------------------------


def mine_header(
    prev: bytes, merkle_root: bytes, time: int, bits: int = REGTEST_BITS
) -> BlockHeader:
    exponent, mantissa = bits >> 24, bits & 0x7FFFFF
    target = mantissa << (8 * (exponent - 3))
    for nonce in range(1 << 20):
        raw = struct.pack("<i32s32sIII", 0x20000000, prev, merkle_root, time, bits, nonce)
        if int.from_bytes(dsha256(raw), "little") <= target:
            return BlockHeader(raw)
    raise AssertionError("no nonce found")


def coinbase(height: int) -> CTransaction:
    return CTransaction(
        [CMutableTxIn(COutPoint(), CScript([height.to_bytes(3, "little"), b"remembrancer"]))],
        [CMutableTxOut(50 * COIN, CScript([OP_TRUE]))],
    )


@dataclass
class Block:
    height: int
    header: BlockHeader
    txs: list[CTransaction]

    @property
    def hash(self) -> str:
        return self.header.hash_hex

    @property
    def cblock(self) -> CBlock:
        h = self.header
        return CBlock(h.version, h.prev_hash, h.merkle_root, h.time, h.bits, h.nonce, self.txs)


@dataclass
class RegtestChain:
    base: int = 200
    blocks: list[Block] = field(default_factory=list)

    @property
    def tip(self) -> int:
        return self.blocks[-1].height if self.blocks else self.base - 1

    def add(self, txs: list[CTransaction] | None = None, *, prev: bytes | None = None) -> Block:
        height = self.tip + 1
        vtx = [coinbase(height), *(txs or [])]
        root = CBlock.build_merkle_tree_from_txs(vtx)[-1]
        if prev is None:
            prev = self.blocks[-1].header.hash if self.blocks else b"\x07" * 32
        header = mine_header(prev, root, 1_700_000_000 + 600 * height)
        block = Block(height, header, vtx)
        self.blocks.append(block)
        return block

    def at(self, height: int) -> Block | None:
        i = height - self.base
        return self.blocks[i] if 0 <= i < len(self.blocks) else None

    def by_hash(self, block_hash: str) -> Block | None:
        return next((b for b in self.blocks if b.hash == block_hash), None)

    def headers(self) -> dict[int, bytes]:
        return {b.height: b.header.raw for b in self.blocks}


def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    return b"\xfd" + struct.pack("<H", n)


def build_txoutproof(block: Block, txid: bytes) -> bytes:
    """Bitcoin Core's CPartialMerkleTree construction (merkleblock.cpp)."""
    txids = [tx.GetTxid() for tx in block.txs]
    n, match = len(txids), txids.index(txid)

    def width(h: int) -> int:
        return (n + (1 << h) - 1) >> h

    def node(h: int, pos: int) -> bytes:
        if h == 0:
            return txids[pos]
        left = node(h - 1, 2 * pos)
        right = node(h - 1, 2 * pos + 1) if 2 * pos + 1 < width(h - 1) else left
        return dsha256(left + right)

    bits: list[int] = []
    hashes: list[bytes] = []

    def build(h: int, pos: int) -> None:
        parent = int((pos << h) <= match < ((pos + 1) << h))
        bits.append(parent)
        if h == 0 or not parent:
            hashes.append(node(h, pos))
        else:
            build(h - 1, 2 * pos)
            if 2 * pos + 1 < width(h - 1):
                build(h - 1, 2 * pos + 1)

    height = 0
    while width(height) > 1:
        height += 1
    build(height, 0)
    flags = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        flags[i // 8] |= bit << (i % 8)
    return (
        block.header.raw
        + struct.pack("<I", n)
        + compact_size(len(hashes))
        + b"".join(hashes)
        + compact_size(len(flags))
        + bytes(flags)
    )


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


# --- merkle blocks (gettxoutproof) -------------------------------------------------------


def test_real_txoutproof_from_bitcoin_core() -> None:
    proof = parse_merkle_block(TXOUTPROOF_0_11)
    assert proof.header.hash_hex == (
        "0000000000000000140e84bf183d8d5207d65fbfae596bdf48f684d13d951847"
    )
    proof.header.check_pow("mainnet")
    assert proof.total_transactions == 2251
    assert proof.matched_txids() == (
        "f20e44c818ec332d95119507fbe36f1b8b735e2c387db62adbe28e50f7904683",
    )


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b[:-1], "btc_txoutproof_malformed"),
        (lambda b: b + b"\x00", "btc_txoutproof_malformed"),
        (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "btc_merkle_path_invalid"),
        (lambda b: b[:80] + struct.pack("<I", 0) + b[84:], "btc_merkle_path_invalid"),
        (lambda b: b[:-1] + b"\x07", "btc_merkle_path_invalid"),  # extra flag bits used
    ],
)
def test_tampered_txoutproof_fails(mutate: Callable[[bytes], bytes], code: str) -> None:
    with pytest.raises(VerificationError) as e:
        parse_merkle_block(mutate(TXOUTPROOF_0_11))
    assert e.value.code == code


def test_txoutproof_with_identical_siblings_is_refused() -> None:
    # CVE-2012-2459: a block of [a, a] has the same root as the block [a]
    leaf = sha256(b"a")
    header = mine_header(b"\x00" * 32, dsha256(leaf + leaf), 1_700_000_000)
    forged = header.raw + struct.pack("<I", 2) + b"\x02" + leaf + leaf + b"\x01\x07"
    with pytest.raises(VerificationError) as e:
        parse_merkle_block(forged)
    assert e.value.code == "btc_merkle_path_invalid"


def test_txoutproof_builder_round_trips() -> None:
    chain = RegtestChain()
    txs = [coinbase(1000 + i) for i in range(6)]
    block = chain.add(txs)
    for tx in block.txs:
        proof = parse_merkle_block(build_txoutproof(block, tx.GetTxid()))
        assert proof.matches == (tx.GetTxid(),)


# --- calendar stub: submission and upgrade ------------------------------------------------


class CalendarStub:
    """A calendar answering like opentimestamps-server: POST /digest gives a
    timestamp ending in a PendingAttestation (to itself); GET /timestamp/<c>
    gives 404 until ``mine`` put its commitments in a regtest block."""

    def __init__(self) -> None:
        self.url = ""
        self.pending: dict[bytes, bytes] = {}  # pending message -> submitted commitment
        self.upgrades: dict[bytes, bytes] = {}  # pending message -> serialized upgrade
        self.posted: list[bytes] = []
        self.requests: list[str] = []
        self.fail_with: int | None = None
        self.garbage = False

    def answer(self, commitment: bytes) -> bytes:
        stamp = Timestamp(commitment)
        tip = stamp.ops.add(OpPrepend(struct.pack(">I", NOW))).ops.add(OpAppend(os.urandom(8)))
        tip.attestations.add(PendingAttestation(self.url))
        self.pending[tip.msg] = commitment
        ctx = BytesSerializationContext()
        stamp.serialize(ctx)
        return bytes(ctx.getbytes())

    def mine(self, chain: RegtestChain, confirmations: int) -> Block:
        tips = {msg: Timestamp(msg).ops.add(OpSHA256()) for msg in self.pending}
        txs = [
            CTransaction(
                [CMutableTxIn(COutPoint(lx("11" * 32), i))],
                [CMutableTxOut(0, CScript([OP_RETURN, t.msg]))],
            )
            for i, t in enumerate(tips.values())
        ]
        block = chain.add(txs)
        for msg, tip in tips.items():
            path = make_timestamp_from_block(tip.msg, block.cblock, block.height)
            assert path is not None
            upgrade = Timestamp(msg)
            upgrade.ops.add(OpSHA256()).merge(path)
            ctx = BytesSerializationContext()
            upgrade.serialize(ctx)
            self.upgrades[msg] = bytes(ctx.getbytes())
        for _ in range(confirmations - 1):
            chain.add()
        return block

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                stub.requests.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if stub.fail_with:
                    return self.reply(stub.fail_with, b"calendar down")
                if self.path != "/digest" or len(body) > 64:
                    return self.reply(400, b"bad request")
                stub.posted.append(body)
                self.reply(200, b"\xf0\x01" if stub.garbage else stub.answer(body))

            def do_GET(self) -> None:
                stub.requests.append(f"GET {self.path}")
                prefix = "/timestamp/"
                msg = (
                    bytes.fromhex(self.path[len(prefix) :]) if self.path.startswith(prefix) else b""
                )
                if msg in stub.upgrades:
                    return self.reply(200, stub.upgrades[msg])
                self.reply(404, b"Pending confirmation in Bitcoin blockchain")

        return Handler


@pytest.fixture
def calendar() -> Iterator[CalendarStub]:
    stub = CalendarStub()
    server, stub.url = serve(stub.handler())
    yield stub
    stop(server)


def regtest_rail(calendars: list[str], headers: Path, **extra: Any) -> BitcoinRail:
    return BitcoinRail.from_config(
        "btc:regtest", {"calendars": calendars, "headers_file": str(headers), **extra}
    )


def test_submit_to_calendar_then_upgrade_and_verify(calendar: CalendarStub, tmp_path: Path) -> None:
    headers = write_headers(tmp_path / "regtest.txt", {})
    rail = regtest_rail([calendar.url], headers)
    digest = sha256(b"checkpoint body")
    anchor = rail.submit(digest, now=NOW)
    assert anchor.status == "submitted"
    assert anchor.observed_at == NOW
    assert anchor.evidence["calendars"] == [calendar.url]
    # the calendar saw the blinded commitment, never the digest
    assert calendar.posted == [bytes.fromhex(anchor.evidence["commitment"])]
    assert digest not in calendar.posted[0]
    assert anchor.tx_ref == "ots:" + anchor.evidence["commitment"]
    dtf = parse_ots(base64.b64decode(anchor.evidence["ots"]))
    assert bytes(dtf.file_digest) == digest
    assert isinstance(dtf.file_hash_op, OpSHA256)
    assert ots_attestations(dtf).pending == (calendar.url,)

    pending = recheck(rail, anchor, VerifyContext(now=NOW + 60, required_depth=3))
    assert pending.status == "submitted"
    assert pending.evidence["pending_calendars"] == [calendar.url]
    assert pending.evidence["ots"] == anchor.evidence["ots"]

    chain = RegtestChain()
    block = calendar.mine(chain, confirmations=3)
    write_headers(headers, chain.headers())
    done = recheck(rail, pending, VerifyContext(now=NOW + 7200, required_depth=3))
    assert done.status == "verified", done.error
    assert done.block_number == block.height
    assert done.anchor_ts == block.header.time
    assert done.finality == Finality(3, 3, "final")
    upgraded = parse_ots(base64.b64decode(done.evidence["ots"]))
    assert ots_attestations(upgraded).bitcoin == ((block.height, block.header.merkle_root),)
    assert any(
        isinstance(a, BitcoinBlockHeaderAttestation)
        for _, a in upgraded.timestamp.all_attestations()
    )

    # the upgraded evidence verifies with the calendar gone and no network
    gone = regtest_rail([calendar.url], headers, upgrade=False)
    again = recheck(gone, done, VerifyContext(now=NOW + 9000, required_depth=3))
    assert again.status == "verified"
    assert again.block_number == block.height


def test_confirmations_stop_at_a_broken_header_chain(
    calendar: CalendarStub, tmp_path: Path
) -> None:
    headers = write_headers(tmp_path / "regtest.txt", {})
    rail = regtest_rail([calendar.url], headers)
    anchor = rail.submit(sha256(b"x"), now=NOW)
    chain = RegtestChain()
    block = calendar.mine(chain, confirmations=1)
    stray = chain.add(prev=b"\x42" * 32)  # does not link to the block below
    write_headers(headers, chain.headers())
    verdict = rail.verify(anchor, VerifyContext(now=NOW, required_depth=1))
    assert verdict.outcome == "unchecked" and verdict.code == "btc_header_chain_broken"
    # a gap instead: the headers after it do not count
    write_headers(headers, {block.height: block.header.raw, stray.height + 1: stray.header.raw})
    out = recheck(rail, anchor, VerifyContext(now=NOW, required_depth=2))
    assert out.status == "submitted"
    assert out.finality.observed_depth == 1


def test_attestation_above_known_headers_stays_submitted(
    calendar: CalendarStub, tmp_path: Path
) -> None:
    headers = write_headers(tmp_path / "regtest.txt", {})
    rail = regtest_rail([calendar.url], headers)
    anchor = rail.submit(sha256(b"y"), now=NOW)
    calendar.mine(RegtestChain(), confirmations=1)  # headers file stays empty
    out = recheck(rail, anchor, VerifyContext(now=NOW, required_depth=1))
    assert out.status == "submitted"
    assert out.error is not None and out.error.startswith("btc_header_unavailable")


def test_one_calendar_down_is_tolerated_with_min_calendars_1(
    calendar: CalendarStub, tmp_path: Path
) -> None:
    headers = write_headers(tmp_path / "h.txt", {})
    rail = regtest_rail([dead_url(), calendar.url], headers, min_calendars=1)
    anchor = rail.submit(sha256(b"z"), now=NOW)
    assert anchor.evidence["calendars"] == [calendar.url]
    strict = regtest_rail([dead_url(), calendar.url], headers)  # default: 2 of 2
    with pytest.raises(RailError) as e:
        strict.submit(sha256(b"z"), now=NOW)
    assert e.value.error_class == "transient"


def test_unreachable_calendar_is_transient(tmp_path: Path) -> None:
    rail = regtest_rail([dead_url()], write_headers(tmp_path / "h.txt", {}))
    with pytest.raises(RailError) as e:
        rail.submit(sha256(b"x"), now=NOW)
    assert e.value.code == "ots_calendars_failed"
    assert e.value.error_class == "transient"


@pytest.mark.parametrize(
    ("status", "garbage", "error_class"),
    [
        (503, False, "transient"),
        (401, False, "auth"),
        (400, False, "validation"),
        (None, True, "validation"),
    ],
)
def test_calendar_refusals_are_classified(
    calendar: CalendarStub, tmp_path: Path, status: int | None, garbage: bool, error_class: str
) -> None:
    calendar.fail_with, calendar.garbage = status, garbage
    rail = regtest_rail([calendar.url], write_headers(tmp_path / "h.txt", {}))
    with pytest.raises(RailError) as e:
        rail.submit(sha256(b"x"), now=NOW)
    assert e.value.error_class == error_class


def test_upgrade_asks_only_configured_or_whitelisted_calendars(
    calendar: CalendarStub, tmp_path: Path
) -> None:
    # a proof whose pending attestation names a calendar we never configured
    other = CalendarStub()
    server, other.url = serve(other.handler())
    try:
        digest = sha256(b"w")
        stamp = Timestamp(digest)
        stamp.ops.add(OpSHA256()).attestations.add(PendingAttestation(other.url))
        proof = serialize_ots(DetachedTimestampFile(OpSHA256(), stamp))
        rail = regtest_rail([calendar.url], write_headers(tmp_path / "h.txt", {}))
        out = recheck(rail, ots_anchor("btc:regtest", digest, proof), VerifyContext(now=NOW))
        assert out.status == "submitted"
        assert other.requests == []
    finally:
        stop(server)


# --- Bitcoin Core JSON-RPC stub ------------------------------------------------------------


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FakeBitcoinCore:
    """Answers shaped like Bitcoin Core 27's JSON-RPC (HTTP 500 + error object
    for errors, 401 for bad credentials), over a regtest chain and a wallet."""

    NO_TX = "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."

    def __init__(self, chain: RegtestChain | None = None, *, chain_name: str = "regtest") -> None:
        self.chain = chain or RegtestChain()
        self.chain_name = chain_name
        self.extra_headers: dict[int, bytes] = {}
        self.tip_override: int | None = None
        self.user, self.password = "alice", "s3cret:/@"
        self.mempool: dict[str, CTransaction] = {}
        self.wallet: set[str] = set()
        self.unsigned: dict[str, bytes] = {}
        self.calls: list[str] = []
        self.payload_override: bytes | None = None
        self.tamper_proof = False
        self.txindex = False

    # chain views
    def tip(self) -> int:
        return self.tip_override if self.tip_override is not None else self.chain.tip

    def header_at(self, height: int) -> bytes | None:
        if height in self.extra_headers:
            return self.extra_headers[height]
        block = self.chain.at(height)
        return block.header.raw if block else None

    def find(self, txid: str) -> tuple[CTransaction, Block] | None:
        for block in self.chain.blocks:
            for tx in block.txs:
                if b2lx(tx.GetTxid()) == txid:
                    return tx, block
        return None

    def mine(self, confirmations: int, extra: list[CTransaction] | None = None) -> Block:
        block = self.chain.add([*(extra or []), *self.mempool.values()])
        self.mempool.clear()
        for _ in range(confirmations - 1):
            self.chain.add()
        return block

    def tx_json(
        self, tx: CTransaction, block: Block | None, *, with_chain_flag: bool
    ) -> dict[str, Any]:
        raw = tx.serialize()
        out: dict[str, Any] = {
            "txid": b2lx(tx.GetTxid()),
            "hash": b2lx(dsha256(raw)),
            "version": tx.nVersion,
            "size": len(raw),
            "vsize": len(raw),
            "weight": 4 * len(raw),
            "locktime": tx.nLockTime,
            "vin": [
                {"txid": b2lx(i.prevout.hash), "vout": i.prevout.n, "sequence": i.nSequence}
                for i in tx.vin
            ],
            "vout": [
                {
                    "value": o.nValue / COIN,
                    "n": n,
                    "scriptPubKey": {"hex": bytes(o.scriptPubKey).hex()},
                }
                for n, o in enumerate(tx.vout)
            ],
            "hex": raw.hex(),
        }
        if block is not None:
            if with_chain_flag:
                out = {"in_active_chain": self.chain.at(block.height) is block, **out}
            out.update(
                blockhash=block.hash,
                confirmations=self.tip() - block.height + 1,
                time=block.header.time,
                blocktime=block.header.time,
            )
        return out

    def signed_tx(self, payload: bytes) -> CTransaction:
        return CTransaction(
            [CMutableTxIn(COutPoint(lx("ab" * 32), 1), CScript(), 0xFFFFFFFD)],
            [
                CMutableTxOut(0, CScript([OP_RETURN, payload])),
                CMutableTxOut(99_990_000, CScript([0, b"\x22" * 20])),
            ],
            nVersion=2,
            witness=CTxWitness([CTxInWitness(CScriptWitness([b"\x30" * 71, b"\x02" * 33]))]),
        )

    def dispatch(self, method: str, params: list[Any]) -> Any:
        self.calls.append(method)
        if method == "getblockchaininfo":
            best = self.header_at(self.tip())
            return {
                "chain": self.chain_name,
                "blocks": self.tip(),
                "headers": self.tip(),
                "bestblockhash": BlockHeader(best).hash_hex if best else "00" * 32,
                "initialblockdownload": False,
                "pruned": False,
                "warnings": "",
            }
        if method == "getblockcount":
            return self.tip()
        if method == "getblockhash":
            raw = self.header_at(params[0]) if 0 <= params[0] <= self.tip() else None
            if raw is None:
                raise RpcFault(-8, "Block height out of range")
            return BlockHeader(raw).hash_hex
        if method == "getblockheader":
            block_hash, verbose = params[0], params[1] if len(params) > 1 else True
            known = {b.hash: (b.height, b.header.raw) for b in self.chain.blocks}
            known.update({BlockHeader(r).hash_hex: (h, r) for h, r in self.extra_headers.items()})
            if block_hash not in known:
                raise RpcFault(-5, "Block not found")
            height, raw = known[block_hash]
            if not verbose:
                return raw.hex()
            return {"hash": block_hash, "height": height, "confirmations": self.tip() - height + 1,
                    "merkleroot": BlockHeader(raw).merkle_root[::-1].hex(), "time": BlockHeader(raw).time}  # fmt: skip
        if method == "getrawtransaction":
            txid, block_hash = params[0], params[2] if len(params) > 2 else None
            if block_hash is not None:
                block = self.chain.by_hash(block_hash)
                if block is None:
                    raise RpcFault(-5, "Block hash not found")
                tx = next((t for t in block.txs if b2lx(t.GetTxid()) == txid), None)
                if tx is None:
                    raise RpcFault(-5, "No such transaction found in the provided block.")
                return self.tx_json(tx, block, with_chain_flag=True)
            if txid in self.mempool:
                return self.tx_json(self.mempool[txid], None, with_chain_flag=False)
            found = self.find(txid) if self.txindex else None
            if found is None:
                raise RpcFault(-5, self.NO_TX)
            return self.tx_json(found[0], found[1], with_chain_flag=False)
        if method == "gettransaction":
            txid = params[0]
            if txid not in self.wallet:
                raise RpcFault(-5, "Invalid or non-wallet transaction id")
            found = self.find(txid)
            out: dict[str, Any] = {"txid": txid, "confirmations": 0, "details": []}
            if found is not None and self.chain.at(found[1].height) is found[1]:
                out.update(blockhash=found[1].hash, blockheight=found[1].height,
                           confirmations=self.tip() - found[1].height + 1)  # fmt: skip
            return out
        if method == "gettxoutproof":
            (txid,), block_hash = params[0], params[1]
            block = self.chain.by_hash(block_hash)
            if block is None:
                raise RpcFault(-5, "Block not found")
            proof = bytearray(build_txoutproof(block, lx(txid)))
            if self.tamper_proof:
                proof[-40] ^= 1  # a sibling hash
            return proof.hex()
        if method == "createrawtransaction":
            inputs, outputs = params
            assert inputs == [] and list(outputs[0]) == ["data"]
            script = op_return_script(bytes.fromhex(outputs[0]["data"])[2:])
            unsigned = "020000000001" + "00" * 8 + "24" + script.hex() + "00000000"
            self.unsigned[unsigned] = bytes.fromhex(outputs[0]["data"])
            return unsigned
        if method == "fundrawtransaction":
            if params[0] not in self.unsigned:
                raise RpcFault(-22, "TX decode failed")
            payload = self.unsigned[params[0]]
            funded = self.signed_tx(payload)
            self.unsigned[funded.serialize().hex()] = payload
            return {"hex": funded.serialize().hex(), "fee": 0.0000141, "changepos": 1}
        if method == "signrawtransactionwithwallet":
            payload = self.unsigned[params[0]]
            tx = self.signed_tx(self.payload_override or payload)
            return {"hex": tx.serialize().hex(), "complete": True}
        if method == "sendrawtransaction":
            tx = CTransaction.deserialize(bytes.fromhex(params[0]))
            txid = b2lx(tx.GetTxid())
            self.mempool[txid] = tx
            self.wallet.add(txid)
            return txid
        raise RpcFault(-32601, "Method not found")

    def handler(self) -> type[BaseHTTPRequestHandler]:
        core = self
        expected = "Basic " + base64.b64encode(f"{core.user}:{core.password}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode() if doc is not None else b""
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="jsonrpc"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != expected:
                    return self.reply(401, None)
                try:
                    result = core.dispatch(request["method"], request.get("params", []))
                except RpcFault as e:
                    status = 404 if e.code == -32601 else 500
                    error = {"code": e.code, "message": e.message}
                    return self.reply(status, {"result": None, "error": error, "id": request["id"]})
                self.reply(200, {"result": result, "error": None, "id": request["id"]})

        return Handler

    def url(self, base: str, *, password: str | None = None) -> str:
        from urllib.parse import quote

        secret = quote(self.password if password is None else password, safe="")
        return base.replace("http://", f"http://{self.user}:{secret}@") + "/wallet/anchors"


@pytest.fixture
def core() -> Iterator[tuple[FakeBitcoinCore, str]]:
    fake = FakeBitcoinCore()
    fake.chain.add()  # height 200
    server, base = serve(fake.handler())
    yield fake, base
    stop(server)


def op_return_rail(rpc: str, **extra: Any) -> BitcoinRail:
    return BitcoinRail.from_config(
        "btc:regtest", {"mode": "op_return", "bitcoin_rpc": rpc, **extra}
    )


def test_op_return_submit_and_verify(core: tuple[FakeBitcoinCore, str], tmp_path: Path) -> None:
    fake, base = core
    rail = op_return_rail(fake.url(base))
    digest = sha256(b"checkpoint")
    anchor = rail.submit(digest, now=NOW)
    assert anchor.status == "submitted"
    assert anchor.tx_ref == anchor.evidence["txid"]
    assert fake.calls[-4:] == [
        "createrawtransaction",
        "fundrawtransaction",
        "signrawtransactionwithwallet",
        "sendrawtransaction",
    ]
    sent = fake.mempool[anchor.tx_ref]
    assert op_return_script(digest) in [bytes(o.scriptPubKey) for o in sent.vout]
    assert op_return_script(digest)[:4].hex() == "6a225256"  # OP_RETURN, push 34, "RV"

    in_mempool = recheck(rail, anchor, VerifyContext(now=NOW, required_depth=3))
    assert in_mempool.status == "submitted"
    assert in_mempool.block_number is None

    block = fake.mine(confirmations=2)
    shallow = recheck(rail, in_mempool, VerifyContext(now=NOW, required_depth=3))
    assert shallow.status == "submitted"
    assert shallow.finality == Finality(2, 3, "pending")
    assert shallow.block_number == block.height

    fake.chain.add()
    done = recheck(rail, shallow, VerifyContext(now=NOW + 1800, required_depth=3))
    assert done.status == "verified", done.error
    assert done.block_number == block.height
    assert done.anchor_ts == block.header.time
    assert done.finality == Finality(3, 3, "final")
    assert done.evidence["block_hash"] == block.hash
    assert done.evidence["block_height"] == block.height
    assert "getrawtransaction" in fake.calls and "gettransaction" in fake.calls  # no txindex

    # offline: the node is down, the stored evidence and a headers file suffice
    headers = write_headers(tmp_path / "regtest.txt", fake.chain.headers())
    offline_rail = op_return_rail(dead_url() + "/", headers_file=str(headers))
    again = recheck(offline_rail, done, VerifyContext(now=NOW + 3600, required_depth=3))
    assert again.status == "verified"
    assert "headers_file" in again.verifier


def test_op_return_wrong_payload_fails(core: tuple[FakeBitcoinCore, str]) -> None:
    fake, base = core
    rail = op_return_rail(fake.url(base))
    anchor = rail.submit(sha256(b"one digest"), now=NOW)
    fake.mine(confirmations=1)
    claimed = Anchor(
        "btc:regtest", sha256(b"another digest"), "submitted", tx_ref=anchor.tx_ref,
        evidence=anchor.evidence,
    )  # fmt: skip
    out = recheck(rail, claimed, VerifyContext(now=NOW, required_depth=1))
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("btc_op_return_mismatch:")


def test_op_return_wrong_merkle_path_fails(core: tuple[FakeBitcoinCore, str]) -> None:
    fake, base = core
    rail = op_return_rail(fake.url(base))
    anchor = rail.submit(sha256(b"d"), now=NOW)
    fake.mine(confirmations=1, extra=[coinbase(9000 + i) for i in range(4)])  # a real path
    fake.tamper_proof = True
    out = recheck(rail, anchor, VerifyContext(now=NOW, required_depth=1))
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("btc_merkle_path_invalid:")


def test_op_return_stored_tx_must_hash_to_txid(
    core: tuple[FakeBitcoinCore, str], tmp_path: Path
) -> None:
    fake, base = core
    rail = op_return_rail(fake.url(base))
    anchor = rail.submit(sha256(b"e"), now=NOW)
    fake.mine(confirmations=1)
    done = recheck(rail, anchor, VerifyContext(now=NOW, required_depth=1))
    assert done.status == "verified"
    headers = write_headers(tmp_path / "h.txt", fake.chain.headers())
    other = fake.signed_tx(b"RV" + sha256(b"e")).serialize()[:-1] + b"\x01"  # another locktime
    forged = Anchor(
        "btc:regtest", done.root, "verified", tx_ref=done.tx_ref,
        evidence={**done.evidence, "tx": other.hex()},
    )  # fmt: skip
    out = recheck(
        op_return_rail(dead_url() + "/", headers_file=str(headers)),
        forged,
        VerifyContext(now=NOW, required_depth=1),
    )
    assert out.status == "failed"
    assert out.error is not None and out.error.startswith("btc_tx_mismatch:")


@pytest.mark.parametrize("tx_fate", ["back_in_mempool", "gone"])
def test_op_return_reorged_block(core: tuple[FakeBitcoinCore, str], tx_fate: str) -> None:
    fake, base = core
    rail = op_return_rail(fake.url(base))
    anchor = rail.submit(sha256(b"r"), now=NOW)
    tx = fake.mempool[anchor.tx_ref]
    block = fake.mine(confirmations=2)
    done = recheck(rail, anchor, VerifyContext(now=NOW, required_depth=2))
    assert done.status == "verified"
    # a competing chain replaces the block
    del fake.chain.blocks[block.height - fake.chain.base :]
    fake.chain.add()
    fake.chain.add()
    if tx_fate == "back_in_mempool":
        fake.mempool[anchor.tx_ref] = tx
    else:
        fake.wallet.clear()
    out = recheck(rail, done, VerifyContext(now=NOW, required_depth=2))
    assert out.status == "reorged"
    assert out.error is not None and out.error.startswith("btc_block_not_canonical:")


def test_op_return_wallet_tx_without_our_output_is_not_sent(
    core: tuple[FakeBitcoinCore, str],
) -> None:
    fake, base = core
    fake.payload_override = b"RV" + sha256(b"someone else's")
    with pytest.raises(RailError) as e:
        op_return_rail(fake.url(base)).submit(sha256(b"ours"), now=NOW)
    assert e.value.code == "btc_op_return_mismatch"
    assert e.value.error_class == "validation"
    assert "sendrawtransaction" not in fake.calls


def test_rpc_on_the_wrong_chain_is_refused(core: tuple[FakeBitcoinCore, str]) -> None:
    fake, base = core
    fake.chain_name = "main"
    with pytest.raises(RailError) as e:
        op_return_rail(fake.url(base)).submit(sha256(b"x"), now=NOW)
    assert e.value.code == "btc_rpc_wrong_chain"


def test_rpc_bad_credentials_is_auth(core: tuple[FakeBitcoinCore, str]) -> None:
    fake, base = core
    with pytest.raises(RailError) as e:
        op_return_rail(fake.url(base, password="wrong")).submit(sha256(b"x"), now=NOW)
    assert e.value.error_class == "auth"
    assert "wrong" not in e.value.message and fake.password not in e.value.message


def test_rpc_unreachable_is_transient() -> None:
    rail = op_return_rail(dead_url() + "/")
    with pytest.raises(RailError) as e:
        rail.submit(sha256(b"x"), now=NOW)
    assert e.value.error_class == "transient"
    anchor = Anchor(
        "btc:regtest", sha256(b"x"), "submitted", tx_ref="ab" * 32,
        evidence={"mode": "op_return", "txid": "ab" * 32},
    )  # fmt: skip
    verdict = rail.verify(anchor, VerifyContext(now=NOW))
    assert verdict.outcome == "unchecked" and verdict.code == "btc_unreachable"


def test_ots_headers_from_rpc_with_the_real_header() -> None:
    fake = FakeBitcoinCore(chain_name="main")
    fake.extra_headers = {358391: HEADER_358391.raw}
    fake.tip_override = 358396
    server, base = serve(fake.handler())
    try:
        rail = BitcoinRail.from_config(
            "btc:mainnet", {"bitcoin_rpc": fake.url(base), "calendars": []}
        )
        out = recheck(
            rail,
            ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS),
            VerifyContext(now=NOW, required_depth=6),
        )
        assert out.status == "verified", out.error
        assert out.block_number == 358391
        assert out.anchor_ts == BLOCK_358391_TIME
        assert out.finality == Finality(6, 6, "final")
        assert out.verifier.endswith("headers: bitcoin_rpc")
        # a node that serves another header at that height
        fake.extra_headers = {358391: GENESIS.raw}
        bad = recheck(
            rail,
            ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS),
            VerifyContext(now=NOW, required_depth=6),
        )
        assert bad.status == "failed"
    finally:
        stop(server)


def test_ots_headers_from_unreachable_rpc_is_transient() -> None:
    rail = BitcoinRail.from_config("btc:mainnet", {"bitcoin_rpc": dead_url() + "/"})
    verdict = rail.verify(
        ots_anchor("btc:mainnet", sha256(HELLO), HELLO_OTS), VerifyContext(now=NOW)
    )
    assert verdict.outcome == "unchecked" and verdict.code == "btc_unreachable"


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "settings_"),
    [
        ("btc:signet", {"headers_file": "h"}),
        ("btc:mainnet", {"headers_file": "h", "colour": "blue"}),
        ("btc:mainnet", {"calendars": ["https://a.example"]}),  # no header source
        ("btc:mainnet", {"mode": "op_return", "headers_file": "h"}),  # no RPC
        ("btc:mainnet", {"mode": "lightning", "headers_file": "h"}),
        ("btc:mainnet", {"headers_file": "h", "calendars": "https://a.example"}),
        ("btc:mainnet", {"headers_file": "h", "calendars": ["ftp://a.example"]}),
        ("btc:mainnet", {"headers_file": "h", "timeout": 0}),
        ("btc:mainnet", {"headers_file": "h", "min_calendars": 9}),
        ("btc:mainnet", {"bitcoin_rpc": "bitcoin.local:8332"}),
    ],
)
def test_bad_settings_are_config_errors(target: str, settings_: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BitcoinRail.from_config(target, settings_)


def test_registry_builds_the_rail() -> None:
    registry = RailRegistry({"btc": {"mainnet": {"headers_file": str(HEADERS_358391)}}})
    rail = registry.get("btc:mainnet")
    assert isinstance(rail, BitcoinRail)
    assert rail.target == "btc:mainnet"
    assert rail.settings.mode == "ots"


def test_anchor_for_another_target_is_refused() -> None:
    verdict = mainnet_rail().verify(
        ots_anchor("btc:testnet", sha256(HELLO), HELLO_OTS), VerifyContext(now=NOW)
    )
    assert verdict.outcome == "unchecked" and verdict.code == "btc_target_mismatch"
