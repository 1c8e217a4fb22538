// Test helpers: a small log written from the specs alone (a naive RFC 6962
// tree, C2SP notes, checkpoints, cosignatures and tlog-proofs, signed with
// WebCrypto), sharing no code with ../verify.js, so the verifier is checked
// against an independent writer.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const VECTORS = fileURLToPath(new URL("../../../tests/vectors/", import.meta.url));
export const BIN = fileURLToPath(new URL("../bin/remembrancer-verify.js", import.meta.url));

const enc = new TextEncoder();
export const sha = (...parts) => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
export const b64 = (bytes) => Buffer.from(bytes).toString("base64");
export const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
export const utf8 = (text) => enc.encode(text);

// --- a naive RFC 6962 tree (section 2.1) -----------------------------------------------

export const leafHashOf = (entry) => sha(Uint8Array.of(0), entry);
const node = (l, r) => sha(Uint8Array.of(1), l, r);
const split = (n) => {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
};

export function mth(leaves) {
  if (leaves.length === 0) return sha(new Uint8Array(0));
  if (leaves.length === 1) return leaves[0];
  const k = split(leaves.length);
  return node(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

// PATH(m, D[n]) of RFC 6962 section 2.1.1.
export function path(m, leaves) {
  if (leaves.length <= 1) return [];
  const k = split(leaves.length);
  return m < k
    ? [...path(m, leaves.slice(0, k)), mth(leaves.slice(k))]
    : [...path(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

// PROOF(m, D[n]) of RFC 6962 section 2.1.2.
export function consistency(m, leaves) {
  const sub = (m, d, b) => {
    if (m === d.length) return b ? [] : [mth(d)];
    const k = split(d.length);
    return m <= k
      ? [...sub(m, d.slice(0, k), b), mth(d.slice(k))]
      : [...sub(m - k, d.slice(k), false), mth(d.slice(0, k))];
  };
  return m === leaves.length ? [] : sub(m, leaves, true);
}

// --- keys ----------------------------------------------------------------------------

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
function base58(bytes) {
  let n = BigInt("0x" + (Buffer.from(bytes).toString("hex") || "0"));
  let out = "";
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b) break;
    out = "1" + out;
  }
  return out;
}

export async function newKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const pub = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return {
    pub,
    did: "did:key:z" + base58(Uint8Array.of(0xed, 0x01, ...pub)),
    sign: async (msg) => new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, pair.privateKey, msg)),
  };
}

const keyIdOf = (name, type, pub) => sha(utf8(name), Uint8Array.of(0x0a, type), pub).slice(0, 4);
export const vkeyOf = (name, type, pub) =>
  `${name}+${Buffer.from(keyIdOf(name, type, pub)).toString("hex")}+${b64(Uint8Array.of(type, ...pub))}`;

// --- notes, checkpoints, cosignatures, tlog-proofs ------------------------------------

export async function noteSignature(name, key, text) {
  const sig = await key.sign(utf8(text));
  return `\u2014 ${name} ${b64(Uint8Array.of(...keyIdOf(name, 0x01, key.pub), ...sig))}\n`;
}

export async function cosignatureLine(name, key, text, time) {
  const sig = await key.sign(utf8(`cosignature/v1\ntime ${time}\n${text}`));
  const t = new Uint8Array(8);
  new DataView(t.buffer).setBigUint64(0, BigInt(time));
  return `\u2014 ${name} ${b64(Uint8Array.of(...keyIdOf(name, 0x04, key.pub), ...t, ...sig))}\n`;
}

export const checkpointBody = (origin, leaves) => `${origin}\n${leaves.length}\n${b64(mth(leaves))}\n`;

export function tlogProof(index, leaves, note) {
  const hashes = path(index, leaves).map(b64);
  return `c2sp.org/tlog-proof@v1\nindex ${index}\n${hashes.map((h) => h + "\n").join("")}\n${note}`;
}

// --- records --------------------------------------------------------------------------

