"""Geo-redundant federation receipts with real node processes: three nodes in
two regions (``eu-west`` twice, ``us-east``), quorum 2, ``receipts.min_regions``
2.  While the us-east node is down, the two eu-west nodes make a quorum but
not two regions, so no receipt is final; once it is back, the receipt is
final, and ``federation verify`` and the explorer show the regions that
signed."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import anchor_to_tsa, cli, init_node, wire_federation, wire_witnessing
from remembrancer.demo.records import ledger_payload, make_record

NS = "dao:vaultmesh"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _post(url: str, body: bytes, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_a_quorum_in_one_region_is_not_final_and_verify_shows_the_regions(tmp_path: Path) -> None:
    tsa_dir = tmp_path / "tsa"
    with DevTsaServer(DevTsa(tsa_dir)) as tsa:
        nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
        for n in nodes:
            anchor_to_tsa(n, tsa.url, tsa_dir / "ca.pem")
        wire_witnessing(nodes, quorum=1)
        wire_federation(nodes, quorum=2, regions=["eu-west", "eu-west", "us-east"], min_regions=2)
        alpha, beta, gamma = nodes
        token = (alpha.directory / "keys" / "admin.token").read_text().strip()
        registry_file = alpha.directory / "federation.yaml"
        try:
            alpha.start()
            beta.start()
            reg = _get(f"{alpha.url}/v1/federation/registry")
            assert reg["receipts"] == {"min_regions": 2}
            assert sorted(p.get("region") for p in reg["peers"]) == [
                "eu-west",
                "eu-west",
                "us-east",
            ]
            actor = demo_key("did:vm:actor:demo")
            witnesses = [demo_key("did:vm:arbiter:prod-us-east-1"),
                         demo_key("did:vm:arbiter:prod-eu-west-1")]  # fmt: skip
            rec = make_record(NS, "ledger.append@1.0.0", ledger_payload(1), actor, witnesses,
                              timestamp=int(time.time()))  # fmt: skip
            status, _ = _post(f"{alpha.url}/v1/namespaces/{NS}/records", rec.leaf)
            assert status in (200, 201, 202)

            def verified() -> bool:
                got = _get(f"{alpha.url}/v1/namespaces/{NS}/anchors")["receipts"]
                return bool(got) and any(a["status"] == "verified" for a in got[-1]["anchors"])

            _wait(verified, "a verified anchor")
            # Two countersigners, both in eu-west: the quorum, not the regions.
            status, err = _post(f"{alpha.url}/v1/admin/federation/propagate/{NS}", b"", token)
            assert status == 504 and err["error"]["code"] == "quorum_not_reached", err
            assert "from 1 regions" in err["error"]["message"], err
            assert _get(f"{alpha.url}/v1/federation/receipts")["receipts"] == []
            assert _get(f"{beta.url}/v1/federation/receipts")["receipts"] == []

            # The us-east node is back: the next receipt spans both regions.
            gamma.start()
            status, final = _post(f"{alpha.url}/v1/admin/federation/propagate/{NS}", b"", token)
            assert status == 200 and final["quorum_met"] is True, final
            stored = _wait(lambda: _get(f"{alpha.url}/v1/federation/receipts")["receipts"],
                           "the stored final receipt")  # fmt: skip
            assert all(r["regions"]["min_regions"] == 2 for r in stored)
            assert any(r["regions"]["signed"] == ["eu-west", "us-east"] for r in stored)

            receipt_file = tmp_path / "receipt.json"
            receipt_file.write_text(json.dumps(final))
            ok = cli("federation", "verify", str(receipt_file), "--registry", str(registry_file))
            assert ok.stdout.startswith("OK:"), ok.stdout
            assert "regions: 2 of 2 required: eu-west, us-east" in ok.stdout
            gamma_did = next(p["did"] for p in reg["peers"] if p.get("region") == "us-east")
            assert f"{gamma_did}: us-east" in ok.stdout

            # The same receipt without the us-east countersignature: every
            # remaining signature is valid and a quorum, but one region only.
            eu_only = dict(final)
            eu_only["signatures"] = [s for s in final["signatures"] if s["node"] != gamma_did]
            assert len(eu_only["signatures"]) >= 2
            receipt_file.write_text(json.dumps(eu_only))
            bad = cli("federation", "verify", str(receipt_file), "--registry", str(registry_file),
                      check=False)  # fmt: skip
            assert bad.returncode == 1 and "receipt_regions_not_met" in bad.stderr, bad.stderr
            # Under a registry without the policy it is final: the regions made the difference.
            lax = yaml.safe_load(registry_file.read_text())
            del lax["receipts"]
            lax_file = tmp_path / "lax.yaml"
            lax_file.write_text(yaml.safe_dump(lax))
            ok = cli("federation", "verify", str(receipt_file), "--registry", str(lax_file))
            assert ok.stdout.startswith("OK:") and "regions: 1 of 0 required: eu-west" in ok.stdout
            # A verifier may demand more regions than the registry does.
            again = cli("federation", "verify", str(receipt_file), "--registry", str(lax_file),
                        "--min-regions", "2", check=False)  # fmt: skip
            assert again.returncode == 1 and "receipt_regions_not_met" in again.stderr

            # The explorer shows the regions that signed each receipt of the record.
            page = _get(f"{alpha.url}/explorer/namespaces/{NS}/records/0")
            assert "eu-west, us-east (of 2 required)" in page, page[-3000:]
        finally:
            for n in nodes:
                n.stop()
