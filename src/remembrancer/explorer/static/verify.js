// Remembrancer explorer: checks a record's proofs in the visitor's browser.
//
// Nothing the server says is taken on trust here except what the visitor can
// see and replace: the keys.  Hashes are SHA-256 (WebCrypto, or the small
// implementation below where WebCrypto is unavailable), signatures Ed25519
// through WebCrypto.  Formats, byte for byte:
//   - RFC 6962 / 9162 Merkle trees: leaf = SHA-256(0x00 || entry),
//     node = SHA-256(0x01 || left || right); inclusion checked with the
//     RFC 9162 section 2.1.3.2 algorithm;
//   - C2SP signed notes: signature lines "— <name> <base64(key ID || sig)>"
//     over the note text; key ID = SHA-256(name || 0x0A || type || key)[:4];
//   - C2SP tlog-checkpoint: origin, decimal size, base64 root;
//   - C2SP tlog-cosignature: type 0x04, 8-byte big-endian time then the
//     signature over "cosignature/v1\ntime <t>\n" + checkpoint text;
//   - records: eventHash = SHA-256(JCS(envelope without "signatures")), each
//     signature by a did:key over those bytes (RFC 8785 canonical JSON);
//   - federation receipts: each countersignature over JCS(statement plus
//     {"countersigner": {node, role, timestamp}}).

const enc = new TextEncoder();

export class Unsupported extends Error {}

// --- bytes -----------------------------------------------------------------------

