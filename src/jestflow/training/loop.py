"""One training loop for the reference, the baselines and the JEST learner.

What differs between them is the selector (training/batch_selectors.py): it sees a super-batch and returns the
sub-batch to train on. The loop itself is a handful of phases per step: data, score + select, the
optimiser step, accounting, log / evaluate, checkpoint. Its progress lives in a `TrainState`; the
`Checkpointer` writes it (with model, optimiser, schedule and selection RNG) and the uid log every
`checkpoint_every` steps, atomically, so a restarted run with the same arguments resumes from there.
FLOPs come from the cost model (core/flops.py), by pass: the learner's scoring forward, the selection and
the training step.
"""

from __future__ import annotations

import gzip
import json
import math
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from .. import config as C
from .. import storage
from ..core.flops import StepCost, scoring_stride, step_cost, train_groups
from ..core.losses import batch_loss
from ..data.shards import ReadStats, Sample, stream
from ..model import activation_reuse
from ..model.factory import build_model, save_model_dir
from ..model.tokenizer import Tokenizer
from ..model.two_tower import TwoTower, apply_linear
from ..progress import show_progress
from . import distributed
from .batch_selectors import Picked, ScoreSelect, TakeAll, make_selector, use_reuse
from .devices import autocast, resolve_device
from .evaluation import EvalSet, evaluate
from .loader import Batch, Prefetcher, make_batches
from .score_cache import ScoreCache

# Read from here by the stages and tests: the loop's parts that live in their own modules.
__all__ = [
    "Batch",
    "Callback",
    "Checkpointer",
    "TrainState",
    "read_uid_log",
    "resolve_device",
    "train",
    "train_groups",
    "use_reuse",
]


class Callback:
    """Hooks for metrics and logging; see platform/metrics.py for the Prometheus one."""

    def on_start(self, stage: str, method: str) -> None: ...

    def on_step(self, stage: str, method: str, s: dict) -> None: ...

    def on_eval(self, stage: str, method: str, s: dict) -> None: ...

    def on_end(self, stage: str, method: str, summary: dict) -> None: ...


def lr_lambda(o: C.OptimConfig, steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        p = (step - o.warmup_steps) / max(1, steps - o.warmup_steps)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    return f


def make_optimizer(model: TwoTower, t: C.TrainConfig, fused: bool = False):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "pos" not in n)]
    o = t.optim
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        fused=fused or None,
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o, t.steps))


class TrainForward(torch.nn.Module):
    """The training step's forward, as one module call (what DDP wraps).

    `parts` are (images, tokens, patch_stride, image_tape, text_tape) groups: one group normally, two
    under Flexi-JEST (full resolution and the coarse view). A tape, where given, replays the scoring
    forward's linear layers (activation_reuse.py). Returns each group's image and text embeddings."""

    def __init__(self, model: TwoTower):
        super().__init__()
        self.model = model

    def forward(self, parts: list[tuple]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        def hook(tape):
            return activation_reuse.Replayer(tape) if tape is not None else apply_linear

        return [
            (self.model.encode_image(i, stride, hook(it)), self.model.encode_text(tok, hook(tt)))
            for i, tok, stride, it, tt in parts
        ]


class TrainStep:
    """One optimiser step on a chosen sub-batch: this rank's share forward (bf16 autocast on CUDA),
    embeddings gathered with gradient, the full-batch loss, backward, clip, AdamW, schedule.

    Returns its measurements (big_vision's update returns them too): the loss and the gradient norm
    before clipping as device tensors (no host sync here), and the learning rate the step used."""

    def __init__(
        self,
        model: TwoTower,
        opt,
        sched,
        forward,
        groups,
        dist,
        device: str,
        loss: str,
        grad_clip: float,
        score_stride: int = 1,
    ):
        self.model, self.opt, self.sched, self.forward = model, opt, sched, forward
        self.groups, self.dist, self.device, self.loss, self.grad_clip = groups, dist, device, loss, grad_clip
        self.score_stride = score_stride  # the image view the scoring forward (and so a tape) saw

    def __call__(self, chosen: Batch, tapes: tuple[activation_reuse.Tape, activation_reuse.Tape] | None = None) -> dict:
        dist, device = self.dist, self.device
        parts = []
        for rows, stride in self.groups:
            mine = dist.split(rows.stop - rows.start, "batch size")
            view = slice(rows.start + mine.start, rows.start + mine.stop)  # a view: no host copy
            image_tape = tapes[0].rows(view) if tapes and stride == self.score_stride else None
            text_tape = tapes[1].rows(view) if tapes else None
            parts.append(
                (
                    chosen.images[view].to(device, non_blocking=True),
                    chosen.tokens[view].to(device, non_blocking=True),
                    stride,
                    image_tape,
                    text_tape,
                )
            )
        with autocast(device):
            out = self.forward(parts)
            img = torch.cat([dist.gather_with_grad(i) for i, _ in out])
            txt = torch.cat([dist.gather_with_grad(x) for _, x in out])
            loss = batch_loss(self.loss, img, txt, self.model.log_t, self.model.bias)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        # the norm is measured either way; with grad_clip = 0 the clip at infinity leaves the gradients as they are
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip or math.inf)
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), "lr": lr}


