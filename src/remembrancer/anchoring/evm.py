"""The EVM rail: anchors a digest on any EIP-155 chain (target ``eip155:<chain id>``).

Commitment
----------
One transaction per anchor whose **calldata is exactly** ``b"RV" + digest``
(34 bytes: ASCII ``RV``, then the 32-byte digest), value 0, sent to the
configured ``to`` address or, by default, to the sender itself.  The same
``RV || digest`` layout as the Bitcoin OP_RETURN rail.

Calldata rather than the seed's anchor contract (``anchor(bytes32 root,
bytes32 batchId, string memo, bool persist)`` emitting ``BatchAnchored``):

- no contract to deploy, audit or keep the address of: any EVM chain works
  with nothing but a funded key;
- the digest is in the transaction itself, which every node keeps; no event
  log (pruned by some clients and providers) is needed to verify it;
- it is the cheapest commitment (about 22.4k gas after EIP-7623).

Evidence (``Anchor.evidence``), lowercase hex, integers as JSON numbers::

    {chainId, txHash, from, to, blockNumber, blockHash, transactionIndex}

``blockNumber``/``blockHash``/``transactionIndex`` are ``null`` while the
transaction is not mined.  ``txRef`` is the transaction hash and ``anchorTs``
the block's timestamp.

Verification (``verify``), against the node's current view, gives a
:class:`~remembrancer.anchoring.base.Verdict` from the evidence alone (the
anchor's ``status`` and ``finality`` are never read):

- the node serves the target's chain (else ``unchecked``, code
  ``evm_chain_mismatch``: the rail cannot judge the anchor there; likewise
  an unreachable node or an inconsistent answer);
- the transaction exists, carries the target's chain id (EIP-155 / typed),
  was sent by the recorded ``from`` (and, if ``senders`` is configured, by
  one of those addresses), to the recorded ``to`` (and to the configured
  ``to`` when there is one), with calldata ``RV || root``; any mismatch is
  ``failed`` with its own code (``evm_sender_mismatch``,
  ``evm_digest_mismatch``, ...);
- its receipt has status 1 (a reverted transaction is ``failed``);
- confirmations ``head - block + 1`` against ``max(confirmations,
  ctx.required_depth)``, both this node's settings: below it the verdict is
  ``pending`` (``anchor_depth_insufficient``), at or above it ``verified``;
  a transaction still in the pool is ``pending`` (``evm_tx_not_mined``);
- the block recorded in the evidence is still the canonical one at its
  height; if not (or the transaction vanished or moved), the verdict is
  ``lost``, and :func:`~remembrancer.anchoring.base.judged` makes an anchor
  this node had verified ``reorged`` (the scheduler anchors again).  The
  verdict carries the evidence refreshed with the block the transaction is
  in now.

Only the sender check of the *recorded* address is implicit: a federation
peer verifies anchors sent with other nodes' keys, so the rail's own key is
never assumed to be the sender.  List the accepted addresses in ``senders``
to pin them (including retired keys).

Settings (``anchoring.eip155."<chain id>"``)::

    rpc:           JSON-RPC URL (http/https; user:password@ becomes Basic auth)
    key_file:      file holding the secp256k1 private key as 0x-hex; read at
                   each submission, refused if group/other may read it
    key_env:       or: name of an environment variable holding the key
                   (neither: a verify-only rail)
    to:            address receiving the anchor transactions (default: sender)
    senders:       addresses accepted as senders when verifying (default: any,
                   as recorded)
    confirmations: the least depth this node accepts for any anchor of the
                   target, its own or a peer's (default 1); a cadence level
                   may ask for more
    timeout:       seconds per JSON-RPC request (default 10)
    receipt_wait:  seconds submit waits for the receipt (default 5); when it
                   is not mined by then, the anchor is returned ``submitted``
                   without block fields
    gas_price:     auto (EIP-1559 when the latest block has a base fee, else
                   legacy) | eip1559 | legacy (eth_gasPrice)
    max_fee_gwei:  refuse to submit (transient) when the fee per gas would
                   exceed this
    gas_limit:     fixed gas limit (default: eth_estimateGas)

Errors: an unreachable node, a timeout, HTTP 429/5xx, or an unexpected answer
are ``transient``; HTTP 401/403 and an unusable key are ``auth``; a JSON-RPC
error answering a submission (insufficient funds, nonce too low, underpriced,
execution reverted) and a node on another chain are ``validation``.

``eth-account`` (the ``evm`` extra) signs transactions; it is imported only
when a key is configured or used, so this module imports without it.
"""

