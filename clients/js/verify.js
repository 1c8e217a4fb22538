// Remembrancer verifier: checks records, c2sp.org/tlog-proof files, checkpoints,
// cosignatures and consistency proofs offline, in a browser or in Node 20+.
//
// One ES module, no dependencies, no build step.  It is the npm package
// `remembrancer-verify` (clients/js/ in the repository, with a command-line
// front end in bin/) and the very file every node's explorer serves at
// /explorer/static/verify.js (the Python package ships it; nothing copies it).
//
// Nothing an input says about itself is trusted: verdicts come from the bytes
// and the verifier's own keys.  Hashes are SHA-256 (WebCrypto, or the small
// implementation below where WebCrypto is unavailable), signatures Ed25519
// through WebCrypto, with libsodium's extra rules (see ed25519Verify) so that
// this verifier and the Python one (PyNaCl) accept exactly the same signatures.
// Formats, byte for byte, each parser as strict as its Python counterpart in
// src/remembrancer/core/ (named in brackets), with the same error codes:
//   - RFC 6962 / 9162 Merkle trees [rfc6962]: leaf = SHA-256(0x00 || entry),
//     node = SHA-256(0x01 || left || right); inclusion and consistency proofs
//     checked with the RFC 9162 sections 2.1.3.2 and 2.1.4.2 algorithms;
//   - C2SP signed notes [note]: text, a blank line, signature lines
//     "— <name> <base64(key ID || sig)>" over the text; key ID =
//     SHA-256(name || 0x0A || type || key)[:4]; vkeys <name>+<hex ID>+<base64>;
//   - C2SP tlog-checkpoint [checkpoint]: origin, decimal size, base64 root;
//   - C2SP tlog-cosignature [cosignature]: type 0x04, 8-byte big-endian time
//     then the signature over "cosignature/v1\ntime <t>\n" + checkpoint text;
//   - C2SP tlog-proof [tlogproof]: header, optional extra, index, hashes, a
//     blank line, the checkpoint note;
//   - records [record, jcs]: the leaf is the RFC 8785 canonical JSON of the
//     envelope; eventHash = SHA-256(JCS(envelope without "signatures")); each
//     signature by a did:key over those bytes;
//   - federation receipts (explorer only): each countersignature over
//     JCS(statement plus {"countersigner": {node, role, timestamp}}).
//
// Errors: FormatError (the input is malformed: the command line exits 2) and
// VerificationError (well-formed, but a signature, proof or commitment does not
// verify: exit 1), each with a stable `code`; Unsupported when this platform
// cannot check Ed25519 at all.

const enc = new TextEncoder();

// --- limits (the Python side's) ------------------------------------------------------

export const MAX_NOTE_BYTES = 1 << 20;
export const MAX_SIGNATURES = 100;
export const MAX_VKEY_CHARS = 8192;
export const MAX_CHECKPOINT_BODY_BYTES = 64 * 1024;
export const MAX_TREE_SIZE = (1n << 64n) - 1n;
export const MAX_PROOF_HASHES = 64;
export const MAX_EXTRA_BYTES = 64 * 1024;
export const MAX_TLOG_PROOF_BYTES = MAX_NOTE_BYTES + 128 * 1024;
export const MAX_RECORD_BYTES = 65535;
export const MAX_RECORD_INPUT_BYTES = 256 * 1024;
export const MAX_RECORD_SIGNATURES = 64;
export const MAX_JSON_DEPTH = 64;
export const MAX_JSON_BYTES = 1 << 20;
export const SIG_TYPE_ED25519 = 0x01;
export const SIG_TYPE_COSIGNATURE_V1 = 0x04;
export const TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1";

// --- errors ------------------------------------------------------------------------

export class VerifyError extends Error {
  constructor(message, { code, details } = {}) {
    super(message);
    this.code = code || this.constructor.defaultCode;
    this.details = details || {};
  }

  get name() {
    return this.constructor.kind;
  }

  // One readable line, as the Python command line prints it.
  explain() {
    return `${this.code}: ${this.message}`;
  }
}

// The input is malformed: wrong grammar, type, size or encoding.
export class FormatError extends VerifyError {
  static kind = "FormatError";
  static defaultCode = "malformed";
}

// The input is well-formed but a signature, proof or commitment does not verify.
export class VerificationError extends VerifyError {
  static kind = "VerificationError";
  static defaultCode = "verification_failed";
}

// Two views of one log that cannot both be true (a bad consistency proof or a fork).
export class InconsistencyError extends VerificationError {
  static kind = "InconsistencyError";
  static defaultCode = "inconsistent";
}

// This platform cannot check something (no WebCrypto, no Ed25519).
export class Unsupported extends Error {}

const malformed = (code, message, details) => new FormatError(message, { code, details });
const invalid = (code, message, details) => new VerificationError(message, { code, details });

// --- bytes and text ------------------------------------------------------------------

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

export function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function atobBytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// Padded standard base64 (RFC 4648 section 4); non-zero padding bits are
// tolerated, as Python's base64.b64decode(validate=True) does.
export function b64decode(text) {
  if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw malformed("base64_invalid", "not standard base64");
  }
  try {
    return atobBytes(text);
  } catch {
    throw malformed("base64_invalid", "not standard base64");
  }
}

// Canonical padded standard base64 only: what parse and format round-trip
// byte for byte [note.decode_base64].
export function decodeBase64(text, what = "the value", code = "base64_invalid") {
  let raw;
  try {
    raw = b64decode(text);
  } catch {
    throw malformed(code, `${what} is not valid base64`);
  }
  if (b64encode(raw) !== text) throw malformed(code, `${what} is not canonical base64`);
  return raw;
}

export function b64urlEncode(bytes) {
  return b64encode(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Canonical unpadded base64url (RFC 4648 section 5), the encoding of record
// signatures [record.b64url_decode].
export function b64urlDecode(text, what = "the value", code = "base64url_invalid") {
  if (typeof text !== "string" || text.length % 4 === 1 || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw malformed(code, `${what} is not unpadded base64url`);
  }
  let s = text.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  const raw = atobBytes(s);
  if (b64urlEncode(raw) !== text) throw malformed(code, `${what} is not canonical base64url`);
  return raw;
}

// True unless the string holds a lone surrogate (which has no UTF-8 form).
export function isWellFormed(text) {
  return !/\p{Cs}/u.test(text);
}

function asBytes(input, what) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  if (typeof input === "string") {
    if (!isWellFormed(input)) throw malformed("not_utf8", `${what} is not valid Unicode`);
    return enc.encode(input);
  }
  throw malformed("malformed", `${what} must be bytes or text`);
}

// Strict UTF-8 (no replacement characters, a leading BOM kept as U+FEFF).
function utf8Decode(bytes, code, what) {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw malformed(code, `${what} is not valid UTF-8`);
  }
}

const codePoints = (text) => [...text].length;

// Whole numbers as BigInt: a BigInt, a safe integer Number, an UnsafeInteger
// (from parseJson) or a decimal string.
function big(value, what) {
  if (typeof value === "bigint") return value;
  if (value instanceof UnsafeInteger) return BigInt(value.text);
  if (typeof value === "number" && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === "string" && /^-?(0|[1-9][0-9]*)$/.test(value)) return BigInt(value);
  throw malformed("number_invalid", `${what} is not a whole number`);
}

