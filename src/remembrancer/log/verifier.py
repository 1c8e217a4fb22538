"""Ed25519 verification in worker processes, off the interpreter lock.

PyNaCl releases the GIL while libsodium verifies, but a verifying thread
must take the GIL back between signatures; while the event loop thread runs
Python (parsing records, answering HTTP) a waiting thread gets it only
every switch interval (5 ms), so threads leave a core idle under load.  A
worker process has an interpreter of its own: it verifies a whole chunk of
signatures without waiting for anyone.

:func:`verify_many` is what a worker runs (only PyNaCl's libsodium binding,
the very function ``PublicKey.verify`` calls, so the verdicts are the same);
:func:`shared_pool` is one lazily started pool per process, shared by every
sequencer in it, so that starting workers is paid once.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Final

import nacl.bindings
import nacl.exceptions

Job = tuple[bytes, bytes, bytes]  # (32-byte public key, message, 64-byte signature)

_VALID: Final = 1
_INVALID: Final = 0


def verify_many(jobs: list[Job]) -> tuple[bytes, float]:
    """One byte per job (1: the signature verifies), and the CPU seconds spent."""
    started = time.thread_time()
    out = bytearray(len(jobs))
    open_ = nacl.bindings.crypto_sign_open
    for i, (key, message, sig) in enumerate(jobs):
        try:
            open_(sig + message, key)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                nacl.exceptions.TypeError, TypeError):  # fmt: skip
            out[i] = _INVALID
        else:
            out[i] = _VALID
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

__all__ = ["Job", "discard_pool", "shared_pool", "verify_many"]
