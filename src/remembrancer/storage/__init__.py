"""The storage layer of Remembrancer.

:func:`open_store` turns a store URL into a :class:`~remembrancer.storage.base.Store`:

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLite, the default);
- ``postgresql://user@host:port/dbname[?schema=name]`` (``postgres://`` too; any
  other query parameters go to libpq unchanged);
- ``memory://`` (in-memory, for tests).

Backends are imported on use, so PostgreSQL support needs psycopg only when
a ``postgresql://`` URL is opened.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from remembrancer.core.errors import ConfigError
from remembrancer.storage.base import ANY, AppendBatch, EntryRow, LogState, Store

__all__ = ["ANY", "AppendBatch", "EntryRow", "LogState", "Store", "open_store"]

_SCHEMES = "sqlite:///<path>, postgresql://..., memory://"


def open_store(url: str) -> Store:
    """Open the store a URL names; raise ``ConfigError`` for a URL we cannot use."""
    if not isinstance(url, str) or not url:
        raise ConfigError("the store URL is empty", code="store_url_invalid")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(
            f"the store URL {url!r} has no scheme; use one of {_SCHEMES}",
            code="store_url_invalid",
        )
    if scheme == "sqlite":
        return _open_sqlite(url, rest)
    if scheme in ("postgresql", "postgres"):
        return _open_postgres(url)
    if scheme == "memory":
        if rest not in ("", "/"):
            raise ConfigError(
                f"the store URL {url!r} is invalid: memory:// takes no path",
                code="store_url_invalid",
            )
        from remembrancer.storage.memory import MemoryStore

        return MemoryStore()
    raise ConfigError(
        f"unknown store URL scheme {scheme!r} in {url!r}; use one of {_SCHEMES}",
        code="store_scheme_unknown",
        details={"scheme": scheme},
    )


def _open_sqlite(url: str, rest: str) -> Store:
    # sqlite:///a/b.db -> "a/b.db" (relative); sqlite:////a/b.db -> "/a/b.db".
    if not rest.startswith("/"):
        raise ConfigError(
            f"the store URL {url!r} is invalid: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db (no host)",
            code="store_url_invalid",
        )
    if "?" in rest or "#" in rest:
        raise ConfigError(
            f"the store URL {url!r} is invalid: sqlite URLs take no query or fragment",
            code="store_url_invalid",
        )
    path = unquote(rest[1:])
    if not path or path.endswith("/") or "\x00" in path:
        raise ConfigError(f"the store URL {url!r} names no database file", code="store_url_invalid")
    from remembrancer.storage.sqlite import SqliteStore

    return SqliteStore(path)


def _open_postgres(url: str) -> Store:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    if len(schemas) > 1:
        raise ConfigError("the store URL gives ?schema= more than once", code="store_url_invalid")
    schema = schemas[0] if schemas else None
    from remembrancer.storage.postgres import SCHEMA_NAME, PostgresStore

    if schema is not None and not SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"invalid PostgreSQL schema name {schema!r} in the store URL "
            "(lowercase letters, digits and _, at most 63)",
            code="store_url_invalid",
        )
    rest = urlencode([(n, v) for n, v in query if n != "schema"])
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    return PostgresStore(dsn, schema=schema)
