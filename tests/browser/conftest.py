"""Fixtures for the explorer's browser tests: Debian's Chromium through
Playwright, and a real three-node federation (witnessing, countersigning,
anchoring to the development TSA) started once for the module.

Without Chromium (``/usr/bin/chromium``) or the ``playwright`` package the
tests skip with a message (a failure under CI, like every skip: tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.testing.browser import (
    NAMESPACE,
    chromium_path,
    get_json,
    launch,
    post_record,
    wait_for,
)

RECORDS = 30


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Playwright."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason is None and chromium_path() is None:
        reason = "Chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
    if reason is not None:
        pytest.skip(reason)
    with launch() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; fails the test on any Content-Security-Policy violation or
    script error it reports."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    p = context.new_page()
    problems: list[str] = []
    p.on(
        "console",
        lambda m: (
            problems.append(m.text) if m.type == "error" and "Content Security" in m.text else None
        ),
    )
    p.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    p.set_default_timeout(20_000)
    yield p
    context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    """Three nodes that witness each other, anchor to a TSA every second and
    countersign each other's anchors (quorum 2), with RECORDS records on the
    first node, at least one anchor verified and one federation receipt final."""
    tmp = tmp_path_factory.mktemp("explorer-federation")
    tsa_dir = tmp / "tsa"
    with DevTsaServer(DevTsa(tsa_dir)) as tsa:
        nodes = [init_node(tmp / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
        for n in nodes:
            anchor_to_tsa(n, tsa.url, tsa_dir / "ca.pem")
        wire_witnessing(nodes)
        wire_federation(nodes, quorum=2)
        try:
            for n in nodes:
                n.start()
            alpha = nodes[0]
            for i in range(RECORDS):
                post_record(alpha, i)
            wait_for(lambda: _settled(alpha), 60, "the head anchored, countersigned and cosigned")
            yield nodes
        finally:
            for n in nodes:
                n.stop()


def _settled(node: NodeProcess) -> bool:
    """The log's head is cosigned by both witnesses and anchored, and every
    verified anchor has its final federation receipt: nothing moves until a
    test adds a record."""
    size = get_json(f"{node.url}/v1/namespaces/{NAMESPACE}")["size"]
    view = get_json(f"{node.url}/v1/explorer/namespaces/{NAMESPACE}?limit=1")
    cosigned = sum(s["kind"] == "cosignature" for s in view["checkpoint"]["signatures"]) == 2
    receipts = get_json(f"{node.url}/v1/namespaces/{NAMESPACE}/anchors?limit=500")["receipts"]
    verified = sum(a["status"] == "verified" for r in receipts for a in r["anchors"])
    final = len(get_json(f"{node.url}/v1/federation/receipts")["receipts"])
    return cosigned and bool(receipts) and receipts[-1]["size"] == size and verified == final


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``docs/screenshots`` when ``REMEMBRANCER_SCREENSHOTS=1`` (to refresh the
    checked-in pictures), else a temporary directory."""
    if os.environ.get("REMEMBRANCER_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    return tmp_path_factory.mktemp("screenshots")
