"""Benchmarks, importing only downward (library modules, then each other as select <- gpu, report <- curation):

- `select`: dense vs chunked joint selection, time and peak memory (`jestflow bench select`);
- `gpu`: every part of a JEST step on one GPU against a plain PyTorch peer (`jestflow bench gpu`);
- `curation`: does curation pay off, every method over seeds (`jestflow bench curation`);
- `report`: the curation benchmark's tables and plots.
"""
