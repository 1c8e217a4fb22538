"""The namespaces file, loaded, validated and hot-reloaded.

``NamespaceSource.current()`` returns the namespaces in force.  It re-reads
the file when its modification time or size changes (checked at most once
per ``interval`` seconds); an invalid edit is refused, logged and kept in
``last_error``, and the previous configuration stays in force.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from remembrancer.configfile import read_yaml
from remembrancer.core.errors import ConfigError
from remembrancer.core.namespace import NamespaceConfig, parse_namespaces
from remembrancer.core.schema import SchemaRegistry

log = logging.getLogger("remembrancer.namespaces")
MAX_CONFIG_BYTES = 1 << 20


def load_namespaces_file(
    path: str | os.PathLike[str], schemas: SchemaRegistry
) -> dict[str, NamespaceConfig]:
    """Read and validate a namespaces YAML file (strict YAML: see
    :mod:`remembrancer.configfile`); ConfigError names the file."""
    p = Path(path)
    doc = read_yaml(p, max_bytes=MAX_CONFIG_BYTES)
    return parse_namespaces(doc, source=str(p), known_schemas=frozenset(schemas.names()))


class NamespaceSource:
    """The namespaces in force, from a file, reloaded on change."""

    def __init__(
        self, path: str | os.PathLike[str], schemas: SchemaRegistry, *, interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self._schemas = schemas
        self._interval = interval
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._current = load_namespaces_file(self.path, schemas)
        self._checked = time.monotonic()
        self.last_error: ConfigError | None = None
        self.generation = 1

    def _file_stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except OSError:
            return (-1, -1)
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> Mapping[str, NamespaceConfig]:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self.reload_if_changed()
        return self._current

    def reload_if_changed(self) -> bool:
        """Reload now if the file changed; return True if a new config took effect."""
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                fresh = load_namespaces_file(self.path, self._schemas)
            except ConfigError as e:
                self.last_error = e
                log.error("namespaces file edit refused, previous config stays: %s", e.message)
                return False
            self._current = fresh
            self.last_error = None
            self.generation += 1
            log.info("namespaces reloaded from %s (%d namespaces)", self.path, len(fresh))
            return True


class StaticNamespaces:
    """A fixed set of namespaces (tests, embedded use)."""

    def __init__(self, namespaces: Mapping[str, NamespaceConfig]) -> None:
        self._current = dict(namespaces)
        self.last_error: ConfigError | None = None
        self.generation = 1

    def current(self) -> Mapping[str, NamespaceConfig]:
        return self._current
