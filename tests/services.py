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

    def start(self) -> Monitoring:
        for binary in ("prometheus", "prometheus-pushgateway"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not installed (make test installs Debian's prometheus packages)")
        gw_port, prom_port = free_port(), free_port()
        self.gateway = f"http://127.0.0.1:{gw_port}"
        self.prometheus = f"http://127.0.0.1:{prom_port}"
        log = open(os.path.join(self.workdir, "services.log"), "ab")
        # Debian's build persists pushed metrics to /var/lib/prometheus by default: keep ours private.
        self.procs.append(
            subprocess.Popen(
                [
                    "prometheus-pushgateway",
                    f"--web.listen-address=127.0.0.1:{gw_port}",
                    f"--persistence.file={os.path.join(self.workdir, 'pushgateway.data')}",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        )
        _wait(f"{self.gateway}/-/ready", self.procs[-1], "pushgateway")
        cfg = os.path.join(self.workdir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: jestflow-pushgateway\n    honor_labels: true\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{gw_port}']\n"
            )
        self.procs.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={cfg}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    f"--storage.tsdb.path={os.path.join(self.workdir, 'tsdb')}",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        )
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


class GCSEmulator:
    """gcp-storage-emulator on 127.0.0.1 behind a proxy that can fail requests on purpose.

    The proxy forwards everything to the emulator, logs each request line, and answers 503 to the
    next `fail_next[pattern]` requests whose line contains `pattern`: transient failures that the
    client must retry."""

    def __init__(self, workdir: str, bucket: str = "jestflow-test"):
        self.workdir, self.bucket = workdir, bucket
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.fail_next: dict[str, int] = {}

    def start(self) -> GCSEmulator:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from jestflow.bench.scale import Emulator

        self.emulator = Emulator(self.workdir, self.bucket, in_memory=True).start()
        port = self.emulator.port
        outer = self

        class Proxy(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                line = f"{self.command} {self.path}"
                outer.requests.append(line)
                for pattern, n in list(outer.fail_next.items()):
                    if n > 0 and pattern in line:
                        outer.fail_next[pattern] = n - 1
                        outer.failed.append(line)
                        msg = b'{"error": {"code": 503, "message": "injected transient failure"}}'
                        self.send_response(503)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(msg)))
                        self.end_headers()
                        self.wfile.write(msg)
                        return
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                headers["Host"] = f"127.0.0.1:{port}"
                if body or self.command in ("POST", "PUT", "PATCH"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() == "location":  # keep resumable-upload sessions going through the proxy
                        v = v.replace(f"127.0.0.1:{port}", f"127.0.0.1:{outer.server.server_address[1]}")
                        v = v.replace(f"localhost:{port}", f"127.0.0.1:{outer.server.server_address[1]}")
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def stop(self) -> None:
        if getattr(self, "server", None):
            self.server.shutdown()
            self.server.server_close()
        if getattr(self, "emulator", None):
            self.emulator.stop()
