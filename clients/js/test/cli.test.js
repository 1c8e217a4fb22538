// The command line on a log written by the independent test writer
// (helpers.js): genuine files verify (exit 0), altered ones do not (exit 1),
// malformed ones are bad input (exit 2), each with its error code.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";

import {
  BIN,
  b64,
  canon,
  checkpointBody,
  cli,
  consistency,
  leafHashOf,
  makeLog,
  noteSignature,
  tlogProof,
  tmp,
  vkeyOf,
  write,
} from "./helpers.js";

let log;
let dir;
let files;

before(async () => {
  log = await makeLog(11);
  dir = tmp();
  const { note } = await log.checkpointAt(11);
  const old = await log.checkpointAt(6);
  const r = log.records[5];
  files = {
    record: write(dir, "record.json", r.leaf),
    pretty: write(dir, "pretty.json", JSON.stringify(r.record, null, 2)),
    proof: write(dir, "record.tlog-proof", tlogProof(5, log.leaves, note)),
    receipt: write(dir, "receipt.json", JSON.stringify({
      eventHash: r.eventHash,
      index: 5,
      proof: tlogProof(5, log.leaves, note).split("\n\n")[0].split("\n").slice(2),
      checkpoint: note,
    })),
    checkpoint: write(dir, "checkpoint", note),
    oldCheckpoint: write(dir, "checkpoint.6", old.note),
    consistency: write(dir, "consistency.json", JSON.stringify({
      namespace: "dao:test",
      old: 6,
      new: 11,
      proof: consistency(6, log.leaves).map(b64),
      checkpoints: { 6: old.note, 11: note },
    })),
    consistencyLines: write(dir, "consistency.txt", consistency(6, log.leaves).map((h) => b64(h) + "\n").join("")),
    trust: write(dir, "trust.json", JSON.stringify({ log_vkeys: [log.vkey], witness_vkeys: [log.w1vkey, log.w2vkey], min_cosigners: 2 })),
  };
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("verify: a record with its tlog-proof or receipt", () => {
  const ok = cli("verify", files.record, "--proof", files.proof, "--vkey", log.vkey);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, new RegExp(`^OK: ${log.records[5].eventHash} is entry 5 of ${log.origin} at size 11, signed by the log, 0 cosigners\n$`));
  const receipt = cli("verify", files.record, "--receipt", files.receipt, "--vkey", log.vkey);
  assert.equal(receipt.status, 0, receipt.stderr);
  const json = cli("verify", files.pretty, "--proof", files.proof, "--vkey", log.vkey, "--witness-vkey", log.w1vkey,
    "--witness-vkey", log.w2vkey, "--min-cosigners", "2", "--json");
  assert.equal(json.status, 0, json.stderr);
  const report = JSON.parse(json.stdout);
  assert.equal(report.valid, true);
  assert.equal(report.index, 5);
  assert.equal(report.treeSize, 11);
  assert.equal(report.cosigners, 2);
  assert.equal(report.canonical, false);
  assert.deepEqual(report.signatures.map((s) => [s.role, s.valid]), [["actor", true], ["witness", true]]);
  assert.deepEqual(report.witnesses.map((w) => w.name), ["w1.example", "w2.example"]);
  const trust = cli("verify", files.record, "--proof", files.proof, "--trust", files.trust);
  assert.equal(trust.status, 0, trust.stderr);
  const stdin = spawnSync(process.execPath, [BIN, "verify", "-", "--proof", files.proof, "--vkey", log.vkey], {
    input: log.records[5].leaf,
  });
  assert.equal(stdin.status, 0, String(stdin.stderr));
});

test("verify: what does not verify exits 1 with its code", async () => {
  const other = await makeLog(1, log.origin);
  const elsewhere = await makeLog(1, "other.example/dao:test");
  const tampered = write(dir, "tampered.json", canon({ ...log.records[5].record, payload: { amount: 6, memo: "entry 5" } }));
  const proofText = tlogProof(5, log.leaves, (await log.checkpointAt(11)).note);
  const flipped = proofText.replace(/\nindex 5\n(.)/, (_, c) => `\nindex 5\n${c === "A" ? "B" : "A"}`);
  const wrongIndex = proofText.replace("index 5", "index 4");
  const receipt = JSON.parse((await import("node:fs")).readFileSync(files.receipt, "utf8"));
  const cases = [
    [[tampered, "--proof", files.proof, "--vkey", log.vkey], "inclusion_root_mismatch"],
    [[files.record, "--proof", write(dir, "p1", flipped), "--vkey", log.vkey], "inclusion_root_mismatch"],
    [[files.record, "--proof", write(dir, "p2", wrongIndex), "--vkey", log.vkey], "inclusion_root_mismatch"],
    [[files.record, "--proof", files.proof, "--vkey", other.vkey], "checkpoint_unsigned"],
    [[files.record, "--proof", files.proof, "--vkey", elsewhere.vkey], "log_key_unknown"],
    [[files.record, "--proof", files.proof, "--trust", files.trust, "--min-cosigners", "3"], "cosigner_quorum_not_met"],
    [[files.record, "--receipt", write(dir, "r1", JSON.stringify({ ...receipt, eventHash: "sha256:" + "0".repeat(64) })),
      "--vkey", log.vkey], "receipt_record_mismatch"],
  ];
  for (const [args, code] of cases) {
    const r = cli("verify", ...args);
    assert.equal(r.status, 1, `${code}: ${r.stderr}`);
    assert.equal(r.code, code, r.stderr);
  }
});

test("verify: malformed input exits 2 with its code", () => {
  const proofText = (p) => write(dir, "bad.tlog-proof", p);
  const good = tlogProof(5, log.leaves, "x");
  const cases = [
    [["missing.json", "--proof", files.proof, "--vkey", log.vkey], "file_not_found"],
    [[files.record, "--vkey", log.vkey], "usage"],
    [[files.record, "--proof", files.proof, "--receipt", files.receipt, "--vkey", log.vkey], "usage"],
    [[files.record, "--proof", files.proof], "usage"],
    [[files.record, "--proof", files.proof, "--vkey", "nope"], "vkey_malformed"],
    [[files.record, "--proof", files.proof, "--vkey", log.w1vkey.replace("w1.example", log.origin)], "vkey_key_id_mismatch"],
    [[files.record, "--proof", files.proof, "--vkey", log.vkey, "--witness-vkey", log.vkey], "vkey_type_unsupported"],
    [[files.record, "--proof", files.proof, "--vkey", log.vkey, "--min-cosigners", "many"], "usage"],
    [[files.record, "--proof", proofText(good.replace("@v1", "@v9")), "--vkey", log.vkey], "tlog_proof_header"],
    [[files.receipt, "--proof", files.proof, "--vkey", log.vkey], "record_missing_field"],
    [[files.record, "--proof", files.proof, "--trust", files.record], "trust_policy_invalid"],
    [[files.record, "--receipt", files.proof, "--vkey", log.vkey], "json_malformed"],
    [[files.record, "--proof", write(dir, "big", "x".repeat((1 << 20) + 1)), "--vkey", log.vkey], "file_too_large"],
  ];
  for (const [args, code] of cases) {
    const r = cli("verify", ...args);
    assert.equal(r.status, 2, `${code}: ${r.stderr}`);
    assert.equal(r.code, code, r.stderr);
  }
  const unknown = cli("verify", files.record, "--bogus");
  assert.equal(unknown.status, 2);
  assert.equal(cli("frobnicate").status, 2);
  assert.equal(cli("checkpoint", files.checkpoint, "--proof", files.proof, "--vkey", log.vkey).status, 2);
  const help = cli("--help");
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: remembrancer-verify/);
});

