"""The one place that names jestflow's container images. `make images` tags with the same version."""

from jestflow import __version__ as VERSION  # the package's one version constant (jestflow/__init__.py: no torch)

REGISTRY = "ghcr.io/jestflow"
CPU_IMAGE = f"{REGISTRY}/jestflow:{VERSION}"
GPU_IMAGE = f"{REGISTRY}/jestflow-cuda:{VERSION}"
