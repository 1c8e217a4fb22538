"""A small network lab for partition tests: one Linux network namespace per
node, with real network separation (``ip netns``, veth pairs, bridges).

Layout for ``count`` nodes (``R`` is a random second octet, ``S`` a random
name suffix, so concurrent labs do not collide; interface names fit 15
characters)::

    node i (namespace rv<S>n<i>)
      data  10.R.0.<i>/24 on veth rv<S>e<i>  <->  rv<S>d<i> on bridge rv<S>b0   (node to node)
      mgmt  10.R.<i>.2/30 on veth rv<S>f<i>  <->  rv<S>m<i> 10.R.<i>.1/30      (test <-> node)
      route 10.R.254.1/32 via 10.R.<i>.1                            (services on the host)

Nodes talk to each other only over the data network.  The test process
reaches each node over its own management link, and the node reaches the
host's *service address* 10.R.254.1 (where the test runs outside services,
such as a TSA) the same way; the host does not forward between links
(``ip_forward`` is left alone), so the management links carry no traffic
between nodes.  :meth:`Lab.partition` moves some nodes' data veths to a
second bridge, ``rv<S>b1``: each side still reaches its own members, the
test and the services, and nothing on the other side.  :meth:`Lab.heal`
moves them back.

Needs root and iproute2; :func:`open_lab` raises :class:`NetnsUnavailable`
(with the reason) where it cannot build the lab, and removes everything it
made on close, whatever happened.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

_TIMEOUT = 10.0


class NetnsUnavailable(Exception):
    """Network namespaces cannot be used here; ``str(e)`` says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_TIMEOUT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


@dataclass
class Lab:
    count: int
    net: int  # the second octet of 10.R.0.0/16
    suffix: str
    namespaces: list[str] = field(default_factory=list)
    _links: list[str] = field(default_factory=list)
    cut: frozenset[int] = frozenset()

    def name(self, kind: str, i: int | str) -> str:
        return f"rv{self.suffix}{kind}{i}"

    def data_ip(self, i: int) -> str:
        """Node ``i``'s (0-based) address on the node-to-node network."""
        return f"10.{self.net}.0.{i + 1}"

    def mgmt_ip(self, i: int) -> str:
        """Node ``i``'s address on its management link (for the test process)."""
        return f"10.{self.net}.{i + 1}.2"

    @property
    def service_ip(self) -> str:
        """The host's address that every node reaches, partition or not."""
        return f"10.{self.net}.254.1"

    def prefix(self, i: int) -> tuple[str, ...]:
        """The command prefix that runs a program in node ``i``'s namespace."""
        return ("ip", "netns", "exec", self.namespaces[i])

    def _build(self) -> None:
        for b in ("b0", "b1"):
            _ip("link", "add", self.name(b, ""), "type", "bridge")
            self._links.append(self.name(b, ""))
            _ip("link", "set", self.name(b, ""), "up")
        _ip("addr", "add", f"{self.service_ip}/32", "dev", self.name("b0", ""))
        for i in range(self.count):
            ns = self.name("n", i + 1)
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            host, inner = self.name("d", i + 1), self.name("e", i + 1)
            _ip("link", "add", host, "type", "veth", "peer", "name", inner)
            self._links.append(host)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", host, "master", self.name("b0", ""), "up")
            _ip("-n", ns, "addr", "add", f"{self.data_ip(i)}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            host, inner = self.name("m", i + 1), self.name("f", i + 1)
            _ip("link", "add", host, "type", "veth", "peer", "name", inner)
            self._links.append(host)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"10.{self.net}.{i + 1}.1/30", "dev", host)
            _ip("link", "set", host, "up")
            _ip("-n", ns, "addr", "add", f"{self.mgmt_ip(i)}/30", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip(
                "-n", ns, "route", "add", f"{self.service_ip}/32", "via", f"10.{self.net}.{i + 1}.1"
            )

    def partition(self, nodes: Sequence[int]) -> None:
        """Cut ``nodes`` (0-based) off from the others (they keep each other)."""
        for i in nodes:
            _ip("link", "set", self.name("d", i + 1), "master", self.name("b1", ""))
        self.cut = frozenset(nodes)

    def heal(self) -> None:
        for i in sorted(self.cut):
            _ip("link", "set", self.name("d", i + 1), "master", self.name("b0", ""))
        self.cut = frozenset()

    def close(self) -> None:
        """Stop what still runs in the namespaces (processes started in them for
        the test), then remove the namespaces, veths and bridges."""
        for ns in self.namespaces:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)
        for link in reversed(self._links):
            _ip("link", "del", link, check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.leftovers():
            time.sleep(0.1)

    def leftovers(self) -> list[str]:
        """Interfaces or namespaces of this lab that still exist."""
        links = _ip("-o", "link", "show", check=False).stdout
        names = _ip("netns", "list", check=False).stdout
        mine = re.compile(rf"\brv{self.suffix}[a-z]\d*\b")
        return sorted(set(mine.findall(links)) | set(mine.findall(names)))


def _free_net() -> int:
    used = _ip("-4", "addr", check=False).stdout + _ip("-4", "route", check=False).stdout
    for _ in range(50):
        net = random.randint(64, 250)
        if f"10.{net}." not in used:
            return net
    raise NetnsUnavailable("no free 10.x.0.0/16 network for the lab")


@contextmanager
def open_lab(count: int) -> Iterator[Lab]:
    """A lab of ``count`` namespaces, removed on exit; NetnsUnavailable if it cannot be built."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (this test runs as uid "
                               f"{os.geteuid()})")  # fmt: skip
    if shutil.which("ip") is None:
        raise NetnsUnavailable("the ip command (iproute2) is not installed")
    lab = Lab(count, _free_net(), f"{random.getrandbits(16):04x}")
    try:
        probe = _ip("netns", "add", lab.name("n", 1), check=False)
        if probe.returncode != 0:
            raise NetnsUnavailable(f"ip netns add failed: {probe.stderr.strip()}")
        _ip("netns", "del", lab.name("n", 1), check=False)
        try:
            lab._build()
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise NetnsUnavailable(f"cannot build the network lab: {e}") from e
        yield lab
    finally:
        lab.close()
