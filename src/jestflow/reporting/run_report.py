"""Compare trained learners: a results table, speed-up ratios, learning-curve plots, a Markdown report.

Inputs are the `train.json` summaries (with their learning curves) and the final evaluation metrics
of each run. "Total FLOPs" counts everything behind a learner: for curated methods also the
reference's training and its one scoring pass over the pool.
"""

from __future__ import annotations

import base64
import math

from .. import storage
from ..core.flops import break_even_words, fixed_total, payoff, payoff_curve, run_total

PRIMARY = "retrieval_r1"
CHANCE_FACTOR = 2.0  # a metric the baseline has not lifted to this many times chance gets no ratio


def fraction_text(x: float | None) -> str:
    """A clean fraction for people: n/a where the data records no noise types (null in the JSON)."""
    return "n/a" if x is None else f"{x:.3f}"


def above_chance(value: float | None, chance: float | None, factor: float = CHANCE_FACTOR) -> bool:
    """Whether the baseline's `value` is far enough above chance for a ratio against it to mean anything
    (near chance a speed-up measures noise: the run that happens to touch the line first)."""
    return value is not None and chance is not None and value >= factor * chance


def curve_points(summary: dict, key: str, total: bool) -> tuple[list, list, list]:
    """(iterations, FLOPs, metric) along a run's learning curve; FLOPs include fixed costs if `total`."""
    fixed = fixed_total(summary) if total else 0.0
    pts = [p for p in summary.get("curve", []) if p.get(key) is not None and not math.isnan(p[key])]
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


def compare(
    runs: dict[str, dict],
    baseline: str = "uniform",
    metric: str = PRIMARY,
    target: float | None = None,
    baseline_steps: float | None = None,
) -> dict:
    """Per run: iterations, learner FLOPs and total FLOPs to reach `target` (default: the baseline's final
    `metric`, reached by the baseline at its last step), and the speed-ups against the baseline.

    `lower_bound` marks a run whose first evaluated point already beats the target: it got there at
    or before that point, so its speed-ups are at least the ratios given (report them as "≥")."""
    base = runs[baseline]
    if target is None:
        target, baseline_steps = base["final"][metric], base["summary"]["steps"]
    b_it, b_fl, _ = curve_points(base["summary"], metric, total=False)
    if baseline_steps == base["summary"]["steps"]:
        b_reach_fl = base["summary"]["flops_total"]
    else:  # the baseline's learner FLOPs by then, off its curve
        b_reach_fl = value_at([0, *b_it], [0.0, *b_fl], baseline_steps)
    out = {}
    for name, r in runs.items():
        it, fl, ys = curve_points(r["summary"], metric, total=False)
        if name == baseline:  # by definition; a noisy curve may touch the target earlier
            reach_it, reach_fl, bound = float(baseline_steps), b_reach_fl, False
        else:
            reach_it, reach_fl = first_reaching(it, ys, target), first_reaching(fl, ys, target)
            bound = bool(ys) and ys[0] >= target
        fixed_r = fixed_total(r["summary"])
        out[name] = {
            "target": target,
            "iterations_to_target": reach_it,
            "learner_flops_to_target": reach_fl,
            "flops_to_target": None if reach_fl is None else reach_fl + fixed_r,
            "fixed_flops": fixed_r,
            "lower_bound": bound,
            "iteration_speedup": (baseline_steps / reach_it) if reach_it else None,
            "learner_flops_speedup": (b_reach_fl / reach_fl) if reach_fl and b_reach_fl else None,
            "flops_speedup": (b_reach_fl + fixed_total(base["summary"])) / (reach_fl + fixed_r)
            if reach_fl and b_reach_fl
            else None,
        }
    return out


TARGET_FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # targets: the baseline's score at these fractions of its run


