"""Federation registry: federation.yaml validation, quorum-approved changes, peer scoring."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.core.errors import (
    ConfigError,
    ConflictError,
    FormatError,
    NotFoundError,
    PolicyError,
    VerificationError,
)
from remembrancer.core.keys import SigningKey
from remembrancer.core.record import Record
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import make_record
from remembrancer.federation.registry.model import ROLES, Peer, Registry, StatusChange
from remembrancer.federation.registry.parse import load_federation_file
from remembrancer.federation.registry.proposals import (
    CANDIDATE_TTL,
    MAX_CANDIDATES,
    MAX_DROPPED,
    MAX_PENDING_PER_SPONSOR,
    PROPOSAL_TTL,
    RegistryState,
)
from remembrancer.federation.registry.scoring import (
    Misbehaviour,
    PeerScores,
    effective_active_peers,
    effective_peers,
    effective_status,
)
from remembrancer.log.schemas import bundled_schemas

NOW = 1_764_100_000
FED_NS = "federation:vaultmesh-primary"
SCHEMA = "federation.registry.set@1.0.0"
EAST, WEST, NORTH = (demo_key(f"did:vm:node:{n}") for n in ("east1", "west1", "north1"))
JOINER = demo_key("did:vm:node:south1")
STRANGER = SigningKey.generate(b"\x42" * 32)


def seed_doc() -> dict[str, Any]:
    """The seed's registry example (plus a third peer), as in federation.yaml."""
    return {
        "federation_id": "vaultmesh-primary",
        "quorum": 2,
        "anchor_strategy": "collaborative",
        "peers": [
            {
                "did": "did:vm:node:east1",
                "endpoint": "https://east1.vaultmesh.example",
                "pubkey": EAST.did,
                "status": "active",
                "roles": ["witness", "anchor", "countersign"],
            },
            {
                "did": "did:vm:node:west1",
                "endpoint": "https://west1.vaultmesh.example:8443/fed",
                "pubkey": base64.b64encode(WEST.public.raw).decode(),
                "status": "active",
            },
            {
                "did": "did:vm:node:north1",
                "endpoint": "http://north1.vaultmesh.example",
                "pubkey": NORTH.did,
                "status": "active",
                "roles": ["witness", "relay"],
            },
        ],
    }


REG = Registry.from_dict(seed_doc(), source="federation.yaml")


# --- federation.yaml ------------------------------------------------------------------------


def test_seed_example_loads_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(seed_doc()))
    reg = load_federation_file(path)
    assert reg == REG
    assert reg.federation_id == "vaultmesh-primary" and reg.quorum == 2
    assert reg.anchor_strategy == "collaborative"
    assert [p.did for p in reg.peers] == sorted(p["did"] for p in seed_doc()["peers"])
    assert len(reg.active_peers()) == 3


def test_lookups_by_did_alias_and_key() -> None:
    east = REG.peer("did:vm:node:east1")
    assert east.pubkey == EAST.public and east.key_did == EAST.did
    assert REG.get(EAST.did) is east  # a did:key finds the alias peer with that key
    assert REG.peer_by_key(EAST.public) is east
    assert REG.peer_by_key(EAST.public.raw) is east
    assert REG.peer_by_key(EAST.did) is east
    assert REG.peer_by_key(STRANGER.public) is None
    assert REG.peer_by_key("did:key:zNOTAKEY") is None
    assert REG.get("did:vm:node:nowhere") is None and "did:vm:node:east1" in REG
    with pytest.raises(NotFoundError) as e:
        REG.peer("did:vm:node:nowhere")
    assert e.value.code == "peer_unknown"


def test_roles_default_to_all_and_keep_order() -> None:
    west = REG.peer("did:vm:node:west1")
    assert west.roles == frozenset(ROLES)
    assert west.to_dict()["roles"] == list(ROLES)
    north = REG.peer("did:vm:node:north1")
    assert north.has_role("relay") and not north.has_role("anchor")
    assert north.to_dict()["roles"] == ["witness", "relay"]


def test_pubkey_forms_agree() -> None:
    doc = seed_doc()
    # base64 and did:key name the same key
    doc["peers"][0]["pubkey"] = base64.b64encode(EAST.public.raw).decode()
    assert Registry.from_dict(doc) == REG
    # a did:key DID needs no pubkey, and may repeat it
    doc["peers"][0] = {"did": EAST.did, "endpoint": "https://e.example", "pubkey": EAST.did}
    assert Registry.from_dict(doc).peer(EAST.did).pubkey == EAST.public
    del doc["peers"][0]["pubkey"]
    assert Registry.from_dict(doc).peer(EAST.did).pubkey == EAST.public
    # ... but a different key is refused
    doc["peers"][0]["pubkey"] = base64.b64encode(STRANGER.public.raw).decode()
    with pytest.raises(ConfigError) as e:
        Registry.from_dict(doc, source="f.yaml")
    assert e.value.code == "peer_pubkey_mismatch"
    assert e.value.details == {"file": "f.yaml", "key": "peers[0].pubkey"}


