"""The pieces of ``remembrancer demo`` that need no processes: the record
stream passes the example namespaces' admission policy, ports are chosen as
documented, progress figures are read correctly from Prometheus text, and
the anvil development keys are the ones anvil funds."""

from __future__ import annotations

import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from remembrancer.cli.namespace import example_namespaces_path
from remembrancer.core.admission import check_policy, check_signatures, lookup_namespace
from remembrancer.core.errors import ConfigError
from remembrancer.demo.anvil import DEV_KEYS
from remembrancer.demo.localfed import Ports, choose_ports, port_free
from remembrancer.demo.readings import metric_sum, shown
from remembrancer.demo.workload import Workload
from remembrancer.log.namespaces import load_namespaces_file
from remembrancer.log.schemas import bundled_schemas


def test_every_kind_of_demo_record_is_admitted_by_the_example_policy() -> None:
    schemas = bundled_schemas()
    spaces = load_namespaces_file(example_namespaces_path(), schemas)
    now = int(time.time())
    stream = Workload("alpha")
    kinds: Counter[tuple[str, str]] = Counter()
    for _ in range(60):
        record = stream.next(now)
        ns = lookup_namespace(record, spaces)
        check_policy(record, ns, now, schemas)  # rules 1-4: schema allowed, payload valid
        report = check_signatures(record, ns)  # rules 5-6: actor, witness quorum
        assert len(report.counted) >= ns.min_required
        kinds[(record.namespace, record.schema)] += 1
    assert set(kinds) == {
        ("dao:vaultmesh", "ledger.append@1.0.0"),
        ("dao:vaultmesh", "workflow.transition@1.0.0"),
        ("dao:vaultmesh", "vote.cast@1.0.0"),
        ("fin:clearing", "sequencer.commit@1.0.0"),
        ("fin:clearing", "indexer.checkpoint@1.0.0"),
        ("fin:clearing", "ledger.append@1.0.0"),
    }
    # Votes are cast by the arbiters themselves, not by the demo actor.
    votes = [r for r in (stream.next(now) for _ in range(40)) if r.schema.startswith("vote.cast")]
    assert len({r.actor for r in votes}) > 1


def test_two_streams_never_repeat_each_others_payloads() -> None:
    now = int(time.time())
    alpha, beta = Workload("alpha"), Workload("beta")
    a = [alpha.next(now).payload for _ in range(20)]
    b = [beta.next(now).payload for _ in range(20)]
    assert len({repr(p) for p in a}) == 20
    assert not [p for p in a if p in b]
    # A stream that continues from a position picks up where the other stopped.
    assert Workload("alpha", start=10).next(now).payload == a[10]


def _listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_ports_explicit_base_must_be_free() -> None:
    with _listening() as s:
        busy = s.getsockname()[1]
        assert not port_free(busy)
        base = busy - 3 if busy > 3 else busy
        with pytest.raises(ConfigError) as e:
            choose_ports(base)
        assert e.value.code == "demo_port_in_use" and busy in e.value.details["busy"]


def test_ports_zero_and_layout() -> None:
    ports, note = choose_ports(0)
    assert note is None and len(set(ports.all())) == 5
    assert Ports.from_base(9000).all() == (9000, 9001, 9002, 9003, 9004)
    with pytest.raises(ConfigError) as e:
        choose_ports(65533)
    assert e.value.code == "demo_port_invalid"


def test_metric_sum_adds_matching_series() -> None:
    text = "\n".join([
        "# HELP remembrancer_xns_delivered_total deliveries",
        'remembrancer_xns_delivered_total{action="notify",source="a:b",target="c:d"} 2.0',
        'remembrancer_xns_delivered_total{action="query",source="c:d",target="a:b"} 1.0',
        'remembrancer_witness_requests_total{outcome="cosigned"} 40.0',
        'remembrancer_witness_requests_total{outcome="witness_conflict"} 3.0',
        "remembrancer_xns_delivered_totalx 9",
    ])  # fmt: skip
    assert metric_sum(text, "remembrancer_xns_delivered_total") == 3.0
    assert metric_sum(text, "remembrancer_witness_requests_total", 'outcome="cosigned"') == 40.0


def test_shown_paths_are_relative_below_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / "demo-data" / "proofs" / "a b.json") == "'demo-data/proofs/a b.json'"
    assert shown(Path("/")) == "/"


def test_anvil_dev_keys_are_anvils_funded_accounts() -> None:
    eth_account = pytest.importorskip("eth_account")
    addresses = [eth_account.Account.from_key(k).address for k in DEV_KEYS]
    assert addresses == [
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    ]
