"""The EVM rail without a chain: calldata, settings, keys, JSON-RPC error mapping
(against a tiny local HTTP stub) and the verification state machine (against a
scripted fake node), for the cases a real node cannot easily produce."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from remembrancer.anchoring.base import RailError, RailRegistry, VerifyContext, recheck
from remembrancer.anchoring.evm.calldata import anchor_calldata, chain_id_of, parse_calldata
from remembrancer.anchoring.evm.rail import EvmRail
from remembrancer.anchoring.evm.rpc import JsonRpcClient, redact_url
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, FormatError

TARGET = "eip155:31337"
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDR0 = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
ADDR1 = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
DIGEST = hashlib.sha256(b"unit").digest()
TX = "0x" + "ab" * 32
BLOCK_A = "0x" + "aa" * 32
BLOCK_B = "0x" + "bb" * 32


def _has_eth_account() -> bool:
    try:
        import eth_account  # noqa: F401
    except ImportError:
        return False
    return True


def needs_eth_account() -> None:
    if not _has_eth_account():
        why = "needs the 'evm' extra (eth-account): pip install -e '.[evm]'"
        pytest.skip(why)


# --- calldata and targets --------------------------------------------------------------------


def test_calldata_is_rv_then_the_digest() -> None:
    data = anchor_calldata(DIGEST)
    assert data == b"RV" + DIGEST and len(data) == 34 and data[:2] == b"\x52\x56"
    assert parse_calldata(data) == DIGEST
    assert anchor_calldata(bytearray(DIGEST)) == data


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_calldata_needs_a_32_byte_digest(bad: Any) -> None:
    with pytest.raises(FormatError) as e:
        anchor_calldata(bad)
    assert e.value.code == "anchor_root_invalid"


@pytest.mark.parametrize(
    "data", [b"", b"RV", b"RV" + DIGEST[:31], b"RV" + DIGEST + b"\x00", b"rv" + DIGEST, DIGEST]
)
def test_parse_calldata_rejects_anything_else(data: bytes) -> None:
    assert parse_calldata(data) is None


def test_chain_ids() -> None:
    assert chain_id_of("eip155:1") == 1
    assert chain_id_of("eip155:31337") == 31337
    for bad in ("eip155:", "eip155:0", "eip155:01", "eip155:mainnet", "eip155:-1", "btc:1",
                "eip155:١", "eip155:1 ", "eip155:" + "9" * 40):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            chain_id_of(bad)
        assert e.value.code == "evm_target_invalid", bad


def test_redacted_urls_keep_only_scheme_host_port() -> None:
    assert (
        redact_url("https://user:secret@rpc.example.org/v3/APIKEY?x=1") == "https://rpc.example.org"
    )
    assert redact_url("http://127.0.0.1:8545/") == "http://127.0.0.1:8545"
    assert redact_url("http://[::1]:8545") == "http://[::1]:8545"


# --- settings --------------------------------------------------------------------------------

GOOD = {"rpc": "http://127.0.0.1:8545"}


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({}, "rpc"),
        ({"rpc": ""}, "rpc"),
        ({"rpc": 8545}, "rpc"),
        ({"rpc": "ws://127.0.0.1:8546"}, "http(s)"),
        ({"rpc": "http://"}, "http(s)"),
        ({**GOOD, "keyfile": "k"}, "keyfile: unknown key"),
        ({**GOOD, "key_file": "k", "key_env": "K"}, "not both"),
        ({**GOOD, "key_file": ""}, "key_file"),
        ({**GOOD, "key_env": 5}, "key_env"),
        ({**GOOD, "to": "0x1234"}, "to: expected"),
        ({**GOOD, "to": "f39fd6e51aad88f6f4ce6ab8827279cfffb92266"}, "to: expected"),
        ({**GOOD, "senders": ["0xnope"]}, "senders"),
        ({**GOOD, "senders": {"a": 1}}, "senders"),
        ({**GOOD, "confirmations": 0}, "confirmations"),
        ({**GOOD, "confirmations": True}, "confirmations"),
        ({**GOOD, "confirmations": "3"}, "confirmations"),
        ({**GOOD, "timeout": 0}, "timeout"),
        ({**GOOD, "timeout": -1}, "timeout"),
        ({**GOOD, "timeout": float("inf")}, "timeout"),
        ({**GOOD, "timeout": "10"}, "timeout"),
        ({**GOOD, "receipt_wait": -0.1}, "receipt_wait"),
        ({**GOOD, "gas_price": "cheap"}, "gas_price"),
        ({**GOOD, "gas_limit": 20_999}, "gas_limit"),
        ({**GOOD, "max_fee_gwei": 0}, "max_fee_gwei"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        EvmRail.from_config(TARGET, settings)
    assert e.value.code == "evm_config_invalid"
    assert fragment in e.value.message
    assert e.value.message.startswith("anchoring.eip155.31337")


def test_settings_are_not_a_mapping() -> None:
    with pytest.raises(ConfigError):
        EvmRail.from_config(TARGET, ["rpc"])  # type: ignore[arg-type]


def test_a_bad_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        EvmRail.from_config("eip155:mainnet", GOOD)
    assert e.value.code == "evm_target_invalid"


def test_the_config_error_never_shows_the_url_secret() -> None:
    with pytest.raises(ConfigError) as e:
        EvmRail.from_config(TARGET, {"rpc": "ftp://u:hunter2@host/KEY123"})
    assert "hunter2" not in e.value.message and "KEY123" not in e.value.message


def test_good_settings() -> None:
    rail = EvmRail.from_config(
        TARGET,
        {
            "rpc": "https://rpc.example.org/v3/key",
            "to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "senders": ADDR0.upper().replace("0X", "0x"),
            "confirmations": 12,
            "timeout": 3,
            "receipt_wait": 0,
            "gas_price": "eip1559",
            "max_fee_gwei": 50,
            "gas_limit": 30_000,
        },
    )
    assert rail.target == TARGET and rail.chain_id == 31337
    assert rail.to == ADDR1 and rail.senders == frozenset({ADDR0})
    assert rail.confirmations == 12 and rail.client.timeout == 3.0 and rail.receipt_wait == 0
    assert rail.gas_price == "eip1559" and rail.max_fee_gwei == 50 and rail.gas_limit == 30_000
    assert not rail.can_submit  # verify-only


def test_the_registry_resolves_eip155_targets() -> None:
    registry = RailRegistry(config={"eip155": {"31337": dict(GOOD)}})
    rail = registry.get(TARGET)
    assert isinstance(rail, EvmRail) and registry.get(TARGET) is rail
    with pytest.raises(ConfigError) as e:
        RailRegistry(config={"eip155": {"31337": {}}}).get(TARGET)
    assert e.value.code == "evm_config_invalid"


# --- keys ------------------------------------------------------------------------------------


def _key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "evm.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_key_file_gives_the_sender_address(tmp_path: Path) -> None:
    needs_eth_account()
    rail = EvmRail.from_config(TARGET, {**GOOD, "key_file": str(_key_file(tmp_path, KEY0 + "\n"))})
    assert rail.can_submit and rail.address() == ADDR0
    bare = EvmRail.from_config(TARGET, {**GOOD, "key_file": str(_key_file(tmp_path, KEY0[2:]))})
    assert bare.address() == ADDR0


def test_the_key_file_is_read_at_use(tmp_path: Path) -> None:
    needs_eth_account()
    path = tmp_path / "later.key"
    rail = EvmRail.from_config(TARGET, {**GOOD, "key_file": str(path)})  # not there yet: fine
    with pytest.raises(RailError) as e:
        rail.address()
    assert e.value.code == "evm_key_unreadable" and e.value.error_class == "auth"
    path.write_text(KEY0)
    path.chmod(0o600)
    assert rail.address() == ADDR0


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    needs_eth_account()
    rail = EvmRail.from_config(TARGET, {**GOOD, "key_file": str(_key_file(tmp_path, KEY0, mode))})
    with pytest.raises(RailError) as e:
        rail.submit(DIGEST, now=1)
    assert e.value.code == "evm_key_insecure" and e.value.error_class == "auth"
    assert f"{mode:04o}" in e.value.message and KEY0[2:] not in e.value.message


@pytest.mark.parametrize(
    "text", ["", "0x1234", "0x" + "zz" * 32, "0x" + "00" * 32, "0x" + "ff" * 32, "\xff\xfe"]
)
def test_bad_keys_are_auth_errors_that_never_echo_the_key(tmp_path: Path, text: str) -> None:
    needs_eth_account()
    rail = EvmRail.from_config(TARGET, {**GOOD, "key_file": str(_key_file(tmp_path, text))})
    with pytest.raises(RailError) as e:
        rail.address()
    assert e.value.code == "evm_key_invalid" and e.value.error_class == "auth"
    assert "ff" * 32 not in e.value.message


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    needs_eth_account()
    rail = EvmRail.from_config(TARGET, {**GOOD, "key_env": "RV_UNIT_EVM_KEY"})
    monkeypatch.delenv("RV_UNIT_EVM_KEY", raising=False)
    with pytest.raises(RailError) as e:
        rail.address()
    assert e.value.code == "evm_key_missing" and "RV_UNIT_EVM_KEY" in e.value.message
    monkeypatch.setenv("RV_UNIT_EVM_KEY", " " + KEY0 + "\n")
    assert rail.address() == ADDR0


def test_a_verify_only_rail_cannot_submit() -> None:
    rail = EvmRail.from_config(TARGET, GOOD)
    with pytest.raises(RailError) as e:
        rail.submit(DIGEST, now=1)
    assert e.value.code == "evm_key_missing" and e.value.error_class == "auth"


def test_missing_eth_account_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "eth_account", None)  # import fails
    EvmRail.from_config(TARGET, GOOD)  # verify-only needs no signer
    with pytest.raises(ConfigError) as e:
        EvmRail.from_config(TARGET, {**GOOD, "key_file": str(_key_file(tmp_path, KEY0))})
    assert e.value.code == "rail_dependency_missing"
    assert "remembrancer[evm]" in e.value.message


def test_the_module_imports_without_eth_account() -> None:
    code = (
        "import sys; sys.modules['eth_account'] = None\n"
        "import remembrancer.anchoring.evm.rail as m\n"
        "assert 'eth_account' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "print(m.anchor_calldata(bytes(32)).hex())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5256" + "00" * 32


# --- JSON-RPC error mapping against a local HTTP stub ----------------------------------------

Reply = tuple[int, bytes]


class _Stub:
    """Answers each POST with ``handler(path, request_json, headers)``."""

    def __init__(self) -> None:
        self.handler: Callable[[str, dict[str, Any], Any], Reply] = lambda p, r, h: (200, b"{}")
        self.seen: list[tuple[str, dict[str, Any], Any]] = []


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[_Stub, str]]:
    state = _Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.seen.append((self.path, body, self.headers))
            status, payload = state.handler(self.path, body, self.headers)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _result(value: Any) -> Callable[[str, dict[str, Any], Any], Reply]:
    return lambda p, r, h: (
        200,
        json.dumps({"jsonrpc": "2.0", "id": r["id"], "result": value}).encode(),
    )


def _rpc_error(
    code: int, message: str, status: int = 200
) -> Callable[[str, dict[str, Any], Any], Reply]:
    return lambda p, r, h: (
        status,
        json.dumps(
            {"jsonrpc": "2.0", "id": r["id"], "error": {"code": code, "message": message}}
        ).encode(),
    )


@pytest.mark.parametrize(
    ("status", "error_class", "code"),
    [
        (401, "auth", "evm_rpc_auth"),
        (403, "auth", "evm_rpc_auth"),
        (429, "transient", "evm_rpc_unavailable"),
        (500, "transient", "evm_rpc_unavailable"),
        (502, "transient", "evm_rpc_unavailable"),
        (503, "transient", "evm_rpc_unavailable"),
        (404, "validation", "evm_rpc_refused"),
        (405, "validation", "evm_rpc_refused"),
    ],
)
def test_http_statuses(stub: tuple[_Stub, str], status: int, error_class: str, code: str) -> None:
    state, url = stub
    state.handler = lambda p, r, h: (status, b"<html>no</html>")
    with pytest.raises(RailError) as e:
        JsonRpcClient(url + "/v3/SECRETKEY", timeout=5).call("eth_blockNumber")
    assert e.value.error_class == error_class and e.value.code == code
    assert e.value.details["http_status"] == status
    assert "SECRETKEY" not in e.value.message and "eth_blockNumber" in e.value.message


def test_a_401_fails_a_submission_as_auth(stub: tuple[_Stub, str], tmp_path: Path) -> None:
    needs_eth_account()
    state, url = stub
    state.handler = lambda p, r, h: (401, b"unauthorized")
    rail = EvmRail.from_config(TARGET, {"rpc": url, "key_file": str(_key_file(tmp_path, KEY0))})
    with pytest.raises(RailError) as e:
        rail.submit(DIGEST, now=1)
    assert e.value.error_class == "auth"
    verdict = rail.verify(_anchor(), VerifyContext(now=1))
    assert verdict.outcome == "unchecked" and verdict.code == "evm_rpc_auth"


@pytest.mark.parametrize(
    ("method", "rpc_code", "message", "error_class", "code"),
    [
        ("eth_sendRawTransaction", -32003, "nonce too low", "validation", "evm_rpc_rejected"),
        ("eth_sendRawTransaction", -32000, "insufficient funds for gas * price + value", "validation", "evm_rpc_rejected"),
        ("eth_sendRawTransaction", -32000, "replacement transaction underpriced", "validation", "evm_rpc_rejected"),
        ("eth_estimateGas", 3, "execution reverted", "validation", "evm_rpc_rejected"),
        ("eth_blockNumber", -32005, "limit exceeded", "transient", "evm_rpc_error"),
        ("eth_blockNumber", -32603, "internal error", "transient", "evm_rpc_error"),
        ("eth_getTransactionByHash", -32601, "method not found", "validation", "evm_rpc_error"),
        ("eth_getBlockByNumber", -32602, "invalid params", "validation", "evm_rpc_error"),
    ],
)  # fmt: skip
def test_jsonrpc_errors(
    stub: tuple[_Stub, str], method: str, rpc_code: int, message: str, error_class: str, code: str
) -> None:
    state, url = stub
    client = JsonRpcClient(url)
    for status in (200, 400):  # some providers send JSON-RPC errors with HTTP 400
        state.handler = _rpc_error(rpc_code, message, status)
        with pytest.raises(RailError) as e:
            client.call(method, [])
        assert (e.value.error_class, e.value.code) == (error_class, code)
        assert e.value.details == {"rpc_code": rpc_code, "rpc_message": message}
        assert message in e.value.message


@pytest.mark.parametrize(
    "reply",
    [
        (200, b"<html>proxy</html>"),
        (200, b"[]"),
        (200, b'{"jsonrpc": "2.0", "id": 999, "result": "0x1"}'),
        (200, b'{"jsonrpc": "2.0", "id": 1}'),
    ],
)
def test_malformed_answers_are_transient(stub: tuple[_Stub, str], reply: Reply) -> None:
    state, url = stub
    state.handler = lambda p, r, h: reply
    with pytest.raises(RailError) as e:
        JsonRpcClient(url).call("eth_blockNumber")
    assert e.value.error_class == "transient" and e.value.code == "evm_rpc_malformed"


def test_basic_auth_from_the_url(stub: tuple[_Stub, str]) -> None:
    state, url = stub
    state.handler = _result("0x7a69")
    state.seen.clear()
    authed = url.replace("http://", "http://alice:s%40cret@") + "/rpc"
    client = JsonRpcClient(authed)
    assert client.call("eth_chainId") == "0x7a69"
    path, body, headers = state.seen[-1]
    assert path == "/rpc" and body["method"] == "eth_chainId" and body["jsonrpc"] == "2.0"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s@cret").decode()
    assert "cret" not in client.display and "alice" not in client.display


def test_a_slow_node_times_out_as_transient(stub: tuple[_Stub, str]) -> None:
    state, url = stub

    def slow(p: str, r: dict[str, Any], h: Any) -> Reply:
        time.sleep(1.0)
        return _result("0x1")(p, r, h)

    state.handler = slow
    t0 = time.monotonic()
    with pytest.raises(RailError) as e:
        JsonRpcClient(url, timeout=0.2).call("eth_blockNumber")
    assert time.monotonic() - t0 < 0.9
    assert e.value.error_class == "transient" and e.value.code == "evm_rpc_unreachable"


def test_a_refused_connection_is_transient() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RailError) as e:
        JsonRpcClient(f"http://127.0.0.1:{port}", timeout=2).call("eth_chainId")
    assert e.value.error_class == "transient" and e.value.code == "evm_rpc_unreachable"


# --- verification state machine against a scripted node --------------------------------------


class FakeNode:
    """Answers JSON-RPC calls from a dict of method -> value or callable(params)."""

    def __init__(self, **answers: Any) -> None:
        self.answers: dict[str, Any] = {
            "eth_chainId": "0x7a69",
            "web3_clientVersion": "fake/1.0",
            "eth_blockNumber": "0x10",
            **answers,
        }
        self.calls: list[tuple[str, list[Any]]] = []
        self.display = "http://fake"
        self.timeout = 1.0

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        self.calls.append((method, params or []))
        answer = self.answers[method]
        return answer(params or []) if callable(answer) else answer


def _tx(**changes: Any) -> dict[str, Any]:
    tx = {
        "hash": TX,
        "chainId": "0x7a69",
        "from": ADDR0,
        "to": ADDR0,
        "input": "0x" + (b"RV" + DIGEST).hex(),
        "blockHash": BLOCK_A,
        "blockNumber": "0x8",
        "transactionIndex": "0x0",
    }
    tx.update(changes)
    return tx


def _receipt(**changes: Any) -> dict[str, Any]:
    r = {"transactionHash": TX, "status": "0x1", "blockHash": BLOCK_A, "blockNumber": "0x8",
         "transactionIndex": "0x0"}  # fmt: skip
    r.update(changes)
    return r


def _blocks(mapping: dict[int, str]) -> Callable[[list[Any]], Any]:
    def get(params: list[Any]) -> Any:
        if not params[0].startswith("0x"):
            return None  # "latest": this fake has no head block (the rail then keeps nothing)
        n = int(params[0], 16)
        return {"hash": mapping[n], "timestamp": hex(1_700_000_000 + n)} if n in mapping else None

    return get


def _anchor(status: str = "submitted", **evidence: Any) -> Anchor:
    ev = {"chainId": 31337, "txHash": TX, "from": ADDR0, "to": ADDR0,
          "blockNumber": 8, "blockHash": BLOCK_A, "transactionIndex": 0}  # fmt: skip
    ev.update(evidence)
    return Anchor(target=TARGET, root=DIGEST, status=status, tx_ref=TX, evidence=ev)  # type: ignore[arg-type]


def _rail(node: FakeNode, **settings: Any) -> EvmRail:
    rail = EvmRail.from_config(TARGET, {**GOOD, **settings})
    rail.client = node  # type: ignore[assignment]
    return rail


def _canonical(**answers: Any) -> FakeNode:
    defaults: dict[str, Any] = {
        "eth_getTransactionByHash": _tx(),
        "eth_getTransactionReceipt": _receipt(),
        "eth_getBlockByNumber": _blocks({8: BLOCK_A}),
    }
    return FakeNode(**{**defaults, **answers})


def test_depth_drives_submitted_then_verified() -> None:
    rail = _rail(_canonical())  # head 0x10 = 16: depth 9
    assert recheck(rail, _anchor(), VerifyContext(now=5, required_depth=10)).finality == Finality(
        9, 10, "pending"
    )
    out = recheck(rail, _anchor(), VerifyContext(now=5, required_depth=9))
    assert out.status == "verified" and out.finality == Finality(9, 9, "final")
    assert out.anchor_ts == 1_700_000_008 and out.block_number == 8 and out.observed_at == 5
    assert out.verifier.endswith("fake/1.0")
    # The rail's own confirmations are a floor: a context asking for less
    # (or nothing) does not lower it.
    for asked in (0, 3):
        verdict = _rail(_canonical(), confirmations=20).verify(
            _anchor(), VerifyContext(now=5, required_depth=asked)
        )
        assert verdict.outcome == "pending" and verdict.code == "anchor_depth_insufficient"
        assert (verdict.observed_depth, verdict.required_depth) == (9, 20)


def test_a_verified_anchor_asked_for_more_depth_stays_verified() -> None:
    rail = _rail(_canonical())
    verified = recheck(rail, _anchor(), VerifyContext(now=5, required_depth=3))
    again = recheck(rail, verified, VerifyContext(now=6, required_depth=12))
    assert again.status == "verified" and again.finality == Finality(9, 12, "pending")


@pytest.mark.parametrize(
    ("tx", "fragment"),
    [
        (_tx(chainId=None), "pre-EIP-155"),
        (_tx(chainId="0x1"), "chain id 1"),
        (_tx(**{"from": ADDR1}), "sender mismatch"),
        (_tx(to=ADDR1), "recipient mismatch"),
        (_tx(to=None), "recipient mismatch"),
        (_tx(input="0x"), "RV||digest (0 bytes)"),
        (_tx(input="0x" + (b"RV" + bytes(32)).hex()), "digest mismatch"),
    ],
)
def test_transaction_checks_fail_the_anchor(tx: dict[str, Any], fragment: str) -> None:
    rail = _rail(_canonical(eth_getTransactionByHash=tx))
    for status in ("submitted", "verified"):
        out = recheck(rail, _anchor(status), VerifyContext(now=1, required_depth=1))
        assert out.status == "failed" and fragment in (out.error or ""), (status, out.error)


@pytest.mark.parametrize(
    ("anchor", "fragment"),
    [
        (dataclasses.replace(_anchor(), tx_ref="0x1234"), "txHash"),
        (_anchor(txHash="0x" + "cd" * 32), "txHash"),
        (_anchor(chainId=1), "chainId"),
        (_anchor(chainId="31337"), "chainId"),
        (_anchor(**{"from": None}), "from"),
        (_anchor(to="nobody"), "to"),
    ],
)
def test_malformed_evidence_fails_without_asking(anchor: Anchor, fragment: str) -> None:
    node = _canonical()
    out = recheck(_rail(node), anchor, VerifyContext(now=1))
    assert out.status == "failed" and fragment in (out.error or "")
    assert [m for m, _ in node.calls] in ([], ["web3_clientVersion"])


def test_a_reverted_receipt_fails() -> None:
    rail = _rail(_canonical(eth_getTransactionReceipt=_receipt(status="0x0")))
    out = recheck(rail, _anchor(), VerifyContext(now=1, required_depth=1))
    assert out.status == "failed" and "reverted" in (out.error or "")


def test_a_verified_anchor_back_in_the_pool_is_reorged() -> None:
    node = _canonical(
        eth_getTransactionByHash=_tx(blockHash=None, blockNumber=None),
        eth_getBlockByNumber=_blocks({8: BLOCK_A}),
    )
    out = recheck(_rail(node), _anchor("verified"), VerifyContext(now=1, required_depth=1))
    assert out.status == "reorged" and "pool" in (out.error or "")


def test_a_submitted_anchor_remined_elsewhere_is_refreshed() -> None:
    node = _canonical(
        eth_getTransactionByHash=_tx(blockHash=BLOCK_B, blockNumber="0x9"),
        eth_getTransactionReceipt=_receipt(
            blockHash=BLOCK_B, blockNumber="0x9", transactionIndex="0x2"
        ),
        eth_getBlockByNumber=_blocks({8: "0x" + "cc" * 32, 9: BLOCK_B}),
    )
    out = recheck(_rail(node), _anchor(), VerifyContext(now=1, required_depth=20))
    assert out.status == "submitted" and out.block_number == 9
    assert out.evidence["blockHash"] == BLOCK_B and out.evidence["transactionIndex"] == 2
    assert out.finality == Finality(8, 20, "pending")
    # ...while the same move makes a verified anchor reorged
    node.calls.clear()
    assert recheck(_rail(node), _anchor("verified"), VerifyContext(now=1)).status == "reorged"


def test_a_submitted_anchor_waiting_in_the_pool_again_stays_submitted() -> None:
    node = _canonical(
        eth_getTransactionByHash=_tx(blockHash=None, blockNumber=None),
        eth_getBlockByNumber=_blocks({8: BLOCK_B}),
    )
    out = recheck(_rail(node), _anchor(), VerifyContext(now=1, required_depth=2))
    assert out.status == "submitted" and out.block_number is None
    assert out.evidence["blockHash"] is None and out.finality == Finality(0, 2, "pending")


def test_final_states_are_returned_unchanged() -> None:
    node = FakeNode()
    rail = _rail(node)
    for status in ("failed", "reorged"):
        a = dataclasses.replace(_anchor(), status=status)
        assert recheck(rail, a, VerifyContext(now=1)) is a
    assert node.calls == []


def test_a_node_whose_view_moves_mid_check_is_unchecked() -> None:
    node = _canonical(eth_getBlockByNumber=_blocks({8: BLOCK_A}))
    node.answers["eth_getTransactionReceipt"] = _receipt(blockHash=BLOCK_B)
    verdict = _rail(node).verify(_anchor(blockNumber=None, blockHash=None), VerifyContext(now=1))
    assert verdict.outcome == "unchecked" and verdict.code == "evm_rpc_inconsistent"


def test_malformed_node_values_are_unchecked() -> None:
    node = _canonical(eth_blockNumber="sixteen")
    verdict = _rail(node).verify(_anchor(), VerifyContext(now=1))
    assert verdict.outcome == "unchecked" and verdict.code == "evm_rpc_malformed"
    # A node that answers with another transaction than the one asked for is
    # this node's problem, not evidence against the anchor.
    node = _canonical(eth_getTransactionByHash=_tx(hash="0x" + "cd" * 32))
    verdict = _rail(node).verify(_anchor(), VerifyContext(now=1))
    assert verdict.outcome == "unchecked" and "another transaction" in verdict.message


# --- submit against a scripted node ------------------------------------------------------


def _submitting_node(**answers: Any) -> FakeNode:
    sent: dict[str, Any] = {}

    def send_raw(params: list[Any]) -> Any:
        from eth_account import Account
        from eth_account.typed_transactions import TypedTransaction
        from hexbytes import HexBytes

        raw = bytes.fromhex(params[0][2:])
        sent["raw"] = raw
        sent["tx"] = TypedTransaction.from_bytes(HexBytes(raw)).as_dict() if raw[0] < 0x80 else None
        sent["from"] = Account.recover_transaction(raw).lower()
        from eth_utils import keccak

        return "0x" + keccak(raw).hex()

    defaults: dict[str, Any] = {
        "eth_getTransactionCount": "0x7",
        "eth_getBlockByNumber": lambda p: {
            "hash": BLOCK_A,
            "timestamp": "0x10",
            "baseFeePerGas": "0x3b9aca00",
        },
        "eth_maxPriorityFeePerGas": "0x5",
        "eth_gasPrice": "0x77359400",
        "eth_estimateGas": "0x5758",
        "eth_sendRawTransaction": send_raw,
        "eth_getTransactionReceipt": None,
    }
    node = FakeNode(**{**defaults, **answers})
    node.sent = sent  # type: ignore[attr-defined]
    return node


def test_submit_signs_an_eip1559_transaction_with_rv_calldata(tmp_path: Path) -> None:
    needs_eth_account()
    node = _submitting_node()
    rail = _rail(node, key_file=str(_key_file(tmp_path, KEY0)), receipt_wait=0)
    anchor = rail.submit(DIGEST, now=42)
    sent = node.sent  # type: ignore[attr-defined]
    tx = sent["tx"]
    assert sent["from"] == ADDR0
    assert tx["chainId"] == 31337 and tx["nonce"] == 7 and tx["gas"] == 0x5758
    assert bytes(tx["data"]) == b"RV" + DIGEST and tx["value"] == 0
    assert tx["maxPriorityFeePerGas"] == 5 and tx["maxFeePerGas"] == 2 * 10**9 + 5
    assert anchor.status == "submitted" and anchor.observed_at == 42
    assert anchor.evidence["blockNumber"] is None and anchor.anchor_ts is None
    assert ("eth_getTransactionCount", [ADDR0, "pending"]) in node.calls
    estimate = next(p for m, p in node.calls if m == "eth_estimateGas")[0]
    assert estimate["data"] == "0x" + (b"RV" + DIGEST).hex() and estimate["to"] == ADDR0


def test_submit_accepts_already_known_and_checks_the_echoed_hash(tmp_path: Path) -> None:
    needs_eth_account()
    key = str(_key_file(tmp_path, KEY0))

    def already_known(params: list[Any]) -> Any:
        raise RailError("x", code="evm_rpc_rejected", error_class="validation",
                        details={"rpc_code": -32000, "rpc_message": "already known"})  # fmt: skip

    rail = _rail(
        _submitting_node(eth_sendRawTransaction=already_known), key_file=key, receipt_wait=0
    )
    assert rail.submit(DIGEST, now=1).status == "submitted"
    liar = _rail(_submitting_node(eth_sendRawTransaction=TX), key_file=key, receipt_wait=0)
    with pytest.raises(RailError) as e:
        liar.submit(DIGEST, now=1)
    assert e.value.error_class == "transient" and e.value.code == "evm_rpc_malformed"


def test_eip1559_policy_on_a_chain_without_base_fee(tmp_path: Path) -> None:
    needs_eth_account()
    node = _submitting_node(eth_getBlockByNumber=lambda p: {"hash": BLOCK_A, "timestamp": "0x1"})
    key = str(_key_file(tmp_path, KEY0))
    with pytest.raises(RailError) as e:
        _rail(node, key_file=key, gas_price="eip1559").submit(DIGEST, now=1)
    assert e.value.code == "evm_fee_policy" and e.value.error_class == "validation"
    # auto falls back to a legacy (EIP-155) transaction with eth_gasPrice
    _rail(node, key_file=key, receipt_wait=0).submit(DIGEST, now=1)
    assert node.sent["tx"] is None  # type: ignore[attr-defined]
    assert node.sent["raw"][0] >= 0xC0  # type: ignore[attr-defined]