def test_seed_anchor_propagation_spelling() -> None:
    doc = seed_doc()
    del doc["anchor_strategy"]
    doc["anchor_propagation"] = {"mode": "hybrid", "retry_strategy": "geometric-backoff"}
    assert Registry.from_dict(doc).anchor_strategy == "hybrid"
    doc["anchor_strategy"] = "independent"
    with pytest.raises(ConfigError) as e:
        Registry.from_dict(doc)
    assert e.value.code == "anchor_strategy_conflict"


def _set(path: str, value: Any) -> Any:
    def edit(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "code", "key"),
    [
        (_set("federation_id", "Vault Mesh"), "federation_id_invalid", "federation_id"),
        (_set("federation_id", _DELETE), "federation_id_invalid", "federation_id"),
        (_set("quorum", 0), "quorum_invalid", "quorum"),
        (_set("quorum", "2"), "quorum_invalid", "quorum"),
        (_set("quorum", True), "quorum_invalid", "quorum"),
        (_set("quorum", 4), "quorum_unreachable", "quorum"),
        (_set("peers.1.status", "suspended"), None, None),  # 2 active, quorum 2: fine
        (_set("anchor_strategy", "solo"), "anchor_strategy_invalid", "anchor_strategy"),
        (_set("version", 2), "config_version_unsupported", "version"),
        (_set("colour", "blue"), "config_key_unknown", "colour"),
        (_set("peers", []), "peers_invalid", "peers"),
        (_set("peers", {"a": 1}), "peers_invalid", "peers"),
        (_set("peers.1", "did:vm:node:west1"), "peer_invalid", "peers[1]"),
        (_set("peers.1.did", "vm:node:west1"), "peer_did_invalid", "peers[1].did"),
        (_set("peers.1.did", "did:vm:node:west1#frag"), "peer_did_invalid", "peers[1].did"),
        (_set("peers.1.did", _DELETE), "peer_did_invalid", "peers[1].did"),
        (_set("peers.1.did", "did:vm:node:east1"), "peer_did_duplicate", "peers[1].did"),
        (_set("peers.1.did", "did:key:z6MkNOTAKEY"), "peer_did_invalid", "peers[1].did"),
        (_set("peers.1.endpoint", "ftp://west1"), "peer_endpoint_invalid", "peers[1].endpoint"),
        (_set("peers.1.endpoint", "https://"), "peer_endpoint_invalid", "peers[1].endpoint"),
        (_set("peers.1.endpoint", "https://u:p@w1"), "peer_endpoint_invalid", "peers[1].endpoint"),
        (_set("peers.1.endpoint", "https://w1:99999"), "peer_endpoint_invalid", "peers[1].endpoint"),
        (_set("peers.1.endpoint", _DELETE), "peer_endpoint_invalid", "peers[1].endpoint"),
        (_set("peers.1.pubkey", "AAAA"), "peer_pubkey_invalid", "peers[1].pubkey"),
        (_set("peers.1.pubkey", "did:key:z6MkX"), "peer_pubkey_invalid", "peers[1].pubkey"),
        (_set("peers.1.pubkey", 7), "peer_pubkey_invalid", "peers[1].pubkey"),
        (_set("peers.1.pubkey", _DELETE), "peer_pubkey_missing", "peers[1].pubkey"),
        (_set("peers.1.pubkey", EAST.did), "peer_pubkey_duplicate", "peers[1].pubkey"),
        (_set("peers.1.status", "retired"), "peer_status_invalid", "peers[1].status"),
        (_set("peers.1.roles", "witness"), "peer_roles_invalid", "peers[1].roles"),
        (_set("peers.1.roles", ["witness", "mayor"]), "peer_roles_invalid", "peers[1].roles[1]"),
        (_set("peers.1.roles", ["relay", "relay"]), "peer_role_duplicate", "peers[1].roles[1]"),
        (_set("peers.1.weight", 3), "config_key_unknown", "peers[1].weight"),
        (_set("anchor_propagation", {"mode": "x"}), "anchor_strategy_invalid",
         "anchor_propagation.mode"),
    ],
)  # fmt: skip
def test_every_error_names_file_and_key(edit: Any, code: str | None, key: str | None) -> None:
    doc = copy.deepcopy(seed_doc())
    edit(doc)
    if code is None:
        Registry.from_dict(doc, source="conf/federation.yaml")
        return
    with pytest.raises(ConfigError) as e:
        Registry.from_dict(doc, source="conf/federation.yaml")
    assert e.value.code == code
    assert e.value.message.startswith(f"conf/federation.yaml: {key}: ")
    assert e.value.details == {"file": "conf/federation.yaml", "key": key}


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as e:
        Registry.from_dict(["peers"], source="f.yaml")
    assert e.value.code == "config_invalid" and e.value.message.startswith("f.yaml: ")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load_federation_file(missing)
    assert e.value.code == "config_unreadable" and str(missing) in e.value.message
    bad = tmp_path / "bad.yaml"
    bad.write_text("peers: [\n")
    with pytest.raises(ConfigError) as e:
        load_federation_file(bad)
    assert e.value.code == "config_yaml_invalid" and str(bad) in e.value.message
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(ConfigError) as e:
        load_federation_file(big)
    assert e.value.code == "config_too_large"
    wrong = tmp_path / "wrong.yaml"
    doc = seed_doc()
    doc["quorum"] = 9
    wrong.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_federation_file(wrong)
    assert e.value.message.startswith(f"{wrong}: quorum: ")


