"""Ed25519 verification in worker processes, off the interpreter lock.

PyNaCl releases the GIL while libsodium verifies, but a verifying thread
must take the GIL back between signatures; while the event loop thread runs
Python (parsing records, answering HTTP) a waiting thread gets it only
every switch interval (5 ms), so threads leave a core idle under load.  A
worker process has an interpreter of its own: it verifies a whole chunk of
signatures without waiting for anyone.

:func:`verify_packed` is what a worker runs (only PyNaCl's libsodium binding,
the very function ``PublicKey.verify`` calls, so the verdicts are the same);
:func:`shared_pool` is one lazily started pool per process, shared by every
sequencer in it, so that starting workers is paid once.
"""

from __future__ import annotations

import atexit
import multiprocessing
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Final

import nacl.bindings
import nacl.exceptions

# A chunk of jobs travels to a worker as one bytes object (one pickled object,
# copied once, instead of a list of tuples pickled item by item): per message,
# a header (the message's length, the number of keys), the message, then each
# 32-byte public key and 64-byte signature to verify over it.
_HEADER: Final = struct.Struct(">IB")
KEY_SIZE: Final = 32
SIG_SIZE: Final = 64
MAX_PAIRS: Final = 255  # keys per message in one header

_VALID: Final = 1
_INVALID: Final = 0


def pack_jobs(parts: list[bytes], message: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> None:
    """Add to ``parts`` (joined, a chunk for :func:`verify_packed`) the
    signatures ``pairs`` (public key, signature) to verify over ``message``."""
    if not 0 < len(pairs) <= MAX_PAIRS:
        raise ValueError(f"1 to {MAX_PAIRS} signatures per message, not {len(pairs)}")
    parts.append(_HEADER.pack(len(message), len(pairs)))
    parts.append(message)
    for key, sig in pairs:
        if len(key) != KEY_SIZE or len(sig) != SIG_SIZE:
            raise ValueError("a job holds a 32-byte public key and a 64-byte signature")
        parts.append(key)
        parts.append(sig)


def verify_packed(chunk: bytes) -> tuple[bytes, float]:
    """What a worker runs: one byte per signature of ``chunk`` (made by
    :func:`pack_jobs`), in order (1: it verifies), and the CPU seconds spent."""
    started = time.thread_time()
    out = bytearray()
    open_ = nacl.bindings.crypto_sign_open
    unpack = _HEADER.unpack_from
    pos, end = 0, len(chunk)
    while pos < end:
        if end - pos < _HEADER.size:
            break  # refused below
        size, count = unpack(chunk, pos)
        pos += _HEADER.size
        message = chunk[pos : pos + size]
        pos += size
        for _ in range(count):
            key = chunk[pos : pos + KEY_SIZE]
            sig = chunk[pos + KEY_SIZE : pos + KEY_SIZE + SIG_SIZE]
            pos += KEY_SIZE + SIG_SIZE
            try:
                open_(sig + message, key)
            except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                    nacl.exceptions.TypeError, TypeError):  # fmt: skip
                out.append(_INVALID)
            else:
                out.append(_VALID)
    if pos != end:
        raise ValueError("a truncated chunk of signature jobs")
    return bytes(out), time.thread_time() - started


_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_workers = 0


def shared_pool(workers: int) -> ProcessPoolExecutor:
    """The process-wide verification pool (started on first use, ``spawn``ed
    so that no thread or connection of this process is inherited)."""
    global _pool, _workers
    with _lock:
        if _pool is None or _workers != workers:
            old = _pool
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            _workers = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def discard_pool(pool: ProcessPoolExecutor) -> None:
    """Forget a pool that broke (a worker died); the next use starts a new one."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False)


def _shutdown() -> None:
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(_shutdown)

__all__ = ["discard_pool", "pack_jobs", "shared_pool", "verify_packed"]
