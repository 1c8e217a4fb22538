"""``remembrancer tsa``: the development TSA and an offline RFC 3161 verifier.

``tsa serve`` runs :class:`~remembrancer.anchoring.rfc3161.devtsa.DevTsa` over HTTP.
``tsa verify`` checks any RFC 3161 token (a TimeStampResp or a bare
TimeStampToken, from any TSA) like ``openssl ts -verify``, but with the chain
evaluated at the token's genTime; it prints one line per check.  The trust
bundle's self-issued certificates are the trust anchors; its other
certificates complete the chain of a token that does not embed them.  Exit codes:
0 valid, 1 not valid (including bytes that are not a token), 2 bad input
(missing or unreadable files, an unusable trust bundle, a malformed option).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import signal
import sys
from types import FrameType
from typing import Any

import click

from remembrancer.anchoring.rfc3161.chain import load_certificate, load_trust_bundle
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.anchoring.rfc3161.model import Imprint
from remembrancer.anchoring.rfc3161.parse import parse_response
from remembrancer.anchoring.rfc3161.verify import verify_token
from remembrancer.cli.common import (
    EXIT_INVALID,
    echo_json,
    errors_as_one_line,
    read_input,
)
from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    NotFoundError,
    VerificationError,
)

MAX_TOKEN_BYTES = 256 * 1024


@click.group()
def tsa() -> None:
    """RFC 3161 timestamps: a development TSA and an offline verifier."""


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise FormatError(f"--listen {listen!r} is not HOST:PORT", code="usage")
    port = int(port_text)
    if port > 65535:
        raise FormatError(f"--listen port {port} is out of range", code="usage")
    return host.strip("[]"), port


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@tsa.command("serve")
@click.option(
    "--dir",
    "directory",
    default="dev-tsa",
    show_default=True,
    help="Where the throwaway CA and TSA keys live (created if missing).",
)
@click.option("--listen", default="127.0.0.1:3161", show_default=True, help="HOST:PORT.")
@click.option("--verbose", is_flag=True, help="Log every request.")
@errors_as_one_line
def serve(directory: str, listen: str, verbose: bool) -> None:
    """Run the development TSA (a real RFC 3161 server with its own throwaway CA).

    Clients POST an application/timestamp-query; verify its tokens with the
    printed trust bundle (also served at GET /ca.pem).  For demos and tests:
    the CA key sits next to the certificate."""
    host, port = _parse_listen(listen)
    dev = DevTsa(directory)
    try:
        server = DevTsaServer(dev, host, port, verbose=verbose)
    except OSError as e:
        raise ConfigError(f"cannot listen on {listen}: {e.strerror}", code="listen_failed") from e
    click.echo(f"dev TSA listening on {server.url}")
    click.echo(f"trust bundle: {dev.ca_cert_path.resolve()}")
    click.echo(f"policy: {dev.policy_oid}")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    click.echo("dev TSA stopped")


def _parse_nonce(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError as e:
        raise FormatError(
            f"--nonce {text!r} is not a decimal or 0x-hex integer", code="usage"
        ) from e
    if value < 0:
        raise FormatError("--nonce must not be negative", code="usage")
    return value


def _parse_now(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        if text.lstrip("-").isdigit():
            return dt.datetime.fromtimestamp(int(text), dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as e:
        raise FormatError(f"--now {text!r} is not epoch seconds or ISO 8601", code="usage") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _hash_file(path: str, algorithm: str) -> bytes:
    h = hashlib.new(algorithm)
    try:
        if path == "-":
            stream: Any = sys.stdin.buffer
            for chunk in iter(lambda: stream.read(1 << 16), b""):
                h.update(chunk)
        else:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 16), b""):
                    h.update(chunk)
    except FileNotFoundError as e:
        raise NotFoundError(f"data file {path} does not exist", code="file_not_found") from e
    except OSError as e:
        raise ConfigError(
            f"cannot read data file {path}: {e.strerror}", code="file_unreadable"
        ) from e
    return h.digest()


def _token_hash_algorithm(token: bytes) -> str:
    """The imprint algorithm the token says it used (``--hash auto``)."""
    try:
        alg = parse_response(token).tst_info["message_imprint"]["hash_algorithm"]["algorithm"]
        name = str(alg.native)
    except VerificationError:
        return "sha256"  # verify_token reports the real problem
    return name if name in ("sha256", "sha384", "sha512") else "sha256"


@tsa.command("verify")
@click.option("--data", "data_file", required=True, help="The timestamped file (- for stdin).")
@click.option(
    "--token", "token_file", required=True, help="A TimeStampResp or TimeStampToken (DER or BER)."
)
@click.option(
    "--trust",
    "trust_file",
    required=True,
    help="PEM bundle: the trusted root CAs, plus any intermediate or TSA certificate "
    "the token does not embed.",
)
@click.option("--nonce", default=None, help="The request's nonce (decimal or 0x-hex).")
@click.option("--policy", "policy_oid", default=None, help="Require this TSA policy OID.")
@click.option("--pin", "pin_file", default=None, help="Require this TSA signing certificate (PEM).")
@click.option(
    "--hash",
    "hash_name",
    type=click.Choice(["auto", "sha256", "sha384", "sha512"]),
    default="auto",
    show_default=True,
    help="The imprint's hash algorithm (auto: the one the token names).",
)
@click.option("--now", default=None, help="Clock for the expiry report (epoch or ISO 8601).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@errors_as_one_line
def verify(data_file: str, token_file: str, trust_file: str, nonce: str | None,
           policy_oid: str | None, pin_file: str | None, hash_name: str, now: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Verify an RFC 3161 token over a file, offline, with the chain checked at genTime.

    Like `openssl ts -verify -data FILE -in TOKEN -CAfile BUNDLE -untrusted
    BUNDLE`, except that a token stays valid after its TSA certificate
    expires (the chain is judged at genTime, as with `-attime`).  Exit 0 if
    valid, 1 if not, 2 for bad input."""
    token = read_input(token_file, limit=MAX_TOKEN_BYTES, what="token")
    trust_roots = load_trust_bundle(trust_file)
    pinned = load_certificate(pin_file) if pin_file else None
    expected_nonce = _parse_nonce(nonce)
    clock = _parse_now(now)
    algorithm = _token_hash_algorithm(token) if hash_name == "auto" else hash_name
    imprint = Imprint(algorithm, _hash_file(data_file, algorithm))
    try:
        report = verify_token(
            token,
            imprint,
            nonce=expected_nonce,
            trust_roots=trust_roots,
            policy_oid=policy_oid,
            pinned_cert=pinned,
            now=clock,
        )
    except VerificationError as e:
        if as_json:
            echo_json({"valid": False, "error": e.to_dict()})
            sys.exit(EXIT_INVALID)
        raise
    if as_json:
        echo_json(report.to_dict())
        return
    for check in report.checks:
        click.echo(f"ok  {check.name}: {check.detail}")
    expiry = (
        "TSA certificate expired since genTime (token still valid)"
        if report.cert_expired_now
        else "certificates still within their validity"
    )
    click.echo(
        f"OK: valid RFC 3161 token; genTime {report.gen_time.isoformat()}, "
        f"serial {report.serial_hex}, valid at genTime; {expiry}"
    )


COMMANDS = [tsa]