def test_dict_round_trip_is_canonical() -> None:
    again = Registry.from_dict(REG.to_dict())
    assert again == REG and again.to_dict() == REG.to_dict()
    shuffled = seed_doc()
    shuffled["peers"].reverse()
    assert Registry.from_dict(shuffled).digest() == REG.digest()
    assert REG.digest().startswith("sha256:")


def test_record_payload_matches_the_bundled_schema() -> None:
    payload = REG.registry_record_payload(memo="bootstrap")
    bundled_schemas().validate(SCHEMA, payload)
    assert Registry.from_record_payload(payload) == REG
    assert payload["registry"]["peers"][0]["pubkey"].startswith("did:key:z6Mk")
    with pytest.raises(FormatError) as e:
        REG.registry_record_payload(memo="x" * 281)
    assert e.value.code == "registry_payload_invalid"


@pytest.mark.parametrize(
    ("edit", "code", "key"),
    [
        (lambda p: p["registry"]["peers"][0].pop("status"), "peer_status_invalid",
         "registry.peers[0].status"),
        (lambda p: p["registry"].update(quorum=0), "quorum_invalid", "registry.quorum"),
        (lambda p: p.update(extra=1), "registry_payload_invalid", "extra"),
        (lambda p: p["registry"].update(extra=1), "registry_payload_invalid", "registry.extra"),
        (lambda p: p.update(registry=[]), "registry_payload_invalid", "registry"),
        (lambda p: p.update(memo=5), "registry_payload_invalid", "memo"),
    ],
)  # fmt: skip
def test_bad_record_payload_names_the_key(edit: Any, code: str, key: str) -> None:
    payload = copy.deepcopy(REG.registry_record_payload())
    edit(payload)
    with pytest.raises(FormatError) as e:
        Registry.from_record_payload(payload, source="record r1")
    assert e.value.code == code
    assert e.value.message.startswith(f"record r1: {key}: ")


def test_registry_invariants() -> None:
    east = REG.peer("did:vm:node:east1")
    with pytest.raises(FormatError) as e:
        Registry("vaultmesh-primary", 1, "hybrid", (east, replace(east, did="did:vm:node:x")))
    assert e.value.code == "peer_pubkey_duplicate"
    with pytest.raises(FormatError):
        Registry("vaultmesh-primary", 0, "hybrid", (east,))
    with pytest.raises(FormatError):
        replace(east, status="gone")  # type: ignore[arg-type]


# --- quorum-approved changes -------------------------------------------------------------------


def proposal(
    registry: Registry,
    actor: SigningKey,
    witnesses: tuple[SigningKey, ...] = (),
    *,
    event_id: str = "prop-1",
    payload: dict[str, Any] | None = None,
) -> Record:
    return make_record(
        FED_NS,
        SCHEMA,
        payload if payload is not None else registry.registry_record_payload(memo="change"),
        actor,
        witnesses,
        timestamp=NOW,
        event_id=event_id,
    )


def vote(voter: SigningKey, proposal_id: str, choice: str = "approve", ns: str = FED_NS) -> Record:
    return make_record(ns, "vote.cast@1.0.0", {"proposalId": proposal_id, "choice": choice},
                       voter, timestamp=NOW + 5)  # fmt: skip


def joiner_peer() -> Peer:
    return Peer(
        "did:vm:node:south1",
        "https://south1.vaultmesh.example",
        JOINER.public,
        "active",
        frozenset({"witness", "countersign"}),
    )


STATE = RegistryState(REG)


def test_join_applies_only_after_quorum() -> None:
    # The joining node proposes its own addition: it is not a peer, so it approves nothing.
    rec = proposal(REG.with_peer(joiner_peer()), JOINER)
    s = STATE.propose(rec)
    assert s.approvals("prop-1") == () and not s.ready("prop-1")
    with pytest.raises(PolicyError) as e:
        s.apply("prop-1", NOW)
    assert e.value.code == "quorum_not_met" and e.value.details["quorum"] == 2
    s = s.approve("prop-1", "did:vm:node:east1", EAST.sign(rec.signing_input))
    assert s.approvals("prop-1") == ("did:vm:node:east1",)
    with pytest.raises(PolicyError):
        s.apply("prop-1", NOW)
    s = s.approve("prop-1", "did:vm:node:west1", vote(WEST, "prop-1"))
    assert s.ready("prop-1")
    assert [a.via for a in s.pending["prop-1"].approvals] == ["signature", "record"]
    s = s.apply("prop-1", NOW + 10)
    assert "did:vm:node:south1" in s.registry and s.pending == {}
    assert s.registry.peer("did:vm:node:south1").status == "active"
    assert s.applied[-1].approved_by == ("did:vm:node:east1", "did:vm:node:west1")
    assert s.applied[-1].registry_digest == s.registry.digest()
    assert s.history == (
        StatusChange("did:vm:node:south1", "absent", "active", "registry change prop-1",
                     rec.event_hash_hex, NOW + 10),
    )  # fmt: skip
    json.dumps(s.to_dict())  # what the API shows is plain JSON


