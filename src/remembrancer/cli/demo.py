"""``remembrancer demo`` (``make run``): the main job.

A thin command around :class:`remembrancer.demo.supervisor.Supervisor`,
which runs a local federation of three real nodes with the development TSA
and anvil, feeds it, and reports (docs/demo.md).  Here: the options, the
signals (SIGINT and SIGTERM stop it cleanly), and the exit code.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from remembrancer.cli.common import errors_as_one_line


@click.command()
@click.option("--data", "data_dir", default="demo-data", show_default=True,
              type=click.Path(file_okay=False),
              help="Data directory: the nodes, their keys and logs, the TSA's CA, anvil's chain,"
                   " proof files. Kept between runs; a second start extends the same logs.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="Stop cleanly after SECONDS of running (from when the federation is up;"
                   " default: run until Ctrl-C or SIGTERM).")  # fmt: skip
@click.option("--records-per-second", type=click.FloatRange(0, 2000), default=30.0,
              show_default=True, metavar="N",
              help="Signed records fed to the federation per second, spread over the three"
                   " nodes and both namespaces (0: feed nothing).")  # fmt: skip
@click.option("--no-anvil", is_flag=True,
              help="Do not start anvil even if it is installed (no EVM anchoring).")  # fmt: skip
@click.option("--base-port", type=click.IntRange(0, 65531), default=None, metavar="PORT",
              help="Ports P..P+4: the three nodes (P, P+1, P+2), the development TSA (P+3) and"
                   " anvil (P+4); 0: any free ports. Default 8080, or free ports when 8080-8084"
                   " are taken.")  # fmt: skip
@click.option("--progress-seconds", type=click.FloatRange(min=1), default=5.0, show_default=True,
              metavar="SECONDS",
              help="How often to print the progress line.")  # fmt: skip
@click.option("--message-seconds", type=click.FloatRange(min=1), default=20.0, show_default=True,
              metavar="SECONDS",
              help="How often to send a cross-namespace message between nodes.")  # fmt: skip
@errors_as_one_line
def demo(data_dir: str, duration: float | None, records_per_second: float, no_anvil: bool,
         base_port: int | None, progress_seconds: float, message_seconds: float) -> None:  # fmt: skip
    """Run a local federation of three nodes and feed it (the main job).

    Starts the development TSA, anvil when it is installed, and three nodes
    (`remembrancer serve`) on loopback, each hosting the example namespaces
    dao:vaultmesh and fin:clearing with short demo cadences. The nodes
    witness each other's checkpoints, mirror each other's logs, anchor
    together (hybrid collaborative anchoring) and countersign each other's
    anchors into federation receipts. Then it feeds them a steady stream of
    signed records, sends cross-namespace messages between them, prints the
    explorer URLs, a progress line, and the commands that check the proof
    files it writes to DATA/proofs offline.

    Ctrl-C (or SIGTERM) stops it cleanly: the nodes drain and exit, the
    data stays, and the next start extends the same logs, after checking
    them against the checkpoints saved at this stop.
    """
    from remembrancer.demo.supervisor import DemoOptions, Supervisor

    options = DemoOptions(data=Path(data_dir), duration=duration,
                          records_per_second=records_per_second, use_anvil=not no_anvil,
                          base_port=base_port, progress_seconds=progress_seconds,
                          message_seconds=message_seconds)  # fmt: skip
    stop = threading.Event()
    supervisor = Supervisor(options, echo=click.echo, stop=stop)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            supervisor.echo(f"\n{signal.Signals(signum).name}: stopping (the data stays)")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        supervisor.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


COMMANDS = [demo]
