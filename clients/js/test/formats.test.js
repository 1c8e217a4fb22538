// Each parser is as strict as its Python counterpart (same codes), and each
// verifier refuses what the Python side refuses.

import assert from "node:assert/strict";
import { test } from "node:test";

import * as v from "../verify.js";
import {
  b64,
  b64url,
  canon,
  checkpointBody,
  cosignatureLine,
  leafHashOf,
  makeLog,
  makeRecord,
  newKey,
  noteSignature,
  sha,
  tlogProof,
  utf8,
  vkeyOf,
} from "./helpers.js";

const code = (c) => ({ code: c });

// --- base64 ----------------------------------------------------------------------------

test("base64 must be canonical where the Python side requires it", () => {
  assert.deepEqual(v.decodeBase64("AA=="), Uint8Array.of(0));
  assert.throws(() => v.decodeBase64("AB=="), code("base64_invalid")); // non-zero padding bits
  assert.throws(() => v.decodeBase64("AA"), code("base64_invalid")); // no padding
  assert.throws(() => v.decodeBase64("A-=="), code("base64_invalid")); // url alphabet
  assert.throws(() => v.decodeBase64(" AA=="), code("base64_invalid"));
  assert.deepEqual(v.b64decode("AB=="), Uint8Array.of(0)); // the lenient form tolerates padding bits
  assert.deepEqual(v.b64urlDecode("_-8"), Uint8Array.of(0xff, 0xef));
  assert.throws(() => v.b64urlDecode("_-9"), code("base64url_invalid"));
  assert.throws(() => v.b64urlDecode("_-8="), code("base64url_invalid"));
});

// --- notes and checkpoints -------------------------------------------------------------

test("signed notes: the grammar and limits of c2sp.org/signed-note", () => {
  const sig = `\u2014 log.example ${b64(new Uint8Array(68).fill(7))}\n`;
  assert.equal(v.parseNote(`a\n\n${sig}`).text, "a\n");
  assert.equal(v.parseNote(`a\n\nb\n\n${sig}`).text, "a\n\nb\n"); // the text ends at the last blank line
  assert.throws(() => v.parseNote(`a\n${sig}`), code("note_malformed"));
  assert.throws(() => v.parseNote(`a\n\n${sig.trimEnd()}`), code("note_malformed"));
  assert.throws(() => v.parseNote(`a\tb\n\n${sig}`), code("note_control_character"));
  assert.throws(() => v.parseNote(`a\r\n\n${sig}`), code("note_control_character"));
  assert.throws(() => v.parseNote(`a\n\n- log.example AAAAAAA=\n`), code("note_signature_malformed"));
  assert.throws(() => v.parseNote(`a\n\n\u2014 log.example\n`), code("note_signature_malformed"));
  assert.throws(() => v.parseNote(`a\n\n\u2014 log+example ${b64(new Uint8Array(8))}\n`), code("note_signature_malformed"));
  assert.throws(() => v.parseNote(`a\n\n\u2014 log.example AAAA\n`), code("note_signature_malformed")); // < 5 bytes
  assert.throws(() => v.parseNote(`a\n\n${sig.repeat(101)}`), code("note_too_many_signatures"));
  assert.equal(v.parseNote(`a\n\n${sig.repeat(100)}`).sigs.length, 100);
  assert.throws(() => v.parseNote(Uint8Array.of(0x61, 0xff, 0x0a, 0x0a)), code("note_not_utf8"));
  assert.throws(() => v.parseNote(`${"a".repeat(v.MAX_NOTE_BYTES)}\n\n${sig}`), code("note_too_large"));
  for (const name of ["a b", "a\u00a0b", "a\u3000b", "", "a+b"]) {
    assert.equal(v.isValidKeyName(name), false, JSON.stringify(name));
  }
  assert.equal(v.isValidKeyName("example.com/log\u00e9"), true);
});