def test_active_proposer_and_record_witnesses_count() -> None:
    rec = proposal(REG.with_peer(joiner_peer()), EAST)
    s = STATE.propose(rec)
    assert s.approvals("prop-1") == ("did:vm:node:east1",)
    assert [a.via for a in s.pending["prop-1"].approvals] == ["proposer"]
    rec2 = proposal(REG.with_peer(joiner_peer()), EAST, (WEST, JOINER), event_id="prop-2")
    s2 = STATE.propose(rec2)
    assert s2.approvals("prop-2") == ("did:vm:node:east1", "did:vm:node:west1")
    assert s2.ready("prop-2")
    folded, err = STATE.fold(rec2)
    assert err is None and "did:vm:node:south1" in folded.registry


def test_suspended_or_unknown_peers_do_not_count() -> None:
    reg = REG.with_status("did:vm:node:north1", "suspended").with_status(
        "did:vm:node:west1", "probation"
    )
    state = RegistryState(Registry.from_dict({**reg.to_dict(), "quorum": 1}))
    rec = proposal(state.registry.with_peer(joiner_peer()), NORTH, (WEST,))
    s = state.propose(rec)
    assert s.approvals("prop-1") == ()  # suspended proposer, probation witness
    for did, key, code in [
        ("did:vm:node:north1", NORTH, "approver_not_active"),
        ("did:vm:node:west1", WEST, "approver_not_active"),
        (STRANGER.did, STRANGER, "approver_unknown"),
        ("did:vm:node:nowhere", STRANGER, "approver_unknown"),
    ]:
        with pytest.raises(PolicyError) as e:
            s.approve("prop-1", did, key.sign(rec.signing_input))
        assert e.value.code == code
    # a vote record by a non-peer folds to an error, not to an approval
    folded, err = s.fold(vote(STRANGER, "prop-1"))
    assert folded is s and err is not None and err.code == "approver_unknown"
    s = s.approve("prop-1", "did:vm:node:east1", EAST.sign(rec.signing_input))
    assert s.ready("prop-1")


def test_duplicate_approvals_count_once() -> None:
    rec = proposal(REG.with_peer(joiner_peer()), EAST, (EAST,))
    s = STATE.propose(rec)
    assert s.approvals("prop-1") == ("did:vm:node:east1",)
    s2 = s.approve("prop-1", "did:vm:node:east1", EAST.sign(rec.signing_input))
    s2 = s2.approve("prop-1", EAST.did, vote(EAST, "prop-1"))
    assert s2 is s
    assert not s2.ready("prop-1")
    with pytest.raises(PolicyError):
        s2.apply("prop-1", NOW)


def test_bad_approvals_are_refused() -> None:
    rec = proposal(REG.with_peer(joiner_peer()), JOINER)
    s = STATE.propose(rec)
    with pytest.raises(VerificationError) as e:
        s.approve("prop-1", "did:vm:node:east1", WEST.sign(rec.signing_input))
    assert e.value.code == "approval_signature_invalid"
    with pytest.raises(VerificationError):
        s.approve("prop-1", "did:vm:node:east1", b"\x00" * 10)
    for bad in (
        vote(EAST, "prop-2"),
        vote(EAST, "prop-1", choice="reject"),
        vote(EAST, "prop-1", ns="dao:vaultmesh"),
        vote(WEST, "prop-1"),  # West's vote offered as East's approval
    ):
        with pytest.raises(PolicyError) as pe:
            s.approve("prop-1", "did:vm:node:east1", bad)
        assert pe.value.code == "approval_mismatch"
    with pytest.raises(NotFoundError) as ne:
        s.approve("prop-9", "did:vm:node:east1", EAST.sign(rec.signing_input))
    assert ne.value.code == "proposal_unknown"
    # a vote whose signature was tampered with
    forged = vote(EAST, "prop-1").envelope()
    forged["signatures"][0]["sig"] = vote(WEST, "prop-1").envelope()["signatures"][0]["sig"]
    with pytest.raises(VerificationError) as ve:
        s.approve("prop-1", "did:vm:node:east1", Record.from_value(forged))
    assert ve.value.code == "approval_signature_invalid"


