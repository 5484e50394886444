"""The one place that names jestflow's container images. `make images` tags with the same version."""

REGISTRY = "ghcr.io/jestflow"
VERSION = "0.1.0"  # equals jestflow.__version__ (tests/components checks it)
CPU_IMAGE = f"{REGISTRY}/jestflow:{VERSION}"
GPU_IMAGE = f"{REGISTRY}/jestflow-cuda:{VERSION}"
