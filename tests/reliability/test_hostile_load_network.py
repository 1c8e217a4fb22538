"""Hostile load over the network against real node processes (issue 19, cases 2 to 4).

Each case runs bounded in time and asserts its bound (docs/operations.md,
"Resource budget: memory, time and connections"):

- **connections**: a node under a 1,024 file limit with 1,000 half-sent
  requests open still answers ``/healthz``, and half-open connections are
  closed after the header deadline (``server`` in node.yaml);
- **memory**: a malicious peer process serves maximal entry bundles
  (256 entries of 65,535 bytes) for a 16,384-entry checkpoint; the mirroring
  node's peak RSS stays within its replication memory budget, and it fetches
  no bundle beyond the chunk it is verifying (``replication``);
- **time**: a peer claims to host a third node's log at a larger size and
  drips its answers; the victim's replica of the honest log still progresses
  within a deadline, and the staller's score drops (``replication``).
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import (
    NodeProcess,
    free_port,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.net.http import request
from remembrancer.node.keyfile import write_key_file
from remembrancer.testing.hostile_peer import HostilePeer
from remembrancer.testing.replicas import http, http_json, replicas, set_mirror, wait_for

NS = "dao:vaultmesh"

# Run the node under RLIMIT_NOFILE 1024 (soft and hard): the command after the
# wrapper is exec'd with the limit in force.
LOW_FILE_LIMIT = (
    sys.executable,
    "-c",
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024));"
    " os.execv(sys.argv[1], sys.argv[1:])",
)


def _write(node: NodeProcess, count: int, start: int = 0) -> list[str]:
    """Submit ``count`` records to ``node``'s log; their event hashes."""
    actor = demo_key("did:vm:actor:demo")
    w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]

    def one(i: int) -> str:
        rec = make_record(NS, "ledger.append@1.0.0", ledger_payload(start + i, 200), actor, w,
                          timestamp=int(time.time()))  # fmt: skip
        http(f"{node.url}/v1/namespaces/{NS}/records", rec.leaf)
        return rec.event_hash_hex

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset), without blocking."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _half_open(port: int, n: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """``n`` connections that each sent half a request (no end of headers)."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: victim\r\nX-Slow: ")
        out.append(s)
    return out


def _metric(node: NodeProcess, name: str, **labels: str) -> float:
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in http(f"{node.url}/metrics").decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for s in held:
            s.close()


