"""The public explorer: web pages and JSON, served by every node.

- :mod:`~remembrancer.explorer.views` turns a node's state into plain JSON
  values (the ``/v1/explorer/...`` endpoints), reading only bounded ranges:
  a page of a log is an index range, a search uses the store's indexes, so
  every page costs the same at any log size.
- :mod:`~remembrancer.explorer.pages` renders those same values as HTML
  (every dynamic value escaped), so everything a page shows is in its JSON.
- :mod:`~remembrancer.explorer.routes` is the HTTP glue the node mounts under
  ``/explorer`` and ``/v1/explorer``; error statuses come from the node.
- ``static/verify.js`` checks, in the visitor's browser, a record's
  inclusion proof, the checkpoint's log signature and cosignatures, the
  record's own signatures and the federation receipts' countersignatures
  (SHA-256 and Ed25519 through WebCrypto), against keys the visitor sees and
  can replace.  It is a symbolic link to ``clients/js/verify.js``, the npm
  package ``remembrancer-verify`` (one file, no copy; wheels carry the file
  itself).  ``static/explorer.js`` keeps pages live by polling one cheap
  endpoint and re-fetching a page's live regions when something changed.

The layer sits above ``federation`` and below ``node``: it reads the node
through the :class:`~remembrancer.explorer.source.ExplorerSource` protocol.
"""
