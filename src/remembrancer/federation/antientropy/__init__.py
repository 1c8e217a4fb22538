"""Anti-entropy: verified replicas of the logs a node witnesses (DESIGN.md 3.10).

Every node keeps, for each log it witnesses (``witness.logs`` in node.yaml:
the origin and the log's vkeys), a *replica*:

- the latest checkpoint, accepted only when it is signed by the log's key and
  is proven to extend the replica's previous one (an RFC 6962 consistency
  proof computed from the source's tiles, or, for a mirror, the root
  recomputed from the entries).  A second, validly signed checkpoint that
  does not extend the first is equivocation: the node builds the
  offline-verifiable ``remembrancer.equivocation/v1`` file and hands it to the
  federation's existing evidence path (probation, gossip);
- with ``mirror: true``, the log's entries as C2SP tlog-tiles (entry bundles
  and hash tiles, kept in the node's store under the log key
  ``replica/<origin>``), served read-only under ``/v1/replicas/<origin>/``
  so a mirror can answer for its peer;
- the log's anchor receipts: every claim on one of the log's checkpoint
  digests that anyone made (the log's own scheduler, or a witness that
  anchored its replica), merged with :func:`core.anchor.resolve_conflicts`
  so every node applies the one conflict order; each claim's checkpoint must
  verify with the log's key and each anchor must cover it; claims are
  judged with this node's own rails when it has the rail, never on their
  ``status`` or ``requiredDepth`` (``reverified_here``: the anchors verified
  here), a claim of ``verified`` that fails or shows no commitment here is
  refused, and only anchors verified here rank as verified in the order;
- the federation receipts of the log, verified with
  :func:`~remembrancer.federation.receipts.verify_federation_receipt` against
  the registry and kept with the node's own final receipts.

Nothing is kept before it verifies.  A source that serves something that
does not verify is refused and counted against the peer that served it
(``PeerScores.on_invalid``); a transport failure is only retried.

Where the data comes from:

- **Checkpoints and tiles** over HTTP from the log's host (the peer whose
  ``heartbeat`` lists the origin): ``/logs/<namespace>/checkpoint`` and
  ``tile/...``; when no host can be reached, from the other peers' mirrors
  (``/v1/replicas/<origin>/``).  Heartbeats carry each host's
  ``(origin, size, root)``; a larger size (or the same size with another
  root) starts a sync at once, and a periodic round retries what failed.
- **Anchors and federation receipts** with signed ``request`` messages
  answered by ``bundle`` messages (docs/spec/federation.md).  Each round a
  node asks every active peer about each namespace it follows (its own and
  those of the logs it witnesses), from a per-peer cursor: the greatest
  anchor time it received from that peer, less :data:`CURSOR_SLACK`; a node
  restarts from zero (a full exchange) on first contact, when a peer comes
  back after missing heartbeats (a healed partition), and every
  :data:`FULL_RESYNC_SECONDS`.  A responder sends at most
  :data:`MAX_REPLY_MESSAGES` bundles per request, oldest items first, so a
  long catch-up continues over several rounds.

Sources are tried in the order of what verified here, never of what a
heartbeat claims; a source that stalls (every fetch has an overall deadline)
or serves what does not verify is scored and tried last.

Mirroring fetches the missing entry bundles (256 entries each) in chunks of
at most :data:`CHUNK_BUNDLES`, within the memory budget
(:func:`~.engine.chunk_room`), hashes them in one batch per chunk and extends
the stored tree; the next chunk is fetched only once this one is stored.  A chunk that ends before
the checkpoint is checked with a consistency proof from the chunk's
recomputed root to the signed root (computed from the source's hash tiles);
the last chunk's root must be the signed root.  Each chunk is committed to
the store in one transaction (entries, tiles and state), so a mirror only
ever holds a verified prefix of a signed tree.

The modules: :mod:`.model` (replica specs and heads), :mod:`.claims` (the
pure anchor-claim merge and bundle packing), :mod:`.source` (where data
comes from), :mod:`.metrics`, :mod:`.engine` (verification and storage: the
heads, the mirror, the claims) and :mod:`.replicator` (the federation
extension that drives the engine).
"""