// A BigInt as a JSON-friendly value: a Number when exact, else its decimal text.
export function jsonNumber(n) {
  return n <= BigInt(Number.MAX_SAFE_INTEGER) && n >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : String(n);
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

// FIPS 180-4 SHA-256, for pages served without WebCrypto (plain http to a
// remote host) and for key IDs, which parsers compute synchronously.
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

// --- Merkle trees (RFC 6962 / RFC 9162) [rfc6962] ---------------------------------------

export const leafHash = (entry) => sha256(concat(new Uint8Array([0]), entry));
export const nodeHash = (left, right) => sha256(concat(new Uint8Array([1]), left, right));

const bitLength = (n) => (n === 0n ? 0 : n.toString(2).length);
const popCount = (n) => n.toString(2).split("1").length - 1;
const show = (h) => (h.length === 32 ? "sha256:" + hex(h) : hex(h));

function inclusionLength(index, size) {
  const inner = bitLength(index ^ (size - 1n));
  return inner + popCount(index >> BigInt(inner));
}

// The root an inclusion proof leads to: RFC 9162 section 2.1.3.2 up to its final
// comparison.  Sizes and indices are BigInt inside (bit operations on Numbers
// are 32-bit).  VerificationError codes: index_out_of_range, leaf_hash_invalid,
// proof_wrong_length [rfc6962.root_from_inclusion_proof].
export async function rootFromInclusion(index, size, leaf, proof) {
  const i = big(index, "the leaf index");
  const n = big(size, "the tree size");
  if (!(i >= 0n && i < n && n <= MAX_TREE_SIZE)) {
    throw invalid("index_out_of_range", `leaf index ${i} is outside a tree of size ${n}`, {
      index: jsonNumber(i),
      size: jsonNumber(n),
    });
  }
  if (leaf.length !== 32) throw invalid("leaf_hash_invalid", `leaf hash is ${leaf.length} bytes, not 32`);
  const want = inclusionLength(i, n);
  if (proof.length !== want) {
    throw invalid(
      "proof_wrong_length",
      `inclusion proof for leaf ${i} of ${n} has ${proof.length} hashes, needs ${want}`,
      { index: jsonNumber(i), size: jsonNumber(n), length: proof.length, expected: want },
    );
  }
  let fn = i;
  let sn = n - 1n;
  let r = leaf;
  for (const p of proof) {
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return r;
}

// Checks that `proof` shows `leaf` (a leaf hash) at `index` in the tree
// (size, root); adds inclusion_proof_invalid and inclusion_root_mismatch
// [rfc6962.verify_inclusion].
export async function verifyInclusion(index, size, leaf, proof, root) {
  const computed = await rootFromInclusion(index, size, leaf, proof);
  if (equal(computed, root)) return;
  const details = {
    index: jsonNumber(big(index, "the leaf index")),
    size: jsonNumber(big(size, "the tree size")),
    leaf_hash: show(leaf),
    root: show(root),
    computed_root: show(computed),
    proof: proof.map(show),
  };
  const bad = proof.findIndex((p) => p.length !== 32);
  if (bad >= 0) throw invalid("inclusion_proof_invalid", `inclusion proof element ${bad} is not a 32-byte hash`, details);
  throw invalid(
    "inclusion_root_mismatch",
    `inclusion proof for leaf ${details.index} does not lead to the root of tree size ${details.size}`,
    details,
  );
}

function consistencyArgs(size1, size2, proof) {
  const details = { size1: jsonNumber(size1), size2: jsonNumber(size2) };
  if (size1 < 0n || size2 < 0n || size1 > MAX_TREE_SIZE || size2 > MAX_TREE_SIZE) {
    throw invalid("size_out_of_range", `tree sizes ${size1}, ${size2} are outside 0..2**64-1`, details);
  }
  if (size2 < size1) {
    throw invalid("consistency_sizes_reversed", `tree size ${size2} is smaller than the earlier size ${size1}`, details);
  }
  if (size1 === 0n) {
    throw invalid("consistency_from_empty_tree", "a consistency proof from the empty tree is meaningless", details);
  }
  if (size1 === size2 && proof.length) {
    throw invalid(
      "proof_wrong_length",
      `consistency proof between equal sizes must be empty, has ${proof.length} hashes`,
      { ...details, length: proof.length },
    );
  }
  if (size1 !== size2 && !proof.length) {
    throw invalid("proof_wrong_length", `empty consistency proof from size ${size1} to ${size2}`, {
      ...details,
      length: 0,
    });
  }
}

// RFC 9162 section 2.1.4.2 steps 2-7 for 0 < size1 < size2: [fr, sr].
async function consistencyRoots(size1, size2, root1, proof) {
  const path = [...proof];
  if ((size1 & (size1 - 1n)) === 0n) path.unshift(root1);
  let fn = size1 - 1n;
  let sn = size2 - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  const wrongLength = (what) =>
    invalid("proof_wrong_length", `consistency proof is too ${what}`, {
      size1: jsonNumber(size1),
      size2: jsonNumber(size2),
      length: proof.length,
    });
  for (const c of path.slice(1)) {
    if (sn === 0n) throw wrongLength("long");
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw wrongLength("short");
  return [fr, sr];
}

function consistencyMismatch(size1, size2, root1, root2, proof, which) {
  const details = {
    size1: jsonNumber(size1),
    size2: jsonNumber(size2),
    root1: show(root1),
    root2: show(root2),
    proof: proof.map(show),
  };
  const bad = proof.findIndex((p) => p.length !== 32);
  if (bad >= 0) {
    return new InconsistencyError(`consistency proof element ${bad} is not a 32-byte hash`, {
      code: "consistency_proof_invalid",
      details,
    });
  }
  return new InconsistencyError(
    `consistency proof does not lead to the root of tree size ${which === 1 ? size1 : size2}`,
    { code: `consistency_root${which}_mismatch`, details },
  );
}

// The root of tree size2 that `proof` implies, given (size1, root1)
// [rfc6962.root_from_consistency_proof].
export async function rootFromConsistency(size1, size2, root1, proof) {
  const s1 = big(size1, "the old tree size");
  const s2 = big(size2, "the new tree size");
  consistencyArgs(s1, s2, proof);
  if (s1 === s2) return root1;
  const [fr, sr] = await consistencyRoots(s1, s2, root1, proof);
  if (!equal(fr, root1)) throw consistencyMismatch(s1, s2, root1, new Uint8Array(0), proof, 1);
  return sr;
}

// Checks that tree (size2, root2) extends tree (size1, root1).  VerificationError
// codes size_out_of_range, consistency_sizes_reversed, consistency_from_empty_tree,
// proof_wrong_length; InconsistencyError codes consistency_root_mismatch (equal
// sizes, different roots), consistency_root1_mismatch, consistency_root2_mismatch,
// consistency_proof_invalid [rfc6962.verify_consistency].
export async function verifyConsistency(size1, size2, root1, root2, proof) {
  const s1 = big(size1, "the old tree size");
  const s2 = big(size2, "the new tree size");
  consistencyArgs(s1, s2, proof);
  if (s1 === s2) {
    if (!equal(root1, root2)) {
      throw new InconsistencyError(`two different roots for tree size ${s1}`, {
        code: "consistency_root_mismatch",
        details: { size1: jsonNumber(s1), size2: jsonNumber(s2), root1: show(root1), root2: show(root2), proof: [] },
      });
    }
    return;
  }
  const [fr, sr] = await consistencyRoots(s1, s2, root1, proof);
  if (!equal(fr, root1)) throw consistencyMismatch(s1, s2, root1, root2, proof, 1);
  if (!equal(sr, root2)) throw consistencyMismatch(s1, s2, root1, root2, proof, 2);
}

// The audit path of RFC 6962 section 2.1.1, bottom-up: for proof hash i, the
// side it sits on and the ranges it covers and completes (for drawing).
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
  if (!/^([0-9a-f]{2})*$/.test(h)) throw malformed("hash_malformed", "not sha256:<hex>");
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

// --- Ed25519 --------------------------------------------------------------------------

// PyNaCl (libsodium), which decides acceptance on the Python side, refuses
// signatures that OpenSSL-backed WebCrypto accepts: a public key that is not
// canonically encoded or has small order (with the identity as key, one
// "signature" verifies for every message), a signature whose R has small
// order, and S >= L.  Checked here first, so both sides agree.
const P = (1n << 255n) - 19n;
const L = (1n << 252n) + 27742317777372353535851937790883648493n;
// y-coordinates of the points of order 1, 2, 4 and 8 (the sign bit is ignored),
// and p, p + 1: non-canonical encodings of 0 and 1 (libsodium's blacklist).
const SMALL_ORDER_Y = new Set([
  0n,
  1n,
  P - 1n,
  P,
  P + 1n,
  0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826n,
  0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n,
]);

function littleEndian(bytes, clearTopBit = false) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) {
    n = (n << 8n) | BigInt(i === bytes.length - 1 && clearTopBit ? bytes[i] & 0x7f : bytes[i]);
  }
  return n;
}

// The checks libsodium makes before the curve arithmetic.
export function ed25519Acceptable(key, sig) {
  if (!(key instanceof Uint8Array) || key.length !== 32) return false;
  if (!(sig instanceof Uint8Array) || sig.length !== 64) return false;
  const a = littleEndian(key, true);
  if (a >= P || SMALL_ORDER_Y.has(a)) return false;
  if (SMALL_ORDER_Y.has(littleEndian(sig.subarray(0, 32), true))) return false;
  return littleEndian(sig.subarray(32)) < L;
}

// The encoding of the Ed25519 base point: a key every implementation imports.
const BASE_POINT = Uint8Array.from([0x58, ...new Array(31).fill(0x66)]);
let ed25519Available = null;

async function importEd25519(key) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) {
    throw new Unsupported("WebCrypto is not available: the page is not in a secure context (use HTTPS)");
  }
  try {
    return await subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    if (ed25519Available === null) {
      ed25519Available = await subtle.importKey("raw", BASE_POINT, { name: "Ed25519" }, false, ["verify"]).then(
        () => true,
        () => false,
      );
    }
    if (!ed25519Available) throw new Unsupported(`this platform's WebCrypto has no Ed25519 (${e.message})`);
    return null; // Ed25519 works: this key is not a valid point
  }
}

