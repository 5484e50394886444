"""Compare trained learners: a results table, speed-up ratios, learning-curve plots, a Markdown report.

Inputs are the `train.json` summaries (with their learning curves) and the final evaluation metrics
of each run. "Total FLOPs" counts everything behind a learner: for curated methods also the
reference's training and its one scoring pass over the pool.
"""

from __future__ import annotations

import base64
import math

from . import storage
from .flops import fixed_total, run_total

PRIMARY = "retrieval_r1"


def curve_points(summary: dict, key: str, total: bool) -> tuple[list, list, list]:
    """(iterations, FLOPs, metric) along a run's learning curve; FLOPs include fixed costs if `total`."""
    fixed = fixed_total(summary) if total else 0.0
    pts = [p for p in summary.get("curve", []) if key in p and not math.isnan(p[key])]
    return [p["step"] for p in pts], [p["flops"] + fixed for p in pts], [p[key] for p in pts]


def first_reaching(xs: list, ys: list, target: float) -> float | None:
    """The x at which the curve first reaches `target` (linear interpolation), or None if never."""
    prev = None
    for x, y in zip(xs, ys):
        if y >= target:
            if prev is None or prev[1] >= target:
                return float(x)
            (x0, y0) = prev
            return float(x0 + (x - x0) * (target - y0) / (y - y0))
        prev = (x, y)
    return None


def value_at(xs: list, ys: list, x: float) -> float | None:
    """The curve's value at x (linear interpolation), or None outside the curve."""
    if not xs or x > xs[-1]:
        return None
    for i, xi in enumerate(xs):
        if xi >= x:
            if i == 0:
                return float(ys[0]) if xi == x else None
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(y0 + (ys[i] - y0) * (x - x0) / (xi - x0))
    return None


def compare(runs: dict[str, dict], baseline: str = "uniform", metric: str = PRIMARY) -> dict:
    """Per run: iterations and total FLOPs to reach the baseline's final `metric`, as ratios."""
    base = runs[baseline]
    target = base["final"][metric]
    b_it, b_fl = base["summary"]["steps"], run_total(base["summary"])
    out = {}
    for name, r in runs.items():
        it, fl, ys = curve_points(r["summary"], metric, total=False)
        _, tfl, _ = curve_points(r["summary"], metric, total=True)
        if name == baseline:  # by definition; a noisy curve may touch its final value earlier
            reach_it, reach_fl = float(b_it), float(b_fl)
        else:
            reach_it, reach_fl = first_reaching(it, ys, target), first_reaching(tfl, ys, target)
        out[name] = {
            "target": target,
            "iterations_to_target": reach_it,
            "flops_to_target": reach_fl,
            "iteration_speedup": (b_it / reach_it) if reach_it else None,
            "flops_speedup": (b_fl / reach_fl) if reach_fl else None,
        }
    return out


def results_rows(runs: dict[str, dict]) -> list[dict]:
    rows = []
    for name, r in runs.items():
        s, m = r["summary"], r["final"]
        rows.append(
            {
                "run": name,
                "method": s["method"],
                "zeroshot_top1": m.get("zeroshot_top1"),
                "retrieval_r1": m["retrieval_r1"],
                "i2t_r1": m["i2t_r1"],
                "t2i_r1": m["t2i_r1"],
                "i2t_r5": m["i2t_r5"],
                "t2i_r5": m["t2i_r5"],
                "iterations": s["steps"],
                "learner_flops": s["flops_total"],
                "total_flops": run_total(s),
                "clean_fraction": s["clean_fraction"],
                "wall_seconds": s["wall_seconds"],
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| run | method | zero-shot top-1 | retrieval R@1 | iterations | total FLOPs | clean fraction | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        zs = f"{r['zeroshot_top1']:.3f}" if r["zeroshot_top1"] is not None else "n/a"
        lines.append(
            f"| {r['run']} | {r['method']} | {zs} | {r['retrieval_r1']:.3f} | {r['iterations']} | "
            f"{r['total_flops']:.3g} | {r['clean_fraction']:.3f} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(runs: dict[str, dict], path: str, x: str) -> None:
    """Eval metrics against iterations (`x="iterations"`) or total FLOPs (`x="flops"`), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("retrieval_r1", "retrieval R@1 (mean of both ways)"), ("zeroshot_top1", "zero-shot top-1")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (key, label) in zip(axes, keys):
        for name, r in runs.items():
            it, fl, ys = curve_points(r["summary"], key, total=True)
            if ys:
                ax.plot(it if x == "iterations" else fl, ys, marker="o", ms=3, label=name)
        ax.set_xlabel("learner iterations" if x == "iterations" else "total FLOPs (incl. reference + scoring)")
        if x == "flops":
            ax.set_xscale("log")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"held-out evaluation against {'iterations' if x == 'iterations' else 'compute'}")
    fig.tight_layout()
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _fmt(v, spec=".2f", suffix="x"):
    return "not reached" if v is None else f"{v:{spec}}{suffix}"


def inline_images(markdown: str, folder: str) -> str:
    """Replace links to PNG files in `folder` by data URIs (Kubeflow's Markdown viewer has no folder)."""
    import re

    def repl(m):
        with storage.open_read(storage.join(folder, m.group(2))) as f:
            return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(f.read()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([\w.-]+\.png)\)", repl, markdown)


def write_report(runs: dict[str, dict], out_dir: str, baseline: str = "uniform") -> dict:
    """Write results.json, report.md and the two PNG plots (linked from the report) into `out_dir`."""
    rows = results_rows(runs)
    cmp_primary = compare(runs, baseline, PRIMARY)
    cmp_zs = (
        compare(runs, baseline, "zeroshot_top1") if all("zeroshot_top1" in r["final"] for r in runs.values()) else {}
    )
    results = {"rows": rows, "baseline": baseline, "speedup_retrieval_r1": cmp_primary, "speedup_zeroshot_top1": cmp_zs}
    storage.write_json(storage.join(out_dir, "results.json"), results)
    pngs = {}
    for x in ("iterations", "flops"):
        p = storage.join(out_dir, f"curve_{x}.png")
        plot_curves(runs, p, x)
        pngs[x] = p
    md = [
        "# jestflow run report",
        "",
        table(rows),
        f"Speed-up to reach `{baseline}`'s final retrieval R@1 ({cmp_primary[baseline]['target']:.3f}):",
        "",
        "| run | iterations to target | iteration speed-up | total FLOPs to target | FLOPs speed-up |",
        "|---|---|---|---|---|",
    ]
    for name, c in cmp_primary.items():
        md.append(
            f"| {name} | {_fmt(c['iterations_to_target'], '.0f', '')} | {_fmt(c['iteration_speedup'])} | "
            f"{_fmt(c['flops_to_target'], '.3g', '')} | {_fmt(c['flops_speedup'])} |"
        )
    md += [
        "",
        "Speed-ups are read off learning curves evaluated every `eval_every` steps (linear "
        "interpolation between points); total FLOPs include the reference's training and scoring for "
        "curated methods.",
        "",
    ]
    for x, p in pngs.items():
        md += [f"![eval vs {x}]({storage.basename(p)})", ""]
    storage.write_bytes(storage.join(out_dir, "report.md"), "\n".join(md).encode())
    return results