from __future__ import annotations

import base64
import importlib
import itertools
import json
import os
import re
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    ErrorClass,
    RailError,
    Verdict,
    VerifyContext,
)
from remembrancer.anchoring.settings import EvmSettings, rail_settings
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, FormatError
from remembrancer.core.jcs import loads_strict

PREFIX = b"RV"
# JSON-RPC methods whose errors mean "the node refused this transaction".
SUBMISSION_METHODS = frozenset({"eth_sendRawTransaction", "eth_estimateGas"})
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_CHAIN_ID = re.compile(r"^[1-9][0-9]{0,31}$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_GWEI = 10**9
_POLL_SECONDS = 0.2
MAX_RPC_ANSWER = 16 << 20  # bytes of one JSON-RPC answer


def anchor_calldata(digest: bytes) -> bytes:
    """The calldata committing ``digest``: ``b"RV" + digest`` (34 bytes)."""
    if not isinstance(digest, bytes | bytearray) or len(digest) != 32:
        raise FormatError("an anchored digest is 32 bytes", code="anchor_root_invalid")
    return PREFIX + bytes(digest)


def parse_calldata(data: bytes) -> bytes | None:
    """The digest in anchor calldata, or None when ``data`` is not ``RV || 32 bytes``."""
    if len(data) != 34 or not data.startswith(PREFIX):
        return None
    return bytes(data[2:])


def chain_id_of(target: str) -> int:
    """The chain id of an ``eip155:<decimal chain id>`` target (CAIP-2)."""
    scheme, _, name = target.partition(":")
    if scheme != "eip155" or not _CHAIN_ID.match(name):
        raise ConfigError(
            f"EVM target {target!r} is not eip155:<decimal chain id>",
            code="evm_target_invalid",
        )
    return int(name)


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: RPC URLs often carry API keys in the path or userinfo."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


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


def _quantity(value: Any, what: str) -> int:
    """A JSON-RPC QUANTITY (``0x``-hex) as int; a malformed one is a transient node fault."""
    if isinstance(value, str) and value.startswith(("0x", "0X")):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RailError(
        f"the node returned a malformed {what}: {str(value)[:80]!r}",
        code="evm_rpc_malformed",
        error_class="transient",
    )


def _data(value: Any, what: str) -> bytes:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise RailError(
        f"the node returned malformed {what}", code="evm_rpc_malformed", error_class="transient"
    )


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


# --- JSON-RPC -----------------------------------------------------------------------------


class JsonRpcClient:
    """A minimal synchronous JSON-RPC 2.0 client over HTTP(S) (``urllib``).

    Error mapping (all :class:`RailError`): connection failures, timeouts,
    HTTP 429/5xx and malformed answers are ``transient``; HTTP 401/403 are
    ``auth``; a JSON-RPC error object is ``validation`` for the submission
    methods (:data:`SUBMISSION_METHODS`) and for "method not found"/"invalid
    params", ``transient`` otherwise.  Messages name the node by
    ``scheme://host:port`` only.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "remembrancer-evm-rail",
        }
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
            netloc = parts.hostname or ""
            if ":" in netloc:
                netloc = f"[{netloc}]"
            if parts.port:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self.url = urllib.parse.urlunsplit(parts)
        self.display = redact_url(url)
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        request_id = next(self._ids)
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}
        ).encode()
        req = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        where = f"{method} at {self.display}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read(MAX_RPC_ANSWER + 1)  # loads_strict refuses more
        except urllib.error.HTTPError as e:
            raw = _read_quietly(e)
            if e.code in (401, 403):
                raise RailError(
                    f"{where}: HTTP {e.code}: the node refused our credentials",
                    code="evm_rpc_auth",
                    error_class="auth",
                    details={"http_status": e.code},
                ) from e
            if e.code == 429 or e.code >= 500:
                raise RailError(
                    f"{where}: HTTP {e.code}",
                    code="evm_rpc_unavailable",
                    error_class="transient",
                    details={"http_status": e.code},
                ) from e
            # Some providers answer JSON-RPC errors with HTTP 400: use the body if it is one.
            error = _jsonrpc_error(raw)
            if error is not None:
                raise _error_for(method, error, where) from e
            raise RailError(
                f"{where}: HTTP {e.code}",
                code="evm_rpc_refused",
                error_class="validation",
                details={"http_status": e.code},
            ) from e
        except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise RailError(
                f"{where}: node unreachable ({type(reason).__name__}: {reason})",
                code="evm_rpc_unreachable",
                error_class="transient",
            ) from e
        try:
            answer = loads_strict(raw, max_bytes=MAX_RPC_ANSWER)
        except FormatError as e:
            raise RailError(
                f"{where}: the answer is not strict JSON ({e.code})",
                code="evm_rpc_malformed",
                error_class="transient",
            ) from e
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise RailError(
                f"{where}: the answer is not a JSON-RPC response to this request",
                code="evm_rpc_malformed",
                error_class="transient",
            )
        if "error" in answer and answer["error"] is not None:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise _error_for(method, error, where)
        if "result" not in answer:
            raise RailError(
                f"{where}: the answer has neither result nor error",
                code="evm_rpc_malformed",
                error_class="transient",
            )
        return answer["result"]


def _read_quietly(e: urllib.error.HTTPError) -> bytes:
    try:
        return e.read()
    except Exception:
        return b""
    finally:
        e.close()


def _jsonrpc_error(raw: bytes) -> dict[str, Any] | None:
    try:
        answer = loads_strict(raw, max_bytes=MAX_RPC_ANSWER)
    except FormatError:
        return None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error: dict[str, Any] = answer["error"]
        return error
    return None


def _error_for(method: str, error: Mapping[str, Any], where: str) -> RailError:
    code = error.get("code")
    message = str(error.get("message") or "error")[:300]
    error_class: ErrorClass
    if method in SUBMISSION_METHODS or code in (-32601, -32602):
        error_class = "validation"
    else:
        error_class = "transient"
    return RailError(
        f"{where}: the node answered error {code}: {message}",
        code="evm_rpc_rejected" if method in SUBMISSION_METHODS else "evm_rpc_error",
        error_class=error_class,
        details={"rpc_code": code, "rpc_message": message},
    )


# --- the rail -----------------------------------------------------------------------------


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
        node_chain = _quantity(self.client.call("eth_chainId"), "chain id")
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
            base = _quantity(base_fee, "base fee")
            try:
                tip = _quantity(self.client.call("eth_maxPriorityFeePerGas"), "priority fee")
            except RailError as e:
                if e.code != "evm_rpc_error":
                    raise
                tip = _GWEI  # the node lacks the method: a customary 1 gwei tip
            fees = {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}
            highest = fees["maxFeePerGas"]
        else:
            fees = {"gasPrice": _quantity(self.client.call("eth_gasPrice"), "gas price")}
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
            nonce = _quantity(
                self.client.call("eth_getTransactionCount", [sender, "pending"]), "nonce"
            )
            fees = self._fees()
            gas = self.gas_limit or _quantity(
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
        if _quantity(receipt.get("status"), "receipt status") != 1:
            raise RailError(
                f"anchor transaction {tx_hash} was mined but reverted",
                code="evm_tx_reverted",
                error_class="validation",
                details={"txHash": tx_hash},
            )
        mined = self._mined(receipt)
        if mined is None:
            return anchor
        head = _quantity(self.client.call("eth_blockNumber"), "block number")
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
        number = _quantity(receipt.get("blockNumber"), "block number")
        block_hash = _lower(receipt.get("blockHash"))
        block = self._block(number)
        if block is None or _lower(block.get("hash")) != block_hash or block_hash is None:
            return None  # the node's view moved between the two calls: not mined for now
        return _Mined(
            number,
            block_hash,
            _quantity(receipt.get("transactionIndex"), "transaction index"),
            _quantity(block.get("timestamp"), "block timestamp"),
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
            return self._judge(anchor, required)
        except RailError as e:
            return Verdict.unchecked(e.code, e.message, required_depth=required)

    def _judge(self, anchor: Anchor, required: int) -> Verdict:
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
        tx_chain = _quantity(tx["chainId"], "transaction chain id")
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
        data = _data(tx.get("input", tx.get("data")), "transaction input")
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
        if _quantity(receipt.get("status"), "receipt status") != 1:
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
        head = _quantity(self.client.call("eth_blockNumber"), "block number")
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