// True if `sig` is a valid Ed25519 signature of `message` by the 32-byte `key`.
// Never throws for bad keys or signatures; throws Unsupported when the
// platform cannot check Ed25519 at all.
export async function ed25519Verify(key, sig, message) {
  if (!ed25519Acceptable(key, sig)) return false;
  const k = await importEd25519(key);
  if (k === null) return false;
  return crypto.subtle.verify({ name: "Ed25519" }, k, sig, message);
}

// --- signed notes and vkeys [note] ----------------------------------------------------------

// Go's unicode.IsSpace: the Unicode White_Space property.
const WHITE_SPACE = new Set(
  "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000",
);
const NOTE_CONTROL = /[\x00-\x09\x0b-\x1f]/;
const SIG_PREFIX = "\u2014 "; // em dash, space

// A key name: non-empty UTF-8 without white space, '+' or control characters.
export function isValidKeyName(name) {
  if (typeof name !== "string" || !name || name.includes("+") || NOTE_CONTROL.test(name)) return false;
  for (const c of name) if (WHITE_SPACE.has(c)) return false;
  return isWellFormed(name);
}

// The recommended key ID: SHA-256(name || 0x0A || type || key)[:4], a uint32.
export function keyId(name, type, key) {
  const d = sha256Plain(concat(enc.encode(name), new Uint8Array([0x0a, type]), key));
  return new DataView(d.buffer).getUint32(0);
}

const keyIdHex = (id) => id.toString(16).padStart(8, "0");

// One signature line, without its newline [note.NoteSignature.parse_line].
export function parseSignatureLine(line) {
  const code = "note_signature_malformed";
  if (!line.startsWith(SIG_PREFIX)) throw malformed(code, "a signature line starts with an em dash and a space");
  const rest = line.slice(SIG_PREFIX.length);
  const sp = rest.indexOf(" ");
  if (sp < 0 || sp === rest.length - 1) throw malformed(code, "a signature line is '— <name> <base64>'");
  const name = rest.slice(0, sp);
  if (!isValidKeyName(name)) throw malformed(code, "a signature names an invalid key");
  const blob = decodeBase64(rest.slice(sp + 1), "a signature", code);
  if (blob.length < 5) throw malformed(code, "a signature is a 4-byte key ID and at least one byte");
  return { name, keyId: new DataView(blob.buffer).getUint32(0), sig: blob.slice(4) };
}

// A signed note's syntax, no signature checked [note.Note.from_bytes]: bytes
// (or text) -> {text, sigs: [{name, keyId, sig}]}; `body` is `text`.  Codes:
// note_too_large, note_not_utf8, note_control_character, note_malformed,
// note_signature_malformed, note_too_many_signatures.
export function parseNote(input) {
  let text;
  if (typeof input === "string") {
    if (!isWellFormed(input)) throw malformed("note_not_utf8", "a note must be valid UTF-8");
    if (input.length > MAX_NOTE_BYTES || enc.encode(input).length > MAX_NOTE_BYTES) {
      throw malformed("note_too_large", `a note is at most ${MAX_NOTE_BYTES} bytes`);
    }
    text = input;
  } else {
    const bytes = asBytes(input, "a note");
    if (bytes.length > MAX_NOTE_BYTES) throw malformed("note_too_large", `a note is at most ${MAX_NOTE_BYTES} bytes`);
    text = utf8Decode(bytes, "note_not_utf8", "a note");
  }
  if (NOTE_CONTROL.test(text)) {
    throw malformed("note_control_character", "a note must not contain control characters other than newline");
  }
  const split = text.lastIndexOf("\n\n");
  if (split < 0) throw malformed("note_malformed", "a note is its text, a blank line and signature lines");
  const body = text.slice(0, split + 1);
  const block = text.slice(split + 2);
  if (!block.endsWith("\n")) throw malformed("note_malformed", "a note ends with a newline-terminated signature line");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) {
    throw malformed("note_too_many_signatures", `a note carries at most ${MAX_SIGNATURES} signatures`);
  }
  return { text: body, body, sigs: lines.map(parseSignatureLine) };
}

// A vkey <name>+<8 hex key ID>+<base64(type || key)>, split on the first two
// '+' only; the key ID must match [note.VerifierKey.parse].  Codes
// vkey_malformed, vkey_key_id_mismatch.
export function parseVkey(vkey) {
  const code = "vkey_malformed";
  if (typeof vkey !== "string" || vkey.length > 2 * MAX_VKEY_CHARS || codePoints(vkey) > MAX_VKEY_CHARS) {
    throw malformed(code, "not a vkey string");
  }
  const i = vkey.indexOf("+");
  const j = i < 0 ? -1 : vkey.indexOf("+", i + 1);
  if (j < 0) throw malformed(code, "a vkey is <name>+<key ID>+<key>");
  const name = vkey.slice(0, i);
  const idHex = vkey.slice(i + 1, j);
  if (!/^[0-9a-fA-F]{8}$/.test(idHex)) throw malformed(code, "a vkey key ID is 8 hex digits");
  const raw = decodeBase64(vkey.slice(j + 1), "the vkey key", code);
  if (raw.length < 2) throw malformed(code, "a vkey key is a type byte and a key");
  if (!isValidKeyName(name)) {
    throw malformed(code, "a key name must be non-empty UTF-8 without white space, '+' or control characters");
  }
  const type = raw[0];
  const key = raw.slice(1);
  const id = keyId(name, type, key);
  if (id !== parseInt(idHex, 16)) {
    throw malformed("vkey_key_id_mismatch", "the vkey key ID does not match its name and key", {
      expected: keyIdHex(id),
      got: idHex,
    });
  }
  return { name, type, key, keyId: id, vkey };
}

function typedVkey(vkey, type, what) {
  const v = parseVkey(vkey);
  if (v.type !== type) {
    throw malformed(
      "vkey_type_unsupported",
      `vkey type 0x${v.type.toString(16).padStart(2, "0")} is not ${what} (0x0${type})`,
    );
  }
  if (v.key.length !== 32) throw malformed("vkey_malformed", `${what} vkey holds a 32-byte key`);
  return v;
}

// An Ed25519 note key (type 0x01), e.g. a log's [note.parse_vkey].
export const parseLogVkey = (vkey) => typedVkey(vkey, SIG_TYPE_ED25519, "an Ed25519 note key");

// A witness's cosignature/v1 key (type 0x04) [cosignature.parse_cosigner_vkey].
export const parseCosignerVkey = (vkey) => typedVkey(vkey, SIG_TYPE_COSIGNATURE_V1, "a cosignature/v1 key");

export function cosignatureMessage(body, timestamp) {
  return concat(enc.encode(`cosignature/v1\ntime ${timestamp}\n`), enc.encode(body));
}

const MAX_TIMESTAMP = (1n << 63n) - 1n;

// The timestamp of a cosignature/v1 signature (the bytes after the key ID).
export function cosignatureTime(sig) {
  if (sig.length !== 72) throw malformed("cosignature_malformed", "a cosignature/v1 signature is 72 bytes");
  return new DataView(sig.buffer, sig.byteOffset).getBigUint64(0);
}

// Whether `sig` (without its key ID) by `verifier` signs the note `text`:
// Ed25519 over the text (type 0x01) or cosignature/v1 (type 0x04).  Never throws
// for a bad signature.
export async function verifyNoteSignature(verifier, text, sig) {
  if (verifier.type === SIG_TYPE_ED25519) return ed25519Verify(verifier.key, sig, enc.encode(text));
  if (verifier.type !== SIG_TYPE_COSIGNATURE_V1 || sig.length !== 72) return false;
  const time = cosignatureTime(sig);
  if (time > MAX_TIMESTAMP) return false;
  return ed25519Verify(verifier.key, sig.slice(8), cosignatureMessage(text, time));
}

const sigId = (name, id) => `${name}\n${id}`;