def test_below_quorum_never_applies_while_folding() -> None:
    s, _ = STATE.fold(proposal(REG.with_peer(joiner_peer()), EAST))
    for r in (vote(EAST, "prop-1"), vote(STRANGER, "prop-1"), vote(WEST, "prop-1", "reject")):
        s, _ = s.fold(r)
    s, err = s.fold(make_record(FED_NS, "ledger.append@1.0.0", {"stream": "x", "data": 1},
                                EAST, timestamp=NOW))  # fmt: skip
    assert err is None and "prop-1" in s.pending and s.registry == REG


def test_leaving_and_reinstating() -> None:
    s = STATE.propose(proposal(REG.without_peer("did:vm:node:north1"), EAST))
    s = s.approve("prop-1", "did:vm:node:west1", vote(WEST, "prop-1"))
    s = s.apply("prop-1", NOW)
    assert "did:vm:node:north1" not in s.registry and len(s.registry) == 2
    assert s.history[-1].old == "active" and s.history[-1].new == "absent"
    # probation -> active again, by a registry change
    s2 = RegistryState(REG.with_status("did:vm:node:north1", "probation"))
    rec = proposal(REG, EAST, (WEST,), event_id="reinstate")
    s2, err = s2.fold(rec)
    assert err is None
    assert s2.registry.peer("did:vm:node:north1").status == "active"
    assert s2.history[-1] == StatusChange("did:vm:node:north1", "probation", "active",
                                          "registry change reinstate", rec.event_hash_hex, NOW)  # fmt: skip


def test_refused_proposals() -> None:
    other = Registry.from_dict({**REG.to_dict(), "federation_id": "other-fed"})
    cases = [
        (proposal(other.with_peer(joiner_peer()), EAST), PolicyError, "federation_id_mismatch"),
        (proposal(REG, EAST), PolicyError, "proposal_no_change"),
        (
            proposal(REG.with_status("did:vm:node:west1", "suspended")
                     .with_status("did:vm:node:north1", "suspended"), EAST),
            PolicyError,
            "quorum_unreachable",
        ),
        (
            proposal(REG, EAST, payload={"federation_id": "vaultmesh-primary", "registry": {}}),
            FormatError,
            "quorum_invalid",
        ),
        (
            make_record(FED_NS, "vote.cast@1.0.0", {"proposalId": "x", "choice": "yes"}, EAST,
                        timestamp=NOW),
            PolicyError,
            "proposal_schema_unsupported",
        ),
    ]  # fmt: skip
    for rec, cls, code in cases:
        with pytest.raises(cls) as e:
            STATE.propose(rec)
        assert e.value.code == code, code
    # a proposal whose actor signature does not verify
    env = proposal(REG.with_peer(joiner_peer()), EAST).envelope()
    env["signatures"][0]["sig"] = base64.urlsafe_b64encode(bytes(64)).decode().rstrip("=")
    with pytest.raises(VerificationError) as ve:
        STATE.propose(Record.from_value(env))
    assert ve.value.code == "proposal_signature_invalid"


def test_proposal_ids_and_superseding() -> None:
    a = proposal(REG.with_peer(joiner_peer()), EAST, event_id="a")
    b = proposal(REG.without_peer("did:vm:node:north1"), WEST, event_id="b")
    s = STATE.propose(a).propose(b)
    assert s.propose(a) is s  # the same record again changes nothing
    with pytest.raises(ConflictError) as e:
        s.propose(proposal(REG.with_peer(joiner_peer()), WEST, event_id="a"))
    assert e.value.code == "proposal_id_conflict"
    s = s.approve("b", "did:vm:node:east1", EAST.sign(b.signing_input)).apply("b", NOW)
    assert s.pending == {} and s.applied[-1].superseded == ("a",)
    with pytest.raises(ConflictError):
        s.propose(b)  # already applied


def test_strangers_cannot_fill_the_pending_slots() -> None:
    """Regression (issue 14, rule 3): 64 proposals signed by throwaway keys
    filled every pending slot, and a genuine change was refused
    ``too_many_pending``.  Proposals no member signed are candidates, in a pool
    of their own; a member's proposal always finds a slot."""
    s = STATE
    throwaway = [SigningKey.generate() for _ in range(MAX_CANDIDATES + 48)]
    refused: dict[str, int] = {}
    for i, key in enumerate(throwaway):
        try:
            s = s.propose(proposal(REG.with_peer(joiner_peer()), key, event_id=f"junk{i}"))
        except PolicyError as e:
            refused[e.code] = refused.get(e.code, 0) + 1
    assert refused == {"too_many_candidates": 48}
    assert len(s.pending) == MAX_CANDIDATES
    assert all(p.sponsor is None for p in s.pending.values())
    with pytest.raises(PolicyError) as e:  # one candidate per key
        s.propose(proposal(REG.with_peer(joiner_peer()), throwaway[0], event_id="again"))
    assert e.value.code == "candidate_pending"
    # The genuine change, proposed by a member and approved by another, is applied.
    genuine = proposal(REG.without_peer("did:vm:node:north1"), EAST, event_id="genuine")
    s = s.propose(genuine)
    assert s.pending["genuine"].sponsor == "did:vm:node:east1"
    s = s.approve("genuine", "did:vm:node:west1", WEST.sign(genuine.signing_input))
    assert s.ready("genuine")
    s = s.apply("genuine", NOW + 1)
    assert "did:vm:node:north1" not in s.registry and s.pending == {}
    assert len(s.applied[-1].superseded) == MAX_CANDIDATES