def use_compile(t: C.TrainConfig, device: str) -> bool:
    return t.compile == "on" or (t.compile == "auto" and device.startswith("cuda"))


def compile_towers(model: TwoTower) -> None:
    """torch.compile each tower in place (parameter names unchanged, so checkpoints stay portable).
    Fixed shapes per call site (sub-batch, super-batch, coarse view, recorded or replayed): a graph per
    variant, up to a dozen under Flexi-JEST with reuse, so the recompile limit (8) is raised past that."""
    raise_recompile_limit(32)
    model.image.compile(dynamic=False)
    model.text.compile(dynamic=False)


def raise_recompile_limit(at_least: int, dynamo_config=None) -> None:
    """Let dynamo keep `at_least` graphs per function. The setting is `recompile_limit` from torch 2.6
    on (pytorch PR #143709, which keeps `cache_size_limit` as an alias) and `cache_size_limit` before."""
    if dynamo_config is None:
        import torch._dynamo.config as dynamo_config
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), at_least))


COUNTERS = ("flops", "noise", "noise_window", "groups", "groups_window")  # TrainState's Counter fields


@dataclass
class TrainState:
    """A run's progress: everything a resumed run needs besides the weights, optimiser and RNG."""

    step: int = 0  # optimiser steps done
    consumed: int = 0  # samples drawn from the stream (the resumed stream skips them)
    undecodable: list = field(default_factory=list)  # uids found undecodable so far (replaying needs them)
    flops: Counter = field(default_factory=Counter)  # by pass: scoring, selection, train
    noise: Counter = field(default_factory=Counter)  # recorded noise types of the examples trained on
    noise_window: Counter = field(default_factory=Counter)  # the same, since the last evaluation
    groups: Counter = field(default_factory=Counter)  # recorded groups (head / tail) of the examples trained on
    groups_window: Counter = field(default_factory=Counter)  # the same, since the last evaluation
    curve: list = field(default_factory=list)  # evaluation points
    seconds: float = 0.0  # wall time over all attempts
    uid_segments: list = field(default_factory=list)  # uid-log files written so far
    chunk_diag: list = field(default_factory=list)  # per chunk (draw order): sum over steps of its mean A_kk
    pool_diag: float = 0.0  # sum over steps of the super-batch's mean A_kk
    selected_steps: int = 0  # steps that ran an online selection (the sums' count)

    def record(self, drawn: int, picked: Picked, measured: dict, cost: StepCost) -> dict:
        """Account one step: samples drawn, FLOPs by pass, the noise mix of what it trained on, the
        selection's per-chunk diagnostics. Returns the step's row for the callbacks (completed by the loop)."""
        self.step += 1
        self.consumed += drawn
        self.flops.update(cost.as_dict())
        noisy = [n for n in picked.batch.noise if n]
        self.noise.update(noisy)
        self.noise_window.update(noisy)
        self.groups.update(picked.batch.groups)
        self.groups_window.update(picked.batch.groups)
        chunks = picked.info.get("chunk_diag") or ()
        if chunks and all(x == x for x in chunks):  # online selection ran (no NaN)
            self.chunk_diag = [a + b for a, b in zip(self.chunk_diag or [0.0] * len(chunks), chunks)]
            self.pool_diag += picked.info["pool_diag"]
            self.selected_steps += 1
        return {
            "step": self.step,
            **measured,
            "selection_seconds": picked.selection_seconds,
            "examples": len(picked.batch),
            "noisy_fraction": (sum(n != "clean" for n in noisy) / len(noisy)) if noisy else None,  # null: unrecorded
            "flops": cost.total,
            **picked.info,
        }

    def as_dict(self) -> dict:
        return asdict(self) | {k: dict(getattr(self, k)) for k in COUNTERS}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{**d, **{k: Counter(d.get(k, {})) for k in COUNTERS}})


