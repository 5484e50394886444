"""A stand-in for the Kubernetes API server and the Kubeflow Training Operator, on 127.0.0.1.

No API server can run on the test machines, so the PyTorchJob component talks, through the real
`kubernetes` client, to this HTTP server. It answers the custom-objects endpoints the component uses
the way a server does (201 on create, 409 when the name exists, 422 with a Status when the object
fails the CRD schema, 404 for an unknown job) and, standing in for the operator, runs each replica's
container command as a local process with the PET_* rendezvous variables the operator sets, then
writes the job's status conditions in the operator's format (Created, Running, Succeeded/Failed).

Every request is recorded in `requests` for assertions.
"""

import json
import os
import re
import subprocess
import threading
import uuid
from http.server import ThreadingHTTPServer

from tests.jsonhttp import JSONHandler
from tests.k8s.pytorchjob_schema import errors as schema_errors

PATH = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs(?:/(?P<name>[^/?]+))?")


def _condition(kind, reason, message):
    t = "2026-11-26T00:00:00Z"
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": t,
        "lastTransitionTime": t,
    }


class FakeCluster:
    def __init__(self, run_pods: bool = True, port_base: int = 29611):
        self.jobs: dict = {}
        self.requests: list = []
        self.run_pods = run_pods
        self.port_base = port_base
        self.pod_logs: dict = {}
        self._lock = threading.Lock()
        cluster = self

        class Handler(JSONHandler):
            _send = JSONHandler.reply

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                cluster.requests.append(("POST", self.path, body))
                m = PATH.match(self.path)
                if not m or m["name"]:
                    return self._send(404, _status(404, "NotFound", f"no route {self.path}"))
                self._send(*cluster.create(m["ns"], body))

            def do_GET(self):
                cluster.requests.append(("GET", self.path, None))
                m = PATH.match(self.path)
                job = cluster.jobs.get((m["ns"], m["name"])) if m and m["name"] else None
                if job is None:
                    return self._send(
                        404, _status(404, "NotFound", f'pytorchjobs.kubeflow.org "{m and m["name"]}" not found')
                    )
                with cluster._lock:
                    self._send(200, job)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()

    def api(self):
        """A real `kubernetes.client.CustomObjectsApi` pointed at this server."""
        from kubernetes import client

        c = client.Configuration()
        c.host = self.url
        return client.CustomObjectsApi(client.ApiClient(c))

    def create(self, ns, job):
        name = job.get("metadata", {}).get("name", "")
        problems = schema_errors(job)
        if problems:
            return 422, _status(422, "Invalid", f'PyTorchJob.kubeflow.org "{name}" is invalid: ' + "; ".join(problems))
        if (ns, name) in self.jobs:
            return 409, _status(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{name}" already exists')
        job = {
            **job,
            "metadata": {
                **job["metadata"],
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "resourceVersion": "1",
                "creationTimestamp": "2026-11-26T00:00:00Z",
            },
            "status": {
                "conditions": [_condition("Created", "PyTorchJobCreated", f"PyTorchJob {ns}/{name} is created.")]
            },
        }
        self.jobs[(ns, name)] = job
        if self.run_pods:
            threading.Thread(target=self._operate, args=(ns, name), daemon=True).start()
        return 201, job

    def _operate(self, ns, name):
        """The operator's part: start every replica's pod (here: a process), then set the outcome."""
        job = self.jobs[(ns, name)]
        specs = job["spec"]["pytorchReplicaSpecs"]
        nnodes = sum(r.get("replicas", 1) for r in specs.values())
        port = self.port_base + len(self.jobs)
        procs, rank = [], 0
        for rtype in ("Master", "Worker"):
            for i in range(specs.get(rtype, {}).get("replicas", 0)):
                c = specs[rtype]["template"]["spec"]["containers"][0]
                env = {
                    **{k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")},
                    **{e["name"]: e["value"] for e in c.get("env", [])},
                    "PET_NNODES": str(nnodes),
                    "PET_NPROC_PER_NODE": job["spec"].get("nprocPerNode", "1"),
                    "PET_NODE_RANK": str(rank),
                    "PET_MASTER_ADDR": "127.0.0.1",
                    "PET_MASTER_PORT": str(port),
                }
                pod = f"{name}-{rtype.lower()}-{i}"
                procs.append(
                    (
                        pod,
                        subprocess.Popen(
                            c["command"] + c["args"],
                            env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            text=True,
                        ),
                    )
                )
                rank += 1
        with self._lock:
            job["status"]["conditions"].append(
                _condition("Running", "PyTorchJobRunning", f"PyTorchJob {ns}/{name} is running.")
            )
        failed = []
        for pod, p in procs:
            self.pod_logs[pod] = p.communicate()[0]
            if p.returncode != 0:
                failed.append(pod)
        with self._lock:
            if failed:
                rtype = "Master" if any("-master-" in f for f in failed) else "Worker"
                job["status"]["conditions"].append(
                    _condition(
                        "Failed",
                        "PyTorchJobFailed",
                        f"PyTorchJob {ns}/{name} is failed because {len(failed)} {rtype} replica(s) failed.",
                    )
                )
            else:
                job["status"]["conditions"].append(
                    _condition("Succeeded", "PyTorchJobSucceeded", f"PyTorchJob {ns}/{name} is successfully completed.")
                )


def _status(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