// Checks a parsed note's signatures against known verifiers [note.verify_note]:
// unknown keys are ignored, every signature of a known key must verify (else
// note_signature_invalid), at least one must (else note_unverified), and two
// different verifiers with one name and key ID are note_verifier_ambiguous.
// Returns {text, verified, unverified}.
export async function openNote(note, verifiers) {
  const known = new Map();
  for (const v of verifiers) {
    const id = sigId(v.name, v.keyId);
    const same = known.get(id) || [];
    if (!same.some((o) => o.type === v.type && equal(o.key, v.key))) same.push(v);
    known.set(id, same);
  }
  const verified = [];
  const verifiedIds = new Set();
  const unverified = [];
  for (const sig of note.sigs) {
    const id = sigId(sig.name, sig.keyId);
    const candidates = known.get(id);
    if (!candidates) {
      if (!unverified.some((u) => u.name === sig.name && u.keyId === sig.keyId && equal(u.sig, sig.sig))) {
        unverified.push(sig);
      }
      continue;
    }
    const details = { name: sig.name, key_id: keyIdHex(sig.keyId) };
    if (candidates.length > 1) {
      throw invalid("note_verifier_ambiguous", `more than one verifier is configured for ${sig.name}+${details.key_id}`, details);
    }
    if (!(await verifyNoteSignature(candidates[0], note.text, sig.sig))) {
      throw invalid("note_signature_invalid", `the signature of ${sig.name} does not verify`, details);
    }
    if (!verifiedIds.has(id)) {
      verifiedIds.add(id);
      verified.push(sig);
    }
  }
  if (!verified.length) {
    throw invalid("note_unverified", "the note is not signed by any known key", {
      signers: [...new Set(note.sigs.map((s) => s.name))].sort(),
    });
  }
  return { text: note.text, verified, unverified };
}

// --- checkpoints and cosignatures [checkpoint, cosignature] ---------------------------------

const DECIMAL = /^(0|[1-9][0-9]{0,19})$/;
const LINE_CONTROL = /[\x00-\x1f]/;

function parseDecimal(text, what, code, maximum = MAX_TREE_SIZE) {
  if (!DECIMAL.test(text)) throw malformed(code, `${what} must be ASCII decimal without leading zeros`);
  const value = BigInt(text);
  if (value > maximum) throw malformed(code, `${what} is larger than ${maximum}`);
  return value;
}

function checkLine(line, what, code) {
  if (!line || LINE_CONTROL.test(line) || !isWellFormed(line)) {
    throw malformed(code, `${what} must be a non-empty line without control characters`);
  }
}

// A checkpoint body (a note text) -> {origin, size (BigInt), root, extensions}
// [checkpoint.Checkpoint.parse].
export function parseCheckpoint(body) {
  const tooLarge = () => malformed("checkpoint_too_large", `a checkpoint body is at most ${MAX_CHECKPOINT_BODY_BYTES} bytes`);
  if (typeof body !== "string") throw malformed("checkpoint_malformed", "a checkpoint body is text");
  if (body.length > MAX_CHECKPOINT_BODY_BYTES) throw tooLarge();
  if (!isWellFormed(body)) throw malformed("checkpoint_malformed", "a checkpoint body is not valid Unicode");
  if (enc.encode(body).length > MAX_CHECKPOINT_BODY_BYTES) throw tooLarge();
  if (!body.endsWith("\n")) throw malformed("checkpoint_malformed", "a checkpoint body ends with a newline");
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3) {
    throw malformed("checkpoint_malformed", "a checkpoint body has an origin, a tree size and a root hash line");
  }
  const [origin, sizeText, rootText, ...extensions] = lines;
  const size = parseDecimal(sizeText, "the tree size", "checkpoint_size_invalid");
  const root = decodeBase64(rootText, "the root hash", "checkpoint_root_invalid");
  if (root.length !== 32) throw malformed("checkpoint_root_invalid", "the root hash is 32 bytes");
  checkLine(origin, "the origin", "checkpoint_origin_invalid");
  for (const line of extensions) checkLine(line, "an extension line", "checkpoint_extension_invalid");
  return { origin, size, root, extensions };
}

// Parses and verifies a checkpoint note [checkpoint.open_checkpoint]: the log's
// verifier (type 0x01) must be named after the origin and its signature must
// verify; cosignatures by `cosigners` (type 0x04) are verified and returned with
// their times; a known signature that fails rejects the note; others are
// ignored.  VerificationError codes: checkpoint_unsigned,
// checkpoint_signature_invalid, cosignature_invalid, checkpoint_origin_mismatch,
// note_verifier_ambiguous.
export async function openCheckpoint(input, logVerifier, cosigners = []) {
  const note = input && Array.isArray(input.sigs) ? input : parseNote(input);
  const logId = sigId(logVerifier.name, logVerifier.keyId);
  let opened;
  try {
    opened = await openNote(note, [logVerifier, ...cosigners]);
  } catch (e) {
    if (!(e instanceof VerifyError)) throw e;
    if (e.code === "note_unverified") {
      throw invalid("checkpoint_unsigned", `the checkpoint is not signed by ${logVerifier.name}`, e.details);
    }
    if (e.code === "note_signature_invalid") {
      if (e.details.name === logVerifier.name && e.details.key_id === keyIdHex(logVerifier.keyId)) {
        throw invalid("checkpoint_signature_invalid", "the log signature on the checkpoint does not verify", e.details);
      }
      throw invalid("cosignature_invalid", `the cosignature of ${e.details.name} does not verify`, e.details);
    }
    throw e;
  }
  const logSignature = opened.verified.find((s) => sigId(s.name, s.keyId) === logId);
  if (!logSignature) {
    throw invalid("checkpoint_unsigned", `the checkpoint is not signed by ${logVerifier.name}`, {
      name: logVerifier.name,
    });
  }
  const checkpoint = parseCheckpoint(opened.text);
  if (checkpoint.origin !== logVerifier.name) {
    throw invalid("checkpoint_origin_mismatch", "the checkpoint's origin is not the log key's name", {
      origin: checkpoint.origin,
      key_name: logVerifier.name,
    });
  }
  const byId = new Map(cosigners.map((c) => [sigId(c.name, c.keyId), c]));
  const cosignatures = opened.verified
    .filter((s) => sigId(s.name, s.keyId) !== logId && byId.has(sigId(s.name, s.keyId)))
    .map((s) => {
      const c = byId.get(sigId(s.name, s.keyId));
      return { name: c.name, keyId: c.keyId, key: c.key, timestamp: cosignatureTime(s.sig) };
    });
  return { checkpoint, body: opened.text, logSignature, cosignatures, unverified: opened.unverified };
}

// One cosignature per distinct witness key, the log's own key never counting
// (the cosignature/v1 message does not commit to the cosigner's name).
function distinctCosigners(cosignatures, logKey) {
  const counted = new Map();
  for (const c of cosignatures) {
    if (logKey && equal(c.key, logKey)) continue;
    if (!counted.has(hex(c.key))) counted.set(hex(c.key), c);
  }
  return [...counted.values()];
}

function checkMinimum(minCosigners) {
  if (!Number.isSafeInteger(minCosigners) || minCosigners < 0) {
    throw malformed("min_cosigners_invalid", "min_cosigners is a non-negative int");
  }
}

function quorum(counted, minCosigners) {
  if (counted.length < minCosigners) {
    throw invalid(
      "cosigner_quorum_not_met",
      `the checkpoint has ${counted.length} valid cosignatures from distinct witnesses, the policy needs ${minCosigners}`,
      { required: minCosigners, verified: counted.length, cosigners: counted.map((c) => c.name) },
    );
  }
}

// --- tlog-proof files [tlogproof] ------------------------------------------------------------

