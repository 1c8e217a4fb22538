"""Prometheus for tests: read a node's ``/metrics``, and run a real Prometheus
server (Debian's ``prometheus`` package) that scrapes real nodes.

:func:`scrape` parses the exposition format with prometheus_client's own
parser; :func:`value` sums the samples of one name whose labels include the
given ones.  :class:`PrometheusServer` writes a configuration (one job,
``remembrancer``, scraping every second; optional rule files evaluated every
second), starts ``prometheus`` on a free port with its storage in a
temporary directory, waits until it is ready, and answers queries through
its HTTP API (``/api/v1/...``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from remembrancer.demo.procs import free_port

JOB = "remembrancer"


def scrape(url: str, *, timeout: float = 10) -> list[Sample]:
    """Every sample of ``url``/metrics."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def families(url: str, *, timeout: float = 10) -> dict[str, str]:
    """Every metric family ``url``/metrics exposes (even without samples): name -> type."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out[name] = kind
    return out


def value(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))  # fmt: skip


def present(samples: Sequence[Sample], name: str, **labels: str) -> bool:
    """Whether a sample named ``name`` with labels including ``labels`` exists."""
    return any(s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
               for s in samples)  # fmt: skip


class PrometheusServer:
    """A real ``prometheus`` process scraping ``targets`` (``host:port``)."""

    def __init__(self, directory: Path, targets: Sequence[str], *, rule_files: Sequence[Path] = (),
                 binary: str | None = None, interval: str = "1s") -> None:  # fmt: skip
        found = binary or shutil.which("prometheus")
        if found is None:
            raise FileNotFoundError("no prometheus binary (Debian: apt-get install prometheus)")
        self.binary = found
        self.directory = directory
        self.targets = list(targets)
        self.rule_files = list(rule_files)
        self.interval = interval
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> PrometheusServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval,
                       "scrape_timeout": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": self.targets}]}],
        }))  # fmt: skip
        log = (self.directory / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"prometheus did not become ready: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.directory / "prometheus.log").read_text()[-n:]
        except OSError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: the ``data`` of a successful answer (raises otherwise)."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:
            doc = json.loads(e.read() or b"{}")
        if doc.get("status") != "success":
            raise AssertionError(f"prometheus /api/v1/{path} {params}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises if the expression does not evaluate)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result
