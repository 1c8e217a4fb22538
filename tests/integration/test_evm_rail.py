"""The EVM rail against a real EVM node: anvil (Foundry), started per module.

anvil is found at ``$REMEMBRANCER_ANVIL`` or ``.cache/npm/node_modules/.bin/anvil``
(``bash .ci/install-anvil.sh`` puts it there).  Without it these tests skip,
except under CI (``CI`` set to a true value), where they fail.

anvil mines one block per transaction (automine), chain id 31337, and funds
its well-known development accounts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from remembrancer.anchoring.base import RailError, RailRegistry, VerifyContext, recheck
from remembrancer.anchoring.evm.rail import EvmRail
from remembrancer.anchoring.evm.rpc import JsonRpcClient
from remembrancer.core.anchor import Anchor, Finality

ROOT = Path(__file__).resolve().parents[2]
ANVIL_ENV = "REMEMBRANCER_ANVIL"
NPM_ANVIL = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "anvil"
CHAIN = 31337
TARGET = f"eip155:{CHAIN}"

# anvil's default development accounts (public test keys, funded with 10k ETH).
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDR0 = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
CHECKSUM0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
KEY1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ADDR1 = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
KEY2 = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"

# Init code that deploys the runtime 0x60006000fd (PUSH1 0, PUSH1 0, REVERT):
# CODECOPY 5 bytes from offset 12 to memory 0, RETURN them.
REVERTER_INIT = bytes.fromhex("6005600c60003960056000f3" + "60006000fd")


try:
    import eth_account
except ImportError:  # pragma: no cover - depends on the installed extras
    _why = "the EVM rail tests need the 'evm' extra (eth-account): pip install -e '.[evm]'"
    pytest.skip(_why, allow_module_level=True)


def _find_anvil() -> str | None:
    configured = os.environ.get(ANVIL_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else shutil.which(configured)
    return str(NPM_ANVIL) if os.access(NPM_ANVIL, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """A running anvil and a few helpers to drive it directly."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = JsonRpcClient(url, timeout=10)

    def rpc(self, method: str, *params: Any) -> Any:
        return self.client.call(method, list(params))

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def send(
        self, key: str, *, data: bytes, to: str | None = None, gas: int | None = None
    ) -> dict[str, Any]:
        """Sign and send a raw type-2 transaction; return its receipt (automine: soon)."""
        account = eth_account.Account.from_key(key)
        sender = account.address.lower()
        nonce = int(self.rpc("eth_getTransactionCount", sender, "pending"), 16)
        tx: dict[str, Any] = {
            "chainId": CHAIN,
            "nonce": nonce,
            "value": 0,
            "data": data,
            "gas": gas or 200_000,
            "maxFeePerGas": 20 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "type": 2,
        }
        if to is not None:
            tx["to"] = bytes.fromhex(to[2:])
        signed = account.sign_transaction(tx)
        tx_hash = self.rpc("eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
        deadline = time.monotonic() + 5
        while (receipt := self.rpc("eth_getTransactionReceipt", tx_hash)) is None:
            assert time.monotonic() < deadline, "anvil automines: a receipt is expected soon"
            time.sleep(0.02)
        return dict(receipt)

    def anchor_for(self, receipt: dict[str, Any], root: bytes) -> Anchor:
        """An anchor claiming ``root`` with a receipt's transaction as evidence."""
        tx = self.rpc("eth_getTransactionByHash", receipt["transactionHash"])
        return Anchor(
            target=TARGET,
            root=root,
            status="submitted",
            tx_ref=receipt["transactionHash"],
            evidence={
                "chainId": CHAIN,
                "txHash": receipt["transactionHash"],
                "from": tx["from"],
                "to": tx["to"],
                "blockNumber": int(receipt["blockNumber"], 16),
                "blockHash": receipt["blockHash"],
                "transactionIndex": int(receipt["transactionIndex"], 16),
            },
        )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    binary = _find_anvil()
    if binary is None:
        reason = (
            f"anvil not found (set {ANVIL_ENV} or run `bash .ci/install-anvil.sh`, "
            f"which installs it at {NPM_ANVIL.relative_to(ROOT)})"
        )
        pytest.skip(reason)
    port = _free_port()
    log_path = tmp_path_factory.mktemp("anvil") / "anvil.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(CHAIN)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the npm wrapper spawns the binary: stop the whole group
        )
    n = Node(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert int(n.rpc("eth_chainId"), 16) == CHAIN
                break
            except RailError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"anvil did not start: {log_path.read_text(errors='replace')[-2000:]}"
                    )
                time.sleep(0.05)
        yield n
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "evm.key"
    path.write_text(KEY0 + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def rail(node: Node, key_file: Path) -> EvmRail:
    return EvmRail.from_config(TARGET, {"rpc": node.url, "key_file": str(key_file)})


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


# --- submit and finality ---------------------------------------------------------------------


def test_submit_records_the_transaction_and_waits_for_depth(node: Node, rail: EvmRail) -> None:
    d = digest("depth")
    anchor = rail.submit(d, now=1000)

    assert anchor.status == "submitted"
    assert anchor.target == TARGET and anchor.root == d and anchor.observed_at == 1000
    ev = anchor.evidence
    assert set(ev) == {
        "chainId", "txHash", "from", "to", "blockNumber", "blockHash", "transactionIndex",
    }  # fmt: skip
    assert ev["chainId"] == CHAIN and ev["txHash"] == anchor.tx_ref
    assert ev["from"] == ADDR0 and ev["to"] == ADDR0  # default: to the sender itself
    assert ev["blockNumber"] == anchor.block_number == node.head()
    block = node.rpc("eth_getBlockByNumber", hex(ev["blockNumber"]), False)
    assert ev["blockHash"] == block["hash"] and ev["transactionIndex"] == 0
    assert anchor.anchor_ts == int(block["timestamp"], 16)
    assert anchor.finality == Finality(1, 1, "pending")  # deep enough for the rail default...
    assert "anvil" in anchor.verifier

    # ...but submit never says verified: the cadence's depth decides.
    tx = node.rpc("eth_getTransactionByHash", anchor.tx_ref)
    assert tx["input"] == "0x" + (b"RV" + d).hex()
    assert len(bytes.fromhex(tx["input"][2:])) == 34 and tx["value"] == "0x0"

    ctx = VerifyContext(now=1001, required_depth=3)
    a1 = recheck(rail, anchor, ctx)
    assert a1.status == "submitted" and a1.finality == Finality(1, 3, "pending")
    assert a1.observed_at == 1001
    node.mine()
    a2 = recheck(rail, a1, ctx)
    assert a2.status == "submitted" and a2.finality == Finality(2, 3, "pending")
    node.mine()
    a3 = recheck(rail, a2, ctx)
    assert a3.status == "verified" and a3.finality == Finality(3, 3, "final")
    assert a3.error is None and a3.evidence == anchor.evidence

    # The stored form (JSON) verifies the same way, on a rail without a key.
    stored = Anchor.from_dict(json.loads(json.dumps(a3.to_dict())))
    verify_only = EvmRail.from_config(TARGET, {"rpc": node.url})
    node.mine()
    a4 = recheck(verify_only, stored, ctx)
    assert a4.status == "verified" and a4.finality == Finality(4, 3, "final")


def test_not_mined_within_the_wait_returns_submitted_without_block(
    node: Node, key_file: Path
) -> None:
    rail = EvmRail.from_config(
        TARGET, {"rpc": node.url, "key_file": str(key_file), "receipt_wait": 0.3}
    )
    node.rpc("evm_setAutomine", False)
    try:
        t0 = time.monotonic()
        anchor = rail.submit(digest("pool"), now=5)
        assert time.monotonic() - t0 < 5
        assert anchor.status == "submitted" and anchor.tx_ref
        assert anchor.block_number is None and anchor.anchor_ts is None
        assert anchor.evidence["blockHash"] is None and anchor.evidence["blockNumber"] is None
        pending = recheck(rail, anchor, VerifyContext(now=6, required_depth=1))
        assert pending.status == "submitted" and pending.finality == Finality(0, 1, "pending")
        node.mine()
    finally:
        node.rpc("evm_setAutomine", True)
    mined = recheck(rail, pending, VerifyContext(now=7, required_depth=1))
    assert mined.status == "verified" and mined.block_number == node.head()
    assert mined.evidence["blockHash"] and mined.anchor_ts is not None


def test_key_from_environment_and_legacy_gas_price(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RV_TEST_EVM_KEY", KEY1)
    rail = EvmRail.from_config(
        TARGET, {"rpc": node.url, "key_env": "RV_TEST_EVM_KEY", "gas_price": "legacy"}
    )
    anchor = rail.submit(digest("legacy"), now=1)
    tx = node.rpc("eth_getTransactionByHash", anchor.tx_ref)
    assert tx["type"] == "0x0" and int(tx["chainId"], 16) == CHAIN  # EIP-155 legacy
    assert anchor.evidence["from"] == ADDR1
    assert recheck(rail, anchor, VerifyContext(now=2)).status == "verified"


def test_fee_cap_refuses_to_overpay(node: Node, key_file: Path) -> None:
    rail = EvmRail.from_config(
        TARGET, {"rpc": node.url, "key_file": str(key_file), "max_fee_gwei": 0.001}
    )
    before = node.rpc("eth_getTransactionCount", ADDR0, "latest")
    with pytest.raises(RailError) as e:
        rail.submit(digest("cap"), now=1)
    assert e.value.code == "evm_fee_too_high" and e.value.error_class == "transient"
    assert node.rpc("eth_getTransactionCount", ADDR0, "latest") == before  # nothing sent


# --- what verify refuses ---------------------------------------------------------------------


def test_a_transaction_committing_another_digest_fails(node: Node, rail: EvmRail) -> None:
    claimed, sent = digest("claimed"), digest("actually sent")
    receipt = node.send(KEY0, data=b"RV" + sent, to=ADDR0)
    forged = node.anchor_for(receipt, claimed)
    out = recheck(rail, forged, VerifyContext(now=1, required_depth=1))
    assert out.status == "failed"
    assert "digest mismatch" in (out.error or "")
    assert sent.hex() in (out.error or "")
    # The same transaction does verify for the digest it carries.
    assert recheck(rail, node.anchor_for(receipt, sent), VerifyContext(now=1)).status == "verified"

    # Submitted by the rail, then claimed for another root: also refused.
    anchor = rail.submit(digest("mine"), now=1)
    swapped = dataclasses.replace(anchor, root=claimed)
    assert recheck(rail, swapped, VerifyContext(now=2)).status == "failed"


def test_calldata_without_the_rv_prefix_fails(node: Node, rail: EvmRail) -> None:
    d = digest("prefix")
    for data in (b"XX" + d, d, b"RV" + d + b"\x00"):
        receipt = node.send(KEY0, data=data, to=ADDR0)
        out = recheck(rail, node.anchor_for(receipt, d), VerifyContext(now=1))
        assert out.status == "failed" and "RV||digest" in (out.error or ""), data


def test_sender_and_recipient_must_match(node: Node, rail: EvmRail) -> None:
    anchor = rail.submit(digest("sender"), now=1)
    ctx = VerifyContext(now=2, required_depth=1)
    wrong_from = dataclasses.replace(anchor, evidence={**anchor.evidence, "from": ADDR1})
    out = recheck(rail, wrong_from, ctx)
    assert out.status == "failed" and "sender mismatch" in (out.error or "")
    wrong_to = dataclasses.replace(anchor, evidence={**anchor.evidence, "to": ADDR1})
    assert "recipient mismatch" in (recheck(rail, wrong_to, ctx).error or "")

    pinned = EvmRail.from_config(TARGET, {"rpc": node.url, "senders": [ADDR1]})
    out = recheck(pinned, anchor, ctx)
    assert out.status == "failed" and "configured senders" in (out.error or "")
    allowed = EvmRail.from_config(TARGET, {"rpc": node.url, "senders": [ADDR1, CHECKSUM0]})
    assert recheck(allowed, anchor, ctx).status == "verified"
    sink = EvmRail.from_config(TARGET, {"rpc": node.url, "to": ADDR1})
    assert "configured anchor address" in (recheck(sink, anchor, ctx).error or "")


def test_a_reverted_transaction_fails_and_never_verifies(
    node: Node, rail: EvmRail, key_file: Path
) -> None:
    deploy = node.send(KEY1, data=REVERTER_INIT)
    reverter = deploy["contractAddress"]
    assert node.rpc("eth_getCode", reverter, "latest") == "0x60006000fd"

    d = digest("reverted")
    receipt = node.send(KEY0, data=b"RV" + d, to=reverter, gas=60_000)
    assert receipt["status"] == "0x0"
    anchor = node.anchor_for(receipt, d)
    node.mine(3)
    out = recheck(rail, anchor, VerifyContext(now=1, required_depth=1))
    assert out.status == "failed" and "reverted" in (out.error or "")
    node.mine()
    assert recheck(rail, out, VerifyContext(now=2, required_depth=1)).status == "failed"

    # The rail itself refuses to anchor through a reverting recipient: the gas
    # estimate reverts, and with a fixed gas limit the mined revert is reported.
    to_reverter = {"rpc": node.url, "key_file": str(key_file), "to": reverter}
    with pytest.raises(RailError) as e:
        EvmRail.from_config(TARGET, to_reverter).submit(d, now=1)
    assert e.value.code == "evm_rpc_rejected" and e.value.error_class == "validation"
    assert "revert" in e.value.message
    with pytest.raises(RailError) as e:
        EvmRail.from_config(TARGET, {**to_reverter, "gas_limit": 60_000}).submit(d, now=1)
    assert e.value.code == "evm_tx_reverted" and e.value.error_class == "validation"
    assert e.value.details["txHash"].startswith("0x")


def test_insufficient_funds_is_a_validation_error(node: Node, tmp_path: Path) -> None:
    poor = tmp_path / "poor.key"
    poor.write_text("0x" + "11" * 32)
    poor.chmod(0o600)
    rail = EvmRail.from_config(TARGET, {"rpc": node.url, "key_file": str(poor)})
    with pytest.raises(RailError) as e:
        rail.submit(digest("poor"), now=1)
    assert e.value.error_class == "validation" and e.value.code == "evm_rpc_rejected"
    assert "funds" in e.value.message.lower()


# --- reorgs ----------------------------------------------------------------------------------


def test_snapshot_revert_reorg_makes_a_verified_anchor_reorged(node: Node, rail: EvmRail) -> None:
    snapshot = node.rpc("evm_snapshot")
    anchor = rail.submit(digest("reorg-snapshot"), now=1)
    node.mine(2)
    verified = recheck(rail, anchor, VerifyContext(now=2, required_depth=3))
    assert verified.status == "verified"
    height, recorded = verified.block_number, verified.evidence["blockHash"]
    assert height is not None

    # The competing branch: back to before the anchor, then other blocks at the
    # same heights (another transaction, later timestamps).
    assert node.rpc("evm_revert", snapshot) is True
    latest = node.rpc("eth_getBlockByNumber", "latest", False)
    node.rpc("evm_setNextBlockTimestamp", hex(int(latest["timestamp"], 16) + 1000))
    node.send(KEY2, data=b"other branch", to=ADDR1)
    node.mine(4)
    assert node.rpc("eth_getBlockByNumber", hex(height), False)["hash"] != recorded
    assert node.rpc("eth_getTransactionByHash", anchor.tx_ref) is None

    out = recheck(rail, verified, VerifyContext(now=3, required_depth=3))
    assert out.status == "reorged"
    assert out.finality.state == "lost" and recorded in (out.error or "")
    # reorged is final
    assert recheck(rail, out, VerifyContext(now=4, required_depth=3)) == out


def test_anvil_reorg_makes_a_verified_anchor_reorged(node: Node, rail: EvmRail) -> None:
    anchor = rail.submit(digest("reorg-anvil"), now=1)
    node.mine(2)
    verified = recheck(rail, anchor, VerifyContext(now=2, required_depth=3))
    assert verified.status == "verified"
    node.rpc("anvil_reorg", 4, [])  # replace the last 4 blocks (the anchor's among them)
    out = recheck(rail, verified, VerifyContext(now=3, required_depth=3))
    assert out.status == "reorged"


def test_a_submitted_anchor_reorged_out_before_its_depth_fails(node: Node, rail: EvmRail) -> None:
    snapshot = node.rpc("evm_snapshot")
    anchor = rail.submit(digest("reorg-early"), now=1)
    waiting = recheck(rail, anchor, VerifyContext(now=2, required_depth=10))
    assert waiting.status == "submitted"
    node.rpc("evm_revert", snapshot)
    node.send(KEY2, data=b"other", to=ADDR1)
    out = recheck(rail, waiting, VerifyContext(now=3, required_depth=10))
    # submitted -> reorged is not a transition of the status machine: failed, finality lost
    assert out.status == "failed" and out.finality.state == "lost"
    assert "unknown to the node" in (out.error or "")


# --- the node and the target -----------------------------------------------------------------


def test_a_target_for_another_chain_is_refused(node: Node, key_file: Path) -> None:
    mainnet = EvmRail.from_config("eip155:1", {"rpc": node.url, "key_file": str(key_file)})
    before = node.rpc("eth_getTransactionCount", ADDR0, "latest")
    with pytest.raises(RailError) as e:
        mainnet.submit(digest("wrong chain"), now=1)
    assert e.value.code == "evm_chain_mismatch" and e.value.error_class == "validation"
    assert e.value.details == {"expected": 1, "actual": CHAIN}
    assert "31337" in e.value.message
    assert node.rpc("eth_getTransactionCount", ADDR0, "latest") == before

    # An anchor recorded for eip155:1 cannot be judged against chain 31337 either.
    local = EvmRail.from_config(TARGET, {"rpc": node.url, "key_file": str(key_file)})
    a = local.submit(digest("for mainnet?"), now=1)
    claimed = Anchor.from_dict({**a.to_dict(), "target": "eip155:1"})
    claimed = dataclasses.replace(claimed, evidence={**claimed.evidence, "chainId": 1})
    verdict = mainnet.verify(claimed, VerifyContext(now=2))
    assert verdict.outcome == "unchecked" and verdict.code == "evm_chain_mismatch"
    # and the 31337 rail does not verify anchors of another target
    verdict = local.verify(claimed, VerifyContext(now=2))
    assert verdict.outcome == "unchecked" and verdict.code == "evm_target_mismatch"
    # unchecked is never verified, whatever the claim says
    assert recheck(local, dataclasses.replace(claimed, status="submitted"),
                   VerifyContext(now=2)).status == "submitted"  # fmt: skip


def test_an_unreachable_node_is_transient(key_file: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    rail = EvmRail.from_config(TARGET, {"rpc": url, "key_file": str(key_file), "timeout": 2})
    with pytest.raises(RailError) as e:
        rail.submit(digest("down"), now=1)
    assert e.value.error_class == "transient" and e.value.code == "evm_rpc_unreachable"
    anchor = Anchor(
        target=TARGET,
        root=digest("down"),
        status="submitted",
        tx_ref="0x" + "ab" * 32,
        evidence={"chainId": CHAIN, "txHash": "0x" + "ab" * 32, "from": ADDR0, "to": ADDR0},
    )
    verdict = rail.verify(anchor, VerifyContext(now=1))
    assert verdict.outcome == "unchecked" and verdict.code == "evm_rpc_unreachable"


def test_the_registry_builds_the_rail(node: Node, key_file: Path) -> None:
    registry = RailRegistry(
        config={"eip155": {str(CHAIN): {"rpc": node.url, "key_file": str(key_file)}}}
    )
    rail = registry.get(TARGET)
    assert isinstance(rail, EvmRail) and rail.target == TARGET
    anchor = rail.submit(digest("registry"), now=1)
    assert recheck(rail, anchor, VerifyContext(now=2, required_depth=1)).status == "verified"


def test_a_verdict_at_an_unchanged_head_costs_one_call(node: Node, rail: EvmRail) -> None:
    """Re-verifying a mined anchor while the chain head stays the same asks
    the node for the head only; a new block, or another block at the same
    height (a reorg), makes the rail judge the evidence again."""
    anchor = rail.submit(digest("recall"), now=1)
    ctx = VerifyContext(now=2, required_depth=3)
    calls: list[str] = []
    real = rail.client.call

    def counted(method: str, params: list[Any] | None = None) -> Any:
        calls.append(method)
        return real(method, params)

    rail.client.call = counted  # type: ignore[method-assign]
    first = rail.verify(anchor, ctx)
    assert first.code == "anchor_depth_insufficient" and first.observed_depth == 1
    assert len(calls) > 3
    calls.clear()
    assert rail.verify(anchor, ctx) == first and calls == ["eth_getBlockByNumber"]
    node.mine()
    calls.clear()
    again = rail.verify(anchor, ctx)
    assert again.observed_depth == 2 and len(calls) > 3
    node.mine()
    verified = recheck(rail, anchor, ctx)
    assert verified.status == "verified"
    node.rpc("anvil_reorg", 3, [])  # the same height, other blocks (the anchor's among them)
    calls.clear()
    assert recheck(rail, verified, ctx).status == "reorged" and len(calls) > 1