// A c2sp.org/tlog-proof@v1 file -> {index (BigInt), hashes, checkpointNote
// (bytes), extra (bytes or null)} [tlogproof.TlogProof.parse].  Codes:
// tlog_proof_too_large, tlog_proof_malformed, tlog_proof_header,
// tlog_proof_extra_invalid, tlog_proof_index_invalid, tlog_proof_hash_invalid,
// tlog_proof_too_long, and the note and checkpoint codes.
export function parseTlogProof(input) {
  const data = asBytes(input, "a tlog-proof");
  if (data.length > MAX_TLOG_PROOF_BYTES) {
    throw malformed("tlog_proof_too_large", `a tlog-proof is at most ${MAX_TLOG_PROOF_BYTES} bytes`);
  }
  let split = -1;
  for (let i = 0; i + 1 < data.length; i++) {
    if (data[i] === 0x0a && data[i + 1] === 0x0a) {
      split = i;
      break;
    }
  }
  if (split < 0) throw malformed("tlog_proof_malformed", "a tlog-proof has an empty line before its checkpoint");
  const headBytes = data.subarray(0, split);
  if (headBytes.some((b) => b > 0x7f)) throw malformed("tlog_proof_malformed", "the proof lines are ASCII");
  const lines = new TextDecoder().decode(headBytes).split("\n");
  if (lines[0] !== TLOG_PROOF_HEADER) {
    throw malformed("tlog_proof_header", `a tlog-proof starts with the line '${TLOG_PROOF_HEADER}'`);
  }
  let pos = 1;
  let extra = null;
  if (pos < lines.length && lines[pos].startsWith("extra ")) {
    extra = decodeBase64(lines[pos].slice(6), "the extra data", "tlog_proof_extra_invalid");
    if (!extra.length) {
      throw malformed("tlog_proof_extra_invalid", "an extra line must carry data; omit it when there is none");
    }
    if (extra.length > MAX_EXTRA_BYTES) {
      throw malformed("tlog_proof_extra_invalid", `extra data is at most ${MAX_EXTRA_BYTES} bytes`);
    }
    pos += 1;
  }
  if (pos >= lines.length || !lines[pos].startsWith("index ")) {
    throw malformed("tlog_proof_index_invalid", "a tlog-proof has an 'index <n>' line");
  }
  const index = parseDecimal(lines[pos].slice(6), "the leaf index", "tlog_proof_index_invalid", MAX_TREE_SIZE - 1n);
  const hashLines = lines.slice(pos + 1);
  if (hashLines.length > MAX_PROOF_HASHES) {
    throw malformed("tlog_proof_too_long", `an inclusion proof has at most ${MAX_PROOF_HASHES} hashes`);
  }
  const hashes = hashLines.map((line) => {
    const h = decodeBase64(line, "a proof hash", "tlog_proof_hash_invalid");
    if (h.length !== 32) throw malformed("tlog_proof_hash_invalid", "a proof hash is 32 bytes");
    return h;
  });
  const checkpointNote = data.slice(split + 2);
  parseCheckpoint(parseNote(checkpointNote).text);
  return { index, hashes, checkpointNote, extra };
}

// Verifies a tlog-proof for `leaf` (the entry bytes) offline
// [tlogproof.verify_tlog_proof]: the checkpoint's log signature and known
// cosignatures, at least `minCosigners` distinct witness keys
// (cosigner_quorum_not_met), then the RFC 6962 inclusion of SHA-256(0x00 ||
// leaf) at the proof's index under the checkpoint's root.
export async function verifyTlogProof(proof, leaf, logVerifier, cosigners = [], minCosigners = 0) {
  checkMinimum(minCosigners);
  const signed = await openCheckpoint(proof.checkpointNote, logVerifier, cosigners);
  const counted = distinctCosigners(signed.cosignatures, logVerifier.key);
  quorum(counted, minCosigners);
  const lh = await leafHash(leaf);
  await verifyInclusion(proof.index, signed.checkpoint.size, lh, proof.hashes, signed.checkpoint.root);
  return { index: proof.index, leafHash: lh, checkpoint: signed.checkpoint, signed, cosigners: counted, extra: proof.extra };
}

// --- strict JSON and canonical JSON (RFC 8785) [jcs] ------------------------------------------

// An integer literal outside +-(2^53 - 1): RFC 8785 (I-JSON) cannot represent
// it, so canonicalising it fails, as on the Python side.
export class UnsafeInteger {
  constructor(text) {
    this.text = text;
  }
}

const JSON_STRING = /"(?:[^"\\]|\\[^\n])*"/g;
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

// Refuses JSON nested deeper than MAX_JSON_DEPTH before parsing it [jcs.check_nesting].
function checkNesting(text) {
  let brackets = 0;
  for (const c of text) if (c === "[" || c === "{") brackets++;
  if (brackets <= MAX_JSON_DEPTH) return;
  let depth = 0;
  for (const c of text.replace(JSON_STRING, "")) {
    if (c === "[" || c === "{") {
      if (++depth > MAX_JSON_DEPTH) throw malformed("json_too_deep", `JSON nesting deeper than ${MAX_JSON_DEPTH}`);
    } else if (c === "]" || c === "}") {
      depth--;
    }
  }
}

function parseJsonText(text) {
  let i = 0;
  const numbers = new Map(); // top-level member -> the literal of its number
  const fail = (what) => {
    throw malformed("json_malformed", `invalid JSON: ${what} at character ${i}`);
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  let lastNumber = null;
  function value(depth) {
    ws();
    const c = text[i];
    lastNumber = null;
    if (c === "{") return object(depth + 1);
    if (c === "[") return array(depth + 1);
    if (c === '"') return string();
    if (text.startsWith("true", i)) return (i += 4), true;
    if (text.startsWith("false", i)) return (i += 5), false;
    if (text.startsWith("null", i)) return (i += 4), null;
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) fail("expecting a value");
    i += m[0].length;
    lastNumber = m[0];
    if (m[1] === undefined && m[2] === undefined) {
      const n = BigInt(m[0]);
      if (n > MAX_SAFE || n < -MAX_SAFE) return new UnsafeInteger(m[0]);
    }
    return Number(m[0]);
  }
  function string() {
    i++;
    let out = "";
    let start = i;
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (c === 0x5c) {
        out += text.slice(start, i);
        const e = text[i + 1];
        if (e === "u") {
          const h = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) fail("invalid \\uXXXX escape");
          out += String.fromCharCode(parseInt(h, 16));
          i += 6;
        } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
          out += ESCAPES[e];
          i += 2;
        } else {
          fail("invalid \\escape");
        }
        start = i;
        continue;
      }
      if (c < 0x20) fail("invalid control character in a string");
      i++;
    }
  }
  function object(depth) {
    if (depth > MAX_JSON_DEPTH) throw malformed("json_too_deep", `JSON nesting deeper than ${MAX_JSON_DEPTH}`);
    i++;
    const obj = {};
    let duplicate = null;
    ws();
    if (text[i] === "}") {
      i++;
      return obj;
    }
    for (;;) {
      ws();
      if (text[i] !== '"') fail("expecting a property name enclosed in double quotes");
      const key = string();
      ws();
      if (text[i] !== ":") fail("expecting ':' delimiter");
      i++;
      const v = value(depth);
      if (Object.hasOwn(obj, key)) {
        if (duplicate === null) duplicate = key;
      } else {
        Object.defineProperty(obj, key, { value: v, enumerable: true, writable: true, configurable: true });
        if (depth === 1 && lastNumber !== null) numbers.set(key, lastNumber);
      }
      ws();
      if (text[i] === ",") {
        i++;
        continue;
      }
      if (text[i] === "}") {
        i++;
        break;
      }
      fail("expecting ',' delimiter");
    }
    if (duplicate !== null) throw malformed("json_duplicate_key", `duplicate JSON key ${JSON.stringify(duplicate)}`);
    return obj;
  }
  function array(depth) {
    if (depth > MAX_JSON_DEPTH) throw malformed("json_too_deep", `JSON nesting deeper than ${MAX_JSON_DEPTH}`);
    i++;
    const out = [];
    ws();
    if (text[i] === "]") {
      i++;
      return out;
    }
    for (;;) {
      out.push(value(depth));
      ws();
      if (text[i] === ",") {
        i++;
        continue;
      }
      if (text[i] === "]") {
        i++;
        return out;
      }
      fail("expecting ',' delimiter");
    }
  }
  const v = value(0);
  ws();
  if (i < text.length) fail("extra data");
  return { value: v, numbers };
}

// Parses JSON strictly [jcs.loads_strict]: UTF-8, no duplicate keys, no NaN or
// Infinity, at most `maxBytes` and MAX_JSON_DEPTH deep.  Integers outside
// +-(2^53 - 1) become UnsafeInteger.  Returns {value, numbers}: `numbers` maps
// each top-level member holding a number to its literal (so "1.0" can be told
// from "1", as Python's int and float can).
export function parseJsonDocument(input, maxBytes = MAX_JSON_BYTES) {
  let text;
  if (typeof input === "string") {
    if (input.length > maxBytes) throw malformed("json_too_large", `JSON larger than ${maxBytes} bytes`);
    text = input;
  } else {
    const bytes = asBytes(input, "JSON");
    if (bytes.length > maxBytes) throw malformed("json_too_large", `JSON larger than ${maxBytes} bytes`);
    text = utf8Decode(bytes, "json_malformed", "JSON");
  }
  checkNesting(text);
  return parseJsonText(text);
}

export const parseJson = (input, maxBytes) => parseJsonDocument(input, maxBytes).value;

