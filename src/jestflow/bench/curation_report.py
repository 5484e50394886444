"""Plots and the Markdown report of `jestflow bench curation` (curation.py runs it; this renders it)."""

from __future__ import annotations

import statistics

from .. import config as C
from .. import storage
from ..core.flops import break_even_words, payoff, step_cost
from ..methods import METHODS
from ..reporting.run_report import TARGET_FRACTIONS, curve_points, plot_payoff

# The benchmark's methods are the registry's `benchmarked` ones (uniform first), plus uniform at equal
# total compute; reports list them in this order, under the registry's labels.
BENCHMARKED = tuple(name for name, m in METHODS.items() if m.benchmarked)
FLOPS_MATCHED = "uniform@flops"  # uniform with as many more steps as JEST's total compute buys
REPORTED = BENCHMARKED[:1] + (FLOPS_MATCHED,) + BENCHMARKED[1:]
# what `plots` writes
PLOTS = ("curve_iterations.png", "curve_flops.png", "noise_mix.png", "chunk_learnability.png", "payoff.png")
LABELS = {**{name: m.label for name, m in METHODS.items()}, FLOPS_MATCHED: "uniform at JEST's total FLOPs"}


def _mean_curve(runs: dict, method: str, seeds: int, key: str):
    curves = [curve_points(runs[f"{method}-s{s}"], key, True) for s in range(seeds) if f"{method}-s{s}" in runs]
    curves = [c for c in curves if c[0]]
    if not curves:
        return [], [], []
    n = min(len(c[0]) for c in curves)
    its = curves[0][0][:n]
    fl = [statistics.fmean(c[1][i] for c in curves) for i in range(n)]
    ys = [statistics.fmean(c[2][i] for c in curves) for i in range(n)]
    return its, fl, ys


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plots(runs: dict, results: dict, seeds: int, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for x in ("iterations", "flops"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for ax, (key, label) in zip(axes, (("retrieval_r1", "retrieval R@1"), ("zeroshot_top1", "zero-shot top-1"))):
            for m in REPORTED:
                its, fl, ys = _mean_curve(runs, m, seeds, key)
                if ys:
                    ax.plot(its if x == "iterations" else fl, ys, marker="o", ms=2.5, label=LABELS[m])
            ax.set_xlabel("learner iterations" if x == "iterations" else "total FLOPs (reference + scoring + learner)")
            ax.set_xscale("log")  # evaluations are log-spaced (eval_schedule=log): early steps matter
            ax.set_ylabel(f"{label} (mean of {seeds} seeds)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        _save(fig, storage.join(out, f"curve_{x}.png"))
        written.append(f"curve_{x}.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, m in zip(axes, ("jest", "uniform")):
        r = runs.get(f"{m}-s0")
        if not r:
            continue
        pts = [p for p in r["curve"] if p.get("noise_window")]
        kinds = sorted({k for p in pts for k in p["noise_window"]})
        steps = [p["step"] for p in pts]
        fracs = [[p["noise_window"].get(k, 0) / max(1, sum(p["noise_window"].values())) for p in pts] for k in kinds]
        ax.stackplot(steps, fracs, labels=kinds)
        ax.set_title(f"{LABELS[m]}: noise types of trained examples")
        ax.set_xlabel("learner iterations")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("fraction of trained examples")
    axes[1].legend(fontsize=8, loc="lower right")
    _save(fig, storage.join(out, "noise_mix.png"))
    written.append("noise_mix.png")

    d = results["chunk_learnability"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [(k + 1) * d["chunk_size"] for k in range(len(d["chosen"]))]
    ax.plot(xs, d["chosen"], marker="o", label="chosen by joint sampling")
    ax.plot(xs, d["random"], marker="o", label="random sub-batch")
    ax.set_xlabel("examples chosen so far (chunk by chunk)")
    ax.set_ylabel("mean pairwise learnability A_ij")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, storage.join(out, "chunk_learnability.png"))
    written.append("chunk_learnability.png")

    plot_payoff({LABELS[m]: v for m, v in payoff_inputs(results).items()}, storage.join(out, "payoff.png"))
    written.append("payoff.png")
    return written


def _bounds(k: int | None) -> str:
    """How many seeds' speed-ups are lower bounds (the method beat the target at its first evaluation)."""
    return f"; ≥ in {k}" if k else ""


def uniform_target(results: dict) -> tuple[float, float, bool]:
    """Uniform's final mean retrieval R@1 (the speed-ups' target), chance R@1 on the eval split, and
    whether the target means something: under 5x chance it answers nothing."""
    target = results["per_method"].get("uniform", {}).get("retrieval_r1", {}).get("mean") or 0.0
    chance = 1 / results["config"]["demo"]["n_eval"]
    return target, chance, target >= 5 * chance


def bench_seconds(results: dict) -> tuple[float, str]:
    """`make bench`'s wall time: the invocations that trained no batch-size runs (`make bench-extended`'s
    extra runs are not part of it); the total, said so, when that cannot be told apart."""
    main = [i["seconds"] for i in results.get("invocations", []) if not i["batch_size_runs"]]
    if main:
        return sum(main), "on this machine"
    return results["wall_seconds"], "on this machine (all invocations, batch-size runs included)"


def regime(results: dict) -> tuple[float, float] | None:
    """(uniform's learner FLOPs, the reference's fixed cost: its training plus its scoring pass). The
    paper's regime is the first well above the second; None for results without a uniform run."""
    u = results["per_method"].get("uniform", {}).get("learner_flops", {}).get("mean")
    if not u:
        return None
    return u, results["reference"]["flops_total"] + results["scoring_flops"]


def regime_targets(results: dict) -> list[tuple[str, bool | None, str]]:
    """Whether this benchmark can answer its question at all: a target well above chance, and a learner
    budget that dominates the reference's (issue 14, point 2)."""
    target, chance, meaningful = uniform_target(results)
    out = [
        (
            "Uniform's final retrieval R@1 is ≥ 5× chance (the target means something)",
            meaningful,
            f"{target:.4f} = {target / chance:.1f}× chance ({chance:.4f})",
        )
    ]
    r = regime(results)
    if r:
        u, fixed = r
        out.append(
            (
                "The learner's budget dominates the reference's (uniform's learner FLOPs > reference training + "
                "scoring)",
                u > fixed,
                f"{u:.3g} vs {fixed:.3g}: {u / fixed:.2f}×",
            )
        )
    return out


def target_lines(results: dict) -> list[str]:
    """Speed-ups at several targets along uniform's curve, and the payoff (results from this version on)."""
    pm = results["per_method"]
    if not any("targets" in a for a in pm.values()):
        return []
    head = " | ".join(f"{f:.0%} of uniform's run" for f in TARGET_FRACTIONS)
    target, chance, meaningful = uniform_target(results)
    caveat = (
        []
        if meaningful
        else [
            f"**Uniform's final retrieval R@1 ({target:.4f}) is under 5× chance ({chance:.4f}): the speed-ups and "
            "the payoff below are read against a target that answers nothing.**",
            "",
        ]
    )
    lines = [
        *caveat,
        "### Iteration speed-up at several targets",
        "",
        "Each target is uniform's retrieval R@1 after that fraction of its run; the speed-up is uniform's "
        "iterations to it over the method's (mean ± std over seeds; ≥: beaten at the first evaluation in "
        "that many seeds, a lower bound).",
        "",
        f"| method | {head} |",
        "|---|" + "---|" * len(TARGET_FRACTIONS),
    ]
    for m in REPORTED:
        a = pm.get(m)
        if not a or m in ("uniform", FLOPS_MATCHED) or "targets" not in a:
            continue
        cells = [
            f"{_ms(a['targets'][str(f)]['iteration_speedup'], '.2f')}{_bounds(a['targets'][str(f)]['lower_bound'])}"
            for f in TARGET_FRACTIONS
        ]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return [
        *lines,
        "",
        "## Payoff: when does the reference pay for itself?",
        "",
        *payoff_lines(results),
        "![payoff](payoff.png)",
        "",
    ]


def batch_lines(results: dict) -> list[str]:
    """The batch-size ablation (`bench curation --batch-sizes`), when it ran."""
    rows = results.get("batch_ablation") or []
    if len({r["batch_size"] for r in rows}) < 2:
        return []
    sizes = sorted({r["batch_size"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["batch_size"]): r for r in rows}
    lines = [
        "",
        "## Does the joint term need large batches? (seed 0, equal examples seen)",
        "",
        "| method | " + " | ".join(f"b = {b} (R@1)" for b in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for m in methods:
        vals = [cell.get((m, b)) for b in sizes]
        lines.append(
            f"| {LABELS[m]} | " + " | ".join("n/a" if v is None else f"{v['retrieval_r1']:.3f}" for v in vals) + " |"
        )
    gaps = []
    for b in sizes:
        j, i = cell.get(("jest", b)), cell.get(("independent", b))
        if j and i:
            gaps.append(f"b = {b}: {j['retrieval_r1'] - i['retrieval_r1']:+.3f}")
    if gaps:
        lines += [
            "",
            "JEST minus independent selection (the joint term's contribution): "
            + ", ".join(gaps)
            + ". One seed each: differences under ~0.02 are within seed noise on this benchmark.",
        ]
    return lines


def payoff_inputs(results: dict) -> dict[str, tuple[float, float, float]]:
    """Per method charged a reference: mean (uniform learner FLOPs to target, the method's, fixed cost)."""
    out = {}
    for m, a in results["per_method"].items():
        p = a.get("payoff") or {}
        u, mf, f = (p.get(k, {}).get("mean") for k in ("uniform_flops", "method_flops", "fixed_flops"))
        if u and mf and f:
            out[m] = (u, mf, f)
    return out


def payoff_lines(results: dict) -> list[str]:
    """The payoff table and a sentence per method a platform engineer can act on."""
    rows = payoff_inputs(results)
    if not rows:
        return ["No curated method reached uniform's final score: there is no payoff to compute.", ""]
    lines = [
        "| method | learner-only FLOPs speed-up | total speed-up, 1 run | reference's fixed cost | "
        "break-even: runs sharing the reference | break-even: uniform learner FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    sentences = []
    for m, (u, mf, f) in rows.items():
        p = payoff(u, mf, f)
        runs = p["break_even_runs"]
        lines.append(
            f"| {LABELS[m]} | {p['learner_speedup']:.2f}x | {p['total_speedup']:.2f}x | {f:.3g} | "
            f"{runs if runs else 'never'} | {_g(p['break_even_uniform_flops'])} |"
        )
        if runs:
            sentences.append(
                f"- **{LABELS[m]}**: the reference {break_even_words(runs)} (break-even: a run that would cost "
                f"uniform {p['break_even_uniform_flops']:.3g} learner FLOPs, "
                f"{p['break_even_uniform_flops'] / u:.1f}x this benchmark's); beyond that it saves up to "
                f"{1 - 1 / p['learner_speedup']:.0%} of the learner's compute."
            )
        else:
            sentences.append(
                f"- **{LABELS[m]}**: spends no fewer learner FLOPs than uniform; the reference never pays."
            )
    note = (
        "From the mean over seeds of the learner FLOPs each needs to reach uniform's final R@1 (so the "
        "learner-only speed-up here is a ratio of means; the Results table's is a mean of per-seed ratios). "
        "Fixed cost: the reference's training and its scoring pass over the pool."
    )
    return [*lines, "", note, "", *sentences, ""]


def _g(v) -> str:
    return "never" if v is None else f"{v:.3g}"


def _ms(stat: dict, fmt: str = ".3f") -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}"


def targets(results: dict) -> list[tuple[str, bool | None, str]]:
    """The benchmark's targets (issue 14), each met or not, with what was measured."""
    pm = results["per_method"]
    j = pm.get("jest")
    if not j:
        return []
    out = regime_targets(results)
    # A target near chance answers nothing: speed-ups to it are not read as met or missed.
    target, chance, meaningful = uniform_target(results)
    if not meaningful:
        why = f"n/a: uniform's final R@1 {target:.4f} is under 5× chance ({chance:.4f}); the target answers nothing"
        return out + [
            (name, None, why)
            for name in (
                "JEST reaches uniform's final retrieval R@1 in ≥ 5× fewer iterations, measured without a cap",
                "JEST's learner-only compute to uniform's final R@1 ≤ 1/3 of uniform's (break-even stated)",
                "JEST beats the offline filter and independent selection at equal total FLOPs",
            )
        ]
    it, spread = j["iteration_speedup_retrieval_r1"]["mean"], j["iteration_speedup_retrieval_r1"]["std"]
    bounds = j.get("lower_bound_retrieval_r1", 0)
    out.append(
        (
            "JEST reaches uniform's final retrieval R@1 in ≥ 5× fewer iterations, measured without a cap",
            it is not None and it >= 5 and j["reached_retrieval_r1"] == j["seeds"] and not bounds,
            f"{it:.2f}× ± {spread:.2f} ({j['reached_retrieval_r1']}/{j['seeds']} seeds reached it; "
            f"{bounds} lower bounds)"
            if it
            else f"reached in {j['reached_retrieval_r1']}/{j['seeds']} seeds",
        )
    )
    learner = j.get("learner_flops_speedup_retrieval_r1", {}).get("mean")
    inputs = payoff_inputs(results).get("jest")  # as in the payoff table: from the mean FLOPs over seeds
    runs = payoff(*inputs)["break_even_runs"] if inputs else None
    out.append(
        (
            "JEST's learner-only compute to uniform's final R@1 ≤ 1/3 of uniform's (break-even stated)",
            learner is not None and learner >= 3,
            (f"learner-only speed-up {learner:.2f}×" if learner else "not reached")
            + (f"; the reference {break_even_words(runs)}" if runs else ""),
        )
    )
    fl = j["flops_speedup_retrieval_r1"]["mean"]
    out.append(
        (
            "JEST reaches it in less total compute than uniform in one run (reference + scoring counted)",
            fl is not None and fl > 1,
            f"compute speed-up {fl:.2f}×" if fl else "not reached",
        )
    )
    share = j.get("oracle_gain_share")
    out.append(
        (
            "JEST captures most (> 50%) of the oracle's gain over uniform",
            share is not None and share > 0.5,
            f"share {share:.0%}" if share is not None else "n/a",
        )
    )
    eq = results["equal_flops_retrieval_r1"]
    for other in ("uniform@flops", "independent", "offline-easy-reference"):
        a, b = eq.get("jest", {}), eq.get(other, {})
        if a.get("mean") is None or b.get("mean") is None:
            out.append((f"JEST beats {other} at equal total FLOPs", None, "n/a"))
            continue
        # "beats" only when the gap exceeds the seed spread of either side; otherwise it is a tie
        margin = max(a["std"] or 0.0, b["std"] or 0.0)
        gap = a["mean"] - b["mean"]
        out.append(
            (
                f"JEST beats {other} at equal total FLOPs (retrieval R@1 at JEST's final compute)",
                gap > margin,
                f"{a['mean']:.4f} ± {a['std']:.4f} vs {b['mean']:.4f} ± {b['std']:.4f}"
                + ("" if abs(gap) > margin else " (within the seed spread: a tie)"),
            )
        )
    f, u = pm.get("flexi-jest"), pm.get("uniform")
    if f and u:
        cfg = C.from_dict(results["config"])
        ratio = step_cost(cfg.with_method("flexi-jest")).total / step_cost(cfg.with_method("uniform")).total
        wall = f["wall_seconds"]["mean"] / u["wall_seconds"]["mean"]  # the same number of steps
        gap = j["retrieval_r1"]["mean"] - f["retrieval_r1"]["mean"]
        out.append(
            (
                "Flexi-JEST's iteration ≤ 1.3× a uniform step, R@1 within one seed-std of JEST",
                ratio <= 1.3 and abs(gap) <= (j["retrieval_r1"]["std"] or 0.0),
                f"{ratio:.2f}× a uniform step in FLOPs ({wall:.2f}× in wall time on this CPU); R@1 "
                f"{f['retrieval_r1']['mean']:.3f} vs JEST {j['retrieval_r1']['mean']:.3f} "
                f"± {j['retrieval_r1']['std']:.3f}",
            )
        )
    wall, what = bench_seconds(results)
    out.append(("`make bench` within 60 minutes on 2 CPU cores", wall <= 60 * 60, f"{wall / 60:.1f} min {what}"))
    return out


def _wall_words(results: dict) -> str:
    total = f"wall time {results['wall_seconds'] / 60:.1f} min, summed over the invocations that trained these runs"
    inv = results.get("invocations", [])
    extra = sum(i["seconds"] for i in inv if i["batch_size_runs"])
    if not extra:
        return total
    main, _ = bench_seconds(results)
    runs = sum(i["batch_size_runs"] for i in inv)
    return f"{total} (`make bench` {main / 60:.1f} min, then {runs} batch-size runs {extra / 60:.1f} min)"


def _regime_words(results: dict) -> str:
    r = regime(results)
    if not r:
        return ""
    u, fixed = r
    return (
        f"uniform's learner budget ({u:.3g} FLOPs) is {u / fixed:.2f}× the reference's fixed cost (its training "
        f"and scoring pass, {fixed:.3g}); "
    )


def render(results: dict, notes: str = "") -> str:
    cfg = results["config"]
    pm = results["per_method"]
    b = cfg["learner"]["batch_size"]
    n = C.from_dict(cfg).with_method("jest").super_batch_size()
    demo = C.from_dict(cfg).demo
    lines = [
        "# jestflow benchmarks: does JEST pay off?",
        "",
        f"- **Command:** `{results['command']}`",
        f"- **Date:** {results['date']}; **jestflow** {results['version']}",
        f"- **Machine:** {results['machine']}",
        f"- **Setup:** preset `{results['preset']}`: pool {demo.n_pool} (≈{demo.noise_mix()['clean']:.0%} clean), "
        f"curated {demo.n_curated}, held-out eval {demo.n_eval}; model `{cfg['model']['size']}`; "
        f"{cfg['learner']['steps']} learner iterations of b = {b} (JEST super-batch N = {n}, "
        f"{cfg['select']['n_chunks']} chunks); reference {results['reference']['steps']} steps; "
        f"{_regime_words(results)}{results['seeds']} seeds; {_wall_words(results)}.",
        "",
        "## Results (mean ± std over seeds)",
        "",
        "| method | retrieval R@1 | i2t R@5 | t2i R@5 | zero-shot top-1 | iter. speed-up (R@1) | FLOPs speed-up (R@1) "
        "| learner-only FLOPs speed-up (R@1) | iter. speed-up (zero-shot) | clean fraction | share of oracle gain "
        "| total FLOPs | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in REPORTED:
        a = pm.get(m)
        if not a:
            continue
        share = a.get("oracle_gain_share")
        lines.append(
            f"| {LABELS[m]} | {_ms(a['retrieval_r1'])} | {_ms(a['i2t_r5'])} | {_ms(a['t2i_r5'])} "
            f"| {_ms(a['zeroshot_top1'])} "
            f"| {_ms(a['iteration_speedup_retrieval_r1'], '.2f')} ({a['reached_retrieval_r1']}/{a['seeds']}"
            f"{_bounds(a.get('lower_bound_retrieval_r1'))}) "
            f"| {_ms(a['flops_speedup_retrieval_r1'], '.2f')} "
            f"| {_ms(a.get('learner_flops_speedup_retrieval_r1'), '.2f')} "
            f"| {_ms(a['iteration_speedup_zeroshot_top1'], '.2f')} ({a['reached_zeroshot_top1']}/{a['seeds']}) "
            f"| {_ms(a['clean_fraction'])} | {'n/a' if share is None else f'{share:.0%}'} "
            f"| {a['total_flops']['mean']:.3g} | {a['wall_seconds']['mean']:.0f} |"
        )
    lines += [
        "",
        "Speed-ups: uniform's final iterations (or total FLOPs) divided by what the method needed to "
        "first reach uniform's final score on the same seed, read off learning curves (linear interpolation); "
        "learner-only leaves out the reference's training and scoring (as if one reference served many runs); "
        "(k/n) counts the seeds that reached it at all (the mean is over those). Total FLOPs include, for "
        "methods that use the reference, its training and its scoring pass over the pool. Share of oracle "
        "gain: (method − uniform) / (oracle − uniform) in mean retrieval R@1.",
        "",
        "### At equal total compute",
        "",
        "| method | retrieval R@1 at JEST's final total FLOPs |",
        "|---|---|",
    ]
    equal = results["equal_flops_retrieval_r1"]
    for m, st in ((m, equal[m]) for m in REPORTED if m in equal):  # report order, also when read back from JSON
        lines.append(f"| {LABELS[m]} | {_ms(st)}{'' if st['n'] == results['seeds'] else f' ({st[chr(110)]} seeds)'} |")
    lines += [
        "",
        "Methods whose curve ends before JEST's compute budget keep their final value (more compute was not spent).",
        "",
        *target_lines(results),
        "## Targets",
        "",
        "| target | met | measured |",
        "|---|---|---|",
    ]
    for name, ok, measured in targets(results):
        lines.append(f"| {name} | {'n/a' if ok is None else ('yes' if ok else '**no**')} | {measured} |")
    lines += batch_lines(results)
    lines += [
        "",
        "## Ablation (JEST, seed 0)",
        "",
        "| setting | retrieval R@1 | zero-shot top-1 | clean fraction | total FLOPs | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["ablations"]:
        zs = "n/a" if r["zeroshot_top1"] is None else f"{r['zeroshot_top1']:.3f}"
        lines.append(
            f"| {r['setting']} | {r['retrieval_r1']:.3f} | {zs} | {r['clean_fraction']:.3f} | "
            f"{r['total_flops']:.3g} | {r['wall_seconds']:.0f} |"
        )
    d = results["chunk_learnability"]
    lines += [
        "",
        "## Selection diagnostics",
        "",
        f"Mean pairwise learnability of the set chosen so far, after each chunk of {d['chunk_size']}, against a "
        f"random set of the same size, on {d['batches']} super-batches with the trained JEST learner (seed 0):",
        "",
        "| chunks | " + " | ".join(str(k + 1) for k in range(len(d["chosen"]))) + " |",
        "|---|" + "---|" * len(d["chosen"]),
        "| chosen | " + " | ".join(f"{v:.2f}" for v in d["chosen"]) + " |",
        "| random | " + " | ".join(f"{v:.2f}" for v in d["random"]) + " |",
        "",
        "![learning curves against iterations](curve_iterations.png)",
        "",
        "![learning curves against total FLOPs](curve_flops.png)",
        "",
        "![noise types trained on](noise_mix.png)",
        "",
        "![chunk learnability](chunk_learnability.png)",
        "",
    ]
    if notes:
        lines += ["## Findings", "", notes.strip(), ""]
    return "\n".join(lines)
