"""Cadence algebra, phi-backoff and governance (DESIGN.md 3.9)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from remembrancer.core import governance
from remembrancer.core.cadence import backoff_delay, parse_cadence
from remembrancer.core.errors import ConfigError, FormatError, PolicyError
from remembrancer.core.namespace import parse_namespaces
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import make_record

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
NS = parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))
DAO = NS["dao:vaultmesh"]
NOW = 1_764_100_000
ADMIN = demo_key("did:vm:admin:dao-council")
ACTOR = demo_key("did:vm:actor:demo")
ARB = [
    demo_key(f"did:vm:arbiter:{n}") for n in ("prod-us-east-1", "prod-eu-west-1", "prod-dao-suite")
]


def test_backoff_sequence_matches_the_seed() -> None:
    assert [round(backoff_delay(k)) for k in range(1, 10)] == [5, 8, 13, 21, 34, 55, 90, 145, 145]
    assert backoff_delay(1, "auth") == 10 and backoff_delay(1, "validation") == 2.5
    assert backoff_delay(0) == 0


def test_relative_periods_chain() -> None:
    c = parse_cadence({"fast": {"target": "btc:x", "every": "2m"}, "strong": {"target": "btc:x", "every": "3*fast"},
                       "cold": {"target": "btc:x", "every": "2*strong"}})  # fmt: skip
    assert [lv.period for lv in c.levels] == [120, 360, 720]


def test_reference_to_missing_level() -> None:
    with pytest.raises(ConfigError) as e:
        parse_cadence({"strong": {"target": "btc:x", "every": "3*fast"}})
    assert e.value.code == "cadence_reference_unknown"


def proposal(actor, every: str = "45s", **payload):  # type: ignore[no-untyped-def]
    body = {
        "namespace": "dao:vaultmesh",
        "cadence": {"fast": {"every": every}},
        "memo": "faster liveness",
    }
    body.update(payload)
    return make_record(
        "dao:vaultmesh", "governance.cadence.set@1.0.0", body, actor, ARB[:2], timestamp=NOW
    )


def vote(voter, proposal_id: str, choice: str = "approve"):  # type: ignore[no-untyped-def]
    return make_record("dao:vaultmesh", "vote.cast@1.0.0", {"proposalId": proposal_id, "choice": choice},
                       voter, ARB[:2] if voter not in ARB[:2] else ARB[1:], timestamp=NOW + 10)  # fmt: skip


def test_seed_example_admin_changes_fast_cadence_89s_to_45s() -> None:
    state = governance.GovernanceState()
    assert governance.effective_cadence(DAO, state, NOW).get("fast").period == 89
    rec = proposal(ADMIN)
    governance.check_proposal(rec, DAO)
    state = governance.fold(state, rec, DAO)
    fast = governance.effective_cadence(DAO, state, NOW).get("fast")
    assert fast.period == 45 and fast.target == "eip155:8453" and fast.confirmations == 3
    # strong is 34*fast: it follows.
    assert governance.effective_cadence(DAO, state, NOW).get("strong").period == 34 * 45
    assert state.applied[0].memo == "faster liveness"


def test_effective_after_is_honoured() -> None:
    rec = proposal(ADMIN, effective_after="2025-11-26T00:00:00Z")
    state = governance.fold(governance.GovernanceState(), rec, DAO)
    at = governance.parse_rfc3339("2025-11-26T00:00:00Z")
    assert governance.effective_cadence(DAO, state, at - 1).get("fast").period == 89
    assert governance.effective_cadence(DAO, state, at).get("fast").period == 45


def test_vote_threshold() -> None:
    rec = proposal(ACTOR)
    state = governance.fold(governance.GovernanceState(), rec, DAO)
    assert rec.event_id in state.pending and not state.applied
    state = governance.fold(state, vote(ARB[0], rec.event_id), DAO)
    state = governance.fold(state, vote(ARB[0], rec.event_id), DAO)  # repeated: counts once
    state = governance.fold(state, vote(ACTOR, rec.event_id), DAO)  # not a voter
    state = governance.fold(state, vote(ARB[1], rec.event_id, "reject"), DAO)
    assert not state.applied
    state = governance.fold(state, vote(ARB[2], rec.event_id), DAO)
    assert state.applied and state.applied[0].approved_by == (ARB[0].did, ARB[2].did)
    assert governance.effective_cadence(DAO, state, NOW + 10).get("fast").period == 45
    round_trip = governance.GovernanceState.from_dict(state.to_dict())
    assert round_trip.to_dict() == state.to_dict()


def test_proposals_for_another_namespace_or_invalid_cadence_are_refused() -> None:
    with pytest.raises(PolicyError) as e:
        governance.check_proposal(proposal(ADMIN, namespace="fin:clearing"), DAO)
    assert e.value.code == "governance_namespace_mismatch"
    with pytest.raises(FormatError) as e2:
        governance.check_proposal(proposal(ADMIN, every="0s"), DAO)
    assert e2.value.code == "cadence_invalid"


def test_the_sequencer_folds_every_type_fold_looks_at() -> None:
    """The sequencer passes to ``governance.fold`` only records whose type is in
    ``FOLDED_TYPES``: every type ``fold`` compares its record's type with is there."""
    import ast
    import inspect

    from remembrancer.core import governance

    tree = ast.parse(inspect.getsource(governance.fold))
    compared = {
        getattr(governance, node.comparators[0].id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and isinstance(node.left, ast.Name)
        and node.left.id == "kind"
        and isinstance(node.comparators[0], ast.Name)
    }
    assert compared == governance.FOLDED_TYPES
