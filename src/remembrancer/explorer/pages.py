"""HTML for the explorer's pages, rendered from the views' JSON values.

Escaping is structural: :func:`h` formats a literal template and escapes
every argument unless it is already :class:`Html` (markup built the same
way), so a value from a record, a peer or a query can never become markup.
Pages carry no inline script or style (the Content-Security-Policy forbids
both); the scripts find what they need in ``data-`` attributes and in the
JSON endpoints.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import html
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from remembrancer.explorer.views import MAX_PAGE, anchor_extras

STATIC_FILES = ("explorer.css", "explorer.js", "verify.js")
NAV = (
    ("overview", "/explorer", "Overview"),
    ("namespaces", "/explorer/namespaces", "Namespaces"),
    ("witness", "/explorer/witness", "Witnesses"),
    ("anchors", "/explorer/anchors", "Anchors"),
)
_BADGES = {
    "ok": "good", "active": "good", "verified": "good", "final": "good", "pass": "good",
    "pending": "wait", "submitted": "wait", "stale": "warn", "probation": "warn",
    "backing_off": "warn", "not_configured": "wait", "failed": "bad", "reorged": "bad", "suspended": "bad", "lost": "bad",
}  # fmt: skip


class Html(str):
    """Markup that is already safe (built by :func:`h` or escaped)."""

    __slots__ = ()


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


@functools.lru_cache(maxsize=1024)
def _positional_fields(template: str) -> int:
    return sum(1 for _, name, _, _ in string.Formatter().parse(template) if name == "")


def h(template: str, *args: object, **kwargs: object) -> Html:
    """Fill a literal ``template`` (``str.format`` syntax) with escaped values.
    Every positional value must have its ``{}`` (``str.format`` would drop extras)."""
    if len(args) != _positional_fields(template):
        raise TypeError(
            f"{len(args)} values for {_positional_fields(template)} fields in {template[:60]!r}"
        )
    return Html(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def cat(parts: Iterable[Html]) -> Html:
    return Html("".join(esc(p) for p in parts))


def _static_version() -> str:
    digest = hashlib.sha256()
    for name in STATIC_FILES:
        digest.update(static_file(name))
    return digest.hexdigest()[:12]


def static_file(name: str) -> bytes:
    return resources.files("remembrancer.explorer").joinpath("static", name).read_bytes()


STATIC_VERSION = _static_version()


# --- small pieces ------------------------------------------------------------------


def iso(ts: int | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(seconds: float) -> str:
    s = int(seconds)
    if s < 0:
        return f"in {ago(-s)}"
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def when(ts: int | None, now: int) -> Html:
    if not ts:
        return h('<span class="none">never</span>')
    rel = f"{ago(now - ts)} ago" if ts <= now else ago(now - ts)
    stamp = datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")
    return h('<time datetime="{}" title="{}">{}</time>', stamp, iso(ts), rel)


def code(value: object, short: int = 0) -> Html:
    text = "" if value is None else str(value)
    if short and len(text) > short:
        return h('<code title="{}">{}…</code>', text, text[:short])
    return h("<code>{}</code>", text)


def badge(status: object) -> Html:
    s = "" if status is None else str(status)
    return h('<span class="badge {}">{}</span>', "badge-" + _BADGES.get(s, "plain"), s or "—")


def num(value: object, field: str = "") -> Html:
    if value is None:
        return h('<span class="none" data-field="{}">—</span>', field)
    text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    return h('<span class="num" data-field="{}" data-value="{}">{}</span>', field, value, text)


def ns_link(ns: str) -> Html:
    return h('<a href="/explorer/namespaces/{}">{}</a>', quote(ns, safe=":"), ns)


def record_link(ns: str, index: int, text: object = None) -> Html:
    return h('<a href="/explorer/namespaces/{}/records/{}">{}</a>', quote(ns, safe=":"), index,
             f"#{index:,}" if text is None else text)  # fmt: skip


def table(caption: str, head: Sequence[str], rows: Iterable[Sequence[object]],
          *, row_attrs: Sequence[Html] | None = None, empty: str = "Nothing yet.") -> Html:  # fmt: skip
    rows = list(rows)
    if not rows:
        return h('<p class="empty">{}</p>', empty)
    ths = cat(h('<th scope="col">{}</th>', c) for c in head)
    body = []
    for i, r in enumerate(rows):
        attrs = row_attrs[i] if row_attrs else Html("")
        body.append(h("<tr{}>{}</tr>", attrs, cat(h("<td>{}</td>", c) for c in r)))
    return h('<div class="table-wrap" role="region" aria-label="{}" tabindex="0"><table>'
             "<caption>{}</caption><thead><tr>{}</tr></thead><tbody>{}</tbody></table></div>",
             caption, caption, ths, cat(body))  # fmt: skip


def stats(items: Iterable[tuple[str, str, object]]) -> Html:
    return h('<dl class="stats">{}</dl>', cat(
        h('<div class="stat"><dt>{}</dt><dd data-stat="{}">{}</dd></div>', label, key,
          num(value, key) if not isinstance(value, Html) else value)
        for key, label, value in items))  # fmt: skip


def facts(items: Iterable[tuple[str, object]]) -> Html:
    return h('<dl class="facts">{}</dl>', cat(
        h("<div><dt>{}</dt><dd>{}</dd></div>", k, v) for k, v in items))  # fmt: skip


def pre(value: object, label: str) -> Html:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return h('<pre tabindex="0" aria-label="{}">{}</pre>', label, text)


def section(title: str, body: Html, *, id: str = "", region: str = "") -> Html:
    sid = id or title.lower().replace(" ", "-")
    attr = h(' data-region="{}"', region) if region else Html("")
    return h('<section id="{}" aria-labelledby="{}-h"{}><h2 id="{}-h">{}</h2>{}</section>',
             sid, sid, attr, sid, title, body)  # fmt: skip


# --- layout ------------------------------------------------------------------------


def layout(*, title: str, active: str, main: Html, json_url: str, node: Mapping[str, Any],
           live: str = "", page: str = "") -> str:  # fmt: skip
    nav = cat(
        h('<li><a href="{}"{}>{}</a></li>', href, Html(' aria-current="page"') if key == active
          else Html(""), label) for key, href, label in NAV)  # fmt: skip
    v = STATIC_VERSION
    return h(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        '<link rel="icon" href="data:,">'
        "<title>{title} · Remembrancer explorer</title>"
        '<link rel="stylesheet" href="/explorer/static/explorer.css?v={v}">'
        '<link rel="alternate" type="application/json" href="{json}">'
        '<script type="module" src="/explorer/static/explorer.js?v={v}"></script>'
        '</head><body data-live="{live}" data-page="{page}" data-json="{json}">'
        '<a class="skip-link" href="#main">Skip to content</a>'
        '<header class="top"><p class="brand"><a href="/explorer">Remembrancer</a> explorer</p>'
        '<nav aria-label="Explorer sections"><ul>{nav}</ul></nav>'
        '<p class="node">Node <code title="{did}">{did_short}</code> · {prefix}</p></header>'
        '<main id="main" tabindex="-1"><h1>{title}</h1>{main}</main>'
        '<footer><p><span id="live-status" role="status" aria-live="polite">{live_text}</span></p>'
        '<p><a href="{json}">This page as JSON</a> · <a href="/docs">API</a> · '
        "Everything here can be checked without trusting this node: see the record pages.</p>"
        "</footer></body></html>",
        title=title, v=v, json=json_url, live=live, page=page, nav=nav, did=node.get("did", ""),
        did_short=str(node.get("did", ""))[:24] + "…", prefix=node.get("origin_prefix", ""),
        main=main, live_text="Live updates: starting…" if live else "",
    )  # fmt: skip


def error_main(error: Mapping[str, Any], status: int) -> Html:
    return h('<div class="error" role="alert"><p><strong>{}</strong> ({})</p><p>{}</p></div>'
             '<p><a href="/explorer">Back to the overview</a></p>',
             error.get("code", "error"), status, error.get("message", ""))  # fmt: skip


# --- pages -------------------------------------------------------------------------


def overview(v: Mapping[str, Any]) -> Html:
    now = v["at"]
    t = v["totals"]
    fed = v["federation"]
    cards = [("namespaces", "Namespaces", t["namespaces"]), ("entries", "Entries", t["entries"])]
    if fed is not None:
        cards += [("peers", "Peers", t["peers"]), ("active_peers", "Active peers", t["active_peers"]),
                  ("federation_receipts", "Federation receipts", t["federation_receipts"]),
                  ("evidence", "Evidence files", t["evidence"])]  # fmt: skip
    parts = [section("Totals", stats(cards), region="totals")]
    if fed is None:
        parts.append(
            section("Federation", h('<p class="empty">This node is not in a federation.</p>'))
        )
    else:
        rows, attrs = [], []
        for p in fed["peers"]:
            lag = p.get("cosign_lag")
            lag_cell = (num(lag["entries"] if lag["complete"] else None, "lag") if lag
                        else h('<span class="none" data-field="lag">—</span>'))  # fmt: skip
            hb = p.get("last_heartbeat")
            rows.append([
                h("{}{}", code(p["did"], 28), Html(" <em>(this node)</em>") if p["self"] else Html("")),
                code(p["endpoint"]), h('<span data-field="status">{}</span>', badge(p["status"])),
                num(p["score"], "score"),
                Html("—") if p["self"] else h('<span data-field="heartbeat">{}</span>', when(hb, now)),
                num(p.get("heartbeat_age_s"), "heartbeat_age"), lag_cell,
                ", ".join(p["roles"]),
            ])  # fmt: skip
            attrs.append(h(' data-peer="{}"', p["did"]))
        peers = table("Peers", ["Peer", "Endpoint", "Status", "Score", "Last heartbeat",
                                "Heartbeat age (s)", "Cosigning lag (entries)", "Roles"],
                      rows, row_attrs=attrs)  # fmt: skip
        head = facts([("Federation", code(fed["federation_id"])), ("Quorum", num(fed["quorum"], "quorum")),
                      ("Anchor strategy", fed["anchor_strategy"]),
                      ("Registry digest", code(fed["registry_digest"], 24))])  # fmt: skip
        hist = table("Recent status changes", ["Peer", "From", "To", "Reason", "When"],
                     [[code(c["peer"], 28), badge(c["old"]), badge(c["new"]), c.get("reason") or "",
                       when(c.get("at"), now)] for c in reversed(fed["history"])],
                     empty="No status changes.")  # fmt: skip
        parts.append(section("Federation", cat([head, peers, hist]), region="federation"))
    ns_rows = [[ns_link(n["namespace"]), num(n["size"], "size"), badge(n["anchoring"])]
               for n in v["namespaces"]]  # fmt: skip
    parts.append(section("Logs", table("Logs on this node", ["Namespace", "Entries", "Anchoring"], ns_rows,
                                       row_attrs=[h(' data-namespace="{}"', n["namespace"]) for n in v["namespaces"]]),
                         region="logs"))  # fmt: skip
    w = v["witnessing"]
    parts.append(section("Witnessing", facts([
        ("Witnesses asked", ", ".join(w["peers"]) or "none"), ("Quorum", w["quorum"]),
        ("Median time to quorum", f"{w['median_ms']} ms" if w["median_ms"] is not None else "—"),
        ("Split views seen", w["split_views"])]), region="witnessing"))  # fmt: skip
    return cat(parts)


def _cosigners(cp: Mapping[str, Any], now: int) -> Html:
    sigs = [s for s in cp["signatures"] if s["kind"] == "cosignature"]
    if not sigs:
        return h('<span class="none">none yet</span>')
    return cat(h('<span class="cosigner" data-cosigner="{}">{} <small>{}</small></span> ', s["name"], s["name"],
                 when(s.get("timestamp"), now)) for s in sigs)  # fmt: skip


def _levels_table(levels: Sequence[Mapping[str, Any]], now: int, ns: str) -> Html:
    rows = []
    for lv in levels:
        last = lv.get("last_anchor")
        fin = (last or {}).get("finality") or {}
        b = lv["backoff"]
        back = (h("{} failures; retry {}", b["failures"], when(b["retry_at"], now)) if b["active"]
                else h("{}", f"{b['failures']} failures" if b["failures"] else "none"))  # fmt: skip
        if b.get("last_error") and b["failures"]:
            back = h('{}<br><small class="err">{}</small>', back, b["last_error"])
        rows.append([
            lv["level"], code(lv["target"]), lv["every"],
            when(lv.get("last_anchor_at"), now) if lv.get("last_anchor_at") else h('<span class="none">never</span>'),
            badge(last["status"]) if last else "—",
            h("{} / {} ({})", fin.get("observedDepth", 0), fin.get("requiredDepth", 0), fin.get("state", "—")) if last else "—",
            when(lv.get("next_due"), now) if (lv.get("next_due") or 0) > now else h('<span data-field="next_due">due now</span>'), back,
        ])  # fmt: skip
    return table(f"Cadence of {ns}", ["Level", "Target", "Every", "Last anchor", "Status",
                                      "Finality (depth / required)", "Next due", "Backoff"], rows,
                 empty="No cadence levels: this namespace is not anchored.")  # fmt: skip


def namespaces(v: Mapping[str, Any]) -> Html:
    now = v["at"]
    parts = []
    for n in v["namespaces"]:
        ns = n["namespace"]
        cp = n["checkpoint"]
        body = [facts([
            ("Origin", code(n["origin"])), ("Entries", num(n["size"], "size")),
            ("Latest checkpoint", h("size {} · root {} · {}", cp["size"], code(cp["root"], 16),
                                    when(cp.get("time"), now)) if cp else "none yet"),
            ("Cosigners", _cosigners(cp, now) if cp else "—"),
            ("Anchoring", badge(n["anchoring"]["status"]) if "anchoring" in n else "not configured"),
        ])]  # fmt: skip
        if "anchoring" in n:
            body.append(_levels_table(n["anchoring"]["levels"], now, ns))
        parts.append(h('<article class="card" data-namespace="{}" aria-labelledby="ns-{}"><h2 id="ns-{}">{}</h2>{}</article>',
                       ns, ns, ns, ns_link(ns), cat(body)))  # fmt: skip
    if not parts:
        return h('<p class="empty">No namespaces.</p>')
    return h('<div data-region="namespaces" id="namespaces">{}</div>', cat(parts))


def search_form(ns: str, q: str = "", error: Mapping[str, Any] | None = None) -> Html:
    err = (h('<p class="error" role="alert" id="search-error">{}</p>', error.get("message", ""))
           if error else Html(""))  # fmt: skip
    return h('<form class="search" role="search" method="get" action="/explorer/namespaces/{}/search">'
             '<label for="q">Find a record by index, eventHash or event:id</label>'
             '<div class="row"><input id="q" name="q" value="{}" autocomplete="off" spellcheck="false" '
             'placeholder="12345, sha256:…, or an event:id"{}><button type="submit">Find</button></div>{}</form>',
             quote(ns, safe=":"), q, Html(' aria-describedby="search-error" aria-invalid="true"') if error else Html(""),
             err)  # fmt: skip


def log_table(ns: str, log: Mapping[str, Any], now: int) -> Html:
    rows, attrs = [], []
    for e in log["entries"]:
        if e["kind"] == "record":
            rows.append([record_link(ns, e["index"]), code(e["event:id"], 40), e["event:type"], code(e["schema"]),
                         code(e["actor"], 24), when(e["timestamp"], now), code(e["eventHash"], 20)])  # fmt: skip
        else:
            rows.append([record_link(ns, e["index"]), h('<span class="none">raw entry</span>'), "", "",
                         "", "", code(e["entryHash"], 20)])  # fmt: skip
        attrs.append(h(' data-index="{}"', e["index"]))
    first, last = log["first"], log["before"] - 1
    heading = (h("Entries {} to {} of {}", f"{last:,}", f"{first:,}", f"{log['size']:,}") if log["entries"]
               else h("No entries"))  # fmt: skip
    base = f"/explorer/namespaces/{quote(ns, safe=':')}"
    limit = log["limit"]

    def page_link(label: str, before: int | None, rel: str) -> Html:
        if before is None:
            return h('<span class="disabled" aria-disabled="true">{}</span>', label)
        query = urlencode({"before": before, **({"limit": limit} if limit != 25 else {})})
        return h('<a href="{}?{}" rel="{}" data-nav="{}">{}</a>', base, query, rel, rel, label)

    newest = (h('<a href="{}" data-nav="newest">Newest</a>', base) if log["newer"] is not None
              else h('<span class="disabled" aria-disabled="true">Newest</span>'))  # fmt: skip
    nav = h('<nav class="pager" aria-label="Log pages">{} {} {} {}</nav>', newest,
            page_link("Newer", log["newer"], "prev"), page_link("Older", log["older"], "next"),
            page_link("Oldest", log["oldest"], "last"))  # fmt: skip
    tbl = table(f"Log of {ns}", ["Index", "event:id", "Type", "Schema", "Actor", "Time", "eventHash"],
                rows, row_attrs=attrs, empty="This log is empty.")  # fmt: skip
    live = "latest" if log["newer"] is None else "paged"
    return h('<div id="log" data-region="log" data-log="{}"><p class="range">{}</p>{}{}{}</div>',
             live, heading, nav, tbl, nav)  # fmt: skip


def namespace(v: Mapping[str, Any], q: str = "", error: Mapping[str, Any] | None = None) -> Html:
    now = int(v.get("at") or 0)
    ns = v["namespace"]
    cp = v["checkpoint"]
    summary = facts([
        ("Origin", code(v["origin"])), ("Entries", num(v["size"], "size")),
        ("Latest checkpoint", h("size {} · root {}", num(cp["size"], "checkpoint_size"), code(cp["root"], 16)) if cp else "none yet"),
        ("Signed", when(cp.get("time"), now) if cp else "—"),
        ("Cosigners", _cosigners(cp, now) if cp else "—"),
        ("Anchoring", badge(v["anchoring"]["status"]) if "anchoring" in v else "not configured"),
    ])  # fmt: skip
    parts = [h('<p class="lede">{}</p>', v.get("description") or ""),
             section("Summary", summary, region="summary")]  # fmt: skip
    if "anchoring" in v:
        parts.append(
            section("Cadence", _levels_table(v["anchoring"]["levels"], now, ns), region="cadence")
        )
    parts.append(section("Log", cat([search_form(ns, q, error), log_table(ns, v["log"], now)])))
    if cp:
        parts.append(section("Latest checkpoint", pre(cp["note"], "checkpoint note"), id="checkpoint",
                             region="checkpoint"))  # fmt: skip
    return cat(parts)


def _sig_table(cp: Mapping[str, Any], now: int) -> Html:
    rows = []
    for s in cp["signatures"]:
        checked = s.get("checked_by_node")
        rows.append([code(s["name"]), s["kind"], code(s["key_id"]),
                     when(s.get("timestamp"), now) if s.get("timestamp") else "—",
                     "yes" if checked else ("no: INVALID" if checked is False else "no key")])  # fmt: skip
    return table(
        "Checkpoint signatures",
        ["Key name", "Kind", "Key ID", "Cosigned", "Valid (as this node says)"],
        rows,
    )


def tree_svg(tree: Mapping[str, Any], index: int, leaf_hash: str) -> Html:
    """The inclusion path from the leaf to the root, as an SVG (path nodes in
    the middle column, the proof's sibling hashes beside them)."""
    path = tree["path"]
    levels = len(path)
    row, box_w, box_h, width = 64, 210, 44, 680
    cx = width // 2 - box_w // 2
    height = (levels + 1) * row + 10
    items = []

    def node(x: int, y: int, label: str, hash_text: str, key: str, cls: str) -> Html:
        return h('<g class="node {}" data-node="{}"><rect x="{}" y="{}" width="{}" height="{}" rx="6"/>'
                 '<text x="{}" y="{}" class="range">{}</text><text x="{}" y="{}" class="hash" data-hash="{}">{}</text></g>',
                 cls, key, x, y, box_w, box_h, x + 8, y + 17, label, x + 8, y + 35, key, hash_text)  # fmt: skip

    def ytop(r: int) -> int:
        return 5 + r * row

    leaf_row = levels
    items.append(node(cx, ytop(leaf_row), f"leaf {index:,}", leaf_hash[:24] + "…", "leaf", "leaf"))
    for i, step in enumerate(path):
        r = leaf_row - i
        sx = cx - box_w - 20 if step["side"] == "left" else cx + box_w + 20
        sx = max(2, min(width - box_w - 2, sx))
        s0, s1 = step["sibling"]
        items.append(h('<line x1="{}" y1="{}" x2="{}" y2="{}" class="edge"/>', sx + box_w // 2, ytop(r),
                       cx + box_w // 2, ytop(r - 1) + box_h))  # fmt: skip
        items.append(h('<line x1="{}" y1="{}" x2="{}" y2="{}" class="edge path"/>', cx + box_w // 2, ytop(r),
                       cx + box_w // 2, ytop(r - 1) + box_h))  # fmt: skip
        items.append(
            node(
                sx,
                ytop(r),
                f"proof {i}: [{s0:,}, {s1:,})",
                step["hash"][:24] + "…",
                f"sibling-{i}",
                "sibling",
            )
        )
        n0, n1 = step["node"]
        label = f"root [{n0:,}, {n1:,})" if i == levels - 1 else f"[{n0:,}, {n1:,})"
        items.append(node(cx, ytop(r - 1), label, "computed in your browser", f"path-{i}",
                          "root" if i == levels - 1 else "path"))  # fmt: skip
    title = f"Inclusion path of entry {index:,} in a tree of {tree['treeSize']:,} entries"
    return h('<div class="tree-wrap" tabindex="0" role="region" aria-label="Tree drawing">'
             '<svg class="tree" viewBox="0 0 {} {}" role="img" aria-labelledby="tree-title tree-desc">'
             '<title id="tree-title">{}</title><desc id="tree-desc">From the leaf at the bottom, each step '
             "hashes the path node with the proof hash beside it, up to the root at the top.</desc>{}</svg></div>",
             width, height, title, cat(items))  # fmt: skip


def tree_section(tree: Mapping[str, Any], index: int, leaf_hash: str) -> Html:
    rows = [[s["level"], s["side"], h("[{}, {})", f"{s['sibling'][0]:,}", f"{s['sibling'][1]:,}"),
             h("[{}, {})", f"{s['node'][0]:,}", f"{s['node'][1]:,}"), code(s["hash"])] for s in tree["path"]]  # fmt: skip
    steps = table("Audit path, leaf to root", ["Step", "Proof hash is on the", "Proof hash covers",
                                               "Together they make", "Proof hash (base64)"], rows,
                  empty="The tree has one entry: the leaf is the root.")  # fmt: skip
    return cat([h("<p>Tree size {}, root <code>{}</code>.</p>", f"{tree['treeSize']:,}", tree["root"] or "—"),
                tree_svg(tree, index, leaf_hash), steps])  # fmt: skip


def _anchor_rows(anchors: Sequence[Mapping[str, Any]], now: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for a in anchors:
        fin = a.get("finality") or {}
        extra = list(anchor_extras(a)) + list((a.get("extra") or {}).items())
        more = (h("<details><summary>{} more fields</summary>{}</details>", len(extra),
                  pre(dict(extra), "more anchor fields")) if extra else Html(""))  # fmt: skip
        rows.append([code(a.get("target")), badge(a.get("status")), code(a.get("txRef") or "—", 24),
                     when(a.get("anchorTs"), now) if a.get("anchorTs") else "—",
                     h("{} / {} ({})", fin.get("observedDepth", 0), fin.get("requiredDepth", 0), fin.get("state", "—")),
                     h("{}{}", code(a["superseded_by"], 30) if a.get("superseded_by") else "—", more),
                     a.get("error") or ""])  # fmt: skip
    return rows


ANCHOR_HEAD = ["Target", "Status", "txRef", "Anchor time", "Confirmations (depth / required)",
               "Superseded by", "Error"]  # fmt: skip


def _fed_keys(fed: Mapping[str, Any] | None) -> Html:
    if not fed:
        return Html("")
    items = cat(
        h("<li><code>{}</code>: <code>{}</code> ({})</li>", p["did"], p["pubkey"], p["status"])
        for p in fed["peers"]
    )
    return h("<details><summary>Federation peers' keys, for the federation receipts (quorum {})</summary>"
             "<ul>{}</ul></details>", fed["quorum"], items)  # fmt: skip


def record(v: Mapping[str, Any]) -> Html:
    now = int(v.get("at") or 0)
    ns, index = v["namespace"], v["index"]
    rec = v["kind"] == "record"
    ident = [
        ("Namespace", ns_link(ns)),
        ("Index", num(index, "index")),
        ("Leaf hash", code(v["leafHash"])),
    ]
    if rec:
        ident += [("eventHash", code(v["eventHash"])), ("event:id", code(v["event:id"])),
                  ("Type", v["event:type"]), ("Schema", code(v["schema"])), ("Actor", code(v["actor"])),
                  ("Timestamp", when(v["timestamp"], now))]  # fmt: skip
    else:
        ident += [("Entry hash", code(v["entryHash"])), ("Bytes", v["bytes"])]
    parts = [section("Record", facts(ident))]
    if rec:
        parts.append(section("Envelope", pre(v["envelope"], "record envelope")))
        parts.append(section("Signatures", table("Record signatures", ["Role", "Key (did:key)", "Algorithm"],
                                                 [[s.get("role"), code(s.get("kid")), s.get("alg")] for s in v["signatures"]])))  # fmt: skip
    else:
        parts.append(section("Entry", pre(v["entry"], "entry bytes in base64")))
    keys = v["keys"]
    url = f"/v1/explorer/namespaces/{quote(ns, safe=':')}/records/{index}"
    cos = "\n".join(keys["cosigners"])
    verify = h(
        '<div id="verifier" data-record-json="{url}">'
        '<p>Your browser checks this record itself: the hashes with SHA-256 and the signatures with '
        "Ed25519 (WebCrypto), against the keys below. The keys come from this node; compare them with "
        "keys you got elsewhere (another peer's <code>/v1/node</code>, your own configuration) or paste "
        "your own, then verify again.</p>"
        '<noscript><p class="error">Checking in the browser needs JavaScript. Without it, download the '
        "proof and run <code>remembrancer verify</code>.</p></noscript>"
        '<form id="verify-form" class="keys">'
        '<label for="log-vkey">Log key (vkey of {origin})</label>'
        '<input id="log-vkey" name="log-vkey" value="{log}" spellcheck="false" autocomplete="off">'
        '<label for="cosigner-vkeys">Witness keys (cosigner vkeys, one per line)</label>'
        '<textarea id="cosigner-vkeys" name="cosigner-vkeys" rows="3" spellcheck="false">{cos}</textarea>'
        '<div class="row"><button type="submit" id="verify-button">Verify in my browser</button>'
        '<button type="button" id="tamper-button" class="secondary">Try a tampered proof</button></div>'
        "</form>{fed}"
        '<p id="verdict" class="verdict" role="status" aria-live="polite">Not checked yet.</p>'
        '<ol id="checks" class="checks"></ol></div>',
        url=url, origin=v["origin"], log=keys["log"] or "", cos=cos, fed=_fed_keys(keys.get("federation")),
    )  # fmt: skip
    parts.append(section("Verify in your browser", verify, id="verify"))
    receipt = v["receipt"]
    parts.append(section("Receipt", cat([
        facts([("Tree size", num(receipt["treeSize"], "tree_size")), ("Proof hashes", len(receipt["proof"]))]),
        _sig_table(v["checkpoint"], now),
        h("<details><summary>Checkpoint note and proof</summary>{}{}</details>",
          pre(receipt["checkpoint"], "checkpoint note"), pre(receipt["proof"], "proof hashes")),
        h('<p><a href="/v1/namespaces/{}/proofs/inclusion?index={}&amp;format=tlog-proof">Download the '
          "tlog-proof file</a> for <code>remembrancer verify</code>.</p>", quote(ns, safe=":"), index),
    ])))  # fmt: skip
    anchored = v["anchored"]
    if anchored is None:
        abody = h('<p class="empty">No anchored checkpoint covers this record yet.</p>')
    else:
        abody = cat([h("<p>Checkpoint at size {} (anchored digest <code>{}</code>).</p>", f"{anchored['treeSize']:,}",
                       anchored["root"]),
                     table("Anchors of that checkpoint", ANCHOR_HEAD, _anchor_rows(anchored["anchors"], now))])  # fmt: skip
    parts.append(section("Anchors", abody, region="anchored"))
    frows = []
    for r in v["federation_receipts"]:
        a = r.get("anchor") or {}
        regions = r.get("regions") if isinstance(r.get("regions"), dict) else {}
        signed = [str(x) for x in regions.get("signed") or []]
        frows.append([code(a.get("target")), code(a.get("tx_hash") or "—", 24), badge("final" if r.get("quorum_met") else "pending"),
                      len(r.get("signatures") or []),
                      h("{} (of {} required)", ", ".join(signed) or "—", regions.get("min_regions", 0)),
                      when(r.get("finalized_at"), now)])  # fmt: skip
    parts.append(section("Federation receipts", table("Federation receipts covering this record",
                         ["Target", "Transaction", "Quorum", "Countersignatures", "Regions", "Final since"], frows,
                         empty="No federation receipt covers this record yet."), region="receipts"))  # fmt: skip
    parts.append(section("Tree", tree_section(v["tree"], index, v["leafHash"]), id="tree"))
    return cat(parts)


def tree_page(v: Mapping[str, Any]) -> Html:
    return cat([h("<p>Entry {} of {}: {}.</p>", record_link(v["namespace"], v["index"]), ns_link(v["namespace"]),
                  "the inclusion path the record page verifies"),
                tree_section(v, v["index"], v["leafHash"])])  # fmt: skip


def _series(series: Sequence[int], label: str) -> Html:
    top = max(series) if series and max(series) else 1
    bars = cat(h('<rect x="{}" y="{}" width="8" height="{}" class="bar"/>', i * 10, 40 - 38 * c // top, 38 * c // top)
               for i, c in enumerate(series))  # fmt: skip
    return h('<svg class="spark" viewBox="0 0 {} 40" role="img" aria-label="{}"><title>{}</title>{}</svg>',
             len(series) * 10, label, label, bars)  # fmt: skip


def witness(v: Mapping[str, Any]) -> Html:
    now = v["at"]
    win = v["window"]
    rows, attrs = [], []
    for p in v["peers"]:
        label = f"Cosignatures per period by {p['name']}: " + ", ".join(map(str, p["series"]))
        rows.append([code(p["name"]), code(p["did"] or "—", 28), num(p["cosignatures"], "cosignatures"),
                     when(p["last"], now), _series(p["series"], label), code(p["vkey"], 32)])  # fmt: skip
        attrs.append(h(' data-witness="{}"', p["name"]))
    intro = h("<p>Cosignatures found on this node's newest {} checkpoints per log ({} checkpoints, "
              "from {} to {}).</p>", win["per_namespace"], win["checkpoints"], iso(win["from"]) or "—",
              iso(win["to"]) or "—")  # fmt: skip
    parts = [section("Witnesses of this node", cat([intro, table("Witnesses", ["Witness", "Federation peer",
             "Cosignatures", "Last", "Over time", "Cosigner key"], rows, row_attrs=attrs,
             empty="This node asks no witnesses.")]), region="witnesses")]  # fmt: skip
    recent = [[code(p["name"]), ns_link(e["namespace"]), num(e["size"]), when(e["time"], now)]
              for p in v["peers"] for e in p["recent"][:5]]  # fmt: skip
    parts.append(section("Recent cosignatures", table("Recent cosignatures", ["Witness", "Log", "Size", "Cosigned"],
                                                      recent), region="recent"))  # fmt: skip
    parts.append(section("Cosigned by this node", table("Logs this node's witness cosigns", ["Origin", "Size", "Cosigned"],
                         [[code(c["origin"]), num(c["size"]), when(c["time"], now)] for c in v["cosigned_by_this_node"]],
                         empty="This node cosigns no logs."), region="cosigned"))  # fmt: skip
    ev = v["evidence"]
    if ev:
        ebody = cat(h('<details class="evidence" data-evidence="{}"><summary>{} · <code>{}</code></summary>{}</details>',
                      e["evidence_ref"], e["kind"], e["evidence_ref"], pre(e["file"], "evidence file")) for e in ev)  # fmt: skip
    else:
        ebody = h(
            '<p class="empty" data-evidence-count="0">No equivocation or invalid-claim evidence.</p>'
        )
    splits = v["split_views"]
    if splits:
        ebody = cat([ebody, table("Split views reported by witnesses", ["Witness", "Origin", "Size", "Detail"],
                                  [[s["peer"], code(s["origin"]), s["size"], s["detail"]] for s in splits])])  # fmt: skip
    parts.append(section("Evidence", ebody, region="evidence"))
    return cat(parts)


def anchors(v: Mapping[str, Any], selected: str | None) -> Html:
    now = v["at"]
    parts = []
    for n in v["namespaces"]:
        ns = n["namespace"]
        rails = table(f"Rails of {ns}", ["Target", "Chain", "Statuses", "Conflicts", "Latest anchor time"],
                      [[code(r["target"]), r["chain"], ", ".join(f"{k}: {c}" for k, c in sorted(r["statuses"].items())),
                        num(r["conflicts"]), when(r["latest"], now)] for r in n["rails"]],
                      empty="No anchors yet.")  # fmt: skip
        receipts = []
        for r in n["receipts"]:
            conflicts = (cat(h("<li><code>{}</code> superseded by <code>{}</code></li>", c["superseded"], c["by"])
                             for c in r["conflicts"]))  # fmt: skip
            receipts.append(h('<article class="receipt" data-size="{}"><h4>Checkpoint size {} · digest {}</h4>{}{}</article>',
                              r["size"], f"{r['size']:,}", code(r["root"], 20),
                              table(f"Anchors at size {r['size']}", ANCHOR_HEAD, _anchor_rows(r["anchors"], now)),
                              h('<ul class="conflicts">{}</ul>', conflicts) if r["conflicts"] else Html("")))  # fmt: skip
        more = Html("")
        if n["older"] is not None:
            query = urlencode({"namespace": ns, "before": n["older"]})
            more = h('<p><a href="/explorer/anchors?{}" rel="next">Older receipts</a></p>', query)
        parts.append(h('<section class="card" data-namespace="{}" aria-labelledby="a-{}"><h2 id="a-{}">{}</h2>'
                       "<p>{} anchored checkpoints.</p>{}<h3>Receipts, newest first</h3>{}{}</section>",
                       ns, ns, ns, ns_link(ns), f"{n['total']:,}", rails, cat(receipts) or h('<p class="empty">None.</p>'),
                       more))  # fmt: skip
    picker = h('<form class="search" method="get" action="/explorer/anchors"><label for="anchor-ns">Namespace</label>'
               '<div class="row"><input id="anchor-ns" name="namespace" value="{}" placeholder="all">'
               "<button type=\"submit\">Show</button></div></form>", selected or "")  # fmt: skip
    return cat(
        [
            picker,
            h(
                '<div data-region="anchors" id="anchors">{}</div>',
                cat(parts) or h('<p class="empty">No anchored namespaces.</p>'),
            ),
        ]
    )


__all__ = ["MAX_PAGE", "STATIC_FILES", "STATIC_VERSION", "Html", "esc", "h", "layout"]
