"""A stand-in for the Kubernetes API server with Kubeflow Trainer v2 and the Training Operator, on 127.0.0.1.

No API server can run on the test machines, so the multi-node component talks, through the real
`kubernetes` client, to this HTTP server. It answers the custom-objects endpoints the component uses
the way a server does (201 on create, 409 when the name exists, 422 with a Status when the object
fails the CRD schema, 404 for an unknown job or an API that is not installed, 200 on delete) and,
standing in for the controller, runs each node's command as a local process with the PET_* rendezvous
variables the controller sets, then writes the job's status conditions in the controller's format
(TrainJob: Complete/Failed copied from its JobSet; PyTorchJob: Created, Running, Succeeded/Failed).
It is a test aid, not evidence that a cluster accepts the objects: the schemas are.

Every request is recorded in `requests` for assertions.
"""

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from http.server import ThreadingHTTPServer

from tests.jsonhttp import JSONHandler
from tests.k8s import pytorchjob_schema, trainjob_schema

PATH = re.compile(
    r"^/apis/(?P<api>kubeflow\.org/v1|trainer\.kubeflow\.org/v1alpha1)/namespaces/(?P<ns>[^/]+)/"
    r"(?P<plural>pytorchjobs|trainjobs)(?:/(?P<name>[^/?]+))?"
)
APIS = {  # plural -> (api group/version, kind, schema check)
    "pytorchjobs": ("kubeflow.org/v1", "PyTorchJob", pytorchjob_schema.errors),
    "trainjobs": ("trainer.kubeflow.org/v1alpha1", "TrainJob", trainjob_schema.errors),
}


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
    def __init__(self, run_pods: bool = True, port_base: int = 29611, installed=("pytorchjobs", "trainjobs")):
        self.installed = set(installed)
        self.jobs: dict = {}
        self.procs: dict = {}
        self.requests: list = []
        self.run_pods = run_pods
        self.port_base = port_base
        self.pod_logs: dict = {}
        self._lock = threading.Lock()
        cluster = self

        class Handler(JSONHandler):
            _send = JSONHandler.reply

            def _route(self):
                m = PATH.match(self.path)
                if not m or m["plural"] not in cluster.installed or APIS[m["plural"]][0] != m["api"]:
                    self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
                    return None
                return m

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                cluster.requests.append(("POST", self.path, body))
                m = self._route()
                if m is None:
                    return
                if m["name"]:
                    return self._send(405, _status(405, "MethodNotAllowed", "POST to a named object"))
                self._send(*cluster.create(m["plural"], m["ns"], body))

            def do_GET(self):
                cluster.requests.append(("GET", self.path, None))
                m = self._route()
                if m is None:
                    return
                job = cluster.jobs.get((m["plural"], m["ns"], m["name"]))
                if job is None:
                    return self._send(404, _status(404, "NotFound", f'{m["plural"]} "{m["name"]}" not found'))
                with cluster._lock:
                    self._send(200, job)

            def do_DELETE(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                cluster.requests.append(("DELETE", self.path, body))
                m = self._route()
                if m is None:
                    return
                job = cluster.jobs.pop((m["plural"], m["ns"], m["name"]), None)
                if job is None:
                    return self._send(404, _status(404, "NotFound", f'{m["plural"]} "{m["name"]}" not found'))
                for p in cluster.procs.pop((m["plural"], m["ns"], m["name"]), []):  # the pods go with it
                    p.kill()
                self._send(200, _status(200, "Success", "deleted") | {"status": "Success"})

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

    def create(self, plural, ns, job):
        api, kind, check = APIS[plural]
        name = job.get("metadata", {}).get("name", "")
        problems = check(job)
        if problems:
            group = api.split("/")[0]
            return 422, _status(422, "Invalid", f'{kind}.{group} "{name}" is invalid: ' + "; ".join(problems))
        if (plural, ns, name) in self.jobs:
            return 409, _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
        job = {
            **job,
            "metadata": {
                **job["metadata"],
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "resourceVersion": "1",
                "creationTimestamp": "2026-11-26T00:00:00Z",
            },
            "status": {"conditions": []},
        }
        if plural == "pytorchjobs":
            job["status"]["conditions"].append(
                _condition("Created", "PyTorchJobCreated", f"PyTorchJob {ns}/{name} is created.")
            )
        self.jobs[(plural, ns, name)] = job
        if self.run_pods:
            threading.Thread(target=self._operate, args=(plural, ns, name), daemon=True).start()
        return 201, job

    def _nodes(self, plural, job):
        """(pod name, command, env) of every node, in rank order, as the controller would start them."""
        if plural == "trainjobs":
            t = job["spec"]["trainer"]
            env = {e["name"]: e["value"] for e in t.get("env", [])}
            n = t.get("numNodes", 1)
            name = job["metadata"]["name"]
            return [(f"{name}-node-0-{i}", t["command"], env) for i in range(n)], str(t.get("numProcPerNode", 1))
        specs = job["spec"]["pytorchReplicaSpecs"]
        out = []
        for rtype in ("Master", "Worker"):
            for i in range(specs.get(rtype, {}).get("replicas", 0)):
                c = specs[rtype]["template"]["spec"]["containers"][0]
                env = {e["name"]: e["value"] for e in c.get("env", [])}
                out.append((f"{job['metadata']['name']}-{rtype.lower()}-{i}", c["command"] + c["args"], env))
        return out, job["spec"].get("nprocPerNode", "1")

    def _operate(self, plural, ns, name):
        """The controller's part: start every node's pod (here: a process), then set the outcome."""
        key = (plural, ns, name)
        job = self.jobs[key]
        nodes, nproc = self._nodes(plural, job)
        port = self.port_base + len(self.requests) % 500
        procs = []
        for rank, (pod, command, env) in enumerate(nodes):
            env = {
                **{k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")},
                **env,
                "PET_NNODES": str(len(nodes)),
                "PET_NPROC_PER_NODE": nproc,
                "PET_NODE_RANK": str(rank),
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port),
            }
            if command[0] == "python":  # in the image `python` is jestflow's interpreter (PATH /opt/jestflow/bin)
                command = [sys.executable, *command[1:]]
            try:
                proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            except OSError as e:  # what a kubelet reports as a failed container start: the job fails
                self.pod_logs[pod] = f"container start failed: {e}"
                with self._lock:
                    job["status"]["conditions"].append(_outcome(plural, ns, name, [pod]))
                return
            procs.append((pod, proc))
        self.procs[key] = [p for _, p in procs]
        if plural == "pytorchjobs":
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
            job["status"]["conditions"].append(_outcome(plural, ns, name, failed))


def _outcome(plural, ns, name, failed):
    if plural == "trainjobs":
        # kubeflow/trainer pkg/runtime/framework/plugins/jobset/jobset.go (Status): the JobSet's
        # Completed/Failed condition, retyped Complete/Failed; JobSet's reason and message for failures.
        if failed:
            return _condition("Failed", "FailedJobs", "jobset failed due to one or more job failures")
        return _condition("Complete", "AllJobsCompleted", "jobset completed successfully")
    if failed:
        rtype = "Master" if any("-master-" in f for f in failed) else "Worker"
        return _condition(
            "Failed",
            "PyTorchJobFailed",
            f"PyTorchJob {ns}/{name} is failed because {len(failed)} {rtype} replica(s) failed.",
        )
    return _condition("Succeeded", "PyTorchJobSucceeded", f"PyTorchJob {ns}/{name} is successfully completed.")


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