class Checkpointer:
    """checkpoint.pt (model, optimiser, schedule, selection RNG, `TrainState`) and the uid log, as
    gzip JSON-lines segments of the steps since the last checkpoint; every file written atomically."""

    def __init__(self, out_dir: str, cfg: C.Config, stage: str, enabled: bool = True):
        self.out_dir, self.cfg, self.stage, self.enabled = out_dir, cfg, stage, enabled
        self.uri = storage.join(out_dir, "checkpoint.pt")
        self.pending: list[dict] = []  # uid-log rows not yet in a segment

    def restore(self, model, opt, sched, gen, device: str) -> TrainState:
        """The saved state (weights, optimiser, schedule and RNG loaded in place), or a fresh one."""
        if not storage.exists(self.uri):
            return TrainState()
        with storage.open_read(self.uri) as f:
            ck = torch.load(f, map_location=device, weights_only=False)
        if ck["config"] != C.to_dict(self.cfg) or ck["stage"] != self.stage:
            raise ValueError(
                f"{self.uri} was written by a different configuration or stage; "
                "use a new --out or delete the checkpoint"
            )
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"].cpu())
        return TrainState.from_dict(ck["state"])

    def log(self, step: int, uids: list, measured: dict | None = None) -> None:
        """One row of the uid log: the step, the uids it trained on and its measurements (loss, ...)."""
        self.pending.append({"step": step, "uids": uids, **(measured or {})})

    def save(self, state: TrainState, model, opt, sched, gen) -> None:
        if not self.enabled:
            return
        if self.pending:
            first, last = state.step - len(self.pending), state.step - 1
            seg = storage.join(self.out_dir, "uids", f"steps-{first:07d}-{last:07d}.jsonl.gz")
            storage.write_bytes(seg, gzip.compress("".join(json.dumps(r) + "\n" for r in self.pending).encode()))
            state.uid_segments.append(storage.basename(seg))
            self.pending.clear()
        blob = {
            "config": C.to_dict(self.cfg),
            "stage": self.stage,
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "gen": gen.get_state(),
            "state": state.as_dict(),
        }
        with storage.atomic_path(self.uri) as tmp:
            torch.save(blob, tmp)


class SigtermFlag:
    """Kubernetes preemption sends SIGTERM: note it, so the loop finishes its step, checkpoints and exits."""

    def __init__(self):
        self.set = False
        main = threading.current_thread() is threading.main_thread()
        self.old = signal.signal(signal.SIGTERM, self._on) if main else None

    def _on(self, signum, frame):
        self.set = True

    def restore(self) -> None:
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


