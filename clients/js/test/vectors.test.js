// The public vectors in the repository's tests/vectors/ (see its README for
// their origin and licence): transparency-dev/merkle's RFC 6962 inclusion and
// consistency cases, and the C2SP signed-note worked example.  They are read
// with the module's own strict JSON parser, which keeps integers beyond 2^53
// (a uint64 index) exact.  The Python core
// passes the same ones (tests/unit/test_rfc6962_vectors.py, test_note.py).

import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";

import * as v from "../verify.js";
import { VECTORS } from "./helpers.js";

function load(kind) {
  const root = join(VECTORS, "rfc6962", kind);
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith(".json")) out.push([relative(root, p), v.parseJson(readFileSync(p))]);
    }
  };
  walk(root);
  return out;
}

const bytes = (text) => (text ? v.b64decode(text) : new Uint8Array(0));
const INCLUSION = load("inclusion");
const CONSISTENCY = load("consistency");
const INCLUSION_CODES = new Set([
  "index_out_of_range",
  "leaf_hash_invalid",
  "proof_wrong_length",
  "inclusion_proof_invalid",
  "inclusion_root_mismatch",
]);
const CONSISTENCY_CODES = new Set([
  "consistency_sizes_reversed",
  "consistency_from_empty_tree",
  "proof_wrong_length",
  "consistency_proof_invalid",
  "consistency_root_mismatch",
  "consistency_root1_mismatch",
  "consistency_root2_mismatch",
]);

test("the vectors are the repository's 98 + 98", () => {
  assert.equal(INCLUSION.length, 98);
  assert.equal(CONSISTENCY.length, 98);
});

for (const [name, c] of INCLUSION) {
  test(`inclusion vector ${name}`, async () => {
    const args = [c.leafIdx, c.treeSize, bytes(c.leafHash), (c.proof || []).map(bytes), bytes(c.root)];
    if (c.wantErr) {
      await assert.rejects(v.verifyInclusion(...args), (e) => {
        assert.ok(e instanceof v.VerificationError, `${e}`);
        assert.ok(INCLUSION_CODES.has(e.code), e.code);
        return true;
      });
    } else {
      await v.verifyInclusion(...args);
      assert.deepEqual(await v.rootFromInclusion(...args.slice(0, 4)), args[4]);
    }
  });
}

for (const [name, c] of CONSISTENCY) {
  test(`consistency vector ${name}`, async () => {
    const args = [c.size1, c.size2, bytes(c.root1), bytes(c.root2), (c.proof || []).map(bytes)];
    if (c.wantErr) {
      await assert.rejects(v.verifyConsistency(...args), (e) => {
        assert.ok(e instanceof v.VerificationError, `${e}`);
        assert.ok(CONSISTENCY_CODES.has(e.code), e.code);
        return true;
      });
    } else {
      await v.verifyConsistency(...args);
      if (c.size1 !== c.size2) {
        assert.deepEqual(await v.rootFromConsistency(c.size1, c.size2, args[2], args[4]), args[3]);
      }
    }
  });
}

test("the classic 8-leaf RFC 6962 tree", async () => {
  const leaves = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
  const hashes = await Promise.all(leaves.map((h) => v.leafHash(Uint8Array.from(Buffer.from(h, "hex")))));
  const root = async (d) => {
    if (d.length === 1) return d[0];
    let k = 1;
    while (k * 2 < d.length) k *= 2;
    return v.nodeHash(await root(d.slice(0, k)), await root(d.slice(k)));
  };
  assert.equal(v.hex(await root(hashes)), "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
  assert.equal(v.hex(await v.sha256(new Uint8Array(0))), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
});

test("the C2SP signed-note example verifies, and only as written", async () => {
  const c = JSON.parse(readFileSync(join(VECTORS, "signed-note", "c2sp-example.json"), "utf8"));
  const key = v.parseLogVkey(c.vkey);
  assert.equal(key.name, "example.com/foo");
  assert.equal(key.keyId.toString(16).padStart(8, "0"), c.key_id_hex);
  const note = v.parseNote(new TextEncoder().encode(c.note));
  assert.equal(note.text, c.text);
  const opened = await v.openNote(note, [key]);
  assert.equal(opened.text, c.text);
  assert.equal(opened.verified.length, 1);

  // One changed character of the text, or of the signature, and it fails.
  const altered = v.parseNote(c.note.replace("example message", "exemple message"));
  await assert.rejects(v.openNote(altered, [key]), { code: "note_signature_invalid" });
  const sig = note.sigs[0].sig.slice();
  sig[10] ^= 1;
  await assert.rejects(v.openNote({ text: note.text, sigs: [{ ...note.sigs[0], sig }] }, [key]), {
    code: "note_signature_invalid",
  });
  // A key of another name is unknown: nothing verifies.
  const other = { ...key, name: "example.com/bar", keyId: v.keyId("example.com/bar", 1, key.key) };
  await assert.rejects(v.openNote(note, [other]), { code: "note_unverified" });
});

test("vkeys: key ID, type and grammar are checked", () => {
  const c = JSON.parse(readFileSync(join(VECTORS, "signed-note", "c2sp-example.json"), "utf8"));
  const [name, id, key] = c.vkey.split("+");
  assert.throws(() => v.parseVkey(`${name}+00000000+${key}`), { code: "vkey_key_id_mismatch" });
  assert.throws(() => v.parseVkey(`example.com/bar+${id}+${key}`), { code: "vkey_key_id_mismatch" });
  assert.throws(() => v.parseVkey(`${name}+${id}`), { code: "vkey_malformed" });
  assert.throws(() => v.parseVkey(`${name}+${id.slice(1)}+${key}`), { code: "vkey_malformed" });
  assert.throws(() => v.parseVkey(`${name}+${id}+${key.slice(0, -1)}`), { code: "vkey_malformed" });
  assert.throws(() => v.parseVkey(`exa mple+${id}+${key}`), { code: "vkey_malformed" });
  assert.throws(() => v.parseCosignerVkey(c.vkey), { code: "vkey_type_unsupported" });
  assert.equal(v.parseVkey(`${name}+${id.toUpperCase()}+${key}`).name, name);
});
