"""The proof files of a demo run (``proofs/``) and the commands that check them offline.

Every file is verified here before it is written: the sample record's
tlog-proof against its log's key and both other nodes' witness keys, the
anchored checkpoint's proof, and the federation receipt of its TSA anchor.
``trust.yaml`` holds the keys from the nodes' key files (a verifier's own
copy of the keys, never the nodes' word).
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.jcs import canonicalize
from remembrancer.core.note import parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.demo.localfed import EVM_TARGET, NAMES, TSA_TARGET, LocalFederation, NodeIdentity
from remembrancer.demo.procs import NodeProcess
from remembrancer.demo.readings import Api, clock, shown
from remembrancer.demo.traffic import Route
from remembrancer.program import invocation

SAMPLE_NAMESPACE = "dao:vaultmesh"  # the namespace of the sample record (on alpha)


class ProofFiles:
    """Writes the proof files of one run into ``directory``; ``files`` names them as written."""

    def __init__(self, directory: Path, fed: LocalFederation, identities: Mapping[str, NodeIdentity],
                 *, event: Callable[[str], None], echo: Callable[[str], None],
                 files: dict[str, Path]) -> None:  # fmt: skip
        self.directory = directory
        self.fed = fed
        self.identities = identities
        self.event = event
        self.echo = echo
        self.files = files

    def message(self, src: NodeProcess, dst: NodeProcess, route: Route, record: Record,
                view: dict[str, Any]) -> None:  # fmt: skip
        """proofs/message/: the first cross-namespace message, its delivery and answer."""
        out = self.directory / "message"
        out.mkdir(parents=True, exist_ok=True)
        (out / "message.json").write_bytes(record.leaf + b"\n")
        for part in ("delivery", "answer"):
            value = view.get(part)
            if value:
                (out / f"{part}.json").write_bytes(canonicalize(value["record"]) + b"\n")
                (out / f"{part}.tlog-proof").write_text(value["proof"])
        self.write_trust()
        delivery = view["delivery"]["receipt"]
        self.files["message"] = out / "delivery.json"
        self.event(
            f"message delivered: {route.source} on {NAMES[route.src]} -> {route.target} on"
            f" {NAMES[route.dst]} ({route.action} {route.operation}), entry {delivery['index']} of"
            f" {delivery['origin']}; by hand: {invocation()} namespace message --from {route.source}"
            f" --to {route.target} --action {route.action} --operation {route.operation}"
            f" --payload {shlex.quote(json.dumps(route.parameters, separators=(',', ':')))}"
            f" --url {src.url} --to-url {dst.url}")  # fmt: skip

    def write_trust(self) -> Path:
        """proofs/trust.yaml: every log's vkey and every witness's, from the key
        files (a verifier's own copy of the keys, not the nodes' word)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "trust.yaml"
        doc = {"log_vkeys": [v for i in self.identities.values() for v in i.vkeys.values()],
               "witness_vkeys": [i.witness_vkey for i in self.identities.values()],
               "min_cosigners": 0}  # fmt: skip
        path.write_text("# The keys of the demo federation (`remembrancer verify --trust`).\n"
                        + yaml.safe_dump(doc, sort_keys=False))  # fmt: skip
        return path

    def record(self, api: Api, record: Record, receipt: dict[str, Any]) -> bool:
        """proofs/record.json and record.tlog-proof: the sample record in a
        checkpoint that both other nodes' witnesses cosigned."""
        alpha = self.fed.nodes[0]
        ident = self.identities[NAMES[0]]
        note = api.text(f"{alpha.url}/logs/{SAMPLE_NAMESPACE}/checkpoint").encode()
        witnesses = [parse_cosigner_vkey(i.witness_vkey) for i in self.identities.values()]
        signed = open_checkpoint(note, parse_vkey(ident.vkeys[SAMPLE_NAMESPACE]), witnesses)
        if signed.checkpoint.size <= receipt["index"] or len(signed.cosignatures) < 2:
            return False
        proof = api.text(f"{alpha.url}/v1/namespaces/{SAMPLE_NAMESPACE}/proofs/inclusion?index="
                         f"{receipt['index']}&size={signed.checkpoint.size}&format=tlog-proof")  # fmt: skip
        checked = verify_tlog_proof(TlogProof.parse(proof.encode()), record.leaf,
                                    parse_vkey(ident.vkeys[SAMPLE_NAMESPACE]), witnesses, 2)  # fmt: skip
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "record.json").write_bytes(record.leaf + b"\n")
        (self.directory / "record.tlog-proof").write_text(proof)
        self.write_trust()
        self.files["record"] = self.directory / "record.json"
        self.files["record_proof"] = self.directory / "record.tlog-proof"
        self.event(f"record {record.event_hash_hex[:23]}… is entry {checked.index} of"
                   f" {checked.checkpoint.origin}, in a checkpoint cosigned by"
                   f" {len(checked.cosigners)} witnesses (verified here)")  # fmt: skip
        return True

    def anchor(self, api: Api, record: Record, receipt: dict[str, Any]) -> bool:
        """proofs/anchor-receipt.json, record.anchored.tlog-proof and
        federation-receipt.json: the first checkpoint holding the sample record
        whose TSA anchor the federation countersigned."""
        alpha = self.fed.nodes[0]
        ident = self.identities[NAMES[0]]
        index = receipt["index"]
        page = api.get(
            f"{alpha.url}/v1/namespaces/{SAMPLE_NAMESPACE}/anchors?after={index}&limit=50"
        )
        sizes = [r["size"] for r in page["receipts"]
                 if any(a["target"] == TSA_TARGET and a["status"] == "verified" for a in r["anchors"])]  # fmt: skip
        if not sizes:
            return False
        origin = f"{ident.origin_prefix}/{SAMPLE_NAMESPACE}"
        finals: list[dict[str, Any]] = []
        after = ""
        while True:  # every page (the list is paged: follow ``next``)
            page = api.get(f"{alpha.url}/v1/federation/receipts?namespace={SAMPLE_NAMESPACE}"
                           f"&limit=1000{after}")  # fmt: skip
            finals += page["receipts"]
            if page.get("next") is None:
                break
            after = "&after=" + urllib.parse.quote(page["next"], safe="")
        by_size: dict[int, dict[str, Any]] = {}
        for r in finals:
            if (
                r.get("origin") != origin
                or not r.get("quorum_met")
                or r["anchor"]["target"] != TSA_TARGET
            ):
                continue
            held = open_checkpoint(r["evidence"]["checkpoint"].encode(),
                                   parse_vkey(ident.vkeys[SAMPLE_NAMESPACE])).checkpoint.size  # fmt: skip
            by_size.setdefault(held, r)
        found = next((s for s in sizes if s in by_size), None)
        if found is None:
            return False
        size = int(found)
        anchors = api.get(f"{alpha.url}/v1/namespaces/{SAMPLE_NAMESPACE}/anchors/{size}")
        proof = api.text(f"{alpha.url}/v1/namespaces/{SAMPLE_NAMESPACE}/proofs/inclusion?index="
                         f"{index}&size={size}&format=tlog-proof")  # fmt: skip
        verify_tlog_proof(TlogProof.parse(proof.encode()), record.leaf,
                          parse_vkey(ident.vkeys[SAMPLE_NAMESPACE]))  # fmt: skip
        (self.directory / "anchor-receipt.json").write_text(json.dumps(anchors, indent=2) + "\n")
        (self.directory / "record.anchored.tlog-proof").write_text(proof)
        (self.directory / "federation-receipt.json").write_text(
            json.dumps(by_size[size], indent=2) + "\n"
        )
        self.files["anchor_receipt"] = self.directory / "anchor-receipt.json"
        self.files["federation_receipt"] = self.directory / "federation-receipt.json"
        signers = len({s["node"] for s in by_size[size]["signatures"]})
        self.event(f"checkpoint {size} of {origin} (it holds the record) is anchored to the TSA,"
                   f" and {signers} nodes countersigned that anchor: a final federation receipt")  # fmt: skip
        return True

    def commands(self) -> list[str]:
        """The commands that check the proof files offline (as printed)."""
        p = self.directory
        trust = shown(p / "trust.yaml")
        rv = invocation()
        out = [
            f"{rv} verify {shown(p / 'record.json')} --proof {shown(p / 'record.tlog-proof')}"
            f" --trust {trust} --min-cosigners 2",
            f"{rv} verify {shown(p / 'record.json')} --proof"
            f" {shown(p / 'record.anchored.tlog-proof')} --trust {trust}",
            f"{rv} anchor verify {shown(p / 'anchor-receipt.json')} --tsa-trust"
            f" {shown(self.fed.trust_bundle)} --target {TSA_TARGET}",
            f"{rv} federation verify {shown(p / 'federation-receipt.json')} --registry"
            f" {shown(self.fed.registry_file)}",
        ]
        if "message" in self.files:
            m = p / "message"
            out.append(f"{rv} verify {shown(m / 'delivery.json')} --proof"
                       f" {shown(m / 'delivery.tlog-proof')} --trust {trust}")  # fmt: skip
        return out

    def announce(self, started: float) -> None:
        """Print where the files are and the commands that check them."""
        receipt = json.loads(self.files["anchor_receipt"].read_text())
        evm = self.fed.anvil is not None and any(
            a["target"] == EVM_TARGET for a in receipt["anchors"]
        )
        notes = ["the record, in a checkpoint cosigned by both other nodes",
                 "the record, in the checkpoint that was anchored",
                 "that checkpoint's RFC 3161 timestamp, against the TSA's CA"
                 + (f" (add --evm-rpc {self.fed.anvil_url} to check its EVM anchor too, while"
                    " anvil runs)" if evm else ""),
                 "the federation's countersignatures on that anchor",
                 "a cross-namespace message's delivery, in the target's log"]  # fmt: skip
        lines = [f"[{clock(time.monotonic() - started)}] proof files are in"
                 f" {shown(self.directory)}; check them yourself, offline:"]  # fmt: skip
        for note, command in zip(notes, self.commands(), strict=False):
            lines.append(f"  # {note}\n  $ {command}")
        self.echo("\n".join(lines))
