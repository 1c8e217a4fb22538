"""Fixtures shared by more than one test module.

Keep each fixture small and documented; fixtures that only one module uses
belong in that module.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# --- PostgreSQL -----------------------------------------------------------------

PG_DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_ENV = "REMEMBRANCER_TEST_PG"


def in_ci() -> bool:
    """Whether this run is CI (``CI`` set to a true value): the one place that decides it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# --- under CI, a skip is a failure ------------------------------------------------------------
#
# Tests skip with a message when something they need is absent on a developer's
# machine (a server, a binary, root, an extra).  CI must run every test, so there
# every skip (pytest.skip, skipif marks, importorskip, at collection or at run time)
# is reported as a failure that names what was missing.  Expected failures (xfail)
# are left as they are.

_CI_SKIP = "skipped under CI, where every test must run"


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"{_CI_SKIP}: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{_CI_SKIP}: {_skip_reason(report.longrepr)}"


def _redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The URL of a reachable PostgreSQL server (``$REMEMBRANCER_TEST_PG`` or the local one).

    Skips the test when the server cannot be reached (a failure under CI, like
    every skip).
    """
    dsn = os.environ.get(PG_ENV) or PG_DEFAULT_DSN
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as e:
        reason = (
            f"PostgreSQL is not reachable at {_redact(dsn)} ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
            f"start it or point {PG_ENV} at one"
        )
        pytest.skip(reason)
    return dsn


class StoreUrls:
    """Fresh, empty stores on one backend: :meth:`new` gives the URL of another one."""

    def __init__(self, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend  # "memory", "sqlite" or "postgres"
        self._tmp = tmp_path
        self._request = request
        self._schemas: list[str] = []
        self._dsn = ""

    def new(self, name: str = "store") -> str:
        """A store URL no one used: a SQLite file under the test's temporary
        directory, or a new PostgreSQL schema (dropped after the test)."""
        if self.backend == "memory":
            return "memory://"
        if self.backend == "sqlite":
            return f"sqlite:///{self._tmp / f'{name}.db'}"
        if not self._dsn:
            self._dsn = self._request.getfixturevalue("pg_dsn")
        schema = f"rmb_t_{secrets.token_hex(5)}_{len(self._schemas)}"
        self._schemas.append(schema)
        return f"{self._dsn}{'&' if '?' in self._dsn else '?'}schema={schema}"

    def drop(self) -> None:
        if not self._schemas:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET lock_timeout = '30s'")
            for schema in self._schemas:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


#: The durable backends a node runs on; PostgreSQL's runs need the server (``pg_dsn``).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUrls]:
    urls = StoreUrls(request.param, tmp_path, request)
    if urls.backend == "postgres":
        urls._dsn = request.getfixturevalue("pg_dsn")
    yield urls
    urls.drop()


@pytest.fixture(params=["memory", *BACKENDS])
def any_store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUrls]:
    """As ``store_urls``, and once more on the in-memory store."""
    yield from _store_urls(request, tmp_path)


@pytest.fixture(params=BACKENDS)
def store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUrls]:
    """Run the test once per durable backend (SQLite, PostgreSQL): ``store_urls.new()``
    gives the URL of a fresh, empty store (``store_urls.backend`` says which); the
    PostgreSQL schemas are dropped after the test.  Without a reachable server the
    PostgreSQL run skips (a failure under CI, like every skip)."""
    yield from _store_urls(request, tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_urls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreUrls]:
    """``store_urls`` for a module-scoped fixture: the module's tests run once per backend."""
    yield from _store_urls(request, tmp_path_factory.mktemp("stores"))


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Any]:
    """A fresh anvil chain (a real EVM node) on a free port, stopped after the test.

    Skips without the anvil binary (a failure under CI, like every skip).
    """
    from remembrancer.demo.anvil import find_anvil, start_anvil
    from remembrancer.demo.procs import free_port

    binary = find_anvil()
    if binary is None:
        pytest.skip("anvil not found: run `bash .ci/install-anvil.sh`")
    chain = start_anvil(binary, free_port(), tmp_path / "anvil.log")
    yield chain
    chain.stop()


# --- external tools -------------------------------------------------------------


def _require(found: str | None, reason: str) -> str:
    """``found``, or skip the test for ``reason`` (a failure under CI, like every skip)."""
    if found is None:
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def require_tool() -> Callable[[str | None, str], str]:
    """``require_tool(path_or_None, reason)``: the path, or skip (fail under CI)."""
    return _require


@pytest.fixture(scope="session")
def openssl_bin() -> str:
    """The openssl binary (a second, independent RFC 3161 TSA and verifier)."""
    return _require(shutil.which("openssl"), "the openssl binary is not installed")
