#!/usr/bin/env node
// remembrancer-verify: Remembrancer's offline verifier outside Python.
//
// The command line of ../verify.js (the module every node's explorer also
// serves).  Exit codes as `remembrancer verify`: 0 verified, 1 does not
// verify, 2 bad input or usage, 3 anything else (e.g. no Ed25519 here).
// Failures print one line, `error: <code>: <message>`, on stderr.

import { open } from "node:fs/promises";
import { parseArgs } from "node:util";

import {
  FormatError,
  Unsupported,
  VerificationError,
  verifyCheckpointNote,
  verifyConsistencyProof,
  verifyCosignatures,
  verifyRecordAlone,
  verifyRecordProof,
} from "../verify.js";

const MAX_INPUT = 1 << 20; // bytes read from any one file, as the Python command

const USAGE = `usage: remembrancer-verify <command> [options]

Checks Remembrancer's files offline, like \`remembrancer verify\`.

commands:
  verify RECORD (--proof FILE | --receipt FILE) (--vkey VKEY ... | --trust FILE)
         [--witness-vkey VKEY ...] [--min-cosigners N] [--json]
      RECORD is in the log: its canonical form (RFC 8785) and eventHash, the
      RFC 6962 inclusion proof of a c2sp.org/tlog-proof file (or a node's JSON
      receipt), the checkpoint's log signature, at least N distinct witness
      cosignatures, and the record's actor signature (witness signatures are
      reported).
  record RECORD [--event-hash sha256:HEX] [--json]
      RECORD alone: well formed, its RFC 8785 canonical form, eventHash and
      leaf hash, its actor signature verifies (every signature is reported),
      and its eventHash is the one given.
  checkpoint CHECKPOINT (--vkey VKEY ... | --trust FILE) [--witness-vkey VKEY ...]
         [--min-cosigners N] [--json]
      A checkpoint (C2SP signed note) signed by the log key named after its
      origin, with at least N distinct witness cosignatures.
  cosignature CHECKPOINT --witness-vkey VKEY ... [--signature FILE] [--json]
      Each witness's cosignature/v1 on the checkpoint, found in the note or
      in FILE (signature lines, e.g. a witness's answer to add-checkpoint).
  consistency PROOF (--vkey VKEY ... | --trust FILE) [--old CHECKPOINT] [--new CHECKPOINT] [--json]
      The new checkpoint extends the old one (RFC 6962 consistency proof),
      both signed by the log.  PROOF is what \`remembrancer proof consistency\`
      writes (JSON with both checkpoints) or base64 hashes, one a line.

options:
  --vkey VKEY            a log's note verifier key, <name>+<key ID>+<base64> (repeatable)
  --witness-vkey VKEY    a witness's cosignature/v1 vkey (type 0x04) (repeatable)
  --min-cosigners N      distinct witness cosignatures required (default 0)
  --trust FILE           a trust policy as JSON: {"log_vkeys": [...],
                         "witness_vkeys": [...], "min_cosigners": N}
  --json                 print what was checked as JSON
  -h, --help             this text

A file name '-' reads standard input.  Exit status: 0 verified, 1 does not
verify, 2 bad input, 3 other failures.
`;

