"""The ``remembrancer`` command (see ``remembrancer --help``)."""

from __future__ import annotations

import click

from remembrancer import __version__


@click.group()
@click.version_option(__version__, prog_name="remembrancer")
def main() -> None:
    """Remembrancer: verifiable, federated memory.

    Namespaced append-only Merkle logs whose records pass an admission
    policy, whose checkpoints are C2SP signed notes, and whose every claim
    comes with a proof that anyone can check offline.

    Commands in this help and in the docs are written `remembrancer ...`. In
    a checkout where `make run` or `make test` built `.venv/`, either activate
    it once (`. .venv/bin/activate`) or type `.venv/bin/remembrancer ...`.
    """


def _load_commands() -> None:
    from remembrancer.cli import (
        anchor,
        backup,
        client,
        demo,
        federation,
        governance,
        keys,
        monitor,
        namespace,
        node,
        record,
        tsa,
        verify,
    )

    for module in (
        keys,
        record,
        verify,
        namespace,
        node,
        client,
        monitor,
        anchor,
        federation,
        governance,
        tsa,
        backup,
        demo,
    ):
        for command in module.COMMANDS:
            main.add_command(command)


_load_commands()
