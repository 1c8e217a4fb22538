"""Real `remembrancer serve` processes, driven by the CLI as an operator would:
init, serve, record --url, proof, verify, checkpoint, witness add-checkpoint,
graceful shutdown, and refusing a data directory from a newer version."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from remembrancer.demo.procs import cli, init_node


@pytest.fixture
def two_nodes(tmp_path: Path):  # type: ignore[no-untyped-def]
    alpha = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    beta = init_node(tmp_path / "beta", origin_prefix="beta.test")
    yield alpha, beta
    alpha.stop()
    beta.stop()


def test_operator_flow_with_two_real_nodes(two_nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = two_nodes
    alpha.start()
    vkey = alpha.info["vkeys"]["dao:vaultmesh"]
    # beta witnesses alpha's dao:vaultmesh log.
    beta.edit_config(witness={"name": "beta.test/witness", "logs": [{"vkey": vkey}]})
    beta.start()

    demo = alpha.directory / "keys" / "demo"
    receipts = []
    for i in range(3):
        out = cli("record", "--namespace", "dao:vaultmesh", "--schema", "ledger.append@1.0.0",
                  "--payload", json.dumps({"stream": "ops", "data": {"i": i}}),
                  "--actor-key", str(demo / "demo.key"),
                  "--witness-key", str(demo / "prod-us-east-1.key"),
                  "--witness-key", str(demo / "prod-eu-west-1.key"),
                  "--url", alpha.url)  # fmt: skip
        receipts.append(json.loads(out.stdout))
    assert [r["index"] for r in receipts] == [0, 1, 2]

    # A record written to a file, submitted, proven and verified offline.
    record_file = tmp_path / "rec.json"
    cli("record", "--namespace", "dao:vaultmesh", "--schema", "vote.cast@1.0.0",
        "--payload", '{"proposalId": "p-1", "choice": "approve"}',
        "--actor-key", str(demo / "demo.key"), "--witness-key", str(demo / "prod-us-east-1.key"),
        "--witness-key", str(demo / "prod-dao-suite.key"), "--out", str(record_file))  # fmt: skip
    from remembrancer.cli.record import submit
    from remembrancer.core.record import Record

    receipt = submit(alpha.url, Record.from_bytes(record_file.read_bytes().strip()))
    proof_file = tmp_path / "rec.tlog-proof"
    cli("proof", "inclusion", "--url", alpha.url, "--namespace", "dao:vaultmesh",
        "--index", str(receipt["index"]), "--out", str(proof_file))  # fmt: skip
    ok = cli("verify", str(record_file), "--proof", str(proof_file), "--vkey", vkey)
    assert ok.stdout.startswith("OK:")
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps(receipt))
    assert (
        cli("verify", str(record_file), "--receipt", str(receipt_file), "--vkey", vkey).returncode
        == 0
    )
    # A wrong key does not verify (exit 1).
    other = beta.info["vkeys"]["dao:vaultmesh"]
    bad = cli("verify", str(record_file), "--proof", str(proof_file), "--vkey", other, check=False)
    assert bad.returncode == 1 and "error:" in bad.stderr

    checkpoint = cli(
        "checkpoint", "--url", alpha.url, "--namespace", "dao:vaultmesh", "--vkey", vkey
    )
    assert checkpoint.stdout.splitlines()[1] == "4"

    # Witnessing: beta cosigns alpha's checkpoint; after growth, again via a 409 and a proof.
    wvkey = beta.info["witness"]["vkey"]
    first = cli("witness", "add-checkpoint", "--witness", beta.url + "/witness", "--log-url", alpha.url,
                "--namespace", "dao:vaultmesh", "--witness-vkey", wvkey)  # fmt: skip
    assert "— beta.test/witness " in first.stdout
    cli("record", "--namespace", "dao:vaultmesh", "--schema", "ledger.append@1.0.0", "--payload",
        '{"stream": "ops", "data": 5}', "--actor-key", str(demo / "demo.key"),
        "--witness-key", str(demo / "prod-us-east-1.key"), "--witness-key", str(demo / "prod-eu-west-1.key"),
        "--url", alpha.url)  # fmt: skip
    second = cli("witness", "add-checkpoint", "--witness", beta.url + "/witness", "--log-url", alpha.url,
                 "--namespace", "dao:vaultmesh", "--witness-vkey", wvkey)  # fmt: skip
    assert second.stdout.splitlines()[1] == "5"

    # Graceful shutdown drains and exits cleanly; a restart serves the same log.
    assert alpha.stop(signal.SIGTERM) == 0
    alpha.start()
    again = cli("checkpoint", "--url", alpha.url, "--namespace", "dao:vaultmesh", "--vkey", vkey)
    assert again.stdout.splitlines()[1] == "5"


def test_refuses_a_data_directory_from_a_newer_version(tmp_path: Path) -> None:
    node = init_node(tmp_path / "n")
    node.start()
    node.stop()
    marker = node.directory / "data" / "remembrancer-data.json"
    marker.write_text(json.dumps({"format": 99}))
    with pytest.raises(AssertionError) as e:
        node.start(timeout=15)
    assert "data_format_too_new" in str(e.value)


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    node = init_node(tmp_path / "n")
    doc = yaml.safe_load(node.config.read_text())
    doc["listen"] = "nowhere"
    node.config.write_text(yaml.safe_dump(doc))
    out = cli("serve", "--config", str(node.config), check=False)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "listen_invalid" in out.stderr


def test_json_logs_env_overrides_and_marked_demo_keys(tmp_path: Path) -> None:
    from remembrancer.demo.procs import free_port

    node = init_node(tmp_path / "n")
    readme = (node.directory / "keys" / "demo" / "README").read_text()
    assert "PUBLIC" in readme and "demo" in readme.lower()
    assert oct((node.directory / "keys" / "node.key").stat().st_mode & 0o777) == "0o600"
    port = free_port()
    node.port = port  # REMEMBRANCER_LISTEN overrides the file's listen address
    node.start(env={"REMEMBRANCER_LOG_FORMAT": "json", "REMEMBRANCER_LISTEN": f"127.0.0.1:{port}"})
    node.stop()
    lines = [line for line in node.log_tail(20000).splitlines() if line.startswith("{")]
    assert lines, node.log_tail()
    parsed = [json.loads(line) for line in lines]
    assert any("serving" in p["message"] for p in parsed)
    assert all({"ts", "level", "logger", "message"} <= set(p) for p in parsed)


def _children(pid: int) -> list[str]:
    """The command lines of a process's live children."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                out.append(
                    Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
            except OSError:
                pass  # it has just exited
    return out