test("checkpoints: origin, decimal size without leading zeros, canonical 32-byte root", () => {
  const root = b64(new Uint8Array(32).fill(1));
  assert.equal(v.parseCheckpoint(`o\n18446744073709551615\n${root}\n`).size, (1n << 64n) - 1n);
  assert.deepEqual(v.parseCheckpoint(`o\n5\n${root}\next one\n`).extensions, ["ext one"]);
  assert.throws(() => v.parseCheckpoint(`o\n18446744073709551616\n${root}\n`), code("checkpoint_size_invalid"));
  assert.throws(() => v.parseCheckpoint(`o\n05\n${root}\n`), code("checkpoint_size_invalid"));
  assert.throws(() => v.parseCheckpoint(`o\n+5\n${root}\n`), code("checkpoint_size_invalid"));
  assert.throws(() => v.parseCheckpoint(`o\n5\n${b64(new Uint8Array(31))}\n`), code("checkpoint_root_invalid"));
  assert.throws(() => v.parseCheckpoint(`\n5\n${root}\n`), code("checkpoint_origin_invalid"));
  assert.throws(() => v.parseCheckpoint(`o\n5\n${root}\n\n`), code("checkpoint_extension_invalid"));
  assert.throws(() => v.parseCheckpoint(`o\n5\n${root}`), code("checkpoint_malformed"));
  assert.throws(() => v.parseCheckpoint(`o\n5\n`), code("checkpoint_malformed"));
});

test("openCheckpoint: unknown keys ignored, a known signature that fails rejects the note", async () => {
  const log = await makeLog(3);
  const logV = v.parseLogVkey(log.vkey);
  const w1 = v.parseCosignerVkey(log.w1vkey);
  const w2 = v.parseCosignerVkey(log.w2vkey);
  const { body, note } = await log.checkpointAt(3);
  const opened = await v.openCheckpoint(note, logV, [w1]);
  assert.equal(opened.checkpoint.size, 3n);
  assert.deepEqual(opened.cosignatures.map((c) => [c.name, c.timestamp]), [["w1.example", 1764100100n]]);
  assert.deepEqual(opened.unverified.map((s) => s.name), ["w2.example"]);
  // A bad cosignature by a known witness rejects the whole note; by an unknown one it is ignored.
  const forged = note.replace(/(\u2014 w2\.example )(\S+)/, (_, a, sig) => {
    const raw = Buffer.from(sig, "base64");
    raw[20] ^= 1; // a signature byte, not the key ID
    return a + raw.toString("base64");
  });
  await assert.rejects(v.openCheckpoint(forged, logV, [w1, w2]), code("cosignature_invalid"));
  assert.equal((await v.openCheckpoint(forged, logV, [w1])).cosignatures.length, 1);
  // The log signature itself.
  const other = `${body.replace("\n3\n", "\n4\n")}\n${note.split("\n\n")[1]}`;
  await assert.rejects(v.openCheckpoint(other, logV), code("checkpoint_signature_invalid"));
  const cosignedOnly = `${body}\n${note.split("\n\n")[1].split("\n").slice(1).join("\n")}`;
  await assert.rejects(v.openCheckpoint(cosignedOnly, logV, [w1]), code("checkpoint_unsigned"));
  await assert.rejects(v.openCheckpoint(cosignedOnly, logV), code("checkpoint_unsigned"));
  // Two different keys configured under one name and key ID: ambiguous, never a guess.
  const twin = { ...w1, key: w2.key };
  await assert.rejects(v.openCheckpoint(note, logV, [w1, twin]), code("note_verifier_ambiguous"));
  // A log key whose name is not the origin.
  const elsewhere = { ...logV, name: "elsewhere", keyId: v.keyId("elsewhere", 1, logV.key) };
  const signedElsewhere = `${body}\n${await noteSignature("elsewhere", log.logKey, body)}`;
  await assert.rejects(v.openCheckpoint(signedElsewhere, elsewhere), code("checkpoint_origin_mismatch"));
});

test("cosignature/v1: the time is signed, and the timestamp is at most 2^63 - 1", async () => {
  const log = await makeLog(2);
  const w1 = v.parseCosignerVkey(log.w1vkey);
  const body = checkpointBody(log.origin, log.leaves);
  const line = await cosignatureLine("w1.example", log.w1, body, 1700000000);
  const sig = v.parseSignatureLine(line.trimEnd()).sig;
  assert.equal(await v.verifyNoteSignature(w1, body, sig), true);
  assert.equal(v.cosignatureTime(sig), 1700000000n);
  const later = sig.slice();
  later[7] ^= 1; // another time, same signature
  assert.equal(await v.verifyNoteSignature(w1, body, later), false);
  const huge = await cosignatureLine("w1.example", log.w1, body, (1n << 63n).toString());
  assert.equal(await v.verifyNoteSignature(w1, body, v.parseSignatureLine(huge.trimEnd()).sig), false);
  // A note signature (type 0x01) by the same key is no cosignature.
  const plain = await noteSignature("w1.example", log.w1, body);
  assert.equal(await v.verifyNoteSignature(w1, body, v.parseSignatureLine(plain.trimEnd()).sig), false);
});

