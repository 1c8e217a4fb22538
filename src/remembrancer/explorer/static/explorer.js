// Remembrancer explorer: live updates and in-browser verification.
//
// Live pages (<body data-live="topics">) poll /v1/explorer/live, which
// returns one short version string per topic; when a topic the page shows
// changes, the page's live regions ([data-region] with an id) are fetched
// again as an HTML fragment and swapped in.  A region holding the keyboard
// focus is left alone until focus moves on.

import { b64decode, b64encode, verifyRecord } from "./verify.js";

const POLL_MS = 2000;
const FRAGMENT_HEADER = "X-Explorer-Fragment";

function setStatus(text) {
  const el = document.getElementById("live-status");
  if (el) el.textContent = text;
}

function clock() {
  return new Date().toLocaleTimeString();
}

async function refreshRegions() {
  const resp = await fetch(location.href, { headers: { [FRAGMENT_HEADER]: "1" }, cache: "no-store" });
  if (!resp.ok) return 0;
  const doc = new DOMParser().parseFromString(`<main>${await resp.text()}</main>`, "text/html");
  let changed = 0;
  for (const fresh of doc.querySelectorAll("[data-region][id]")) {
    const old = document.getElementById(fresh.id);
    if (!old || old.innerHTML === fresh.innerHTML) continue;
    if (old.contains(document.activeElement) && document.activeElement !== document.body) continue;
    old.replaceWith(document.importNode(fresh, true));
    changed++;
  }
  if (changed) document.dispatchEvent(new CustomEvent("explorer:updated", { detail: { regions: changed } }));
  return changed;
}

function startLive(topics) {
  let last = null;
  let failures = 0;
  async function poll() {
    if (!document.hidden) {
      try {
        const resp = await fetch("/v1/explorer/live", { cache: "no-store" });
        if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
        const live = await resp.json();
        const version = topics.map((t) => live.topics[t] || "").join("/");
        if (last !== null && version !== last) {
          const n = await refreshRegions();
          setStatus(n ? `Updated at ${clock()}.` : `Live: checked at ${clock()}.`);
        } else if (last === null) {
          setStatus("Live: this page updates by itself.");
        }
        last = version;
        failures = 0;
      } catch (e) {
        failures++;
        setStatus(`Live updates paused: ${e.message}. Retrying.`);
      }
    }
    setTimeout(poll, POLL_MS * Math.min(8, 2 ** failures));
  }
  poll();
}

// --- the record page ------------------------------------------------------------------

const LABEL = { pass: "passed", fail: "FAILED", skip: "not checked" };
const MARK = { pass: "✓", fail: "✗", skip: "–" };

function renderChecks(result, tampered) {
  const list = document.getElementById("checks");
  list.replaceChildren();
  for (const c of result.checks) {
    const li = document.createElement("li");
    li.className = `check ${c.status}`;
    li.dataset.check = c.id;
    li.dataset.status = c.status;
    const mark = document.createElement("span");
    mark.className = "mark";
    mark.setAttribute("aria-hidden", "true");
    mark.textContent = MARK[c.status];
    const title = document.createElement("strong");
    title.textContent = c.title;
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = LABEL[c.status];
    const detail = document.createElement("p");
    detail.className = "detail";
    detail.textContent = c.detail;
    li.append(mark, " ", title, ": ", state, detail);
    list.append(li);
  }
  const fails = result.checks.filter((c) => c.status === "fail").length;
  const passes = result.checks.filter((c) => c.status === "pass").length;
  const skips = result.checks.length - fails - passes;
  const verdict = document.getElementById("verdict");
  verdict.className = `verdict ${fails ? "fail" : "pass"}`;
  verdict.dataset.status = fails ? "fail" : "pass";
  verdict.textContent = fails
    ? `${tampered ? "Tampered proof: " : ""}${fails} check${fails > 1 ? "s" : ""} FAILED in your browser (${passes} passed, ${skips} not checked).`
    : `Verified in your browser: ${passes} checks passed, ${skips} could not be done here (listed below).`;
}

function drawPath(result) {
  const leaf = document.querySelector('[data-hash="leaf"]');
  if (leaf) leaf.textContent = b64encode(result.leaf).slice(0, 24) + "…";
  const nodes = result.path || [];
  nodes.forEach((h, i) => {
    const el = document.querySelector(`[data-hash="path-${i}"]`);
    if (el) el.textContent = b64encode(h).slice(0, 24) + "…";
  });
  const inclusion = result.checks.find((c) => c.id === "inclusion");
  const svg = document.querySelector("svg.tree");
  if (svg && inclusion) svg.dataset.status = inclusion.status;
}

function readKeys() {
  const log = document.getElementById("log-vkey").value.trim();
  const cosigners = document
    .getElementById("cosigner-vkeys")
    .value.split("\n")
    .map((s) => s.trim())
    .filter(Boolean);
  return { log, cosigners };
}

function tamper(material) {
  const m = JSON.parse(JSON.stringify(material));
  if (m.receipt.proof.length) {
    const h = b64decode(m.receipt.proof[0]);
    h[0] ^= 1;
    m.receipt.proof[0] = b64encode(h);
  } else {
    const e = b64decode(m.entry);
    e[e.length - 1] ^= 1;
    m.entry = b64encode(e);
  }
  return m;
}

async function startVerifier(box) {
  const verdict = document.getElementById("verdict");
  let material = null;
  async function run(tampered) {
    verdict.className = "verdict";
    verdict.dataset.status = "running";
    verdict.textContent = "Checking in your browser…";
    try {
      if (material === null) {
        const resp = await fetch(box.dataset.recordJson, { cache: "no-store" });
        if (!resp.ok) throw new Error(`the record could not be fetched (HTTP ${resp.status})`);
        material = await resp.json();
      }
      const m = tampered ? tamper(material) : material;
      const result = await verifyRecord(m, readKeys());
      renderChecks(result, tampered);
      if (!tampered) drawPath(result);
    } catch (e) {
      verdict.className = "verdict fail";
      verdict.dataset.status = "fail";
      verdict.textContent = `Could not check: ${e.message}`;
    }
  }
  document.getElementById("verify-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    material = null;
    run(false);
  });
  document.getElementById("tamper-button").addEventListener("click", () => run(true));
  await run(false);
}

const topics = (document.body.dataset.live || "").split(" ").filter(Boolean);
if (topics.length) startLive(topics);
const box = document.getElementById("verifier");
if (box) startVerifier(box);
