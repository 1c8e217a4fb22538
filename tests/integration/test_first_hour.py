"""A newcomer's first hour with one real node process (`init`, `serve`) and the
command line, as docs/node.md tells it: each defect a first user hit, pinned.

- a fresh node, with no rail configured, says "not configured", not "backing off";
- `anchor now` exits non-zero when a level failed;
- `record --url --out` submits and keeps the signed record;
- `verify` takes the JSON that `GET .../records/{i}` returns;
- the node's log does not fill with a line per HTTP request at the default level.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remembrancer.anchoring.rfc3161.devtsa import DevTsa
from remembrancer.cli.node import setup_logging
from remembrancer.demo.procs import NodeProcess, cli, free_port, init_node, wire_federation
from remembrancer.demo.readings import metric_sum
from remembrancer.testing.democheck import wait_for

NS = "dao:vaultmesh"
PAYLOAD = '{"stream":"ops","data":{"hello":"world"}}'


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node exactly as `remembrancer init --demo-keys` makes it: no rail configured."""
    n = init_node(tmp_path_factory.mktemp("first-hour") / "mynode", origin_prefix="mynode.test")
    n.start()
    yield n
    n.stop()


def record_args(node: NodeProcess, *extra: str) -> list[str]:
    keys = node.directory / "keys" / "demo"
    return ["record", "--namespace", NS, "--schema", "ledger.append@1.0.0", "--payload", PAYLOAD,
            "--actor-key", str(keys / "demo.key"), "--witness-key", str(keys / "prod-us-east-1.key"),
            "--witness-key", str(keys / "prod-eu-west-1.key"), *extra]  # fmt: skip


def test_a_fresh_node_shows_anchoring_as_not_configured(node: NodeProcess) -> None:
    token = str(node.directory / "keys" / "admin.token")
    # The scheduler ticks every second: give it several chances to count failures.
    cli(*record_args(node, "--url", node.url))
    for _ in range(5):
        answer = json.loads(cli("anchor", "now", NS, "--url", node.url, "--token-file", token,
                                check=False).stdout)  # fmt: skip
        assert set(answer["results"].values()) == {"not_configured"}, answer
    health = get(f"{node.url}/healthz")["anchoring"]
    assert health == {ns: "not_configured" for ns in health} and NS in health
    levels = get(f"{node.url}/v1/anchoring")["namespaces"][NS]["levels"]
    assert {lv["state"] for lv in levels.values()} == {"not_configured"}
    assert all(lv["failures"] == 0 for lv in levels.values()), levels
    status = cli("anchor", "status", "--url", node.url).stdout
    assert f"{NS}: not configured" in status and "backing" not in status, status
    assert "rfc3161:tsa" in status and "not configured (no anchoring.rfc3161.tsa" in status
    # Asked to anchor now, with nothing to anchor to: a clear refusal, not a silent 0.
    now = cli("anchor", "now", NS, "--url", node.url, "--token-file", token, check=False)
    assert now.returncode == 2 and "rail_not_configured" in now.stderr, now.stderr


def test_anchor_now_exits_non_zero_when_a_level_failed(tmp_path: Path) -> None:
    n = init_node(tmp_path / "n", origin_prefix="failing.test")
    tsa = DevTsa(tmp_path / "tsa")  # its CA only: nobody serves at the URL
    n.edit_config(anchoring={"rfc3161": {"tsa": {
        "url": f"http://127.0.0.1:{free_port()}/", "trust_bundle": str(tsa.ca_cert_path),
        "timeout": 2}}})  # fmt: skip
    n.start()
    try:
        cli(*record_args(n, "--url", n.url))
        token = str(n.directory / "keys" / "admin.token")
        out = cli("anchor", "now", NS, "--level", "cold", "--url", n.url, "--token-file", token,
                  check=False)  # fmt: skip
        assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
        assert json.loads(out.stdout)["results"] == {"cold": "failed"}
        assert "anchor_now_failed" in out.stderr and "cold" in out.stderr
    finally:
        n.stop()


def test_record_url_and_out_submit_and_keep_the_record(node: NodeProcess, tmp_path: Path) -> None:
    kept = tmp_path / "record.json"
    out = cli(*record_args(node, "--url", node.url, "--out", str(kept)))
    receipt = json.loads(out.stdout)  # stdout is the node's receipt, nothing else
    assert kept.read_bytes().rstrip(b"\n").startswith(b"{") and "written to" in out.stderr
    (tmp_path / "receipt.json").write_text(out.stdout)
    vkey = node.info["vkeys"][NS]
    ok = cli("verify", str(kept), "--receipt", str(tmp_path / "receipt.json"), "--vkey", vkey)
    assert ok.stdout.startswith("OK:") and f"entry {receipt['index']} " in ok.stdout
    neither = cli(*record_args(node), check=False)
    assert neither.returncode == 2 and "--url" in neither.stderr and "--out" in neither.stderr