const OPTIONS = {
  proof: { type: "string" },
  receipt: { type: "string" },
  vkey: { type: "string", multiple: true },
  "witness-vkey": { type: "string", multiple: true },
  "min-cosigners": { type: "string" },
  trust: { type: "string" },
  signature: { type: "string" },
  old: { type: "string" },
  new: { type: "string" },
  "event-hash": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

// Which options each command takes, and how many positional arguments.
const COMMANDS = {
  verify: { args: ["RECORD"], options: ["proof", "receipt", "vkey", "witness-vkey", "min-cosigners", "trust"] },
  record: { args: ["RECORD"], options: ["event-hash"] },
  checkpoint: { args: ["CHECKPOINT"], options: ["vkey", "witness-vkey", "min-cosigners", "trust"] },
  cosignature: { args: ["CHECKPOINT"], options: ["witness-vkey", "signature"] },
  consistency: { args: ["PROOF"], options: ["vkey", "trust", "old", "new"] },
};

const usage = (message) => new FormatError(message, { code: "usage" });

async function readInput(path, what) {
  const chunks = [];
  let size = 0;
  if (path === "-") {
    for await (const chunk of process.stdin) {
      chunks.push(chunk);
      size += chunk.length;
      if (size > MAX_INPUT) break;
    }
  } else {
    let handle;
    try {
      handle = await open(path, "r");
      const buffer = new Uint8Array(MAX_INPUT + 1);
      for (;;) {
        const { bytesRead } = await handle.read(buffer, size, buffer.length - size);
        if (bytesRead === 0) break;
        size += bytesRead;
        if (size > MAX_INPUT) break;
      }
      chunks.push(buffer.subarray(0, size));
    } catch (e) {
      if (e.code === "ENOENT") throw new FormatError(`${what} ${path} does not exist`, { code: "file_not_found" });
      throw new FormatError(`cannot read ${what} ${path}: ${e.message}`, { code: "file_unreadable" });
    } finally {
      await handle?.close();
    }
  }
  if (size > MAX_INPUT) {
    throw new FormatError(`${what} ${path} is larger than ${MAX_INPUT} bytes`, { code: "file_too_large" });
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function minCosigners(text) {
  if (text === undefined) return null;
  if (!/^[-+]?[0-9]+$/.test(text)) throw usage(`--min-cosigners: '${text}' is not a valid integer`);
  return Number(text);
}

const optional = (path, what) => (path === undefined ? null : readInput(path, what));

async function run(command, [file], o) {
  const trust = {
    logVkeys: o.vkey || [],
    witnessVkeys: o["witness-vkey"] || [],
    minCosigners: minCosigners(o["min-cosigners"]),
  };
  if (command === "verify") {
    if ((o.proof === undefined) === (o.receipt === undefined)) throw usage("give exactly one of --proof and --receipt");
    const record = await readInput(file, "record");
    const proof = await optional(o.proof, "proof");
    const receipt = await optional(o.receipt, "receipt");
    const policy = await optional(o.trust, "trust policy");
    const r = await verifyRecordProof({ record, proof, receipt, trust: policy, ...trust });
    return [r, `OK: ${r.eventHash} is entry ${r.index} of ${r.origin} at size ${r.treeSize}, signed by the log, ${r.cosigners} cosigners`];
  }
  if (command === "record") {
    const record = await readInput(file, "record");
    const r = await verifyRecordAlone({ record, eventHash: o["event-hash"] ?? null });
    const valid = r.signatures.filter((x) => x.valid).length;
    return [r, `OK: ${r.eventHash} (leaf hash ${r.leafHash}), signed by its actor; ${valid} of ${r.signatures.length} signatures verify`];
  }
  if (command === "checkpoint") {
    const checkpoint = await readInput(file, "checkpoint");
    const policy = await optional(o.trust, "trust policy");
    const r = await verifyCheckpointNote({ checkpoint, trust: policy, ...trust });
    return [r, `OK: checkpoint of ${r.origin} at size ${r.treeSize}, root ${r.root}, signed by the log, ${r.cosigners} cosigners`];
  }
  if (command === "cosignature") {
    const checkpoint = await readInput(file, "checkpoint");
    const signatures = await optional(o.signature, "signature lines");
    const r = await verifyCosignatures({ checkpoint, signatures, witnessVkeys: trust.witnessVkeys });
    const when = r.witnesses.map((w) => `${w.name} at ${time(w.timestamp)}`);
    return [r, `OK: checkpoint of ${r.origin} at size ${r.treeSize} cosigned by ${when.join(", ")}`];
  }
  const proof = await readInput(file, "consistency proof");
  const old = await optional(o.old, "checkpoint");
  const latest = await optional(o.new, "checkpoint");
  const policy = await optional(o.trust, "trust policy");
  const r = await verifyConsistencyProof({ proof, old, new: latest, trust: policy, logVkeys: trust.logVkeys });
  return [r, `OK: ${r.origin} at size ${r.new.treeSize} extends size ${r.old.treeSize}, both signed by the log`];
}

// A cosignature's POSIX time as ISO 8601, or as seconds beyond Date's range.
function time(seconds) {
  const ms = Number(seconds) * 1000;
  return Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : `${seconds} s after 1970`;
}

function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]));
  }
  return value;
}

async function main(argv, out = process.stdout, err = process.stderr) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    err.write(`error: usage: ${e.message}\n(remembrancer-verify --help for usage)\n`);
    return 2;
  }
  const { values: o, positionals } = parsed;
  const [command, ...args] = positionals;
  if (o.help || command === "help") {
    out.write(USAGE);
    return 0;
  }
  const spec = COMMANDS[command];
  try {
    if (!spec) throw usage(command ? `unknown command '${command}'` : "give a command");
    const stray = Object.keys(o).filter((k) => k !== "json" && !spec.options.includes(k));
    if (stray.length) throw usage(`${command} does not take --${stray[0]}`);
    if (args.length !== spec.args.length) throw usage(`${command} takes ${spec.args.join(" ")}`);
    const [report, line] = await run(command, args, o);
    out.write(o.json ? JSON.stringify(sorted(report), null, 2) + "\n" : line + "\n");
    return 0;
  } catch (e) {
    if (e instanceof VerificationError) {
      err.write(`error: ${e.explain()}\n`);
      return 1;
    }
    if (e instanceof FormatError) {
      err.write(`error: ${e.explain()}\n`);
      if (e.code === "usage") err.write(`(remembrancer-verify --help for usage)\n`);
      return 2;
    }
    if (e instanceof Unsupported) {
      err.write(`error: unsupported: ${e.message}\n`);
      return 3;
    }
    err.write(`error: internal: ${e && e.stack ? e.stack : e}\n`);
    return 3;
  }
}

process.exitCode = await main(process.argv.slice(2));
