"""A node that joins a collaborative federation enters the coordinator
rotation only once it reports its rails ready, with real node processes, the
development TSA and a round of appends in each epoch the joiner would coordinate: no member misses an epoch or falls
back while the joiner, first without a TSA rail, is added to the registry,
learns it joined (registry catch-up), and later restarts with the rail and
coordinates."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.cli.client import api_json
from remembrancer.core.aggregation import choose_coordinator
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.core.record import sign_envelope, unsigned_envelope
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import example_record
from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.node.keyfile import read_key_file

FED = "test-federation"
TSA = "rfc3161:tsa"
NAMESPACES = ("dao:vaultmesh", "fin:clearing")
EPOCH = 4


def _get(url: str) -> Any:
    return api_json("GET", url)


def _post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _wait(
    check: Callable[[], Any], what: str, nodes: list[NodeProcess], timeout: float = 60.0
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.url}\n{n.log_tail(3000)}" for n in nodes)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.2)
    return value


def _why(nodes: list[NodeProcess]) -> str:
    """The log lines that explain a missed or fallback epoch."""
    keys = ("no acceptable aggregate", "did not take", "anchored alone", "registry change", "refus")
    return "\n".join(f"{n.url}: {line}" for n in nodes for line in n.log_tail(400_000).splitlines()
                     if any(k in line for k in keys))[-6000:]  # fmt: skip


def _key(n: NodeProcess) -> SigningKey:
    doc = yaml.safe_load(n.config.read_text())
    return read_key_file(n.directory / doc["node_key"])


def _log_vkeys(n: NodeProcess) -> list[str]:
    doc = yaml.safe_load(n.config.read_text())
    spaces = yaml.safe_load((n.directory / doc["namespaces"]).read_text())["namespaces"]
    return [format_vkey(f"{doc['origin_prefix']}/{ns}", _key(n).public) for ns in spaces]


def _status(n: NodeProcess) -> dict[str, Any]:
    return _get(f"{n.url}/v1/federation/anchoring")  # type: ignore[no-any-return]


def _counts(nodes: list[NodeProcess]) -> dict[str, tuple[int, int]]:
    out = {}
    for n in nodes:
        c = _status(n)["counters"]
        out[n.url] = (c["missed"], c["fallback"])
    return out


def _at_epoch(epoch: int) -> None:
    """Return just after ``epoch`` begins (wall clock, as every node counts epochs)."""
    _wait(lambda: time.time() >= epoch * EPOCH + 0.2, f"epoch {epoch}", [], timeout=20 * EPOCH)


def _verified(n: NodeProcess, ns: str) -> int:
    receipts = _get(f"{n.url}/v1/namespaces/{ns}/anchors")["receipts"]
    return sum(1 for r in receipts for a in r["anchors"]
               if a["target"] == TSA and a["status"] == "verified")  # fmt: skip


def _round(members: list[NodeProcess], epoch: int, i: int, everyone: list[NodeProcess]) -> None:
    """At the start of ``epoch`` one record into each namespace of each member;
    return once every member holds a verified TSA anchor of it."""
    before = {(n.url, ns): _verified(n, ns) for n in members for ns in NAMESPACES}
    _at_epoch(epoch)
    now = int(time.time())
    jobs = [(n, ns) for n in members for ns in NAMESPACES]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda j: api_json("POST", f"{j[0].url}/v1/namespaces/{j[1]}/records",
                                         example_record(j[1], i, timestamp=now).leaf), jobs))  # fmt: skip
    _wait(lambda: all(_verified(n, ns) > before[(n.url, ns)] for n in members for ns in NAMESPACES),
          f"the anchors of round {i}", everyone, timeout=8 * EPOCH)  # fmt: skip


def _slots(candidates: list[str], did: str, after: int, count: int) -> list[int]:
    """The next ``count`` epochs after ``after`` in which ``did`` coordinates
    the TSA target when ``candidates`` is the rotation."""
    found: list[int] = []
    e = after
    while len(found) < count:
        e += 1
        if choose_coordinator(FED, TSA, e, candidates) == did:
            found.append(e)
    return found


def test_a_joiner_without_its_rail_causes_no_missed_or_fallback_epoch(tmp_path: Path) -> None:
    tsa_dir = tmp_path / "tsa"
    with DevTsaServer(DevTsa(tsa_dir)) as tsa:
        members = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
        for n in members:
            anchor_to_tsa(n, tsa.url, tsa_dir / "ca.pem")
        wire_witnessing(members)
        wire_federation(members, quorum=2, anchor_strategy="collaborative", epoch_seconds=EPOCH)
        joiner = init_node(tmp_path / "n3", origin_prefix="n3.test")
        # The joiner starts from the registry it was given (without itself), and no rail yet.
        shutil.copy(members[0].directory / "federation.yaml", joiner.directory / "federation.yaml")
        joiner.edit_config(federation={"file": "federation.yaml", "heartbeat_seconds": 0.5})
        # It follows the members' logs, as a coordinator must to aggregate them
        # (docs/operations.md, resource budget: a coordinator takes only logs it follows).
        joiner.edit_config(witness={"logs": [{"vkey": v} for m in members for v in _log_vkeys(m)]})
        everyone = [*members, joiner]
        try:
            for n in everyone:
                n.start()
            alpha, beta, _ = members
            # Collaborative anchoring runs: a first round, aggregated.
            _round(members, _status(alpha)["epoch"] + 1, 1, everyone)
            before = _counts(members)

            # The joiner is added with every role (coordinator too), approved by alpha and beta.
            current = Registry.from_dict(_get(f"{alpha.url}/v1/federation/registry"))
            j_key = _key(joiner)
            added = current.with_peer(Peer(j_key.did, joiner.peer_url, j_key.public, "active",
                                           frozenset({"witness", "anchor", "countersign", "relay",
                                                      "coordinator"})))  # fmt: skip
            env = unsigned_envelope(
                namespace=f"fed:{FED}", schema="federation.registry.set@1.0.0",
                payload=added.registry_record_payload(memo="join"), actor=j_key.did,
                event_id=f"join-{os.urandom(6).hex()}", timestamp=int(time.time()),
                nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
            )  # fmt: skip
            body = sign_envelope(env, j_key, [_key(alpha), _key(beta)]).leaf
            for n in members:
                status, view = _post(f"{n.url}/v1/federation/proposals", body)
                assert status == 200 and view["state"] == "applied", view
            # The joiner learns it joined from its peers' heartbeats (registry catch-up).
            _wait(lambda: _get(f"{joiner.url}/v1/federation/registry") == added.to_dict(),
                  "the joiner to catch up", everyone)  # fmt: skip
            candidates = _status(alpha)["candidates"]
            assert j_key.did in candidates and len(candidates) == 4
            for n in members:
                assert j_key.did not in _status(n)["targets"][TSA]["rotation"]

            # Rounds in the epochs the joiner would coordinate the TSA target if
            # it were in the rotation already: it has no TSA rail.
            for i, epoch in enumerate(_slots(candidates, j_key.did, _status(alpha)["epoch"], 2)):
                _round(members, epoch, 10 + i, everyone)
            assert _counts(members) == before, (before, _counts(members), _why(everyone))
            for n in members:
                assert j_key.did not in _status(n)["targets"][TSA]["rotation"]

            # The joiner restarts with the TSA rail: it announces it, enters the
            # rotation from the epoch it announced, and coordinates.
            joiner.stop()
            anchor_to_tsa(joiner, tsa.url, tsa_dir / "ca.pem")
            joiner.start()
            _wait(lambda: all(j_key.did in _status(n)["targets"][TSA]["rotation"] for n in everyone),
                  "the joiner in every node's rotation", everyone)  # fmt: skip
            (slot,) = _slots(candidates, j_key.did, _status(alpha)["epoch"], 1)
            _round(members, slot, 20, everyone)
            assert _status(joiner)["counters"]["made"] >= 1
            assert _counts(members) == before, (before, _counts(members), _why(everyone))
            c = _status(joiner)["counters"]
            assert (c["missed"], c["fallback"]) == (0, 0), (c, _why(everyone))
        finally:
            for n in everyone:
                n.stop()
