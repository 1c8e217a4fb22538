"""The container image and the compose federation (deploy/), built and run with
podman: deploy/container/Containerfile (a node), Containerfile.postgres and
deploy/compose/compose.yaml (three nodes, PostgreSQL, the development TSA),
with podman-compose, Debian's package.

The images build from a Debian base image: ``REMEMBRANCER_BASE_IMAGE`` if
set, else one already in podman's store (``localhost/remembrancer-debian:bookworm``,
``docker.io/library/debian:bookworm-slim``), else one the test makes with
deploy/container/debian-base.sh (debootstrap; no registry needed) and
removes afterwards.  pip inside the build trusts the host's CA bundle (for
a TLS-intercepting proxy).  When ``runc`` is installed the containers run
with it and with explicit rlimits (a containers.conf of the test's own):
on hosts like the one this was written on, crun cannot set the rlimits and
does not support cgroups in hybrid mode.

The test brings the federation up, checks that the three nodes take records
into their PostgreSQL schemas, cosign each other's checkpoints (verified
here with their published keys), countersign each other's anchors into
final federation receipts (verified offline with the CLI), and see each
other as active peers; then tears everything down and removes what it built.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remembrancer.cli.client import api_json
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.note import open_note, parse_vkey
from remembrancer.demo.procs import cli, free_port
from remembrancer.demo.records import example_record
from remembrancer.testing.prom import scrape, value

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
BASE_SCRIPT = ROOT / "deploy" / "container" / "debian-base.sh"
LOCAL_BASE = "localhost/remembrancer-debian:bookworm"
REGISTRY_BASE = "docker.io/library/debian:bookworm-slim"
NAMESPACE = "dao:vaultmesh"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def run(
    args: list[str], env: dict[str, str], timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        )
    return out


def image_exists(name: str, env: dict[str, str]) -> bool:
    return run(["podman", "image", "exists", name], env, 60, check=False).returncode == 0


def host_ca_bundle() -> str | None:
    paths = ssl.get_default_verify_paths()
    for p in (paths.cafile, paths.openssl_cafile):
        if p and Path(p).is_file():
            return str(Path(p).resolve())
    return None


def wait_until(check: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except OSError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{logs()}")
        time.sleep(1)


@pytest.fixture
def podman_env(tmp_path: Path) -> dict[str, str]:
    for tool in ("podman", "podman-compose"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is not installed (Debian: apt-get install podman podman-compose runc)"
            )
    env = dict(os.environ)
    if shutil.which("runc"):
        conf = tmp_path / "containers.conf"
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
        )
        env["CONTAINERS_CONF"] = str(conf)
    return env


@pytest.fixture
def base_image(podman_env: dict[str, str]) -> Iterator[str]:
    env = podman_env
    given = os.environ.get("REMEMBRANCER_BASE_IMAGE")
    if given:
        yield given
        return
    for name in (LOCAL_BASE, REGISTRY_BASE):
        if image_exists(name, env):
            yield name
            return
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("no Debian base image, and debootstrap (as root) cannot make one")
    name = f"localhost/remembrancer-debian:test-{os.getpid()}"
    run(["sh", str(BASE_SCRIPT), name], env, 900)
    try:
        yield name
    finally:
        run(["podman", "rmi", name], env, 120, check=False)


@pytest.fixture
def federation(tmp_path: Path, podman_env: dict[str, str], base_image: str) -> Iterator[list[str]]:
    tag = f"test-{os.getpid()}"
    project = f"rmbtest{os.getpid()}"
    ports = [free_port() for _ in range(3)]
    env = {
        **podman_env,
        "REMEMBRANCER_BASE_IMAGE": base_image,
        "REMEMBRANCER_IMAGE": f"localhost/remembrancer:{tag}",
        "REMEMBRANCER_POSTGRES_IMAGE": f"localhost/remembrancer-postgres:{tag}",
        "POSTGRES_PASSWORD": f"pw-{os.urandom(8).hex()}",
        "REMEMBRANCER_ANCHOR_EVERY": "3s",
        **{f"REMEMBRANCER_PORT{i}": str(p) for i, p in enumerate(ports)},
    }
    compose = ["podman-compose", "-p", project, "-f", str(COMPOSE)]
    build_args = []
    ca = host_ca_bundle()
    if ca:
        build_args = ["--podman-build-args",
                      f"--build-arg PIP_CERT=/run/host-ca.crt --volume {ca}:/run/host-ca.crt:ro"]  # fmt: skip
    dangling_before = set(
        run(["podman", "images", "-q", "--filter", "dangling=true"], env, 60).stdout.split()
    )
    try:
        run([*compose, *build_args, "build"], env, 1200)
        run([*compose, "up", "-d"], env, 600)
        yield [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        logs = tmp_path / "compose.log"
        logs.write_text(run([*compose, "logs"], env, 120, check=False).stdout[-200_000:])
        run([*compose, "down", "-v"], env, 300, check=False)
        run(["podman", "network", "rm", f"{project}_default"], env, 60, check=False)
        run(
            ["podman", "rmi", env["REMEMBRANCER_IMAGE"], env["REMEMBRANCER_POSTGRES_IMAGE"]],
            env,
            120,
            check=False,
        )
        dangling = set(
            run(
                ["podman", "images", "-q", "--filter", "dangling=true"], env, 60, check=False
            ).stdout.split()
        )
        if dangling - dangling_before:  # the build stages' layers
            run(["podman", "rmi", *sorted(dangling - dangling_before)], env, 120, check=False)


def test_the_compose_federation_builds_starts_and_federates_on_postgresql(
    tmp_path: Path, podman_env: dict[str, str], federation: list[str]
) -> None:
    urls = federation
    env = podman_env

    def logs() -> str:
        """The containers' states, and the last lines of each one's log."""
        project = f"rmbtest{os.getpid()}_"
        lines = run(
            ["podman", "ps", "-a", "--format", "{{.Names}} {{.Status}}"], env, 60, check=False
        ).stdout.splitlines()
        out = [line for line in lines if line.startswith(project)]
        for line in out[:]:
            name, _, status = line.partition(" ")
            tail = run(["podman", "logs", "--tail", "15", name], env, 60, check=False)
            out.append(f"--- {name} ({status}):\n{tail.stdout}{tail.stderr}")
        return "\n".join(out)

    def ready(url: str) -> bool:
        with urllib.request.urlopen(url + "/readyz", timeout=3) as r:
            return r.status == 200

    for url in urls:
        wait_until(lambda url=url: ready(url), 240, f"{url} ready", logs)
    info = [api_json("GET", u + "/v1/node") for u in urls]
    dids = [i["did"] for i in info]
    assert len(set(dids)) == 3

    # Records into each node's log.
    now = int(time.time())
    for i, u in enumerate(urls):
        got = api_json("POST", f"{u}/v1/namespaces/{NAMESPACE}/records",
                       example_record(NAMESPACE, i, timestamp=now).leaf)  # fmt: skip
        assert got["index"] == 0 and got["namespace"] == NAMESPACE

    # Each checkpoint carries both peers' cosignatures, which verify with their
    # published witness keys (and the log's signature with its vkey).
    for me, u in enumerate(urls):
        log_vkey = parse_vkey(info[me]["vkeys"][NAMESPACE])
        peers = [parse_cosigner_vkey(info[j]["witness"]["vkey"]) for j in range(3) if j != me]

        def cosigned(u: str = u, log_vkey: Any = log_vkey, peers: Any = peers) -> bool:
            with urllib.request.urlopen(f"{u}/logs/{NAMESPACE}/checkpoint", timeout=5) as r:
                note = r.read()
            opened = open_note(note, [log_vkey, *peers])
            names = {s.name for s in opened.verified}
            return log_vkey.name in names and all(p.name in names for p in peers)

        wait_until(cosigned, 120, f"{u}'s checkpoint cosigned by both peers", logs)

    # Anchored to the TSA container and countersigned by the peers: a final
    # federation receipt of each node's own log, which verifies offline.
    for me, u in enumerate(urls):

        def final(u: str = u, prefix: str = info[me]["origin_prefix"]) -> list[dict[str, Any]]:
            got = api_json("GET", u + "/v1/federation/receipts")["receipts"]
            return [r for r in got if r["origin"] == f"{prefix}/{NAMESPACE}" and r["quorum_met"]]

        receipts = wait_until(final, 180, f"a final federation receipt on {u}", logs)
        receipt_file = tmp_path / f"receipt-{me}.json"
        receipt_file.write_text(json.dumps(receipts[0]))
        registry_file = tmp_path / f"registry-{me}.json"
        registry_file.write_text(json.dumps(api_json("GET", u + "/v1/federation/registry")))
        out = cli("federation", "verify", str(receipt_file), "--registry", str(registry_file))
        assert out.stdout.startswith("OK:"), out.stdout

    # Every node sees the two others active.
    for me, u in enumerate(urls):
        samples = scrape(u)
        for j in range(3):
            if j != me:
                assert (
                    value(samples, "remembrancer_peer_status", peer=dids[j], status="active") == 1
                )

    # The logs live in PostgreSQL, one schema per node.
    postgres = f"rmbtest{os.getpid()}_postgres_1"  # podman-compose's name for it
    schemas = run(["podman", "exec", postgres, "psql", "-U", "postgres", "-d", "remembrancer", "-Atc",
                   "SELECT schema_name FROM information_schema.schemata ORDER BY 1"], env, 60).stdout.split()  # fmt: skip
    assert {"node0", "node1", "node2"} <= set(schemas)