// Canonical JSON for ASCII keys and integers (enough for these records).
export const canon = (v) =>
  Array.isArray(v)
    ? `[${v.map(canon).join(",")}]`
    : v && typeof v === "object"
      ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(",")}}`
      : JSON.stringify(v);

export async function makeRecord(actor, witnesses, i, namespace = "dao:test") {
  const env = {
    "vm:version": "1.0",
    "event:id": `evt-${i}`,
    "event:type": "ledger.append",
    schema: "ledger.append@1.0.0",
    namespace,
    actor: actor.did,
    timestamp: 1764100000 + i,
    nonce: `nonce-${String(i).padStart(4, "0")}`,
    prev: null,
    payload: { amount: i, memo: `entry ${i}` },
  };
  const input = utf8(canon(env));
  const sigs = [{ alg: "Ed25519", kid: actor.did, role: "actor", sig: b64url(await actor.sign(input)) }];
  for (const w of witnesses) sigs.push({ alg: "Ed25519", kid: w.did, role: "witness", sig: b64url(await w.sign(input)) });
  const record = { ...env, signatures: sigs };
  const leaf = utf8(canon(record));
  return { record, leaf, eventHash: "sha256:" + Buffer.from(sha(input)).toString("hex") };
}

// A log of `n` records under origin `origin`, its checkpoint cosigned by two witnesses.
export async function makeLog(n = 7, origin = "log.example/dao:test") {
  const logKey = await newKey();
  const actor = await newKey();
  const w1 = await newKey();
  const w2 = await newKey();
  const records = [];
  for (let i = 0; i < n; i++) records.push(await makeRecord(actor, [w1], i));
  const leaves = records.map((r) => leafHashOf(r.leaf));
  const checkpointAt = async (size, cosigners = [["w1.example", w1], ["w2.example", w2]]) => {
    const body = checkpointBody(origin, leaves.slice(0, size));
    let note = `${body}\n${await noteSignature(origin, logKey, body)}`;
    for (const [name, key] of cosigners) note += await cosignatureLine(name, key, body, 1764100100);
    return { body, note };
  };
  return {
    origin,
    records,
    leaves,
    logKey,
    actor,
    w1,
    w2,
    vkey: vkeyOf(origin, 0x01, logKey.pub),
    w1vkey: vkeyOf("w1.example", 0x04, w1.pub),
    w2vkey: vkeyOf("w2.example", 0x04, w2.pub),
    checkpointAt,
  };
}

// --- the command line ------------------------------------------------------------------

export const tmp = () => mkdtempSync(join(tmpdir(), "remembrancer-verify-"));

export function write(dir, name, data) {
  const p = join(dir, name);
  writeFileSync(p, data);
  return p;
}

// Runs the CLI; returns {status, stdout, stderr, code} (code: the error code printed).
export function cli(...args) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000 });
  const m = /^error: ([a-z0-9_]+):/m.exec(r.stderr);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, code: m ? m[1] : null };
}

// Writes a log's files into `dir` for the Python side to check (the pytest
// suite runs this): a record, its tlog-proof and JSON receipt, the cosigned
// checkpoint, an older checkpoint with a consistency proof to it, a trust
// policy, and manifest.json naming the keys.
export async function writeLog(dir, n = 13) {
  const log = await makeLog(n, "js.example/dao:test");
  const { note } = await log.checkpointAt(n);
  const old = await log.checkpointAt(5);
  const index = 7;
  const r = log.records[index];
  const proof = tlogProof(index, log.leaves, note);
  const other = await newKey();
  const files = {
    record: write(dir, "record.json", r.leaf),
    proof: write(dir, "record.tlog-proof", proof),
    receipt: write(dir, "receipt.json", JSON.stringify({
      eventHash: r.eventHash,
      index,
      proof: proof.split("\n\n")[0].split("\n").slice(2),
      checkpoint: note,
    })),
    checkpoint: write(dir, "checkpoint", note),
    old_checkpoint: write(dir, "checkpoint.old", old.note),
    consistency: write(dir, "consistency.json", JSON.stringify({
      namespace: "dao:test",
      old: 5,
      new: n,
      proof: consistency(5, log.leaves).map(b64),
      checkpoints: { 5: old.note, [n]: note },
    })),
  };
  const manifest = {
    files,
    vkey: log.vkey,
    witness_vkeys: [log.w1vkey, log.w2vkey],
    other_vkey: vkeyOf(log.origin, 0x01, other.pub),
    foreign_vkey: vkeyOf("elsewhere.example/dao:test", 0x01, other.pub),
  };
  write(dir, "manifest.json", JSON.stringify(manifest, null, 2));
  return manifest;
}
