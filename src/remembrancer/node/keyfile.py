"""Key files on disk: read bounded, written with mode 0600, never half-written.

The format (``docs/spec/keyfile.md``) is :func:`remembrancer.core.keys.format_key_file`
and :func:`~remembrancer.core.keys.parse_key_file`, pure; this module is the
file system side.  A new key file is created with ``O_CREAT | O_EXCL``, so an
existing one is never touched; replacing one writes a temporary file beside
it and renames it over, so readers see the old key or the new one.  A key
file over :data:`~remembrancer.core.keys.MAX_KEY_FILE_BYTES` is refused
without being read.
"""

from __future__ import annotations

import contextlib
import os

import nacl.utils

from remembrancer.core.errors import ConfigError, NotFoundError
from remembrancer.core.keys import MAX_KEY_FILE_BYTES, SigningKey, format_key_file, parse_key_file

__all__ = ["read_key_file", "write_key_file"]


def write_key_file(
    path: str | os.PathLike[str], key: SigningKey, *, overwrite: bool = False
) -> None:
    """Write ``key`` to ``path`` with mode 0600.

    Without ``overwrite`` the file is created with ``O_CREAT | O_EXCL`` and an
    existing file is never touched (ConfigError ``keyfile_exists``).  With
    ``overwrite`` a temporary file is written beside it and renamed over it,
    so readers see the old key or the new one, never a partial file.
    Other OS errors are ConfigError ``keyfile_unwritable``.
    """
    data = format_key_file(key)
    target = os.fspath(path)
    dest = f"{target}.tmp-{os.getpid()}-{nacl.utils.random(6).hex()}" if overwrite else target
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(dest, flags, 0o600)
    except FileExistsError as e:
        raise ConfigError(
            f"key file {target} already exists; refusing to overwrite it", code="keyfile_exists"
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot create key file {target}: {e}", code="keyfile_unwritable") from e
    try:
        try:
            os.fchmod(fd, 0o600)  # independent of the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(dest, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(dest)
        raise ConfigError(f"cannot write key file {target}: {e}", code="keyfile_unwritable") from e


def read_key_file(path: str | os.PathLike[str]) -> SigningKey:
    """Read and strictly parse a key file (see :func:`parse_key_file`).

    Files over 4 KiB are refused (FormatError ``keyfile_too_large``) without
    being read; a missing file is NotFoundError ``keyfile_not_found``; other OS
    errors are ConfigError ``keyfile_unreadable``.
    """
    target = os.fspath(path)
    try:
        with open(target, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError as e:
        raise NotFoundError(f"key file {target} does not exist", code="keyfile_not_found") from e
    except OSError as e:
        raise ConfigError(f"cannot read key file {target}: {e}", code="keyfile_unreadable") from e
    return parse_key_file(data)
