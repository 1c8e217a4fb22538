"""The node's routes, one router per concern.

==============  ==================================================================
module          paths
==============  ==================================================================
``records``     ``/v1/node``, ``/v1/namespaces/...``: records, receipts, messages,
                inclusion and consistency proofs, anchor receipts, ``/v1/anchoring``
``tiles``       ``/logs/{namespace}/checkpoint``, ``/logs/{namespace}/tile/...``
``witness``     ``/witness/*`` (C2SP tlog-witness), ``/v1/witnessing``
``federation``  ``/federation/v1/messages``, ``/v1/federation*`` (not replicas)
``replicas``    ``/v1/federation/replicas``, ``/v1/replicas/...``
``admin``       ``/v1/admin/*`` (every route needs the admin token)
``ops``         ``/healthz``, ``/readyz``, ``/metrics``
==============  ==================================================================

The explorer's router lives in :mod:`remembrancer.explorer.routes`.  Shared
pieces (error answers, body reading, admin check, worker threads) are in
:mod:`remembrancer.node.routes.common`.  Every route that reads the store does
so on a worker thread: the event loop never waits for the store.
"""
