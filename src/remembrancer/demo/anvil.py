"""A real anvil (Foundry's local EVM node, npm @foundry-rs/anvil) for tests and demos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remembrancer.net.http import HttpFailure, request

ROOT = Path(__file__).resolve().parents[3]
NPM_ANVIL = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "anvil"
# anvil's default development accounts (public test keys of its default
# mnemonic, each funded with 10,000 ETH), in anvil's order.
DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
)
DEV_KEY = DEV_KEYS[0]


def find_anvil() -> str | None:
    configured = os.environ.get("REMEMBRANCER_ANVIL")
    if configured:
        return configured if os.access(configured, os.X_OK) else shutil.which(configured)
    if os.access(NPM_ANVIL, os.X_OK):
        return str(NPM_ANVIL)
    return shutil.which("anvil")


@dataclass
class Anvil:
    proc: subprocess.Popen[bytes]
    port: int
    chain_id: int = 31337

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc(self, method: str, *params: Any) -> Any:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        ).encode()
        reply = request("POST", self.url, content=body, headers={"Content-Type": "application/json"},
                        timeout=10, limit=16 << 20, trust_env=False)  # fmt: skip
        if reply.status != 200:
            raise reply.failure(f"anvil {method}")
        answer = json.loads(reply.content)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_anvil(
    binary: str, port: int, log_path: Path, *, chain_id: int = 31337, timeout: float = 20,
    state: Path | None = None, state_interval: int = 5,
) -> Anvil:  # fmt: skip
    """Start anvil on 127.0.0.1:``port``.  With ``state``, the chain (blocks,
    transactions, receipts, balances) is loaded from that file if it exists,
    written to it every ``state_interval`` seconds and again on exit, so it
    survives a restart (``anvil --state``)."""
    args = [binary, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id)]
    if state is not None:
        args += ["--state", str(state), "--state-interval", str(state_interval)]
    with open(log_path, "ab" if state is not None else "wb") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    anvil = Anvil(proc, port, chain_id)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if int(anvil.rpc("eth_chainId"), 16) == chain_id:
                return anvil
        except HttpFailure:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            anvil.stop()
            raise RuntimeError(
                f"anvil did not start: {log_path.read_text(errors='replace')[-2000:]}"
            )
        time.sleep(0.05)
