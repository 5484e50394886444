"""A minimal stand-in for the Kubeflow Pipelines v2beta1 REST API, on 127.0.0.1.

It answers the calls `kfp.Client.create_run_from_pipeline_package` and `get_run` make (health check,
experiment lookup and creation, run creation, run status) with the shapes the real API server returns,
and records every request, with its headers, so tests can check what jestflow sent. A run reports the
states in `states` one GET at a time (the last repeats), with `error` when it ends failed. A real KFP
backend cannot run here.
"""

import json
import threading
from http.server import ThreadingHTTPServer

from tests.jsonhttp import JSONHandler


class FakeKFP:
    def __init__(self, states=("PENDING", "RUNNING", "SUCCEEDED"), error=None):
        self.requests = []
        self.headers = []
        self.states, self.error, self.polls = list(states), error, 0
        self.experiments = {}
        outer = self

        class Handler(JSONHandler):
            _reply = JSONHandler.reply

            def do_GET(self):
                outer.requests.append(("GET", self.path, None))
                outer.headers.append(dict(self.headers))
                if self.path.startswith("/apis/v2beta1/runs/run-0001"):
                    state = outer.states[min(outer.polls, len(outer.states) - 1)]
                    outer.polls += 1
                    run = {"run_id": "run-0001", "display_name": "r", "state": state}
                    if state in ("FAILED", "CANCELED") and outer.error:
                        run["error"] = {"code": 2, "message": outer.error}
                    return self._reply(200, run)
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self._reply(200, {"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply(
                        200, {"experiments": list(outer.experiments.values()), "total_size": len(outer.experiments)}
                    )
                return self._reply(404, {"error": "not found", "code": 5})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append(("POST", self.path, body))
                outer.headers.append(dict(self.headers))
                if self.path == "/apis/v2beta1/experiments":
                    exp = {"experiment_id": f"exp-{len(outer.experiments) + 1}", "display_name": body["display_name"]}
                    outer.experiments[exp["experiment_id"]] = exp
                    return self._reply(200, exp)
                if self.path.startswith("/apis/v2beta1/runs"):
                    run = {
                        "run_id": "run-0001",
                        "display_name": body.get("display_name", ""),
                        "experiment_id": body.get("experiment_id"),
                        "state": "PENDING",
                    }
                    return self._reply(200, run)
                return self._reply(404, {"error": "not found", "code": 5})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