def test_a_stranger_s_proposal_carrying_a_member_s_signature_takes_a_member_slot() -> None:
    s = STATE.propose(proposal(REG.with_peer(joiner_peer()), JOINER, (WEST,)))
    assert s.pending["prop-1"].sponsor == "did:vm:node:west1"
    # A suspended member's signature sponsors nothing; a probation member's does.
    reg = REG.with_status("did:vm:node:north1", "suspended").with_status(
        "did:vm:node:west1", "probation"
    )
    state = RegistryState(Registry.from_dict({**reg.to_dict(), "quorum": 1}))
    changed = state.registry.with_peer(joiner_peer())
    assert state.propose(proposal(changed, STRANGER, (NORTH,))).pending["prop-1"].sponsor is None
    assert state.propose(proposal(changed, STRANGER, (WEST,))).pending["prop-1"].sponsor == (
        "did:vm:node:west1"
    )


def test_each_member_sponsors_a_bounded_number_of_proposals() -> None:
    s = STATE
    for i in range(MAX_PENDING_PER_SPONSOR):
        s = s.propose(proposal(REG.with_peer(joiner_peer()), EAST, event_id=f"e{i}"))
    with pytest.raises(PolicyError) as e:
        s.propose(proposal(REG.with_peer(joiner_peer()), EAST, event_id="e-more"))
    assert e.value.code == "sponsor_quota_exceeded" and e.value.details["members"] == [
        "did:vm:node:east1"
    ]
    # A throwaway actor with East's witness signature is charged to East too.
    with pytest.raises(PolicyError) as e:
        s.propose(proposal(REG.with_peer(joiner_peer()), STRANGER, (EAST,), event_id="x"))
    assert e.value.code == "sponsor_quota_exceeded"
    # A second member signer with room sponsors it instead.
    both = s.propose(proposal(REG.with_peer(joiner_peer()), EAST, (WEST,), event_id="e-west"))
    assert both.pending["e-west"].sponsor == "did:vm:node:west1"
    # Approving a candidate sponsors it, within the approver's own quota.
    cand = proposal(REG.with_peer(joiner_peer()), JOINER, event_id="cand")
    s = s.propose(cand)
    assert s.pending["cand"].sponsor is None
    with pytest.raises(PolicyError) as e:
        s.approve("cand", "did:vm:node:east1", EAST.sign(cand.signing_input))
    assert e.value.code == "sponsor_quota_exceeded"
    s = s.approve("cand", "did:vm:node:west1", WEST.sign(cand.signing_input))
    assert s.pending["cand"].sponsor == "did:vm:node:west1"


def test_pending_proposals_expire_from_when_they_were_received() -> None:
    # The record claims a timestamp long past; expiry counts from receipt here.
    old = proposal(REG.with_peer(joiner_peer()), JOINER, event_id="cand")
    member = proposal(REG.without_peer("did:vm:node:north1"), EAST, event_id="member")
    t = NOW + 10 * PROPOSAL_TTL
    s = STATE.propose(old, now=t).propose(member, now=t)
    assert s.pending["cand"].expires_at == t + CANDIDATE_TTL
    assert s.pending["member"].expires_at == t + PROPOSAL_TTL
    assert set(s.expire(t + CANDIDATE_TTL - 1).pending) == {"cand", "member"}
    assert set(s.expire(t + CANDIDATE_TTL).pending) == {"member"}
    assert s.expire(t + PROPOSAL_TTL).pending == {}
    # An expired candidate no longer holds its key's candidate slot.
    again = proposal(REG.with_peer(joiner_peer()), JOINER, event_id="cand-2")
    with pytest.raises(PolicyError):
        s.propose(again, now=t + 1)
    assert "cand-2" in s.propose(again, now=t + CANDIDATE_TTL).pending
    json.dumps(s.to_dict())


def test_an_operator_drops_a_proposal_and_it_stays_dropped() -> None:
    junk = proposal(REG.with_peer(joiner_peer()), STRANGER, event_id="junk")
    s = STATE.propose(junk).drop("junk")
    assert s.pending == {} and s.dropped == ("junk",)
    with pytest.raises(ConflictError) as e:
        s.propose(junk)
    assert e.value.code == "proposal_dropped"
    with pytest.raises(NotFoundError) as ne:
        s.drop("junk")
    assert ne.value.code == "proposal_unknown"
    # Dropped ids survive an applied change; their number is bounded.
    for i in range(MAX_DROPPED + 3):
        s = s.propose(proposal(REG.with_peer(joiner_peer()), STRANGER, event_id=f"d{i}"))
        s = s.drop(f"d{i}")
    assert len(s.dropped) == MAX_DROPPED and s.dropped[-1] == f"d{MAX_DROPPED + 2}"


