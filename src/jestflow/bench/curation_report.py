"""Plots and the Markdown report of `jestflow bench curation` (curation.py runs it, analysis.py measures it,
this renders it). Every ratio carries its 95% interval; an open end of the ladder is written "> 8x" or
"< 0.5x"; a metric uniform left near chance gets no ratio at all."""

from __future__ import annotations

import math

from .. import config as C
from .. import storage
from ..core.flops import break_even_words, step_cost
from ..methods import METHODS
from ..reporting.run_report import plot_payoff

PLOTS = ("ladder.png", "curve_iterations.png", "noise_mix.png", "chunk_learnability.png", "payoff.png",
         "longtail_mix.png")  # fmt: skip
LABELS = {name: m.label for name, m in METHODS.items()}
MAIN_TIME_LIMIT_MIN = 90  # `make bench` on 2 CPU cores (issue 24)


# ---- formatting -----------------------------------------------------------------------------------


def ratio(iv: dict, digits: int = 2) -> str:
    """'3.10× [2.20×, 4.00×]'; a bound beyond the ladder's end reads '> 8.00×' (or '< 0.50×'): the data say
    only that it lies past the longest (shortest) complete uniform run. `iv`: analysis.py's speed-up."""

    def one(v: float) -> str:
        if v == math.inf:
            return f"> {iv['top']:.{digits}f}×"
        if v == -math.inf:
            return f"< {iv['bottom']:.{digits}f}×"
        return f"{v:.{digits}f}×"

    return f"{one(iv['value'])} [{one(iv['low'])}, {one(iv['high'])}]"


NOT_MEASURED = "not measured (beyond uniform's ladder)"


def val(iv: dict, digits: int = 3) -> str:
    if math.isnan(iv["value"]):
        return NOT_MEASURED
    return f"{iv['value']:.{digits}f} [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"


def signed(iv: dict, digits: int = 3) -> str:
    if math.isnan(iv["value"]):
        return "—"
    return f"{iv['value']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}]"


