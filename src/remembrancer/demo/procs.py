"""Real node processes for tests: ``remembrancer init`` + ``remembrancer serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from remembrancer.net.http import HttpFailure, request

LOCAL_ANSWER = 1 << 20  # bytes of an answer from a local process we started


# Ports this process has handed out: the kernel may give the same free port to
# two bind(0) calls in a row (nothing holds it until the node starts), and two
# nodes of one test on one port fail as "address already in use".
_HANDED_OUT: set[int] = set()
_HANDED_OUT_MAX = 4096


def free_port() -> int:
    """A loopback port free now and not handed out before by this process."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            if len(_HANDED_OUT) >= _HANDED_OUT_MAX:
                _HANDED_OUT.clear()
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port that this process has not handed out already")


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
    """A node process.  ``host`` is the address this process reaches it at;
    ``peer_host`` the one its peers use (federation endpoints, witnessing URLs;
    default ``host``); ``prefix`` runs the command under another one, e.g.
    ``("ip", "netns", "exec", "<namespace>")``; ``new_session`` starts it in its
    own session, so a terminal's Ctrl-C reaches only whoever stops it."""

    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    peer_host: str | None = None
    prefix: tuple[str, ...] = ()
    new_session: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.peer_host or self.host}:{self.port}"

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
            [*self.prefix, sys.executable, "-m", "remembrancer.cli", "serve", "--config",
             str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=self.new_session,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if request("GET", self.url + "/readyz", timeout=1, limit=LOCAL_ANSWER,
                           trust_env=False).status == 200:  # fmt: skip
                    node = request("GET", self.url + "/v1/node", timeout=5, limit=LOCAL_ANSWER,
                                   trust_env=False)  # fmt: skip
                    if node.status == 200:
                        self.info = json.loads(node.content)
                        return self
            except HttpFailure:
                pass
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
    directory: Path, *, demo_keys: bool = True, origin_prefix: str | None = None,
    port: int | None = None,
) -> NodeProcess:  # fmt: skip
    port = port or free_port()
    args = ["init", str(directory), "--listen", f"127.0.0.1:{port}"]
    if demo_keys:
        args.append("--demo-keys")
    if origin_prefix:
        args += ["--origin-prefix", origin_prefix]
    cli(*args)
    return NodeProcess(directory, port)


def wire_witnessing(
    nodes: list[NodeProcess], *, quorum: int | None = None, mirror: bool = False
) -> None:
    """Make every node witness every other node's logs and ask them all for
    cosignatures (edits each node.yaml; call before starting the nodes).
    ``mirror``: also keep the witnessed logs' entries (docs/anti-entropy.md)."""
    from remembrancer.core.cosignature import format_cosigner_vkey
    from remembrancer.core.note import format_vkey
    from remembrancer.node.keyfile import read_key_file

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
            "witness": {"url": f"{n.peer_url}/witness", "vkey": format_cosigner_vkey(witness_name, key.public)},
            "witness_name": witness_name,
        })  # fmt: skip
    for me in info:
        others = [o for o in info if o is not me]
        me["node"].edit_config(
            witness={"name": me["witness_name"],
                     "logs": [{"vkey": v, **({"mirror": True} if mirror else {})}
                              for o in others for v in o["log_vkeys"]]},
            witnessing={"peers": [o["witness"] for o in others],
                        **({"quorum": quorum} if quorum is not None else {})},
        )  # fmt: skip


def wire_federation(nodes: list[NodeProcess], *, quorum: int, federation_id: str = "test-federation",
                    heartbeat_seconds: float = 0.5, extra_peers: list[dict[str, Any]] | None = None,
                    anchor_strategy: str = "independent", epoch_seconds: int | None = None,
                    roles: list[str] | None = None, regions: list[str | None] | None = None,
                    min_regions: int = 0) -> None:  # fmt: skip
    """Write one federation.yaml listing every node (did:key DIDs, ``roles``,
    default all five) into each node's directory and point node.yaml at it.
    ``anchor_strategy`` and ``epoch_seconds`` (``anchor_propagation.epoch_seconds``)
    set the collaborative-anchoring mode; ``regions`` (one per node) and
    ``min_regions`` (``receipts.min_regions``) the geo-redundant receipt policy."""
    from remembrancer.node.keyfile import read_key_file

    peers: list[dict[str, Any]] = []
    for n in nodes:
        doc = yaml.safe_load(n.config.read_text())
        key = read_key_file(n.directory / doc["node_key"])
        peers.append({"did": key.did, "endpoint": n.peer_url, "pubkey": key.did, "status": "active",
                      "roles": roles or ["witness", "anchor", "countersign", "relay", "coordinator"]})  # fmt: skip
        if regions is not None and regions[len(peers) - 1] is not None:
            peers[-1]["region"] = regions[len(peers) - 1]
    peers += list(extra_peers or [])
    registry = {
        "federation_id": federation_id,
        "quorum": quorum,
        "anchor_strategy": anchor_strategy,
        "peers": peers,
    }
    if epoch_seconds is not None:
        registry["anchor_propagation"] = {"epoch_seconds": epoch_seconds}
    if min_regions:
        registry["receipts"] = {"min_regions": min_regions}
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


def anchor_to_evm(node: NodeProcess, rpc_url: str, key_hex: str, *, chain_id: int = 31337,
                  every: str = "1s", confirmations: int = 1,
                  scheduler: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Give every namespace of ``node`` one cadence level, ``fast`` to
    ``eip155:<chain_id>`` every ``every``, sending from the key ``key_hex``
    (written to keys/evm.key), and configure that chain (edits the files)."""
    key = node.directory / "keys" / "evm.key"
    key.write_text(key_hex + "\n")
    key.chmod(0o600)
    ns_file = node.directory / "namespaces.yaml"
    doc = yaml.safe_load(ns_file.read_text())
    for ns in doc["namespaces"].values():
        ns["cadence"] = {"fast": {"target": f"eip155:{chain_id}", "every": every,
                                  "confirmations": confirmations}}  # fmt: skip
    ns_file.write_text(yaml.safe_dump(doc))
    node.edit_config(
        anchoring={"eip155": {str(chain_id): {"rpc": rpc_url, "key_file": "keys/evm.key",
                                              "confirmations": confirmations}}},
        scheduler=scheduler or {"tick_seconds": 0.2, "reverify_seconds": 0.5},
    )  # fmt: skip
