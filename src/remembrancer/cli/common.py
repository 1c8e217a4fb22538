"""Shared pieces of the ``remembrancer`` command.

Every failure prints one readable line (``error: <code>: <message>``) and
exits non-zero: 1 when something did not verify, 2 for bad input, usage or
configuration, 3 for anything else (storage, network), 4 when nothing was
found false but not everything could be verified here (``anchor verify``:
an anchor pending, or unchecked for want of chain data or trust).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    NotFoundError,
    PolicyError,
    RemembrancerError,
    VerificationError,
)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INVALID = 1
EXIT_INPUT = 2
EXIT_OTHER = 3
EXIT_UNCHECKED = 4


def exit_code(e: RemembrancerError) -> int:
    if isinstance(e, VerificationError):
        return EXIT_INVALID
    if isinstance(e, FormatError | ConfigError | PolicyError | NotFoundError):
        return EXIT_INPUT
    return EXIT_OTHER


def errors_as_one_line(fn: F) -> F:
    """Turn a RemembrancerError into one line on stderr and the matching exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RemembrancerError as e:
            click.echo(f"error: {e.explain()}", err=True)
            sys.exit(exit_code(e))

    return wrapper  # type: ignore[return-value]


def read_input(path: str, *, limit: int = 1 << 20, what: str = "file") -> bytes:
    """Read a small input file (``-`` for stdin) with a size cap."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except FileNotFoundError as e:
        raise NotFoundError(f"{what} {path} does not exist", code="file_not_found") from e
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}", code="file_unreadable") from e
    if len(data) > limit:
        raise FormatError(f"{what} {path} is larger than {limit} bytes", code="file_too_large")
    return data


def b64list(hashes: Any) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def write_output(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}", code="file_unwritable") from e