// RFC 8785: strings and numbers exactly as ECMAScript's JSON.stringify writes
// them, object members sorted by UTF-16 code units (Array.prototype.sort's
// order).  Lone surrogates, non-finite numbers, unsafe integers and nesting
// deeper than MAX_JSON_DEPTH are FormatError jcs_invalid.
export function jcs(value, depth = 0) {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "string") {
    if (!isWellFormed(value)) throw malformed("jcs_invalid", "string holds a lone surrogate");
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw malformed("jcs_invalid", "number cannot be canonicalised: not finite");
    return JSON.stringify(value);
  }
  if (value instanceof UnsafeInteger) {
    throw malformed("jcs_invalid", `integer ${value.text} is outside the I-JSON exact range`);
  }
  if (typeof value === "object" && depth > MAX_JSON_DEPTH) {
    throw malformed("jcs_invalid", `JSON nesting deeper than ${MAX_JSON_DEPTH}`);
  }
  if (Array.isArray(value)) return "[" + value.map((v) => jcs(v, depth + 1)).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => jcs(k) + ":" + jcs(value[k], depth + 1)).join(",") + "}";
  }
  throw malformed("jcs_invalid", `not a JSON value: ${typeof value}`);
}

// --- did:key ----------------------------------------------------------------------------

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

function base58Encode(bytes) {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let out = "";
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = "1" + out;
  }
  return out;
}

// The 32-byte Ed25519 key of a did:key:z6Mk… [keys.public_from_did_key].  Codes
// did_key_malformed, did_key_multibase_unsupported, did_key_type_unsupported,
// did_key_length_invalid.
export function didKeyToRaw(did) {
  if (typeof did !== "string" || did.length > 128) throw malformed("did_key_malformed", "not a did:key string");
  if (!did.startsWith("did:key:")) throw malformed("did_key_malformed", "a did:key must start with 'did:key:'");
  const id = did.slice(8);
  if (!id) throw malformed("did_key_malformed", "the did:key has no key");
  if (id[0] !== "z") {
    throw malformed("did_key_multibase_unsupported", "only base58btc ('z') multibase did:keys are supported");
  }
  const text = id.slice(1);
  if (text.length > 256) throw malformed("did_key_malformed", "the did:key is not base58btc: too long");
  let n = 0n;
  for (const c of text) {
    const d = B58.indexOf(c);
    if (d < 0) throw malformed("did_key_malformed", `the did:key is not base58btc: ${JSON.stringify(c)}`);
    n = n * 58n + BigInt(d);
  }
  const bytes = [];
  for (; n > 0n; n >>= 8n) bytes.unshift(Number(n & 0xffn));
  for (const c of text) {
    if (c !== "1") break;
    bytes.unshift(0);
  }
  if (bytes[0] !== 0xed || bytes[1] !== 0x01) {
    throw malformed("did_key_type_unsupported", "only Ed25519 (multicodec 0xed01) did:keys are supported");
  }
  if (bytes.length !== 34) {
    throw malformed("did_key_length_invalid", `an Ed25519 did:key holds 34 bytes, not ${bytes.length}`);
  }
  const key = new Uint8Array(bytes.slice(2));
  if ("did:key:z" + base58Encode(concat(new Uint8Array([0xed, 0x01]), key)) !== did) {
    throw malformed("did_key_malformed", "the did:key is not in canonical form");
  }
  return key;
}

// --- records [record] ------------------------------------------------------------------------