# --- scoring -----------------------------------------------------------------------------------

P = "did:vm:node:west1"
EVIDENCE = Misbehaviour("equivocation", "sha256:" + "aa" * 32, "sha256:" + "01" * 32)
EVIDENCE_2 = Misbehaviour("invalid_anchor_claim", "sha256:" + "bb" * 32, "sha256:" + "02" * 32)


def test_heartbeats_and_misses_move_the_score() -> None:
    s = PeerScores(heartbeat_interval=30)
    t = NOW
    assert s.on_heartbeat(P, t) is None and s.score(P) == 100.0
    changes = []
    for _ in range(7):
        t += 30
        changes.append(s.on_missed(P, t))
    # 100 * 0.9**6 = 53.1 (still active); 100 * 0.9**7 = 47.8 < 50: probation on the 7th miss
    assert changes[:6] == [None] * 6
    assert changes[6] is not None and (changes[6].old, changes[6].new) == ("active", "probation")
    assert changes[6].evidence_ref is None and changes[6].at == t
    assert s.status(P) == "probation" and s.score(P) == pytest.approx(100 * 0.9**7)
    # heartbeats bring it back at >= 80
    n = 0
    while s.status(P) == "probation":
        t += 30
        n += 1
        s.on_heartbeat(P, t)
    assert s.score(P) >= 80 and n == 10  # 100 - 52.2 * 0.9**n >= 80
    assert [h.new for h in s.history(P)] == ["probation", "active"]


def test_heartbeat_spam_counts_once_per_half_interval() -> None:
    s = PeerScores(heartbeat_interval=30)
    s.on_missed(P, NOW)
    before = s.score(P)
    s.on_heartbeat(P, NOW + 1)
    after_one = s.score(P)
    for dt in range(2, 15):
        s.on_heartbeat(P, NOW + dt)
    assert after_one > before and s.score(P) == after_one
    assert s.peer_state(P).heartbeats == 1


def test_a_long_outage_suspends_and_recovery_is_automatic() -> None:
    s = PeerScores(heartbeat_interval=30)
    t = NOW
    first_below: int | None = None
    suspended_at: int | None = None
    while suspended_at is None:
        t += 30
        change = s.on_missed(P, t)
        if first_below is None and s.score(P) < 20:
            first_below = t
        if change and change.new == "suspended":
            suspended_at = t
    assert first_below is not None and suspended_at - first_below == 3600
    assert s.status(P) == "suspended"
    while s.status(P) == "suspended":
        t += 30
        s.on_heartbeat(P, t)
    assert s.status(P) == "probation" and 50 <= s.score(P) < 80
    while s.status(P) != "active":
        t += 30
        s.on_heartbeat(P, t)
    assert [h.new for h in s.history(P)] == ["probation", "suspended", "probation", "active"]


def test_a_break_above_the_floor_restarts_the_clock() -> None:
    s = PeerScores()
    t = NOW
    while s.score(P) >= 20:
        t += 30
        s.on_missed(P, t)
    t += 3000
    s.on_missed(P, t)
    for _ in range(3):  # back above 20 briefly
        t += 30
        s.on_heartbeat(P, t)
    assert s.score(P) >= 20
    while s.score(P) >= 20:
        t += 30
        s.on_missed(P, t)
    t += 3000
    assert s.on_missed(P, t) is None and s.status(P) == "probation"


def test_invalid_messages_lower_the_score() -> None:
    s = PeerScores()
    for _ in range(6):
        assert s.on_invalid(P, "stale_checkpoint") is None
    # without a time the status waits for the next timed event
    assert s.on_invalid(P, "bad_proof") is None and s.status(P) == "active"
    change = s.on_valid(P, NOW)  # 47.8 + 0.02 * 52.2 = 48.9: still below 50
    assert change is not None and change.new == "probation"
    s2 = PeerScores()
    results = [s2.on_invalid(P, "bad_proof", NOW + i) for i in range(7)]
    assert results[-1] is not None and results[-1].new == "probation"
    assert s2.peer_state(P).last_invalid_reason == "bad_proof"
    before = s2.score(P)
    s2.on_valid(P)
    assert s2.score(P) == pytest.approx(before + 0.02 * (100 - before))


