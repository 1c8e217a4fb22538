"""``remembrancer namespace list|show``."""

from __future__ import annotations

from importlib import resources

import click

from remembrancer.cli.common import echo_json, errors_as_one_line
from remembrancer.core.errors import NotFoundError
from remembrancer.core.schema import SchemaRegistry
from remembrancer.log.namespaces import load_namespaces_file


def example_namespaces_path() -> str:
    return str(resources.files("remembrancer.examples").joinpath("namespaces.yaml"))


namespaces_option = click.option(
    "--namespaces",
    "namespaces_file",
    envvar="REMEMBRANCER_NAMESPACES",
    default=None,
    type=click.Path(dir_okay=False),
    help="Namespaces YAML file (default: the bundled example; env REMEMBRANCER_NAMESPACES).",
)


@click.group()
def namespace() -> None:
    """Inspect namespace configuration."""


@namespace.command("list")
@namespaces_option
@errors_as_one_line
def list_cmd(namespaces_file: str | None) -> None:
    """List namespaces with their witness quorum and schemas."""
    spaces = load_namespaces_file(
        namespaces_file or example_namespaces_path(), SchemaRegistry.bundled()
    )
    for name, ns in spaces.items():
        levels = ", ".join(f"{lv.level} {lv.target} every {lv.every}" for lv in ns.cadence.levels)
        click.echo(
            f"{name}\t{ns.min_required}-of-{len(ns.witnesses)} witnesses\t{len(ns.schema_allow)} schemas\t{levels}"
        )


@namespace.command("show")
@click.argument("name")
@namespaces_option
@errors_as_one_line
def show_cmd(name: str, namespaces_file: str | None) -> None:
    """Show one namespace's policy as JSON."""
    spaces = load_namespaces_file(
        namespaces_file or example_namespaces_path(), SchemaRegistry.bundled()
    )
    if name not in spaces:
        raise NotFoundError(f"namespace {name} is not configured", code="namespace_unknown")
    echo_json(spaces[name].to_dict())


COMMANDS = [namespace]
