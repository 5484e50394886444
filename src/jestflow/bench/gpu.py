"""`jestflow bench gpu`: where a JEST step's time goes on one GPU, against a plain PyTorch peer.

Every figure is measured in this run, on this device, beside its baseline:

* **train**: learner training images/s and model-FLOP utilisation (MFU) of jestflow's step (TrainStep:
  compiled towers, bf16 autocast, fused AdamW) vs a plain PyTorch SigLIP loop on the same model
  (eager, bf16 autocast, default AdamW) — uniform batches resident on the GPU;
* **score**: the learner's super-batch forward (inference, bf16) images/s, compiled vs eager;
* **select**: joint selection time and peak memory at each super-batch size (d, 16 chunks, filter
  ratio 0.8): the fused kernel vs the tiled PyTorch scorer (and the dense N x N matrix where it fits);
* **iteration**: uniform, JEST and Flexi-JEST step times through the real `ScoreSelect` + `TrainStep`,
  each with and without activation reuse (activation_reuse.py; tape size and peak memory reported), their ratios
  to the uniform step, the score+select / train split and selection's share of the step;
* **data**: the JEST step fed by the real loader (tar shards of JPEGs written for the run, decoding on
  8 processes, 8 threads or serially, pinned prefetch) against the same step on a batch already in
  memory, and the fraction of each step spent waiting;
* **loader**: how much slower the training thread issues small device operations while the loader
  decodes on threads vs processes (the GIL contention behind a loader-fed step's slowdown).

MFU counts the model's forward FLOPs (model.flops_per_example) x 3 for a training step, over the
device's bf16 dense peak: the datasheet figure where the device is known, and the measured rate of an
8192³ bf16 matrix product. `--device cpu --sizes tiny --batch 16 --steps 1 --select-sizes 320 --dim 32`
runs every code path at toy sizes (the tests do).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace

import torch

from .. import config as C
from .. import storage
from ..methods import METHODS
from ..model import activation_reuse

DATASHEET_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}  # dense bf16 FLOP/s (SXM)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timeit(fn, device, steps: int, warmup: int) -> float:
    """Mean seconds per call over `steps` calls after `warmup`, the device synchronised at both ends."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def device_facts(device: str) -> dict:
    facts = {"device": device, "torch": torch.__version__}
    if torch.device(device).type == "cuda":
        p = torch.cuda.get_device_properties(0)
        facts.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
        try:
            facts["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except OSError:
            facts["driver"] = "?"
        facts["cuda"] = torch.version.cuda
        n = 8192
        a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
        sec = _timeit(lambda: a @ b, device, 10, 3)
        facts["matmul_bf16_tflops"] = round(2 * n**3 / sec / 1e12, 1)
        facts["datasheet_bf16_tflops"] = next((v / 1e12 for k, v in DATASHEET_BF16.items() if k in p.name), None)
        del a, b
    else:
        facts.update(gpu="cpu", matmul_bf16_tflops=None, datasheet_bf16_tflops=None)
    return facts


# --------------------------------------------------------------------------------------------------
# Synthetic inputs


def _model_config(size: str) -> C.ModelConfig:
    return C.load_config(None, None, [f"model.size={size}"]).model


def _inputs(mc: C.ModelConfig, n: int, vocab: int, device: str, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randint(0, 256, (n, mc.image_size, mc.image_size, 3), generator=g, dtype=torch.uint8)
    tokens = torch.randint(1, vocab, (n, mc.context_length), generator=g)
    lengths = torch.randint(4, mc.context_length + 1, (n,), generator=g)
    tokens[torch.arange(mc.context_length)[None, :] >= lengths[:, None]] = 0
    return images.to(device), tokens.to(device)


class _FakeCache:
    """Reference embeddings for the synthetic super-batch, looked up by uid like a ScoreCache."""

    def __init__(self, n: int, d: int, device: str):
        g = torch.Generator(device="cpu").manual_seed(1)
        self.img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
        self.txt = torch.nn.functional.normalize(self.img.cpu() + 0.8 * torch.randn(n, d, generator=g), dim=1).to(
            device
        )
        self.index = {}

    def lookup(self, uids, shards=(), device="cpu"):
        from ..core.selection import Embeds

        rows = torch.tensor([int(u) % len(self.img) for u in uids], device=self.img.device)
        return Embeds(
            self.img[rows], self.txt[rows], torch.tensor(2.3, device=device), torch.tensor(-10.0, device=device)
        )


# --------------------------------------------------------------------------------------------------
# Sections


def bench_train(
    size: str, b: int, device: str, steps: int, warmup: int, facts: dict, vocab: int = 1000, compile: bool = True
) -> dict:
    from ..core.flops import train_groups
    from ..core.losses import sigmoid_loss
    from ..model.two_tower import TwoTower
    from ..training.devices import autocast
    from ..training.distributed import Dist
    from ..training.loader import Batch
    from ..training.loop import TrainForward, TrainStep, compile_towers, make_optimizer

    mc = _model_config(size)
    images, tokens = _inputs(mc, b, vocab, device)
    cuda = torch.device(device).type == "cuda"

    torch.manual_seed(0)
    peer_model = TwoTower(mc, vocab).to(device)
    peer_opt = torch.optim.AdamW(peer_model.parameters(), lr=1e-4)

    def peer_step():
        with autocast(device):
            u, v = peer_model(images, tokens)
            loss = sigmoid_loss(u, v, peer_model.log_t, peer_model.bias)
        peer_opt.zero_grad(set_to_none=True)
        loss.backward()
        peer_opt.step()

    peer = _timeit(peer_step, device, steps, warmup)
    peer_model = peer_opt = None  # free the peer's memory before building ours
    torch.cuda.empty_cache() if cuda else None

    torch.manual_seed(0)
    model = TwoTower(mc, vocab).to(device)
    t = replace(C.TrainConfig(), batch_size=b, steps=10**6)
    opt, sched = make_optimizer(model, t, fused=cuda)
    if compile:
        compile_towers(model)
    step = TrainStep(
        model, opt, sched, TrainForward(model), train_groups(b, 1), Dist(), device, "sigmoid", t.optim.grad_clip
    )
    batch = Batch([str(i) for i in range(b)], images, tokens, [""] * b)
    ours = _timeit(lambda: step(batch), device, steps, warmup + 2)  # + compile
    flops = 3 * model.flops_per_example() * b
    row = {
        "section": "train",
        "size": size,
        "batch": b,
        "peer_seconds": peer,
        "jestflow_seconds": ours,
        "peer_images_per_s": b / peer,
        "jestflow_images_per_s": b / ours,
        "speedup": peer / ours,
        "train_flops_per_step": flops,
    }
    for key, peak in (("measured", facts.get("matmul_bf16_tflops")), ("datasheet", facts.get("datasheet_bf16_tflops"))):
        if peak:
            row[f"mfu_{key}"] = flops / ours / (peak * 1e12)
            row[f"peer_mfu_{key}"] = flops / peer / (peak * 1e12)
    return row, model, step


def bench_score(size: str, model, n: int, device: str, steps: int, warmup: int, vocab: int = 1000) -> dict:
    from ..model.two_tower import TwoTower
    from ..training.devices import autocast

    mc = model.config
    images, tokens = _inputs(mc, n, vocab, device, seed=2)
    eager = TwoTower(mc, vocab).to(device).eval()

    def run(m):
        def f():
            with torch.inference_mode(), autocast(device):
                m(images, tokens)

        return f

    model.eval()
    ours = _timeit(run(model), device, steps, warmup + 1)
    peer = _timeit(run(eager), device, steps, warmup)
    model.train()
    del eager
    return {
        "section": "score",
        "size": size,
        "batch": n,
        "peer_images_per_s": n / peer,
        "jestflow_images_per_s": n / ours,
        "speedup": peer / ours,
    }


def bench_select_gpu(n: int, d: int, device: str, repeats: int, impls=("torch", "fused", "dense")) -> list[dict]:
    from ..core.selection import (
        DenseScorer,
        FusedSigmoidScorer,
        SigmoidScorer,
        dense_score_matrix,
        sample_chunks,
        score_terms,
    )
    from .select import _embeds

    b = int(round(n * 0.2))
    b -= b % 16
    terms = score_terms("learnability", _embeds(n, d, 0, device), _embeds(n, d, 1, device))
    # Agreement of the fused kernel (bf16) with the fp32 scorer on one chunk's update: the kernel's first
    # call at this shape, so Triton's autotuner benchmarks its configs on these very arguments first (an
    # in-place kernel whose output the autotuner does not restore would be counted once per trial).
    try:
        a, f = SigmoidScorer(terms), FusedSigmoidScorer(terms)
        idx = torch.randperm(n, device=device)[: b // 16]
        a.add(idx), f.add(idx)
        rel = float((a.running - f.running).norm() / a.running.norm())
    except Exception:  # noqa: BLE001 - reported as missing
        rel = float("nan")
    rows = []
    make = {
        "torch": lambda: SigmoidScorer(terms),
        "fused": lambda: FusedSigmoidScorer(terms),
        "dense": lambda: DenseScorer(dense_score_matrix(terms)),
    }
    for impl in impls:
        row = {"section": "select", "impl": impl, "n": n, "b": b, "d": d}
        rows.append(row)
        if impl == "dense" and 2 * n * n * 4 > 0.6 * _free_bytes(device):
            row["skipped"] = "N x N does not fit"
            continue
        try:  # noqa: SIM105 - a failing implementation is a result, not the end of the run

            def once():
                gen = torch.Generator(device=device).manual_seed(0)
                return sample_chunks(make[impl](), b, 16, gen)

            once()
            _sync(device)
            cuda = torch.device(device).type == "cuda"
            if cuda:
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                once()
                _sync(device)
                times.append(time.perf_counter() - t0)
            peak = (torch.cuda.max_memory_allocated() - base) if cuda else float("nan")
            row.update(seconds=sorted(times)[len(times) // 2], peak_bytes=peak)
            if impl == "fused":
                row["kernel_config"] = _kernel_config()
        except torch.OutOfMemoryError:
            row["skipped"] = "out of memory"
        except Exception as e:  # noqa: BLE001
            row["skipped"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        torch.cuda.empty_cache() if torch.device(device).type == "cuda" else None
    for r in rows:
        r["fused_vs_fp32_rel_error"] = rel
    return rows


def _kernel_config() -> str | None:
    """The tile shape and launch settings Triton's autotuner picked for the fused kernel (None: not tuned)."""
    from ..core import kernels

    best = getattr(getattr(kernels, "_chunk_gain_kernel_flat", None), "best_config", None)
    return None if best is None else f"{best.kwargs} warps={best.num_warps} stages={best.num_stages}"


def _free_bytes(device: str) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info()[0]
    return 8 * 2**30


def _mfu(row: dict, flops: float, seconds: float, facts: dict) -> dict:
    """The row with the step's model FLOPs, images trained per second and MFU against each known peak."""
    row.update(step_flops=flops, images_per_s=row["batch"] / seconds)
    for key, peak in (("measured", facts.get("matmul_bf16_tflops")), ("datasheet", facts.get("datasheet_bf16_tflops"))):
        if peak:
            row[f"mfu_{key}"] = flops / seconds / (peak * 1e12)
    return row


def bench_iteration(
    size: str, model, step, b: int, device: str, steps: int, warmup: int, vocab: int = 1000, facts: dict | None = None
) -> list[dict]:
    """Uniform, JEST and Flexi-JEST steps (with and without reuse): time, ratio to uniform, images/s and
    MFU (the step's model FLOPs from flops.step_cost: scoring, selection and training passes)."""
    from ..core.flops import scoring_stride, step_cost, train_groups
    from ..training.batch_selectors import ScoreSelect
    from ..training.distributed import Dist
    from ..training.loader import Batch
    from ..training.loop import TrainForward, TrainStep

    mc = model.config
    cfg = C.load_config(None, None, [f"model.size={mc.size}", f"learner.batch_size={b}"])
    n = cfg.super_batch_size()
    images, tokens = _inputs(mc, n, vocab, device, seed=3)
    cache = _FakeCache(n, mc.embed_dim, device)
    sub = Batch([str(i) for i in range(b)], images[:b], tokens[:b], [""] * b)
    gen = torch.Generator(device=device).manual_seed(0)
    uniform = _timeit(lambda: step(sub), device, steps, warmup)
    facts = facts or {}
    rows = [
        _mfu(
            {
                "section": "iteration",
                "size": size,
                "method": "uniform",
                "batch": b,
                "super_batch": b,
                "seconds": uniform,
                "ratio_to_uniform": 1.0,
            },
            step_cost(cfg.with_method("uniform")).total,
            uniform,
            facts,
        )
    ]
    cuda = torch.device(device).type == "cuda"
    # every benchmarked joint method that scores the super-batch with the learner (JEST, Flexi-JEST), with and
    # without reuse
    joint = [m.name for m in METHODS.values() if m.benchmarked and m.sampler == "joint" and m.uses_learner]
    for method, replay in ((m, r) for m in joint for r in (False, True)):
        mcfg = cfg.with_method(method)
        sel = ScoreSelect(mcfg, cache, reuse_activations=replay)
        flexi = scoring_stride(mcfg)
        st = (
            step
            if flexi == 1
            else TrainStep(
                model,
                step.opt,
                step.sched,
                TrainForward(model),
                train_groups(b, flexi),
                Dist(),
                device,
                step.loss,
                step.grad_clip,
                score_stride=flexi,
            )
        )
        batch = Batch([str(i) for i in range(n)], images, tokens, [""] * n)
        shares = []
        tape = activation_reuse.tape_bytes_per_example(mc, flexi, 2 if cuda else 4) * n if replay else 0
        row = {
            "section": "iteration",
            "size": size,
            "method": method + (" + reuse" if replay else ""),
            "batch": b,
            "super_batch": n,
            "tape_bytes": tape,
        }

        def one():
            t0 = time.perf_counter()
            picked = sel(model, batch, gen, device)  # synchronises after the selection
            t1 = time.perf_counter()
            st(picked.batch, picked.tapes)
            _sync(device)
            shares.append((picked.selection_seconds, t1 - t0, time.perf_counter() - t1))

        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            sec = _timeit(one, device, steps, warmup + 1)
        except torch.OutOfMemoryError:
            rows.append({**row, "skipped": f"out of memory (tape {tape / 2**30:.1f} GiB)"})
            torch.cuda.empty_cache() if cuda else None
            continue
        sel_sec, score_sec, train_sec = (sorted(x[i] for x in shares[-steps:])[steps // 2] for i in range(3))
        rows.append(
            _mfu(
                {
                    **row,
                    "seconds": sec,
                    "ratio_to_uniform": sec / uniform,
                    "selection_seconds": sel_sec,
                    "selection_share": sel_sec / sec,
                    "score_select_seconds": score_sec,
                    "train_seconds": train_sec,
                    "peak_bytes": torch.cuda.max_memory_allocated() if cuda else float("nan"),
                },
                step_cost(mcfg, reuse=replay).total,
                sec,
                facts,
            )
        )
    return rows


def loader_interference(
    folder: str, image_size: int, device: str, workers: int = 8, launches: int = 20000, warm_seconds: float = 2.0
) -> list[dict]:
    """How much slower the training thread issues small device operations (a stand-in for kernel
    launches, which need the GIL) while the loader decodes on threads vs processes, and the loader's
    images/s meanwhile. This is the mechanism that made the H200's loader-fed step 4x its compute."""
    import threading

    from ..data.shards import ReadStats, stream

    x = torch.zeros(16, device=device)

    def loop() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(launches):
            x.add_(1.0)
        _sync(device)
        return time.perf_counter() - t0

    alone = min(loop() for _ in range(3))
    rows = []
    for mode in ("thread", "process"):
        stop, seen = threading.Event(), [0]

        def consume():
            samples = stream(folder, 0, 100, ReadStats(), image_size, decode_workers=workers, decode_mode=mode)
            for _ in samples:
                seen[0] += 1
                if stop.is_set():
                    break
            samples.close()

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        time.sleep(warm_seconds)  # workers started, queue of windows full
        n0, t0 = seen[0], time.perf_counter()
        busy = min(loop() for _ in range(3))
        rate = (seen[0] - n0) / (time.perf_counter() - t0)
        stop.set()
        t.join(timeout=120)
        rows.append(
            {
                "section": "loader",
                "decode_mode": mode,
                "decode_workers": workers,
                "image_size": image_size,
                "launch_seconds_alone": alone,
                "launch_slowdown": busy / alone,
                "images_per_s": rate,
            }
        )
    return rows


def bench_data(model, step, b: int, device: str, steps: int, workdir: str) -> list[dict]:
    """The real loader (tar shards of JPEGs -> stream -> batches -> pinned prefetch) feeding the JEST step."""
    import io

    import numpy as np
    from PIL import Image

    from ..data.shards import ReadStats, ShardWriter, stream
    from ..model.tokenizer import Tokenizer
    from ..training.batch_selectors import ScoreSelect
    from ..training.loader import Batch, Prefetcher, make_batches

    mc = model.config
    cfg = C.load_config(None, None, [f"model.size={mc.size}", f"learner.batch_size={b}"])
    n = cfg.super_batch_size()
    total = n * (steps + 3)
    folder = os.path.join(workdir, f"jpeg-{mc.image_size}")
    if not os.path.exists(os.path.join(folder, "done")):
        rng = np.random.default_rng(0)
        with ShardWriter(folder, "pool", 2000) as w:
            for i in range(total):  # smooth images (upsampled noise), like photos in entropy more than noise is
                small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
                im = Image.fromarray(small).resize((mc.image_size, mc.image_size), Image.BILINEAR)
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=90)
                w.write(str(i), buf.getvalue(), f"a photo of thing {i % 97}")
        open(os.path.join(folder, "done"), "w").close()
    tok = Tokenizer.build((f"a photo of thing {i}" for i in range(97)), mc.context_length)
    cache = _FakeCache(total, mc.embed_dim, device)
    sel = ScoreSelect(cfg, cache)
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    cuda = torch.device(device).type == "cuda"
    resident = next(make_batches(stream(folder, 0, 1000, ReadStats(), mc.image_size), n, tok))  # no loader at all
    if cuda:
        resident = Batch(resident.uids, resident.images.pin_memory(), resident.tokens.pin_memory(), resident.noise)
    for workers, mode in ((0, "in memory"), (8, "process"), (8, "thread"), (1, "serial")):
        if workers:
            samples = stream(
                folder,
                0,
                1000,
                ReadStats(),
                mc.image_size,
                decode_workers=workers,
                decode_mode=mode if workers > 1 else "thread",
            )
            pf = Prefetcher(make_batches(samples, n, tok), depth=2, pin=cuda)
        waits, secs = [], []
        for k in range(steps + 1):
            t0 = time.perf_counter()
            batch: Batch = next(pf) if workers else resident
            picked = sel(model, batch, gen, device)
            step(picked.batch, picked.tapes)
            _sync(device)
            if k:  # the first step includes the loader's start
                waits.append(pf.wait_seconds if workers else 0.0)
                secs.append(time.perf_counter() - t0)
        if workers:
            pf.close()
        rows.append(
            {
                "section": "data",
                "size": mc.size,
                "decode_workers": workers,
                "decode_mode": mode,
                "super_batch": n,
                "step_seconds": sum(secs) / len(secs),
                "wait_fraction": sum(waits) / sum(secs),
            }
        )
    compute = rows[0]["step_seconds"]
    for r in rows:
        r["vs_in_memory"] = r["step_seconds"] / compute
    rows += loader_interference(folder, mc.image_size, device)
    return rows


# --------------------------------------------------------------------------------------------------


SECTIONS = ("select", "train", "score", "iteration", "data")


def bench_gpu(
    sizes=("b16", "s16"),
    batch: int = 256,
    steps: int = 10,
    warmup: int = 2,
    select_sizes=(20480, 163840),
    dim: int = 768,
    device: str = "auto",
    out: str | None = None,
    budget_seconds: float = 480,
    workdir: str = "/tmp/jestflow-bench-gpu",
    compile: bool = True,
    sections=SECTIONS,
) -> dict:
    """Run the `sections` within `budget_seconds`; a section that fails is recorded, the rest go on.
    The train section always runs when a later one is asked for (it builds the model they use)."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench sections {sorted(unknown)} (known: {', '.join(SECTIONS)})")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    t_start = time.time()
    facts = device_facts(device)
    results = {"facts": {**facts, "compile": compile}, "rows": [], "not_measured": []}

    def save():
        if out:
            storage.write_json(storage.join(out, "gpu.json"), results)
            storage.write_bytes(storage.join(out, "gpu.md"), markdown(results).encode())

    def left() -> float:
        return budget_seconds - (time.time() - t_start)

    print(json.dumps(facts), flush=True)
    for n in select_sizes if "select" in sections else ():
        if left() < 30:
            results["not_measured"].append(f"select N={n}: time budget")
            continue
        for r in bench_select_gpu(n, dim, device, repeats=5):
            results["rows"].append(r)
            print(json.dumps(r), flush=True)
        save()
    for size in sizes if set(sections) - {"select"} else ():
        if left() < 60:
            results["not_measured"].append(f"{size}: time budget")
            continue
        try:
            row, model, step = bench_train(size, batch, device, steps, warmup, facts, compile=compile)
        except Exception as e:  # noqa: BLE001
            results["not_measured"].append(f"{size} train: failed ({type(e).__name__}: {str(e)[:300]})")
            print(results["not_measured"][-1], flush=True)
            continue
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()
        n = C.load_config(None, None, [f"learner.batch_size={batch}"]).super_batch_size()
        for name, fn in (
            ("score", lambda: [bench_score(size, model, n, device, steps, warmup)]),
            ("iteration", lambda: bench_iteration(size, model, step, batch, device, steps, warmup, facts=facts)),
            ("data", lambda: bench_data(model, step, batch, device, max(3, steps // 2), workdir)),
        ):
            if name not in sections:
                continue
            if left() < 45:
                results["not_measured"].append(f"{size} {name}: time budget")
                continue
            try:
                for r in fn():
                    results["rows"].append(r)
                    print(json.dumps(r), flush=True)
            except Exception as e:  # noqa: BLE001
                results["not_measured"].append(f"{size} {name}: failed ({type(e).__name__}: {str(e)[:300]})")
                print(results["not_measured"][-1], flush=True)
            save()
        model = step = None  # free this size's model before the next one
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    results["seconds"] = time.time() - t_start
    save()
    print(markdown(results))
    return results


def _f(x, spec=".1f"):
    return "–" if x is None else format(x, spec)


def _gib(x) -> str:
    """Bytes as GiB; '–' where none (0, None, or NaN when not measured off CUDA)."""
    return "–" if not x or x != x else f"{x / 2**30:.1f}"


def _throughput(r: dict) -> list[str]:
    """Model, batch, the peer's and jestflow's images/s and their ratio: the cells a train or score row shares."""
    peer, ours = r["peer_images_per_s"], r["jestflow_images_per_s"]
    return [r["size"], str(r["batch"]), f"{peer:.0f}", f"{ours:.0f}", f"{r['speedup']:.2f}x"]


def markdown(results: dict) -> str:
    f = results["facts"]
    out = [
        f"Device: {f.get('gpu')} ({f.get('memory_gib', '?')} GiB, driver {f.get('driver', '–')}, CUDA "
        f"{f.get('cuda', '–')}), PyTorch {f['torch']}; bf16 matmul 8192³ measured "
        f"{_f(f.get('matmul_bf16_tflops'))} TFLOP/s, datasheet {_f(f.get('datasheet_bf16_tflops'))} TFLOP/s; "
        f"jestflow's towers {'compiled' if f.get('compile', True) else 'eager (--no-compile)'}.",
        "",
    ]
    rows = results["rows"]

    def section(name: str, title: str, header: list[str], line) -> None:
        picked = [r for r in rows if r["section"] == name]
        if picked:
            out.extend([title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
            out.extend("| " + " | ".join(line(r)) + " |" for r in picked)
            out.append("")

    section(
        "train",
        "**Learner training** (uniform batches on the GPU; plain peer: eager, bf16 autocast, default AdamW)",
        [
            "model",
            "batch",
            "peer img/s",
            "jestflow img/s",
            "speed-up",
            "MFU (datasheet)",
            "MFU (measured matmul)",
            "peer MFU (datasheet)",
        ],
        lambda r: [
            *_throughput(r),
            _f(r.get("mfu_datasheet"), ".1%"),
            _f(r.get("mfu_measured"), ".1%"),
            _f(r.get("peer_mfu_datasheet"), ".1%"),
        ],
    )
    section(
        "score",
        "**Scoring** (learner forward over the super-batch, inference, bf16)",
        ["model", "batch", "eager img/s", "jestflow (compiled) img/s", "speed-up"],
        _throughput,
    )
    section(
        "select",
        "**Joint selection** (learnability, 16 chunks, ratio 0.8)",
        ["N → b", "d", "implementation", "ms", "peak GiB", "fused vs fp32 rel. error"],
        lambda r: (
            [
                f"{r['n']} → {r['b']}",
                str(r["d"]),
                r["impl"] + (f" ({r['kernel_config']})" if r.get("kernel_config") else ""),
            ]
            + (
                [f"not run: {r['skipped']}", "", ""]
                if "skipped" in r
                else [
                    f"{r['seconds'] * 1e3:.1f}",
                    f"{r['peak_bytes'] / 2**30:.3f}",
                    f"{r['fused_vs_fp32_rel_error']:.1e}",
                ]
            )
        ),
    )
    section(
        "iteration",
        "**Iteration time** (real ScoreSelect + TrainStep; super-batch N = 5b; "
        "+ reuse: the training forward replays the scoring forward's recorded linear layers)",
        [
            "model",
            "method",
            "b",
            "N",
            "ms/step",
            "× uniform",
            "img/s",
            "MFU (datasheet)",
            "score+select ms",
            "train ms",
            "selection ms",
            "selection share",
            "tape GiB",
            "peak GiB",
        ],
        lambda r: (
            [r["size"], r["method"], str(r["batch"]), str(r["super_batch"])]
            + (
                [f"not run: {r['skipped']}", "", "", "", "", "", "", "", _gib(r["tape_bytes"]), ""]
                if "skipped" in r
                else [
                    f"{r['seconds'] * 1e3:.1f}",
                    f"{r['ratio_to_uniform']:.2f}",
                    _f(r.get("images_per_s"), ".0f"),
                    _f(r.get("mfu_datasheet"), ".1%"),
                    _f(r.get("score_select_seconds") and r["score_select_seconds"] * 1e3),
                    _f(r.get("train_seconds") and r["train_seconds"] * 1e3),
                    _f(r.get("selection_seconds") and r["selection_seconds"] * 1e3),
                    _f(r.get("selection_share"), ".1%"),
                    _gib(r.get("tape_bytes")),
                    _gib(r.get("peak_bytes")),
                ]
            )
        ),
    )
    section(
        "data",
        "**Waiting for data** (JEST step fed by the real loader: tar shards of JPEGs, decode, pinned "
        "prefetch; first row: the same step on a batch already in memory)",
        ["model", "decode workers", "N", "s/step", "waiting", "× in-memory step"],
        lambda r: [
            r["size"],
            f"{r['decode_workers']} ({r.get('decode_mode', 'thread')})" if r["decode_workers"] else "none (in memory)",
            str(r["super_batch"]),
            f"{r['step_seconds']:.3f}",
            f"{r['wait_fraction']:.1%}",
            _f(r.get("vs_in_memory"), ".2f"),
        ],
    )
    section(
        "loader",
        "**Training thread vs the loader** (20,000 small device operations issued while the loader "
        "decodes the same JPEG shards; slowdown against the same loop with no loader running)",
        ["decode workers", "image px", "loop slowdown", "loader img/s meanwhile"],
        lambda r: [
            f"{r['decode_workers']} ({r['decode_mode']})",
            str(r["image_size"]),
            f"{r['launch_slowdown']:.2f}x",
            f"{r['images_per_s']:.0f}",
        ],
    )
    if results.get("not_measured"):
        out += ["Not measured: " + "; ".join(results["not_measured"]), ""]
    return "\n".join(out)
