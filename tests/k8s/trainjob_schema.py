"""Strict validation of a TrainJob against the CRD schema of the Kubeflow Trainer release
(trainjob.crd.json.gz: the `openAPIV3Schema` of manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml
at kubeflow/trainer v2.3.0, its `source` field says exactly where from).

An API server prunes or, with `kubectl apply --validate=strict` (field validation Strict), rejects
fields a structural schema does not declare; jsonschema does neither, so every object schema that
declares properties and does not preserve unknown fields gets `additionalProperties: false`.
`x-kubernetes-int-or-string` becomes "integer or string". CEL rules (`x-kubernetes-validations`)
cannot run here; the ones jestflow's objects could break are checked by hand below."""

import copy
import gzip
import json
import re
from pathlib import Path

import jsonschema

CRD = json.loads(gzip.decompress((Path(__file__).parent / "trainjob.crd.json.gz").read_bytes()))


def _strict(node):
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


SCHEMA = _strict(copy.deepcopy(CRD["openAPIV3Schema"]))
# The CRD's root: apiVersion/kind/metadata/spec/status; metadata is just "object" there.
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def errors(job: dict) -> list[str]:
    """Every problem found, as 'path: message' lines; empty when the job is valid."""
    out = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(job)
    ]
    if job.get("apiVersion") != f"{CRD['group']}/{CRD['version']}" or job.get("kind") != CRD["kind"]:
        out.append(f"<root>: not a {CRD['group']}/{CRD['version']} {CRD['kind']}")
    # The CRD's CEL rules on the name (x-kubernetes-validations at the schema's root).
    name = (job.get("metadata") or {}).get("name", "")
    if not DNS1035.match(name):
        out.append("metadata.name: metadata.name must match RFC 1035 DNS label format")
    if len(name) > 63:
        out.append("metadata.name: metadata.name must be no more than 63 characters")
    # ... and on spec.trainer.numProcPerNode ("numProcPerNode must be greater than or equal to 1").
    nproc = ((job.get("spec") or {}).get("trainer") or {}).get("numProcPerNode")
    if isinstance(nproc, int) and nproc < 1:
        out.append("spec.trainer.numProcPerNode: numProcPerNode must be greater than or equal to 1")
    # The torch plugin's validation (kubeflow/trainer pkg/runtime/framework/plugins/torch/torch.go,
    # Validate): the trainer's env must not set the PET_* variables the plugin injects.
    for e in ((job.get("spec") or {}).get("trainer") or {}).get("env") or []:
        if e.get("name", "").startswith("PET_"):
            out.append(f"spec.trainer.env: must not have reserved envs: {e['name']}")
    return out