const REQUIRED = ["vm:version", "event:id", "event:type", "schema", "namespace", "actor", "timestamp", "nonce", "payload", "signatures"];
const OPTIONAL = ["subject", "prev", "payload:cid", "payload:hash"];
const NAMESPACE_RE = /^[a-z0-9][a-z0-9-]{0,62}:[a-z0-9][a-z0-9-]{0,62}$/;
const SCHEMA_RE = /^([a-z][a-z0-9]*(?:\.[a-z][a-z0-9]*)*)@(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$/;
const DID_KEY_RE = /^did:key:z[1-9A-HJ-NP-Za-km-z]{40,60}$/;
const NONCE_RE = /^[A-Za-z0-9_-]{8,128}$/;
const HASH_RE = /^sha256:[0-9a-f]{64}$/;
const NOT_PRINTABLE = /[\p{C}\p{Z}]/u;

// Python's str.isprintable: no character of the Unicode categories Other or
// Separator, except the ASCII space.
function isPrintable(text) {
  for (const c of text) if (c !== " " && NOT_PRINTABLE.test(c)) return false;
  return true;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof UnsafeInteger);
const fieldType = (field, message) => malformed("record_field_type", `${field} ${message}`, { field });

function parseRecordSignatures(value) {
  if (!Array.isArray(value) || value.length < 1 || value.length > MAX_RECORD_SIGNATURES) {
    throw fieldType("signatures", `must be a list of 1 to ${MAX_RECORD_SIGNATURES} signatures`);
  }
  return value.map((item, i) => {
    const where = `signatures[${i}]`;
    const keys = isObject(item) ? Object.keys(item) : [];
    if (keys.length !== 4 || !["alg", "kid", "role", "sig"].every((k) => keys.includes(k))) {
      throw fieldType(where, "must have exactly alg, kid, role and sig");
    }
    if (item.alg !== "Ed25519") throw malformed("signature_alg_unsupported", `${where}.alg must be Ed25519`);
    if (typeof item.kid !== "string" || !DID_KEY_RE.test(item.kid)) throw fieldType(`${where}.kid`, "must be an Ed25519 did:key");
    if (item.role !== "actor" && item.role !== "witness") throw fieldType(`${where}.role`, 'must be "actor" or "witness"');
    const sig = b64urlDecode(item.sig, `${where}.sig`, "record_field_type");
    if (sig.length !== 64) throw fieldType(`${where}.sig`, "must be a 64-byte Ed25519 signature");
    return { kid: item.kid, role: item.role, sig };
  });
}

// A record envelope, parsed and checked against the grammar exactly as the
// node does on admission's rule 1 [record.Record.from_bytes]; JSON in any
// formatting.  Returns {envelope, leaf (the canonical bytes: the log entry),
// signingInput, eventHash (32 bytes), eventHashHex, namespace, actor,
// signatures, canonical (whether the input was already the leaf)}.  Codes:
// record_too_large, json_*, record_malformed, record_missing_field,
// record_unknown_field, record_field_type, event_type_mismatch,
// signature_alg_unsupported, jcs_invalid.
export async function parseRecord(input) {
  const bytes = asBytes(input, "a record");
  if (bytes.length > MAX_RECORD_INPUT_BYTES) {
    throw malformed("record_too_large", `record input larger than ${MAX_RECORD_INPUT_BYTES} bytes`);
  }
  const { value, numbers } = parseJsonDocument(bytes, MAX_RECORD_INPUT_BYTES);
  if (!isObject(value)) throw malformed("record_malformed", "a record must be a JSON object");
  const missing = REQUIRED.filter((k) => !Object.hasOwn(value, k));
  if (missing.length) {
    throw malformed("record_missing_field", `record lacks required field '${missing[0]}'`, { fields: missing });
  }
  const unknown = Object.keys(value).filter((k) => !REQUIRED.includes(k) && !OPTIONAL.includes(k)).sort();
  if (unknown.length) {
    throw malformed("record_unknown_field", `record has unknown field '${unknown[0]}'`, { fields: unknown });
  }
  if (value["vm:version"] !== "1.0") throw fieldType("vm:version", 'must be "1.0"');
  const eventId = value["event:id"];
  if (typeof eventId !== "string" || codePoints(eventId) < 1 || codePoints(eventId) > 128 || !isPrintable(eventId)) {
    throw fieldType("event:id", "must be 1 to 128 printable characters");
  }
  const schema = value.schema;
  if (typeof schema !== "string" || !SCHEMA_RE.test(schema)) throw fieldType("schema", "must be name@major.minor.patch");
  if (value["event:type"] !== schema.split("@")[0]) {
    throw malformed("event_type_mismatch", `event:type ${JSON.stringify(value["event:type"])} does not match schema '${schema}'`);
  }
  const namespace = value.namespace;
  if (typeof namespace !== "string" || !NAMESPACE_RE.test(namespace)) {
    throw fieldType("namespace", "must match <org>:<name> (lowercase, digits, '-')");
  }
  const actor = value.actor;
  if (typeof actor !== "string" || !DID_KEY_RE.test(actor)) throw fieldType("actor", "must be an Ed25519 did:key");
  const timestamp = value.timestamp;
  const integral = typeof timestamp === "number" && /^-?[0-9]+$/.test(numbers.get("timestamp") || "");
  if (!integral || timestamp < 0 || timestamp >= 2 ** 53) {
    throw fieldType("timestamp", "must be an integer number of seconds since the epoch");
  }
  if (typeof value.nonce !== "string" || !NONCE_RE.test(value.nonce)) {
    throw fieldType("nonce", "must be 8 to 128 base64url characters");
  }
  const prev = value.prev;
  if (prev !== undefined && prev !== null && (typeof prev !== "string" || !HASH_RE.test(prev))) {
    throw fieldType("prev", "must be null or sha256:<64 lowercase hex>");
  }
  const subject = value.subject;
  if (
    subject !== undefined &&
    subject !== null &&
    (typeof subject !== "string" || codePoints(subject) < 1 || codePoints(subject) > 512 || !isPrintable(subject))
  ) {
    throw fieldType("subject", "must be a DID or URN of at most 512 characters");
  }
  if (Object.hasOwn(value, "payload:hash") && (typeof value["payload:hash"] !== "string" || !HASH_RE.test(value["payload:hash"]))) {
    throw fieldType("payload:hash", "must be sha256:<64 lowercase hex>");
  }
  const cid = value["payload:cid"];
  if (Object.hasOwn(value, "payload:cid") && (typeof cid !== "string" || codePoints(cid) < 1 || codePoints(cid) > 256)) {
    throw fieldType("payload:cid", "must be a string of at most 256 characters");
  }
  if (!isObject(value.payload)) throw fieldType("payload", "must be a JSON object");
  const signatures = parseRecordSignatures(value.signatures);
  const leaf = enc.encode(jcs(value));
  const unsigned = Object.fromEntries(Object.entries(value).filter(([k]) => k !== "signatures"));
  const signingInput = enc.encode(jcs(unsigned));
  if (leaf.length > MAX_RECORD_BYTES) {
    throw malformed(
      "record_too_large",
      `record is ${leaf.length} canonical bytes, over the ${MAX_RECORD_BYTES} limit; reference large payloads by payload:hash or payload:cid`,
    );
  }
  const eventHash = await sha256(signingInput);
  return {
    envelope: value,
    leaf,
    signingInput,
    eventHash,
    eventHashHex: "sha256:" + hex(eventHash),
    namespace,
    actor,
    signatures,
    canonical: equal(bytes, leaf),
  };
}

// Admission's rule 5 [admission.check_actor_signature]: exactly one actor
// signature, by the record's actor, and it verifies.  Codes
// actor_signature_missing, actor_signature_invalid (VerificationError),
// actor_signature_duplicate, actor_signature_mismatch (FormatError).
export async function checkActorSignature(record) {
  const actorSigs = record.signatures.filter((s) => s.role === "actor");
  if (!actorSigs.length) throw invalid("actor_signature_missing", "the record has no actor signature");
  if (actorSigs.length > 1 || actorSigs[0].kid !== record.actor) {
    throw malformed(
      actorSigs.length > 1 ? "actor_signature_duplicate" : "actor_signature_mismatch",
      "a record carries exactly one actor signature, by its actor",
    );
  }
  if (!(await ed25519Verify(didKeyToRaw(record.actor), actorSigs[0].sig, record.signingInput))) {
    throw invalid("actor_signature_invalid", "the actor signature does not verify", { actor: record.actor });
  }
}

// Every signature of a record, checked: [{role, kid, valid}].  Witness
// signatures that do not verify are reported, not fatal: admission ignores
// them too (it counts the valid ones of allowlisted keys, a policy of the
// namespace that a verifier outside it does not know).
export async function recordSignatures(record) {
  const out = [];
  for (const s of record.signatures) {
    let valid = false;
    try {
      valid = await ed25519Verify(didKeyToRaw(s.kid), s.sig, record.signingInput);
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
    }
    out.push({ role: s.role, kid: s.kid, valid });
  }
  return out;
}

// --- whole files: what `remembrancer-verify` checks -----------------------------------------

// A trust policy (JSON: the Python side's YAML trust file written as JSON):
// {log_vkeys: [...], witness_vkeys: [...], min_cosigners: N}.
export function parseTrustPolicy(input) {
  let doc;
  try {
    doc = parseJson(input);
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    throw malformed("trust_policy_invalid", `the trust policy is not JSON: ${e.message}`);
  }
  const list = (v) => v === undefined || v === null || (Array.isArray(v) && v.every((x) => typeof x === "string"));
  const min = doc && doc.min_cosigners;
  if (
    !isObject(doc) ||
    Object.keys(doc).some((k) => !["log_vkeys", "witness_vkeys", "min_cosigners"].includes(k)) ||
    !list(doc.log_vkeys) ||
    !list(doc.witness_vkeys) ||
    !(min === undefined || min === null || (Number.isSafeInteger(min) && min >= 0))
  ) {
    throw malformed(
      "trust_policy_invalid",
      "a trust policy holds log_vkeys and witness_vkeys (lists of vkeys) and min_cosigners (a whole number)",
    );
  }
  return { logVkeys: doc.log_vkeys || [], witnessVkeys: doc.witness_vkeys || [], minCosigners: min || 0 };
}

function trustOf({ trust = null, logVkeys = [], witnessVkeys = [], minCosigners = null }) {
  const logs = [...logVkeys];
  const witnesses = [...witnessVkeys];
  let minimum = minCosigners;
  if (trust !== null) {
    const doc = parseTrustPolicy(trust);
    logs.push(...doc.logVkeys);
    witnesses.push(...doc.witnessVkeys);
    if (minimum === null) minimum = doc.minCosigners;
  }
  if (!logs.length) throw malformed("usage", "give the log's vkey (--vkey) or a trust policy (--trust)");
  return { logs, witnesses, minimum: minimum || 0 };
}

function logVerifierFor(origin, logVkeys) {
  const verifier = logVkeys.map(parseLogVkey).find((v) => v.name === origin);
  if (!verifier) throw invalid("log_key_unknown", `no trusted log key for origin '${origin}'`);
  return verifier;
}

// A JSON receipt from a node: {eventHash, index, proof, checkpoint} -> the
// tlog-proof with the same facts [cli.verify.proof_from_receipt].
export function proofFromReceipt(doc) {
  const { value, numbers } = doc;
  const bad = (message) => malformed("receipt_malformed", message);
  if (!isObject(value)) throw bad("a receipt is a JSON object");
  if (!Object.hasOwn(value, "index") || !Object.hasOwn(value, "proof") || !Object.hasOwn(value, "checkpoint")) {
    throw bad("the receipt lacks or garbles a field: index, proof and checkpoint are needed");
  }
  if (!Array.isArray(value.proof) || typeof value.checkpoint !== "string" || !isWellFormed(value.checkpoint)) {
    throw bad("the receipt lacks or garbles a field: proof is a list of base64 hashes, checkpoint a note");
  }
  const hashes = value.proof.map((h) => {
    if (typeof h !== "string") throw bad("the receipt lacks or garbles a field: a proof hash is not base64");
    try {
      return b64decode(h);
    } catch {
      throw bad("the receipt lacks or garbles a field: a proof hash is not base64");
    }
  });
  const literal = numbers.get("index");
  if (literal === undefined || !/^-?[0-9]+$/.test(literal)) throw bad("receipt index must be an integer");
  const index = BigInt(literal);
  if (index < 0n || index > MAX_TREE_SIZE - 1n) throw malformed("tlog_proof_index_invalid", "the leaf index is between 0 and 2^64 - 2");
  if (hashes.length > MAX_PROOF_HASHES) {
    throw malformed("tlog_proof_too_long", `an inclusion proof has at most ${MAX_PROOF_HASHES} hashes`);
  }
  if (hashes.some((h) => h.length !== 32)) throw malformed("tlog_proof_hash_invalid", "a proof hash is 32 bytes");
  const checkpointNote = enc.encode(value.checkpoint);
  parseCheckpoint(parseNote(checkpointNote).text);
  return { index, hashes, checkpointNote, extra: null };
}

// `remembrancer verify RECORD (--proof FILE | --receipt FILE)`: the record is
// entry `index` of the log under a checkpoint signed by a trusted log key, with
// at least `minCosigners` distinct witness cosignatures, and its actor signed
// it.  Inputs are bytes; checks run in the Python command's order, so both
// report the same first failure.
export async function verifyRecordProof({ record, proof = null, receipt = null, ...trust }) {
  if ((proof === null) === (receipt === null)) throw malformed("usage", "give exactly one of --proof and --receipt");
  const rec = await parseRecord(record);
  let tlog;
  if (proof !== null) {
    tlog = parseTlogProof(proof);
  } else {
    const doc = parseJsonDocument(receipt);
    tlog = proofFromReceipt(doc);
    if (doc.value.eventHash !== rec.eventHashHex) {
      throw invalid(
        "receipt_record_mismatch",
        `the receipt is for ${String(doc.value.eventHash)}, the record is ${rec.eventHashHex}`,
      );
    }
  }
  const policy = trustOf(trust);
  const origin = parseCheckpoint(parseNote(tlog.checkpointNote).text).origin;
  const logVerifier = logVerifierFor(origin, policy.logs);
  const cosigners = policy.witnesses.map(parseCosignerVkey);
  const result = await verifyTlogProof(tlog, rec.leaf, logVerifier, cosigners, policy.minimum);
  await checkActorSignature(rec);
  const n = result.cosigners.length;
  return {
    valid: true,
    eventHash: rec.eventHashHex,
    namespace: rec.namespace,
    origin,
    index: jsonNumber(result.index),
    treeSize: jsonNumber(result.checkpoint.size),
    cosigners: n,
    checked: [
      "record canonical form",
      "RFC 6962 inclusion",
      "checkpoint log signature",
      `${n} witness cosignatures (needed ${policy.minimum})`,
      "actor signature",
    ],
    canonical: rec.canonical,
    signatures: await recordSignatures(rec),
    witnesses: result.cosigners.map((c) => ({ name: c.name, timestamp: jsonNumber(c.timestamp) })),
  };
}

// A record alone: well formed, its canonical form and eventHash, and its
// actor signature verifies; `eventHash`, if given, must be the record's
// (event_hash_mismatch).  Every signature is reported.
export async function verifyRecordAlone({ record, eventHash = null }) {
  const rec = await parseRecord(record);
  if (eventHash !== null && eventHash !== rec.eventHashHex) {
    throw invalid("event_hash_mismatch", `the record's eventHash is ${rec.eventHashHex}, not ${eventHash}`);
  }
  await checkActorSignature(rec);
  return {
    valid: true,
    eventHash: rec.eventHashHex,
    leafHash: b64encode(await leafHash(rec.leaf)),
    namespace: rec.namespace,
    actor: rec.actor,
    canonical: rec.canonical,
    signatures: await recordSignatures(rec),
    checked: ["record canonical form", "actor signature"],
  };
}

// A checkpoint note: signed by a trusted log key named after its origin, with
// at least `minCosigners` distinct witness cosignatures.
export async function verifyCheckpointNote({ checkpoint, ...trust }) {
  const note = parseNote(checkpoint);
  const origin = parseCheckpoint(note.text).origin;
  const policy = trustOf(trust);
  const logVerifier = logVerifierFor(origin, policy.logs);
  const cosigners = policy.witnesses.map(parseCosignerVkey);
  checkMinimum(policy.minimum);
  const signed = await openCheckpoint(note, logVerifier, cosigners);
  const counted = distinctCosigners(signed.cosignatures, logVerifier.key);
  quorum(counted, policy.minimum);
  return {
    valid: true,
    origin,
    treeSize: jsonNumber(signed.checkpoint.size),
    root: b64encode(signed.checkpoint.root),
    cosigners: counted.length,
    witnesses: counted.map((c) => ({ name: c.name, timestamp: jsonNumber(c.timestamp) })),
    unknownSigners: [...new Set(signed.unverified.map((s) => s.name))],
    checked: ["checkpoint log signature", `${counted.length} witness cosignatures (needed ${policy.minimum})`],
  };
}

// Each witness key's cosignature/v1 on a checkpoint, found in the checkpoint
// note or in `signatures` (signature lines, e.g. a tlog-witness answer to
// add-checkpoint), which are appended to the note.  No log key is needed: a
// cosignature is the witness's statement about the checkpoint text.  Codes
// cosignature_missing, cosignature_invalid.
export async function verifyCosignatures({ checkpoint, signatures = null, witnessVkeys = [] }) {
  const witnesses = witnessVkeys.map(parseCosignerVkey);
  if (!witnesses.length) throw malformed("usage", "give the witness's vkey (--witness-vkey)");
  const note = parseNote(
    signatures === null
      ? checkpoint
      : concat(asBytes(checkpoint, "a checkpoint"), asBytes(signatures, "the signature lines")),
  );
  const cp = parseCheckpoint(note.text);
  const out = [];
  for (const w of witnesses) {
    const mine = note.sigs.filter((s) => s.name === w.name && s.keyId === w.keyId);
    if (!mine.length) {
      throw invalid("cosignature_missing", `the checkpoint carries no cosignature by ${w.name}`, {
        name: w.name,
        key_id: keyIdHex(w.keyId),
      });
    }
    for (const s of mine) {
      if (!(await verifyNoteSignature(w, note.text, s.sig))) {
        throw invalid("cosignature_invalid", `the cosignature of ${w.name} does not verify`, {
          name: w.name,
          key_id: keyIdHex(w.keyId),
        });
      }
    }
    out.push({ name: w.name, timestamp: jsonNumber(cosignatureTime(mine[0].sig)) });
  }
  return {
    valid: true,
    origin: cp.origin,
    treeSize: jsonNumber(cp.size),
    root: b64encode(cp.root),
    witnesses: out,
    checked: out.map((w) => `cosignature/v1 by ${w.name}`),
  };
}

function parseProofHashes(input) {
  const text = utf8Decode(asBytes(input, "a consistency proof"), "consistency_proof_malformed", "a consistency proof");
  if (!text.length) return [];
  if (!text.endsWith("\n")) throw malformed("consistency_proof_malformed", "each proof line ends with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length > MAX_PROOF_HASHES) {
    throw malformed("consistency_proof_malformed", `a consistency proof has at most ${MAX_PROOF_HASHES} hashes`);
  }
  return lines.map(proofHash);
}

function proofHash(text) {
  const h = decodeBase64(text, "a proof hash", "consistency_proof_malformed");
  if (h.length !== 32) throw malformed("consistency_proof_malformed", "a proof hash is 32 bytes");
  return h;
}

// That one log's newer checkpoint extends its older one: both signed by the
// trusted log key and tied by an RFC 6962 consistency proof.  `proof` is what
// `remembrancer proof consistency` writes (JSON {old, new, proof, checkpoints})
// or base64 hashes, one a line; `old` and `new` (checkpoint notes) default to
// the ones in that JSON.
export async function verifyConsistencyProof({ proof, old = null, new: latest = null, ...trust }) {
  const bytes = asBytes(proof, "a consistency proof");
  let hashes;
  let doc = null;
  const first = bytes.find((b) => ![0x20, 0x09, 0x0a, 0x0d].includes(b));
  if (first === 0x7b) {
    doc = parseJson(bytes);
    if (!isObject(doc) || !Array.isArray(doc.proof) || doc.proof.some((h) => typeof h !== "string")) {
      throw malformed("consistency_proof_malformed", "a consistency proof holds a list of base64 hashes in 'proof'");
    }
    if (doc.proof.length > MAX_PROOF_HASHES) {
      throw malformed("consistency_proof_malformed", `a consistency proof has at most ${MAX_PROOF_HASHES} hashes`);
    }
    hashes = doc.proof.map(proofHash);
  } else {
    hashes = parseProofHashes(bytes);
  }
  const stored = (which) => {
    const size = doc && doc[which];
    const note = doc && isObject(doc.checkpoints) ? doc.checkpoints[String(size)] : undefined;
    if (typeof note !== "string") {
      throw malformed("usage", `the proof file holds no ${which} checkpoint: give --${which}`);
    }
    return note;
  };
  const oldNote = parseNote(old !== null ? old : stored("old"));
  const newNote = parseNote(latest !== null ? latest : stored("new"));
  const oldCp = parseCheckpoint(oldNote.text);
  const newCp = parseCheckpoint(newNote.text);
  if (oldCp.origin !== newCp.origin) {
    throw malformed("checkpoint_origin_mismatch", `the checkpoints are of two logs: ${oldCp.origin}, ${newCp.origin}`);
  }
  const policy = trustOf({ ...trust, witnessVkeys: [], minCosigners: 0 });
  const logVerifier = logVerifierFor(oldCp.origin, policy.logs);
  await openCheckpoint(oldNote, logVerifier);
  await openCheckpoint(newNote, logVerifier);
  await verifyConsistency(oldCp.size, newCp.size, oldCp.root, newCp.root, hashes);
  return {
    valid: true,
    origin: oldCp.origin,
    old: { treeSize: jsonNumber(oldCp.size), root: b64encode(oldCp.root) },
    new: { treeSize: jsonNumber(newCp.size), root: b64encode(newCp.root) },
    proofHashes: hashes.length,
    checked: ["old checkpoint log signature", "new checkpoint log signature", "RFC 6962 consistency"],
  };
}

// --- the explorer's record page ---------------------------------------------------------------

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
        // Not signed: the signatures themselves, and what the serving node adds
        // from its own reading (quorum_met, finalized_at, the regions summary).
        Object.entries(r).filter(([k]) => !["signatures", "quorum_met", "finalized_at", "regions"].includes(k)),
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
