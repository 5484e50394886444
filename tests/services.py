"""Real Prometheus and Pushgateway on 127.0.0.1 for the tests, started and stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {timeout} s")


class Monitoring:
    """Pushgateway + Prometheus scraping it every second (honor_labels, as in the manifests)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "Monitoring":
        for binary in ("prometheus", "prometheus-pushgateway"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not installed (make test installs Debian's prometheus packages)")
        gw_port, prom_port = free_port(), free_port()
        self.gateway = f"http://127.0.0.1:{gw_port}"
        self.prometheus = f"http://127.0.0.1:{prom_port}"
        log = open(os.path.join(self.workdir, "services.log"), "ab")
        self.procs.append(subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{gw_port}"],
                                           stdout=log, stderr=log, start_new_session=True))
        _wait(f"{self.gateway}/-/ready", self.procs[-1], "pushgateway")
        cfg = os.path.join(self.workdir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: jestflow-pushgateway\n    honor_labels: true\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{gw_port}']\n")
        self.procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{prom_port}",
             f"--storage.tsdb.path={os.path.join(self.workdir, 'tsdb')}"], stdout=log, stderr=log,
            start_new_session=True))
        _wait(f"{self.prometheus}/-/ready", self.procs[-1], "prometheus")
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()

    def query(self, promql: str) -> list[dict]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        if body["status"] != "success":
            raise RuntimeError(body)
        return body["data"]["result"]
