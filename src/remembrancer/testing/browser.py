"""Browser tooling for the explorer's tests, screenshots and benchmark:
Playwright's Python package driving Debian's Chromium (never a downloaded
browser), and a small federation with records, witnesses and anchors.

- :func:`chromium_path` finds the browser (``$REMEMBRANCER_CHROMIUM`` or
  ``/usr/bin/chromium``); ``.ci/run`` installs the Debian package.
- :func:`launch` starts it headless through Playwright.
- :func:`screenshot_pages` writes the screenshots kept in ``docs/screenshots``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import NodeProcess
from remembrancer.demo.records import ledger_payload, make_record

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
NAMESPACE = "dao:vaultmesh"


def chromium_path() -> str | None:
    path = os.environ.get("REMEMBRANCER_CHROMIUM") or DEFAULT_CHROMIUM
    return path if Path(path).is_file() and os.access(path, os.X_OK) else None


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``); raises if there is none."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError(f"no Chromium at {DEFAULT_CHROMIUM}: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=15) as r:
        return json.loads(r.read())


def post_record(node: NodeProcess, i: int, *, namespace: str = NAMESPACE) -> dict[str, Any]:
    """Submit demo record ``i`` (signed by the public demo keys) and return its receipt."""
    actor = demo_key("did:vm:actor:demo")
    witnesses = [
        demo_key("did:vm:arbiter:prod-us-east-1"),
        demo_key("did:vm:arbiter:prod-eu-west-1"),
    ]
    rec = make_record(namespace, "ledger.append@1.0.0", ledger_payload(i), actor, witnesses,
                      timestamp=int(time.time()))  # fmt: skip
    req = urllib.request.Request(f"{node.url}/v1/namespaces/{namespace}/records", data=rec.leaf,
                                 method="POST", headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        receipt: dict[str, Any] = json.loads(r.read())
        return receipt


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def screenshot_pages(browser: Any, base: str, out: Path, record_index: int) -> list[Path]:
    """Screenshots of the main pages (desktop) and the record page (phone) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    shots = [
        ("overview", "/explorer", DESKTOP, None),
        ("namespaces", "/explorer/namespaces", DESKTOP, None),
        ("namespace", f"/explorer/namespaces/{NAMESPACE}", DESKTOP, None),
        ("record", f"/explorer/namespaces/{NAMESPACE}/records/{record_index}", DESKTOP, "#verify"),
        ("tree", f"/explorer/namespaces/{NAMESPACE}/records/{record_index}", DESKTOP, "#tree"),
        ("witness", "/explorer/witness", DESKTOP, None),
        ("anchors", "/explorer/anchors", DESKTOP, None),
        (
            "record-phone",
            f"/explorer/namespaces/{NAMESPACE}/records/{record_index}",
            PHONE,
            "#verify",
        ),
    ]
    written = []
    for name, path, viewport, anchor in shots:
        page = browser.new_page(viewport=viewport, color_scheme="light")
        try:
            page.goto(base + path)
            if "/records/" in path:
                page.wait_for_selector('#verdict[data-status="pass"]', timeout=20_000)
            if anchor:
                page.locator(anchor).scroll_into_view_if_needed()
                page.evaluate("a => document.querySelector(a).scrollIntoView()", anchor)
            target = out / f"{name}.png"
            page.screenshot(path=str(target))
            written.append(target)
        finally:
            page.close()
    return written
