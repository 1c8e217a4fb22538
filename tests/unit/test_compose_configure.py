"""The compose federation's configure step (deploy/compose/configure.py) writes
configuration that the node's strict loaders accept.

The container test (tests/integration/test_containers.py) exercises the same
script inside podman, slowly; this one runs it on the host in a second, so a
refactor that breaks its imports or a config key it writes fails here first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from remembrancer.federation.registry.parse import registry_from_config
from remembrancer.log.namespaces import load_namespaces_file
from remembrancer.log.schemas import bundled_schemas
from remembrancer.node.config import load_node_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "compose" / "configure.py"


def run_configure(root: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)  # the venv's `remembrancer`
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "REMEMBRANCER_ANCHOR_EVERY": "3s"}  # fmt: skip
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_configure_writes_what_every_node_loads(tmp_path: Path) -> None:
    out = run_configure(tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / ".configured").read_text().split() == ["node0", "node1", "node2"]
    env = {"REMEMBRANCER_STORAGE": f"sqlite:///{tmp_path}/store.db"}
    dids = set()
    for name in ("node0", "node1", "node2"):
        config = load_node_config(tmp_path / name / "node.yaml", env=env)
        assert config.listen_port == 8080
        assert len(config.witnessed) == 2 * len(
            load_namespaces_file(tmp_path / name / "namespaces.yaml", bundled_schemas())
        )
        doc = yaml.safe_load((tmp_path / name / "federation.yaml").read_text())
        registry = registry_from_config(doc, str(tmp_path / name / "federation.yaml"))
        dids.add(frozenset(p.did for p in registry.peers))
    assert len(dids) == 1  # one registry, the same on every node
    # A second run changes nothing.
    before = (tmp_path / "node0" / "node.yaml").read_bytes()
    again = run_configure(tmp_path)
    assert again.returncode == 0 and "configured already" in again.stdout
    assert (tmp_path / "node0" / "node.yaml").read_bytes() == before
