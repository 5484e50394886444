"""What ties jestflow to Kubeflow and Kubernetes: the KFP component bodies' one call each
(`kfp_steps`), the pipeline through KFP's local runner (`local_run`), submission and `--watch`
(`submit`), Kubeflow Trainer / Training Operator jobs (`training_jobs`), Prometheus metrics
(`metrics`).

May import: `jestflow.reporting`, `jestflow.stages` and everything below them.
"""
