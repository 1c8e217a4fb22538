"""Issue 14, rule 1, rail by rail: ``Rail.verify(anchor evidence, local
settings) -> Verdict`` never reads what the anchor says about itself.

For each rail, an anchor is judged once; then every variation of its claimed
``status``, ``finality`` (``requiredDepth`` included), ``error`` and
``verifier`` must get the very same verdict.  The required depth is this
node's (``max(rail confirmations, ctx.required_depth)``); an OpenTimestamps
proof with only pending attestations is never verified; without the
headers it needs the verdict is ``unchecked``.  And :func:`judged`, which
turns a verdict into what a node stores, makes a claim ``verified`` only on
a verified verdict."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    Verdict,
    VerifyContext,
    judged,
)
from remembrancer.anchoring.btc.rail import BitcoinRail
from remembrancer.anchoring.evm.rail import EvmRail
from remembrancer.anchoring.rfc3161.devtsa import DevTsa
from remembrancer.anchoring.rfc3161.model import Imprint
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail, build_request, new_nonce
from remembrancer.core.anchor import STATUSES, Anchor, Finality
from remembrancer.testing.byzantine import forged_ots_evidence

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "btc"
HELLO = (FIXTURES / "hello-world.txt").read_bytes()
HELLO_OTS = (FIXTURES / "hello-world.txt.ots").read_bytes()
INCOMPLETE = (FIXTURES / "incomplete.txt").read_bytes()
INCOMPLETE_OTS = (FIXTURES / "incomplete.txt.ots").read_bytes()
HEADERS_358391 = FIXTURES / "headers-mainnet-358391.txt"
NOW = 1_800_000_000
FINALITIES = (
    Finality(0, 0, "pending"),
    Finality(1, 1, "final"),
    Finality(99, 1, "final"),
    Finality(10**6, 10**6, "lost"),
)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def claims(anchor: Anchor) -> Iterator[Anchor]:
    """``anchor`` saying every possible thing about itself."""
    for status in STATUSES:
        for finality in FINALITIES:
            yield dataclasses.replace(anchor, status=status, finality=finality,
                                      error="all good", verifier="trust me")  # fmt: skip


def same_verdict_whatever_it_claims(verify: Callable[[Anchor], Verdict], anchor: Anchor) -> Verdict:
    want = verify(anchor)
    for claim in claims(anchor):
        assert verify(claim) == want, (claim.status, claim.finality)
    return want


# --------------------------------------------------------------------------
# RFC 3161
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tsas(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevTsa, DevTsa]:
    base = tmp_path_factory.mktemp("tsas")
    return DevTsa(base / "ours"), DevTsa(base / "theirs", name="Their TSA")


def tsa_anchor(tsa: DevTsa, root: bytes) -> Anchor:
    nonce = new_nonce()
    resp = tsa.respond(build_request(Imprint.for_digest(root), nonce=nonce))
    evidence = {"type": "rfc3161", "tsr": base64.b64encode(resp).decode(), "nonce": str(nonce)}
    return Anchor("rfc3161:tsa", root, evidence=evidence)


def test_rfc3161_verdict_ignores_the_claimed_status_and_finality(
    tsas: tuple[DevTsa, DevTsa],
) -> None:
    ours, theirs = tsas
    rail = Rfc3161Rail.from_config("rfc3161:tsa", {"trust_bundle": str(ours.ca_cert_path)})
    ctx = VerifyContext(now=int(dt.datetime.now(dt.UTC).timestamp()))
    root = sha256(b"claims")
    good = same_verdict_whatever_it_claims(lambda a: rail.verify(a, ctx), tsa_anchor(ours, root))
    assert good.outcome == "verified" and good.tx_ref and good.anchor_ts
    bad = same_verdict_whatever_it_claims(lambda a: rail.verify(a, ctx), tsa_anchor(theirs, root))
    assert (bad.outcome, bad.code) == ("failed", "tsa_chain_untrusted")
    # The facts come from the token; a claim stating others disagrees with it.
    claim = tsa_anchor(ours, root)
    verdict = rail.verify(claim, ctx)
    assert verdict.disagreement(claim) is not None  # txRef and time not stated
    stated = dataclasses.replace(claim, tx_ref=verdict.tx_ref or "", anchor_ts=verdict.anchor_ts)
    assert verdict.disagreement(stated) is None
    assert verdict.disagreement(dataclasses.replace(stated, anchor_ts=1)) is not None


# --------------------------------------------------------------------------
# EVM, against a scripted node: the transaction is 9 blocks deep
# --------------------------------------------------------------------------

TX = "0x" + "ab" * 32
BLOCK = "0x" + "aa" * 32
ADDR = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
DIGEST = sha256(b"evm")


class ScriptedNode:
    """A JSON-RPC node at head 16 holding one anchor transaction in block 8."""

    display = "scripted"

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        params = params or []
        return {
            "eth_chainId": lambda: "0x7a69",
            "web3_clientVersion": lambda: "scripted/1.0",
            "eth_blockNumber": lambda: "0x10",
            "eth_getBlockByNumber": lambda: (
                {"hash": BLOCK, "timestamp": hex(1_700_000_008)} if params[0] == "0x8" else None
            ),
            "eth_getTransactionByHash": lambda: {
                "hash": TX, "chainId": "0x7a69", "from": ADDR, "to": ADDR, "blockHash": BLOCK,
                "blockNumber": "0x8", "input": "0x" + (b"RV" + DIGEST).hex(),
            },
            "eth_getTransactionReceipt": lambda: {
                "transactionHash": TX, "status": "0x1", "blockHash": BLOCK, "blockNumber": "0x8",
                "transactionIndex": "0x0",
            },
        }[method]()  # fmt: skip


def evm_rail(confirmations: int) -> EvmRail:
    rail = EvmRail.from_config(
        "eip155:31337", {"rpc": "http://127.0.0.1:9", "confirmations": confirmations}
    )
    rail.client = ScriptedNode()  # type: ignore[assignment]
    return rail


EVM_ANCHOR = Anchor("eip155:31337", DIGEST, tx_ref=TX, block_number=8, anchor_ts=1_700_000_008,
                    evidence={"chainId": 31337, "txHash": TX, "from": ADDR, "to": ADDR,
                              "blockNumber": 8, "blockHash": BLOCK, "transactionIndex": 0})  # fmt: skip


@pytest.mark.parametrize(("rail_confirmations", "asked", "outcome", "required"), [
    (12, 0, "pending", 12),   # the rail's own setting is the floor ...
    (12, 1, "pending", 12),   # ... a context asking for less does not lower it
    (1, 12, "pending", 12),   # the cadence may ask for more
    (9, 0, "verified", 9),
    (1, 0, "verified", 1),
])  # fmt: skip
def test_evm_depth_is_this_nodes_whatever_the_anchor_claims(
    rail_confirmations: int, asked: int, outcome: str, required: int
) -> None:
    rail = evm_rail(rail_confirmations)
    ctx = VerifyContext(NOW, asked)
    verdict = same_verdict_whatever_it_claims(lambda a: rail.verify(a, ctx), EVM_ANCHOR)
    assert (verdict.outcome, verdict.observed_depth, verdict.required_depth) == (
        outcome,
        9,
        required,
    )
    if outcome == "pending":
        assert verdict.code == DEPTH_INSUFFICIENT
        # A claim of "verified, requiredDepth 1" is stored as what it is: submitted.
        claim = dataclasses.replace(EVM_ANCHOR, status="verified", finality=Finality(9, 1, "final"))
        assert judged(claim, verdict, now=NOW, prior=None).status == "submitted"
    else:
        assert verdict.disagreement(EVM_ANCHOR) is None


# --------------------------------------------------------------------------
# Bitcoin (OpenTimestamps), offline against the real header of block 358391
# --------------------------------------------------------------------------


def btc_rail(headers: Path = HEADERS_358391, **settings: Any) -> BitcoinRail:
    return BitcoinRail.from_config("btc:mainnet", {"headers_file": str(headers), "calendars": [],
                                                   "upgrade": False, **settings})  # fmt: skip


def ots_anchor(root: bytes, proof: bytes) -> Anchor:
    evidence = {"mode": "ots", "ots": base64.b64encode(proof).decode()}
    return Anchor("btc:mainnet", root, tx_ref="ots:test", evidence=evidence)


def test_btc_real_proof_verdict_ignores_the_claim_and_uses_this_nodes_depth() -> None:
    anchor = ots_anchor(sha256(HELLO), HELLO_OTS)
    verdict = same_verdict_whatever_it_claims(
        lambda a: btc_rail().verify(a, VerifyContext(NOW)), anchor
    )
    assert verdict.outcome == "verified" and verdict.block_number == 358391
    assert verdict.required_depth == 1  # the rail's default confirmations
    # One header known: depth 1.  A rail that requires 2, or a level asking for 2.
    for rail, asked in ((btc_rail(confirmations=2), 0), (btc_rail(), 2)):
        verdict = same_verdict_whatever_it_claims(lambda a, r=rail, k=asked: r.verify(a, VerifyContext(NOW, k)),
                                                  anchor)  # fmt: skip
        assert (verdict.outcome, verdict.code) == ("pending", DEPTH_INSUFFICIENT)
        assert (verdict.observed_depth, verdict.required_depth) == (1, 2)


def test_btc_pending_only_proof_is_never_verified_whatever_it_claims() -> None:
    anchor = ots_anchor(sha256(INCOMPLETE), INCOMPLETE_OTS)
    verdict = same_verdict_whatever_it_claims(
        lambda a: btc_rail().verify(a, VerifyContext(NOW)), anchor
    )
    assert (verdict.outcome, verdict.code) == ("pending", "ots_pending_only")
    claimed = dataclasses.replace(anchor, status="verified", finality=Finality(6, 1, "final"))
    assert judged(claimed, verdict, now=NOW, prior=None).status == "submitted"
    # A forged one, for another digest, likewise (no headers needed to say so).
    forged = Anchor("btc:mainnet", sha256(b"x"), evidence=forged_ots_evidence(sha256(b"x")))
    assert btc_rail().verify(forged, VerifyContext(NOW)).code == "ots_pending_only"


def test_btc_without_the_headers_it_needs_is_unchecked(tmp_path: Path) -> None:
    empty = tmp_path / "headers.txt"
    empty.write_text("")
    anchor = ots_anchor(sha256(HELLO), HELLO_OTS)
    verdict = same_verdict_whatever_it_claims(
        lambda a: btc_rail(empty).verify(a, VerifyContext(NOW)), anchor
    )
    assert (verdict.outcome, verdict.code) == ("unchecked", "btc_header_unavailable")
    claimed = dataclasses.replace(anchor, status="verified", finality=Finality(6, 1, "final"))
    assert judged(claimed, verdict, now=NOW, prior=None).status == "submitted"
    # A made-up attestation at a height this node has no header for: the same.
    forged = Anchor("btc:mainnet", sha256(b"y"),
                    evidence=forged_ots_evidence(sha256(b"y"), bitcoin_height=358391 + 10))  # fmt: skip
    assert btc_rail().verify(forged, VerifyContext(NOW)).outcome == "unchecked"


# --------------------------------------------------------------------------
# From verdict to stored status
# --------------------------------------------------------------------------

OK = Verdict.ok("v", observed_depth=3, required_depth=3, block_number=7, anchor_ts=5)
SHALLOW = Verdict.pending(DEPTH_INSUFFICIENT, "2 < 3", "v", observed_depth=2, required_depth=3)
NOT_YET = Verdict.pending("ots_pending_only", "calendar promise", "v")
FALSE = Verdict.failed("tsa_signature_invalid", "bad", "v")
LOST = Verdict.failed("evm_tx_unknown", "gone", "v", lost=True)
MOVED = dataclasses.replace(OK, lost=True, message="moved")
UNKNOWN = Verdict.unchecked("btc_header_unavailable", "no header")


@pytest.mark.parametrize(("verdict", "prior", "stored"), [
    (OK, None, "verified"), (SHALLOW, None, "submitted"), (NOT_YET, None, "submitted"),
    (FALSE, None, "failed"), (UNKNOWN, None, "submitted"), (MOVED, None, "verified"),
    (OK, "submitted", "verified"), (SHALLOW, "submitted", "submitted"),
    (FALSE, "submitted", "failed"), (LOST, "submitted", "failed"), (UNKNOWN, "submitted", "submitted"),
    (OK, "verified", "verified"), (SHALLOW, "verified", "verified"), (NOT_YET, "verified", "reorged"),
    (FALSE, "verified", "failed"), (LOST, "verified", "reorged"), (MOVED, "verified", "reorged"),
    (UNKNOWN, "verified", "verified"),
    (OK, "failed", "failed"), (OK, "reorged", "reorged"),
])  # fmt: skip
def test_the_stored_status_comes_from_verdicts_only(
    verdict: Verdict, prior: Any, stored: str
) -> None:
    for claim in claims(Anchor("rfc3161:tsa", bytes(32), tx_ref="t")):
        out = judged(claim, verdict, now=NOW, prior=prior)
        assert out.status == stored, (claim.status, claim.finality)
        if stored == "verified" and prior is None:
            assert out.finality == Finality(3, 3, "final") and out.block_number == 7
        if prior == "verified" and verdict is SHALLOW:  # only this node's requirement grew
            assert out.finality == Finality(2, 3, "pending")


# --------------------------------------------------------------------------
# Countersigning: what a node stands behind
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("verdict", "facts", "code"), [
    (OK, {"block_number": 7, "anchor_ts": 5}, None),
    (OK, {"block_number": 7, "anchor_ts": 4}, "anchor_claim_facts_mismatch"),
    (OK, {"block_number": 6, "anchor_ts": 5}, "anchor_claim_facts_mismatch"),
    (MOVED, {"block_number": 7, "anchor_ts": 5}, "anchor_claim_facts_mismatch"),
    (SHALLOW, {}, "anchor_claim_depth_insufficient"),
    (NOT_YET, {}, "anchor_claim_unverified"),
    (FALSE, {}, "anchor_claim_unverified"),
    (UNKNOWN, {}, "anchor_claim_unchecked"),
])  # fmt: skip
def test_a_claim_is_countersigned_only_on_a_verified_verdict_with_its_facts(
    verdict: Verdict, facts: dict[str, Any], code: str | None
) -> None:
    from remembrancer.federation.countersigning import judge_claim

    for claim in claims(Anchor("eip155:1", bytes(32), tx_ref="t", **facts)):
        refusal = judge_claim(claim, verdict)
        assert (refusal[0] if refusal else None) == code, (claim.status, claim.finality)
