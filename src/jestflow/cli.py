"""`jestflow` command line: data, the four stages, the whole chain and benchmarks.

Every command takes ``--preset``, ``--config FILE`` and ``--set key=value`` (repeatable) and writes
the resolved configuration beside its output. Bad input ends with one line ``jestflow: error: ...``
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = "Config keys: run `jestflow config --preset smoke` to print every key with its value."


def _common(p: argparse.ArgumentParser, default_preset: str = "demo") -> None:
    from .config import PRESETS

    g = p.add_argument_group("configuration")
    g.add_argument(
        "--preset",
        default=default_preset,
        help=f"named preset: {' | '.join(PRESETS)} (default {default_preset})",
    )
    g.add_argument("--config", metavar="FILE", help="YAML file of overrides, applied after the preset")
    g.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one key, e.g. --set learner.steps=200 (repeatable)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    m = p.add_argument_group("metrics")
    m.add_argument(
        "--pushgateway",
        default=os.environ.get("JESTFLOW_PUSHGATEWAY", ""),
        metavar="URL",
        help="push Prometheus metrics to this Pushgateway (default: $JESTFLOW_PUSHGATEWAY; empty: off)",
    )
    m.add_argument("--run-id", default="", help="run id label of the metrics (default: $JESTFLOW_RUN_ID or generated)")


def _cfg(args):
    from .config import load_config

    return load_config(args.preset, args.config, args.overrides)


def _sets(args) -> int:
    """How many --set the user gave (options the CLI turns into overrides, such as --method, not counted)."""
    return getattr(args, "user_sets", len(args.overrides or []))


def announce(args, cfg) -> str:
    """One line, before the work starts: which preset, how much data and how many steps this runs."""
    d, r, lr = cfg.demo, cfg.reference, cfg.learner
    what = {
        "data": f"demo data: curated {d.n_curated}, pool {d.n_pool}, eval {d.n_eval}",
        "train-reference": f"reference: model {cfg.model.size}, {r.steps} steps of {r.batch_size}",
        "score": f"scoring with batches of {cfg.eval.batch_size}, embeddings as {cfg.score.dtype}",
        "train": f"learner ({cfg.select.method}): model {cfg.model.size}, {lr.steps} steps of {lr.batch_size}",
        "evaluate": f"evaluation with batches of {cfg.eval.batch_size}",
        "run": f"pipeline: model {cfg.model.size}, reference {r.steps} steps, learners {lr.steps} steps of "
        f"{lr.batch_size}; demo data (if no URIs): pool {d.n_pool}",
    }[args.cmd]
    extra = ", ".join(filter(None, [args.config and f"--config {args.config}", _sets(args) and f"{_sets(args)} --set"]))
    line = f"jestflow {args.cmd}: preset {args.preset}" + (f" + {extra}" if extra else "") + f"; {what}"
    print(line, flush=True)
    return line


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .methods import METHODS

    p = argparse.ArgumentParser(
        prog="jestflow",
        description="JEST data curation for image-text models "
        "(reference -> score -> learner -> evaluate), locally or on Kubeflow.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"jestflow {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_cmd", required=True, metavar="SUBCOMMAND")
    d = data.add_parser(
        "demo",
        help="write the embedded demo dataset (curated/, pool/, eval/)",
        description="Write curated/, pool/ and eval/ tar-shard splits of Fashion-MNIST scenes; "
        "the pool is noisy and records each sample's noise type.",
    )
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--force", action="store_true", help="rewrite even if the folder already holds a demo dataset")
    _common(d)
    dc = data.add_parser(
        "check",
        help="read every shard of some splits and report what would fail or lose data",
        description="Read every shard of each SPLIT (a folder or gs:// prefix) and print the shards and "
        "samples read, bad samples by reason, unreadable shards (with the byte offset), duplicate uids within "
        "and across shards, and for an evaluation split whether the labels fit classes.json. Exits 1 when "
        "anything would make a later stage fail or lose data. Nothing is written.",
    )
    dc.add_argument("splits", nargs="+", metavar="SPLIT", help="split folders or gs:// prefixes")
    _common(dc)

    r = sub.add_parser(
        "train-reference",
        help="stage 1: train the reference model on the curated split",
        description="Build the tokenizer from the curated captions and train the reference.",
    )
    r.add_argument("--data", required=True, help="curated split (folder of .tar shards)")
    r.add_argument("--out", required=True, help="output folder for model.pt, tokenizer.json, train.json")
    r.add_argument("--eval", help="held-out split for a learning curve (optional)")
    _common(r)

    s = sub.add_parser(
        "score",
        help="stage 2: score the pool once with the reference (cached by uid)",
        description="Run the reference over every pool shard and cache embeddings and losses; resumes shard by shard.",
    )
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--reference", help="reference model folder (from train-reference)")
    which.add_argument(
        "--reference-model",
        metavar="NAME_OR_PATH",
        help="a pretrained SigLIP instead of a trained reference: a folder save_pretrained wrote (with its "
        "tokenizer), a gs:// prefix holding one, or a Hugging Face Hub name (e.g. google/siglip-base-patch16-224; "
        "downloaded by transformers, so it needs the network). Its training cost is not charged.",
    )
    s.add_argument("--data", required=True, help="pool split")
    s.add_argument("--out", required=True, help="score cache folder")
    _common(s)

    t = sub.add_parser(
        "train",
        help="stage 3: train a learner with a data-selection method",
        description="Train the learner on the pool; each step draws a super-batch and the "
        "method picks the sub-batch to train on. Under torchrun (e.g. `torchrun --nproc_per_node 8 "
        "-m jestflow train ...`) it trains data-parallel with global selection (docs/distributed.md).",
    )
    t.add_argument("--method", choices=list(METHODS), help="selection method (default: the config's select.method)")
    t.add_argument("--data", required=True, help="pool split")
    needs_cache = ", ".join(m.name for m in METHODS.values() if m.uses_reference)
    t.add_argument("--scores", help=f"score cache from `jestflow score` (needed by {needs_cache})")
    t.add_argument("--eval", help="held-out split for learning curves")
    t.add_argument(
        "--tokenizer-from",
        help="folder with tokenizer.json (default: the score cache's). Without --scores and without this, the "
        "tokenizer is built from the pool's own noisy captions: for a like-for-like comparison with a JEST run "
        "give the reference's folder here (the pipeline does)",
    )
    t.add_argument("--out", required=True, help="output folder")
    _common(t)

    e = sub.add_parser(
        "evaluate",
        help="stage 4: zero-shot top-1 and retrieval recall on a held-out split",
        description="Evaluate a model folder on a held-out split: image->text and text->image recall@1/@5 "
        "and, when the split has classes.json, zero-shot top-1 (each sample's metadata label must be a class "
        "index of it). Prints the metrics; --out also writes them as JSON.",
    )
    e.add_argument("--model", required=True, help="model folder (model.pt + tokenizer.json)")
    e.add_argument("--data", required=True, help="evaluation split (with classes.json for zero-shot)")
    e.add_argument("--out", help="write metrics JSON here (default: print only)")
    _common(e)

    rn = sub.add_parser(
        "run",
        help="the whole Kubeflow pipeline, run locally (KFP local runner)",
        description="Run prepare -> reference -> score -> {selected method, uniform, uniform at "
        "equal FLOPs} -> evaluate -> report through kfp.local on this machine. Without data URIs "
        "the demo dataset is written to --data (default data/PRESET) first.",
    )
    rn.add_argument(
        "--out",
        required=True,
        help="output folder: report.html, results.json, report.md, curation.parquet, curve_*.png, kfp/",
    )
    rn.add_argument("--data", help="demo data folder (default data/PRESET; written if missing)")
    rn.add_argument("--curated", default="", help="curated split URI (your own data; give all three)")
    rn.add_argument("--pool", default="", help="pool split URI")
    rn.add_argument("--eval", default="", help="evaluation split URI (with classes.json for zero-shot)")
    rn.add_argument(
        "--method", choices=list(METHODS), help="selection method for the curated learner (default: select.method)"
    )
    rn.add_argument(
        "--reference-model",
        default="",
        metavar="NAME_OR_PATH",
        help="score with this pretrained SigLIP instead of training a reference (a save_pretrained folder, gs:// "
        "prefix or hub name; the reference step fetches it); needs --set model.arch=hf-siglip",
    )
    rn.add_argument(
        "--verbose",
        action="store_true",
        help="print KFP's own logs (every task's output) on the console; by default they go to OUT/kfp/run.log "
        "and the console shows each task's start and end and every warning and error",
    )
    _common(rn)

    sm = sub.add_parser(
        "submit",
        help="compile the pipeline and start a run on a Kubeflow Pipelines endpoint",
        description="Compile the pipeline, check the parameters and the configuration they "
        "resolve to, and create a run with kfp.Client. Prints the run's URL.",
    )
    sm.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    sm.add_argument("--experiment", default="jestflow", help="experiment name (created if missing)")
    sm.add_argument("--run-name", help="run name (default: generated)")
    sm.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    variant = sm.add_mutually_exclusive_group()
    variant.add_argument("--cpu", action="store_true", help="submit the CPU variant (no GPU requests), e.g. on kind")
    variant.add_argument(
        "--multinode",
        action="store_true",
        help="submit the multi-node variant: the curated learner trains as a Kubeflow Trainer TrainJob "
        "(--param job_kind=pytorchjob for the Training Operator) over learner_nodes x gpus_per_node ranks",
    )
    sm.add_argument(
        "--service-account",
        default="jestflow-runner",
        help="service account every pod of the run runs as (default: %(default)s, created by manifests/base; "
        "'' for the backend's default)",
    )
    sm.add_argument("--pipeline-root", help="where the run's artifacts go, e.g. gs://bucket/jestflow (default: KFP's)")
    sm.add_argument(
        "--token",
        help="bearer token for a KFP endpoint behind IAP or Dex (default: $KFP_TOKEN); prefer the variable, "
        "a command-line token is visible to other users of this machine",
    )
    sm.add_argument("--no-cache", action="store_true", help="run every step afresh (the data behind a URI changed)")
    sm.add_argument(
        "--watch", action="store_true", help="follow the run to its end; exit non-zero if it fails or is cancelled"
    )
    sm.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --watch: give up (exit 2, the run goes on) if it has not ended after this long (default: wait)",
    )
    sm.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter, e.g. --param steps=2000 --param pool_uri=gs://b/pool (repeatable)",
    )

    rp = sub.add_parser(
        "report",
        help="write report.html for runs on disk",
        description="Re-render report.html in each RUN folder (a `jestflow run --out` folder: results.json, "
        "the curve PNGs, and curation.parquet when present; the galleries' thumbnails need --pool).",
    )
    rp.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    rp.add_argument("--pool", default="", help="pool split the run trained on (thumbnails in the galleries)")
    ex = sub.add_parser(
        "export",
        help="the curation as data: per pool example scores, learnability and times chosen (Parquet)",
        description="Score every pool example with the final learner and the reference's cache (same batches), "
        "and write OUT/curation.parquet: uid, shard_index, caption, noise, reference_loss, learner_loss, "
        "learnability, chosen (times the learner's selection chose it). --top F also writes the F highest-"
        "learnability fraction of the pool as WebDataset shards in OUT/top. See docs/data-format.md.",
    )
    ex.add_argument("--model", required=True, help="the learner's folder (model.pt, tokenizer.json, uid log)")
    ex.add_argument("--scores", required=True, help="the reference's score cache")
    ex.add_argument("--pool", required=True, help="the pool split")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--top", type=float, default=0.0, help="also write this fraction of the pool as shards")
    _common(ex)

    c = sub.add_parser("config", help="print the resolved configuration as YAML")
    _common(c)

    b = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_cmd", required=True, metavar="SUBCOMMAND")
    bc = b.add_parser(
        "curation",
        help="does JEST pay off: every method against uniform trained at several budgets, with intervals",
        description="Uniform trained to completion at several budgets (the ruler), JEST at 1x and the other "
        "curated methods at JEST's total compute, every run over seeds; speed-ups read off the ruler the "
        "paper's way, each with a 95%% interval (bootstrap over seeds and eval queries). --extended adds the "
        "learning-rate sweep, references of several strengths, a long-tail pool, the selection-precision "
        "study and two ablations, each timed. Resumable: finished runs in OUT are reused.",
    )
    bc.add_argument("--out", required=True, help="output folder (data, references, scores, runs, results, plots)")
    bc.add_argument("--seeds", type=int, default=3)
    bc.add_argument("--workers", type=int, default=2, help="learner runs in parallel (threads split among them)")
    bc.add_argument("--extended", action="store_true", help="also the parts of `make bench-extended`")
    bc.add_argument(
        "--batch-sizes",
        default="32,128,512",
        metavar="B,B,...",
        help="--extended: sub-batch sizes of the batch-size ablation at equal examples seen (default %(default)s)",
    )
    bc.add_argument(
        "--render-only",
        action="store_true",
        help="no training: recompute the results, tables and plots from the finished runs in OUT",
    )
    _common(bc, default_preset="bench")

    bsc = b.add_parser(
        "scale",
        help="the cluster data path at several pool sizes on a local GCS emulator: memory, bytes read, speed",
        description="Write pools of small synthetic pairs to gcp-storage-emulator (127.0.0.1), then score them "
        "in parallel parts, merge, and train a JEST learner on the pool and cache by URI, each step in its own "
        "process; report peak memory, bytes read, samples/s and wall time per step and size (scale.md).",
    )
    bsc.add_argument("--out", default="bench/scale", help="folder for the emulator's files, scale.json and scale.md")
    bsc.add_argument("--sizes", default="100000,300000,1000000", help="pool sizes, comma-separated")
    bsc.add_argument("--shards", default="64,128,256", help="shards per pool size, comma-separated")
    bsc.add_argument("--parts", type=int, default=2, help="parallel scoring parts")
    bsc.add_argument("--steps", type=int, default=100, help="JEST learner steps per size")

    bs = b.add_parser(
        "select",
        help="time and peak memory of dense vs chunked joint selection",
        description="Each case runs in a fresh subprocess; peak memory is the growth of the "
        "process's peak RSS (CPU) or torch's peak allocation (CUDA) during the selection.",
    )
    bs.add_argument("--sizes", default="1280,5120,20480", help="super-batch sizes N, comma-separated")
    bs.add_argument("--dim", type=int, default=768, help="embedding dimension d")
    bs.add_argument("--filter-ratio", type=float, default=0.8)
    bs.add_argument("--chunks", type=int, default=16)
    bs.add_argument("--device", default="auto", help="cpu, cuda or auto (both where CUDA is present)")
    bs.add_argument("--repeats", type=int, default=3, help="timed repeats per case (best is reported)")
    bs.add_argument("--out", help="also write the table (Markdown) and raw JSON under this folder")

    bg = b.add_parser(
        "gpu",
        help="GPU performance of every part of a JEST step, each beside a plain PyTorch peer",
        description="Learner training (images/s, MFU), scoring, selection (time, peak memory), "
        "JEST and Flexi-JEST iteration time relative to a uniform step (with and without activation "
        "reuse), time waiting for data and the loader's drag on the training thread, "
        "each measured beside its baseline in the same run. Writes gpu.md and gpu.json under --out.",
    )
    bg.add_argument("--sizes", default="b16,s16", help="model sizes, comma-separated (tiny for a CPU smoke run)")
    bg.add_argument("--batch", type=int, default=256, help="sub-batch b (super-batch N = b / (1 - 0.8))")
    bg.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    bg.add_argument("--select-sizes", default="20480,163840", help="selection super-batch sizes N")
    bg.add_argument("--dim", type=int, default=768, help="selection embedding dimension d")
    bg.add_argument("--device", default="auto", help="cuda, cpu or auto")
    bg.add_argument(
        "--budget", type=float, default=480, help="seconds; sections that would start later are listed as not measured"
    )
    bg.add_argument(
        "--sections",
        default="select,train,score,iteration,data",
        help="sections to run, comma-separated: select, train, score, iteration, data (with the "
        "loader-interference rows); train always runs before the last three",
    )
    bg.add_argument(
        "--no-compile",
        action="store_true",
        help="eager towers on jestflow's side too (e.g. on CPU, where compiling every variant takes minutes)",
    )
    bg.add_argument("--out", default="bench/gpu", help="folder for gpu.md and gpu.json")

    bp = b.add_parser(
        "precision",
        help="how much the int8 score cache and bf16 selection (emulated, and the fused kernel on CUDA) change "
        "JEST's choices, on the embeddings two trained models give whole pools",
        description="The learner and the reference (folders with model.pt and tokenizer.json) embed every "
        "full batch of the pools; the reference's embeddings are rounded to float16 as the score cache "
        "stores them. For each b, DRAWS draws of N = 5b random rows select b with the float32 scorer and "
        "with each variant under the same random draws; reported: the share of the chosen examples that "
        "changed and the largest gain error (nats). Writes precision.json and precision.md under --out.",
    )
    bp.add_argument("--learner", required=True, help="the learner's folder (model.pt, tokenizer.json)")
    bp.add_argument("--reference", required=True, help="the reference's folder (model.pt, tokenizer.json)")
    bp.add_argument("--pools", required=True, help="pool folders of tar shards, comma-separated")
    bp.add_argument("--sizes", default="1024,8192,32768", help="sub-batch sizes b (N = 5b), comma-separated")
    bp.add_argument("--draws", type=int, default=4)
    bp.add_argument("--batch", type=int, default=4096, help="embedding batch size")
    bp.add_argument("--decode-workers", type=int, default=8)
    bp.add_argument("--device", default="auto", help="cuda, cpu or auto")
    bp.add_argument("--out", default="bench/precision", help="folder for precision.json and precision.md")
    return p


def _metrics(args, stage: str, method: str = ""):
    if not getattr(args, "pushgateway", ""):
        return None
    from .platform.metrics import StageMetrics

    return StageMetrics(stage, method, args.run_id or None, args.pushgateway)


def run(args) -> int:
    from . import stages

    args.user_sets = len(getattr(args, "overrides", None) or [])  # what the banner counts: --method is not a --set
    if args.cmd == "train" and args.method:
        args.overrides = [*args.overrides, f"select.method={args.method}"]
    if args.cmd == "data" and args.data_cmd == "check":
        from .data.check import check

        cfg = _cfg(args)
        return check(args.splits, cfg.reference.max_bad_fraction, cfg.model.image_size)
    if args.cmd in ("data", "train-reference", "score", "train", "evaluate", "run"):
        announce(args, _cfg(args))
    if args.cmd == "data":
        from . import storage
        from .data.demo import demo_complete, make_demo

        cfg = _cfg(args)
        if demo_complete(args.out) and not args.force:
            from .config import PRESETS, load_config

            held = storage.read_json(storage.join(args.out, "demo.json")).get("config", {})
            same = [n for n in PRESETS if load_config(n, None, []).demo.__dict__ == held]
            print(
                f"{args.out} already holds a demo dataset ("
                + (f"preset {' / '.join(same)}: " if same else "settings of no preset: ")
                + f"curated {held.get('n_curated', '?')}, pool {held.get('n_pool', '?')}, eval "
                f"{held.get('n_eval', '?')}, seed {held.get('seed', '?')}; use --force to rewrite it)"
            )
            return 0
        summary = make_demo(args.out, cfg.demo)
        print(
            f"wrote demo data to {args.out} from {summary['source']}: curated {cfg.demo.n_curated}, "
            f"pool {cfg.demo.n_pool}, eval {cfg.demo.n_eval}"
        )
    elif args.cmd == "train-reference":
        s = stages.train_reference(
            _cfg(args), args.data, args.out, args.eval, progress=not args.quiet, metrics=_metrics(args, "reference")
        )
        print(f"reference trained: {s['steps']} steps, {s['flops_total']:.3g} FLOPs -> {args.out}")
    elif args.cmd == "score":
        reference = args.reference or args.reference_model
        idx = stages.score(
            _cfg(args), reference, args.data, args.out, progress=not args.quiet, metrics=_metrics(args, "score")
        )
        print(
            f"scored {idx['n']} pool samples in {len(idx['shards'])} shards -> {args.out}"
            + (f" (skipped {idx['skipped']})" if idx["skipped"] else "")
        )
    elif args.cmd == "train":
        cfg = _cfg(args)
        s = stages.train_learner(
            cfg,
            args.data,
            args.out,
            args.scores,
            args.eval,
            args.tokenizer_from,
            progress=not args.quiet,
            metrics=_metrics(args, "learner", cfg.select.method),
        )
        from .reporting.run_report import fraction_text

        last = s["curve"][-1] if s["curve"] else {}
        print(
            f"learner ({s['method']}) trained: {s['steps']} steps, clean fraction {fraction_text(s['clean_fraction'])}"
            + (f", retrieval R@1 {last['retrieval_r1']:.3f}" if last else "")
            + f" -> {args.out}"
        )
    elif args.cmd == "evaluate":
        m = stages.evaluate_model(_cfg(args), args.model, args.data, args.out, _metrics(args, "evaluate"))
        print(stages.format_metrics(m))
    elif args.cmd == "run":
        from .core.flops import break_even_words
        from .platform.local_run import run_local
        from .reporting.run_report import speedup_text, table

        res = run_local(
            args.preset,
            args.overrides,
            args.out,
            args.data,
            args.curated,
            args.pool,
            args.eval,
            args.method,
            args.pushgateway,
            args.run_id,
            config_file=args.config,
            reference_model=args.reference_model,
            verbose=args.verbose,
        )
        print("\n" + table(res["rows"]))
        for metric in res.get("at_chance", []):
            print(f"{metric}: {res['baseline']} is under 2x chance: no speed-up given (see report.md)")
        for name, c in res["speedup_retrieval_r1"].items():
            if name != res["baseline"]:
                if c["iteration_speedup"] is None:
                    print(f"{name}: did not reach uniform's final retrieval R@1 ({c['target']:.3f})")
                    continue
                print(
                    f"{name}: reached uniform's final retrieval R@1 ({c['target']:.3f}) after "
                    f"{c['iterations_to_target']:.0f} iterations and {c['flops_to_target']:.3g} total FLOPs: "
                    f"iteration speed-up {speedup_text(c)}, compute speed-up {speedup_text(c, 'flops_speedup')} "
                    "(>1 is better than uniform)"
                )
        for name, p in res.get("payoff", {}).items():
            print(f"{name}: the reference {break_even_words(p['break_even_runs'])}")
        from .reporting.html_report import headline

        print("\n" + " ".join(headline(res)))
        print(
            f"pipeline finished in {res['pipeline_seconds']:.0f} s; report: {args.out}/report.html "
            f"(Markdown: {args.out}/report.md; curation table: {args.out}/curation.parquet)"
        )
    elif args.cmd == "submit":
        from .platform.submit import run_url, submit, watch

        variant = "cpu" if args.cpu else ("multinode" if args.multinode else "gpu")
        run_id = submit(
            args.host,
            args.param,
            args.experiment,
            args.run_name,
            variant,
            args.namespace,
            service_account=args.service_account,
            pipeline_root=args.pipeline_root,
            token=args.token,
            caching=not args.no_cache,
        )
        print(run_url(args.host, run_id), flush=True)
        if args.watch:
            return watch(args.host, run_id, args.namespace, args.token, timeout=args.timeout)
    elif args.cmd == "report":
        from . import storage
        from .reporting.html_report import write_html

        how = ("the page compares a curated learner with its uniform baselines, from the results table "
               "`jestflow run` (or the pipeline's report step) writes: run the stages that way, e.g. `jestflow "
               "run --curated C --pool P --eval E --out DIR`")  # fmt: skip
        for run_dir in args.runs:
            uri = storage.join(run_dir, "results.json")
            if not storage.exists(uri) and storage.exists(storage.join(run_dir, "train.json")):
                raise ValueError(f"{run_dir} holds one hand-run training run (train.json), not a `jestflow run` "
                                 f"folder; {how}")  # fmt: skip
            results = storage.read_json(uri)
            if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
                raise ValueError(f"{uri}: not the results of a jestflow run (no 'rows'); {how}")
            pq = storage.join(run_dir, "curation.parquet")
            table = None
            if storage.exists(pq):
                from .reporting.curation_table import read_parquet

                table = read_parquet(pq)
            print(write_html(run_dir, results, None, table, args.pool or None))
    elif args.cmd == "export":
        from .reporting.curation_table import export
        from .training.devices import resolve_device

        cfg = _cfg(args)
        device = resolve_device(cfg.learner.device)  # the learner's device, as in training and evaluation
        r = export(args.model, args.scores, args.pool, args.out, cfg.eval.batch_size, device, args.top,
                   progress=not args.quiet)  # fmt: skip
        print(
            f"wrote {r['rows']} rows -> {r['parquet']}"
            + (f"; top {r['top_examples']} -> {r['top_shards']}" if args.top else "")
        )
    elif args.cmd == "config":
        from .config import dump

        print(dump(_cfg(args)), end="")
    elif args.cmd == "bench" and args.bench_cmd == "curation":
        from .bench.curation import bench_curation, rerender

        if args.render_only:
            rerender(args.out)
            return 0
        command = "jestflow " + " ".join(sys.argv[1:])  # the same for `python -m jestflow` (make's way)
        bench_curation(
            args.preset,
            args.overrides,
            args.out,
            args.seeds,
            args.workers,
            args.extended,
            command,
            config_file=args.config,
            batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",") if b.strip()),
        )
    elif args.cmd == "bench" and args.bench_cmd == "scale":
        from .bench.scale import bench_scale

        ints = lambda text: tuple(int(x) for x in text.split(",") if x.strip())  # noqa: E731
        if len(ints(args.sizes)) != len(ints(args.shards)):
            raise ValueError(f"--sizes {args.sizes} and --shards {args.shards} must list as many values")
        bench_scale(args.out, ints(args.sizes), ints(args.shards), args.parts, args.steps)
    elif args.cmd == "bench" and args.bench_cmd == "select":
        from .bench.select import bench_select

        bench_select(
            [int(x) for x in args.sizes.split(",")],
            args.dim,
            args.filter_ratio,
            args.chunks,
            args.device,
            args.repeats,
            args.out,
        )
    elif args.cmd == "bench" and args.bench_cmd == "precision":
        from .bench.precision import study_models, write

        ints = [int(x) for x in args.sizes.split(",") if x.strip()]
        res = study_models(args.learner, args.reference, [p for p in args.pools.split(",") if p.strip()], ints,
                           args.draws, args.device, batch=args.batch, workers=args.decode_workers)  # fmt: skip
        print(write(res, args.out))
    elif args.cmd == "bench" and args.bench_cmd == "gpu":
        from .bench.gpu import bench_gpu

        bench_gpu(
            tuple(args.sizes.split(",")),
            args.batch,
            args.steps,
            select_sizes=tuple(int(x) for x in args.select_sizes.split(",")),
            dim=args.dim,
            device=args.device,
            out=args.out,
            budget_seconds=args.budget,
            compile=not args.no_compile,
            sections=tuple(args.sections.split(",")),
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        os.environ["TQDM_DISABLE"] = "1"
    try:
        return run(args)
    except ValueError as e:
        print(f"jestflow: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file where a folder should be, a read-only folder, a full disk: one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"jestflow: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jestflow: interrupted", file=sys.stderr)
        return 130
    finally:
        from .training.distributed import teardown

        teardown()  # under torchrun: leave the process group cleanly (a no-op otherwise)


if __name__ == "__main__":
    sys.exit(main())
