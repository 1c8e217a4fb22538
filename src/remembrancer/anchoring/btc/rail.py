"""The ``btc:<network>`` rail: submit and verify (the package docstring has the rules).

:class:`BitcoinRail` composes the parts: calendars and Bitcoin Core for
``submit``; :mod:`.ots`, :mod:`.merkleblock` and :mod:`.headers` for
``verify``, whose :class:`~remembrancer.anchoring.base.Verdict` comes from
the evidence and this node's own settings only, never from the anchor's
``status`` or ``finality``.  Thread-safe: it keeps no per-call state.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    RailError,
    Verdict,
    VerifyContext,
)
from remembrancer.anchoring.btc.headers import (
    NETWORK_CHAINS,
    BlockHeader,
    HeadersFile,
    HeaderSource,
    proof_error,
)
from remembrancer.anchoring.btc.merkleblock import (
    OP_RETURN_TAG,
    check_op_return,
    parse_merkle_block,
    parse_tx,
    txid_hex,
)
from remembrancer.anchoring.btc.ots import (
    OTS_ACCEPT,
    has_bitcoin_below,
    ots_attestations,
    parse_ots,
    serialize_ots,
    url_allowed,
    walk_stamps,
)
from remembrancer.anchoring.btc.rpc import (
    RPC_INVALID_ADDRESS_OR_KEY,
    USER_AGENT,
    BitcoinRpc,
    BitcoinRpcError,
    RpcHeaders,
    expect_dict,
    expect_hash,
    expect_int,
    expect_str,
    http_request,
    is_hash_hex,
)
from remembrancer.anchoring.settings import BtcSettings, rail_settings
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, VerificationError
from remembrancer.net.http import ErrorClass, status_class

MAX_UPGRADE_REQUESTS = 8
MAX_BITCOIN_ATTESTATIONS = 16  # checked per proof, lowest heights first


# Error codes after which an anchor that was verified counts as reorged.
_REORG_CODES = frozenset({"btc_merkle_root_mismatch", "btc_block_not_canonical"})


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
            info = expect_dict(self._rpc.call("getblockchaininfo"), "getblockchaininfo")
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
            raise proof_error(f"unknown evidence mode {mode!r}", "btc_evidence_malformed")
        except VerificationError as e:
            return Verdict.failed(e.code, e.message, self._verifier("n/a"),
                                  required_depth=required, lost=e.code in _REORG_CODES)  # fmt: skip
        except RailError as e:
            return Verdict.unchecked(e.code, e.message, required_depth=required)

    # -- OpenTimestamps

    def _calendar_post(self, calendar: str, commitment: bytes) -> Any:
        from opentimestamps.core.serialize import BytesDeserializationContext  # type: ignore[import-untyped]
        from opentimestamps.core.timestamp import Timestamp  # type: ignore[import-untyped]

        url = calendar.rstrip("/") + "/digest"
        status, body = http_request(
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
                error_class=status_class(status),
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
            raise proof_error("evidence has no .ots proof", "ots_malformed")
        cap = self.settings.max_ots_bytes
        if len(text) > 4 * ((cap + 2) // 3):
            raise proof_error(f".ots proof is over the {cap}-byte cap", "ots_too_large", limit=cap)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise proof_error(f".ots proof is not base64: {e}", "ots_malformed") from e

    def _upgrade(self, dtf: Any) -> bool:
        """Merge calendar upgrades into ``dtf``; best effort, never raises."""
        from opentimestamps.core.notary import PendingAttestation  # type: ignore[import-untyped]
        from opentimestamps.core.serialize import BytesDeserializationContext
        from opentimestamps.core.timestamp import Timestamp

        changed = False
        asked: set[tuple[bytes, str]] = set()
        for stamp in list(walk_stamps(dtf.timestamp)):
            for att in list(stamp.attestations):
                if not isinstance(att, PendingAttestation):
                    continue
                key = (bytes(stamp.msg), str(att.uri))
                if key in asked or len(asked) >= MAX_UPGRADE_REQUESTS:
                    continue
                if not url_allowed(
                    att.uri, self.settings.calendars, self.settings.calendar_whitelist
                ):
                    continue
                if has_bitcoin_below(stamp):
                    continue
                asked.add(key)
                url = f"{att.uri.rstrip('/')}/timestamp/{stamp.msg.hex()}"
                try:
                    status, body = http_request(
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
            raise proof_error(
                f"the proof's file hash is {dtf.file_hash_op}, not sha256", "ots_unsupported"
            )
        if bytes(dtf.file_digest) != anchor.root:
            raise proof_error(
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
                raise proof_error(
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
        unsigned = expect_str(
            rpc.call("createrawtransaction", [], [{"data": payload.hex()}]),
            "createrawtransaction",
        )
        options: dict[str, Any] = {}
        if self.settings.fee_rate is not None:
            options["fee_rate"] = self.settings.fee_rate
        funded = expect_dict(
            rpc.call("fundrawtransaction", unsigned, options), "fundrawtransaction"
        )
        signed = expect_dict(
            rpc.call("signrawtransactionwithwallet", expect_str(funded.get("hex"), "fund")),
            "signrawtransactionwithwallet",
        )
        signed_hex = expect_str(signed.get("hex"), "signrawtransactionwithwallet")
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
        txid = expect_hash(rpc.call("sendrawtransaction", signed_hex), "sendrawtransaction")
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
            return expect_dict(result, "getrawtransaction")

        if known_block is not None:
            found = raw_tx(known_block)
            if found is not None and found.get("in_active_chain", True):
                return found
        found = raw_tx()
        if found is not None:
            return found
        try:
            wallet_tx = expect_dict(rpc.call("gettransaction", txid), "gettransaction")
        except BitcoinRpcError:
            return None  # no wallet, or not a wallet transaction
        block = wallet_tx.get("blockhash")
        if is_hash_hex(block) and block != known_block:
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
        out["tx"] = expect_str(found.get("hex"), "getrawtransaction")
        located = found.get("blockhash")
        if not is_hash_hex(located):  # in the mempool (again)
            for key in ("block_hash", "block_height", "txoutproof"):
                out.pop(key, None)
            return out
        if located != block_hash or "txoutproof" not in out or "block_height" not in out:
            out["txoutproof"] = expect_str(
                rpc.call("gettxoutproof", [txid], located), "gettxoutproof"
            )
            info = expect_dict(rpc.call("getblockheader", located, True), "getblockheader")
            out["block_height"] = expect_int(info.get("height"), "getblockheader")
            out["block_hash"] = located
        return out

    def _verify_op_return(self, anchor: Anchor, required: int) -> Verdict:
        ev = anchor.evidence
        txid = ev.get("txid")
        if not is_hash_hex(txid) or txid != anchor.tx_ref:
            raise proof_error("evidence has no valid txid", "btc_evidence_malformed")
        evidence = dict(ev)
        block_hash = ev.get("block_hash") if is_hash_hex(ev.get("block_hash")) else None
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
            raise proof_error("evidence transaction is not hex", "btc_tx_malformed") from e
        if txid_hex(tx) != txid:
            raise proof_error("the stored transaction does not hash to the txid", "btc_tx_mismatch")
        check_op_return(tx, anchor.root)

        proof_hex = evidence.get("txoutproof")
        if proof_hex is None:
            return waiting("btc_tx_not_mined", "the transaction is not in a block (yet)")
        try:
            proof = parse_merkle_block(bytes.fromhex(str(proof_hex)))
        except ValueError as e:
            raise proof_error("txoutproof is not hex", "btc_txoutproof_malformed") from e
        if bytes.fromhex(str(txid))[::-1] not in proof.matches:
            raise proof_error("the txoutproof does not prove this txid", "btc_merkle_path_invalid")
        proof.header.check_pow(self.network)
        if "block_hash" in evidence and proof.header.hash_hex != evidence["block_hash"]:
            raise proof_error("the txoutproof is for another block", "btc_merkle_path_invalid")
        height = evidence.get("block_height")
        if isinstance(height, bool) or not isinstance(height, int) or height < 0:
            raise proof_error("evidence has no block height", "btc_evidence_malformed")

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
