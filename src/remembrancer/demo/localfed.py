"""A local federation of real processes under one data directory, kept
between runs: the development TSA (``remembrancer tsa serve``), anvil when it
is installed, and three nodes (``remembrancer serve``) that host the seed's
two namespaces, witness and mirror each other's logs, and form one
federation with hybrid collaborative anchoring on short demo cadences.

Layout of the data directory::

    nodes/<alpha|beta|gamma>/   node.yaml, keys/, namespaces.yaml, federation.yaml,
                                data/ (SQLite), node.log   (``remembrancer init``)
    tsa/                        the development TSA's CA and keys (ca.pem is the
                                trust bundle), tsa.log
    anvil/                      state.json (the chain, saved every few seconds and
                                on exit, loaded at the next start), anvil.log
    children.json               the processes of the current run (to stop those
                                left behind by a run that was killed)

Every start rewrites the parts of the configuration that depend on this run
(ports, whether anvil is there); keys, logs and stores are never touched.
The supervisor that drives this for ``remembrancer demo`` is
:mod:`remembrancer.demo.supervisor`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from remembrancer.core.cosignature import format_cosigner_vkey
from remembrancer.core.errors import ConfigError, PeerError
from remembrancer.core.note import format_vkey
from remembrancer.demo.anvil import DEV_KEYS, Anvil, start_anvil
from remembrancer.demo.procs import (
    LOCAL_ANSWER,
    NodeProcess,
    free_port,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.net.http import HttpFailure, request
from remembrancer.node.keyfile import read_key_file

NAMES = ("alpha", "beta", "gamma")
FEDERATION_ID = "remembrancer-demo"
QUORUM = 2  # countersignatures that make a federation receipt final (of 3 peers)
CHAIN_ID = 31337  # anvil's default chain id
DEFAULT_BASE_PORT = 8080
TSA_TARGET = "rfc3161:tsa"
EVM_TARGET = f"eip155:{CHAIN_ID}"


def origin_prefix(name: str) -> str:
    return f"{name}.demo.remembrancer.local"


@dataclass(frozen=True, slots=True)
class DemoCadence:
    """Short demo cadences (seconds, where production says minutes or days):
    the TSA at the ``cold`` level and anvil at the ``fast`` level, as in the
    seed's namespaces, and one collaborative epoch."""

    tsa_every: str = "5s"
    evm_every: str = "5s"
    epoch_seconds: int = 5
    heartbeat_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Ports:
    """Loopback ports: the three nodes, the development TSA, anvil."""

    nodes: tuple[int, int, int]
    tsa: int
    anvil: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls((base, base + 1, base + 2), base + 3, base + 4)

    def all(self) -> tuple[int, ...]:
        return (*self.nodes, self.tsa, self.anvil)


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (with
    SO_REUSEADDR, as uvicorn and the TSA bind)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_ports(n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


def choose_ports(base: int | None) -> tuple[Ports, str | None]:
    """The ports for this run and a note when they are not the ones asked for.

    ``None``: 8080-8084 when all are free, else free ports chosen by the
    system (with a note); ``0``: free ports; any other value: ``base`` to
    ``base + 4``, which must be free."""
    if base == 0:
        a, b, c, tsa, anvil = _free_ports(5)
        return Ports((a, b, c), tsa, anvil), None
    wanted = Ports.from_base(DEFAULT_BASE_PORT if base is None else base)
    if wanted.all()[-1] > 65535 or wanted.all()[0] < 1:
        raise ConfigError(f"--base-port {base}: the five ports must lie in 1..65535",
                          code="demo_port_invalid")  # fmt: skip
    busy = [p for p in wanted.all() if not port_free(p)]
    if not busy:
        return wanted, None
    if base is not None:
        raise ConfigError(
            f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} on 127.0.0.1"
            f" {'are' if len(busy) > 1 else 'is'} in use; choose another --base-port"
            " (or 0 for any free ports)",
            code="demo_port_in_use",
            details={"busy": busy},
        )
    a, b, c, tsa, anvil = _free_ports(5)
    note = (f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} in use: using free"
            " ports instead (--base-port P uses P to P+4)")  # fmt: skip
    return Ports((a, b, c), tsa, anvil), note


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """What a verifier needs of one node, read from its key file (not asked
    of the running node): its DID, each log's vkey, its witness vkey."""

    name: str
    did: str
    origin_prefix: str
    vkeys: dict[str, str]
    witness_vkey: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "did": self.did, "origin_prefix": self.origin_prefix,
                "vkeys": dict(self.vkeys), "witness_vkey": self.witness_vkey}  # fmt: skip


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``),
    which tells a process from a later one that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by ``pid``, wait, then SIGKILL it."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class LocalFederation:
    """The processes of one local federation under ``data``."""

    def __init__(self, data: Path, ports: Ports, *, anvil_binary: str | None,
                 cadence: DemoCadence | None = None) -> None:  # fmt: skip
        self.data = data.resolve()
        self.ports = ports
        self.anvil_binary = anvil_binary
        self.cadence = cadence or DemoCadence()
        self.nodes = [NodeProcess(self.data / "nodes" / name, port, new_session=True)
                      for name, port in zip(NAMES, ports.nodes, strict=True)]  # fmt: skip
        self.tsa_proc: subprocess.Popen[bytes] | None = None
        self.anvil: Anvil | None = None

    # --- paths and addresses ------------------------------------------------------
    @property
    def tsa_dir(self) -> Path:
        return self.data / "tsa"

    @property
    def trust_bundle(self) -> Path:
        return self.tsa_dir / "ca.pem"

    @property
    def tsa_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.tsa}"

    @property
    def anvil_dir(self) -> Path:
        return self.data / "anvil"

    @property
    def anvil_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.anvil}"

    @property
    def registry_file(self) -> Path:
        return self.nodes[0].directory / "federation.yaml"

    def name(self, node: NodeProcess) -> str:
        return node.directory.name

    # --- setting up ---------------------------------------------------------------------
    def initialized(self) -> bool:
        return all(n.config.exists() for n in self.nodes)

    def init(self) -> list[str]:
        """``remembrancer init`` (with the public demo keys) each node that has
        no directory yet; returns the names of the nodes created."""
        created = []
        for n in self.nodes:
            if n.config.exists():
                continue
            if n.directory.exists() and any(n.directory.iterdir()):
                raise ConfigError(
                    f"{n.directory} exists but holds no node.yaml: move it away to start that"
                    " node afresh", code="demo_node_incomplete")  # fmt: skip
            n.directory.parent.mkdir(parents=True, exist_ok=True)
            init_node(n.directory, origin_prefix=origin_prefix(self.name(n)), port=n.port)
            created.append(self.name(n))
        return created

    def configure(self) -> None:
        """This run's configuration: ports, rails and cadences (anvil or not),
        witnessing (every node cosigns and mirrors the others' logs) and the
        federation registry (hybrid collaborative anchoring)."""
        c = self.cadence
        for i, n in enumerate(self.nodes):
            anchoring: dict[str, Any] = {
                "rfc3161": {"tsa": {"url": self.tsa_url, "trust_bundle": str(self.trust_bundle)}}
            }
            levels: dict[str, Any] = {"cold": {"target": TSA_TARGET, "every": c.tsa_every}}
            if self.anvil_binary is not None:
                key = n.directory / "keys" / "evm.key"
                if not key.exists():
                    # anvil's funded development account i+1 (public, like the demo keys)
                    key.write_text(DEV_KEYS[i + 1] + "\n")
                    key.chmod(0o600)
                anchoring["eip155"] = {str(CHAIN_ID): {"rpc": self.anvil_url, "key_file": "keys/evm.key",
                                                       "confirmations": 1}}  # fmt: skip
                levels["fast"] = {"target": EVM_TARGET, "every": c.evm_every, "confirmations": 1}
            ns_file = n.directory / "namespaces.yaml"
            doc = yaml.safe_load(ns_file.read_text())
            for ns in doc["namespaces"].values():
                ns["cadence"] = levels
            ns_file.write_text(yaml.safe_dump(doc, sort_keys=False))
            n.edit_config(listen=f"127.0.0.1:{n.port}", anchoring=anchoring,
                          scheduler={"tick_seconds": 0.5, "reverify_seconds": 2.0})  # fmt: skip
        wire_witnessing(self.nodes, mirror=True)
        wire_federation(self.nodes, quorum=QUORUM, federation_id=FEDERATION_ID,
                        heartbeat_seconds=c.heartbeat_seconds, anchor_strategy="hybrid",
                        epoch_seconds=c.epoch_seconds)  # fmt: skip

    def identities(self) -> dict[str, NodeIdentity]:
        out = {}
        for n in self.nodes:
            doc = yaml.safe_load(n.config.read_text())
            key = read_key_file(n.directory / doc["node_key"])
            prefix = doc["origin_prefix"]
            spaces = yaml.safe_load((n.directory / doc["namespaces"]).read_text())["namespaces"]
            witness_name = (doc.get("witness") or {}).get("name") or f"{prefix}/witness"
            out[self.name(n)] = NodeIdentity(
                self.name(n), key.did, prefix,
                {ns: format_vkey(f"{prefix}/{ns}", key.public) for ns in spaces},
                format_cosigner_vkey(witness_name, key.public),
            )  # fmt: skip
        return out

    # --- processes ------------------------------------------------------------------------
    def start_tsa(self, timeout: float = 30) -> None:
        """``remembrancer tsa serve`` on this run's port; its CA stays in tsa/."""
        self.tsa_dir.mkdir(parents=True, exist_ok=True)
        with open(self.tsa_dir / "tsa.log", "ab") as log:
            self.tsa_proc = subprocess.Popen(
                [sys.executable, "-m", "remembrancer.cli", "tsa", "serve", "--dir", str(self.tsa_dir),
                 "--listen", f"127.0.0.1:{self.ports.tsa}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.tsa_proc.poll() is not None:
                raise PeerError(f"the development TSA exited {self.tsa_proc.returncode}: "
                                f"{_tail(self.tsa_dir / 'tsa.log')}", code="demo_tsa_failed")  # fmt: skip
            try:
                ca = request("GET", self.tsa_url + "/ca.pem", timeout=1, limit=LOCAL_ANSWER,
                             trust_env=False)  # fmt: skip
                if ca.status == 200 and self.trust_bundle.exists():
                    return
            except HttpFailure:
                pass
            if time.monotonic() > deadline:
                raise PeerError(f"the development TSA did not answer on {self.tsa_url}: "
                                f"{_tail(self.tsa_dir / 'tsa.log')}", code="demo_tsa_failed")  # fmt: skip
            time.sleep(0.1)

    def start_anvil(self) -> None:
        """anvil with its chain state loaded from, and saved to, anvil/state.json."""
        assert self.anvil_binary is not None
        self.anvil_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.anvil = start_anvil(self.anvil_binary, self.ports.anvil, self.anvil_dir / "anvil.log",
                                     chain_id=CHAIN_ID, state=self.anvil_dir / "state.json")  # fmt: skip
        except RuntimeError as e:
            raise PeerError(str(e), code="demo_anvil_failed") from e

    def start_nodes(self, timeout: float = 90) -> None:
        """Start the three nodes at once; wait until each is ready."""
        errors: dict[str, str] = {}

        def start(n: NodeProcess) -> None:
            try:
                n.start(timeout=timeout)
            except AssertionError as e:  # NodeProcess.start's way of failing
                errors[self.name(n)] = str(e)

        threads = [threading.Thread(target=start, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            name, detail = next(iter(errors.items()))
            raise PeerError(f"node {name} did not start: {detail[-1500:]}", code="demo_node_failed",
                            details={"nodes": sorted(errors)})  # fmt: skip

    def children(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        out: list[tuple[str, subprocess.Popen[bytes]]] = []
        if self.tsa_proc is not None:
            out.append(("tsa", self.tsa_proc))
        if self.anvil is not None:
            out.append(("anvil", self.anvil.proc))
        out += [(self.name(n), n.proc) for n in self.nodes if n.proc is not None]
        return out

    def record_children(self) -> None:
        """Write children.json: who to stop if this run is killed before it
        can stop them itself."""
        entries = [{"what": what, "pid": p.pid, "started": _start_ticks(p.pid)}
                   for what, p in self.children() if p.poll() is None]  # fmt: skip
        path = self.data / "children.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=1) + "\n")
        tmp.replace(path)

    def stop_leftovers(self, timeout: float = 30) -> list[str]:
        """Stop the processes that a previous run recorded and left running
        (it was killed), each checked to be that very process (pid and start
        time) before it is signalled.  Returns what was stopped."""
        path = self.data / "children.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        stopped = []
        for e in entries if isinstance(entries, list) else []:
            try:
                pid, started, what = int(e["pid"]), e["started"], str(e["what"])
            except (KeyError, TypeError, ValueError):
                continue
            if started is not None and _start_ticks(pid) == started:
                _stop_group(pid, timeout)
                stopped.append(f"{what} (pid {pid})")
        path.unlink(missing_ok=True)
        return stopped

    def stop(self, timeout: float = 30) -> dict[str, int | None]:
        """Stop the nodes (SIGTERM: they drain and exit 0; SIGKILL after
        ``timeout``), then the TSA, then anvil (which saves its chain).
        Returns each process's exit code."""
        codes: dict[str, int | None] = {}

        def stop_node(n: NodeProcess) -> None:
            codes[self.name(n)] = n.stop(signal.SIGTERM, timeout) if n.proc is not None else None

        threads = [threading.Thread(target=stop_node, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.tsa_proc is not None:
            if self.tsa_proc.poll() is None:
                self.tsa_proc.send_signal(signal.SIGTERM)
                try:
                    self.tsa_proc.wait(min(timeout, 10))
                except subprocess.TimeoutExpired:
                    self.tsa_proc.kill()
                    self.tsa_proc.wait()
            codes["tsa"] = self.tsa_proc.returncode
            self.tsa_proc = None
        if self.anvil is not None:
            self.anvil.stop()
            codes["anvil"] = self.anvil.proc.returncode
            self.anvil = None
        (self.data / "children.json").unlink(missing_ok=True)
        return codes


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"
