"""``remembrancer init`` and ``remembrancer serve``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from remembrancer.cli.common import echo_json, errors_as_one_line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}  # fmt: skip
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Libraries that log a line per request at INFO (httpx: one per federation message,
# about 1.3 MB an hour of a three-node demo): heard only at DEBUG.
CHATTY_LIBRARIES = ("httpx", "httpcore", "urllib3", "uvicorn.access", "asyncio")


def setup_logging(fmt: str, level: str = "INFO") -> None:
    """One handler on stderr (text or JSON lines) at ``level`` for the node's own
    loggers; the chatty libraries above log at WARNING unless ``level`` is DEBUG."""
    level = level.upper()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = logging.NOTSET if level == "DEBUG" else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--demo-keys",
    is_flag=True,
    help="Also write the PUBLIC demo actor and witness keys the example namespaces accept.",
)
@click.option(
    "--origin-prefix",
    default=None,
    help="Origin prefix of this node's logs (default: <dir>.remembrancer.local).",
)
@click.option(
    "--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to serve on."
)
@errors_as_one_line
def init(directory: str, demo_keys: bool, origin_prefix: str | None, listen: str) -> None:
    """Write a working node directory: node.yaml, a fresh node key, an admin
    token and the example namespaces."""
    from remembrancer.node.config import write_initial_config

    keys = None
    if demo_keys:
        from remembrancer.demo.keys import DEMO_ALIASES, demo_key

        keys = {alias: demo_key(alias) for alias in DEMO_ALIASES}
    out = write_initial_config(
        Path(directory), demo_keys=keys, origin_prefix=origin_prefix, listen=listen
    )
    echo_json(out)
    from remembrancer.program import invocation

    click.echo(f"start it with: {invocation()} serve --config {out['config']}", err=True)


@click.command()
@click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="node.yaml"
)
@click.option(
    "--listen", default=None, help="HOST:PORT (overrides the config and REMEMBRANCER_LISTEN)."
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="INFO: the node's own events; DEBUG adds every HTTP request the node makes"
    " (httpx) and library detail.",
)
@errors_as_one_line
def serve(config_path: str, listen: str | None, log_level: str) -> None:
    """Run a node: the HTTP API, tlog-tiles and the witness endpoint."""
    import faulthandler
    import os

    # A crash in native code (a signal such as SIGSEGV) writes every thread's
    # Python stack to stderr before the process dies, so it can be traced.
    faulthandler.enable()

    from remembrancer.node.app import create_app
    from remembrancer.node.config import load_node_config
    from remembrancer.node.runtime import Node

    config = load_node_config(config_path, dict(os.environ), listen=listen)
    setup_logging(config.log_format, log_level)
    node = Node.from_config(config)
    app = create_app(node)
    logging.getLogger("remembrancer").info(
        "serving %s on http://%s (node %s)", config.origin_prefix, config.listen, node.node_key.did
    )
    from prometheus_client import Counter, Gauge

    closed = Counter("remembrancer_http_connections_closed_total",
                     "Connections the server closed at a limit (server in node.yaml), by reason",
                     ["reason"], registry=node.metrics.registry)  # fmt: skip
    collector = Gauge("remembrancer_gc_threshold",
                      "The garbage collector's thresholds in force, by generation",
                      ["generation"], registry=node.metrics.registry)  # fmt: skip

    def started(thresholds: tuple[int, ...]) -> None:
        for generation, value in enumerate(thresholds):
            collector.labels(str(generation)).set(value)

    run_server(app, config.listen_host, config.listen_port, config.server,
               on_close=lambda why: closed.labels(why).inc(), on_started=started)  # fmt: skip


def server_protocol(settings: Any, on_close: Any = None) -> tuple[type[Any], Any]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) under a
    :class:`~remembrancer.node.connguard.ConnectionGuard` with ``settings``
    (``server`` in node.yaml); the class and the guard."""
    from remembrancer.node.connguard import ConnectionGuard, ConnectionLimits, guarded_protocol

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - httptools is a uvicorn[standard] extra
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    guard = ConnectionGuard(
        ConnectionLimits(
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
            max_half_open=settings.max_half_open,
            max_half_open_per_client=settings.max_half_open_per_client,
        ),
        on_close=on_close,
    )
    return guarded_protocol(base, guard), guard


def run_server(app: Any, host: str, port: int, settings: Any = None, *,
               on_close: Any = None, on_started: Any = None) -> None:  # fmt: skip
    """Serve until SIGINT or SIGTERM, then shut down gracefully (the lifespan
    drains the sequencer) and exit 0.  ``settings``: the ``server`` section of
    node.yaml (connection limits; default: its defaults).  ``on_started`` is
    called with the garbage collector's thresholds once the server is up."""
    import contextlib
    import signal

    import uvicorn

    from remembrancer.node.collector import settle
    from remembrancer.node.config import ServerSettings

    settings = settings or ServerSettings()
    protocol, _ = server_protocol(settings, on_close)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            # What exists once the node has started (modules, the app, the node's
            # state) lives as long as the process: moved out of the collector's
            # reach, it is not walked again by every full collection while
            # records stream through (HTTP ingest 16% and 41% faster in two
            # alternated runs of bench/node.py); young objects are collected in
            # larger batches (node/collector.py).
            thresholds = settle()
            if on_started is not None:
                on_started(thresholds)

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            def stop(signum: int, frame: object) -> None:
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

            previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False,
        timeout_graceful_shutdown=30, lifespan="on", http=protocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keepalive_timeout_s,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )  # fmt: skip
    Server(config).run()


COMMANDS = [init, serve]
