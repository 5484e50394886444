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
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from .. import config as C
from .. import storage
from ..core.flops import scoring_stride, step_cost, train_groups
from ..core.losses import batch_loss
from ..data.shards import ReadStats, Sample, stream
from ..model import activation_reuse
from ..model.tokenizer import Tokenizer
from ..model.two_tower import TwoTower, apply_linear, save_model
from ..progress import show_progress
from . import distributed
from .batch_selectors import TakeAll, make_selector, use_reuse
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


class _Preempted(Exception):
    pass


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
    Returns the loss as a device tensor (no host sync here)."""

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

    def __call__(
        self, chosen: Batch, tapes: tuple[activation_reuse.Tape, activation_reuse.Tape] | None = None
    ) -> torch.Tensor:
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
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.sched.step()
        return loss.detach()


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


@dataclass
class TrainState:
    """A run's progress: everything a resumed run needs besides the weights, optimiser and RNG."""

    step: int = 0  # optimiser steps done
    consumed: int = 0  # samples drawn from the stream (the resumed stream skips them)
    undecodable: list = field(default_factory=list)  # uids found undecodable so far (replaying needs them)
    flops: Counter = field(default_factory=Counter)  # by pass: scoring, selection, train
    noise: Counter = field(default_factory=Counter)  # recorded noise types of the examples trained on
    noise_window: Counter = field(default_factory=Counter)  # the same, since the last evaluation
    curve: list = field(default_factory=list)  # evaluation points
    seconds: float = 0.0  # wall time over all attempts
    uid_segments: list = field(default_factory=list)  # uid-log files written so far
    chunk_diag: list = field(default_factory=list)  # per chunk (draw order): sum over steps of its mean A_kk
    pool_diag: float = 0.0  # sum over steps of the super-batch's mean A_kk
    selected_steps: int = 0  # steps that ran an online selection (the sums' count)

    def as_dict(self) -> dict:
        return asdict(self) | {k: dict(getattr(self, k)) for k in ("flops", "noise", "noise_window")}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{**d, **{k: Counter(d.get(k, {})) for k in ("flops", "noise", "noise_window")}})


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

    def log(self, step: int, uids: list) -> None:
        self.pending.append({"step": step, "uids": uids})

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
) -> dict:
    """Train one model; `stage` is "reference" or "learner". Returns (and writes) the summary.

    `keep` filters the pool before anything is drawn (the offline-filter baselines)."""
    t = cfg.reference if stage == "reference" else cfg.learner
    dist, device = distributed.setup(resolve_device(t.device))
    cuda = device.startswith("cuda")
    replay = stage == "learner" and use_reuse(cfg, t, device, dist)
    selector = TakeAll() if stage == "reference" else make_selector(cfg, cache, replay)
    method = "reference" if stage == "reference" else selector.name
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    model = TwoTower(cfg.model, len(tokenizer)).to(device)
    opt, sched = make_optimizer(model, t, fused=cuda)
    gen = torch.Generator(device=device).manual_seed(t.seed + 1)
    ev = EvalSet.load(eval_uri, cfg.model.image_size, t.max_bad_fraction) if eval_uri and t.eval_every else None
    eval_at = t.eval_steps()
    n_super = selector.super_batch(t.batch_size)
    coarse = scoring_stride(cfg) if stage == "learner" else 1
    groups = train_groups(t.batch_size, coarse)
    for rows, _ in groups:  # fail before training if a group cannot be split evenly over the ranks
        dist.split(rows.stop - rows.start, "batch size" if coarse == 1 else "half the batch size (Flexi-JEST)")
    cost = step_cost(cfg, stage, replay)  # FLOPs of one step, by pass

    ckpt = Checkpointer(out_dir, cfg, stage, enabled=dist.main)
    state = ckpt.restore(model, opt, sched, gen, device)
    if state.step and dist.main:  # said even under --quiet: a resumed run is not a fresh one
        print(f"{stage}: resuming from step {state.step} of {t.steps} ({ckpt.uri})", flush=True)
    stats = ReadStats(max_bad_fraction=t.max_bad_fraction)
    skipped, resume_at = 0, state.consumed  # the replay ends where earlier attempts stopped, not later
    samples = stream(
        data_uri,
        t.seed,
        t.shuffle_buffer,
        stats,
        cfg.model.image_size,
        decode_workers=t.decode_workers or (8 if cuda else 1),
        decode_mode=t.decode_mode,
        # replayed without decoding while we skip (see data.stream); exactly the same course
        replaying=lambda: skipped < resume_at,
        undecodable=set(state.undecodable),
    )
    if keep is not None:
        samples = (s for s in samples if keep(s))
    for _ in range(resume_at):  # deterministic stream: skip what earlier attempts trained on
        next(samples)
        skipped += 1
    batches = Prefetcher(make_batches(samples, n_super, tokenizer), pin=cuda)
    if use_compile(t, device):
        compile_towers(model)
    forward = TrainForward(model)
    if dist.active:  # averages gradients over ranks; identical initial weights are broadcast from rank 0
        forward = torch.nn.parallel.DistributedDataParallel(forward, device_ids=[dist.local_rank] if cuda else None)
    callbacks = callbacks if dist.main else ()  # one rank reports, checkpoints and evaluates
    train_step = TrainStep(
        model, opt, sched, forward, groups, dist, device, cfg.model.loss, t.optim.grad_clip, score_stride=coarse
    )

    sigterm = SigtermFlag()
    bar = tqdm(
        total=t.steps,
        initial=state.step,
        desc=stage if method == stage else f"{stage}:{method}",
        unit="step",
        disable=not (show_progress(progress) and dist.main),
        mininterval=1.0,
    )
    t_start = time.time() - state.seconds
    for cb in callbacks:
        cb.on_start(stage, method)
    try:
        while state.step < t.steps:
            t0 = time.perf_counter()
            # data: the next super-batch (decoded ahead by the prefetcher)
            batch = next(batches, None)
            if batch is None:
                raise ValueError(f"{data_uri}: ran out of samples")
            # score + select: the sub-batch to train on
            picked = selector(model, batch, gen, device, dist)
            # step: forward, loss, backward, optimiser; the tape is freed before the next scoring pass
            loss = float(train_step(picked.batch, picked.tapes))
            picked.tapes = None
            if not math.isfinite(loss):
                raise ValueError(f"{stage}: loss became {loss} at step {state.step}; lower the learning rate")
            # account: FLOPs by pass, samples drawn, noise mix, uid log
            chosen = picked.batch
            ckpt.log(state.step, chosen.uids)
            state.step += 1
            state.consumed += len(batch)
            state.flops.update(cost.as_dict())
            noisy = [n for n in chosen.noise if n]
            state.noise.update(noisy)
            state.noise_window.update(noisy)
            chunks = picked.info.get("chunk_diag") or ()
            if chunks and all(x == x for x in chunks):  # per-chunk diagnostics of online selection
                state.chunk_diag = [a + b for a, b in zip(state.chunk_diag or [0.0] * len(chunks), chunks)]
                state.pool_diag += picked.info["pool_diag"]
                state.selected_steps += 1
            dt = time.perf_counter() - t0
            row = {
                "step": state.step,
                "loss": loss,
                "lr": sched.get_last_lr()[0],
                "step_seconds": dt,
                "data_wait_seconds": batches.wait_seconds,
                "selection_seconds": picked.selection_seconds,
                "examples": len(chosen),
                "examples_per_second": len(chosen) / max(dt, 1e-9),
                "noisy_fraction": (sum(n != "clean" for n in noisy) / len(noisy)) if noisy else float("nan"),
                "skipped": stats.bad,
                "flops": cost.total,
                **picked.info,
            }
            # log / evaluate
            for cb in callbacks:
                cb.on_step(stage, method, row)
            bar.update(1)
            if (state.step - 1) % t.log_every == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
            last = state.step == t.steps
            if ev is not None and dist.main and state.step in eval_at:
                point = {
                    "step": state.step,
                    "flops": sum(state.flops.values()),
                    **evaluate(model, tokenizer, ev, cfg.eval.batch_size, device),
                    "noise_window": dict(state.noise_window),
                }
                state.noise_window.clear()
                state.curve.append(point)
                for cb in callbacks:
                    cb.on_eval(stage, method, point)
            # checkpoint (and stop, if preempted)
            state.seconds = time.time() - t_start
            stop = dist.any(sigterm.set)  # torchrun forwards SIGTERM to every rank; agree anyway
            if state.step % t.checkpoint_every == 0 or last or stop:
                state.undecodable = sorted(set(state.undecodable) | set(stats.undecodable[:]))
                ckpt.save(state, model, opt, sched, gen)
            if stop and not last:
                raise _Preempted
    except _Preempted:
        raise SystemExit(
            f"{stage}: SIGTERM received; checkpoint written at step {state.step}, rerun to resume"
        ) from None
    finally:
        batches.close()
        bar.close()
        sigterm.restore()

    summary = _summary(state, stage, method, t, n_super, stats, device, dist, model, extra_summary)
    if dist.main:
        save_model(model, storage.join(out_dir, "model.pt"))
        tokenizer.save(storage.join(out_dir, "tokenizer.json"))
        storage.write_json(storage.join(out_dir, "train.json"), summary)
    dist.barrier()  # the other ranks return once rank 0's outputs exist
    for cb in callbacks:
        cb.on_end(stage, method, summary)
    return summary


def _summary(state: TrainState, stage, method, t, n_super, stats, device, dist, model, extra) -> dict:
    trained = sum(state.noise.values())
    return {
        "stage": stage,
        "method": method,
        "steps": state.step,
        "batch_size": t.batch_size,
        "super_batch_size": n_super,
        "examples_seen": state.consumed,
        "flops": dict(state.flops),
        "flops_total": float(sum(state.flops.values())),
        "forward_flops_per_example": model.flops_per_example(),
        "noise_mix": {k: v / trained for k, v in sorted(state.noise.items())} if trained else {},
        "selection_chunks": {
            "mean_learnability_by_chunk": [x / state.selected_steps for x in state.chunk_diag],
            "superbatch_mean_learnability": state.pool_diag / state.selected_steps,
        }
        if state.selected_steps
        else {},
        "clean_fraction": state.noise.get("clean", 0) / trained if trained else float("nan"),
        "skipped": dict(stats.skipped),
        "wall_seconds": state.seconds,
        "device": device,
        "world_size": dist.world,
        "curve": state.curve,
        "uid_log": state.uid_segments,
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