def compare_targets(
    runs: dict[str, dict], baseline: str = "uniform", metric: str = PRIMARY, fractions=TARGET_FRACTIONS
) -> dict:
    """`compare` at several targets along the baseline's curve (its value after each fraction of its
    steps), so a ranking does not rest on one point of one curve. The baseline is credited with the
    step its own curve first reached each target, not the fraction of its run (a noisy curve may touch
    it much earlier)."""
    it, _, ys = curve_points(runs[baseline]["summary"], metric, total=False)
    out = {}
    for f in fractions:
        steps = f * runs[baseline]["summary"]["steps"]
        target = value_at(it, ys, steps) if f < 1 else runs[baseline]["final"][metric]
        if target is not None:
            reached = first_reaching(it, ys, target) if f < 1 else steps
            out[f] = compare(runs, baseline, metric, target, reached or steps)
    return out


def speedup_text(c: dict, key: str = "iteration_speedup") -> str:
    """ "3.10x", "≥ 3.10x" for a lower bound, or "not reached"."""
    v = c[key]
    if v is None:
        return "not reached"
    return f"{'≥ ' if c.get('lower_bound') else ''}{v:.2f}x"


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
            f"{r['total_flops']:.3g} | {fraction_text(r['clean_fraction'])} | {r['wall_seconds']:.0f} |"
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
        ax.set_xscale("log")  # evaluations are log-spaced (eval_schedule=log): early steps matter
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
    """Write results.json, report.md and the PNG plots (linked from the report) into `out_dir`."""
    rows = results_rows(runs)
    base = runs[baseline]["final"]
    # a ratio only for a metric the baseline lifted to CHANCE_FACTOR x chance; below that it measures noise
    meaningful = {
        m: above_chance(base.get(m), base.get(chance))
        for m, chance in ((PRIMARY, "retrieval_chance"), ("zeroshot_top1", "zeroshot_chance"))
    }
    if base.get("retrieval_chance") is None:  # results made before evaluation recorded the chance level
        meaningful[PRIMARY] = True
    cmp_primary = compare(runs, baseline, PRIMARY) if meaningful[PRIMARY] else {}
    cmp_zs = (
        compare(runs, baseline, "zeroshot_top1")
        if meaningful["zeroshot_top1"] and all("zeroshot_top1" in r["final"] for r in runs.values())
        else {}
    )
    at_targets = compare_targets(runs, baseline, PRIMARY) if meaningful[PRIMARY] else {}
    payoffs = {
        name: payoff(runs[baseline]["summary"]["flops_total"], c["learner_flops_to_target"], c["fixed_flops"])
        for name, c in cmp_primary.items()
        if name != baseline and c["fixed_flops"] and c["learner_flops_to_target"]
    }
    results = {
        "rows": rows,
        "baseline": baseline,
        "at_chance": sorted(m for m, ok in meaningful.items() if not ok),
        "speedup_retrieval_r1": cmp_primary,
        "speedup_zeroshot_top1": cmp_zs,
        "speedup_retrieval_r1_at_targets": {str(f): c for f, c in at_targets.items()},
        "payoff": payoffs,
    }
    storage.write_json(storage.join(out_dir, "results.json"), results)
    pngs = {}
    for x in ("iterations", "flops"):
        p = storage.join(out_dir, f"curve_{x}.png")
        plot_curves(runs, p, x)
        pngs[x] = p
    md = ["# jestflow run report", "", table(rows), *_chance_lines(base, results["at_chance"], baseline)]
    if cmp_primary:
        md += [
            f"Speed-up to reach `{baseline}`'s final retrieval R@1 ({cmp_primary[baseline]['target']:.3f}), one "
            "seed, read off the learning curves (linear interpolation between evaluations; ≥ marks a run that "
            "beat the target at its first evaluation, a lower bound). Total FLOPs include the reference's "
            "training and scoring for the methods that read it. `jestflow bench curation` measures speed-ups "
            "the paper's way (complete baseline runs at several budgets, several seeds, intervals).",
            "",
            "| run | iterations to target | iteration speed-up | total FLOPs to target | FLOPs speed-up |",
            "|---|---|---|---|---|",
        ]
        for name, c in cmp_primary.items():
            md.append(
                f"| {name} | {_fmt(c['iterations_to_target'], '.0f', '')} | {speedup_text(c)} | "
                f"{_fmt(c['flops_to_target'], '.3g', '')} | {speedup_text(c, 'flops_speedup')} |"
            )
        md += [
            "",
            f"Iteration speed-up at several targets (`{baseline}`'s retrieval R@1 after a fraction of its run; "
            f"`{baseline}` is credited with the step its own curve first reached each):",
            "",
            "| run | " + " | ".join(f"{f:.0%}" for f in at_targets) + " |",
            "|---|" + "---|" * len(at_targets),
        ]
        for name in runs:
            if name != baseline:
                md.append(f"| {name} | " + " | ".join(speedup_text(c[name]) for c in at_targets.values()) + " |")
    md += ["", *payoff_markdown(payoffs, out_dir), ""]
    for x, p in pngs.items():
        md += [f"![eval vs {x}]({storage.basename(p)})", ""]
    storage.write_bytes(storage.join(out_dir, "report.md"), "\n".join(md).encode())
    return results


