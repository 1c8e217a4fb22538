"""Checks of a running demo federation through its public API and explorer,
as a visitor would make them; shared by the tests of ``remembrancer demo``
(in-process and from the README's ``make run``).

Every check reads the nodes over HTTP only and raises AssertionError with
what it saw when it fails (or does not come true in time).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.note import parse_vkey
from remembrancer.core.record import Record

T = TypeVar("T")
NAMESPACES = ("dao:vaultmesh", "fin:clearing")


def fetch(url: str, timeout: float = 15) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url: str) -> Any:
    status, body = fetch(url)
    if status != 200:
        raise AssertionError(f"GET {url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns a true value; connection failures count
    as not yet."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (OSError, AssertionError, KeyError, ValueError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
            )
        time.sleep(0.3)


@dataclass(frozen=True, slots=True)
class Live:
    """What the checks saw."""

    sizes: dict[str, dict[str, int]]  # url -> namespace -> size
    cosigners: dict[str, int]  # url -> cosignatures on its dao:vaultmesh head
    verified: dict[str, dict[str, int]]  # url -> target -> verified anchors
    receipts_final: dict[str, int]  # url -> final federation receipts it holds
    delivered: int  # cross-namespace deliveries (node metrics)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))  # fmt: skip


def wait_until_live(urls: Sequence[str], *, targets: Sequence[str] = ("rfc3161:tsa",),
                    timeout: float = 90) -> Live:  # fmt: skip
    """Wait until every node has admitted records into both namespaces, its
    dao:vaultmesh head carries a cosignature that verifies with a peer's
    witness key, it holds verified anchors on every target in ``targets``
    and final federation receipts (quorum met), and at least one
    cross-namespace message was delivered in the federation."""
    nodes = {u: get_json(f"{u}/v1/node") for u in urls}
    witnesses = {u: parse_cosigner_vkey(n["witness"]["vkey"]) for u, n in nodes.items()}

    def sizes() -> dict[str, dict[str, int]] | None:
        out = {u: {s["namespace"]: s["size"] for s in get_json(f"{u}/v1/namespaces")["namespaces"]}
               for u in urls}  # fmt: skip
        ok = all(out[u].get(ns, 0) > 0 for u in urls for ns in NAMESPACES)
        return out if ok else None

    def cosigned() -> dict[str, int] | None:
        out = {}
        for u in urls:
            _, note = fetch(f"{u}/logs/dao:vaultmesh/checkpoint")
            peers = [w for v, w in witnesses.items() if v != u]
            signed = open_checkpoint(note, parse_vkey(nodes[u]["vkeys"]["dao:vaultmesh"]), peers)
            out[u] = len(signed.cosignatures)
        return out if all(out.values()) else None

    def verified() -> dict[str, dict[str, int]] | None:
        out: dict[str, dict[str, int]] = {}
        for u in urls:
            view = get_json(f"{u}/v1/explorer/anchors?limit=1")
            counts = out.setdefault(u, {})
            for ns in view["namespaces"]:
                for rail in ns["rails"]:
                    counts[rail["target"]] = counts.get(rail["target"], 0) + int(
                        rail["statuses"].get("verified", 0)
                    )
        return out if all(out[u].get(t) for u in urls for t in targets) else None

    def finals() -> dict[str, int] | None:
        out = {}
        for u in urls:
            receipts = get_json(f"{u}/v1/federation/receipts")["receipts"]
            out[u] = sum(1 for r in receipts if r["quorum_met"])
        return out if all(out.values()) else None

    def delivered() -> int:
        return int(sum(_metric(fetch(f"{u}/metrics")[1].decode(),
                               "remembrancer_xns_delivered_total") for u in urls))  # fmt: skip

    got_sizes = wait_for(sizes, timeout, "records in both namespaces of every node")
    got_cosigned = wait_for(cosigned, timeout, "cosigned checkpoints on every node")
    got_verified = wait_for(
        verified, timeout, f"verified anchors ({', '.join(targets)}) on every node"
    )
    got_finals = wait_for(finals, timeout, "final federation receipts on every node")
    got_delivered = wait_for(delivered, timeout, "a delivered cross-namespace message")
    return Live(got_sizes, got_cosigned, got_verified, got_finals, got_delivered)


def check_delivery(urls: Sequence[str], message_file: Path) -> dict[str, Any]:
    """The message in ``message_file`` (a ``namespace.message`` record) is
    delivered: one of the nodes shows its delivery into the target."""
    record = Record.from_bytes(message_file.read_bytes())
    target = record.payload["target"]
    for u in urls:
        status, body = fetch(f"{u}/v1/namespaces/{target}/messages/{record.event_hash_hex}")
        if status == 200:
            view: dict[str, Any] = json.loads(body)
            assert view["status"] == "delivered" and view["source"] == record.namespace, view
            return view
    raise AssertionError(f"no node shows the delivery of {record.event_hash_hex} into {target}")


def check_explorer(url: str, peers: Sequence[str], federation_id: str) -> None:
    """The node's explorer pages answer 200 with the API's facts: the
    federation, every peer's DID and the totals (peers; entries and final
    federation receipts between two API readings) on the overview, both
    namespaces, a record
    page showing the record the API has at index 0 and only federation
    receipts of this node's own log, the anchors and witness pages."""
    before = get_json(f"{url}/v1/explorer/overview")["totals"]
    status, body = fetch(f"{url}/explorer")
    after = get_json(f"{url}/v1/explorer/overview")["totals"]
    page = body.decode()
    assert status == 200 and federation_id in page, (status, page[:500])
    shown = {k: int(v) for k, v in re.findall(
        r'data-stat="(\w+)"><span class="num" data-field="\w+" data-value="(\d+)"', page)}  # fmt: skip
    assert shown["peers"] == shown["active_peers"] == after["peers"] == len(peers), shown
    for key in ("entries", "federation_receipts"):  # they grow while the demo runs
        assert before[key] <= shown[key] <= after[key], (key, before[key], shown[key], after[key])
    assert shown["federation_receipts"] >= 1, shown
    for p in peers:
        did = get_json(f"{p}/v1/node")["did"]
        assert did in page, f"the overview of {url} does not show peer {did}"
    status, body = fetch(f"{url}/explorer/namespaces")
    assert status == 200 and all(ns in body.decode() for ns in NAMESPACES)
    me = get_json(f"{url}/v1/node")
    for ns in NAMESPACES:
        entry = get_json(f"{url}/v1/namespaces/{ns}/records/0")
        status, body = fetch(f"{url}/explorer/namespaces/{ns}/records/0")
        assert status == 200 and entry["eventHash"] in body.decode(), (ns, status)
        view = get_json(f"{url}/v1/explorer/namespaces/{ns}/records/0")
        origin = f"{me['origin_prefix']}/{ns}"
        assert all(r["origin"] == origin for r in view["federation_receipts"]), [
            r["origin"] for r in view["federation_receipts"]
        ]
    for path in ("/explorer/anchors", "/explorer/witness"):
        status, _ = fetch(url + path)
        assert status == 200, (path, status)
