"""The ``remembrancer`` command."""

from __future__ import annotations

import click

from remembrancer import __version__


@click.group()
@click.version_option(__version__, prog_name="remembrancer")
def main() -> None:
    """Remembrancer: verifiable, federated memory."""
