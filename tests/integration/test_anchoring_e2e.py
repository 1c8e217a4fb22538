"""Anchoring end to end: a real `remembrancer serve` anchors its logs on their
cadence to the development TSA (real RFC 3161 over HTTP) and to a real anvil,
re-verifies them to finality, and hands out receipts that a third party checks
with `remembrancer verify` and `remembrancer anchor verify`."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.note import parse_vkey
from remembrancer.core.rfc6962 import hash_leaf, verify_inclusion
from remembrancer.demo.anvil import DEV_KEY
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import cli, free_port, init_node
from remembrancer.demo.records import ledger_payload, make_record


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _post(url: str, body: bytes) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_node_anchors_on_cadence_and_receipts_verify_offline(tmp_path: Path, anvil) -> None:  # type: ignore[no-untyped-def]
    tsa_dir = tmp_path / "tsa"
    with DevTsaServer(DevTsa(tsa_dir)) as tsa:
        node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
        key = node.directory / "keys" / "evm.key"
        key.write_text(DEV_KEY + "\n")
        key.chmod(0o600)
        ns_file = node.directory / "namespaces.yaml"
        doc = yaml.safe_load(ns_file.read_text())
        doc["namespaces"]["dao:vaultmesh"]["cadence"] = {
            "fast": {"target": "eip155:31337", "every": "1s", "confirmations": 2},
            "cold": {"target": "rfc3161:tsa", "every": "1s"},
        }
        doc["namespaces"]["fin:clearing"]["cadence"] = {
            "cold": {"target": "rfc3161:tsa", "every": "1s"}
        }
        ns_file.write_text(yaml.safe_dump(doc))
        node.edit_config(
            anchoring={
                "rfc3161": {"tsa": {"url": tsa.url, "trust_bundle": str(tsa_dir / "ca.pem")}},
                "eip155": {"31337": {"rpc": anvil.url, "key_file": "keys/evm.key"}},
            },
            scheduler={"tick_seconds": 0.2, "reverify_seconds": 0.3},
        )
        node.start()
        try:
            actor = demo_key("did:vm:actor:demo")
            w = [
                demo_key("did:vm:arbiter:prod-us-east-1"),
                demo_key("did:vm:arbiter:prod-eu-west-1"),
            ]
            records = [make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), actor, w,
                                   timestamp=int(time.time())) for i in range(5)]  # fmt: skip
            for r in records:
                _post(f"{node.url}/v1/namespaces/dao:vaultmesh/records", r.leaf)

            def anchors() -> list[dict]:  # type: ignore[type-arg]
                got = _get(f"{node.url}/v1/namespaces/dao:vaultmesh/anchors")
                return [a for rec in got["receipts"] for a in rec["anchors"]]

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = anchors()
                if any(a["target"] == "eip155:31337" for a in found):
                    anvil.mine(3)  # depth for the EVM anchor's 2 confirmations
                statuses = {(a["target"], a["status"]) for a in found}
                if ("rfc3161:tsa", "verified") in statuses and (
                    "eip155:31337",
                    "verified",
                ) in statuses:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"anchors did not verify: {anchors()}\n{node.log_tail()}")

            evm = next(
                a for a in anchors() if a["target"] == "eip155:31337" and a["status"] == "verified"
            )
            assert evm["finality"]["state"] == "final" and evm["finality"]["requiredDepth"] == 2
            tsa_anchor = next(a for a in anchors() if a["target"] == "rfc3161:tsa")
            assert tsa_anchor["chain"] == "TSA" and tsa_anchor["evidence"]["tsr"]

            # A record's receipt at its anchored checkpoint: record -> checkpoint -> rail.
            # The two levels anchor on their own clocks, so the first checkpoint the
            # TSA anchored may come after one only the chain anchored: the record is
            # the first one that no checkpoint anchored before the TSA's covers.
            targets_at: dict[int, set[str]] = {}
            for entry in _get(f"{node.url}/v1/namespaces/dao:vaultmesh/anchors")["receipts"]:
                targets_at.setdefault(entry["size"], set()).update(
                    a["target"] for a in entry["anchors"]
                )
            tsa_size = min(size for size, t in targets_at.items() if "rfc3161:tsa" in t)
            rec = records[max((size for size in targets_at if size < tsa_size), default=0)]
            receipt = _get(
                f"{node.url}/v1/namespaces/dao:vaultmesh/receipts/{rec.event_hash_hex}?anchored=true"
            )
            vkey = node.info["vkeys"]["dao:vaultmesh"]
            cp = open_checkpoint(receipt["checkpoint"].encode(), parse_vkey(vkey)).checkpoint
            verify_inclusion(receipt["index"], cp.size, hash_leaf(rec.leaf),
                             [base64.b64decode(h) for h in receipt["proof"]], cp.root_hash)  # fmt: skip
            assert {a["target"] for a in receipt["anchors"]} >= {"rfc3161:tsa"}
            receipt_file = tmp_path / "receipt.json"
            receipt_file.write_text(json.dumps(receipt))
            record_file = tmp_path / "rec.json"
            record_file.write_bytes(rec.leaf)
            assert (
                cli(
                    "verify", str(record_file), "--receipt", str(receipt_file), "--vkey", vkey
                ).returncode
                == 0
            )
            checked = cli("anchor", "verify", str(receipt_file), "--tsa-trust", str(tsa_dir / "ca.pem"),
                          "--evm-rpc", anvil.url)  # fmt: skip
            assert "verified" in checked.stdout
            # With a foreign trust bundle, the TSA anchor does not verify.
            DevTsa(tmp_path / "other-tsa")
            foreign = cli("anchor", "verify", str(receipt_file), "--tsa-trust", str(tmp_path / "other-tsa" / "ca.pem"),
                          check=False)  # fmt: skip
            assert foreign.returncode == 1, foreign.stdout + foreign.stderr

            health = _get(f"{node.url}/healthz")
            assert health["anchoring"]["dao:vaultmesh"] == "ok"
            metrics = urllib.request.urlopen(f"{node.url}/metrics", timeout=5).read().decode()
            assert (
                'remembrancer_anchors_succeeded_total{level="cold",namespace="dao:vaultmesh",target="rfc3161:tsa",via="direct"}'
                in metrics
            )
            status = cli("anchor", "status", "--url", node.url)
            assert "dao:vaultmesh: ok" in status.stdout
            token_file = str(node.directory / "keys" / "admin.token")
            now = json.loads(cli("anchor", "now", "dao:vaultmesh", "--level", "cold", "--url", node.url,
                                 "--token-file", token_file).stdout)  # fmt: skip
            assert (
                now["results"]["cold"] == "unchanged"
            )  # the log has not grown since the last anchor
            denied = cli("anchor", "now", "dao:vaultmesh", "--url", node.url, "--token", "wrong-token-xxxxxxxx",
                         check=False)  # fmt: skip
            assert denied.returncode != 0 and "unauthorized" in denied.stderr
        finally:
            node.stop()


def test_a_tsa_outage_backs_off_and_recovers_with_nothing_lost(tmp_path: Path) -> None:
    tsa_dir = tmp_path / "tsa"
    port = free_port()
    node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    ns_file = node.directory / "namespaces.yaml"
    doc = yaml.safe_load(ns_file.read_text())
    doc["namespaces"]["dao:vaultmesh"]["cadence"] = {
        "cold": {"target": "rfc3161:tsa", "every": "1s"}
    }
    doc["namespaces"]["fin:clearing"]["cadence"] = {}
    ns_file.write_text(yaml.safe_dump(doc))
    DevTsa(tsa_dir)  # the CA exists before the node reads its trust bundle
    node.edit_config(
        anchoring={
            "rfc3161": {
                "tsa": {"url": f"http://127.0.0.1:{port}/", "trust_bundle": str(tsa_dir / "ca.pem")}
            }
        },
        scheduler={"tick_seconds": 0.2, "reverify_seconds": 0.5},
    )
    node.start()
    try:
        actor = demo_key("did:vm:actor:demo")
        w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
        rec = make_record(
            "dao:vaultmesh",
            "ledger.append@1.0.0",
            ledger_payload(1),
            actor,
            w,
            timestamp=int(time.time()),
        )
        _post(f"{node.url}/v1/namespaces/dao:vaultmesh/records", rec.leaf)
        # The TSA is down: the level fails and backs off; records are still admitted.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            level = _get(f"{node.url}/v1/namespaces/dao:vaultmesh")["anchoring"]["levels"]["cold"]
            if level["failures"] >= 2:
                break
            time.sleep(0.2)
        assert (level["failures"] >= 2 and "unreachable" in (level["last_error"] or "")) or level[
            "last_error"
        ]
        assert level["retry_at"] is not None
        rec2 = make_record(
            "dao:vaultmesh",
            "ledger.append@1.0.0",
            ledger_payload(2),
            actor,
            w,
            timestamp=int(time.time()),
        )
        _post(f"{node.url}/v1/namespaces/dao:vaultmesh/records", rec2.leaf)
        # The TSA comes back: the next attempt after the backoff anchors the latest checkpoint.
        with DevTsaServer(DevTsa(tsa_dir), port=port):
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                got = _get(f"{node.url}/v1/namespaces/dao:vaultmesh/anchors")["receipts"]
                if got and got[-1]["anchors"] and got[-1]["anchors"][0]["status"] == "verified":
                    break
                time.sleep(0.3)
            else:
                pytest.fail(f"no anchor after the TSA came back: {node.log_tail()}")
        assert got[-1]["size"] == 2  # both records are covered
        level = _get(f"{node.url}/v1/namespaces/dao:vaultmesh")["anchoring"]["levels"]["cold"]
        assert level["failures"] == 0
    finally:
        node.stop()