def test_misbehaviour_probation_at_once_then_suspended() -> None:
    s = PeerScores()
    s.on_heartbeat(P, NOW)
    first = s.on_misbehaviour(P, EVIDENCE, NOW + 1)
    assert (first.old, first.new) == ("active", "probation")
    assert first.evidence_ref == EVIDENCE.evidence_ref and first.at == NOW + 1
    assert "equivocation" in first.reason
    # the score is perfect, but the hold stays
    for i in range(20):
        s.on_heartbeat(P, NOW + 60 * (i + 1))
    assert s.status(P) == "probation"
    # the same incident again (another file, another reporter) counts once
    again = Misbehaviour("equivocation", "sha256:" + "cc" * 32, EVIDENCE.incident)
    assert s.on_misbehaviour(P, again, NOW + 5000) == first
    assert s.status(P) == "probation" and len(s.history(P)) == 1
    second = s.on_misbehaviour(P, EVIDENCE_2, NOW + 6000)
    assert (second.old, second.new) == ("probation", "suspended")
    third = s.on_misbehaviour(P, Misbehaviour("invalid_anchor_claim", "sha256:" + "dd" * 32,
                                              "sha256:" + "03" * 32), NOW + 7000)  # fmt: skip
    assert (third.old, third.new) == ("suspended", "suspended")
    assert [h.evidence_ref for h in s.history(P)] == [
        EVIDENCE.evidence_ref, EVIDENCE_2.evidence_ref, "sha256:" + "dd" * 32
    ]  # fmt: skip
    with pytest.raises(FormatError):
        s.on_misbehaviour(P, Misbehaviour("rudeness", "sha256:x", "i"), NOW)


def test_reinstatement_by_registry_change_only() -> None:
    s = PeerScores()
    s.on_misbehaviour(P, EVIDENCE, NOW)
    change = s.reinstate(
        P, NOW + 10, reason="registry change r9", evidence_ref="sha256:" + "ee" * 32
    )
    assert change is not None and (change.old, change.new) == ("probation", "active")
    assert s.status(P) == "active" and s.score(P) == 100.0
    assert s.reinstate(P, NOW + 11, reason="again", evidence_ref=None) is None
    # offences are remembered: the next distinct one suspends at once
    assert s.on_misbehaviour(P, EVIDENCE_2, NOW + 20).new == "suspended"
    # and old evidence of the first incident does not count again
    assert s.on_misbehaviour(P, EVIDENCE, NOW + 30).new == "probation"
    assert s.status(P) == "suspended"


def test_scores_persist_round_trip() -> None:
    s = PeerScores(heartbeat_interval=10)
    s.on_heartbeat(P, NOW)
    for i in range(8):
        s.on_missed(P, NOW + 10 * (i + 1))
    s.on_invalid("did:vm:node:east1", "bad", NOW)
    s.on_misbehaviour("did:vm:node:north1", EVIDENCE, NOW)
    doc = json.loads(json.dumps(s.to_dict()))
    again = PeerScores.from_dict(doc)
    assert again.to_dict() == s.to_dict()
    assert again.status(P) == "probation" and again.history() == s.history()
    assert again.on_missed(P, NOW + 1000) == s.on_missed(P, NOW + 1000)
    bads: list[Any] = [
        {**doc, "version": 2},
        {**doc, "peers": {P: {**doc["peers"][P], "score": 101}}},
        {**doc, "peers": {P: {**doc["peers"][P], "hold": "gone"}}},
        {**doc, "peers": {P: {k: v for k, v in doc["peers"][P].items() if k != "score"}}},
        {**doc, "history": [{"peer": P}]},
        {**doc, "heartbeat_interval": 0},
        [],
    ]
    for bad in bads:
        with pytest.raises(FormatError) as e:
            PeerScores.from_dict(bad)
        assert e.value.code == "peer_scores_malformed"


def test_history_is_bounded_and_keeps_evidence_longest() -> None:
    s = PeerScores(history_limit=4)
    s.on_misbehaviour("did:vm:node:north1", EVIDENCE, NOW)
    t = NOW
    for _ in range(10):  # flap between active and probation
        while s.status(P) == "active":
            t += 30
            s.on_missed(P, t)
        while s.status(P) == "probation":
            t += 30
            s.on_heartbeat(P, t)
    history = s.history()
    assert len(history) == 4 and history[0].evidence_ref == EVIDENCE.evidence_ref


def test_effective_status_is_the_more_severe() -> None:
    s = PeerScores()
    reg = REG.with_status("did:vm:node:north1", "probation")
    s.on_misbehaviour("did:vm:node:east1", EVIDENCE, NOW)
    assert effective_status(reg, s, "did:vm:node:north1") == "probation"
    assert effective_status(reg, s, "did:vm:node:east1") == "probation"
    assert effective_status(reg, s, "did:vm:node:west1") == "active"
    assert [p.did for p in effective_active_peers(reg, s)] == ["did:vm:node:west1"]
    assert {p.did: p.status for p in effective_peers(reg, s)} == {
        "did:vm:node:east1": "probation", "did:vm:node:north1": "probation",
        "did:vm:node:west1": "active",
    }  # fmt: skip
    with pytest.raises(NotFoundError):
        effective_status(reg, s, "did:vm:node:nowhere")
