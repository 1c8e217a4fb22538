"""Typed, fail-fast configuration (issue 16 item 3, docs/adr/0011-typed-configuration.md).

Every refusal of node.yaml, the rails' and the peers' settings, the
environment overrides, the strict YAML of every configuration file, the
per-request deadline in process, and the docs tables against the models.
The same refusals through a real ``remembrancer serve`` process:
tests/integration/test_config_refusals.py.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from remembrancer.anchoring.base import RailRegistry
from remembrancer.anchoring.rfc3161.devtsa import DevTsa
from remembrancer.anchoring.settings import BtcSettings, EvmSettings, Rfc3161Settings
from remembrancer.configfile import MAX_YAML_NODES, parse_yaml, rows
from remembrancer.core.cosignature import format_cosigner_vkey
from remembrancer.core.errors import ConfigError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.federation.registry.parse import load_federation_file
from remembrancer.log.namespaces import load_namespaces_file
from remembrancer.log.schemas import bundled_schemas
from remembrancer.node.config import (
    NodeFile,
    load_node_config,
    write_initial_config,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = SigningKey.generate()
LOG_VKEY = format_vkey("beta.test/dao:vaultmesh", KEY.public)
PEER_VKEY = format_cosigner_vkey("beta.test/witness", KEY.public)


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "n"
    write_initial_config(directory, origin_prefix="alpha.test")
    return directory


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return DevTsa(tmp_path_factory.mktemp("tsa")).ca_cert_path


def config_with(directory: Path, text: str, env: dict[str, str] | None = None) -> Any:
    """node.yaml of ``directory`` with ``text`` (YAML) merged over it, loaded."""
    doc = yaml.safe_load((directory / "node.yaml").read_text())
    doc.update(yaml.safe_load(text) if text.strip() else {})
    path = directory / "edited.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_node_config(path, env=env or {})


def refused(directory: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        config_with(directory, text, env)
    message = e.value.message
    assert "\n" not in message and "Traceback" not in message, message
    return e.value


# --- the cases named by the issue -------------------------------------------------------------


def test_a_word_for_the_tick_is_one_line_naming_file_key_expected_and_found(
    node_dir: Path,
) -> None:
    # Was: float("fast") raised ValueError, a traceback.
    e = refused(node_dir, "scheduler: {tick_seconds: fast}")
    assert e.code == "config_invalid"
    assert e.message == (
        f"{node_dir / 'edited.yaml'}: scheduler.tick_seconds: expected a number from 0.05 to"
        " 3600, found 'fast'"
    )
    assert e.details == {"file": str(node_dir / "edited.yaml"),
                         "key": "scheduler.tick_seconds", "reason": "invalid"}  # fmt: skip


@pytest.mark.parametrize("word", ["'no'", "'false'", "no", "off", "'off'", "n", "0", "''"])
def test_a_string_is_never_a_boolean(node_dir: Path, word: str) -> None:
    # Was: bool('no') is True, so `enabled: 'no'` ran the scheduler.
    path = node_dir / "edited.yaml"
    path.write_text((node_dir / "node.yaml").read_text() + f"scheduler: {{enabled: {word}}}\n")
    with pytest.raises(ConfigError) as info:
        load_node_config(path, env={})
    assert "scheduler.enabled: expected true or false, found" in info.value.message


def test_yaml_booleans_are_true_and_false(node_dir: Path) -> None:
    assert config_with(node_dir, "scheduler: {enabled: false}").scheduler_enabled is False
    assert config_with(node_dir, "scheduler: {enabled: true}").scheduler_enabled is True
    assert parse_yaml(b"a: [true, True, FALSE, yes, no, on, off]", "x") == {
        "a": [True, True, False, "yes", "no", "on", "off"]
    }


@pytest.mark.parametrize("tick", ["0", "-1", "0.01", "3601", ".inf", ".nan", "true", "'1'"])
def test_a_tick_outside_its_bounds_is_refused(node_dir: Path, tick: str) -> None:
    # Was: tick_seconds: 0 (or negative) was accepted, and the scheduler spun.
    e = refused(node_dir, f"scheduler: {{tick_seconds: {tick}}}")
    assert "scheduler.tick_seconds: expected a number from 0.05 to 3600" in e.message


def test_ticks_inside_the_bounds_are_kept(node_dir: Path) -> None:
    config = config_with(node_dir, "scheduler: {tick_seconds: 0.05, reverify_seconds: 86400}")
    assert config.scheduler_tick_s == 0.05 and config.scheduler_reverify_s == 86400.0
    assert config_with(node_dir, "scheduler: {tick_seconds: 3}").scheduler_tick_s == 3.0


@pytest.mark.parametrize("value", ["0", "-5", "3601", "'30'", "true"])
def test_the_request_timeout_is_bounded(node_dir: Path, value: str) -> None:
    e = refused(node_dir, f"limits: {{request_timeout_s: {value}}}")
    assert "limits.request_timeout_s: expected a number from 0.1 to 3600" in e.message


def test_the_request_timeout_reaches_the_node(node_dir: Path) -> None:
    from remembrancer.node.app import GuardMiddleware
    from remembrancer.node.runtime import Node

    config = config_with(node_dir, "limits: {request_timeout_s: 7.5}")
    assert config.limits.request_timeout_s == 7.5
    node = Node.from_config(config)
    try:
        assert GuardMiddleware(None, node).request_timeout == 7.5
    finally:
        node.store.close()


def test_a_rail_with_a_number_for_its_url_is_refused_when_the_file_is_read(
    node_dir: Path, ca_pem: Path
) -> None:
    # Was: accepted at start; the rail failed at its first anchor.
    e = refused(node_dir, f"anchoring: {{rfc3161: {{tsa: {{url: 42, trust_bundle: '{ca_pem}'}}}}}}")
    assert e.code == "rfc3161_config_invalid"
    assert e.message.endswith(
        "edited.yaml: anchoring.rfc3161.tsa.url: expected an http(s) URL, found 42"
    )


def test_every_configured_rail_is_built_at_start(node_dir: Path, ca_pem: Path) -> None:
    from remembrancer.node.runtime import Node

    good = config_with(node_dir, f"anchoring: {{rfc3161: {{tsa: {{trust_bundle: '{ca_pem}'}}}}}}")
    node = Node.from_config(good)
    try:
        assert "rfc3161:tsa" in node.rails._rails  # built, not waiting for the first anchor
    finally:
        node.store.close()
    shutil.rmtree(node_dir / "data")
    missing = node_dir / "missing.pem"
    bad = config_with(node_dir, f"anchoring: {{rfc3161: {{tsa: {{trust_bundle: '{missing}'}}}}}}")
    with pytest.raises(ConfigError) as e:
        Node.from_config(bad)  # was: started, and the rail failed when first used
    assert e.value.code == "tsa_trust_bundle_unreadable"
    assert e.value.message.startswith(f"{bad.path}: anchoring.rfc3161.tsa: cannot read")
    assert not (node_dir / "data").exists(), "nothing opened before the rails were checked"


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Hide modules (an uninstalled extra): importing them raises ImportError."""

    def hide(*names: str) -> None:
        for name in names:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
            monkeypatch.setitem(sys.modules, name, None)

    yield hide


