"""Strict validation of a PyTorchJob: the CRD's schema (pytorchjob.schema.json) for the job, and the
core PodTemplate schema (kubernetes-validate, strict) for every replica's pod template."""

import json
from pathlib import Path

import jsonschema
import kubernetes_validate

K8S_VERSION = "1.30.0"
SCHEMA = json.loads((Path(__file__).parent / "pytorchjob.schema.json").read_text())


def errors(job: dict) -> list[str]:
    """Every problem found, as 'path: message' lines; empty when the job is valid."""
    out = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(job)
    ]
    for rtype, replica in (job.get("spec", {}).get("pytorchReplicaSpecs") or {}).items():
        wrapper = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "pytorchjob-template"},
            "template": replica.get("template", {}),
        }
        try:
            kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            out.append(f"spec.pytorchReplicaSpecs.{rtype}.template: {e.message}")
        containers = replica.get("template", {}).get("spec", {}).get("containers", [])
        if not any(c.get("name") == "pytorch" for c in containers):  # the operator requires it
            out.append(f"spec.pytorchReplicaSpecs.{rtype}.template: no container named 'pytorch'")
    return out