@dataclass
class Run:
    """One training run's parts, built before its first step (`build_run`): what `train` drives."""

    cfg: C.Config
    stage: str  # "reference" or "learner"
    method: str  # "reference", or the learner's selection method
    t: C.TrainConfig  # cfg.reference or cfg.learner
    out_dir: str
    tokenizer: Tokenizer
    dist: distributed.Dist
    device: str
    model: TwoTower
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator  # the selection's random draws
    selector: TakeAll | ScoreSelect
    step: TrainStep
    cost: StepCost  # FLOPs of one step, by pass
    batches: Prefetcher  # super-batches, decoded ahead
    stats: ReadStats  # what the stream skipped
    ckpt: Checkpointer
    state: TrainState
    ev: EvalSet | None  # the learning curve's held-out split
    eval_at: set  # the steps after which it is evaluated
    callbacks: tuple
    cache: ScoreCache | None = None  # the reference's score cache, for the methods that read it

    def notify(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self.stage, self.method, *args)

    def progress_bar(self, progress: bool) -> tqdm:
        label = self.stage if self.method == self.stage else f"{self.stage}:{self.method}"
        show = show_progress(progress) and self.dist.main
        return tqdm(total=self.t.steps, initial=self.state.step, desc=label, unit="step", disable=not show,
                    mininterval=1.0)  # fmt: skip

    def evaluate(self) -> None:
        """A learning-curve point after this step, if the schedule has one here (main rank only)."""
        state = self.state
        if self.ev is None or not self.dist.main or state.step not in self.eval_at:
            return
        point = {
            "step": state.step,
            "flops": sum(state.flops.values()),
            # the last point keeps each query's outcome: what the benchmark's intervals resample
            **evaluate(
                self.model,
                self.tokenizer,
                self.ev,
                self.cfg.eval.batch_size,
                self.device,
                hits=state.step == self.t.steps,
            ),  # fmt: skip
            "noise_window": dict(state.noise_window),
            **({"groups_window": dict(state.groups_window)} if state.groups_window else {}),
        }
        state.noise_window.clear()
        state.groups_window.clear()
        state.curve.append(point)
        self.notify("on_eval", point)

    def checkpoint(self) -> None:
        self.state.undecodable = sorted(set(self.state.undecodable) | set(self.stats.undecodable[:]))
        self.ckpt.save(self.state, self.model, self.opt, self.sched, self.gen)

    def finish(self, extra_summary: dict | None) -> dict:
        """The run's summary, written with the model and tokenizer (by the main rank)."""
        summary = _summary(self, extra_summary)
        if self.dist.main:
            if self.ckpt.out_dir != self.out_dir:  # the uid log joins the outputs
                for name in self.state.uid_segments:
                    with storage.open_read(storage.join(self.ckpt.out_dir, "uids", name)) as f:
                        storage.write_bytes(storage.join(self.out_dir, "uids", name), f.read())
            save_model_dir(self.model, self.tokenizer, self.out_dir)
            storage.write_json(storage.join(self.out_dir, "train.json"), summary)
        self.dist.barrier()  # the other ranks return once rank 0's outputs exist
        self.notify("on_end", summary)
        return summary


def _warn_repeats(stage: str, data_uri: str, batch, main: bool) -> bool:
    """Say once (first batch) when a batch holds the same sample twice: the split is smaller than a batch,
    so every step trains (and a joint method selects) among repeats. Returns True once checked."""
    distinct = len(set(zip(batch.uids, batch.shards or [""] * len(batch.uids))))
    if distinct < len(batch.uids) and main:
        print(
            f"{stage}: warning: a batch of {len(batch.uids)} from {data_uri} holds only {distinct} distinct "
            "samples: the split is smaller than one batch, so samples repeat within every batch",
            file=sys.stderr,
            flush=True,
        )
    return True


