"""Assemble the repository's BENCHMARKS.md from a finished `jestflow bench curation` folder.

    python scripts/benchmarks_md.py bench/curation BENCHMARKS.md

Renders the report from OUT/results.json with the findings of docs/bench-findings.md, copies the
plots and results.json to docs/bench/ (the report links them there), adds a second dataset's section
(`--second glyphs=bench/curation-glyphs`) and appends docs/bench-gpu.md, the GPU section written from
`jestflow bench gpu` runs, so re-rendering keeps it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from jestflow.bench.curation_report import PLOTS, render


def section(out: Path, docs: Path, where: str, findings: Path) -> str:
    """One dataset's report, its plots and results.json copied to docs/`where`/ and linked from there."""
    results = json.loads((out / "results.json").read_text())
    md = render(results, findings.read_text() if findings.exists() else "")
    (docs / where).mkdir(parents=True, exist_ok=True)
    for name in (*PLOTS, "results.json"):
        if (out / name).exists():  # reports older than a plot do not have it
            shutil.copy2(out / name, docs / where / name)
    return md.replace("](", f"](docs/{where}/")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the `jestflow bench curation --out` folder")
    p.add_argument("benchmarks", help="the Markdown file to write, e.g. BENCHMARKS.md")
    p.add_argument(
        "--second",
        metavar="NAME=DIR",
        help="a second dataset's `bench curation` folder, rendered as "
        "its own section (plots in docs/bench/NAME/, findings from docs/bench-findings-NAME.md)",
    )
    args = p.parse_args(argv)
    target = Path(args.benchmarks).resolve()
    docs = target.parent / "docs"
    md = section(Path(args.out), docs, "bench", docs / "bench-findings.md")
    if args.second:
        name, folder = args.second.split("=", 1)
        body = section(Path(folder), docs, f"bench/{name}", docs / f"bench-findings-{name}.md")
        body = body.replace("\n#", "\n##").replace("# jestflow benchmarks:", f"## Second dataset ({name}):", 1)
        md += "\n" + body
    gpu = docs / "bench-gpu.md"
    if gpu.exists():
        md += "\n" + gpu.read_text()
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_text(md)
    tmp.replace(target)
    print(f"wrote {target} (plots in {docs / 'bench'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
