"""A malicious federation peer against real node processes (issue 14, rules 2, 3, 6).

Mallory (``remembrancer.testing.mallory_federation``) is a process of her
own, and a registry member: her key and her accomplice Trent's are in every
node's ``federation.yaml``.  Three honest nodes anchor to a real RFC 3161 TSA
(the development TSA, over HTTP), witness one another's logs and countersign
one another's anchors.  Each test runs one attack and asserts the specific
refusal (an HTTP code, or the node's ``remembrancer_federation_dropped_total``
counter for what it judged after answering 202), that no countersignature
left an honest node for it, and that nothing was stored.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.core.keys import SigningKey
from remembrancer.core.record import sign_envelope, unsigned_envelope
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    cli,
    free_port,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.federation.receipts import FederationReceipt, verified_countersignatures
from remembrancer.federation.registry.model import Registry
from remembrancer.federation.registry.parse import load_federation_file
from remembrancer.federation.registry.proposals import MAX_CANDIDATES, MAX_PENDING_PER_SPONSOR
from remembrancer.node.keyfile import read_key_file
from remembrancer.testing.mallory_federation import MalloryProcess, post

FED = "test-federation"
NS = "dao:vaultmesh"
MALLORY = SigningKey.generate()
TRENT = SigningKey.generate()  # Mallory's accomplice, also a member


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _wait(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _dropped(node: NodeProcess) -> dict[tuple[str, str], float]:
    """``remembrancer_federation_dropped_total`` by (item, code)."""
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for m in re.finditer(r"^remembrancer_federation_dropped_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[(labels["item"], labels["code"])] = float(m.group(2))
    return out


def _grew(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float],
          key: tuple[str, str]) -> float:  # fmt: skip
    return after.get(key, 0.0) - before.get(key, 0.0)


def _peer(node: NodeProcess, did: str) -> dict[str, Any]:
    fed = _get(f"{node.url}/v1/federation")
    peer = next(p for p in fed["peers"] if p["did"] == did)
    peer["history"] = [h for h in fed["history"] if h["peer"] == did]
    return peer  # type: ignore[no-any-return]


def _countersign_messages(mallory: MalloryProcess) -> list[dict[str, Any]]:
    return [m for m in mallory.inbox() if m["type"] == "countersign"]


def _data_bytes(node: NodeProcess) -> int:
    return sum(p.stat().st_size for p in (node.directory / "data").rglob("*") if p.is_file())


def _key(node: NodeProcess) -> SigningKey:
    doc = yaml.safe_load(node.config.read_text())
    return read_key_file(node.directory / doc["node_key"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("byzantine")
    mallory = MalloryProcess(base / "mallory", free_port(), FED, [MALLORY, TRENT])
    with DevTsaServer(DevTsa(base / "tsa")) as tsa:
        nodes = [init_node(base / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
        for n in nodes:
            anchor_to_tsa(n, tsa.url, base / "tsa" / "ca.pem", every="1s")
        wire_witnessing(nodes)
        wire_federation(nodes, quorum=2, extra_peers=mallory.registry_entries(),
                        heartbeat_seconds=1)  # fmt: skip
        mallory.start()
        try:
            for n in nodes:
                n.start()
            yield {"nodes": nodes, "mallory": mallory, "base": base}
        finally:
            for n in nodes:
                n.stop()
            mallory.stop()


def _final_receipt(alpha: NodeProcess) -> dict[str, Any]:
    """Alpha anchors a record to the TSA; its peers countersign: a final receipt."""
    actor = demo_key("did:vm:actor:demo")
    w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
    rec = make_record(NS, "ledger.append@1.0.0", ledger_payload(1), actor, w,
                      timestamp=int(time.time()))  # fmt: skip
    status, _ = post(f"{alpha.url}/v1/namespaces/{NS}/records", rec.leaf)
    assert status == 200
    origin = f"n0.test/{NS}"

    def final() -> Any:
        got = _get(f"{alpha.url}/v1/federation/receipts?namespace={NS}")["receipts"]
        return next((r for r in got if r["origin"] == origin and r["quorum_met"]), None)

    return _wait("alpha's final federation receipt", final, 60)  # type: ignore[no-any-return]


def test_a_relay_cannot_be_framed_with_a_junk_countersignature(world: dict[str, Any]) -> None:
    """The attack of issue 14, rule 2: Mallory appends a junk countersignature to a
    public final receipt and sends it to beta; beta used to keep it, relay it in
    a bundle it signed, and Mallory wrapped that bundle as forged-countersignature
    evidence until alpha suspended beta.  Now beta drops the junk on arrival,
    relays only what verifies, and evidence about what beta relayed proves
    nothing, at alpha or anywhere."""
    alpha, beta, gamma = world["nodes"]
    mallory: MalloryProcess = world["mallory"]
    beta_did, gamma_did = _key(beta).did, _key(gamma).did
    receipt = _final_receipt(alpha)
    before_beta = _dropped(beta)

    # 1. Junk countersignatures (two made-up did:keys, one in gamma's name).
    sent = mallory.call("junk-receipt", source=alpha.url, to=beta.url, junk=2, also_as=gamma_did)
    assert sent["status"] == 202, sent  # authentic: judged after acceptance
    junk = sent["junk"]

    def dropped_at_beta() -> bool:
        now = _dropped(beta)
        return (_grew(before_beta, now, ("countersignature", "countersignature_signer_unknown")) >= 2
                and _grew(before_beta, now, ("countersignature", "countersignature_invalid")) >= 1)  # fmt: skip

    _wait("beta to drop the junk countersignatures", dropped_at_beta)
    registry = load_federation_file(beta.directory / "federation.yaml")
    keys = {p.did: p.pubkey for p in registry.peers}
    stored = _get(f"{beta.url}/v1/federation/receipts?namespace={NS}&limit=1000")["receipts"]
    assert any(r["anchor"] == receipt["anchor"] for r in stored)
    for r in stored:  # nothing stored: no junk, and every countersignature verifies
        assert not {s["node"] for s in r["signatures"]} & set(junk[:2])
        assert verified_countersignatures(FederationReceipt.from_dict(r), keys)[1] == ()
    paged, cursor = [], None  # the same list, a page at a time (anchors keep coming)
    while True:
        after = f"&after={urllib.parse.quote(cursor, safe='')}" if cursor else ""
        page = _get(f"{beta.url}/v1/federation/receipts?namespace={NS}&limit=1{after}")
        assert len(page["receipts"]) <= 1
        paged += page["receipts"]
        cursor = page["next"]
        if cursor is None:
            break
    ids = [(r["origin"], r["anchor"]["tx_hash"]) for r in paged]
    assert len(set(ids)) == len(ids)
    assert {(r["origin"], r["anchor"]["tx_hash"]) for r in stored} <= set(ids)

    # 2. Beta relays what it holds, in bundles it signs: only verified countersignatures.
    assert mallory.call("request", to=beta.url, namespace=NS)["status"] == 202

    def bundle() -> Any:
        got = [m for m in mallory.inbox() if m["type"] == "bundle" and m["sender"] == beta_did
               and json.loads(m["body"])["content"]["receipts"]]  # fmt: skip
        return got[-1] if got else None

    relayed = json.loads(_wait("beta's bundle", bundle)["body"])["content"]["receipts"]
    assert any(r["anchor"] == receipt["anchor"] for r in relayed)
    for r in relayed:
        assert not {s["node"] for s in r["signatures"]} & set(junk[:2])
        assert verified_countersignatures(FederationReceipt.from_dict(r), keys)[1] == ()

    # 3. Two rounds of "evidence" built from beta's bundle, to alpha and gamma.
    before = {n.url: _dropped(n) for n in (alpha, gamma)}
    sent_to: dict[str, int] = {alpha.url: 0, gamma.url: 0}
    for _ in range(2):
        for target in (alpha, gamma):
            framed = mallory.call("frame", victim=beta_did, to=target.url, countersigners=junk)
            assert framed["sent"] and all(s["status"] == 202 for s in framed["sent"]), framed
            sent_to[target.url] += len(framed["sent"])
    n_forged = 2 * len(junk) * len(relayed)
    for target in (alpha, gamma):

        def judged(t: NodeProcess = target) -> bool:
            now = _dropped(t)
            total = sum(_grew(before[t.url], now, k) for k in now if k[0] == "evidence")
            return total >= sent_to[t.url] and (
                _grew(before[t.url], now, ("evidence", "evidence_not_attributable")) >= n_forged
            )

        _wait(f"{target.url} to judge the evidence", judged)
        codes = {k[1] for k, v in _dropped(target).items()
                 if k[0] == "evidence" and v > before[target.url].get(k, 0)}  # fmt: skip
        # Relayed junk is nobody's statement; beta's own countersignatures hold.
        assert codes <= {"evidence_not_attributable", "evidence_not_misbehaviour",
                         "evidence_claim_not_found"}, codes  # fmt: skip
        peer = _peer(target, beta_did)
        assert peer["status"] == "active" and peer["history"] == [], peer
        assert _get(f"{target.url}/v1/federation/evidence")["evidence"] == []
    # No countersignature left an honest node for any of it.
    assert _countersign_messages(mallory) == []


def test_equivocation_evidence_about_strangers_is_refused_and_not_stored(
    world: dict[str, Any],
) -> None:
    """Rule 6: 30 forks signed by throwaway keys, about 170 KB each, in a few seconds, used to
    be stored forever (5.5 MB).  Now each is refused: no such member."""
    alpha = world["nodes"][0]
    mallory: MalloryProcess = world["mallory"]
    before, size_before = _dropped(alpha), _data_bytes(alpha)
    spam = mallory.call("equivocation-spam", to=alpha.url, count=30, pad=64_000)
    assert all(s["status"] == 202 for s in spam["sent"]), spam
    assert sum(s["bytes"] for s in spam["sent"]) > 5_000_000  # 5 MB that used to be kept
    _wait("alpha to refuse the evidence", lambda: _grew(
        before, _dropped(alpha), ("evidence", "evidence_subject_unknown")) >= 30)  # fmt: skip
    assert _get(f"{alpha.url}/v1/federation/evidence")["evidence"] == []
    assert _data_bytes(alpha) - size_before < 2_000_000  # replay windows, its own anchors
    assert _countersign_messages(mallory) == []


def test_evidence_about_one_member_is_bounded(world: dict[str, Any]) -> None:
    """Rule 6: Trent really did sign twelve forks; Mallory reports them all to
    gamma.  Gamma keeps eight (two suspend a peer already) and refuses the rest."""
    gamma = world["nodes"][2]
    mallory: MalloryProcess = world["mallory"]
    before = _dropped(gamma)
    sent = mallory.call("accuse", accused=TRENT.did, to=gamma.url, count=12)
    assert all(s["status"] == 202 for s in sent["sent"]), sent
    _wait("gamma to refuse the evidence past the bound", lambda: _grew(
        before, _dropped(gamma), ("evidence", "evidence_subject_full")) >= 4)  # fmt: skip
    kept = _get(f"{gamma.url}/v1/federation/evidence?limit=5")
    assert len(kept["evidence"]) == 5 and kept["next"]
    rest = _get(f"{gamma.url}/v1/federation/evidence?limit=5&after={kept['next']}")
    assert len(rest["evidence"]) == 3 and rest["next"] is None
    assert all(e["kind"] == "equivocation" for e in kept["evidence"] + rest["evidence"])
    assert _peer(gamma, TRENT.did)["status"] == "suspended"
    assert _peer(gamma, MALLORY.did)["history"] == []  # the reporter is not the accused
    bad = urllib.request.Request(f"{gamma.url}/v1/federation/evidence?limit=0")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=10)
    with e.value:
        assert e.value.code == 400
        assert json.loads(e.value.read())["error"]["code"] == "request_invalid"


def test_strangers_and_one_member_cannot_block_registry_proposals(
    world: dict[str, Any],
) -> None:
    """Rule 3: anyone could post 64 proposals signed by throwaway keys, and a genuine
    quorum-approved change was then refused ``too_many_pending``."""
    alpha, beta, gamma = world["nodes"]
    mallory: MalloryProcess = world["mallory"]
    url = f"{alpha.url}/v1/federation/proposals"
    junk = mallory.call("proposal-spam", to=alpha.url, count=64, actor="throwaway")["sent"]
    assert [s["status"] for s in junk[:MAX_CANDIDATES]] == [200] * MAX_CANDIDATES
    assert {(s["status"], s["code"]) for s in junk[MAX_CANDIDATES:]} == {
        (403, "too_many_candidates")
    }
    own = mallory.call("proposal-spam", to=alpha.url, count=6, actor="self")["sent"]
    assert [s["status"] for s in own] == [200] * MAX_PENDING_PER_SPONSOR + [403, 403]
    assert own[-1]["code"] == "sponsor_quota_exceeded"
    laundered = mallory.call("proposal-spam", to=alpha.url, count=2, actor="witnessed")["sent"]
    assert {(s["status"], s["code"]) for s in laundered} == {(403, "sponsor_quota_exceeded")}
    pending = _get(url)["pending"]
    assert len(pending) == MAX_CANDIDATES + MAX_PENDING_PER_SPONSOR
    refused = {s["proposal_id"] for s in junk[MAX_CANDIDATES:] + own[4:] + laundered}
    assert not refused & {p["proposal_id"] for p in pending}  # nothing stored for those

    # The operator drops one (CLI); it is refused if it comes back.
    token_file = alpha.directory / "keys" / "admin.token"
    stranger = SigningKey.generate()
    current = Registry.from_dict(_get(f"{alpha.url}/v1/federation/registry"))
    changed = Registry(FED, current.quorum, current.anchor_strategy, current.peers, 77)
    env = unsigned_envelope(namespace=f"fed:{FED}", schema="federation.registry.set@1.0.0",
                            payload=changed.registry_record_payload(memo="x"), actor=stranger.did,
                            event_id="stranger-1", timestamp=int(time.time()), nonce="bm9uY2Ux")  # fmt: skip
    body = sign_envelope(env, stranger).leaf
    status, answer = post(url, body)
    assert (status, answer["error"]["code"]) == (403, "too_many_candidates")
    out = cli("federation", "drop", junk[0]["proposal_id"], "--url", alpha.url,
              "--token-file", str(token_file))  # fmt: skip
    assert json.loads(out.stdout)["state"] == "dropped"
    status, answer = post(url, body)  # the freed slot takes the next candidate
    assert status == 200 and answer["sponsor"] is None
    assert mallory.call("proposal-spam", to=alpha.url, count=1)["sent"][0]["code"] == (
        "too_many_candidates"
    )
    dropped_again = cli("federation", "drop", "stranger-1", "--url", alpha.url,
                        "--token-file", str(token_file))  # fmt: skip
    assert json.loads(dropped_again.stdout)["state"] == "dropped"
    status, answer = post(url, body)
    assert (status, answer["error"]["code"]) == (409, "proposal_dropped")
    gone = cli("federation", "drop", "stranger-1", "--url", alpha.url, "--token-file",
               str(token_file), check=False)  # fmt: skip
    assert gone.returncode != 0 and "proposal_unknown" in gone.stderr

    # The genuine change: proposed by beta's operator, approved by gamma's: applied.
    genuine = Registry(FED, current.quorum, current.anchor_strategy, current.peers, 120)
    env = unsigned_envelope(namespace=f"fed:{FED}", schema="federation.registry.set@1.0.0",
                            payload=genuine.registry_record_payload(memo="epoch 120"),
                            actor=_key(beta).did, event_id="genuine-1",
                            timestamp=int(time.time()), nonce="bm9uY2Uy")  # fmt: skip
    status, view = post(url, sign_envelope(env, _key(beta), [_key(gamma)]).leaf)
    assert status == 200 and view["state"] == "applied", view
    for n in (alpha,):
        reg = _get(f"{n.url}/v1/federation/registry")
        assert reg["anchor_propagation"] == {"epoch_seconds": 120}
        assert _get(f"{n.url}/v1/federation/proposals")["pending"] == []
    assert _countersign_messages(mallory) == []
