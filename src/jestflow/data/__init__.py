"""Data on disk: WebDataset-style tar shards (reading to their real end, decoding, the shuffled
stream, writing), `jestflow data check`, and the embedded demo datasets.

May import: `jestflow.config`, `jestflow.storage`, `jestflow.progress`. No torch.
"""
