"""``remembrancer keygen``."""

from __future__ import annotations

import click

from remembrancer.cli.common import echo_json, errors_as_one_line
from remembrancer.core.cosignature import format_cosigner_vkey
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.node.keyfile import write_key_file


@click.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Key file to create (mode 0600; never overwritten).",
)
@click.option(
    "--name",
    default=None,
    help="Key name for the printed note and cosignature vkeys (default: the DID).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors_as_one_line
def keygen(out: str, name: str | None, as_json: bool) -> None:
    """Create an Ed25519 key file and print its did:key and vkeys."""
    key = SigningKey.generate()
    write_key_file(out, key)
    vkey_name = name or "remembrancer-key"
    info = {
        "file": out,
        "did": key.did,
        "vkey": format_vkey(vkey_name, key.public),
        "cosigner_vkey": format_cosigner_vkey(vkey_name, key.public),
    }
    if as_json:
        echo_json(info)
    else:
        click.echo(f"did:   {info['did']}")
        click.echo(f"vkey:  {info['vkey']}")
        click.echo(f"witness vkey: {info['cosigner_vkey']}")
        click.echo(f"wrote {out} (mode 0600)")


COMMANDS = [keygen]
