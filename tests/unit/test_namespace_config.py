"""Namespace configuration: the seed's example, validation messages, hot reload."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from remembrancer.core.errors import ConfigError
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.schema import SchemaPattern, SchemaRegistry
from remembrancer.demo.keys import demo_key
from remembrancer.log.namespaces import NamespaceSource
from remembrancer.log.schemas import bundled_schemas

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
SCHEMAS = bundled_schemas()
KNOWN = frozenset(SCHEMAS.names())


def doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_seed_namespaces_as_in_reference() -> None:
    ns = parse_namespaces(doc(), source="x.yaml", known_schemas=KNOWN)
    dao, fin = ns["dao:vaultmesh"], ns["fin:clearing"]
    assert dao.min_required == 2 and len(dao.witnesses) == 3
    assert fin.min_required == 3 and len(fin.witnesses) == 3
    assert (
        dao.witnesses[demo_key("did:vm:arbiter:prod-us-east-1").did]
        == "did:vm:arbiter:prod-us-east-1"
    )
    assert [s.period for s in dao.cadence.levels] == [89, 89 * 34, 86400]
    assert [s.target for s in dao.cadence.levels] == ["eip155:8453", "btc:mainnet", "rfc3161:tsa"]
    assert [s.confirmations for s in fin.cadence.levels] == [12, 6, None]
    assert [s.period for s in fin.cadence.levels] == [120, 120 * 17, 43200]
    assert dao.schema_allowed("ledger.append@1.0.5") and not dao.schema_allowed(
        "sequencer.commit@1.0.0"
    )
    assert fin.schema_allowed("sequencer.commit@1.0.0") and not fin.schema_allowed(
        "vote.cast@1.0.0"
    )


def test_schema_answers_are_remembered_within_a_bound() -> None:
    dao = parse_namespaces(doc(), source="x.yaml", known_schemas=KNOWN)["dao:vaultmesh"]
    for i in range(3000):  # allowed and refused, each asked twice
        assert dao.schema_allowed(f"ledger.append@1.0.{i}")
        assert not dao.schema_allowed(f"nope.append@1.0.{i}")
        assert dao.schema_allowed(f"ledger.append@1.0.{i}")
        assert not dao.schema_allowed(f"sequencer.commit@1.0.{i}")
        assert len(dao._allowed) <= 1024
    assert dao == parse_namespaces(doc(), source="x.yaml", known_schemas=KNOWN)["dao:vaultmesh"]


def test_every_demo_alias_is_the_derived_key() -> None:
    for alias, did in doc()["aliases"].items():
        assert demo_key(alias).did == did


@pytest.mark.parametrize(
    ("edit", "code", "where"),
    [
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["witnesses"].update(min_required=4),
            "witness_quorum_impossible",
            "witnesses.min_required",
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["witnesses"]["allowlist"].append(
                "did:vm:nobody"
            ),
            "alias_unknown",
            "witnesses.allowlist[3]",
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["schema_policy"]["allow"].append(
                "ledger.append@1.x"
            ),
            "schema_pattern_invalid",
            "schema_policy.allow[6]",  # after the six allowed in the example
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["schema_policy"]["allow"].append(
                "nosuch.thing@1.0.x"
            ),
            "schema_pattern_unmatched",
            "schema_policy.allow[6]",  # after the six allowed in the example
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["cadence"]["fast"].update(every="2*strong"),
            "cadence_cycle",
            "cadence",
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["cadence"]["fast"].update(every="0s"),
            "cadence_zero",
            "cadence.fast",
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["cadence"]["fast"].update(target="ftp:x"),
            "cadence_target_invalid",
            "cadence.fast.target",
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["cadence"]["fast"].update(confirmations=0),
            "cadence_confirmations_invalid",
            "cadence.fast.confirmations",
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"]["cadence"].update(
                warm={"target": "btc:mainnet", "every": "1d"}
            ),
            "cadence_level_unknown",
            "cadence.warm",
        ),
        (
            lambda d: d["namespaces"]["dao:vaultmesh"].update(colour="blue"),
            "config_key_unknown",
            "'colour'",
        ),
        (
            lambda d: d["aliases"].update({"did:vm:x": "did:key:z6MkNOTAKEY"}),
            "did_invalid",
            "aliases.did:vm:x",
        ),
        (
            lambda d: d["namespaces"].update({"Bad Name": {}}),
            "namespace_name_invalid",
            "'Bad Name'",
        ),
    ],
)
def test_errors_name_file_namespace_and_key(edit, code: str, where: str) -> None:  # type: ignore[no-untyped-def]
    d = copy.deepcopy(doc())
    edit(d)
    with pytest.raises(ConfigError) as e:
        parse_namespaces(d, source="conf/namespaces.yaml", known_schemas=KNOWN)
    assert e.value.code == code
    assert "conf/namespaces.yaml" in e.value.message
    assert where in e.value.message
    if code not in ("namespace_name_invalid", "did_invalid"):
        assert "namespace dao:vaultmesh" in e.value.message


def test_schema_patterns() -> None:
    p = SchemaPattern.parse("ledger.append@1.0.x")
    assert p.matches("ledger.append@1.0.0") and p.matches("ledger.append@1.0.99")
    assert not p.matches("ledger.append@1.1.0") and not p.matches("ledger.appendix@1.0.0")
    assert SchemaPattern.parse("ledger.append").matches("ledger.append@7.3.1")
    assert not SchemaPattern.parse("ledger.append@1.0.2").matches("ledger.append@1.0.3")
    assert str(p) == "ledger.append@1.0.x"


def test_bundled_schemas_are_eleven_and_draft_2020_12() -> None:
    names = SCHEMAS.names()
    assert len(names) == 11
    for name in names:
        assert SCHEMAS.document(name)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_refs_never_reach_the_network() -> None:
    with pytest.raises(ConfigError) as e:
        SchemaRegistry({"a.b@1.0.0": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:remembrancer:schema:a.b@1.0.0",
        "$ref": "https://example.invalid/remote.json",
        }})  # fmt: skip
    assert e.value.code == "schema_invalid"


def test_hot_reload_and_invalid_edit_keeps_previous(tmp_path: Path) -> None:
    path = tmp_path / "namespaces.yaml"
    path.write_text(EXAMPLE.read_text())
    source = NamespaceSource(path, SCHEMAS, interval=0)
    assert source.current()["dao:vaultmesh"].min_required == 2
    d = doc()
    d["namespaces"]["dao:vaultmesh"]["witnesses"]["min_required"] = 3
    path.write_text(yaml.safe_dump(d))
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    assert source.current()["dao:vaultmesh"].min_required == 3
    assert source.generation == 2
    path.write_text("namespaces: [oops")
    os.utime(path, ns=(1, 2_000_000_000_100_000_000))
    assert source.current()["dao:vaultmesh"].min_required == 3
    assert source.last_error is not None and source.last_error.code == "config_yaml_invalid"
    d["namespaces"]["dao:vaultmesh"]["witnesses"]["min_required"] = 9
    path.write_text(yaml.safe_dump(d))
    os.utime(path, ns=(1, 2_000_000_000_200_000_000))
    assert source.current()["dao:vaultmesh"].min_required == 3
    assert source.last_error.code == "witness_quorum_impossible"
