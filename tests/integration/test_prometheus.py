"""The alert rules and the dashboard in deploy/, with Debian's real Prometheus:
``promtool check rules`` and ``promtool test rules`` on the rules, and a real
``prometheus`` server scraping a real three-node federation, evaluating the
rules and every dashboard query, and raising alerts when a node is killed.

Every metric a node exposes is in docs/operations.md's table, and the table
names nothing a node does not expose; the rules and the dashboard use only
metrics from the table."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.cli.client import api_json
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import example_record
from remembrancer.testing.prom import PrometheusServer, families

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "remembrancer.json"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bremembrancer_[a-z0-9_]+")
# Grafana's variables, as a query through Prometheus's API sees them.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$instance": ".*"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def documented_metrics() -> dict[str, tuple[str, str]]:
    """docs/operations.md's metric table: name -> (type, labels)."""
    rows = {}
    for line in OPERATIONS.read_text().splitlines():
        m = re.match(
            r"^\| `(remembrancer_[a-z0-9_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", line
        )
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is in the table twice"
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


def base_name(name: str) -> str:
    """A series name as the table lists it (histograms by their base name)."""
    return re.sub(r"_(bucket|count|sum)$", "", name)


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in doc["templating"]["list"] if "definition" in v]
    return out


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


# --------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------


def test_the_alert_rules_pass_promtool_check() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    out = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True,
                         text=True, timeout=120, cwd=RULE_TESTS.parent)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests can fail: with one threshold changed they do."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    assert "remembrancer_peer_heartbeat_age_seconds > 30" in text
    (tmp_path / RULES.name).write_text(
        text.replace("heartbeat_age_seconds > 30", "heartbeat_age_seconds > 300")
    )
    out = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert out.returncode != 0 and "RemembrancerPeerHeartbeatsMissing" in out.stdout + out.stderr


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", ())
             if case.get("exp_alerts")}  # fmt: skip
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    assert set(names) == fired
    for r in rules():
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_the_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "remembrancer" and doc["title"] == "Remembrancer"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


def test_every_metric_in_the_rules_and_the_dashboard_is_documented() -> None:
    table = documented_metrics()
    assert len(table) >= 30
    used = {base_name(n) for r in rules() for n in METRIC.findall(r["expr"])}
    used |= {base_name(n) for q in dashboard_queries() for n in METRIC.findall(q)}
    assert used - set(table) == set()
    for name, (kind, _) in table.items():
        assert name.endswith("_total") == (kind == "counter"), name


# --------------------------------------------------------------------------
# A real Prometheus and a real federation
# --------------------------------------------------------------------------


def wait_until(check: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.25)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    dev = DevTsa(tmp_path / "tsa")
    with DevTsaServer(dev) as tsa:
        nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
        for n in nodes:
            anchor_to_tsa(n, tsa.url, tmp_path / "tsa" / "ca.pem", every="1s")
        wire_witnessing(nodes, mirror=True)
        wire_federation(nodes, quorum=2)
        try:
            for n in nodes:
                n.start()
            yield nodes
        finally:
            for n in nodes:
                n.stop()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_real_prometheus_scrapes_the_nodes_evaluates_the_rules_and_raises_alerts(
    tmp_path: Path, federation: list[NodeProcess]
) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    nodes = federation
    now = int(time.time())
    for n in nodes:
        api_json("POST", f"{n.url}/v1/namespaces/dao:vaultmesh/records",
                 example_record("dao:vaultmesh", 0, timestamp=now).leaf)  # fmt: skip
    targets = [f"127.0.0.1:{n.port}" for n in nodes]
    with PrometheusServer(tmp_path / "prometheus", targets, rule_files=[RULES]) as prom:

        def logs() -> str:
            return prom.log_tail() + "\n".join(n.log_tail(2000) for n in nodes)

        def all_up() -> bool:
            active = prom.api("targets")["activeTargets"]
            return len(active) == 3 and all(t["health"] == "up" for t in active)

        wait_until(all_up, 30, "every node scraped", logs)
        # A node metric, through Prometheus's query API.
        sizes = wait_until(lambda: prom.query('remembrancer_log_size{namespace="dao:vaultmesh"} >= 1'),
                           30, "the log sizes in Prometheus", logs)  # fmt: skip
        assert sorted(r["metric"]["instance"] for r in sizes) == sorted(targets)
        assert all(r["metric"]["job"] == "remembrancer" for r in sizes)
        peers = wait_until(lambda: len(got := prom.query('remembrancer_peer_status{status="active"} == 1')) == 6 and got,
                           30, "each node's two active peers", logs)  # fmt: skip
        assert {r["metric"]["peer"] for r in peers} == {n.info["did"] for n in nodes}
        wait_until(lambda: prom.query("remembrancer_receipt_final_seconds_count > 0"), 60,
                   "final federation receipts in Prometheus", logs)  # fmt: skip

        # Every metric the table documents, and nothing else, is what a node exposes.
        exposed = {name for name, kind in families(nodes[0].url).items()
                   if name.startswith("remembrancer_") and not name.endswith("_created")}  # fmt: skip
        table = documented_metrics()
        assert exposed == set(table), (exposed - set(table), set(table) - exposed)
        for name, kind in families(nodes[0].url).items():
            if name in table:
                assert table[name][0] == kind, name

        # The rules are loaded and evaluate without errors on the real series.
        def evaluated() -> list[dict[str, Any]]:
            loaded = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            # lastEvaluation is "0001-01-01T00:00:00Z" until a rule ran
            done = len(loaded) == len(rules()) and all(
                not r["lastEvaluation"].startswith("0001") for r in loaded
            )
            return loaded if done else []

        loaded = wait_until(evaluated, 30, "the rules evaluated", logs)
        assert all(r["health"] == "ok" for r in loaded), [r for r in loaded if r["health"] != "ok"]
        # A healthy federation raises nothing (once the rules ran on scraped series:
        # before the first scrape, RemembrancerNoNodeScraped is pending).
        wait_until(lambda: prom.api("alerts")["alerts"] == [], 15, "no alert", logs)
        # Every dashboard query evaluates.
        for q in dashboard_queries():
            expr = q
            for var, val in GRAFANA_VARS.items():
                expr = expr.replace(var, val)
            if expr.startswith("label_values("):
                assert prom.api("label/instance/values")
                continue
            prom.query(expr)  # raises unless Prometheus evaluated it

        # A node killed: Prometheus sees it down, and the survivors stop hearing from it.
        dead = nodes[2]
        dead_did = dead.info["did"]
        dead.stop(signal.SIGKILL)

        def alerts(name: str, **labels: str) -> list[dict[str, Any]]:
            return [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == name
                    and all(a["labels"].get(k) == v for k, v in labels.items())]  # fmt: skip

        down = wait_until(lambda: alerts("RemembrancerNodeDown", instance=targets[2]), 30,
                          "RemembrancerNodeDown", logs)  # fmt: skip
        assert down[0]["labels"]["severity"] == "critical"
        assert down[0]["state"] in ("pending", "firing")
        missing = wait_until(lambda: len(got := alerts("RemembrancerPeerHeartbeatsMissing", peer=dead_did)) == 2 and got,
                             90, "RemembrancerPeerHeartbeatsMissing from both survivors", logs)  # fmt: skip
        assert {a["labels"]["instance"] for a in missing} == set(targets[:2])
        assert {a["state"] for a in missing} <= {"pending", "firing"}
        assert not alerts("RemembrancerNodeDown", instance=targets[0])
