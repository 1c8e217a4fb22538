"""Cadence governance as docs/governance.md tells it, with one real node and the
command line: propose, see the proposal pending (CLI and API), vote until the
threshold, see the change applied and logged; an admin's change applies at once
and the scheduler logs the moment a scheduled change comes into effect."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from remembrancer.demo.procs import NodeProcess, cli, init_node
from remembrancer.testing.democheck import wait_for

NS = "dao:vaultmesh"
ARBITERS = ("prod-us-east-1", "prod-eu-west-1", "prod-dao-suite")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    n = init_node(tmp_path_factory.mktemp("gov") / "mynode", origin_prefix="gov.test")
    n.start()
    yield n
    n.stop()


def key(node: NodeProcess, name: str) -> str:
    return str(node.directory / "keys" / "demo" / f"{name}.key")


def signed_by(node: NodeProcess, actor: str) -> list[str]:
    """The actor and two record witnesses (never the actor itself: its own
    signature does not count towards the witness quorum)."""
    witnesses = [a for a in ARBITERS if a != actor][:2]
    out = ["--actor-key", key(node, actor), "--url", node.url]
    for w in witnesses:
        out += ["--witness-key", key(node, w)]
    return out


def view(node: NodeProcess) -> Any:
    with urllib.request.urlopen(f"{node.url}/v1/namespaces/{NS}/governance", timeout=10) as r:
        return json.loads(r.read())


def test_propose_vote_and_apply(node: NodeProcess) -> None:
    before = view(node)
    assert before["rule"]["vote_threshold"] == 2 and before["pending"] == []
    proposed = json.loads(cli("governance", "propose", NS, "--cadence", '{"fast": {"every": "45s"}}',
                              "--memo", "faster liveness anchors", *signed_by(node, "demo")).stdout)  # fmt: skip
    pid = proposed["proposal"]
    pending = view(node)["pending"]
    assert [p["proposal"] for p in pending] == [pid] and pending[0]["votes_needed"] == 2
    status = cli("governance", "status", NS, "--url", node.url).stdout
    assert pid in status and "2 more needed" in status and "faster liveness anchors" in status

    cli("governance", "vote", NS, pid, *signed_by(node, "prod-us-east-1"))
    assert view(node)["pending"][0]["votes_needed"] == 1
    cli("governance", "vote", NS, pid, *signed_by(node, "prod-us-east-1"))  # twice: counts once
    assert view(node)["pending"][0]["votes_needed"] == 1
    cli("governance", "vote", NS, pid, *signed_by(node, "prod-eu-west-1"))
    after = view(node)
    assert after["pending"] == []
    applied = [a for a in after["applied"] if a["proposal"] == pid]
    assert applied and applied[0]["state"] == "in_effect"
    assert applied[0]["approved_by"] and len(applied[0]["approved_by"]) == 2
    assert after["cadence"]["fast"]["every"] == "45s"
    log = (node.directory / "node.log").read_text()
    assert f"proposal {pid} by " in log and "is waiting for votes" in log
    assert f"proposal {pid} has 1 vote(s)" in log
    assert f"governance: {NS} approved cadence change" in log and pid in log


def test_an_admin_change_applies_at_its_effective_time(node: NodeProcess) -> None:
    when = dt.datetime.fromtimestamp(int(time.time()) + 3, dt.UTC).isoformat()
    proposed = json.loads(cli("governance", "propose", NS, "--cadence", '{"cold": {"every": "2d"}}',
                              "--effective-after", when, *signed_by(node, "dao-council")).stdout)  # fmt: skip
    pid = proposed["proposal"]
    scheduled = [a for a in view(node)["applied"] if a["proposal"] == pid]
    assert scheduled and scheduled[0]["state"] == "scheduled"  # admin: approved at once
    assert scheduled[0]["approved_by"] == [scheduled[0]["approved_by"][0]]
    wait_for(lambda: view(node)["cadence"]["cold"]["every"] == "2d", 30, "the change in effect")
    wait_for(lambda: f"cadence of {NS} now in effect" in (node.directory / "node.log").read_text(),
             30, "the scheduler's log line")  # fmt: skip
    status = cli("governance", "status", NS, "--url", node.url).stdout
    assert f"{pid}: " in status and "in_effect" in status


def test_a_proposal_for_another_namespace_is_refused(node: NodeProcess) -> None:
    out = cli("governance", "propose", "fin:clearing", "--cadence", '{"cold": {"every": "1d"}}',
              *signed_by(node, "demo"), check=False)  # fmt: skip
    assert out.returncode != 0 and "error:" in out.stderr
    bad = cli("governance", "propose", NS, "--cadence", "[]", *signed_by(node, "demo"), check=False)
    assert bad.returncode == 2 and "cadence_invalid" in bad.stderr
