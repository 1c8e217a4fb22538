"""A bad configuration stops a real ``remembrancer serve`` (and ``init``,
``verify --trust``) with exit status 2 and one line on stderr, never a
traceback; the per-request deadline holds against a real client that drips
its body.  The refusals in detail: tests/unit/test_config_models.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from remembrancer.core.cosignature import format_cosigner_vkey
from remembrancer.core.keys import SigningKey
from remembrancer.demo.procs import init_node
from remembrancer.node.config import write_initial_config

SERVE = "from remembrancer.cli.main import main; main()"
PEER = format_cosigner_vkey("b.test/witness", SigningKey.generate().public)


def _run(args: list[str], *, env: dict[str, str] | None = None, hide: str = "",
         timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``remembrancer ARGS`` in a fresh interpreter; ``hide`` makes that module
    unimportable in it (an extra that is not installed)."""
    prelude = f"import sys; sys.modules[{hide!r}] = None; " if hide else ""
    code = f"{prelude}sys.argv = ['remembrancer', *sys.argv[1:]]; {SERVE}"
    if not prelude:
        code = "import sys; " + code
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})  # fmt: skip


def _one_line_exit_2(out: subprocess.CompletedProcess[str], code: str, *fragments: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == "", out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {code}: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _node(tmp_path: Path, extra: str) -> Path:
    directory = tmp_path / "n"
    write_initial_config(directory, origin_prefix="bad.test")
    config = directory / "node.yaml"
    config.write_text(config.read_text() + extra)
    return config


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        # The cases: a traceback, 'no' meaning true, a busy loop, a rail failing late.
        ("scheduler: {tick_seconds: fast}\n", "config_invalid",
         "node.yaml: scheduler.tick_seconds: expected a number from 0.05 to 3600, found 'fast'"),
        ("scheduler: {enabled: 'no'}\n", "config_invalid",
         "scheduler.enabled: expected true or false, found 'no'"),
        ("scheduler: {tick_seconds: 0}\n", "config_invalid",
         "scheduler.tick_seconds: expected a number from 0.05 to 3600, found 0"),
        ("limits: {request_timeout_s: -1}\n", "config_invalid",
         "limits.request_timeout_s: expected a number from 0.1 to 3600, found -1"),
        ("anchoring: {rfc3161: {tsa: {url: 42, trust_bundle: ca.pem}}}\n",
         "rfc3161_config_invalid", "anchoring.rfc3161.tsa.url: expected an http(s) URL, found 42"),
        ("limits: {request_timeout: 5}\n", "config_key_unknown",
         "limits.request_timeout: unknown key (expected one of: "),
        (f"witnessing: {{peers: [{{url: 'http://b/witness', vkey: '{PEER}', weight: 1}}]}}\n",
         "config_key_unknown", "witnessing.peers[0].weight: unknown key"),
        ("scheduler: {tick_seconds: 1}\nscheduler: {tick_seconds: 2}\n", "config_yaml_invalid",
         "duplicate key 'scheduler'"),
        ("federation: {file: fed.yaml}\n", "config_unreadable", "fed.yaml: cannot read"),
        ("anchoring: {rfc3161: {tsa: {trust_bundle: missing.pem}}}\n",
         "tsa_trust_bundle_unreadable", "node.yaml: anchoring.rfc3161.tsa: cannot read trust bundle"),
    ],
)  # fmt: skip
def test_serve_refuses_a_bad_node_yaml_with_one_line(
    tmp_path: Path, extra: str, code: str, fragment: str
) -> None:
    config = _node(tmp_path, extra)
    _one_line_exit_2(_run(["serve", "--config", str(config)]), code, fragment)


