"""jestflow's cost model at the paper's scale: what a B/16 JEST run over a web-scale pool costs.

    python scripts/scale.py > /tmp/scale.md      # the tables of docs/scale.md

Every FLOP figure comes from `jestflow.core.flops` (the formulas training and the reports use); the
assumptions (pool size, examples seen, reference budget, bytes per image) are the arguments, with
the paper's orders of magnitude as defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from jestflow import config as C
from jestflow.core import flops


def fmt(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale * 0.9995:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", type=float, default=10e9, help="pool examples scored once by the reference")
    p.add_argument("--seen", type=float, default=4e9, help="examples the learner trains on (sub-batch x steps)")
    p.add_argument("--reference-seen", type=float, default=1e9, help="examples the reference trains on")
    p.add_argument("--batch", type=int, default=32768, help="sub-batch b (the paper: 32k)")
    p.add_argument("--image-bytes", type=float, default=50e3, help="bytes per stored image (JPEG at ~224 px)")
    p.add_argument("--uid-bytes", type=float, default=24, help="bytes per cached uid")
    args = p.parse_args(argv)

    cfg = C.load_config("b16-h100", None, [f"learner.batch_size={args.batch}"])
    cfg = replace(cfg, learner=replace(cfg.learner, steps=max(1, round(args.seen / args.batch))))
    c, b, n, d = cfg.model, cfg.learner.batch_size, cfg.super_batch_size(), cfg.model.embed_dim
    fwd = flops.forward_per_example(c)
    steps = cfg.learner.steps
    ref_train = args.reference_seen * 3 * fwd
    scoring = args.pool * fwd
    fixed = ref_train + scoring
    print(
        f"Model `{c.size}` ({c.image_size} px, patch {c.patch_size}, width {c.width}, context {c.context_length}, "
        f"d = {d}): {fmt(fwd, 'FLOP')} forward per example. Learner: b = {b}, N = {n}, {steps:,} steps "
        f"({fmt(args.seen)} examples seen). Pool {fmt(args.pool)} examples; reference trained on "
        f"{fmt(args.reference_seen)} examples.\n"
    )

    print("| method | per step | learner total | + fixed (reference training + pool scoring) | vs uniform |")
    print("|---|---|---|---|---|")
    uniform = steps * flops.step_cost(cfg.with_method("uniform")).total
    for method, reuse in (("uniform", False), ("jest", False), ("jest", True), ("flexi-jest", False)):
        m = cfg.with_method(method)
        per = flops.step_cost(m, reuse=reuse)
        total = steps * per.total
        charged = fixed if m.select.method_info.uses_reference else 0.0
        label = method + (" (activation reuse)" if reuse else "")
        print(
            f"| {label} | {fmt(per.total, 'FLOP')} (scoring {per.scoring / per.total:.0%}, selection "
            f"{per.selection / per.total:.1%}) | {fmt(total, 'FLOP')} | {fmt(total + charged, 'FLOP')} | "
            f"{(total + charged) / uniform:.2f}x |"
        )
    print(f"\nFixed costs: reference training {fmt(ref_train, 'FLOP')}, pool scoring {fmt(scoring, 'FLOP')}.\n")

    cache_fp16 = args.pool * (2 * d * 2 + 4 + args.uid_bytes)
    cache_int8 = args.pool * (2 * d + 2 * 4 + 4 + args.uid_bytes)
    cache_256 = args.pool * (2 * 256 * 2 + 4 + args.uid_bytes)
    read = steps * n
    print("| storage and traffic | size |")
    print("|---|---|")
    per_example = fmt(cache_fp16 / args.pool, "B")
    print(f"| score cache, fp16 image + text embeddings (today) | {fmt(cache_fp16, 'B')} ({per_example}/example) |")
    print(f"| score cache, int8 with a per-row scale | {fmt(cache_int8, 'B')} |")
    print(f"| score cache, fp16 at d = 256 (a projected reference) | {fmt(cache_256, 'B')} |")
    print(f"| images read by the learner (N per step: {fmt(read)} examples) | {fmt(read * args.image_bytes, 'B')} |")
    print(f"| images read by uniform (b per step) | {fmt(steps * b * args.image_bytes, 'B')} |")
    print(f"| cache rows read by the learner (N per step, fp16) | {fmt(read * (2 * d * 2), 'B')} |")
    online = steps * n * fwd
    print(
        f"\nReference run online on each super-batch instead of cached: {fmt(online, 'FLOP')} extra "
        f"({online / uniform:.2f}x a whole uniform run), no cache, and no pool scoring pass "
        f"({fmt(scoring, 'FLOP')} saved)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