// --- Ed25519 as libsodium (PyNaCl) decides it ------------------------------------------

const BASE_POINT = Uint8Array.from([0x58, ...new Array(31).fill(0x66)]);
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].map((h) => Uint8Array.from(Buffer.from(h, "hex")));

test("a small-order public key verifies nothing (WebCrypto alone would accept a forgery)", async () => {
  const identity = SMALL_ORDER[1];
  const forgery = new Uint8Array(64);
  forgery.set(BASE_POINT); // R = B, S = 1: [S]B = R + [k]A for every message when A is the identity
  forgery[32] = 1;
  const message = utf8("anything at all");
  const raw = await crypto.subtle.importKey("raw", identity, { name: "Ed25519" }, false, ["verify"]);
  const webcrypto = await crypto.subtle.verify({ name: "Ed25519" }, raw, forgery, message);
  assert.equal(webcrypto, true, "this platform's WebCrypto accepts the forgery; the guard is what refuses it");
  assert.equal(await v.ed25519Verify(identity, forgery, message), false);
  for (const key of SMALL_ORDER) {
    for (const signBit of [0, 0x80]) {
      const k = key.slice();
      k[31] |= signBit;
      assert.equal(v.ed25519Acceptable(k, forgery), false, v.hex(k));
    }
  }
});

test("Ed25519: non-canonical keys, small-order R and S >= L are refused", async () => {
  const key = await newKey();
  const message = utf8("m");
  const sig = await key.sign(message);
  assert.equal(await v.ed25519Verify(key.pub, sig, message), true);
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;
  let s = 0n;
  for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(sig[i]);
  const big = sig.slice();
  let t = s + L;
  for (let i = 32; i < 64; i++, t >>= 8n) big[i] = Number(t & 0xffn);
  if (t === 0n) assert.equal(await v.ed25519Verify(key.pub, big, message), false); // S + L fits in 32 bytes
  // A small-order R: with R = the identity and S = 0, the neutral key "signs" everything.
  const smallR = new Uint8Array(64);
  smallR.set(SMALL_ORDER[1]);
  const raw = await crypto.subtle.importKey("raw", SMALL_ORDER[1], { name: "Ed25519" }, false, ["verify"]);
  assert.equal(await crypto.subtle.verify({ name: "Ed25519" }, raw, smallR, message), true);
  assert.equal(v.ed25519Acceptable(key.pub, smallR), false);
  assert.equal(v.ed25519Acceptable(key.pub, sig), true);
  const nonCanonical = new Uint8Array(32).fill(0xff);
  nonCanonical[31] = 0x7f; // y = 2^255 - 1 >= p
  assert.equal(await v.ed25519Verify(nonCanonical, sig, message), false);
  assert.equal(await v.ed25519Verify(key.pub, sig.slice(0, 63), message), false);
});

// --- strict JSON and RFC 8785 -----------------------------------------------------------

