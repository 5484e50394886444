"""Assemble the repository's BENCHMARKS.md from a finished `jestflow bench curation` folder.

    python scripts/benchmarks_md.py bench/curation BENCHMARKS.md

Renders the report from OUT/results.json with the findings of docs/bench-findings.md, copies the
plots and results.json to docs/bench/ (the report links them there), and appends docs/bench-scale.md (the
scale rehearsal, `make bench-scale`) and docs/bench-gpu.md (written from `jestflow bench gpu` runs), so
re-rendering keeps them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from jestflow.bench.curation_report import PLOTS, render


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the `jestflow bench curation --out` folder")
    p.add_argument("benchmarks", help="the Markdown file to write, e.g. BENCHMARKS.md")
    args = p.parse_args(argv)
    out, target = Path(args.out), Path(args.benchmarks).resolve()
    docs = target.parent / "docs"
    results = json.loads((out / "results.json").read_text())
    findings = docs / "bench-findings.md"
    md = render(results, findings.read_text() if findings.exists() else "")
    (docs / "bench").mkdir(parents=True, exist_ok=True)
    for name in (*PLOTS, "results.json"):
        if (out / name).exists():  # a main-only run has no long-tail plot
            shutil.copy2(out / name, docs / "bench" / name)
    md = md.replace("](", "](docs/bench/")
    for extra in ("bench-scale.md", "bench-gpu.md"):  # written by `make bench-scale` and from `bench gpu` runs
        if (docs / extra).exists():
            md += "\n" + (docs / extra).read_text()
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_text(md)
    tmp.replace(target)
    print(f"wrote {target} (plots in {docs / 'bench'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