def build_run(
    cfg: C.Config,
    stage: str,
    data_uri: str,
    out_dir: str,
    tokenizer: Tokenizer,
    cache: ScoreCache | None = None,
    eval_uri: str | None = None,
    callbacks: list[Callback] = (),
    keep: Callable[[Sample], bool] | None = None,
    checkpoint_dir: str | None = None,
    init_model: torch.nn.Module | None = None,
) -> Run:
    """Everything a run needs before its first step: device and ranks, selector, model, optimiser, the
    checkpoint it resumes from, the data stream positioned after what earlier attempts trained on."""
    t = cfg.reference if stage == "reference" else cfg.learner
    dist, device = distributed.setup(resolve_device(t.device))
    cuda = device.startswith("cuda")
    replay = stage == "learner" and use_reuse(cfg, t, device, dist)
    selector = TakeAll() if stage == "reference" else make_selector(cfg, cache, replay)
    method = "reference" if stage == "reference" else selector.name
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    model = (init_model if init_model is not None else build_model(cfg.model, tokenizer)).to(device)
    opt, sched = make_optimizer(model, t, fused=cuda)
    gen = torch.Generator(device=device).manual_seed(t.seed + 1)
    ev = EvalSet.load(eval_uri, cfg.model.image_size, t.max_bad_fraction) if eval_uri and t.eval_every else None
    coarse = scoring_stride(cfg) if stage == "learner" else 1
    groups = train_groups(t.batch_size, coarse)
    for rows, _ in groups:  # fail before training if a group cannot be split evenly over the ranks
        dist.split(rows.stop - rows.start, "batch size" if coarse == 1 else "half the batch size (Flexi-JEST)")
    ckpt = Checkpointer(checkpoint_dir or out_dir, cfg, stage, enabled=dist.main)
    state = ckpt.restore(model, opt, sched, gen, device)
    if state.step and dist.main:  # said even under --quiet: a resumed run is not a fresh one
        print(f"{stage}: resuming from step {state.step} of {t.steps} ({ckpt.uri})", flush=True)
    stats = ReadStats(max_bad_fraction=t.max_bad_fraction, running=True)  # the stream so far (shards.judge_bad)
    samples = _resumed_stream(data_uri, t, stats, cfg.model.image_size, state, keep, cuda)
    batches = Prefetcher(make_batches(samples, selector.super_batch(t.batch_size), tokenizer), pin=cuda)
    if use_compile(t, device):
        compile_towers(model)
    forward = TrainForward(model)
    if dist.active:  # averages gradients over ranks; identical initial weights are broadcast from rank 0
        forward = torch.nn.parallel.DistributedDataParallel(forward, device_ids=[dist.local_rank] if cuda else None)
    step = TrainStep(model, opt, sched, forward, groups, dist, device, cfg.model.loss, t.optim.grad_clip, coarse)
    callbacks = tuple(callbacks) if dist.main else ()  # one rank reports, checkpoints and evaluates
    cost = step_cost(cfg, stage, replay)
    return Run(cfg, stage, method, t, out_dir, tokenizer, dist, device, model, opt, sched, gen, selector, step,
               cost, batches, stats, ckpt, state, ev, t.eval_steps(), callbacks, cache)  # fmt: skip


def _resumed_stream(data_uri, t: C.TrainConfig, stats, image_size, state: TrainState, keep, cuda: bool):
    """The training stream (filtered by `keep`), past the samples earlier attempts drew. The stream is
    deterministic, so skipping them takes it exactly where an uninterrupted run would be; they are
    replayed without decoding (see data.shards.stream), and only those: replay ends at `resume_at`."""
    skipped, resume_at = 0, state.consumed
    samples = stream(
        data_uri,
        t.seed,
        t.shuffle_buffer,
        stats,
        image_size,
        decode_workers=t.decode_workers or (8 if cuda else 1),
        decode_mode=t.decode_mode,
        replaying=lambda: skipped < resume_at,
        undecodable=set(state.undecodable),
    )
    if keep is not None:
        samples = (s for s in samples if keep(s))
    for _ in range(resume_at):
        next(samples)
        skipped += 1
    return samples


