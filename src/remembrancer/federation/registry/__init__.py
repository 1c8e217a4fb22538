"""The federation's peer registry, its quorum-approved changes, and peer scoring.

- :mod:`.model`: :class:`Peer`, :class:`Registry` and :class:`StatusChange` values;
- :mod:`.parse`: strict validation of ``federation.yaml`` and registry record payloads;
- :mod:`.proposals`: :class:`RegistryState`, the pure state machine of registry changes;
- :mod:`.scoring`: :class:`PeerScores`, each node's local view of its peers.

Everything here is pure (no clock, no I/O) except
:func:`~remembrancer.federation.registry.parse.load_federation_file`.
"""