test("record: a record alone, its eventHash and signatures", async () => {
  const r = log.records[5];
  const ok = cli("record", files.pretty, "--event-hash", r.eventHash, "--json");
  assert.equal(ok.status, 0, ok.stderr);
  const report = JSON.parse(ok.stdout);
  assert.equal(report.eventHash, r.eventHash);
  assert.equal(report.leafHash, b64(leafHashOf(r.leaf)));
  assert.equal(report.canonical, false);
  assert.match(cli("record", files.record).stdout, /^OK: sha256:[0-9a-f]{64} \(leaf hash .*\), signed by its actor; 2 of 2 signatures verify\n$/);
  const other = cli("record", files.record, "--event-hash", log.records[4].eventHash);
  assert.deepEqual([other.status, other.code], [1, "event_hash_mismatch"]);
  const forged = structuredClone(r.record);
  forged.payload.amount = 99;
  const bad = cli("record", write(dir, "forged.json", canon(forged)));
  assert.deepEqual([bad.status, bad.code], [1, "actor_signature_invalid"]);
  assert.deepEqual([cli("record", files.proof).status, cli("record", files.proof).code], [2, "json_malformed"]);
});

test("checkpoint: the log signature and the witnesses' cosignatures", async () => {
  const ok = cli("checkpoint", files.checkpoint, "--vkey", log.vkey, "--witness-vkey", log.w1vkey, "--min-cosigners", "1", "--json");
  assert.equal(ok.status, 0, ok.stderr);
  const report = JSON.parse(ok.stdout);
  assert.equal(report.treeSize, 11);
  assert.deepEqual(report.unknownSigners, ["w2.example"]);
  const body = checkpointBody(log.origin, log.leaves.slice(0, 10));
  const stale = `${checkpointBody(log.origin, log.leaves)}\n${await noteSignature(log.origin, log.logKey, body)}`;
  const bad = cli("checkpoint", write(dir, "stale", stale), "--vkey", log.vkey);
  assert.equal(bad.status, 1);
  assert.equal(bad.code, "checkpoint_signature_invalid");
  const quorum = cli("checkpoint", files.checkpoint, "--trust", files.trust, "--min-cosigners", "3");
  assert.equal(quorum.code, "cosigner_quorum_not_met");
  assert.equal(cli("checkpoint", write(dir, "junk", "not a note\n"), "--vkey", log.vkey).status, 2);
});

