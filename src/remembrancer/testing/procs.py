"""Real node processes for tests: ``remembrancer init`` + ``remembrancer serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(
    *args: str, cwd: Path | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``remembrancer`` command in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "remembrancer.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"remembrancer {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass
class NodeProcess:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "node.yaml"

    def edit_config(self, **changes: Any) -> None:
        doc = yaml.safe_load(self.config.read_text())
        doc.update(changes)
        self.config.write_text(yaml.safe_dump(doc))

    def start(self, timeout: float = 30, env: dict[str, str] | None = None) -> NodeProcess:
        log = (self.directory / "node.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remembrancer.cli", "serve", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        with urllib.request.urlopen(self.url + "/v1/node", timeout=5) as n:
                            self.info = json.loads(n.read())
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"node did not become ready: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.directory / "node.log").read_text()[-n:]
        except OSError:
            return ""


def init_node(
    directory: Path, *, demo_keys: bool = True, origin_prefix: str | None = None
) -> NodeProcess:
    port = free_port()
    args = ["init", str(directory), "--listen", f"127.0.0.1:{port}"]
    if demo_keys:
        args.append("--demo-keys")
    if origin_prefix:
        args += ["--origin-prefix", origin_prefix]
    cli(*args)
    return NodeProcess(directory, port)


def wire_witnessing(nodes: list[NodeProcess], *, quorum: int | None = None) -> None:
    """Make every node witness every other node's logs and ask them all for
    cosignatures (edits each node.yaml; call before starting the nodes)."""
    from remembrancer.core.cosignature import format_cosigner_vkey
    from remembrancer.core.keys import read_key_file
    from remembrancer.core.note import format_vkey

    info: list[dict[str, Any]] = []
    for n in nodes:
        doc = yaml.safe_load(n.config.read_text())
        key = read_key_file(n.directory / doc["node_key"])
        spaces = yaml.safe_load((n.directory / doc["namespaces"]).read_text())["namespaces"]
        prefix = doc["origin_prefix"]
        witness_name = (doc.get("witness") or {}).get("name") or f"{prefix}/witness"
        info.append({
            "node": n,
            "log_vkeys": [format_vkey(f"{prefix}/{ns}", key.public) for ns in spaces],
            "witness": {"url": f"{n.url}/witness", "vkey": format_cosigner_vkey(witness_name, key.public)},
            "witness_name": witness_name,
        })  # fmt: skip
    for me in info:
        others = [o for o in info if o is not me]
        me["node"].edit_config(
            witness={"name": me["witness_name"], "logs": [{"vkey": v} for o in others for v in o["log_vkeys"]]},
            witnessing={"peers": [o["witness"] for o in others],
                        **({"quorum": quorum} if quorum is not None else {})},
        )  # fmt: skip


def wire_federation(nodes: list[NodeProcess], *, quorum: int, federation_id: str = "test-federation",
                    heartbeat_seconds: float = 0.5, extra_peers: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
    """Write one federation.yaml listing every node (did:key DIDs, all roles)
    into each node's directory and point node.yaml at it."""
    from remembrancer.core.keys import read_key_file

    peers = []
    for n in nodes:
        doc = yaml.safe_load(n.config.read_text())
        key = read_key_file(n.directory / doc["node_key"])
        peers.append({"did": key.did, "endpoint": n.url, "pubkey": key.did, "status": "active",
                      "roles": ["witness", "anchor", "countersign", "relay", "coordinator"]})  # fmt: skip
    peers += list(extra_peers or [])
    registry = {
        "federation_id": federation_id,
        "quorum": quorum,
        "anchor_strategy": "independent",
        "peers": peers,
    }
    for n in nodes:
        (n.directory / "federation.yaml").write_text(yaml.safe_dump(registry))
        n.edit_config(
            federation={"file": "federation.yaml", "heartbeat_seconds": heartbeat_seconds}
        )


def anchor_to_tsa(node: NodeProcess, tsa_url: str, trust_bundle: Path, *, every: str = "1s",
                  scheduler: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Give every namespace of ``node`` one cadence level, ``cold`` to
    ``rfc3161:tsa`` every ``every``, and configure that TSA (edits the files)."""
    ns_file = node.directory / "namespaces.yaml"
    doc = yaml.safe_load(ns_file.read_text())
    for ns in doc["namespaces"].values():
        ns["cadence"] = {"cold": {"target": "rfc3161:tsa", "every": every}}
    ns_file.write_text(yaml.safe_dump(doc))
    node.edit_config(
        anchoring={"rfc3161": {"tsa": {"url": tsa_url, "trust_bundle": str(trust_bundle)}}},
        scheduler=scheduler or {"tick_seconds": 0.2, "reverify_seconds": 0.5},
    )
