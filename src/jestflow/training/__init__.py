"""Running models over data: the one training loop (reference, baselines, learner), the batch selectors
it plugs in, super-batches and their prefetching, the reference's score cache, evaluation, devices and
torchrun/DDP.

May import: `jestflow.core`, `jestflow.model`, `jestflow.data` and everything below them.
"""
