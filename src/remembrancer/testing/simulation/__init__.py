"""A deterministic, in-process simulation of a federation of many nodes.

Every simulated node runs the project's real federation code; only the
network, the clock and the logs' storage are simulated:

- **Real**: :class:`~remembrancer.federation.service.FederationService` (message
  handling, heartbeats, peer scoring with
  :class:`~remembrancer.federation.registry.scoring.PeerScores`, proposals,
  countersigning, final receipts), its :class:`~remembrancer.federation.protocol.verify.MessageVerifier`
  (replay, timestamp window against the node's virtual clock, roles,
  signatures), :class:`~remembrancer.federation.transport.FederationClient`
  (timeouts, retries with backoff and jitter), the witnessing client
  :class:`~remembrancer.federation.witnessing.CheckpointWitnessing`, the witness
  server :class:`~remembrancer.federation.witness_server.WitnessServer` (its
  state in the node's memory store, compare-and-swap on size) and
  ``cosignature/v1`` cosignatures, checkpoints signed and opened by
  :mod:`remembrancer.core.checkpoint`, RFC 6962 consistency proofs, federation
  receipts checked by :func:`~remembrancer.federation.receipts.verify_federation_receipt`,
  and RFC 3161 anchors made by a development TSA in the process and
  re-verified by every peer with the real :class:`~remembrancer.anchoring.rfc3161.rail.Rfc3161Rail`.
- **Simulated**: the network (an httpx transport that delivers each request to
  the receiving node's code after a latency drawn from a seeded random
  generator, loses messages with a given probability, and cuts links during a
  partition: a lost message is never delivered and the sender sees its own
  timeout expire), the clock (an asyncio event loop whose time only advances
  when every task waits, see :class:`~.clock.VirtualClockLoop`; each node reads it
  with a fixed offset, its clock skew), each node's log (an in-memory RFC 6962
  tree, :class:`~.logs.SimLog`) and the small HTTP glue of the node's routes (the
  witness endpoint, and the checkpoint and hash tiles anti-entropy reads).  Processing takes no
  virtual time, and message size does not change latency.
- **Anti-entropy** is the node's own
  :class:`~remembrancer.federation.antientropy.replicator.Replicator` (every
  other node's log followed as a replica), with its tiles client and its
  ``messages`` client on the simulated network; :class:`~.logs.ReplicaView`
  reads the verified heads the convergence tracking compares.

Determinism: there are no threads (``asyncio.to_thread`` runs inline, see
:class:`~.clock._InlineExecutor`), no sockets and no wall clock in the simulated
logic; every random draw comes from generators seeded with ``seed`` in the
order of events, which the virtual clock fixes.  The same seed gives the
same :meth:`~.config.SimulationReport.to_dict` byte for byte (it includes a digest of
every transmission: time, ends, kind, status, size).  Only ``cpu_seconds``
(real processor time, for context) varies.

Entry points: :func:`~.federation.simulate` (one federation of ``n`` nodes, the three
scenarios) and ``python -m bench --only simulation``; see docs/simulation.md.

The modules: :mod:`.config` (configuration and results), :mod:`.clock`
(virtual time), :mod:`.network`, :mod:`.logs` (logs, witness glue,
anti-entropy of heads) and :mod:`.federation` (nodes, scenarios,
:func:`~.federation.simulate`).
"""
