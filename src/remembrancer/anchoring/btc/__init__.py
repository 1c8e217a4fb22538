"""The Bitcoin rail: ``btc:<mainnet|testnet|regtest>`` (DESIGN.md section 3.8).

Two modes commit a 32-byte digest (a checkpoint-body hash or an aggregation
root) to Bitcoin:

``ots`` (default): OpenTimestamps calendars.
    *What is timestamped.*  The proof is a ``DetachedTimestampFile`` whose
    file hash operation is SHA-256 and whose file digest **is the anchored
    32-byte digest itself**.  For one log the digest is SHA-256 of the
    checkpoint body, so the stock client checks it with
    ``ots verify -f <checkpoint body file> proof.ots``; for an aggregation
    root, ``ots verify -d <hex digest> proof.ots``.  As the ``ots`` client
    does, the digest is first blinded for privacy: append 16 random bytes,
    SHA-256; calendars only see that *commitment* (``tx_ref`` is
    ``ots:<commitment hex>``).  ``submit`` POSTs the commitment to every
    configured calendar (``<calendar>/digest``), merges the answers (each a
    Timestamp ending in a ``PendingAttestation``) and stores the ``.ots``
    bytes, base64, in ``evidence["ots"]``; the anchor is ``submitted``.
    ``verify`` parses the proof strictly (size cap, no trailing bytes),
    asks the calendars named by its pending attestations for an upgrade
    (``<calendar>/timestamp/<commitment hex>``; only calendars that are
    configured or on the whitelist, best effort: offline is fine), and for
    every ``BitcoinBlockHeaderAttestation`` compares the message the proof
    reaches with the Merkle root of the block header at that height (at
    most 16 attestations, lowest heights first).  One matching attestation
    suffices (the ``ots`` client's rule); the lowest matching height gives
    ``block_number`` and ``anchor_ts`` (header time).  A proof whose only
    attestations are pending calendar promises is ``pending``
    (``ots_pending_only``), never verified, whatever the anchor claims.
    With none matching, a mismatch fails the anchor unless another
    attestation names a height whose header this node does not have: then
    the verdict is ``unchecked`` (``btc_header_unavailable``).

``op_return``: a transaction with the output ``OP_RETURN <"RV" || digest>``
    (minimal push, 34 bytes), built, funded, signed and sent by Bitcoin
    Core's wallet (``createrawtransaction`` / ``fundrawtransaction`` /
    ``signrawtransactionwithwallet`` / ``sendrawtransaction``).  The signed
    transaction is decoded here and checked to carry that output before it
    is sent.  ``verify`` looks the transaction up (``getrawtransaction``
    verbose, with the block hash when known, falling back to the wallet's
    ``gettransaction``), fetches ``gettxoutproof`` (a BIP 37 merkle block),
    and checks: the txid is the hash of the stored transaction, its
    ``OP_RETURN`` payload, the partial Merkle tree (Bitcoin Core's rules,
    including the CVE-2012-2459 duplicate check) up to the header's Merkle
    root, the header's proof of work, that the header is the canonical one
    at its height, and the confirmations.  Once found, the transaction, the
    proof and the block height are kept in the evidence, so a later check
    runs offline given the headers (also when the node is down).  A
    verified anchor whose transaction left its block is ``reorged``.

``verify`` follows ``evidence["mode"]``, not the configured mode: a rail set
up for ``ots`` with a ``headers_file`` also re-checks complete
``op_return`` evidence.

Headers come from ``headers_file`` when it is configured (lines
``<height> <80-byte header hex>``; ``#`` comments allowed), which makes
verification fully offline, else from ``bitcoin_rpc`` (``getblockhash`` +
``getblockheader <hash> false``; the node's chain, from
``getblockchaininfo``, must match the target's network).  Every header used
is hashed here and must meet its own proof-of-work target, within the
network's limit.  Confirmations are ``tip - height + 1``: the RPC's
``getblockcount`` as tip, or, for a headers file, the end of the run of
consecutive headers that link (``hashPrevBlock``) upwards from the attested
one; headers after a gap do not count.  The verdict
(:class:`~remembrancer.anchoring.base.Verdict`) is ``verified`` only when
every check passed and the depth reaches ``max(confirmations,
ctx.required_depth)``: the rail's ``confirmations`` setting (default 1, the
least depth this node accepts for any anchor of the target) and the
cadence level's, both this node's own; less deep, it is ``pending``
(``anchor_depth_insufficient``).  Without the header an attestation or a
transaction needs, it is ``unchecked``, never ``verified``.  The anchor's
own ``status`` and ``finality`` are never read.

Failures: a proof that does not verify gives a ``failed`` verdict whose
code comes from the :class:`VerificationError` raised by the pure helpers
here (``ots_too_large``, ``ots_truncated``, ``ots_malformed``,
``ots_unsupported``, ``ots_digest_mismatch``, ``btc_merkle_root_mismatch``,
``btc_op_return_mismatch``, ``btc_merkle_path_invalid``,
``btc_tx_mismatch``, ...); a block that is no longer canonical marks the
verdict ``lost`` (an anchor this node had verified becomes ``reorged``).  A
rail that cannot be asked (calendars or the RPC unreachable or 5xx,
401/403, refusals and bad answers) gives an ``unchecked`` verdict with the
:class:`RailError`'s code; ``submit`` raises those errors.

Limitation: no Bitcoin Core binary can run where this was written, so
``op_return`` mode and the RPC header source were tested against a stub
JSON-RPC server replaying responses shaped like Bitcoin Core's (a regtest
chain built in the test), plus a real ``gettxoutproof`` output from Bitcoin
Core 0.11 for the Merkle-block parser.  ``ots`` verification was tested
offline with a real ``.ots`` proof and the real mainnet header it attests.

The ``bitcoin`` extra provides ``opentimestamps`` (>=0.4.5,<0.5) and
``python-bitcoinlib`` (>=0.12,<0.13); both are imported lazily.

The modules: :mod:`.headers` (block headers, proof of work, headers files),
:mod:`.rpc` (a bounded Bitcoin Core JSON-RPC client), :mod:`.ots`
(OpenTimestamps proofs), :mod:`.merkleblock` (transactions and BIP 37
Merkle blocks) and :mod:`.rail` (:class:`BitcoinRail`); its settings are
:class:`remembrancer.anchoring.settings.BtcSettings`.
"""