def test_verify_takes_the_json_the_node_serves_for_a_record(
    node: NodeProcess, tmp_path: Path
) -> None:
    receipt = json.loads(cli(*record_args(node, "--url", node.url)).stdout)
    index = receipt["index"]
    entry = tmp_path / "entry.json"
    with urllib.request.urlopen(f"{node.url}/v1/namespaces/{NS}/records/{index}", timeout=10) as r:
        entry.write_bytes(r.read())
    proof = tmp_path / "entry.tlog-proof"
    cli("proof", "inclusion", "--url", node.url, "--namespace", NS, "--index", str(index),
        "--out", str(proof))  # fmt: skip
    vkey = node.info["vkeys"][NS]
    ok = cli("verify", str(entry), "--proof", str(proof), "--vkey", vkey)
    assert ok.stdout.startswith("OK:") and f"entry {index} " in ok.stdout
    # The record inside, altered: it no longer matches the leafHash it came with.
    doc = json.loads(entry.read_text())
    doc["record"]["payload"]["data"]["hello"] = "mallory"
    entry.write_text(json.dumps(doc))
    bad = cli("verify", str(entry), "--proof", str(proof), "--vkey", vkey, check=False)
    assert bad.returncode == 1 and "entry_leaf_mismatch" in bad.stderr, bad.stderr
    # Something else entirely: says what to pass.
    entry.write_text(json.dumps({"index": index, "hello": "world"}))
    wrong = cli("verify", str(entry), "--proof", str(proof), "--vkey", vkey, check=False)
    assert wrong.returncode == 2 and "GET /v1/namespaces/NS/records/INDEX" in wrong.stderr


def test_http_client_requests_are_not_logged_at_the_default_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        setup_logging("text", "INFO")
        logging.getLogger("httpx").info('HTTP Request: POST http://peer/v1/federation "200 OK"')
        logging.getLogger("remembrancer.federation").info("peer beta is back")
        err = capsys.readouterr().err
        assert "peer beta is back" in err and "HTTP Request" not in err, err
        setup_logging("text", "debug")
        logging.getLogger("httpx").info('HTTP Request: POST http://peer/v1/federation "200 OK"')
        assert "HTTP Request" in capsys.readouterr().err
    finally:
        logging.getLogger().handlers[:], level = saved
        logging.getLogger().setLevel(level)
        for name in ("httpx", "httpcore", "urllib3", "uvicorn.access", "asyncio"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_node_log_stays_quiet_while_a_federation_talks(tmp_path: Path) -> None:
    """Two real nodes exchanging federation messages (heartbeats every 0.2 s, each an
    httpx request): at the default level their logs hold no per-request lines."""
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(2)]
    wire_federation(nodes, quorum=1, heartbeat_seconds=0.2)
    for n in nodes:
        n.start()
    try:

        def messages_received() -> float:
            with urllib.request.urlopen(f"{nodes[1].url}/metrics", timeout=10) as r:
                text = r.read().decode()
            return metric_sum(text, "remembrancer_http_requests_total", "/federation/v1/messages")

        wait_for(lambda: messages_received() >= 20, 60, "20 federation messages received")
    finally:
        for n in nodes:
            n.stop()
    for n in nodes:
        text = (n.directory / "node.log").read_text()
        assert "serving n" in text  # the node's own INFO lines are there
        assert "HTTP Request:" not in text, text[-1500:]


def test_proof_consistency_verifies_both_checkpoints_and_the_proof(
    node: NodeProcess, tmp_path: Path
) -> None:
    """`proof consistency --vkey/--trust` checks what the explorer says it checks:
    both checkpoints signed by the log, and the proof from one root to the other."""
    from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
    from remembrancer.core.note import Note
    from remembrancer.node.keyfile import read_key_file

    vkey = node.info["vkeys"][NS]
    cli(*record_args(node, "--url", node.url))
    with urllib.request.urlopen(f"{node.url}/logs/{NS}/checkpoint", timeout=10) as r:
        kept_note = r.read()
    kept = tmp_path / "kept.checkpoint"
    kept.write_bytes(kept_note)
    old = Checkpoint.parse(Note.from_bytes(kept_note).text)
    for _ in range(2):
        cli(*record_args(node, "--url", node.url))
    base = ["proof", "consistency", "--url", node.url, "--namespace", NS]

    ok = cli(*base, "--old-checkpoint", str(kept), "--vkey", vkey)
    assert json.loads(ok.stdout)["old"] == old.size
    assert f"extends its checkpoint at {old.size}" in ok.stderr and "verified:" in ok.stderr
    trust = tmp_path / "trust.yaml"
    trust.write_text(f"log_vkeys: ['{vkey}']\nmin_cosigners: 0\n")
    assert cli(*base, "--old", str(old.size), "--trust", str(trust)).returncode == 0
    # Without a key, it only fetches (and says nothing was verified).
    plain = cli(*base, "--old", str(old.size))
    assert "verified:" not in plain.stderr

    # A checkpoint the log's key signed at the same size with another root (a
    # split view): the node's proof cannot take it to the current root.
    key = read_key_file(node.directory / "keys" / "node.key")
    forged = Checkpoint(old.origin, old.size, bytes(32))
    (tmp_path / "forged.checkpoint").write_bytes(sign_checkpoint(forged, key))
    bad = cli(*base, "--old-checkpoint", str(tmp_path / "forged.checkpoint"), "--vkey", vkey,
              check=False)  # fmt: skip
    assert bad.returncode == 1 and "consistency" in bad.stderr, bad.stderr
    # A key that is not the log's.
    other = cli(*base, "--old-checkpoint", str(kept), "--vkey",
                vkey.replace(vkey.split("+")[2], "AQ" + "A" * 42 + "="), check=False)  # fmt: skip
    assert other.returncode in (1, 2) and "error:" in other.stderr, other.stderr