def test_a_served_node_checks_signatures_in_worker_processes(tmp_path: Path) -> None:
    """``limits.verify_processes`` in a node started as ``python -m
    remembrancer.cli serve``, as the demo starts it: a batch of 40 records
    is checked by two spawned workers that stay up (a worker that re-ran the
    CLI, or died, would leave the node verifying in threads, and say so)."""
    import asyncio
    import time

    import httpx

    from remembrancer.demo.keys import demo_key
    from remembrancer.demo.records import ledger_payload, make_record

    node = init_node(tmp_path / "n")
    doc = yaml.safe_load(node.config.read_text())
    doc["limits"] = {"verify_processes": True, "batch_wait_ms": 300}
    node.config.write_text(yaml.safe_dump(doc))
    node.start()
    actor = demo_key("did:vm:actor:demo")
    witnesses = [
        demo_key("did:vm:arbiter:prod-us-east-1"),
        demo_key("did:vm:arbiter:prod-eu-west-1"),
    ]
    leaves = [make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), actor,
                          witnesses, timestamp=int(time.time())).leaf for i in range(40)]  # fmt: skip

    async def submit() -> list[int]:
        async with httpx.AsyncClient(base_url=node.url, timeout=60) as c:
            answers = await asyncio.gather(
                *(c.post("/v1/namespaces/dao:vaultmesh/records", content=x) for x in leaves)
            )
        return [a.status_code for a in answers]

    try:
        assert asyncio.run(submit()) == [200] * 40
        assert node.proc is not None
        workers = [c for c in _children(node.proc.pid) if "spawn_main" in c]
        assert len(workers) == 2, (_children(node.proc.pid), node.log_tail())
        assert "verification workers failed" not in node.log_tail(20000)
        assert "address already in use" not in node.log_tail(20000)
    finally:
        node.stop()


def test_a_served_node_collects_garbage_with_its_own_thresholds(tmp_path: Path) -> None:
    """Once up, a node has frozen what it started with and runs the collector
    with node/collector.py's thresholds, and says so in its metrics."""
    import httpx

    from remembrancer.node.collector import THRESHOLDS

    node = init_node(tmp_path / "n").start()
    try:
        text = httpx.get(node.url + "/metrics", timeout=10).text
    finally:
        node.stop()
    found = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("remembrancer_gc_threshold{")
    }
    assert found == {str(g): float(v) for g, v in enumerate(THRESHOLDS)}
    assert THRESHOLDS != (700, 10, 10)  # CPython's defaults: the setting must change something