test("JSON is parsed strictly: duplicates, depth, constants, encodings", () => {
  assert.throws(() => v.parseJson('{"a":1,"a":1}'), code("json_duplicate_key"));
  assert.throws(() => v.parseJson('{"x":{"a":1,"a":2}}'), code("json_duplicate_key"));
  assert.throws(() => v.parseJson("[NaN]"), code("json_malformed"));
  assert.throws(() => v.parseJson("[-Infinity]"), code("json_malformed"));
  assert.throws(() => v.parseJson('{"a":1,}'), code("json_malformed"));
  assert.throws(() => v.parseJson("\ufeff{}"), code("json_malformed"));
  assert.throws(() => v.parseJson("{} x"), code("json_malformed"));
  assert.throws(() => v.parseJson("01"), code("json_malformed"));
  assert.throws(() => v.parseJson('"a\nb"'), code("json_malformed"));
  assert.throws(() => v.parseJson('"\\x"'), code("json_malformed"));
  assert.throws(() => v.parseJson(Uint8Array.of(0x22, 0xc3, 0x22)), code("json_malformed"));
  assert.throws(() => v.parseJson("[".repeat(65) + "]".repeat(65)), code("json_too_deep"));
  assert.equal(v.parseJson("[".repeat(64) + "]".repeat(64)).length, 1);
  assert.throws(() => v.parseJson('"' + "a".repeat(20) + '"', 10), code("json_too_large"));
  const proto = v.parseJson('{"__proto__":{"polluted":1}}');
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ["__proto__"]);
  assert.equal({}.polluted, undefined);
  const big = v.parseJson("[9007199254740991, 9007199254740992, -9007199254740992]");
  assert.equal(big[0], 9007199254740991);
  assert.ok(big[1] instanceof v.UnsafeInteger && big[2] instanceof v.UnsafeInteger);
  assert.throws(() => v.jcs(big), code("jcs_invalid"));
  assert.equal(v.parseJsonDocument('{"t":1.0,"u":1}').numbers.get("t"), "1.0");
});

test("RFC 8785: numbers as ECMAScript writes them, keys in UTF-16 order", () => {
  const numbers = v.parseJson("[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001, -0, 1e21, 1e-7, 100]");
  assert.equal(v.jcs(numbers), "[333333333.3333333,1e+30,4.5,0.002,1e-27,0,1e+21,1e-7,100]");
  const keys = v.parseJson('{"\\u20ac":1,"\\r":2,"\\ufb33":3,"1":4,"\\ud83d\\ude00":5,"\\u0080":6,"\\u00f6":7}');
  assert.equal(v.jcs(keys), '{"\\r":2,"1":4,"\u0080":6,"\u00f6":7,"\u20ac":1,"\ud83d\ude00":5,"\ufb33":3}');
  assert.equal(v.jcs("\u0000\u001f\"\\\u007f\u2028"), '"\\u0000\\u001f\\"\\\\\u007f\u2028"');
  assert.throws(() => v.jcs(v.parseJson('["\\ud800"]')), code("jcs_invalid"));
  assert.throws(() => v.jcs({ "\udc00": 1 }), code("jcs_invalid"));
  assert.throws(() => v.jcs([Infinity]), code("jcs_invalid"));
});

// --- records ----------------------------------------------------------------------------

test("records: the leaf is the canonical envelope, eventHash the unsigned one", async () => {
  const actor = await newKey();
  const w = await newKey();
  const { record, leaf, eventHash } = await makeRecord(actor, [w], 1);
  const parsed = await v.parseRecord(leaf);
  assert.deepEqual(parsed.leaf, leaf);
  assert.equal(parsed.eventHashHex, eventHash);
  assert.equal(parsed.canonical, true);
  const pretty = await v.parseRecord(utf8(JSON.stringify(record, null, 2)));
  assert.deepEqual(pretty.leaf, leaf);
  assert.equal(pretty.canonical, false);
  await v.checkActorSignature(parsed);
  assert.deepEqual((await v.recordSignatures(parsed)).map((s) => [s.role, s.valid]), [["actor", true], ["witness", true]]);
});