export function b64decode(text) {
  if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new Error("not standard base64");
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function b64urlDecode(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new Error("not unpadded base64url");
  }
  let s = text.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  return b64decode(s);
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equal(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// --- SHA-256 -----------------------------------------------------------------------

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

// FIPS 180-4 SHA-256, for pages served without WebCrypto (plain http to a remote host).
export function sha256Plain(data) {
  const bitLen = data.length * 8;
  const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
  padded.set(data);
  padded[data.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bitLen / 2 ** 32));
  view.setUint32(padded.length - 4, bitLen >>> 0);
  const H = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const W = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < padded.length; off += 64) {
    for (let t = 0; t < 16; t++) W[t] = view.getUint32(off + 4 * t);
    for (let t = 16; t < 64; t++) {
      const s0 = rotr(W[t - 15], 7) ^ rotr(W[t - 15], 18) ^ (W[t - 15] >>> 3);
      const s1 = rotr(W[t - 2], 17) ^ rotr(W[t - 2], 19) ^ (W[t - 2] >>> 10);
      W[t] = (W[t - 16] + s0 + W[t - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = H;
    for (let t = 0; t < 64; t++) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + W[t]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      h = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(4 * i, H[i]);
  return out;
}

export async function sha256(data) {
  if (globalThis.crypto && globalThis.crypto.subtle) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  }
  return sha256Plain(data);
}

// --- Merkle trees (RFC 6962 / RFC 9162) --------------------------------------------

export const leafHash = (entry) => sha256(concat(new Uint8Array([0]), entry));
export const nodeHash = (left, right) => sha256(concat(new Uint8Array([1]), left, right));

// RFC 9162 section 2.1.3.2: the root an inclusion proof leads to (throws on a
// proof of the wrong length).  Sizes are BigInt: bit operations on Numbers are 32-bit.
export async function rootFromInclusion(index, size, leaf, proof) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (fn > sn) throw new Error(`index ${index} is not below the tree size ${size}`);
  if (leaf.length !== 32) throw new Error("a leaf hash is 32 bytes");
  let r = leaf;
  for (const p of proof) {
    if (p.length !== 32) throw new Error("a proof hash is 32 bytes");
    if (sn === 0n) throw new Error("the proof has more hashes than the tree is deep");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error("the proof has fewer hashes than the tree is deep");
  return r;
}

// The audit path of RFC 6962 section 2.1.1, bottom-up: for proof hash i, the
// side it sits on and the ranges it covers and completes.
export function inclusionSteps(index, size) {
  const steps = [];
  let start = 0;
  let end = size;
  while (end - start > 1) {
    let k = 1;
    while (k * 2 < end - start) k *= 2;
    const mid = start + k;
    if (index < mid) {
      steps.push({ side: "right", node: [start, end], sibling: [mid, end] });
      end = mid;
    } else {
      steps.push({ side: "left", node: [start, end], sibling: [start, mid] });
      start = mid;
    }
  }
  return steps.reverse();
}

// The hash of every node on the path, leaf to root (for drawing).
export async function pathHashes(index, size, leaf, proof) {
  const steps = inclusionSteps(index, size);
  const out = [];
  let r = leaf;
  for (let i = 0; i < steps.length && i < proof.length; i++) {
    r = steps[i].side === "right" ? await nodeHash(r, proof[i]) : await nodeHash(proof[i], r);
    out.push(r);
  }
  return out;
}

function hexBytes(text) {
  const h = String(text).replace(/^sha256:/, "");
  if (!/^([0-9a-f]{2})*$/.test(h)) throw new Error("not sha256:<hex>");
  return Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
}

// Whether an anchor commits to a checkpoint digest: directly (its root is the
// digest) or, for an aggregated anchor (collaborative anchoring), through its
// aggregation path: an RFC 6962 inclusion of leaf SHA-256(0x00 || digest).
export async function anchorCovers(anchor, digest) {
  const root = hexBytes(anchor.root);
  const ag = anchor.aggregation;
  if (!ag) return equal(root, digest);
  const computed = await rootFromInclusion(ag.leafIndex, ag.treeSize, await leafHash(digest), ag.path.map(hexBytes));
  return equal(computed, root);
}

// --- signed notes, checkpoints, vkeys ---------------------------------------------------

export function parseNote(text) {
  if (typeof text !== "string") throw new Error("a note is text");
  const split = text.lastIndexOf("\n\n");
  if (split < 0) throw new Error("a note is its text, a blank line and signature lines");
  const body = text.slice(0, split + 1);
  const block = text.slice(split + 2);
  if (!block.endsWith("\n")) throw new Error("a note ends with a newline");
  const sigs = block.slice(0, -1).split("\n").map((line) => {
    if (!line.startsWith("\u2014 ")) throw new Error("a signature line starts with an em dash");
    const rest = line.slice(2);
    const sp = rest.indexOf(" ");
    if (sp <= 0) throw new Error("a signature line is '— <name> <base64>'");
    const blob = b64decode(rest.slice(sp + 1));
    if (blob.length < 5) throw new Error("a signature is a key ID and at least one byte");
    const keyId = new DataView(blob.buffer, blob.byteOffset).getUint32(0);
    return { name: rest.slice(0, sp), keyId, sig: blob.slice(4) };
  });
  return { body, sigs };
}

export function parseCheckpoint(body) {
  const lines = body.slice(0, -1).split("\n");
  if (!body.endsWith("\n") || lines.length < 3) throw new Error("a checkpoint has origin, size and root lines");
  if (!/^(0|[1-9][0-9]{0,19})$/.test(lines[1])) throw new Error("the tree size is not a decimal number");
  const root = b64decode(lines[2]);
  if (root.length !== 32) throw new Error("the root hash is not 32 bytes");
  return { origin: lines[0], size: BigInt(lines[1]), root };
}

export async function keyId(name, type, key) {
  const d = await sha256(concat(enc.encode(name), new Uint8Array([0x0a, type]), key));
  return new DataView(d.buffer).getUint32(0);
}

export async function parseVkey(vkey) {
  const text = String(vkey).trim();
  const i = text.indexOf("+");
  const j = i < 0 ? -1 : text.indexOf("+", i + 1);
  if (i <= 0 || j < 0) throw new Error("a vkey is <name>+<key ID>+<key>");
  const name = text.slice(0, i);
  const idHex = text.slice(i + 1, j);
  if (!/^[0-9a-fA-F]{8}$/.test(idHex)) throw new Error("a vkey's key ID is 8 hex digits");
  const raw = b64decode(text.slice(j + 1));
  if (raw.length !== 33) throw new Error("a vkey holds a type byte and a 32-byte Ed25519 key");
  const type = raw[0];
  const key = raw.slice(1);
  const id = await keyId(name, type, key);
  if (id !== parseInt(idHex, 16)) throw new Error("the vkey's key ID does not match its name and key");
  return { name, type, key, keyId: id, vkey: text };
}

export async function ed25519Verify(key, sig, message) {
  if (!(globalThis.crypto && globalThis.crypto.subtle)) {
    throw new Unsupported("WebCrypto is not available: the page is not in a secure context (use HTTPS)");
  }
  let k;
  try {
    k = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    throw new Unsupported(`this browser's WebCrypto has no Ed25519 (${e.message})`);
  }
  if (sig.length !== 64) return false;
  return crypto.subtle.verify({ name: "Ed25519" }, k, sig, message);
}

export function cosignatureMessage(body, timestamp) {
  return concat(enc.encode(`cosignature/v1\ntime ${timestamp}\n`), enc.encode(body));
}

// --- canonical JSON (RFC 8785) and did:key ---------------------------------------------

// RFC 8785 serialises numbers and strings exactly as ECMAScript's JSON.stringify
// does and sorts keys by UTF-16 code units, as Array.prototype.sort does.
export function jcs(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") {
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error("JSON numbers are finite");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
  }
  throw new Error(`not a JSON value: ${typeof value}`);
}

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

export function didKeyToRaw(did) {
  if (typeof did !== "string" || !did.startsWith("did:key:z") || did.length > 100) {
    throw new Error("not a did:key");
  }
  const text = did.slice(9);
  let n = 0n;
  for (const c of text) {
    const d = B58.indexOf(c);
    if (d < 0) throw new Error("not base58btc");
    n = n * 58n + BigInt(d);
  }
  const bytes = [];
  while (n > 0n) {
    bytes.unshift(Number(n & 0xffn));
    n >>= 8n;
  }
  for (const c of text) {
    if (c !== "1") break;
    bytes.unshift(0);
  }
  if (bytes.length !== 34 || bytes[0] !== 0xed || bytes[1] !== 0x01) {
    throw new Error("not an Ed25519 did:key (multicodec 0xed01)");
  }
  return new Uint8Array(bytes.slice(2));
}

// --- the checks -----------------------------------------------------------------------

const short = (b64) => (b64.length > 20 ? b64.slice(0, 20) + "…" : b64);

async function check(out, id, title, fn) {
  const item = { id, title, status: "fail", detail: "" };
  out.push(item);
  try {
    const [status, detail] = await fn();
    item.status = status;
    item.detail = detail;
  } catch (e) {
    item.status = e instanceof Unsupported ? "skip" : "fail";
    item.detail = e.message || String(e);
  }
  return item;
}

async function logSignature(noteText, vkeyText) {
  if (!vkeyText) return ["skip", "No log key given: the log signature was not checked."];
  const vkey = await parseVkey(vkeyText);
  if (vkey.type !== 0x01) throw new Error(`the log key has type 0x${vkey.type.toString(16)}, not 0x01`);
  const note = parseNote(noteText);
  const cp = parseCheckpoint(note.body);
  if (vkey.name !== cp.origin) {
    return ["fail", `The key is named ${vkey.name}; the checkpoint's origin is ${cp.origin}.`];
  }
  const sig = note.sigs.find((s) => s.name === vkey.name && s.keyId === vkey.keyId);
  if (!sig) return ["fail", `The checkpoint carries no signature by ${vkey.vkey}.`];
  const ok = await ed25519Verify(vkey.key, sig.sig, enc.encode(note.body));
  return ok
    ? ["pass", `Ed25519 signature by ${vkey.name} (key ID ${vkey.keyId.toString(16).padStart(8, "0")}) over the checkpoint text.`]
    : ["fail", `The signature by ${vkey.name} does not verify: the checkpoint was altered or not signed by this key.`];
}

// Runs every check it can on a record page's material ``m`` (the
// /v1/explorer/namespaces/{ns}/records/{index} JSON) with the visitor's keys
// ``keys = {log: vkey, cosigners: [vkey]}``.  Returns [{id, title, status:
// pass|fail|skip, detail}] and the hashes on the inclusion path (for drawing).
export async function verifyRecord(m, keys) {
  const out = [];
  const entry = b64decode(m.entry);
  const leaf = await leafHash(entry);
  const index = m.index;
  let path = null;
  await check(out, "leaf", "Leaf hash", async () => {
    const mine = b64encode(leaf);
    if (mine !== m.leafHash) return ["fail", `SHA-256(0x00 || entry) is ${mine}; the server said ${m.leafHash}.`];
    return ["pass", `SHA-256(0x00 || entry) = ${mine}.`];
  });
  if (m.kind === "record") {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(entry);
    const envelope = JSON.parse(text);
    await check(out, "canonical", "Canonical form", async () =>
      jcs(envelope) === text
        ? ["pass", "The entry is the RFC 8785 canonical JSON of the envelope."]
        : ["fail", "The entry is not in RFC 8785 canonical form."],
    );
    const unsigned = Object.fromEntries(Object.entries(envelope).filter(([k]) => k !== "signatures"));
    const signingInput = enc.encode(jcs(unsigned));
    await check(out, "event-hash", "eventHash", async () => {
      const mine = "sha256:" + hex(await sha256(signingInput));
      return mine === m.eventHash
        ? ["pass", `SHA-256 of the canonical envelope without signatures is ${mine}.`]
        : ["fail", `The envelope hashes to ${mine}; the server said ${m.eventHash}.`];
    });
    await check(out, "record-signatures", "Record signatures", async () => {
      const sigs = Array.isArray(envelope.signatures) ? envelope.signatures : [];
      if (!sigs.length) return ["fail", "The record carries no signature."];
      const bad = [];
      for (const s of sigs) {
        const ok = await ed25519Verify(didKeyToRaw(s.kid), b64urlDecode(s.sig), signingInput);
        if (!ok) bad.push(`${s.role} ${s.kid}`);
      }
      const roles = sigs.map((s) => s.role).join(", ");
      return bad.length
        ? ["fail", `${bad.length} of ${sigs.length} signatures do not verify: ${bad.join("; ")}.`]
        : ["pass", `All ${sigs.length} signatures (${roles}) verify with their did:key. Whether these keys are on the namespace's allowlist is the node's admission policy, not checked here.`];
    });
  }
  const receipt = m.receipt;
  let checkpoint = null;
  await check(out, "inclusion", "Inclusion proof", async () => {
    const note = parseNote(receipt.checkpoint);
    checkpoint = parseCheckpoint(note.body);
    if (checkpoint.size !== BigInt(receipt.treeSize)) {
      return ["fail", `The proof is for a tree of ${receipt.treeSize}; the checkpoint is of ${checkpoint.size}.`];
    }
    const proof = receipt.proof.map(b64decode);
    path = await pathHashes(index, receipt.treeSize, leaf, proof);
    const root = await rootFromInclusion(index, receipt.treeSize, leaf, proof);
    return equal(root, checkpoint.root)
      ? ["pass", `${proof.length} proof hashes lead from the leaf to the checkpoint's root ${b64encode(root)} (tree size ${checkpoint.size}).`]
      : ["fail", `The proof leads to ${b64encode(root)}, not to the checkpoint's root ${b64encode(checkpoint.root)}.`];
  });
  await check(out, "log-signature", "Checkpoint signature (log key)", () => logSignature(receipt.checkpoint, keys.log));
  let note = null;
  try {
    note = parseNote(receipt.checkpoint);
  } catch {
    note = null;
  }
  const seen = new Set();
  if (keys.log) {
    try {
      const v = await parseVkey(keys.log);
      seen.add(`${v.name}+${v.keyId}`);
    } catch {
      // reported by the log-signature check
    }
  }
  for (const [i, text] of keys.cosigners.entries()) {
    await check(out, `cosignature-${i}`, `Cosignature ${i + 1}`, async () => {
      const v = await parseVkey(text);
      if (v.type !== 0x04) throw new Error(`${v.name} is not a cosigner key (type 0x04)`);
      seen.add(`${v.name}+${v.keyId}`);
      if (!note) throw new Error("the checkpoint note does not parse");
      const sig = note.sigs.find((s) => s.name === v.name && s.keyId === v.keyId);
      if (!sig) return ["skip", `This checkpoint carries no cosignature by ${v.name} (not cosigned yet, or not by this key).`];
      if (sig.sig.length !== 72) return ["fail", `The cosignature by ${v.name} is not 72 bytes.`];
      const time = new DataView(sig.sig.buffer, sig.sig.byteOffset).getBigUint64(0);
      const ok = await ed25519Verify(v.key, sig.sig.slice(8), cosignatureMessage(note.body, time));
      const when = new Date(Number(time) * 1000).toISOString().replace(".000", "");
      return ok
        ? ["pass", `${v.name} cosigned this checkpoint at ${when} (cosignature/v1).`]
        : ["fail", `The cosignature by ${v.name} does not verify.`];
    });
  }
  if (note) {
    const unknown = note.sigs.filter((s) => !seen.has(`${s.name}+${s.keyId}`));
    if (unknown.length) {
      await check(out, "unknown-signatures", "Other signatures", async () => [
        "skip",
        `Not checked, no key given: ${unknown.map((s) => s.name).join(", ")}.`,
      ]);
    }
  }
  const anchored = m.anchored;
  if (!anchored) {
    await check(out, "anchored", "Anchored checkpoint", async () => ["skip", "No anchored checkpoint covers this record yet."]);
  } else {
    await check(out, "anchored-inclusion", "Inclusion under the anchored checkpoint", async () => {
      const cp = parseCheckpoint(parseNote(anchored.checkpoint).body);
      if (cp.size !== BigInt(anchored.treeSize)) throw new Error("the anchored proof and checkpoint sizes differ");
      const root = await rootFromInclusion(index, anchored.treeSize, leaf, anchored.proof.map(b64decode));
      return equal(root, cp.root)
        ? ["pass", `The record is in the anchored checkpoint of size ${anchored.treeSize}.`]
        : ["fail", "The anchored inclusion proof does not lead to the anchored checkpoint's root."];
    });
    await check(out, "anchored-signature", "Anchored checkpoint signature (log key)", () =>
      logSignature(anchored.checkpoint, keys.log),
    );
    await check(out, "anchor-digest", "Anchored digest", async () => {
      const body = parseNote(anchored.checkpoint).body;
      const raw = await sha256(enc.encode(body));
      const digest = "sha256:" + hex(raw);
      if (digest !== anchored.root) return ["fail", `SHA-256 of the checkpoint text is ${digest}, not ${anchored.root}.`];
      let wrong = 0;
      for (const a of anchored.anchors) if (!(await anchorCovers(a, raw))) wrong++;
      const aggregated = anchored.anchors.filter((a) => a.aggregation).length;
      if (wrong) return ["fail", `${wrong} of ${anchored.anchors.length} anchors do not commit to this checkpoint's digest ${digest}.`];
      return ["pass", `All ${anchored.anchors.length} anchors commit to ${digest}, the SHA-256 of the anchored checkpoint's text${aggregated ? ` (${aggregated} through an aggregation path)` : ""}.`];
    });
    await check(out, "anchor-evidence", "Anchor evidence", async () => [
      "skip",
      "Not checked in the browser: the rails' own evidence (an RFC 3161 token's signature and certificate chain, a chain transaction and its confirmations). Check it with `remembrancer anchor verify`; the statuses shown are this node's.",
    ]);
  }
  const fed = m.keys && m.keys.federation;
  for (const [i, r] of (m.federation_receipts || []).entries()) {
    await check(out, `federation-receipt-${i}`, `Federation receipt ${i + 1} (${r.anchor && r.anchor.target})`, async () => {
      if (!fed) throw new Unsupported("no federation registry to check it against");
      const body = parseNote(r.evidence.checkpoint).body;
      const digest = await sha256(enc.encode(body));
      const anchor = r.evidence.anchor;
      if (anchor.root !== r.anchor.batch_root) return ["fail", "The receipt's anchor summary and evidence disagree."];
      if (!(await anchorCovers(anchor, digest))) return ["fail", "The anchor does not commit to the receipt's checkpoint."];
      const statement = Object.fromEntries(
        Object.entries(r).filter(([k]) => !["signatures", "quorum_met", "finalized_at"].includes(k)),
      );
      const peers = new Map(fed.peers.map((p) => [p.did, p]));
      const counted = new Set();
      const bad = [];
      for (const s of r.signatures) {
        const peer = peers.get(s.node);
        if (!peer || peer.status !== "active") continue;
        const key = didKeyToRaw(peer.pubkey);
        const input = enc.encode(jcs({ ...statement, countersigner: { node: s.node, role: s.role, timestamp: s.timestamp } }));
        if (await ed25519Verify(key, b64urlDecode(s.sig), input)) counted.add(hex(key));
        else bad.push(s.node);
      }
      if (bad.length) return ["fail", `${bad.length} countersignatures do not verify.`];
      return counted.size >= fed.quorum
        ? ["pass", `${counted.size} active peers countersigned (quorum ${fed.quorum}); the anchor commits to the receipt's checkpoint.`]
        : ["fail", `${counted.size} valid countersignatures from active peers; the quorum is ${fed.quorum}.`];
    });
  }
  await check(out, "consistency", "Latest checkpoint extends the anchored one", async () => [
    "skip",
    "Not checked in the browser (a consistency proof); `remembrancer proof consistency` does it.",
  ]);
  return { checks: out, path, leaf };
}