test("cosignature: a witness's cosignature, in the note or in its answer", async () => {
  const ok = cli("cosignature", files.checkpoint, "--witness-vkey", log.w2vkey);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /cosigned by w2\.example at 2025-11-25T19:48:20\.000Z/);
  const body = checkpointBody(log.origin, log.leaves);
  const logOnly = write(dir, "logonly", `${body}\n${await noteSignature(log.origin, log.logKey, body)}`);
  const missing = cli("cosignature", logOnly, "--witness-vkey", log.w1vkey);
  assert.equal(missing.status, 1);
  assert.equal(missing.code, "cosignature_missing");
  const w3 = vkeyOf("w3.example", 4, log.w1.pub); // the w1 key under another name
  const { cosignatureLine } = await import("./helpers.js");
  const answer = write(dir, "answer", await cosignatureLine("w3.example", log.w1, body, 1764100200));
  const fromAnswer = cli("cosignature", logOnly, "--witness-vkey", w3, "--signature", answer);
  assert.equal(fromAnswer.status, 0, fromAnswer.stderr);
  const forOther = write(dir, "answer2", await cosignatureLine("w3.example", log.w1, body.replace("\n11\n", "\n12\n"), 1));
  const wrong = cli("cosignature", logOnly, "--witness-vkey", w3, "--signature", forOther);
  assert.equal(wrong.status, 1);
  assert.equal(wrong.code, "cosignature_invalid");
  assert.equal(cli("cosignature", files.checkpoint).code, "usage");
  // A time beyond what Date can show is still a valid cosignature/v1 time.
  const far = write(dir, "far", await cosignatureLine("w3.example", log.w1, body, (2n ** 62n).toString()));
  const future = cli("cosignature", logOnly, "--witness-vkey", w3, "--signature", far);
  assert.equal(future.status, 0, future.stderr);
  assert.match(future.stdout, /at 4611686018427387904 s after 1970/);
});

test("consistency: the new checkpoint extends the old one, and a fork does not", async () => {
  const ok = cli("consistency", files.consistency, "--vkey", log.vkey, "--json");
  assert.equal(ok.status, 0, ok.stderr);
  assert.deepEqual([JSON.parse(ok.stdout).old.treeSize, JSON.parse(ok.stdout).new.treeSize], [6, 11]);
  const lines = cli("consistency", files.consistencyLines, "--old", files.oldCheckpoint, "--new", files.checkpoint, "--vkey", log.vkey);
  assert.equal(lines.status, 0, lines.stderr);
  // The log signs a second tree of size 11 that rewrites entry 2: a split view.
  const forked = log.leaves.slice();
  forked[2] = forked[3];
  const body = checkpointBody(log.origin, forked);
  const fork = write(dir, "fork", `${body}\n${await noteSignature(log.origin, log.logKey, body)}`);
  const split = cli("consistency", files.consistencyLines, "--old", files.oldCheckpoint, "--new", fork, "--vkey", log.vkey);
  assert.equal(split.status, 1);
  assert.match(split.code, /^consistency_root[12]_mismatch$/);
  const same = cli("consistency", write(dir, "empty", ""), "--old", fork, "--new", files.checkpoint, "--vkey", log.vkey);
  assert.equal(same.code, "consistency_root_mismatch");
  const reversed = cli("consistency", files.consistencyLines, "--old", files.checkpoint, "--new", files.oldCheckpoint, "--vkey", log.vkey);
  assert.equal(reversed.code, "consistency_sizes_reversed");
  const unsigned = cli("consistency", files.consistency, "--vkey", (await makeLog(1, log.origin)).vkey);
  assert.equal(unsigned.code, "checkpoint_unsigned");
  assert.equal(cli("consistency", write(dir, "noisy", "AAAA\n"), "--old", files.oldCheckpoint, "--new", files.checkpoint,
    "--vkey", log.vkey).code, "consistency_proof_malformed");
});