test("records: the grammar of admission's rule 1, code for code", async () => {
  const actor = await newKey();
  const { record } = await makeRecord(actor, [], 1);
  const with_ = (change) => {
    const r = structuredClone(record);
    change(r);
    return utf8(JSON.stringify(r));
  };
  const cases = [
    [with_((r) => delete r.nonce), "record_missing_field"],
    [with_((r) => (r.extra = 1)), "record_unknown_field"],
    [with_((r) => (r["vm:version"] = "1.1")), "record_field_type"],
    [with_((r) => (r["event:id"] = "a\u0085b")), "record_field_type"],
    [with_((r) => (r["event:id"] = "x".repeat(129))), "record_field_type"],
    [with_((r) => (r["event:type"] = "other.type")), "event_type_mismatch"],
    [with_((r) => (r.schema = "ledger.append@1.0")), "record_field_type"],
    [with_((r) => (r.namespace = "Dao:test")), "record_field_type"],
    [with_((r) => (r.timestamp = -1)), "record_field_type"],
    [with_((r) => (r.timestamp = 2 ** 53)), "record_field_type"],
    [with_((r) => (r.nonce = "short")), "record_field_type"],
    [with_((r) => (r.prev = "sha256:AB")), "record_field_type"],
    [with_((r) => (r.payload = [])), "record_field_type"],
    [with_((r) => (r["payload:hash"] = null)), "record_field_type"],
    [with_((r) => (r.signatures = [])), "record_field_type"],
    [with_((r) => (r.signatures[0].alg = "EdDSA")), "signature_alg_unsupported"],
    [with_((r) => (r.signatures[0].extra = 1)), "record_field_type"],
    [with_((r) => (r.signatures[0].role = "admin")), "record_field_type"],
    [with_((r) => (r.signatures[0].sig += "A")), "record_field_type"],
    [with_((r) => (r.payload.memo = "x".repeat(70000))), "record_too_large"],
    [with_((r) => (r.payload.n = "\ud800")), "jcs_invalid"],
    [utf8(JSON.stringify(record).replace('"timestamp":1764100001', '"timestamp":1764100001.0')), "record_field_type"],
    [utf8(JSON.stringify(record).replace('"amount":1', '"amount":12345678901234567890')), "jcs_invalid"],
    [utf8("[]"), "record_malformed"],
    [utf8(JSON.stringify(record).replace("{", '{"nonce":"x",')), "json_duplicate_key"],
  ];
  for (const [input, want] of cases) {
    await assert.rejects(v.parseRecord(input), code(want), new TextDecoder().decode(input).slice(0, 200));
  }
  await v.parseRecord(with_((r) => (r.subject = "urn:x:1")));
  await v.parseRecord(with_((r) => (r.timestamp = 0)));
});

test("records: rule 5, exactly one actor signature, by the actor, that verifies", async () => {
  const actor = await newKey();
  const other = await newKey();
  const base = await makeRecord(actor, [other], 1);
  const check = async (change) => {
    const r = structuredClone(base.record);
    change(r);
    return v.checkActorSignature(await v.parseRecord(utf8(canon(r))));
  };
  await check(() => {});
  await assert.rejects(check((r) => (r.signatures[0].role = "witness")), code("actor_signature_missing"));
  await assert.rejects(check((r) => (r.signatures[1].role = "actor")), code("actor_signature_duplicate"));
  await assert.rejects(check((r) => (r.signatures[0].kid = other.did)), code("actor_signature_mismatch"));
  await assert.rejects(check((r) => (r.payload.amount = 2)), code("actor_signature_invalid"));
  // A witness signature that does not verify is reported, not fatal.
  const r = structuredClone(base.record);
  r.signatures[1].sig = r.signatures[0].sig;
  const parsed = await v.parseRecord(utf8(canon(r)));
  await v.checkActorSignature(parsed);
  assert.deepEqual((await v.recordSignatures(parsed)).map((s) => s.valid), [true, false]);
});

function base58(bytes) {
  const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  let n = BigInt("0x" + Buffer.from(bytes).toString("hex"));
  let out = "";
  for (; n > 0n; n /= 58n) out = B58[Number(n % 58n)] + out;
  return out;
}

test("records: an actor whose key has small order signs nothing", async () => {
  const did = base58(Uint8Array.of(0xed, 0x01, ...SMALL_ORDER[1]));
  const forged = { sign: async () => Uint8Array.of(...BASE_POINT, 1, ...new Uint8Array(31)), did: `did:key:z${did}` };
  const { leaf } = await makeRecord(forged, [], 1);
  const parsed = await v.parseRecord(leaf);
  await assert.rejects(v.checkActorSignature(parsed), code("actor_signature_invalid"));
});

test("did:key: base58btc Ed25519 keys in canonical form only", async () => {
  const key = await newKey();
  assert.deepEqual(v.didKeyToRaw(key.did), key.pub);
  assert.throws(() => v.didKeyToRaw("did:web:example.com"), code("did_key_malformed"));
  assert.throws(() => v.didKeyToRaw("did:key:f00"), code("did_key_multibase_unsupported"));
  assert.throws(() => v.didKeyToRaw("did:key:z0OIl"), code("did_key_malformed"));
  assert.throws(() => v.didKeyToRaw("did:key:z1" + key.did.slice(9)), code("did_key_type_unsupported"));
  const short = "did:key:z" + base58(Uint8Array.of(0xed, 0x01, ...key.pub.slice(1)));
  assert.throws(() => v.didKeyToRaw(short), code("did_key_length_invalid"));
});

