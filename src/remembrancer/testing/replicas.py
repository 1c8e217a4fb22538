"""Helpers for anti-entropy tests and benchmarks: reading replicas over HTTP,
comparing a mirror with its source tile by tile, waiting for convergence."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from remembrancer.core.tiles import tiles_for_size
from remembrancer.demo.procs import NodeProcess

T = TypeVar("T")


def http(url: str, body: bytes | None = None, *, token: str | None = None,
         timeout: float = 15) -> bytes:  # fmt: skip
    """GET (or POST ``body``) and return the answer's bytes; HTTP errors raise."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers,
                                 method="POST" if body is not None else "GET")  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()  # type: ignore[no-any-return]


def http_json(url: str, body: bytes | None = None, *, token: str | None = None,
              timeout: float = 15) -> Any:  # fmt: skip
    return json.loads(http(url, body, token=token, timeout=timeout))


def wait_for(probe: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.2) -> T:  # fmt: skip
    """Call ``probe`` until it returns something truthy (HTTP errors count as no);
    raise AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            got = probe()
        except (OSError, urllib.error.URLError, ValueError) as e:
            got, last = None, e
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last!r})")
        time.sleep(interval)


def replicas(url: str) -> dict[str, dict[str, Any]]:
    """``GET /v1/federation/replicas`` by origin."""
    return {r["origin"]: r for r in http_json(f"{url}/v1/federation/replicas")["replicas"]}


def anchors(url: str, origin: str) -> list[dict[str, Any]]:
    """``GET /v1/replicas/<origin>/anchors``: the anchor receipts a node holds for a log."""
    return http_json(f"{url}/v1/replicas/{urllib.parse.quote(origin, safe='/:')}/anchors")[  # type: ignore[no-any-return]
        "receipts"
    ]


def anchor_summary(receipts: list[dict[str, Any]]) -> dict[int, list[tuple[Any, ...]]]:
    """What must agree between nodes: per checkpoint size, each anchor's key
    fields, status and ``superseded_by``, in the order held."""
    return {
        r["size"]: [(a["target"], a["txRef"], a["status"], a["anchorTs"], a["superseded_by"])
                    for a in r["anchors"]]
        for r in receipts
    }  # fmt: skip


def set_mirror(node: NodeProcess, mirror: bool = True, *, origins: list[str] | None = None,
               antientropy_seconds: float | None = None) -> None:  # fmt: skip
    """Mirror the witnessed logs of ``node`` (all, or ``origins``); edits node.yaml."""
    doc = yaml.safe_load(node.config.read_text())
    for entry in (doc.get("witness") or {}).get("logs") or []:
        vkey = entry.get("vkey") or entry["vkeys"][0]
        origin = entry.get("origin") or vkey.split("+", 1)[0]
        if origins is None or origin in origins:
            entry["mirror"] = mirror
    if antientropy_seconds is not None:
        doc.setdefault("federation", {})["antientropy_seconds"] = antientropy_seconds
    node.config.write_text(yaml.safe_dump(doc))


def mirror_differences(source_prefix: str, mirror_prefix: str, size: int) -> list[str]:
    """Every tile and entry bundle of a tree of ``size`` that differs between a
    log's tlog-tiles prefix and a mirror's (empty: identical)."""
    out = []
    for t in tiles_for_size(size):
        paths = [t.path()] + ([t.entries_path()] if t.level == 0 else [])
        for path in paths:
            try:
                a = http(f"{source_prefix}/{path}")
                b = http(f"{mirror_prefix}/{path}")
            except urllib.error.HTTPError as e:
                out.append(f"{path}: HTTP {e.code}")
                continue
            if a != b:
                out.append(path)
    return out