def test_a_rail_whose_extra_is_missing_fails_at_start_naming_the_extra(
    tmp_path: Path, without: Any
) -> None:
    headers = tmp_path / "headers.txt"
    registry = RailRegistry({"btc": {"mainnet": {"headers_file": str(headers)}}})
    without("opentimestamps")
    with pytest.raises(ConfigError) as e:
        registry.build_all()  # was: built lazily, failing only when a proof was read
    assert e.value.code == "rail_dependency_missing"
    assert "pip install 'remembrancer[bitcoin]'" in e.value.message
    assert e.value.message.startswith("anchoring.btc.mainnet: ")
    evm = RailRegistry({"eip155": {"31337": {"rpc": "http://127.0.0.1:1", "key_env": "K"}}})
    without("eth_account")
    with pytest.raises(ConfigError) as e:
        evm.build_all()
    assert "pip install 'remembrancer[evm]'" in e.value.message
    RailRegistry({"eip155": {"1": {"rpc": "http://127.0.0.1:1"}}}).build_all()  # verify-only


# --- unknown keys, with their path --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "code"),
    [
        ("colour: blue", "colour", "config_key_unknown"),
        ("limits: {request_timeout: 5}", "limits.request_timeout", "config_key_unknown"),
        ("scheduler: {tick: 1}", "scheduler.tick", "config_key_unknown"),
        ("admin: {token: x}", "admin.token", "config_key_unknown"),
        (f"witness: {{logs: [{{vkey: '{LOG_VKEY}', mirorr: true}}]}}", "witness.logs[0].mirorr",
         "config_key_unknown"),
        # Was accepted: a peer entry only had to contain url and vkey.
        (f"witnessing: {{peers: [{{url: 'http://b/witness', vkey: '{PEER_VKEY}', name: b}}]}}",
         "witnessing.peers[0].name", "config_key_unknown"),
        ("federation: {file: f.yaml, heartbeat: 1}", "federation.heartbeat", "config_key_unknown"),
        ("anchoring: {ots: {}}", "anchoring.ots", "config_key_unknown"),
        ("anchoring: {eip155: {'1': {rpc: 'http://a', keyfile: k}}}", "anchoring.eip155.1.keyfile",
         "evm_config_invalid"),
        ("anchoring: {btc: {mainnet: {headers_file: h, colour: 1}}}",
         "anchoring.btc.mainnet.colour", "btc_config_invalid"),
    ],
)  # fmt: skip
def test_unknown_keys_are_refused_with_their_path(
    node_dir: Path, text: str, key: str, code: str
) -> None:
    e = refused(node_dir, text)
    assert e.code == code
    assert f": {key}: unknown key (expected one of: " in e.message
    assert e.details["key"] == key


