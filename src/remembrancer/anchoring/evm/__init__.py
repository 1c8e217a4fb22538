"""The EVM rail: anchors a digest on any EIP-155 chain (target ``eip155:<chain id>``).

Commitment
----------
One transaction per anchor whose **calldata is exactly** ``b"RV" + digest``
(34 bytes: ASCII ``RV``, then the 32-byte digest), value 0, sent to the
configured ``to`` address or, by default, to the sender itself.  The same
``RV || digest`` layout as the Bitcoin OP_RETURN rail.

Calldata rather than the seed's anchor contract (``anchor(bytes32 root,
bytes32 batchId, string memo, bool persist)`` emitting ``BatchAnchored``):

- no contract to deploy, audit or keep the address of: any EVM chain works
  with nothing but a funded key;
- the digest is in the transaction itself, which every node keeps; no event
  log (pruned by some clients and providers) is needed to verify it;
- it is the cheapest commitment (about 22.4k gas after EIP-7623).

Evidence (``Anchor.evidence``), lowercase hex, integers as JSON numbers::

    {chainId, txHash, from, to, blockNumber, blockHash, transactionIndex}

``blockNumber``/``blockHash``/``transactionIndex`` are ``null`` while the
transaction is not mined.  ``txRef`` is the transaction hash and ``anchorTs``
the block's timestamp.

Verification (``verify``), against the node's current view, gives a
:class:`~remembrancer.anchoring.base.Verdict` from the evidence alone (the
anchor's ``status`` and ``finality`` are never read):

- the node serves the target's chain (else ``unchecked``, code
  ``evm_chain_mismatch``: the rail cannot judge the anchor there; likewise
  an unreachable node or an inconsistent answer);
- the transaction exists, carries the target's chain id (EIP-155 / typed),
  was sent by the recorded ``from`` (and, if ``senders`` is configured, by
  one of those addresses), to the recorded ``to`` (and to the configured
  ``to`` when there is one), with calldata ``RV || root``; any mismatch is
  ``failed`` with its own code (``evm_sender_mismatch``,
  ``evm_digest_mismatch``, ...);
- its receipt has status 1 (a reverted transaction is ``failed``);
- confirmations ``head - block + 1`` against ``max(confirmations,
  ctx.required_depth)``, both this node's settings: below it the verdict is
  ``pending`` (``anchor_depth_insufficient``), at or above it ``verified``;
  a transaction still in the pool is ``pending`` (``evm_tx_not_mined``);
- the block recorded in the evidence is still the canonical one at its
  height; if not (or the transaction vanished or moved), the verdict is
  ``lost``, and :func:`~remembrancer.anchoring.base.judged` makes an anchor
  this node had verified ``reorged`` (the scheduler anchors again).  The
  verdict carries the evidence refreshed with the block the transaction is
  in now.

Only the sender check of the *recorded* address is implicit: a federation
peer verifies anchors sent with other nodes' keys, so the rail's own key is
never assumed to be the sender.  List the accepted addresses in ``senders``
to pin them (including retired keys).

Settings (``anchoring.eip155."<chain id>"``)::

    rpc:           JSON-RPC URL (http/https; user:password@ becomes Basic auth)
    key_file:      file holding the secp256k1 private key as 0x-hex; read at
                   each submission, refused if group/other may read it
    key_env:       or: name of an environment variable holding the key
                   (neither: a verify-only rail)
    to:            address receiving the anchor transactions (default: sender)
    senders:       addresses accepted as senders when verifying (default: any,
                   as recorded)
    confirmations: the least depth this node accepts for any anchor of the
                   target, its own or a peer's (default 1); a cadence level
                   may ask for more
    timeout:       seconds per JSON-RPC request (default 10)
    receipt_wait:  seconds submit waits for the receipt (default 5); when it
                   is not mined by then, the anchor is returned ``submitted``
                   without block fields
    gas_price:     auto (EIP-1559 when the latest block has a base fee, else
                   legacy) | eip1559 | legacy (eth_gasPrice)
    max_fee_gwei:  refuse to submit (transient) when the fee per gas would
                   exceed this
    gas_limit:     fixed gas limit (default: eth_estimateGas)

Errors: an unreachable node, a timeout, HTTP 429/5xx, or an unexpected answer
are ``transient``; HTTP 401/403 and an unusable key are ``auth``; a JSON-RPC
error answering a submission (insufficient funds, nonce too low, underpriced,
execution reverted) and a node on another chain are ``validation``.

``eth-account`` (the ``evm`` extra) signs transactions; it is imported only
when a key is configured or used, so this package imports without it.

The modules: :mod:`.calldata` (the commitment), :mod:`.rpc` (a bounded
JSON-RPC client) and :mod:`.rail` (:class:`~.rail.EvmRail`).
"""
