"""Several ``remembrancer serve`` processes of one node over one PostgreSQL
schema (``ha.enabled``), for the HA tests and benchmarks."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from remembrancer.demo.procs import LOCAL_ANSWER, NodeProcess, free_port, init_node
from remembrancer.net.http import HttpFailure, request


def ha_group(
    base: Path, n: int, store_url: str, *, lease_seconds: float = 3.0,
    renew_seconds: float | None = None, ha: bool = True, **changes: Any,
) -> list[NodeProcess]:  # fmt: skip
    """``n`` node directories sharing one node key, namespaces file and store
    (``store_url``), each with its own port; ``ha``: the lease on, each
    process advertising its own URL.  ``changes``: more node.yaml keys."""
    first = init_node(base / "p0", origin_prefix="ha.test")
    procs = [first]
    for i in range(1, n):
        d = base / f"p{i}"
        shutil.copytree(first.directory, d, ignore=shutil.ignore_patterns("node.log", "data"))
        procs.append(NodeProcess(d, free_port()))
    for p in procs:
        settings: dict[str, Any] = {"enabled": True, "lease_seconds": lease_seconds,
                                    "advertise_url": p.url}  # fmt: skip
        if renew_seconds is not None:
            settings["renew_seconds"] = renew_seconds
        p.edit_config(
            listen=f"127.0.0.1:{p.port}",
            storage=store_url,
            **({"ha": settings} if ha else {}),
            **changes,
        )
    return procs


def ha_view(p: NodeProcess, timeout: float = 5) -> dict[str, Any] | None:
    """The ``ha`` part of a process's /healthz (None if it does not answer)."""
    try:
        answer = request("GET", p.url + "/healthz", timeout=timeout, limit=LOCAL_ANSWER,
                         trust_env=False)  # fmt: skip
    except HttpFailure:
        return None
    if answer.status != 200:
        return None
    view: dict[str, Any] | None = json.loads(answer.content).get("ha")
    return view


def wait_for_leader(procs: list[NodeProcess], timeout: float = 60,
                    exclude: NodeProcess | None = None) -> NodeProcess:  # fmt: skip
    """The process that reports it leads (not ``exclude``), once exactly one does."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        leaders = []
        seen = []
        for p in procs:
            if p is exclude or p.proc is None or p.proc.poll() is not None:
                continue
            view = ha_view(p, timeout=2)
            seen.append(view)
            if view is not None and view["role"] == "leader":
                leaders.append(p)
        if len(leaders) == 1:
            return leaders[0]
        time.sleep(0.02)
    raise AssertionError(f"no single leader after {timeout:g} s: {seen}")