def test_an_unknown_key_with_a_line_break_stays_on_one_line(node_dir: Path) -> None:
    e = refused(node_dir, 'limits: {"max_body_bytes\\nerror: forged": 1}')
    assert e.message.endswith(
        "limits.'max_body_bytes\\nerror: forged': unknown key"
        " (expected one of: " + e.message.split("(expected one of: ")[1]
    )


# --- wrong types and values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "code", "expected", "found"),
    [
        ("listen: 8080", "listen", "listen_invalid", "HOST:PORT", "8080"),
        ("listen: 'localhost:99999'", "listen", "listen_invalid", "HOST:PORT", "'localhost:99999'"),
        ("origin_prefix: 42", "origin_prefix", "origin_prefix_invalid", "a host name", "42"),
        ("origin_prefix: 'a b'", "origin_prefix", "origin_prefix_invalid", "a host name", "'a b'"),
        ("version: true", "version", "config_version_unsupported", "1", "true"),
        ("version: '1'", "version", "config_version_unsupported", "1", "'1'"),
        ("version: 2", "version", "config_version_unsupported", "1", "2"),
        ("storage: 42", "storage", "config_invalid", "a store URL", "42"),
        ("storage: 'mysql://db'", "storage", "config_invalid", "a store URL", "'mysql://'"),
        ("data_dir: 7", "data_dir", "config_invalid", "a file path", "7"),
        ("log_format: xml", "log_format", "config_invalid", "'text' or 'json'", "'xml'"),
        ("limits: {max_body_bytes: '1'}", "limits.max_body_bytes", "config_invalid",
         "an integer from 1024 to 67108864", "'1'"),
        ("limits: {batch_size: 2.0}", "limits.batch_size", "config_invalid",
         "an integer from 1 to 65536", "2.0"),
        ("limits: {client_rate: true}", "limits.client_rate", "config_invalid", "a number > 0",
         "true"),
        ("limits: {client_rate: 0}", "limits.client_rate", "config_invalid", "a number > 0", "0"),
        ("limits: [1]", "limits", "config_invalid", "a mapping", "a list"),
        ("witness: {name: 'a+b'}", "witness.name", "config_invalid", "a signed-note key name",
         "'a+b'"),
        (f"witness: {{logs: [{{vkey: '{LOG_VKEY}', mirror: 'yes'}}]}}", "witness.logs[0].mirror",
         "config_invalid", "true or false", "'yes'"),
        ("witness: {logs: [{vkey: nope}]}", "witness.logs[0].vkey", "vkey_invalid", "a note vkey",
         "'nope'"),
        ("witness: {logs: [{mirror: true}]}", "witness.logs[0]", "vkey_invalid",
         "either vkey or a non-empty vkeys", "a mapping"),
        (f"witness: {{logs: [{{vkey: '{LOG_VKEY}', origin: other.test/log}}]}}", "witness.logs[0]",
         "vkey_invalid", "vkeys named after the log's origin other.test/log",
         "beta.test/dao:vaultmesh"),
        (f"witnessing: {{peers: [{{url: 42, vkey: '{PEER_VKEY}'}}]}}", "witnessing.peers[0].url",
         "config_invalid", "an http(s) URL", "42"),
        (f"witnessing: {{peers: [{{url: 'http://b', vkey: '{LOG_VKEY}'}}]}}",
         "witnessing.peers[0].vkey", "vkey_invalid", "a cosignature/v1 vkey", "'beta.test/"),
        ("witnessing: {peers: [{url: 'http://b'}]}", "witnessing.peers[0].vkey", "config_invalid",
         "is required", None),
        ("witnessing: {quorum: 1}", "witnessing.quorum", "config_invalid",
         "an integer from 0 to 0 (the number of peers)", "1"),
        ("witnessing: {quorum: true}", "witnessing.quorum", "config_invalid",
         "an integer from 0 to the number of peers", "true"),
        ("federation: {}", "federation.file", "config_invalid", "is required", None),
        ("federation: {file: f.yaml, did: node-1}", "federation.did", "config_invalid",
         "a DID", "'node-1'"),
        ("federation: {file: f.yaml, heartbeat_seconds: 0}", "federation.heartbeat_seconds",
         "config_invalid", "a number from 0.1 to 3600", "0"),
        ("anchoring: {eip155: {'31337': {rpc: 'http://a', confirmations: '3'}}}",
         "anchoring.eip155.31337.confirmations", "evm_config_invalid",
         "an integer from 1 to 1000000", "'3'"),
        ("anchoring: {eip155: {'31337': {rpc: 'http://a', key_file: k, key_env: K}}}",
         "anchoring.eip155.31337", "evm_config_invalid", "key_file or key_env, not both", "both"),
        ("anchoring: {eip155: {mainnet: {rpc: 'http://a'}}}", "anchoring.eip155.mainnet",
         "evm_config_invalid", "a decimal chain id", "'mainnet'"),
        ("anchoring: {btc: {signet: {headers_file: h}}}", "anchoring.btc.signet",
         "btc_config_invalid", "mainnet, testnet or regtest", "'signet'"),
        ("anchoring: {btc: {mainnet: {calendars: []}}}", "anchoring.btc.mainnet",
         "btc_config_invalid", "headers_file or bitcoin_rpc", "neither"),
        ("anchoring: {btc: {mainnet: {headers_file: h, upgrade: 'no'}}}",
         "anchoring.btc.mainnet.upgrade", "btc_config_invalid", "true or false", "'no'"),
        ("anchoring: {rfc3161: {tsa: {trust_bundle: ca.pem, policy_oid: 1.2.x}}}",
         "anchoring.rfc3161.tsa.policy_oid", "rfc3161_config_invalid", "a dotted OID", "'1.2.x'"),
        ("anchoring: {rfc3161: {tsa: {trust_bundle: ca.pem, timeout: 601}}}",
         "anchoring.rfc3161.tsa.timeout", "rfc3161_config_invalid", "a number > 0 and <= 600",
         "601"),
        ("anchoring: {rfc3161: {'a b': {trust_bundle: ca.pem}}}", "anchoring.rfc3161.a b",
         "rfc3161_config_invalid", "a name of 1 to 64 letters", "'a b'"),
    ],
)  # fmt: skip
def test_wrong_types_and_values_are_one_line(
    node_dir: Path, text: str, key: str, code: str, expected: str, found: str | None
) -> None:
    e = refused(node_dir, text)
    assert e.code == code, e.message
    prefix = f"{node_dir / 'edited.yaml'}: {key}: "
    assert e.message.startswith(prefix), e.message
    what = e.message[len(prefix) :]
    if found is None:
        assert what.startswith(expected), what
    else:
        assert what.startswith(f"expected {expected}"), what
        assert what.split(", found ")[-1].startswith(found), what


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("data_dir: ~no-such-user-here/x", "data_dir"),
        ('data_dir: "a\\0b"', "data_dir"),
        ('storage: "sqlite:///a\\0b"', "storage"),
        ("admin: {token_file: ~no-such-user-here/t}", "admin.token_file"),
    ],
)
def test_a_path_that_cannot_be_used_is_one_line(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(f"origin_prefix: a.test\n{text}\n")
    with pytest.raises(ConfigError) as e:  # was: RuntimeError or ValueError, a traceback
        load_node_config(path, env={})
    assert e.value.message.startswith(f"{path}: {key}: expected ")
    assert "\n" not in e.value.message


def test_an_error_never_shows_a_url_secret(node_dir: Path) -> None:
    rpc = "ftp://user:hunter2@rpc.example/v3/KEY123"
    for text in (f"anchoring: {{eip155: {{'1': {{rpc: '{rpc}'}}}}}}",
                 f"anchoring: {{btc: {{mainnet: {{bitcoin_rpc: '{rpc}'}}}}}}",
                 "storage: 'mysql://user:hunter2@db/KEY123'",
                 'storage: "postgresql://user:hunter2@db/KEY123\\0"',
                 "storage: 'user:hunter2@db/KEY123'"):  # fmt: skip
        e = refused(node_dir, text)
        assert "hunter2" not in e.message and "KEY123" not in e.message, e.message


def test_chain_ids_may_be_written_unquoted(node_dir: Path) -> None:
    path = node_dir / "edited.yaml"
    path.write_text(
        (node_dir / "node.yaml").read_text()
        + "anchoring:\n  eip155:\n    31337: {rpc: 'http://a'}\n"
    )
    assert load_node_config(path, env={}).anchoring.targets() == ["eip155:31337"]


def test_null_sections_are_empty_and_defaults_come_from_the_models(node_dir: Path) -> None:
    path = node_dir / "edited.yaml"
    path.write_text(
        "origin_prefix: alpha.test\nlimits:\nscheduler:\nanchoring:\nwitness:\n  logs:\n"
        "witnessing:\nfederation:\n"
    )
    config = load_node_config(path, env={})
    assert config.limits == NodeFile.model_fields["limits"].get_default(call_default_factory=True)
    assert (config.scheduler_enabled, config.scheduler_tick_s) == (True, 1.0)
    assert config.witnessed == () and config.witness_peers == () and config.federation_file is None
    assert config.heartbeat_seconds == 2.0 and config.antientropy_seconds == 5.0
    assert config.witness_name == "alpha.test/witness" and config.admin_token is None
    assert config.listen == "127.0.0.1:8080" and config.data_dir == (node_dir / "data")
    assert config.storage == f"sqlite:///{node_dir / 'data' / 'remembrancer.db'}"
    path.write_text("origin_prefix:\n")
    with pytest.raises(ConfigError, match="origin_prefix: expected a host name"):
        load_node_config(path, env={})


def test_relative_paths_are_relative_to_the_file(node_dir: Path, ca_pem: Path) -> None:
    (node_dir / "ca.pem").write_bytes(ca_pem.read_bytes())
    config = config_with(node_dir, "anchoring: {rfc3161: {tsa: {trust_bundle: ca.pem}}}\n"
                                   "federation: {file: fed.yaml}")  # fmt: skip
    assert config.anchoring.rfc3161["tsa"].trust_bundle == node_dir / "ca.pem"
    assert config.federation_file == node_dir / "fed.yaml"
    assert config.anchoring.files() == [("anchoring", node_dir / "ca.pem")]


def test_a_whole_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    for text, found in (("- a\n", "a list"), ("42\n", "42")):
        path = tmp_path / "node.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_node_config(path, env={})
        assert e.value.message == f"{path}: expected a mapping of settings, found {found}"


# --- environment overrides --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "code", "expected"),
    [
        ("REMEMBRANCER_LISTEN", "nowhere", "listen_invalid", "HOST:PORT (port 1 to 65535)"),
        ("REMEMBRANCER_LOG_FORMAT", "xml", "config_invalid", "'text' or 'json'"),
        ("REMEMBRANCER_ORIGIN_PREFIX", "no such/prefix", "origin_prefix_invalid", "a host name"),
        ("REMEMBRANCER_STORAGE", "mysql://x", "config_invalid", "a store URL"),
    ],
)
def test_environment_overrides_are_validated_and_named(
    node_dir: Path, var: str, value: str, code: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_node_config(node_dir / "node.yaml", env={var: value})
    assert e.value.code == code
    assert e.value.message.startswith(f"{var}: expected {expected}"), e.value.message
    assert e.value.details["source"] == var


def test_environment_overrides_apply_and_empty_ones_do_not(node_dir: Path) -> None:
    env = {"REMEMBRANCER_LISTEN": "[::1]:9000", "REMEMBRANCER_LOG_FORMAT": "json",
           "REMEMBRANCER_ORIGIN_PREFIX": "other.test", "REMEMBRANCER_STORAGE": "memory://",
           "REMEMBRANCER_ADMIN_TOKEN": "t" * 16}  # fmt: skip
    config = load_node_config(node_dir / "node.yaml", env=env)
    assert (config.listen_host, config.listen_port) == ("::1", 9000)
    assert config.log_format == "json" and config.origin_prefix == "other.test"
    assert config.storage == "memory://" and config.admin_token == "t" * 16
    plain = load_node_config(node_dir / "node.yaml", env=dict.fromkeys(env, ""))
    assert plain.listen == "127.0.0.1:8080" and plain.log_format == "text"
    assert plain.admin_token == (node_dir / "keys" / "admin.token").read_text().strip()


def test_serve_listen_option_overrides_the_environment_and_is_named(node_dir: Path) -> None:
    env = {"REMEMBRANCER_LISTEN": "127.0.0.1:9001"}
    config = load_node_config(node_dir / "node.yaml", env=env, listen="127.0.0.1:9002")
    assert config.listen_port == 9002
    with pytest.raises(ConfigError) as e:
        load_node_config(node_dir / "node.yaml", env=env, listen="nowhere")
    assert e.value.message.startswith("--listen: expected HOST:PORT (port 1 to 65535)")


@pytest.mark.parametrize("token", ["short", "sixteen chars ok", "x" * 15])
def test_an_admin_token_from_the_environment_is_checked_and_never_shown(
    node_dir: Path, token: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_node_config(node_dir / "node.yaml", env={"REMEMBRANCER_ADMIN_TOKEN": token})
    assert e.value.message.startswith("REMEMBRANCER_ADMIN_TOKEN: expected a token of at least 16")
    assert token not in e.value.message


def test_a_short_token_file_is_refused_without_showing_it(node_dir: Path) -> None:
    (node_dir / "keys" / "admin.token").write_text("tiny-secret\n")
    with pytest.raises(ConfigError) as e:
        load_node_config(node_dir / "node.yaml", env={})
    assert "admin.token_file" in e.value.message and "tiny-secret" not in e.value.message


# --- strict YAML, for every configuration file --------------------------------------------


def test_a_repeated_key_is_refused_with_both_lines(node_dir: Path) -> None:
    path = node_dir / "edited.yaml"
    path.write_text((node_dir / "node.yaml").read_text()
                    + "scheduler:\n  tick_seconds: 1\n  tick_seconds: 0\n")  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_node_config(path, env={})  # was: the second silently won
    assert e.value.code == "config_yaml_invalid"
    lines = (node_dir / "node.yaml").read_text().count("\n")
    assert e.value.message == (
        f"{path}: not valid YAML at line {lines + 3}, column 3: duplicate key 'tick_seconds'"
        f" (first at line {lines + 2})"
    )


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    doc = parse_yaml(b"base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "m.yaml")
    assert doc["use"] == {"x": 1, "y": 3}


def test_an_alias_bomb_is_refused_before_it_is_walked() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    with pytest.raises(ConfigError) as e:
        parse_yaml("\n".join(lines).encode(), "bomb.yaml")
    assert e.value.code == "config_too_large" and str(MAX_YAML_NODES) in e.value.message
    with pytest.raises(ConfigError) as cyclic:
        parse_yaml(b"a: &a [*a]\n", "cycle.yaml")
    assert cyclic.value.code == "config_too_large"


def test_malformed_yaml_is_one_line() -> None:
    for data in (
        b"a: [\n",
        b"a: b: c\n",
        b"a: \x80\n",
        b"a: \x01\n",
        b"[" * 5000,
        b"a: !!python/object:os.system x\n",
    ):
        with pytest.raises(ConfigError) as e:
            parse_yaml(data, "bad.yaml")
        assert e.value.code == "config_yaml_invalid" and "\n" not in e.value.message


def test_the_namespaces_file_refuses_a_repeated_namespace_and_a_boolean_version(
    tmp_path: Path,
) -> None:
    example = (ROOT / "src" / "remembrancer" / "examples" / "namespaces.yaml").read_text()
    first = example.index("  dao:vaultmesh:")
    end = example.index("\n  fin:clearing:")
    twice = example[:end] + "\n" + example[first:end] + example[end:]
    path = tmp_path / "namespaces.yaml"
    path.write_text(twice)
    with pytest.raises(ConfigError) as e:
        load_namespaces_file(path, bundled_schemas())  # was: the second one won
    assert "duplicate key 'dao:vaultmesh'" in e.value.message
    path.write_text("version: true\n" + example.replace("version: 1\n", ""))
    with pytest.raises(ConfigError) as v:
        load_namespaces_file(path, bundled_schemas())  # was: True == 1
    assert v.value.code == "config_version_unsupported"


def test_the_federation_file_refuses_a_repeated_key_and_a_boolean_version(tmp_path: Path) -> None:
    peer = {"did": KEY.did, "endpoint": "http://a.test"}
    body = {"federation_id": "f", "quorum": 1, "anchor_strategy": "independent", "peers": [peer]}
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(body))
    assert load_federation_file(path).quorum == 1
    path.write_text(yaml.safe_dump(body) + "quorum: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'quorum'"):
        load_federation_file(path)
    path.write_text(yaml.safe_dump({**body, "version": True}))
    with pytest.raises(ConfigError) as v:
        load_federation_file(path)
    assert v.value.code == "config_version_unsupported"


# --- init -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [({"listen": "nowhere"}, "--listen"), ({"origin_prefix": "bad prefix"}, "--origin-prefix")],
)
def test_init_checks_its_values_before_writing_anything(
    tmp_path: Path, kwargs: dict[str, str], source: str
) -> None:
    with pytest.raises(ConfigError) as e:
        write_initial_config(tmp_path / "n", **kwargs)  # was: wrote a node.yaml serve refused
    assert e.value.message.startswith(f"{source}: expected ")
    assert not (tmp_path / "n").exists()


def test_init_makes_a_valid_prefix_of_any_directory_name(tmp_path: Path) -> None:
    out = write_initial_config(tmp_path / "my node_1", listen="[::1]:8081")
    config = load_node_config(out["config"], env={})
    assert config.origin_prefix == "my-node-1.remembrancer.local"
    assert (config.listen_host, config.listen_port) == ("::1", 8081)


# --- the rails take the validated model -----------------------------------------------------


def test_a_rail_takes_its_model_or_a_mapping_validated_the_same_way(ca_pem: Path) -> None:
    from remembrancer.anchoring.evm.rail import EvmRail
    from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail

    model = Rfc3161Settings(trust_bundle=ca_pem, url="http://127.0.0.1:1/")  # type: ignore[arg-type]
    assert Rfc3161Rail.from_config("rfc3161:t", model).url == "http://127.0.0.1:1/"
    with pytest.raises(ConfigError) as e:
        Rfc3161Rail.from_config("rfc3161:t", {"trust_bundle": str(ca_pem), "url": 42})
    assert e.value.message == "anchoring.rfc3161.t.url: expected an http(s) URL, found 42"
    rail = EvmRail.from_config("eip155:5", EvmSettings(rpc="http://127.0.0.1:1", confirmations=3))
    assert rail.confirmations == 3 and rail.client.timeout == 10.0


def test_rail_defaults_live_in_the_models() -> None:
    import importlib

    from remembrancer.anchoring import settings
    from remembrancer.anchoring.btc import rail as btc
    from remembrancer.anchoring.evm import rail as evm
    from remembrancer.anchoring.rfc3161 import rail as rfc3161

    assert not hasattr(btc, "BitcoinRailSettings") and not hasattr(btc, "DEFAULT_CALENDARS")
    assert not hasattr(evm, "SETTINGS") and not hasattr(rfc3161, "_SETTINGS")
    for gone in ("remembrancer.anchoring.btc.settings",):
        with pytest.raises(ImportError):
            importlib.import_module(gone)
    built = btc.BitcoinRail("btc:mainnet", BtcSettings(headers_file=Path("h")))
    assert built.settings.calendars == settings.DEFAULT_CALENDARS


# --- the per-request deadline, in process ---------------------------------------------------


def test_a_slow_answer_gets_503_request_timeout_but_admin_routes_are_exempt(
    node_dir: Path,
) -> None:
    from remembrancer.node.app import create_app
    from remembrancer.node.runtime import Node

    config = config_with(node_dir, "limits: {request_timeout_s: 0.2}\nscheduler: {enabled: false}")
    node = Node.from_config(config)
    app = create_app(node, manage_node=False)
    release = asyncio.Event()

    @app.get("/v1/slow")
    async def slow() -> dict[str, bool]:
        await release.wait()
        return {"done": True}

    @app.get("/v1/admin/slow")
    async def admin_slow() -> dict[str, bool]:
        await asyncio.sleep(0.5)
        return {"done": True}

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            late = await asyncio.wait_for(client.get("/v1/slow"), 10)  # the deadline is 0.2 s
            admin = await client.get("/v1/admin/slow")
            quick = await client.get("/v1/node")
            return late, admin, quick

    try:
        late, admin, quick = asyncio.run(run())
    finally:
        node.store.close()
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert late.json()["error"]["code"] == "request_timeout"
    assert admin.status_code == 200 and quick.status_code == 200


# --- the docs tables are the models -------------------------------------------------------


def _table(doc: Path, model: str) -> list[tuple[str, str, str]]:
    text = doc.read_text()
    marker = text.index(f"<!-- settings-table: {model}")
    out = []
    for line in text[marker:].splitlines()[3:]:
        if not line.startswith("| "):
            break
        cells = [c.strip().replace("`", "") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        out.append((cells[0], cells[1], cells[2]))
    return out


@pytest.mark.parametrize(
    ("doc", "model"),
    [
        ("docs/node.md", NodeFile),
        ("docs/anchoring.md", Rfc3161Settings),
        ("docs/anchoring.md", EvmSettings),
        ("docs/anchoring.md", BtcSettings),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_the_docs_tables_are_the_models(doc: str, model: type) -> None:
    documented = _table(ROOT / doc, model.__name__)
    expected = [(r.key, r.expected, r.default) for r in rows(model)]
    assert documented == expected