def test_healthz_answers_under_1000_half_open_connections(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """Issue 19 case 4: 1,000 half-sent requests against a node under a 1,024 file
    limit; /healthz answers, the node writes records, and the half-open
    connections are closed (oldest first per client, the rest at the header
    deadline)."""
    header_timeout = 3.0
    node = init_node(tmp_path / "victim", origin_prefix="victim.test")
    node.prefix = LOW_FILE_LIMIT
    node.edit_config(scheduler={"enabled": False},
                     server={"header_timeout_s": header_timeout})  # fmt: skip
    node.start()
    try:
        limit = (Path("/proc") / str(node.proc.pid) / "limits").read_text()  # type: ignore[union-attr]
        assert any(line.startswith("Max open files") and line.split()[3:5] == ["1024", "1024"]
                   for line in limit.splitlines()), limit  # fmt: skip
        sockets += _half_open(node.port, 1000)
        t0 = time.monotonic()
        answer = request("GET", f"{node.url}/healthz", timeout=15, limit=1 << 16, trust_env=False)
        latency = time.monotonic() - t0
        assert answer.status == 200, answer.content
        print(f"/healthz under 1000 half-open connections: {latency * 1000:.1f} ms")
        # The honest workload still completes.
        assert len(_write(node, 20)) == 20
        assert http_json(f"{node.url}/v1/namespaces/{NS}")["size"] >= 20
        # Every half-open connection is closed within the header deadline (and slack).
        wait_for(lambda: all(_closed(s) for s in sockets), header_timeout * 3 + 10,
                 "the half-open connections to be closed")  # fmt: skip
        closed = {r: _metric(node, "remembrancer_http_connections_closed_total", reason=r)
                  for r in ("half_open_per_client", "half_open", "header_timeout")}  # fmt: skip
        print(f"closed by the server: {closed}")
        # At most server.max_half_open (256) were ever half-open at once; the
        # rest were evicted, oldest first, and the last ones met the deadline.
        assert closed["half_open_per_client"] + closed["half_open"] >= 1000 - 256, closed
        assert sum(closed.values()) >= 1000, closed

        # A few half-open connections under the per-client cap: closed by the deadline.
        before = _metric(node, "remembrancer_http_connections_closed_total",
                         reason="header_timeout")  # fmt: skip
        opened = time.monotonic()
        late = _half_open(node.port, 3)
        sockets += late
        wait_for(lambda: all(_closed(s) for s in late), header_timeout * 3 + 10,
                 "the header deadline to close the half-open connections")  # fmt: skip
        waited = time.monotonic() - opened
        assert waited >= header_timeout * 0.9, waited  # closed by the deadline, not before
        after = _metric(node, "remembrancer_http_connections_closed_total",
                        reason="header_timeout")  # fmt: skip
        assert after - before >= 3
        print(f"3 half-open connections closed after {waited:.1f} s (header timeout"
              f" {header_timeout} s)")  # fmt: skip
        # A request whose headers are over the cap is answered 431 and closed.
        s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        sockets.append(s)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: victim\r\nX-Big: " + b"a" * 70_000)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        assert got.startswith(b"HTTP/1.1 431 "), got[:100]
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "headers_too_large"
    finally:
        node.stop()


# --- memory: a peer serving maximal bundles ------------------------------------------

FED = "test-federation"
ROLES = ["witness", "anchor", "countersign", "relay", "coordinator"]
BUDGET = 64 << 20  # replication.memory_budget_bytes (the default)


def _status_kb(pid: int, field: str) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _peer(node: NodeProcess, did: str) -> dict:  # type: ignore[type-arg]
    peers = http_json(f"{node.url}/v1/federation")["peers"]
    return next(p for p in peers if p["did"] == did)  # type: ignore[no-any-return]


def _hostile_key(directory: Path) -> tuple[SigningKey, Path]:
    key = SigningKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    write_key_file(directory / "hostile.key", key)
    return key, directory / "hostile.key"


def test_mirroring_maximal_bundles_stays_within_the_memory_budget(tmp_path: Path) -> None:
    """Issue 19 case 2: a peer announces its log at 16,384 entries (a new root in
    every heartbeat) and serves maximal entry bundles; the mirroring node
    fetches one chunk within its budget, finds it does not verify, and stops:
    its peak RSS stays within the budget, it never fetches past that chunk, and
    the peer is scored.  An honest log is mirrored meanwhile."""
    key, key_file = _hostile_key(tmp_path / "hostile")
    origin = f"hostile.test/{NS}"
    hostile_port = free_port()
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(2)]
    victim, honest = nodes
    extra = [{"did": key.did, "endpoint": f"http://127.0.0.1:{hostile_port}", "pubkey": key.did,
              "status": "active", "roles": ROLES}]  # fmt: skip
    wire_witnessing(nodes, quorum=0)
    wire_federation(nodes, quorum=2, extra_peers=extra, heartbeat_seconds=1)
    doc = victim.config.read_text()
    victim.edit_config(scheduler={"enabled": False}, replication={"memory_budget_bytes": BUDGET})
    logs = yaml.safe_load(victim.config.read_text())["witness"]["logs"]
    logs.append({"vkey": format_vkey(origin, key.public), "mirror": True})
    victim.edit_config(witness={**yaml.safe_load(doc)["witness"], "logs": logs})
    set_mirror(victim, antientropy_seconds=0.5)
    for n in nodes:
        n.start()
    try:
        pid = victim.proc.pid  # type: ignore[union-attr]
        honest_origin = f"n1.test/{NS}"
        _write(honest, 40)
        wait_for(lambda: replicas(victim.url)[honest_origin]["mirror_size"] >= 40, 30,
                 "the victim to mirror the honest log")  # fmt: skip
        (Path("/proc") / str(pid) / "clear_refs").write_text("5")  # reset the peak RSS
        baseline = _status_kb(pid, "VmRSS") * 1024
        with HostilePeer.start(tmp_path / "hostile", mode="max-bundles", key_file=key_file,
                               federation_id=FED, victim=victim.url, origin=origin, size=16_384,
                               port=hostile_port, heartbeat_seconds=1) as hostile:  # fmt: skip
            ceiling = baseline + 8 * BUDGET  # past this the node is stopped (guard missing)

            def attempts() -> int | None:
                rss = _status_kb(pid, "VmRSS") * 1024
                if rss > ceiling:
                    victim.stop(signal.SIGKILL)
                    raise AssertionError(f"RSS {rss >> 20} MiB, over {ceiling >> 20} MiB")
                got = hostile.stats()["paths"].get(f"/logs/{NS}/tile/entries/000", 0)
                return got if got >= 3 else None

            wait_for(attempts, 90, "three attempts to mirror the hostile log", interval=0.2)
            peak = _status_kb(pid, "VmHWM") * 1024
            stats = hostile.stats()["paths"]
            replica = replicas(victim.url)[origin]
            # Honest work goes on meanwhile.
            _write(honest, 40, start=40)
            wait_for(lambda: replicas(victim.url)[honest_origin]["mirror_size"] >= 80, 30,
                     "the victim to keep mirroring the honest log")  # fmt: skip
        growth = peak - baseline
        print(f"peak RSS {peak / 2**20:.0f} MiB = baseline {baseline / 2**20:.0f} MiB"
              f" + {growth / 2**20:.1f} MiB; budget {BUDGET >> 20} MiB;"
              f" bundles fetched: {sorted(p for p in stats if 'entries' in p)}")  # fmt: skip
        assert growth <= BUDGET, (peak, baseline)
        # One chunk per attempt (one maximal bundle fits the budget), nothing beyond it.
        assert [p for p in stats if "/tile/entries/" in p] == [f"/logs/{NS}/tile/entries/000"]
        assert replica["mirror_size"] == 0 and replica["size"] == 0
        assert (replica["last_error"] or {}).get("code") == "replica_inconsistent"
        assert _peer(victim, key.did)["score"] < 100
    finally:
        for n in nodes:
            n.stop()


