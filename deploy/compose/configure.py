"""Write the configuration of the compose federation (compose.yaml), once.

Runs in the node image (the ``configure`` service) and writes into the
``config`` volume, mounted at /etc/remembrancer:

    node0/ node1/ node2/    node.yaml, keys/ (node key, admin token), namespaces.yaml,
                            federation.yaml   (``remembrancer init``, then wired together)
    .configured             written last: the nodes start once it exists

Every node witnesses the others' logs and asks them to cosign its
checkpoints; the three form one federation (every peer active with every
role, ``REMEMBRANCER_QUORUM`` countersignatures make a receipt final) and
anchor each namespace's log to the development TSA of the ``tsa`` service
every ``REMEMBRANCER_ANCHOR_EVERY``.  The namespaces are the example ones:
replace each node's namespaces.yaml with your own (and restart) before
taking real records.  A second run changes nothing.

Environment: REMEMBRANCER_NODES (default "node0 node1 node2": the compose
service names, also the host names peers use), REMEMBRANCER_ORIGIN_SUFFIX
(default "compose.remembrancer.local": node0's logs are
node0.compose.remembrancer.local/<namespace>), REMEMBRANCER_FEDERATION_ID,
REMEMBRANCER_QUORUM (default 2), REMEMBRANCER_ANCHOR_STRATEGY (default
independent), REMEMBRANCER_ANCHOR_EVERY (default 10m), REMEMBRANCER_TSA_URL
(default http://tsa:3161), REMEMBRANCER_TSA_BUNDLE (default /var/lib/tsa/ca.pem).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from remembrancer.core.cosignature import format_cosigner_vkey
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.node.keyfile import read_key_file

ROLES = ["witness", "anchor", "countersign", "relay", "coordinator"]


@dataclass(frozen=True)
class Member:
    name: str  # the compose service, also the host name peers use
    directory: Path
    key: SigningKey
    prefix: str  # origin prefix of its logs
    log_vkeys: list[str]

    @property
    def url(self) -> str:
        return f"http://{self.name}:8080"

    @property
    def witness(self) -> str:
        return f"{self.prefix}/witness"


def main(root: Path) -> int:
    env = os.environ
    names = env.get("REMEMBRANCER_NODES", "node0 node1 node2").split()
    suffix = env.get("REMEMBRANCER_ORIGIN_SUFFIX", "compose.remembrancer.local")
    federation_id = env.get("REMEMBRANCER_FEDERATION_ID", "compose-federation")
    quorum = int(env.get("REMEMBRANCER_QUORUM", "2"))
    strategy = env.get("REMEMBRANCER_ANCHOR_STRATEGY", "independent")
    every = env.get("REMEMBRANCER_ANCHOR_EVERY", "10m")
    tsa_url = env.get("REMEMBRANCER_TSA_URL", "http://tsa:3161")
    tsa_bundle = env.get("REMEMBRANCER_TSA_BUNDLE", "/var/lib/tsa/ca.pem")
    done = root / ".configured"
    if done.exists():
        print(f"configure: {root} is configured already")
        return 0
    for name in names:  # what an interrupted run left
        shutil.rmtree(root / name, ignore_errors=True)

    nodes: list[Member] = []
    for name in names:
        directory = root / name
        prefix = f"{name}.{suffix}"
        init = subprocess.run(["remembrancer", "init", str(directory), "--origin-prefix", prefix,
                               "--listen", "0.0.0.0:8080"], capture_output=True, text=True)  # fmt: skip
        if init.returncode != 0:
            print(
                f"configure: remembrancer init {directory} failed: {init.stderr}", file=sys.stderr
            )
            return 1
        key = read_key_file(directory / "keys" / "node.key")
        spaces_file = directory / "namespaces.yaml"
        spaces = yaml.safe_load(spaces_file.read_text())
        for ns in spaces["namespaces"].values():
            ns["cadence"] = {"cold": {"target": "rfc3161:tsa", "every": every}}
        spaces_file.write_text(yaml.safe_dump(spaces, sort_keys=False))
        vkeys = [format_vkey(f"{prefix}/{ns}", key.public) for ns in spaces["namespaces"]]
        nodes.append(Member(name, directory, key, prefix, vkeys))

    registry = {
        "federation_id": federation_id,
        "quorum": quorum,
        "anchor_strategy": strategy,
        "peers": [{"did": n.key.did, "endpoint": n.url, "pubkey": n.key.did,
                   "status": "active", "roles": ROLES} for n in nodes],
    }  # fmt: skip
    for me in nodes:
        others = [n for n in nodes if n is not me]
        config_file = me.directory / "node.yaml"
        doc = yaml.safe_load(config_file.read_text())
        doc.update({
            "data_dir": "/var/lib/remembrancer",
            "log_format": "json",
            "witness": {"name": me.witness,
                        "logs": [{"vkey": v} for o in others for v in o.log_vkeys]},
            "witnessing": {"peers": [{"url": o.url + "/witness",
                                      "vkey": format_cosigner_vkey(o.witness, o.key.public)}
                                     for o in others], "quorum": 1},
            "federation": {"file": "federation.yaml", "heartbeat_seconds": 2},
            "anchoring": {"rfc3161": {"tsa": {"url": tsa_url, "trust_bundle": tsa_bundle}}},
        })  # fmt: skip
        config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        (me.directory / "federation.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
        print(f"configure: {me.name}: {me.key.did} ({me.prefix})")
    done.write_text("\n".join(n.name for n in nodes) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/etc/remembrancer")))