// --- tlog-proof files ----------------------------------------------------------------------

test("tlog-proof files: the grammar of c2sp.org/tlog-proof", async () => {
  const log = await makeLog(5);
  const { note } = await log.checkpointAt(5);
  const good = tlogProof(3, log.leaves, note);
  const parsed = v.parseTlogProof(utf8(good));
  assert.equal(parsed.index, 3n);
  assert.equal(parsed.hashes.length, 3);
  assert.equal(new TextDecoder().decode(parsed.checkpointNote), note);
  const withExtra = good.replace("\nindex", `\nextra ${b64(utf8("hi"))}\nindex`);
  assert.deepEqual(v.parseTlogProof(utf8(withExtra)).extra, utf8("hi"));
  const h = (text) => () => v.parseTlogProof(utf8(text));
  assert.throws(h(good.replace("@v1", "@v2")), code("tlog_proof_header"));
  assert.throws(h(good.replace("index 3", "index 03")), code("tlog_proof_index_invalid"));
  assert.throws(h(good.replace("index 3", "idx 3")), code("tlog_proof_index_invalid"));
  assert.throws(h(good.replace("\nindex", "\nextra \nindex")), code("tlog_proof_extra_invalid"));
  assert.throws(h(good.replace("\nindex 3\n", `\nindex 3\n${"AAAA\n".repeat(65)}`)), code("tlog_proof_too_long"));
  assert.throws(h(good.replace(/\nindex 3\n([^\n]*)=\n/, "\nindex 3\n$1\n")), code("tlog_proof_hash_invalid"));
  assert.throws(h(good.replace("\nindex 3\n", "\nindex 3\nAAAA\n")), code("tlog_proof_hash_invalid"));
  assert.throws(h(good.replace(/\n\n/, "\n")), (e) => e instanceof v.FormatError);
  assert.throws(h(good.replace("c2sp", "c2sp\u00e9")), code("tlog_proof_malformed"));
  // The embedded checkpoint is checked too.
  assert.throws(h(good.replace(/\n\n([^\n]+)\n5\n/, "\n\n$1\n05\n")), code("checkpoint_size_invalid"));
});

test("verifyTlogProof: cosigners count once per key, the log's own key never", async () => {
  const log = await makeLog(4);
  const logV = v.parseLogVkey(log.vkey);
  const body = checkpointBody(log.origin, log.leaves);
  let note = `${body}\n${await noteSignature(log.origin, log.logKey, body)}`;
  note += await cosignatureLine("w1.example", log.w1, body, 1);
  note += await cosignatureLine("w1-again.example", log.w1, body, 2); // one key, two names
  note += await cosignatureLine("log-as-witness", log.logKey, body, 3); // the log cosigning itself
  const cosigners = [
    v.parseCosignerVkey(log.w1vkey),
    v.parseCosignerVkey(vkeyOf("w1-again.example", 4, log.w1.pub)),
    v.parseCosignerVkey(vkeyOf("log-as-witness", 4, log.logKey.pub)),
  ];
  const proof = v.parseTlogProof(utf8(tlogProof(2, log.leaves, note)));
  const ok = await v.verifyTlogProof(proof, log.records[2].leaf, logV, cosigners, 1);
  assert.equal(ok.cosigners.length, 1);
  await assert.rejects(v.verifyTlogProof(proof, log.records[2].leaf, logV, cosigners, 2), code("cosigner_quorum_not_met"));
  await assert.rejects(v.verifyTlogProof(proof, log.records[1].leaf, logV, cosigners, 0), code("inclusion_root_mismatch"));
  await assert.rejects(v.verifyTlogProof(proof, log.records[2].leaf, logV, cosigners, -1), code("min_cosigners_invalid"));
  const wrongIndex = v.parseTlogProof(utf8(tlogProof(2, log.leaves, note).replace("index 2", "index 4")));
  await assert.rejects(v.verifyTlogProof(wrongIndex, log.records[2].leaf, logV), code("index_out_of_range"));
  assert.deepEqual(await v.leafHash(log.records[2].leaf), leafHashOf(log.records[2].leaf));
  assert.deepEqual(ok.leafHash, sha(Uint8Array.of(0), log.records[2].leaf));
  assert.equal(b64url(ok.leafHash).length, 43);
});