def test_serve_refuses_a_rail_whose_extra_is_missing_at_start(tmp_path: Path) -> None:
    # Was: the node started; the btc rail failed when it first read a proof.
    config = _node(tmp_path, "anchoring: {btc: {mainnet: {headers_file: headers.txt}}}\n")
    out = _run(["serve", "--config", str(config)], hide="opentimestamps")
    _one_line_exit_2(out, "rail_dependency_missing", "anchoring.btc.mainnet: ",
                     "pip install 'remembrancer[bitcoin]'")  # fmt: skip
    assert not (config.parent / "data").exists()


def test_serve_refuses_bad_federation_and_namespaces_files(tmp_path: Path) -> None:
    config = _node(tmp_path, "federation: {file: fed.yaml}\n")
    (config.parent / "fed.yaml").write_text("version: true\nfederation_id: f\n")
    _one_line_exit_2(_run(["serve", "--config", str(config)]), "config_version_unsupported",
                     "fed.yaml: version")  # fmt: skip
    config.write_text(config.read_text().replace("federation: {file: fed.yaml}\n", ""))
    spaces = config.parent / "namespaces.yaml"
    spaces.write_text(spaces.read_text() + "version: 1\n")
    _one_line_exit_2(_run(["serve", "--config", str(config)]), "config_yaml_invalid",
                     "namespaces.yaml: not valid YAML at line", "duplicate key 'version'")  # fmt: skip


def test_an_environment_override_is_validated_and_named(tmp_path: Path) -> None:
    config = _node(tmp_path, "")
    out = _run(["serve", "--config", str(config)], env={"REMEMBRANCER_LOG_FORMAT": "xml"})
    _one_line_exit_2(out, "config_invalid",
                     "REMEMBRANCER_LOG_FORMAT: expected 'text' or 'json', found 'xml'")  # fmt: skip
    out = _run(["serve", "--config", str(config), "--listen", "nowhere"])
    _one_line_exit_2(out, "listen_invalid", "--listen: expected HOST:PORT")


def test_init_refuses_bad_values_before_writing(tmp_path: Path) -> None:
    out = _run(["init", str(tmp_path / "n"), "--listen", "nowhere"])
    _one_line_exit_2(out, "listen_invalid", "--listen: expected HOST:PORT (port 1 to 65535), "
                     "found 'nowhere'")  # fmt: skip
    assert not (tmp_path / "n").exists()


def test_a_bad_trust_policy_is_one_line(tmp_path: Path) -> None:
    # Was: yaml.safe_load / int() / list() errors, each a traceback.
    entry, proof, trust = tmp_path / "e.bin", tmp_path / "p", tmp_path / "trust.yaml"
    entry.write_bytes(b"x")
    proof.write_bytes(b"")
    for text, fragment in (("min_cosigners: many\n", "min_cosigners: expected an integer"),
                           ("log_vkeys: 5\n", "log_vkeys: expected a list"),
                           ("log_vkeys: [\n", "not valid YAML at line 2")):  # fmt: skip
        trust.write_text(text)
        out = _run(["verify", str(entry), "--raw", "--proof", str(proof), "--trust", str(trust)])
        code = "config_yaml_invalid" if "YAML" in fragment else "trust_policy_invalid"
        _one_line_exit_2(out, code, fragment)


def test_a_client_dripping_its_body_meets_the_request_deadline(tmp_path: Path) -> None:
    node = init_node(tmp_path / "n", origin_prefix="slow.test")
    doc = yaml.safe_load(node.config.read_text())
    doc["limits"] = {"request_timeout_s": 1}
    node.config.write_text(yaml.safe_dump(doc))
    node.start()
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=30) as s:
            s.sendall(b"POST /v1/namespaces/dao:vaultmesh/records HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")  # fmt: skip
            answer = b""
            while b"\r\n\r\n" not in answer or b"request_body_timeout" not in answer:
                chunk = s.recv(4096)  # without the deadline: no answer, socket.timeout
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"code":"request_body_timeout"' in answer.replace(b" ", b""), answer
        # The node goes on serving.
        with urllib.request.urlopen(node.url + "/v1/node", timeout=10) as r:
            assert r.status == 200
    finally:
        node.stop()
