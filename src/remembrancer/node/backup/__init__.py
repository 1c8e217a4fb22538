"""Backups of a node, their offline verification, and their restore into any store.

A backup is one uncompressed tar archive (GNU format, so names and members
of any length fit) that restores into SQLite or PostgreSQL whatever store it
was taken from.  Its members, in this order::

    node/<path>                         configuration files at their paths relative to
                                        node.yaml's directory: node.yaml, the namespaces
                                        file, federation.yaml, anchoring trust files; with
                                        --include-keys also the node key, the admin token
                                        file and anchoring key files (mode 0600)
    external/<n>/<name>                 such a file that lies outside that directory
    logs/<namespace>/checkpoints.jsonl  every stored checkpoint in size order:
                                        {"note": text, "size": n, "time": unix seconds}
    logs/<namespace>/records.jsonl      the keys of every indexed entry in index order:
                                        {"actor", "event_hash": hex|null, "event_id",
                                         "index", "nonce"}
    logs/<namespace>/entries.bin        every entry in index order, each prefixed by its
                                        big-endian uint16 length (the log's tlog-tiles
                                        entry bundles, concatenated)
    state.jsonl                         the named state (scheduler, replicas, federation
                                        scores, governance):
                                        {"key", "scope", "value": base64}
    tables.jsonl                        (format v3) the typed tables, one row a line tagged
                                        with its table: anchor_receipts {namespace, size,
                                        finished, receipt: base64}, witness_cosigned
                                        {origin, size, root_hash, note: base64,
                                        cosignature, time}, federation_receipts
                                        {namespace, receipt_id, receipt: base64},
                                        federation_evidence {ref, subject, incident,
                                        data: base64}
    manifest.json                       last: format, tool, creation time, origin prefix,
                                        node DID, the keys that signed the checkpoints (as
                                        the writer says), the files, each log's origin,
                                        size, root hash, head checkpoint and row counts,
                                        the rows per typed table (v3, "table_rows"),
                                        every other member's size and SHA-256, and
                                        (formats v2, v3) the node key's signature:
                                        {"alg": "Ed25519", "kid": did:key, "sig": base64url}
                                        over MANIFEST_DOMAIN + the RFC 8785 form of the
                                        manifest without "signature"

Tiles are not archived: they are a function of the entries, and a restore
recomputes them (which is also how it proves that the entries are the ones
the checkpoints sign).  Reading an archive (:func:`~.restore.verify_backup`,
:func:`~.restore.restore_backup`, :func:`~.restore.extract_files`) trusts only the keys the
reader names (the restoring node's key, ``--trust``), never the keys the
archive lists, and checks: the manifest's signature by one of them (a v1
manifest is unsigned: read only with ``allow_unsigned``); v1 and v2 archives
kept the typed tables' rows as named state, which a restore moves into the
tables as the store's schema migration does
(:func:`~remembrancer.storage.legacy.split_legacy`); every member's
size and SHA-256 against the manifest; that each log's entries, hashed into
an RFC 6962 tree, give the root of every stored checkpoint at its size and
the manifest's root at the log's size; that every checkpoint is signed by
one of the trusted keys under the log's origin; that the replay index
(``records.jsonl``) is exactly what the entries give, so that no logged
record can be admitted again (the rows loaded are derived from the
entries); the row formats and counts.  It streams every member once, in
bounded memory, and every JSON line goes through the strict parser.  A
restore does this inside the target store's load transaction, so a failed
check leaves the store empty.

Writing (:func:`~.write.create_backup`) reads the store through one consistent
snapshot while the node goes on serving and writing, writes a hidden partial
file (mode 0600) beside the target, verifies it as above, and only then
links it into place.

The modules: :mod:`.manifest` (the manifest and its signature), :mod:`.read`
(streaming and checking an archive), :mod:`.restore` (verify, restore,
extract) and :mod:`.write` (:func:`~.write.create_backup`).
"""
