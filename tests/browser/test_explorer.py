"""The explorer in a real browser (Debian's Chromium through Playwright),
against a real three-node federation: the numbers on the pages are the API's,
a record's proof verifies in the browser and a tampered one fails visibly,
pages update by themselves, and the pages work from the keyboard."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from remembrancer.core.errors import RemembrancerError
from remembrancer.core.rfc6962 import hash_leaf, verify_consistency, verify_inclusion
from remembrancer.demo.procs import NodeProcess
from remembrancer.testing.browser import (
    NAMESPACE,
    PHONE,
    get_json,
    post_record,
    screenshot_pages,
)
from remembrancer.testing.naive_merkle import NaiveTree

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc6962"


def _value(page: Any, selector: str) -> int:
    return int(page.locator(selector).first.get_attribute("data-value"))


def test_overview_shows_the_federation_as_the_api_reports_it(
    page: Any, federation: list[NodeProcess]
) -> None:
    alpha = federation[0]
    page.goto(f"{alpha.url}/explorer")
    overview = get_json(f"{alpha.url}/v1/explorer/overview")
    sizes = {
        n["namespace"]: n["size"] for n in get_json(f"{alpha.url}/v1/namespaces")["namespaces"]
    }
    assert _value(page, '[data-stat="entries"] [data-value]') == sum(sizes.values())
    assert _value(page, '[data-stat="namespaces"] [data-value]') == len(sizes)
    status = get_json(f"{alpha.url}/v1/federation")
    assert _value(page, '[data-stat="peers"] [data-value]') == len(status["peers"]) == 3
    assert (
        _value(page, '[data-stat="federation_receipts"] [data-value]')
        == status["receipts_final"]
        >= 1
    )
    for p in status["peers"]:
        row = page.locator(f'tr[data-peer="{p["did"]}"]')
        assert row.locator('[data-field="status"]').inner_text().strip() == p["status"] == "active"
        assert float(row.locator('[data-field="score"]').get_attribute("data-value")) == p["score"]
        if not p["self"]:
            assert row.locator('[data-field="heartbeat"] time').count() == 1
            lag = next(q for q in overview["federation"]["peers"] if q["did"] == p["did"])[
                "cosign_lag"
            ]
            assert lag is not None and lag["complete"]
    for ns, size in sizes.items():
        assert _value(page, f'tr[data-namespace="{ns}"] [data-field="size"]') == size
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator('nav a[aria-current="page"]').inner_text() == "Overview"


def test_namespace_page_pages_through_the_log_and_finds_records(
    page: Any, federation: list[NodeProcess]
) -> None:
    alpha = federation[0]
    base = f"{alpha.url}/explorer/namespaces/{NAMESPACE}"
    page.goto(base + "?limit=10")
    view = get_json(f"{alpha.url}/v1/explorer/namespaces/{NAMESPACE}?limit=10")
    size = view["size"]
    assert _value(page, '#summary [data-field="size"]') == size
    rows = page.locator("#log tbody tr")
    assert rows.count() == 10
    assert rows.first.get_attribute("data-index") == str(size - 1)
    cosigners = {s["name"] for s in view["checkpoint"]["signatures"] if s["kind"] == "cosignature"}
    assert {page.locator("[data-cosigner]").nth(i).get_attribute("data-cosigner")
            for i in range(page.locator("[data-cosigner]").count())} == cosigners == {"n1.test/witness", "n2.test/witness"}  # fmt: skip
    # Older pages, down to the oldest, then back to the newest.
    page.locator('#log [data-nav="next"]').first.click()
    page.wait_for_url("**before=*")
    assert page.locator("#log tbody tr").first.get_attribute("data-index") == str(size - 11)
    page.locator('#log [data-nav="last"]').first.click()
    page.wait_for_url("**before=10*")
    assert page.locator("#log tbody tr").last.get_attribute("data-index") == "0"
    assert page.locator('#log [data-nav="next"]').count() == 0
    page.locator('#log [data-nav="newest"]').first.click()
    page.wait_for_url(base)
    assert page.locator("#log tbody tr").first.get_attribute("data-index") == str(get_json(
        f"{alpha.url}/v1/namespaces/{NAMESPACE}")["size"] - 1)  # fmt: skip
    # Search by index, by eventHash and by event:id, with the keyboard.
    record = get_json(f"{alpha.url}/v1/namespaces/{NAMESPACE}/records/7")["record"]
    event_hash = get_json(f"{alpha.url}/v1/namespaces/{NAMESPACE}/records/7")["eventHash"]
    for query in ("7", event_hash, record["event:id"]):
        page.goto(base)
        page.get_by_label("Find a record by index, eventHash or event:id").fill(query)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/records/7")
        assert _value(page, '[data-field="index"]') == 7
    # A miss says so, next to the search box, with a 404.
    page.goto(base)
    with page.expect_response(lambda r: "/search" in r.url) as info:
        page.get_by_label("Find a record by index, eventHash or event:id").fill("no-such-event")
        page.keyboard.press("Enter")
    assert info.value.status == 404
    assert "no record" in page.locator("#search-error").inner_text()
    assert page.locator("#q").get_attribute("aria-invalid") == "true"


def test_a_record_verifies_in_the_browser(page: Any, federation: list[NodeProcess]) -> None:
    alpha = federation[0]
    page.goto(f"{alpha.url}/explorer/namespaces/{NAMESPACE}/records/3")
    page.wait_for_selector('#verdict[data-status]:not([data-status="running"])')
    verdict = page.locator("#verdict").get_attribute("data-status")
    assert verdict == "pass", "\n".join(
        f"{li.get_attribute('data-check')}: {li.get_attribute('data-status')}: {li.inner_text()}"
        for li in page.locator("#checks li").all()
        if li.get_attribute("data-status") != "pass"
    )
    status = {li.get_attribute("data-check"): li.get_attribute("data-status")
              for li in page.locator("#checks li").all()}  # fmt: skip
    for check in ("leaf", "canonical", "event-hash", "record-signatures", "inclusion", "log-signature",
                  "cosignature-0", "cosignature-1", "anchored-inclusion", "anchored-signature",
                  "anchor-digest", "federation-receipt-0"):  # fmt: skip
        assert status[check] == "pass", (
            check,
            page.locator(f'[data-check="{check}"]').inner_text(),
        )
    assert status["anchor-evidence"] == "skip" and status["consistency"] == "skip"
    assert "not checked" in page.locator('[data-check="anchor-evidence"]').inner_text()
    # Every check, passed or not checked, can be seen: scrolled to, it lies inside the
    # viewport (the "not checked" ones once shared the skip link's off-screen class).
    width = page.viewport_size["width"]
    for li in page.locator("#checks li").all():
        li.scroll_into_view_if_needed()
        box = li.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0, li.inner_text()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (li.inner_text(), box)
    # The keys used are on the page, as the node states them.
    info = get_json(f"{alpha.url}/v1/node")
    assert (
        page.get_by_label("Log key (vkey of n0.test/dao:vaultmesh)").input_value()
        == info["vkeys"][NAMESPACE]
    )
    # The tree drawing: the browser filled in the path, and the root is the checkpoint's.
    material = get_json(f"{alpha.url}/v1/explorer/namespaces/{NAMESPACE}/records/3")
    levels = len(material["tree"]["path"])
    root_text = page.locator(f'[data-hash="path-{levels - 1}"]').text_content()
    assert material["tree"]["root"].startswith(root_text.rstrip("…"))
    assert page.locator("svg.tree").get_attribute("data-status") == "pass"
    # The visitor's own (wrong) log key makes the log signature fail, visibly.
    page.get_by_label("Log key (vkey of n0.test/dao:vaultmesh)").fill(
        get_json(f"{federation[1].url}/v1/node")["vkeys"][NAMESPACE]
    )
    page.get_by_role("button", name="Verify in my browser").click()
    page.wait_for_selector('#verdict[data-status="fail"]')
    assert page.locator('[data-check="log-signature"]').get_attribute("data-status") == "fail"


def _tampered_route(change: Any) -> Any:
    def handle(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        change(body)
        route.fulfill(response=response, body=json.dumps(body))

    return handle


def _flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_a_tampered_proof_fails_visibly(page: Any, federation: list[NodeProcess]) -> None:
    alpha = federation[0]
    url = f"{alpha.url}/explorer/namespaces/{NAMESPACE}/records/5"

    def proof(body: dict[str, Any]) -> None:
        body["receipt"]["proof"][0] = _flip(body["receipt"]["proof"][0])

    page.route("**/v1/explorer/namespaces/*/records/5", _tampered_route(proof))
    page.goto(url)
    page.wait_for_selector('#verdict[data-status="fail"]')
    assert "FAILED" in page.locator("#verdict").inner_text()
    assert page.locator('[data-check="inclusion"]').get_attribute("data-status") == "fail"
    assert "not to the checkpoint's root" in page.locator('[data-check="inclusion"]').inner_text()
    assert page.locator('[data-check="log-signature"]').get_attribute("data-status") == "pass"
    page.unroute("**/v1/explorer/namespaces/*/records/5")

    def root(body: dict[str, Any]) -> None:  # a forged checkpoint whose root matches a forged proof
        note = body["receipt"]["checkpoint"]
        lines = note.split("\n")
        lines[2] = _flip(lines[2])
        body["receipt"]["checkpoint"] = "\n".join(lines)

    page.route("**/v1/explorer/namespaces/*/records/5", _tampered_route(root))
    page.goto(url)
    page.wait_for_selector('#verdict[data-status="fail"]')
    for check in ("inclusion", "log-signature", "cosignature-0", "cosignature-1"):
        assert page.locator(f'[data-check="{check}"]').get_attribute("data-status") == "fail", check
    page.unroute("**/v1/explorer/namespaces/*/records/5")
    # The page's own tamper control shows the same on the genuine material.
    page.goto(url)
    page.wait_for_selector('#verdict[data-status="pass"]')
    page.get_by_role("button", name="Try a tampered proof").click()
    page.wait_for_selector('#verdict[data-status="fail"]')
    assert page.locator("#verdict").inner_text().startswith("Tampered proof:")


def test_the_live_view_updates_when_a_record_is_added(
    page: Any, federation: list[NodeProcess]
) -> None:
    alpha = federation[0]
    page.goto(f"{alpha.url}/explorer/namespaces/{NAMESPACE}")
    before = _value(page, '#summary [data-field="size"]')
    page.locator("#live-status", has_text="Live:").wait_for()
    receipt = post_record(alpha, 1000)
    assert receipt["index"] == before
    page.locator(f'#log tbody tr:first-child[data-index="{before}"]').wait_for()
    assert _value(page, '#summary [data-field="size"]') == before + 1
    assert page.url.endswith(NAMESPACE)  # no reload, no navigation
    # The overview's totals follow too.
    page.goto(f"{alpha.url}/explorer")
    entries = _value(page, '[data-stat="entries"] [data-value]')
    page.locator("#live-status", has_text="Live:").wait_for()
    post_record(alpha, 1001)
    page.locator(f'[data-stat="entries"] [data-value="{entries + 1}"]').wait_for()


def test_witness_and_anchor_pages_match_the_api(page: Any, federation: list[NodeProcess]) -> None:
    alpha = federation[0]
    page.goto(f"{alpha.url}/explorer/witness")
    witness = get_json(f"{alpha.url}/v1/explorer/witness")
    assert len(witness["peers"]) == 2
    for p in witness["peers"]:
        assert p["cosignatures"] >= 1
        got = _value(page, f'tr[data-witness="{p["name"]}"] [data-field="cosignatures"]')
        assert abs(got - p["cosignatures"]) <= 2  # the log may have moved on between the two reads
    assert page.locator("[data-evidence-count]").get_attribute("data-evidence-count") == "0"
    page.goto(f"{alpha.url}/explorer/anchors?namespace={NAMESPACE}")
    anchors = get_json(f"{alpha.url}/v1/explorer/anchors?namespace={NAMESPACE}")["namespaces"][0]
    shown = page.locator("article.receipt")
    assert shown.count() == min(20, anchors["total"]) >= 1
    newest = int(shown.first.get_attribute("data-size"))
    assert newest >= anchors["receipts"][0]["size"]
    assert "verified" in page.locator("section.card").first.inner_text()


def test_keyboard_navigation_and_labels(page: Any, federation: list[NodeProcess]) -> None:
    alpha = federation[0]
    page.goto(f"{alpha.url}/explorer/namespaces/{NAMESPACE}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Every form control has a label; every table a caption; one h1 per page.
    for path in ("/explorer", f"/explorer/namespaces/{NAMESPACE}", f"/explorer/namespaces/{NAMESPACE}/records/2",
                 "/explorer/witness", "/explorer/anchors"):  # fmt: skip
        page.goto(alpha.url + path)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, textarea, select')]
            .filter(e => !e.labels || e.labels.length === 0).map(e => e.id || e.name)""")
        assert unlabelled == [], (path, unlabelled)
        assert page.locator("h1").count() == 1
        assert page.evaluate(
            "[...document.querySelectorAll('table')].every(t => t.caption && t.caption.textContent)"
        )
        assert page.locator("html").get_attribute("lang") == "en"
    # The log's links are reachable from the keyboard.
    page.goto(f"{alpha.url}/explorer/namespaces/{NAMESPACE}")
    page.locator("#log tbody tr a").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/records/*")


def test_pages_fit_a_phone_screen(browser: Any, federation: list[NodeProcess]) -> None:
    alpha = federation[0]
    page = browser.new_page(viewport=PHONE)
    try:
        for path in ("/explorer", f"/explorer/namespaces/{NAMESPACE}", f"/explorer/namespaces/{NAMESPACE}/records/4",
                     "/explorer/witness", "/explorer/anchors"):  # fmt: skip
            page.goto(alpha.url + path)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, (path, overflow)
    finally:
        page.close()


def test_screenshots_of_the_main_pages(
    browser: Any, federation: list[NodeProcess], screenshot_dir: Path
) -> None:
    written = screenshot_pages(browser, federation[0].url, screenshot_dir, 5)
    assert len(written) == 8
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value, validate=True) if value else b""


def _python_verdict(kind: str, case: dict[str, Any]) -> list[str] | None:
    """None if the Python core accepts the vector, else [error class, code]."""
    proof = [_b64(p) for p in case["proof"] or []]
    try:
        if kind == "inclusion":
            verify_inclusion(case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof,
                             _b64(case["root"]))  # fmt: skip
        else:
            verify_consistency(case["size1"], case["size2"], _b64(case["root1"]),
                               _b64(case["root2"]), proof)  # fmt: skip
    except RemembrancerError as e:
        return [type(e).__name__, e.code]
    return None


def test_the_browser_verifier_passes_the_rfc6962_vectors(
    page: Any, federation: list[NodeProcess]
) -> None:
    """The inclusion and consistency vectors the Python core passes, run through
    verify.js (read with its own strict JSON parser, as the JavaScript
    client's tests do): each good one verifies, and each bad one fails with
    the same error class and code as in Python (a TypeError, a base64 error
    or any other failure for the wrong reason does not count)."""
    cases = []
    for kind in ("inclusion", "consistency"):
        for path in sorted((VECTORS / kind).rglob("*.json")):
            case = json.loads(path.read_text())
            expected = _python_verdict(kind, case)
            assert (expected is not None) == bool(case["wantErr"]), path  # the vectors' verdict
            cases.append({"name": f"{kind}/{path.relative_to(VECTORS / kind)}", "kind": kind,
                          "expected": expected, "text": path.read_text()})  # fmt: skip
    page.goto(f"{federation[0].url}/explorer")
    results = page.evaluate("""async (cases) => {
        const v = await import('/explorer/static/verify.js');
        const bytes = (text) => (text ? v.b64decode(text) : new Uint8Array(0));
        const out = [];
        for (const {name, kind, text} of cases) {
            // The module's strict parser keeps integers beyond 2^53 (uint64 indices) exact.
            const c = {kind, ...v.parseJson(text)};
            let got = null;
            try {
                const proof = (c.proof || []).map(bytes);
                if (c.kind === 'inclusion') {
                    await v.verifyInclusion(c.leafIdx, c.treeSize, bytes(c.leafHash), proof, bytes(c.root));
                } else {
                    await v.verifyConsistency(c.size1, c.size2, bytes(c.root1), bytes(c.root2), proof);
                }
            } catch (e) {
                got = [String(e.name), String(e.code)];
            }
            out.push([name, got]);
        }
        return out;
    }""", cases)  # fmt: skip
    assert len(results) == len(cases) >= 190
    assert sum(c["expected"] is not None for c in cases) >= 90  # bad vectors, each with its code
    wrong = [(name, got, c["expected"]) for (name, got), c in zip(results, cases, strict=True)
             if got != c["expected"]]  # fmt: skip
    assert wrong == []


def test_the_browser_follows_aggregation_paths(page: Any, federation: list[NodeProcess]) -> None:
    """An aggregated anchor (collaborative anchoring) commits to a checkpoint
    through an RFC 6962 path from SHA-256(0x00 || digest) to its root."""
    digests = [hashlib.sha256(b"checkpoint %d" % i).digest() for i in range(7)]
    tree = NaiveTree([hash_leaf(d) for d in digests])
    anchor = {"root": "sha256:" + tree.root(7).hex(),
              "aggregation": {"leafIndex": 5, "treeSize": 7,
                              "path": ["sha256:" + h.hex() for h in tree.inclusion_proof(5, 7)]}}  # fmt: skip
    page.goto(f"{federation[0].url}/explorer")
    covers = page.evaluate("""async ([anchor, digests]) => {
        const v = await import('/explorer/static/verify.js');
        const bytes = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));
        return Promise.all(digests.map((d) => v.anchorCovers(anchor, bytes(d))));
    }""", [anchor, [d.hex() for d in digests]])  # fmt: skip
    assert covers == [i == 5 for i in range(7)]
    direct = page.evaluate("""async (d) => {
        const v = await import('/explorer/static/verify.js');
        return v.anchorCovers({root: 'sha256:' + d}, Uint8Array.from(d.match(/../g), (x) => parseInt(x, 16)));
    }""", digests[0].hex())  # fmt: skip
    assert direct is True
