"""The maths of curation, no I/O: the losses, joint example selection (Algorithm 1) and its fused
kernel, and the cost model (FLOPs of every pass a method makes).

May import: `jestflow.config`, `jestflow.methods` (and torch). Nothing here reads or writes a file.
"""