# ---- plots ----------------------------------------------------------------------------------------


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plots(results: dict, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main, written = results["main"], []
    # the ladder: uniform's complete runs against total compute, every method placed on it
    fig, ax = plt.subplots(figsize=(8, 4.6))
    lad = main["ladder"]
    xs = [r["total_flops"] for r in lad.values()]
    ys = [r["retrieval_r1"] for r in lad.values()]
    ax.errorbar(xs, [y["value"] for y in ys], yerr=_err(ys), fmt="-o", color="black", capsize=3,
                label="uniform, complete runs at " + ", ".join(f"{k}×" for k in lad))  # fmt: skip
    for m, e in main["methods"].items():
        r = e["retrieval_r1"]
        ax.errorbar([e["total_flops"]], [r["value"]], yerr=_err([r]), fmt="s", capsize=3, label=LABELS[m])
    ax.axvline(main["equal_compute"]["total_flops"], color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("total FLOPs (learner + reference's training and scoring where used)")
    ax.set_ylabel(f"retrieval R@1, mean of {results['seeds']} seeds (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, storage.join(out, "ladder.png"))
    written.append("ladder.png")

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, curve in _mean_curves(results, out).items():
        ax.plot(*zip(*curve), marker="o", ms=2.5, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("learner iterations (log-spaced evaluations)")
    ax.set_ylabel(f"retrieval R@1 (mean of {results['seeds']} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, storage.join(out, "curve_iterations.png"))
    written.append("curve_iterations.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    kinds = sorted({k for e in main["methods"].values() for k in e["noise_mix"]})
    names = list(main["methods"])
    bottom = [0.0] * len(names)
    for k in kinds:
        vals = [main["methods"][m]["noise_mix"].get(k, 0.0) for m in names]
        ax.bar(range(len(names)), vals, bottom=bottom, label=k)
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax.set_xticks(range(len(names)), [LABELS[m].split(" (")[0] for m in names], rotation=20, fontsize=8)
    ax.set_ylabel("share of trained examples (seed mean)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    _save(fig, storage.join(out, "noise_mix.png"))
    written.append("noise_mix.png")

    d = results["chunk_learnability"]
    fig, ax = plt.subplots(figsize=(6, 4))
    cx = [(k + 1) * d["chunk_size"] for k in range(len(d["chosen"]))]
    ax.plot(cx, d["chosen"], marker="o", label="chosen by joint sampling")
    ax.plot(cx, d["random"], marker="o", label="random sub-batch")
    ax.set_xlabel("examples chosen so far (chunk by chunk)")
    ax.set_ylabel("mean pairwise learnability A_ij")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, storage.join(out, "chunk_learnability.png"))
    written.append("chunk_learnability.png")

    inputs = {LABELS[m]: (p["uniform_flops"], p["method_flops"], p["fixed_flops"])
              for m, e in main["methods"].items() if (p := e.get("payoff")) and "uniform_flops" in p}  # fmt: skip
    plot_payoff(inputs, storage.join(out, "payoff.png"))
    written.append("payoff.png")

    lt = results.get("long_tail", {}).get("methods")
    if lt:
        fig, ax = plt.subplots(figsize=(7, 4))
        for m, e in lt.items():
            if e["head_share_over_training"]:
                ax.plot(*zip(*e["head_share_over_training"]), marker="o", ms=2.5, label=LABELS[m].split(" (")[0])
        ax.axhline(results["long_tail"]["pool_head_share"], color="grey", ls=":", lw=1, label="pool (clean part)")
        ax.set_xscale("log")
        ax.set_xlabel("learner iterations")
        ax.set_ylabel("head concepts' share of trained examples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, storage.join(out, "longtail_mix.png"))
        written.append("longtail_mix.png")
    return written


def _err(ivs: list[dict]) -> list[list[float]]:
    return [[i["value"] - i["low"] for i in ivs], [i["high"] - i["value"] for i in ivs]]


def _mean_curves(results: dict, out: str) -> dict[str, list]:
    """Seed-mean learning curves (secondary view) of uniform 1x and every method, from their runs."""
    import statistics

    curves = {}
    names = [("uniform-x1", "uniform (1×)")] + [(m, LABELS[m]) for m in results["main"]["methods"]]
    for run, label in names:
        per_seed = []
        for s in range(results["seeds"]):
            f = storage.join(out, "runs", f"{run}-s{s}", "train.json")
            if storage.exists(f):
                per_seed.append([(p["step"], p["retrieval_r1"]) for p in storage.read_json(f)["curve"]])
        if per_seed:
            n = min(map(len, per_seed))
            curves[label] = [(per_seed[0][i][0], statistics.fmean(c[i][1] for c in per_seed)) for i in range(n)]
    return curves


# ---- Markdown -------------------------------------------------------------------------------------


def render(results: dict, notes: str = "") -> str:
    main = results["main"]
    lines = [
        "# jestflow benchmarks: does JEST pay off?",
        "",
        *_setup(results),
        "",
        "## Headline",
        "",
        *headline(results),
        "",
        "## Uniform at five budgets: the ruler",
        "",
        "Uniform trained at each budget as a complete run with its own learning-rate schedule (warmup, "
        "cosine to the end). A method's speed-up is the budget uniform needs to match its final retrieval "
        "R@1, read between these runs linearly in log budget (the paper's method, `bench/intervals.py`). "
        "Intervals: 95%, bootstrap over seeds and eval queries, paired.",
        "",
        "| uniform budget | iterations | total FLOPs | retrieval R@1 [95%] | per seed | × chance (worst seed) |",
        "|---|---|---|---|---|---|",
    ]
    chance = main["chance"]["retrieval"]
    for k, r in main["ladder"].items():
        lines.append(
            f"| {k}× | {r['steps']:.0f} | {r['total_flops']:.3g} | {val(r['retrieval_r1'])} | "
            + ", ".join(f"{v:.3f}" for v in r["per_seed"])
            + f" | {min(r['per_seed']) / chance:.0f}× |"
        )
    lines += ["", "![uniform's ladder and every method on it](ladder.png)", ""]
    lines += [
        "## Every method against the ladder",
        "",
        "JEST trains at the 1× budget; the others at JEST's total compute (the reference's training and "
        "scoring counted), so they also meet it head on (next table). Speed-up = uniform's iterations (or "
        "FLOPs) to the method's final R@1 over the method's own; total FLOPs count the reference for the "
        "methods that read it, learner FLOPs leave it out.",
        "",
        "| method | iterations | retrieval R@1 [95%] | uniform budget to match | iteration speed-up | "
        "total-FLOPs speed-up | learner-FLOPs speed-up | clean fraction | total FLOPs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, e in main["methods"].items():
        lines.append(
            f"| {LABELS[m]} | {e['steps']:.0f} | {val(e['retrieval_r1'])} | {ratio(e['uniform_budget'])} | "
            f"{ratio(e['iteration_speedup'])} | {ratio(e['total_flops_speedup'])} | "
            f"{ratio(e['learner_flops_speedup'])} | {e['clean_fraction']:.3f} | {e['total_flops']:.3g} |"
        )
    lines += ["", *equal_compute_lines(results), "", *zeroshot_lines(results), "", *payoff_lines(results), ""]
    lines += ["## Targets", "", "| target | met | measured |", "|---|---|---|"]
    for what, ok, measured in targets(results):
        mark = "yes" if ok else ("undecided" if ok is None else "**no**")
        lines.append(f"| {what} | {mark} | {measured} |")
    lines.append("")
    if notes:
        lines += ["## Findings", "", notes.strip(), ""]
    lines += extended_lines(results)
    lines += [
        "### Learning curves (secondary view)",
        "",
        "Seed-mean R@1 along each run. A cosine run stopped early is not the model a shorter complete run "
        "gives, so no speed-up above is read off these curves.",
        "",
        "![learning curves](curve_iterations.png)",
        "",
        "![noise mix of what each method trained on](noise_mix.png)",
        "",
        "![per-chunk learnability](chunk_learnability.png)",
        "",
    ]
    return "\n".join(lines)


def _setup(results: dict) -> list[str]:
    cfg = C.from_dict(results["config"])
    main = results["main"]
    d, lr = cfg.demo, results["learning_rates"]
    n = cfg.with_method("jest").super_batch_size()
    ratio_u = main["uniform_1x_flops"] / main["reference_fixed_flops"] if main["reference_fixed_flops"] else math.nan
    return [
        f"- **Command:** `{results['command']}`",
        f"- **Date:** {results['date']}; **jestflow** {results['version']}",
        f"- **Machine:** {results['machine']}",
        f"- **Setup:** preset `{results['preset']}`: pool {d.n_pool} (≈{d.noise_mix()['clean']:.0%} clean), curated "
        f"{d.n_curated}, held-out eval {d.n_eval} (retrieval chance {1 / d.n_eval:.4f}); model `{cfg.model.size}`; "
        f"1× budget = {cfg.learner.steps} iterations of b = {cfg.learner.batch_size} (JEST's super-batch N = {n}, "
        f"{cfg.select.n_chunks} chunks); reference {cfg.reference.steps} steps of {cfg.reference.batch_size}: "
        f"uniform's 1× learner budget is {ratio_u:.2f}× the reference's training + scoring; {results['seeds']} "
        f"seeds; peak learning rates from the sweep: uniform {lr['uniform']:g}, JEST {lr['jest']:g} (the other "
        "methods take their sampler's).",
        f"- **Time:** {_time_words(results)}",
    ]


def _time_words(results: dict) -> str:
    t = results.get("timing", {})
    out = []
    if "main" in t:
        m = t["main"]
        cpu = f", {m['cpu_seconds'] / 60:.0f} CPU-min" if "cpu_seconds" in m else ""
        part = (
            "" if m.get("of", m["runs"]) == m["runs"] else f" of {m['of']}: the others were reused from an earlier one"
        )
        out.append(f"`make bench` {m['seconds'] / 60:.1f} min{cpu} ({m['runs']} runs trained{part})")
        if m.get("note"):  # what the timing does not show (e.g. other work on the machine), added by hand
            out.append(m["note"])
    from .curation import PARTS

    def part(k: str, v: dict) -> str:
        runs = f"{v['runs']} of {v['of']} runs" if "runs" in v and v.get("of") not in (None, v["runs"]) else ""
        more = "; ".join(x for x in (runs, v.get("note", "")) if x)  # a note: added by hand, e.g. from a log
        return f"{k} {v['seconds'] / 60:.1f} min" + (f" ({more})" if more else "")

    ext = [part(k, t[k]) for k in PARTS if k in t and k != "main"]
    prep = sum(v["seconds"] for k, v in t.items() if k.startswith("prepare:"))
    if prep:
        ext.insert(0, f"data, references and scores of the other parts {prep / 60:.1f} min")
    if ext:
        out.append("`make bench-extended` parts: " + ", ".join(ext))
    return "; ".join(out) + " (wall time, 2 worker processes)" if out else "not recorded"


def headline(results: dict) -> list[str]:
    main, ladder = results["main"], results["ladder"]
    j = main["methods"].get("jest")
    if not j:
        return ["No JEST run finished."]
    eq = main["equal_compute"]
    u = eq["uniform"]
    lines = [
        f"Read the paper's way (uniform trained to completion at {', '.join(f'{k:g}×' for k in ladder)} its "
        f"budget, {results['seeds']} seeds, 95% intervals over seeds and eval queries), JEST at 1× matches "
        f"uniform at **{ratio(j['uniform_budget'])}** its budget: an iteration speed-up of "
        f"**{ratio(j['iteration_speedup'])}**, a total-compute speed-up of "
        f"**{ratio(j['total_flops_speedup'])}** (the reference's training and scoring counted) and a "
        f"learner-only one of {ratio(j['learner_flops_speedup'])}.",
        "",
        f"At JEST's total compute, uniform (read between its complete runs) reaches {val(u['retrieval_r1'])}, "
        f"JEST {val(j['retrieval_r1'])}: JEST {u['verdict']} uniform ({signed(u['jest_minus'])}). Against "
        "the other curated methods at the same compute: "
        + "; ".join(
            f"JEST {e['verdict']} {LABELS[m].split(' (')[0]} ({signed(e['jest_minus'])})"
            for m, e in eq.items()
            if m not in ("total_flops", "uniform_budget", "uniform")
        )
        + ".",
    ]
    return lines


def equal_compute_lines(results: dict) -> list[str]:
    eq = results["main"]["equal_compute"]
    j = results["main"]["methods"]["jest"]["retrieval_r1"]
    lines = [
        "## At equal total compute",
        "",
        f"Every method at JEST's total compute ({eq['total_flops']:.3g} FLOPs, {eq['uniform_budget']:.2f}× "
        'uniform\'s 1× run); uniform\'s value read between its complete runs. "Beats" and "ties" come from '
        "the 95% interval of the difference (JEST − method): it excludes 0, or holds it.",
        "",
        "| method | steps | retrieval R@1 [95%] | JEST − method [95%] | JEST ... |",
        "|---|---|---|---|---|",
        f"| JEST (joint learnability) | {results['main']['methods']['jest']['steps']:.0f} | {val(j)} | | |",
    ]
    for m, e in eq.items():
        if m in ("total_flops", "uniform_budget"):
            continue
        steps = results["main"]["methods"].get(m, {}).get("steps")
        label = LABELS.get(m, m) if m != "uniform" else "uniform (between its complete runs)"
        lines.append(
            f"| {label} | {f'{steps:.0f}' if steps else '—'} | {val(e['retrieval_r1'])} | {signed(e['jest_minus'])} | "
            f"{e['verdict']} it |"
        )
    return lines


def zeroshot_lines(results: dict) -> list[str]:
    c = results["main"]["chance"]
    if c.get("zeroshot") is None:
        return []
    x = c["uniform_zeroshot"] / c["zeroshot"]
    lines = [
        "## Zero-shot classification",
        "",
        f"Chance is {c['zeroshot']:.2f} (1 of {round(1 / c['zeroshot'])} classes); uniform's 1× top-1 is "
        f"{c['uniform_zeroshot']:.3f} = {x:.2f}× chance.",
    ]
    if not c["zeroshot_above_chance"]:
        lines[-1] += (
            f" Under {c['factor']:g}× chance a ratio against it would measure noise: no zero-shot speed-up is "
            "given. Seed-mean top-1 per method: "
            + ", ".join(
                f"{LABELS[m].split(' (')[0]} {e['zeroshot_top1']:.3f}" for m, e in results["main"]["methods"].items()
            )
            + "."
        )
    return lines


def payoff_verdict(e: dict) -> str:
    """What the intervals decide about the reference's cost, as the predicate of "the reference ...": pays
    within one run only if the total-compute speed-up's interval lies above 1×, never if the learner-only
    one lies below 1×; otherwise it is undecided (a point estimate alone decides nothing)."""
    total, learner, p = e["total_flops_speedup"], e["learner_flops_speedup"], e["payoff"]
    if total["low"] > 1:
        return "pays for itself within a single run (the total-compute speed-up's interval lies above 1×)"
    if learner["high"] < 1:
        return "never pays for itself (the learner-only speed-up's interval lies below 1×)"
    if learner["low"] > 1:
        worst = math.ceil(p["fixed_flops"] / ((learner["low"] - 1) * p["method_flops"]))
        best = "a single run" if total["high"] > 1 and p["break_even_runs"] == 1 else f"{p['break_even_runs']} runs"
        return (
            f"pays for itself once enough learner runs share it: {best} at the point estimate, "
            f"{worst} at the interval's low end"
        )
    return (
        f"may or may not pay for itself: the learner-only speed-up's interval holds 1× (point estimate: "
        f"{break_even_words(p['break_even_runs'])})"
    )


def payoff_lines(results: dict) -> list[str]:
    main = results["main"]
    lines = ["## Payoff: when does the reference pay for itself?", ""]
    for m, e in main["methods"].items():
        p = e.get("payoff")
        if p is None:
            continue
        if "open" in p:
            lines.append(f"- **{LABELS[m]}**: its score lies {p['open']} uniform's ladder: no break-even is read.")
            continue
        decided = e["learner_flops_speedup"]["low"] > 1
        lines.append(
            f"- **{LABELS[m]}**: uniform needs {p['uniform_flops']:.3g} learner FLOPs to its score, it "
            f"{p['method_flops']:.3g} (learner-only {ratio(e['learner_flops_speedup'])}); the reference costs "
            f"{p['fixed_flops']:.3g}. Measured at the 1× budget, the reference {payoff_verdict(e)}."
            + (
                " Extrapolated, not measured: if the learner-only speed-up held at larger budgets, one run "
                f"would break even once uniform would spend {p['break_even_uniform_flops']:.3g} learner FLOPs."
                if decided and p["break_even_runs"]
                else ""
            )
        )
    return [*lines, "", "![payoff](payoff.png)"]


def targets(results: dict) -> list[tuple[str, bool | None, str]]:
    main = results["main"]
    c = main["chance"]
    j = main["methods"].get("jest", {})
    out = [
        (
            "Uniform's 1× retrieval R@1 ≥ 10× chance in every seed",
            c["ten_x_chance_every_seed"],
            ", ".join(f"{x:.0f}×" for x in c["uniform_1x_per_seed_x_chance"]),
        ),
        (
            "Its standard error over eval queries ≤ 10% of it (every seed)",
            max(c["query_se_share"]) <= 0.10,
            ", ".join(f"{x:.1%}" for x in c["query_se_share"]),
        ),
    ]
    sweep = results.get("lr_sweep")
    if sweep:
        ok = all(s["best"] == s["used"] or s["best_minus_used"]["low"] <= 0 for s in sweep.values())
        out.append(
            (
                "The benchmark runs each swept method at the sweep's best learning rate (or one that ties it)",
                ok,
                "; ".join(
                    f"{m}: best {s['best']}, used {s['used']}"
                    + (f" (best − used {signed(s['best_minus_used'])})" if s["best"] != s["used"] else "")
                    for m, s in sweep.items()
                ),
            )
        )
    if j:

        def at_least(iv: dict, x: float) -> bool | None:
            return True if iv["low"] >= x else (False if iv["high"] < x else None)

        out += [
            (
                "JEST ≥ 5× fewer iterations than uniform (ladder, 95% interval)",
                at_least(j["iteration_speedup"], 5),
                ratio(j["iteration_speedup"]),
            ),
            (
                "JEST's learner-only compute ≤ 1/3 of uniform's to the same score",
                at_least(j["learner_flops_speedup"], 3),
                ratio(j["learner_flops_speedup"]),
            ),
            (
                "JEST needs less total compute than uniform in one run (reference counted)",
                at_least(j["total_flops_speedup"], 1),
                ratio(j["total_flops_speedup"]),
            ),
        ]
    eq = main["equal_compute"]
    filt = eq.get("offline-easy-reference")
    if filt:
        out.append(
            (
                "JEST beats the offline filter at equal total compute (interval of the difference above 0)",
                filt["verdict"] == "beats" or (None if filt["verdict"] == "ties" else False),
                f"JEST − filter {signed(filt['jest_minus'])}",
            )
        )
    flexi = main["methods"].get("flexi-jest")
    if flexi and j:
        cfg = C.from_dict(results["config"])
        step = step_cost(cfg.with_method("flexi-jest")).total / step_cost(cfg.with_method("uniform")).total
        fx = eq.get("flexi-jest", {})
        out.append(
            (
                "Flexi-JEST's iteration ≤ 1.3× a uniform step, and no worse than JEST at equal compute",
                step <= 1.3 and fx.get("verdict") != "beats",
                f"{step:.2f}× a uniform step in FLOPs; JEST − Flexi-JEST {signed(fx['jest_minus'])}" if fx else "",
            )
        )
    t = results.get("timing", {}).get("main")
    if t:
        whole = t.get("of", t["runs"]) == t["runs"]
        out.append(
            (
                f"`make bench` within {MAIN_TIME_LIMIT_MIN} minutes on 2 CPU cores",
                t["seconds"] <= MAIN_TIME_LIMIT_MIN * 60 if whole else None,
                f"{t['seconds'] / 60:.1f} min"
                if whole
                else f"not timed whole: {t['seconds'] / 60:.1f} min for {t['runs']} of {t['of']} runs",
            )
        )
    return out


# ---- make bench-extended's parts -----------------------------------------------------------------


def extended_lines(results: dict) -> list[str]:
    if not results.get("extended"):
        return []
    t = results.get("timing", {})

    def took(part: str) -> str:
        return f" ({t[part]['seconds'] / 60:.1f} min)" if part in t else ""

    lines = ["## `make bench-extended`", ""]
    sweep = results.get("lr_sweep", {})
    if sweep:
        lrs = sorted({lr for s in sweep.values() for lr in s["rows"]}, key=float)
        lines += [
            f"### Learning-rate sweep{took('lr-sweep')}",
            "",
            "Peak learning rate of uniform and JEST at the 1× budget, seeds 0 and 1 (R@1 [95%]); the bold one "
            "is each method's best, the benchmark's `LEARNING_RATES`.",
            "",
            "| method | " + " | ".join(lrs) + " |",
            "|---|" + "---|" * len(lrs),
        ]
        for m, s in sweep.items():
            cells = []
            for lr in lrs:
                r = s["rows"].get(lr)
                cell = val(r["retrieval_r1"]) if r else "—"
                cells.append(f"**{cell}**" if lr == s["best"] else cell)
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    refs = results.get("reference_strength", {})
    if refs:
        lines += [
            f"### Reference strength{took('reference-strength')}",
            "",
            "JEST (1×) and the offline filter (at JEST's total compute, which grows with the reference's "
            "cost) with references trained for more steps on the same curated set. Learnability subtracts "
            "the reference's loss: does a weak reference hurt JEST more than the filter?",
            "",
            "| reference steps | reference's own R@1 | fixed cost (FLOPs) | JEST [95%] | filter [95%] | "
            "JEST − filter [95%] | JEST ... |",
            "|---|---|---|---|---|---|---|",
        ]
        for steps, r in refs.items():
            lines.append(
                f"| {steps} | {r['reference_r1']:.3f} | {r['fixed_flops']:.3g} | {val(r['jest'])} | "
                f"{val(r['filter'])} | {signed(r['jest_minus_filter'])} | {r['verdict']} the filter |"
            )
        lines.append("")
    lines += longtail_lines(results, took("long-tail"))
    prec = results.get("precision")
    if prec:
        from .precision import markdown as precision_table

        lines += [
            f"### Selection precision on trained embeddings{took('precision')}",
            "",
            f"JEST's learner (seed 0) and the reference's float16 cache on real super-batches (N = 5b), "
            f"{prec['draws']} draws each, the same random draws with and without the variant; embeddings of "
            f"d = {prec['embed_dim']} (`bench/precision.py`). Changed: the share of the b chosen examples not "
            "chosen at float precision. Gain error: the largest difference of a candidate's gain, in nats.",
            "",
            *precision_table(prec),
            "",
            "bf16 is emulated here (inputs rounded, float32 products); the fused bf16 kernel itself has no CPU "
            "test (Triton's interpreter cannot run a bf16 `tl.dot`); BENCHMARKS.md's GPU section measures it.",
            "",
        ]
    singles = (
        ("ablations", "JEST's n_chunks and filter_ratio (seed 0)", "ablations"),
        ("batch_ablation", "Sub-batch size at equal examples seen (seed 0)", "batch-sizes"),
    )
    for key, title, part in singles:
        rows = results.get(key) or []
        if not rows:
            continue
        lines += [
            f"### {title}{took(part)}",
            "",
            "One seed: the interval is over eval queries alone.",
            "",
            "| run | steps | retrieval R@1 [95%] | clean fraction | total FLOPs |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['run']} | {r['steps']} | {val(r['retrieval_r1'])} | {r['clean_fraction']:.3f} | "
            f"{r['total_flops']:.3g} |"
            for r in rows
        ]
        lines.append("")
    return [*lines, *model_lines(results, took("models"))]


def model_lines(results: dict, took: str) -> list[str]:
    """The integration check (issue 26): JEST's gain with each architecture, and a brought-in reference."""
    m = results.get("models", {})
    archs = m.get("archs", {})
    if not archs:
        return []
    seeds = results["seeds"]
    lines = [
        f"### Standard models: `hf-siglip` against `vit`, and a reference brought in{took}",
        "",
        f"Each architecture at the preset's sizes (`model.arch=hf-siglip`: transformers' `SiglipModel` with a BPE "
        f"tokenizer trained from the curated captions; `vit`: jestflow's own, word-level), its own reference "
        f"trained by the pipeline, the same learning rate (swept for `vit` only). JEST at 1×, uniform at JEST's "
        f"total compute, {seeds} seeds. A sanity check of the integration: JEST's gain should be alike.",
        "",
        "| model | forward FLOPs / example | reference's own R@1 | uniform steps | JEST [95%] | uniform [95%] | "
        "JEST − uniform [95%] | JEST ... |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch, e in archs.items():
        lines.append(
            f"| `{arch}` | {e['forward_flops_per_example']:.3g} | {e['reference_r1']:.3f} | {e['uniform_steps']:.0f} | "
            f"{val(e['jest'])} | {val(e['uniform'])} | {signed(e['jest_minus_uniform'])} | {e['verdict']} uniform |"
        )
    lines.append("")
    g = m.get("gain_hf_minus_vit")
    if g:
        lines += [f"Gain with `hf-siglip` − gain with `vit`: {signed(g)} (paired over seeds and queries).", ""]
    b = m.get("byo_reference")
    if b:
        lines += [
            f"**A reference brought in.** A SigLIP trained {b['steps']} steps on the curated set (the pipeline's "
            f"trains {b['own_steps']}), saved as a model hub's folder (config, weights, tokenizer; no jestflow "
            "metadata) and passed by path (`--reference-model`): scored as a pretrained model, no training cost "
            f"charged. JEST (`hf-siglip`, 1×, {seeds} seeds):",
            "",
            "| reference | its own R@1 | JEST R@1 [95%] |",
            "|---|---|---|",
            f"| the pipeline's ({b['own_steps']} steps) | {archs['hf-siglip']['reference_r1']:.3f} | "
            f"{val(b['jest_own_reference'])} |",
            f"| brought in ({b['steps']} steps) | {b['reference_r1']:.3f} | {val(b['jest'])} |",
            "",
            f"Brought in − own: {signed(b['byo_minus_own'])}: JEST with the brought-in reference {b['verdict']} "
            "JEST with the pipeline's.",
            "",
        ]
    return lines


def longtail_lines(results: dict, took: str) -> list[str]:
    lt = results.get("long_tail", {})
    if not lt.get("methods"):
        return []
    lines = [
        f"### A pool where curation must do more than drop noise (long tail){took}",
        "",
        f"`demo.dataset=fashion-longtail`: {len(lt['head_concepts'])} head concepts ((class, colour) pairs) make "
        f"up {lt['pool_head_share']:.0%} of the curated set and of the pool's clean part, 72 tail concepts "
        "the rest; the same noise; a balanced eval (head 10% of it). JEST at 1×, the others at its total "
        f"compute, {results['seeds']} seeds. The paper's claim: learnability prefers what the learner has not "
        "learned yet, so it should move to the tail once the head is learned, where easy-reference filtering "
        "keeps the head.",
        "",
        "| method | steps | R@1 [95%] | R@1 head / tail | head share trained | JEST − method [95%] | JEST ... |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, e in lt["methods"].items():
        g = e["per_group"]
        lines.append(
            f"| {LABELS[m]} | {e['steps']:.0f} | {val(e['retrieval_r1'])} | {g['head']:.3f} / {g['tail']:.3f} | "
            f"{e['head_share']:.2f} | {signed(e['jest_minus']) if 'jest_minus' in e else ''} | "
            f"{e.get('verdict', '') + ' it' if 'verdict' in e else ''} |"
        )
    return [*lines, "", "![head share over training](longtail_mix.png)", ""]
