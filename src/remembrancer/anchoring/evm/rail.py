"""The ``eip155:<chain id>`` rail: keys, fees, submission and verification (rules in the package docstring).

:class:`EvmRail` judges an anchor from its evidence and this node's own
settings only (never the anchor's ``status`` or ``finality``).
``eth-account`` signs transactions; it is imported only when a key is
configured or used, so the rail imports without it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import stat
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    VERIFIED,
    RailError,
    Verdict,
    VerifyContext,
)
from remembrancer.anchoring.evm.calldata import anchor_calldata, chain_id_of, parse_calldata
from remembrancer.anchoring.evm.rpc import JsonRpcClient, rpc_data, rpc_quantity
from remembrancer.anchoring.settings import EvmSettings, rail_settings
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_GWEI = 10**9
_POLL_SECONDS = 0.2
# Verdicts on mined transactions, kept with the chain head they were reached at
# (see EvmRail._judge_at_head); least recently used first out.
_RECALL_MAX = 4096


def _eth_account() -> ModuleType:
    # eth-account imports py_ecc, which raises the interpreter's recursion limit
    # to 100,000 for its own use; that would let deeply nested input overflow
    # the C stack in the json module elsewhere in the node.  Restore the limit.
    limit = sys.getrecursionlimit()
    try:
        return importlib.import_module("eth_account")
    except ImportError as e:
        raise ConfigError(
            "the EVM rail signs with eth-account; install the 'evm' extra: "
            "pip install 'remembrancer[evm]'",
            code="rail_dependency_missing",
        ) from e
    finally:
        sys.setrecursionlimit(limit)


def _config_error(target: str, message: str) -> ConfigError:
    return ConfigError(
        f"anchoring.{target.replace(':', '.', 1)}: {message}", code="evm_config_invalid"
    )


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class _Mined:
    block_number: int
    block_hash: str
    transaction_index: int
    timestamp: int


class EvmRail:
    """Anchors digests as ``RV || digest`` calldata on one EVM chain (see the module doc)."""

    def __init__(
        self,
        target: str,
        *,
        rpc: str,
        key_file: str | os.PathLike[str] | None = None,
        key_env: str | None = None,
        to: str | None = None,
        senders: tuple[str, ...] = (),
        confirmations: int = 1,
        timeout: float = 10.0,
        receipt_wait: float = 5.0,
        gas_price: Literal["auto", "eip1559", "legacy"] = "auto",
        max_fee_gwei: float | None = None,
        gas_limit: int | None = None,
    ) -> None:
        self.target = target
        self.chain_id = chain_id_of(target)
        if key_file is not None and key_env is not None:
            raise _config_error(target, "set key_file or key_env, not both")
        self.key_file = Path(key_file).expanduser() if key_file is not None else None
        self.key_env = key_env
        self.to = to.lower() if to else None
        self.senders = frozenset(s.lower() for s in senders)
        self.confirmations = confirmations
        self.receipt_wait = receipt_wait
        self.gas_price = gas_price
        self.max_fee_gwei = max_fee_gwei
        self.gas_limit = gas_limit
        self.client = JsonRpcClient(rpc, timeout=timeout)
        self._lock = threading.Lock()
        self._client_version: str | None = None
        self._recall: OrderedDict[tuple[str, bytes, str, int], tuple[str, Verdict]] = OrderedDict()
        self._recall_lock = threading.Lock()
        if self.can_submit:
            _eth_account()  # fail at start-up, naming the extra, rather than at the first anchor

    @classmethod
    def from_config(cls, target: str, settings: EvmSettings | Mapping[str, Any]) -> EvmRail:
        """Build from ``anchoring.eip155."<chain id>"`` settings (:class:`EvmSettings`)."""
        chain_id_of(target)
        s = rail_settings(target, settings, EvmSettings)
        return cls(
            target, rpc=s.rpc, key_file=s.key_file, key_env=s.key_env, to=s.to,
            senders=s.senders, confirmations=s.confirmations, timeout=s.timeout,
            receipt_wait=s.receipt_wait, gas_price=s.gas_price, max_fee_gwei=s.max_fee_gwei,
            gas_limit=s.gas_limit,
        )  # fmt: skip

    @property
    def can_submit(self) -> bool:
        return self.key_file is not None or self.key_env is not None

    # --- the key --------------------------------------------------------------------------
    def _load_key(self) -> str:
        """The private key as 0x-hex, read now (never cached, never logged)."""
        if self.key_file is not None:
            source = f"key file {self.key_file}"
            try:
                st = self.key_file.stat()
                if os.name == "posix" and st.st_mode & 0o077:
                    raise RailError(
                        f"{source} is accessible by group or others (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it",
                        code="evm_key_insecure",
                        error_class="auth",
                    )
                text = self.key_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise RailError(
                    f"cannot read {source}: {e.strerror or e}",
                    code="evm_key_unreadable",
                    error_class="auth",
                ) from e
            except UnicodeDecodeError as e:
                raise RailError(
                    f"{source} is not a 0x-hex secp256k1 private key",
                    code="evm_key_invalid",
                    error_class="auth",
                ) from e
        elif self.key_env is not None:
            source = f"environment variable {self.key_env}"
            text = os.environ.get(self.key_env, "").strip()
            if not text:
                raise RailError(f"{source} is not set", code="evm_key_missing", error_class="auth")
        else:
            raise RailError(
                f"{self.target} is verify-only: configure key_file or key_env to anchor",
                code="evm_key_missing",
                error_class="auth",
            )
        if not _KEY.match(text) or int(text, 16) == 0:
            raise RailError(
                f"{source} is not a 0x-hex secp256k1 private key",
                code="evm_key_invalid",
                error_class="auth",
            )
        return text if text.startswith("0x") else "0x" + text

    def _account(self) -> Any:
        eth_account = _eth_account()
        key = self._load_key()
        try:
            return eth_account.Account.from_key(key)
        except Exception as e:  # eth-keys: ValidationError for a key outside the curve order
            raise RailError(
                "the configured key is not a valid secp256k1 private key",
                code="evm_key_invalid",
                error_class="auth",
            ) from e

    def address(self) -> str:
        """The sender address of the configured key (lowercase 0x-hex)."""
        return str(self._account().address).lower()

    # --- node helpers ---------------------------------------------------------------------
    def _check_chain(self) -> None:
        node_chain = rpc_quantity(self.client.call("eth_chainId"), "chain id")
        if node_chain != self.chain_id:
            raise RailError(
                f"target {self.target} expects chain id {self.chain_id} but the node at "
                f"{self.client.display} serves chain id {node_chain}",
                code="evm_chain_mismatch",
                error_class="validation",
                details={"expected": self.chain_id, "actual": node_chain},
            )

    def _verifier(self) -> str:
        if self._client_version is None:
            try:
                version = self.client.call("web3_clientVersion")
                self._client_version = str(version)[:80] if version else "unknown"
            except RailError:
                return "remembrancer.evm calldata RV||digest via JSON-RPC"
        return f"remembrancer.evm calldata RV||digest via {self._client_version}"

    def _block(self, ref: int | str) -> dict[str, Any] | None:
        tag = hex(ref) if isinstance(ref, int) else ref
        block = self.client.call("eth_getBlockByNumber", [tag, False])
        if block is not None and not isinstance(block, dict):
            raise RailError(
                "the node returned a malformed block",
                code="evm_rpc_malformed",
                error_class="transient",
            )
        return block

    def _fees(self) -> dict[str, int]:
        policy = self.gas_price
        latest = self._block("latest") if policy != "legacy" else None
        base_fee = latest.get("baseFeePerGas") if latest else None
        if policy == "eip1559" and base_fee is None:
            raise RailError(
                f"gas_price is eip1559 but {self.target} has no base fee (pre-London chain)",
                code="evm_fee_policy",
                error_class="validation",
            )
        if base_fee is not None and policy in ("auto", "eip1559"):
            base = rpc_quantity(base_fee, "base fee")
            try:
                tip = rpc_quantity(self.client.call("eth_maxPriorityFeePerGas"), "priority fee")
            except RailError as e:
                if e.code != "evm_rpc_error":
                    raise
                tip = _GWEI  # the node lacks the method: a customary 1 gwei tip
            fees = {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}
            highest = fees["maxFeePerGas"]
        else:
            fees = {"gasPrice": rpc_quantity(self.client.call("eth_gasPrice"), "gas price")}
            highest = fees["gasPrice"]
        if self.max_fee_gwei is not None and highest > self.max_fee_gwei * _GWEI:
            raise RailError(
                f"the fee per gas on {self.target} ({highest / _GWEI:.3f} gwei) is above "
                f"max_fee_gwei ({self.max_fee_gwei})",
                code="evm_fee_too_high",
                error_class="transient",
                details={"fee_wei": highest},
            )
        return fees

    # --- submit ---------------------------------------------------------------------------
    def submit(self, digest: bytes, *, now: int) -> Anchor:
        """Send ``RV || digest`` in a signed transaction; return it ``submitted``.

        Waits up to ``receipt_wait`` seconds for the receipt: when mined, the
        anchor carries the block fields, ``anchorTs`` and its current depth;
        otherwise only the transaction hash.  It never returns ``verified``:
        the required depth is the cadence's, given to :meth:`verify`.
        """
        data = anchor_calldata(digest)
        account = self._account()
        sender = str(account.address).lower()
        to = self.to or sender
        with self._lock:  # one nonce at a time per rail
            self._check_chain()
            nonce = rpc_quantity(
                self.client.call("eth_getTransactionCount", [sender, "pending"]), "nonce"
            )
            fees = self._fees()
            gas = self.gas_limit or rpc_quantity(
                self.client.call(
                    "eth_estimateGas",
                    [{"from": sender, "to": to, "value": "0x0", "data": "0x" + data.hex()}],
                ),
                "gas estimate",
            )
            tx: dict[str, Any] = {
                "chainId": self.chain_id,
                "nonce": nonce,
                "to": bytes.fromhex(to[2:]),
                "value": 0,
                "data": data,
                "gas": gas,
                **fees,
            }
            if "maxFeePerGas" in fees:
                tx["type"] = 2
            signed = account.sign_transaction(tx)
            raw = getattr(signed, "raw_transaction", None) or signed.rawTransaction
            tx_hash = "0x" + bytes(signed.hash).hex()
            try:
                sent = self.client.call("eth_sendRawTransaction", ["0x" + bytes(raw).hex()])
            except RailError as e:
                if "already known" not in str(e.details.get("rpc_message", "")).lower():
                    raise
                sent = tx_hash  # the same signed transaction is already in the pool
        if _lower(sent) != tx_hash:
            raise RailError(
                f"the node acknowledged transaction {str(sent)[:80]!r}, expected {tx_hash}",
                code="evm_rpc_malformed",
                error_class="transient",
                details={"txHash": tx_hash},
            )
        receipt = self._wait_receipt(tx_hash)
        evidence: dict[str, Any] = {
            "chainId": self.chain_id,
            "txHash": tx_hash,
            "from": sender,
            "to": to,
            "blockNumber": None,
            "blockHash": None,
            "transactionIndex": None,
        }
        anchor = Anchor(
            target=self.target,
            root=bytes(digest),
            status="submitted",
            tx_ref=tx_hash,
            observed_at=now,
            verifier=self._verifier(),
            finality=Finality(0, self.confirmations, "pending"),
            evidence=evidence,
        )
        if receipt is None:
            return anchor
        if rpc_quantity(receipt.get("status"), "receipt status") != 1:
            raise RailError(
                f"anchor transaction {tx_hash} was mined but reverted",
                code="evm_tx_reverted",
                error_class="validation",
                details={"txHash": tx_hash},
            )
        mined = self._mined(receipt)
        if mined is None:
            return anchor
        head = rpc_quantity(self.client.call("eth_blockNumber"), "block number")
        return self._with_block(anchor, mined, head, self.confirmations, "submitted")

    def _wait_receipt(self, tx_hash: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.receipt_wait
        while True:
            receipt = self.client.call("eth_getTransactionReceipt", [tx_hash])
            if isinstance(receipt, dict) and receipt.get("blockHash"):
                return receipt
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _mined(self, receipt: Mapping[str, Any]) -> _Mined | None:
        """Block facts of a receipt, confirmed against the canonical block at its height."""
        number = rpc_quantity(receipt.get("blockNumber"), "block number")
        block_hash = _lower(receipt.get("blockHash"))
        block = self._block(number)
        if block is None or _lower(block.get("hash")) != block_hash or block_hash is None:
            return None  # the node's view moved between the two calls: not mined for now
        return _Mined(
            number,
            block_hash,
            rpc_quantity(receipt.get("transactionIndex"), "transaction index"),
            rpc_quantity(block.get("timestamp"), "block timestamp"),
        )

    def _with_block(
        self,
        anchor: Anchor,
        mined: _Mined,
        head: int,
        required: int,
        status: Literal["submitted", "verified"],
    ) -> Anchor:
        depth = max(0, head - mined.block_number + 1)
        evidence = {
            **anchor.evidence,
            "blockNumber": mined.block_number,
            "blockHash": mined.block_hash,
            "transactionIndex": mined.transaction_index,
        }
        final = status == "verified" and depth >= required
        state: Literal["pending", "final"] = "final" if final else "pending"
        return anchor.moved(
            status,
            block_number=mined.block_number,
            anchor_ts=mined.timestamp,
            finality=Finality(depth, required, state),
            evidence=evidence,
            error=None,
        )

    # --- verify ---------------------------------------------------------------------------
    def verify(self, anchor: Anchor, ctx: VerifyContext) -> Verdict:
        """Judge ``anchor``'s evidence against the node (see the module doc for
        every check).  The required depth is ``max(confirmations,
        ctx.required_depth)``; the anchor's own status and finality are never read."""
        required = max(self.confirmations, ctx.required_depth)
        if anchor.target != self.target:
            return Verdict.unchecked(
                "evm_target_mismatch",
                f"the {self.target} rail cannot verify an anchor for {anchor.target}",
                required_depth=required,
            )
        try:
            return self._judge_at_head(anchor, required)
        except RailError as e:
            return Verdict.unchecked(e.code, e.message, required_depth=required)

    def _judge_at_head(self, anchor: Anchor, required: int) -> Verdict:
        """:meth:`_judge`, or its verdict on the same anchor at the same chain head.

        A chain head's hash commits to every block up to it, so while the head
        is the one a verdict on a mined transaction was reached at, the
        transaction, its block, its receipt and its depth are what they were:
        the verdict stands, for one RPC call (the head) instead of six.  Only
        verdicts about a mined transaction are kept (verified, or not deep
        enough), and only when their depth is the one that head gives; a
        verdict that depends on the node's pool (not mined, unknown) is
        reached again every time.  Malformed evidence is refused before the
        node is asked anything."""
        fault = self._judge(anchor, required, evidence_only=True)
        if fault is not None:
            return fault
        head = self._block("latest")
        head_hash = _lower(head.get("hash")) if head else None
        number = head.get("number") if head else None
        if head_hash is None or not _HASH.match(head_hash) or not isinstance(number, str):
            return self._judged(anchor, required)  # no head to key on: judge every time
        try:
            head_number = rpc_quantity(number, "block number")
        except RailError:
            return self._judged(anchor, required)
        evidence = json.dumps(dict(anchor.evidence), sort_keys=True, default=str)
        key = (anchor.tx_ref.lower(), anchor.root, evidence, required)
        with self._recall_lock:
            kept = self._recall.get(key)
            if kept is not None and kept[0] == head_hash:
                self._recall.move_to_end(key)
                return kept[1]
        verdict = self._judged(anchor, required)
        if (
            verdict.code in (VERIFIED, DEPTH_INSUFFICIENT)
            and not verdict.lost
            and verdict.block_number is not None
            and verdict.observed_depth == head_number - verdict.block_number + 1
        ):
            with self._recall_lock:
                self._recall[key] = (head_hash, verdict)
                self._recall.move_to_end(key)
                while len(self._recall) > _RECALL_MAX:
                    self._recall.popitem(last=False)
        return verdict

    def _judged(self, anchor: Anchor, required: int) -> Verdict:
        verdict = self._judge(anchor, required)
        assert verdict is not None  # only evidence_only answers None
        return verdict

    def _judge(
        self, anchor: Anchor, required: int, *, evidence_only: bool = False
    ) -> Verdict | None:
        """The verdict on ``anchor``; with ``evidence_only``, only the checks of
        the evidence's own form (no chain asked): their failure, or None."""
        verifier = self._verifier()
        lost_reason = ""

        def failed(code: str, reason: str, lost: bool = False) -> Verdict:
            return Verdict.failed(code, lost_reason + reason, verifier,
                                  required_depth=required, lost=lost)  # fmt: skip

        ev = anchor.evidence
        tx_hash = anchor.tx_ref.lower()
        if not _HASH.match(tx_hash) or _lower(ev.get("txHash")) != tx_hash:
            return failed(
                "evm_evidence_malformed",
                "evidence: txHash is missing, malformed or differs from txRef",
            )
        if ev.get("chainId") != self.chain_id:
            return failed(
                "evm_evidence_malformed",
                f"evidence: chainId {ev.get('chainId')!r} is not the target's {self.chain_id}",
            )
        recorded_from = _lower(ev.get("from"))
        recorded_to = _lower(ev.get("to"))
        if recorded_from is None or not _ADDRESS.match(recorded_from):
            return failed("evm_evidence_malformed", "evidence: from is missing or malformed")
        if recorded_to is None or not _ADDRESS.match(recorded_to):
            return failed("evm_evidence_malformed", "evidence: to is missing or malformed")
        recorded_number = ev.get("blockNumber")
        recorded_hash = _lower(ev.get("blockHash"))
        has_block = type(recorded_number) is int and recorded_hash is not None
        if evidence_only:
            return None

        self._check_chain()

        # Reorg check: is the recorded block still the canonical one at its height?
        lost = False
        if has_block:
            assert isinstance(recorded_number, int)
            canonical = self._block(recorded_number)
            canonical_hash = _lower(canonical.get("hash")) if canonical else None
            if canonical_hash != recorded_hash:
                lost = True
                lost_reason = (
                    f"block {recorded_number} is now {canonical_hash or 'missing'}, "
                    f"not the recorded {recorded_hash}; "
                )

        tx = self.client.call("eth_getTransactionByHash", [tx_hash])
        if tx is None:
            return failed(
                "evm_tx_unknown",
                f"transaction {tx_hash} is unknown to the node (dropped, or reorged out)",
                lost=True,
            )
        if not isinstance(tx, dict):
            raise RailError(
                "the node returned a malformed transaction",
                code="evm_rpc_malformed",
                error_class="transient",
            )

        # What the transaction says, independent of the block it is in.
        if "chainId" not in tx or tx["chainId"] is None:
            return failed(
                "evm_tx_chain_mismatch",
                "transaction has no chain id (pre-EIP-155): replayable on any chain",
            )
        tx_chain = rpc_quantity(tx["chainId"], "transaction chain id")
        if tx_chain != self.chain_id:
            return failed(
                "evm_tx_chain_mismatch",
                f"transaction chain id {tx_chain} is not the target's {self.chain_id}",
            )
        if _lower(tx.get("hash")) not in (None, tx_hash):
            raise RailError(
                "the node returned another transaction than the one asked for",
                code="evm_rpc_malformed",
                error_class="transient",
            )
        tx_from = _lower(tx.get("from"))
        if tx_from != recorded_from:
            return failed(
                "evm_sender_mismatch",
                f"sender mismatch: transaction from {tx_from}, evidence says {recorded_from}",
            )
        if self.senders and tx_from not in self.senders:
            return failed(
                "evm_sender_not_allowed", f"sender {tx_from} is not one of the configured senders"
            )
        tx_to = _lower(tx.get("to"))
        if tx_to != recorded_to:
            return failed(
                "evm_recipient_mismatch",
                f"recipient mismatch: transaction to {tx_to}, evidence says {recorded_to}",
            )
        if self.to is not None and tx_to != self.to:
            return failed(
                "evm_recipient_not_allowed",
                f"recipient {tx_to} is not the configured anchor address {self.to}",
            )
        data = rpc_data(tx.get("input", tx.get("data")), "transaction input")
        found = parse_calldata(data)
        if found is None:
            return failed("evm_calldata_invalid", f"calldata is not RV||digest ({len(data)} bytes)")
        if found != anchor.root:
            return failed(
                "evm_digest_mismatch",
                f"digest mismatch: the transaction commits {found.hex()}, "
                f"the anchor claims {anchor.root.hex()}",
            )

        unmined = {**ev, "blockNumber": None, "blockHash": None, "transactionIndex": None}
        if tx.get("blockHash") is None:
            return Verdict.pending(
                "evm_tx_not_mined",
                lost_reason + f"transaction {tx_hash} waits in the pool",
                verifier,
                required_depth=required,
                evidence=unmined,
                lost=has_block,
            )
        receipt = self.client.call("eth_getTransactionReceipt", [tx_hash])
        if not isinstance(receipt, dict) or not receipt.get("blockHash"):
            raise RailError(
                f"the node knows {tx_hash} as mined but has no receipt for it yet",
                code="evm_rpc_inconsistent",
                error_class="transient",
            )
        if rpc_quantity(receipt.get("status"), "receipt status") != 1:
            return failed("evm_tx_reverted", f"transaction {tx_hash} reverted (receipt status 0)")
        mined = self._mined(receipt)
        if mined is None:
            raise RailError(
                f"the node's chain moved while verifying {tx_hash}; retry",
                code="evm_rpc_inconsistent",
                error_class="transient",
            )
        if has_block and mined.block_hash != recorded_hash:
            lost = True
            if not lost_reason:
                lost_reason = f"transaction {tx_hash} moved to block {mined.block_hash}; "
        head = rpc_quantity(self.client.call("eth_blockNumber"), "block number")
        depth = max(0, head - mined.block_number + 1)
        facts: dict[str, Any] = {
            "observed_depth": depth,
            "required_depth": required,
            "block_number": mined.block_number,
            "anchor_ts": mined.timestamp,
            "evidence": {
                **ev,
                "blockNumber": mined.block_number,
                "blockHash": mined.block_hash,
                "transactionIndex": mined.transaction_index,
            },
            "lost": lost,
        }
        if depth >= required:
            return Verdict.ok(verifier, **facts)
        return Verdict.pending(
            DEPTH_INSUFFICIENT,
            lost_reason + f"{depth} confirmation(s), this node requires {required}",
            verifier,
            **facts,
        )