def train(
    cfg: C.Config,
    stage: str,
    data_uri: str,
    out_dir: str,
    tokenizer: Tokenizer,
    cache: ScoreCache | None = None,
    eval_uri: str | None = None,
    callbacks: list[Callback] = (),
    progress: bool = True,
    extra_summary: dict | None = None,
    keep: Callable[[Sample], bool] | None = None,
    checkpoint_dir: str | None = None,
    init_model: torch.nn.Module | None = None,
) -> dict:
    """Train one model; `stage` is "reference" or "learner". Returns (and writes) the summary.

    `keep` filters the pool before anything is drawn (the offline-filter baselines). `checkpoint_dir`:
    where the checkpoint and the uid log live while training (default `out_dir`): durable storage where
    `out_dir` is not, e.g. a KFP step's local output folder, which a retried pod no longer has."""
    run = build_run(
        cfg, stage, data_uri, out_dir, tokenizer, cache, eval_uri, callbacks, keep, checkpoint_dir, init_model
    )
    state, t = run.state, run.t
    sigterm, bar = SigtermFlag(), run.progress_bar(progress)
    started = time.time() - state.seconds
    run.notify("on_start")
    warned = state.step > 0  # a run's first batch only: a resumed run's may span an epoch's end
    try:
        while state.step < t.steps:
            t0 = time.perf_counter()
            batch = next(run.batches, None)  # data: the next super-batch, decoded ahead
            if batch is None:
                raise ValueError(f"{data_uri}: ran out of samples")
            if not warned:
                warned = _warn_repeats(stage, data_uri, batch, run.dist.main)
            picked = run.selector(run.model, batch, run.gen, run.device, run.dist)  # score + select
            measured = {k: float(v) for k, v in run.step(picked.batch, picked.tapes).items()}  # the update
            picked.tapes = None  # freed before the next scoring pass
            if not math.isfinite(measured["loss"]):
                raise ValueError(
                    f"{stage}: loss became {measured['loss']} at step {state.step}; lower the learning rate"
                )
            run.ckpt.log(state.step, picked.batch.uids, measured)
            row = state.record(len(batch), picked, measured, run.cost)
            seconds = time.perf_counter() - t0
            row.update(step_seconds=seconds, examples_per_second=row["examples"] / max(seconds, 1e-9),
                       data_wait_seconds=run.batches.wait_seconds, skipped=run.stats.bad)  # fmt: skip
            run.notify("on_step", row)
            bar.update(1)
            if (state.step - 1) % t.log_every == 0:
                bar.set_postfix(loss=f"{measured['loss']:.3f}", grad_norm=f"{measured['grad_norm']:.2f}")
            run.evaluate()
            state.seconds = time.time() - started
            stop = run.dist.any(sigterm.set)  # torchrun forwards SIGTERM to every rank; agree anyway
            if state.step % t.checkpoint_every == 0 or state.step == t.steps or stop:
                run.checkpoint()
            if stop and state.step < t.steps:
                raise SystemExit(f"{stage}: SIGTERM received; checkpoint written at step {state.step}, rerun to resume")
    finally:
        run.batches.close()
        bar.close()
        sigterm.restore()
    return run.finish(extra_summary)


def _summary(run: Run, extra: dict | None) -> dict:
    state, t, stats = run.state, run.t, run.stats
    trained = sum(state.noise.values())
    return {
        "stage": run.stage,
        "method": run.method,
        "steps": state.step,
        "batch_size": t.batch_size,
        "super_batch_size": run.selector.super_batch(t.batch_size),
        "examples_seen": state.consumed,
        "flops": dict(state.flops),
        "flops_total": float(sum(state.flops.values())),
        "forward_flops_per_example": run.model.flops_per_example(),
        "noise_mix": {k: v / trained for k, v in sorted(state.noise.items())} if trained else {},
        "group_mix": {k: v / sum(state.groups.values()) for k, v in sorted(state.groups.items())},
        "selection_chunks": {
            "mean_learnability_by_chunk": [x / state.selected_steps for x in state.chunk_diag],
            "superbatch_mean_learnability": state.pool_diag / state.selected_steps,
        }
        if state.selected_steps
        else {},
        # null (JSON has no NaN) where the data records no noise types, as users' data usually does not
        "clean_fraction": state.noise.get("clean", 0) / trained if trained else None,
        "skipped": dict(stats.skipped),
        "wall_seconds": state.seconds,
        "device": run.device,
        "world_size": run.dist.world,
        "curve": state.curve,
        "uid_log": state.uid_segments,
        **(
            {
                "score_cache_read": {
                    "files": run.cache.files_read,
                    "of": len(run.cache.entries),
                    "bytes": run.cache.bytes_read,
                }
            }
            if run.cache is not None
            else {}
        ),  # fmt: skip
        **(extra or {}),
    }


def read_uid_log(out_dir: str) -> list[dict]:
    """All steps' chosen uids of a finished run, in order (for audits and replays)."""
    summary = storage.read_json(storage.join(out_dir, "train.json"))
    rows = []
    for name in summary["uid_log"]:
        with storage.open_read(storage.join(out_dir, "uids", name)) as f:
            rows += [json.loads(line) for line in gzip.decompress(f.read()).decode().splitlines()]
    return rows