# --- time: a peer that claims more and drips its answers ---------------------------


def test_a_stalling_source_does_not_freeze_the_replica_and_loses_score(tmp_path: Path) -> None:
    """Issue 19 case 3: a peer claims in its heartbeats to host a third node's log
    at a larger size and answers one byte every 2 s.  The victim asks it first
    (nothing verified from anyone yet), cuts it off at the fetch deadline,
    scores it and tries it last from then on: its replica of the honest log
    keeps up."""
    deadline = 3.0  # replication.fetch_deadline_s
    key, key_file = _hostile_key(tmp_path / "staller")
    staller_port = free_port()
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(2)]
    honest, victim = nodes
    origin = f"n0.test/{NS}"
    extra = [{"did": key.did, "endpoint": f"http://127.0.0.1:{staller_port}", "pubkey": key.did,
              "status": "active", "roles": ROLES}]  # fmt: skip
    wire_witnessing(nodes, quorum=0)
    wire_federation(nodes, quorum=2, extra_peers=extra, heartbeat_seconds=1)
    for n in nodes:
        n.edit_config(scheduler={"enabled": False})
        set_mirror(n, False, antientropy_seconds=0.5)
    victim.edit_config(replication={"fetch_deadline_s": deadline})
    with HostilePeer.start(tmp_path / "staller", mode="drip", key_file=key_file,
                           federation_id=FED, victim=victim.url, origin=origin,
                           size=1_000_000, port=staller_port, heartbeat_seconds=1,
                           drip_seconds=2) as staller:  # fmt: skip
        for n in nodes:
            n.start()
        try:
            wait_for(lambda: staller.stats()["heartbeats"] >= 2, 30, "the staller's heartbeats")
            timings = []
            for round_ in range(3):
                _write(honest, 10, start=10 * round_)
                size = http_json(f"{honest.url}/v1/namespaces/{NS}")["size"]
                t0 = time.monotonic()
                wait_for(lambda s=size: replicas(victim.url)[origin]["size"] >= s,  # type: ignore[misc]
                         2 * deadline + 20, f"the victim's replica of {origin} at {size}")  # fmt: skip
                timings.append(time.monotonic() - t0)
            asked = staller.stats()["paths"].get(f"/logs/{NS}/checkpoint", 0)
            score = _peer(victim, key.did)
            print(f"replica progress while the staller drips: {[round(t, 1) for t in timings]} s;"
                  f" staller asked {asked} times, score {score['score']:.1f}")  # fmt: skip
            assert asked >= 1  # it was asked (first: it claimed the most) ...
            assert score["score"] < 100  # ... cut off and scored
            replica = replicas(victim.url)[origin]
            assert replica["size"] >= 30 and replica["equivocation"] is None
            # Tried last while it is at the back of the line: not once per round.
            rounds = http_json(f"{victim.url}/v1/federation/replicas")["rounds"]
            assert asked <= 4, (asked, rounds)  # doubling backoff from 0.5 s over the 3 rounds
        finally:
            for n in nodes:
                n.stop()