def _chance_lines(final: dict, at_chance: list, baseline: str) -> list[str]:
    """What chance is for each metric, and which ones the baseline has not lifted far enough above it."""
    out = []
    for key, chance, what in (
        ("retrieval_r1", "retrieval_chance", "retrieval R@1 (one right caption among the eval split's)"),
        ("zeroshot_top1", "zeroshot_chance", "zero-shot top-1 (one class of the split's classes.json)"),
    ):
        if final.get(chance) is None:
            continue
        line = f"Chance for {what}: {final[chance]:.4f}; {baseline} reached {final[key]:.4f}"
        if key in at_chance:
            line += f", under {CHANCE_FACTOR:g}x chance: no speed-up is given for it (it would measure noise)"
        out.append(line + ".")
    return [*out, ""] if out else []


PAYOFF_SHARES = [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]  # learner runs sharing one reference


def plot_payoff(inputs: dict[str, tuple[float, float, float]], path: str) -> None:
    """Total-compute speed-up against the number of learner runs sharing one reference, per label:
    inputs are (uniform's learner FLOPs to target, the method's, the fixed cost) (flops.payoff_curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, (u, m, f) in inputs.items():
        ax.plot(PAYOFF_SHARES, payoff_curve(u, m, f, PAYOFF_SHARES), marker="o", ms=3, label=label)
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("learner runs sharing one reference (or learner budget, in multiples of this run's)")
    ax.set_ylabel("total-compute speed-up vs uniform")
    ax.grid(alpha=0.3)
    if inputs:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def payoff_markdown(payoffs: dict[str, dict], out_dir: str) -> list[str]:
    """The payoff of each run charged the reference's fixed cost: a sentence and a plot (payoff.png)."""
    if not payoffs:
        return ["Payoff: no run that reads the reference reached the baseline's final score."]
    lines = ["Payoff (does the reference's fixed cost pay for itself?):", ""]
    for name, p in payoffs.items():
        u, f = p["learner_speedup"], p["fixed_flops"]
        runs = p["break_even_runs"]
        if runs:
            lines.append(
                f"- **{name}**: {u:.2f}x fewer learner FLOPs than uniform to the same score; with the reference's "
                f"{f:.3g} FLOPs counted, {p['total_speedup']:.2f}x for this one run. The reference "
                f"{break_even_words(runs)} (break-even: a run that would cost uniform "
                f"{p['break_even_uniform_flops']:.3g} learner FLOPs)."
            )
        else:
            lines.append(
                f"- **{name}**: no fewer learner FLOPs than uniform to the same score: the reference never pays."
            )
    inputs = {name: (p["uniform_flops"], p["method_flops"], p["fixed_flops"]) for name, p in payoffs.items()}
    plot_payoff(inputs, storage.join(out_dir, "payoff.png"))
    return [*lines, "", "![payoff](payoff.png)"]
