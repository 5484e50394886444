"""jestflow: JEST data curation (joint example selection) for image-text models, on Kubeflow."""

__version__ = "0.1.0"
