"""One training loop for the reference, the baselines and the JEST learner.

What differs between them is the `Selector`: it sees a super-batch and returns the sub-batch to
train on. `TakeAll` (reference, uniform) trains on what the stream gives; `ScoreSelect` runs the
learner forward over the super-batch, looks the reference up in the score cache by uid and picks the
sub-batch with `selection.select`.

Every `checkpoint_every` steps the run writes `checkpoint.pt` (model, optimiser, scheduler, step,
samples consumed, selection RNG, accounting) and a segment of the uid log, both atomically; a
restarted run with the same arguments resumes from there. FLOPs are accounted separately for the
learner's scoring forward, the selection and the training step.
"""

from __future__ import annotations

import gzip
import json
import math
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .progress import show_progress

from . import config as C
from . import distributed, reuse, storage
from .data import ReadStats, Sample, stream
from .evaluate import EvalSet, _autocast, evaluate
from .losses import batch_loss
from .model import TwoTower, apply_linear, save_model
from .scoring import ScoreCache
from .selection import Embeds, METHOD_TABLE, select
from .tokenizer import Tokenizer


@dataclass
class Batch:
    uids: list
    images: torch.Tensor  # B x H x W x 3 uint8
    tokens: torch.Tensor  # B x context
    noise: list  # the pool's recorded noise type per sample ("" when unknown)

    def take(self, idx: torch.Tensor) -> "Batch":
        i = idx.cpu()
        il = i.tolist()
        if self.images.is_pinned():  # keep the chosen sub-batch page-locked: its copy to the GPU stays async
            images = torch.index_select(self.images, 0, i, out=torch.empty(
                (len(il), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True))
        else:
            images = self.images[i]
        return Batch([self.uids[k] for k in il], images, self.tokens[i], [self.noise[k] for k in il])

    def __len__(self) -> int:
        return len(self.uids)


def make_batches(samples: Iterator[Sample], size: int, tokenizer: Tokenizer) -> Iterator[Batch]:
    while True:
        chunk = [s for _, s in zip(range(size), samples)]
        if len(chunk) < size:
            return
        yield Batch([s.uid for s in chunk], torch.from_numpy(np.stack([s.image for s in chunk])),
                    tokenizer.encode([s.caption for s in chunk]), [str(s.meta.get("noise", "")) for s in chunk])


class Prefetcher:
    """Decode the next batches on a background thread; `wait_seconds` is the time the loop waited.
    With `pin`, batches are put in page-locked memory there, so host-to-GPU copies run asynchronously."""

    def __init__(self, it: Iterator[Batch], depth: int = 2, pin: bool = False):
        self.pin = pin
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.wait_seconds = 0.0
        self._stop = False
        self.t = threading.Thread(target=self._run, args=(it,), daemon=True)
        self.t.start()

    def _put(self, item) -> bool:
        """Hand `item` over unless the loop has closed the prefetcher; False once closed."""
        while not self._stop:
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it):
        try:
            for b in it:
                if self._stop:
                    return
                if self.pin:
                    b = Batch(b.uids, b.images.pin_memory(), b.tokens.pin_memory(), b.noise)
                if not self._put(b):
                    return
            self._put(StopIteration())
        except BaseException as e:  # surface reader errors in the training thread
            self._put(e)

    def __next__(self) -> Batch:
        t0 = time.perf_counter()
        item = self.q.get()
        self.wait_seconds = time.perf_counter() - t0
        if isinstance(item, StopIteration):
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        """Stop and join the thread, so no decoding runs on while the interpreter shuts down (a daemon
        thread inside torch at exit aborts the process: "terminate called without an active exception")."""
        self._stop = True
        self.t.join(timeout=60)


# --------------------------------------------------------------------------------------------------
# Selectors


@dataclass
class Picked:
    batch: Batch
    scoring_flops: float = 0.0
    selection_flops: float = 0.0
    selection_seconds: float = 0.0
    info: dict = field(default_factory=dict)
    tapes: tuple[reuse.Tape, reuse.Tape] | None = None  # the chosen rows' recorded image and text linears


class TakeAll:
    """Train on the whole (super-)batch as drawn: reference training, the uniform baseline and the
    offline filters (which sample uniformly from a filtered pool)."""

    def __init__(self, name: str = "uniform"):
        self.name = name

    def super_batch(self, b: int) -> int:
        return b

    def __call__(self, model, batch, generator, device, dist=distributed.Dist()) -> Picked:
        return Picked(batch)


class ScoreSelect:
    """Score the super-batch with the learner (and the cached reference), then select jointly."""

    def __init__(self, cfg: C.Config, cache: ScoreCache | None, reuse_activations: bool = False):
        self.cfg, self.cache = cfg, cache
        self.name = cfg.select.method
        # Flexi-JEST scores the super-batch with a coarse view of each image (fewer patches).
        self.stride = cfg.select.flexi_stride if self.name == "flexi-jest" else 1
        _, score = METHOD_TABLE[self.name]
        self.needs_learner = scores_with_learner(self.name)
        if score in ("learnability", "easy-reference") and cache is None:
            raise ValueError(f"method {self.name!r} needs a reference score cache (--scores)")
        self.reuse = reuse_activations and self.needs_learner  # record the scoring forward for the train step

    def super_batch(self, b: int) -> int:
        return self.cfg.super_batch_size()

    @torch.no_grad()
    def __call__(self, model: TwoTower, batch: Batch, generator, device,
                 dist: distributed.Dist = distributed.Dist()) -> Picked:
        s, b = self.cfg.select, self.cfg.learner.batch_size
        n = len(batch)
        learner = None
        scoring_flops = 0.0
        rec = (reuse.Recorder(), reuse.Recorder()) if self.reuse else ()
        hooks = rec or (apply_linear, apply_linear)  # image and text tower: record their linears, or just run them
        if self.needs_learner:
            # Each rank embeds its share of the super-batch; the gathered embeddings are the whole's.
            mine = dist.split(n, "super-batch size")
            model.eval()
            with _autocast(device):
                u, v = model(batch.images[mine].to(device, non_blocking=True),
                             batch.tokens[mine].to(device, non_blocking=True), self.stride, *hooks)
            model.train()
            u, v = dist.gather(u.float()), dist.gather(v.float())
            learner = Embeds(u, v, model.log_t.detach().float(), model.bias.detach().float())
            scoring_flops = model.flops_per_example(self.stride) * n
        ref = self.cache.lookup(batch.uids, device) if self.cache is not None else None
        t0 = time.perf_counter()
        sel = select(self.name, learner, ref, b, s.n_chunks, generator, self.cfg.model.loss, s.temperature,
                     s.block_elems, s.kernel)
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        d = self.cfg.model.embed_dim
        n_models = (learner is not None) + (ref is not None)
        sel_flops = selection_flops(n, b, d, n_models)
        info = {"chosen_diag": sel.chosen_diag, "pool_diag": sel.pool_diag, "chosen_score": sel.chosen_score}
        tapes = tuple(r.tape.take(sel.indices) for r in rec) if rec else None
        return Picked(batch.take(sel.indices), scoring_flops, sel_flops, seconds, info, tapes)


def selection_flops(n: int, b: int, d: int, n_models: int) -> float:
    """Chunked selection: per model two N x c block products per chunk; over all chunks 2 * 2*N*b*d."""
    return n_models * 4.0 * n * b * d


def scores_with_learner(method: str) -> bool:
    """Whether `method` runs the learner forward over the super-batch (and so has something to reuse)."""
    return method not in C.UNIFORM_SAMPLING and METHOD_TABLE[method][1] in ("learnability", "hard-learner")


def make_selector(cfg: C.Config, cache: ScoreCache | None, reuse_activations: bool = False):
    if cfg.select.method in C.UNIFORM_SAMPLING:
        return TakeAll(cfg.select.method)
    return ScoreSelect(cfg, cache, reuse_activations)


def use_reuse(cfg: C.Config, t: C.TrainConfig, device: str, dist: distributed.Dist) -> bool:
    """Whether the learner replays its scoring forward (reuse.py). `auto`: on CUDA, in one process, when
    the super-batch's tape takes at most 40% of the GPU's memory; `on` refuses what cannot work."""
    s = cfg.select
    if t.reuse_activations == "off" or not scores_with_learner(s.method):
        return False
    if dist.active:
        if t.reuse_activations == "on":
            raise ValueError("learner.reuse_activations=on needs a single process: under global selection the "
                             "chosen rows were embedded on other ranks; use auto or off with torchrun")
        return False
    if t.reuse_activations == "on":
        return True
    if not device.startswith("cuda"):
        return False
    stride = s.flexi_stride if s.method == "flexi-jest" else 1
    need = reuse.tape_bytes_per_example(cfg.model, stride) * cfg.super_batch_size()
    return need <= 0.4 * torch.cuda.get_device_properties(torch.device(device)).total_memory


# --------------------------------------------------------------------------------------------------
# The loop


class Callback:
    """Hooks for metrics and logging; see metrics.py for the Prometheus one."""

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
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=o.lr, betas=(o.beta1, o.beta2), fused=fused or None)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o, t.steps))


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda asked for, but no CUDA device is available")
    return name


class _Preempted(Exception):
    pass


class TrainForward(torch.nn.Module):
    """The training step's forward, as one module call (what DDP wraps).

    `parts` are (images, tokens, patch_stride, image_tape, text_tape) groups: one group normally, two
    under Flexi-JEST (full resolution and the coarse view). A tape, where given, replays the scoring
    forward's linear layers (reuse.py). Returns each group's image and text embeddings."""

    def __init__(self, model: TwoTower):
        super().__init__()
        self.model = model

    def forward(self, parts: list[tuple]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        def hook(tape):
            return reuse.Replayer(tape) if tape is not None else apply_linear

        return [(self.model.encode_image(i, stride, hook(it)), self.model.encode_text(tok, hook(tt)))
                for i, tok, stride, it, tt in parts]


class TrainStep:
    """One optimiser step on a chosen sub-batch: this rank's share forward (bf16 autocast on CUDA),
    embeddings gathered with gradient, the full-batch loss, backward, clip, AdamW, schedule.
    Returns the loss as a device tensor (no host sync here)."""

    def __init__(self, model: TwoTower, opt, sched, forward, groups, dist, device: str, loss: str, grad_clip: float,
                 score_stride: int = 1):
        self.model, self.opt, self.sched, self.forward = model, opt, sched, forward
        self.groups, self.dist, self.device, self.loss, self.grad_clip = groups, dist, device, loss, grad_clip
        self.score_stride = score_stride  # the image view the scoring forward (and so a tape) saw

    def __call__(self, chosen: "Batch", tapes: tuple[reuse.Tape, reuse.Tape] | None = None) -> torch.Tensor:
        dist, device = self.dist, self.device
        parts = []
        for rows, stride in self.groups:
            mine = dist.split(rows.stop - rows.start, "batch size")
            view = slice(rows.start + mine.start, rows.start + mine.stop)  # a view: no host copy
            image_tape = tapes[0].rows(view) if tapes and stride == self.score_stride else None
            text_tape = tapes[1].rows(view) if tapes else None
            parts.append((chosen.images[view].to(device, non_blocking=True),
                          chosen.tokens[view].to(device, non_blocking=True), stride, image_tape, text_tape))
        with _autocast(device):
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
    import torch._dynamo.config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, 32)
    model.image.compile(dynamic=False)
    model.text.compile(dynamic=False)


def train_groups(n: int, flexi: int) -> list[tuple[slice, int]]:
    """The sub-batch's rows by patch stride: all at full resolution, or (Flexi-JEST) the first half
    at full resolution and the second at the coarse stride."""
    if flexi > 1:
        return [(slice(0, n // 2), 1), (slice(n // 2, n), flexi)]
    return [(slice(0, n), 1)]


def train_flops(model: TwoTower, groups: list[tuple[slice, int]], replay_stride: int = 0) -> float:
    """FLOPs of a training step: 3x the forward of each group, less the linear layers a tape replays
    (the text always, the image where its view is the one scored, `replay_stride`; 0 = no replay)."""
    total = 0.0
    for rows, stride in groups:
        n = rows.stop - rows.start
        saved = model.linear_flops_per_example(stride, image=stride == replay_stride) if replay_stride else 0.0
        total += n * (3 * model.flops_per_example(stride) - saved)
    return total


def train(cfg: C.Config, stage: str, data_uri: str, out_dir: str, tokenizer: Tokenizer,
          cache: ScoreCache | None = None, eval_uri: str | None = None, callbacks: list[Callback] = (),
          progress: bool = True, extra_summary: dict | None = None,
          keep: Callable[[Sample], bool] | None = None) -> dict:
    """Train one model; `stage` is "reference" or "learner". Returns (and writes) the summary.

    `keep` filters the pool before anything is drawn (the offline-filter baselines)."""
    t = cfg.reference if stage == "reference" else cfg.learner
    dist, device = distributed.setup(resolve_device(t.device))
    selector = TakeAll() if stage == "reference" else make_selector(cfg, cache, use_reuse(cfg, t, device, dist))
    method = "reference" if stage == "reference" else selector.name
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    model = TwoTower(cfg.model, len(tokenizer)).to(device)
    cuda = device.startswith("cuda")
    opt, sched = make_optimizer(model, t, fused=cuda)
    gen = torch.Generator(device=device).manual_seed(t.seed + 1)
    fwd = model.flops_per_example()
    ev = EvalSet.load(eval_uri, cfg.model.image_size, t.max_bad_fraction) if eval_uri and t.eval_every else None
    N = selector.super_batch(t.batch_size)
    flexi = cfg.select.flexi_stride if method == "flexi-jest" else 1
    groups = train_groups(t.batch_size, flexi)
    for rows, _ in groups:  # fail before training if a group cannot be split evenly over the ranks
        dist.split(rows.stop - rows.start, "batch size" if flexi == 1 else "half the batch size (Flexi-JEST)")

    state = {"step": 0, "consumed": 0, "flops": Counter(), "noise": Counter(), "curve": [], "seconds": 0.0,
             "uid_segments": []}
    ckpt_uri = storage.join(out_dir, "checkpoint.pt")
    if storage.exists(ckpt_uri):
        with storage.open_read(ckpt_uri) as f:
            ck = torch.load(f, map_location=device, weights_only=False)
        if ck["config"] != C.to_dict(cfg) or ck["stage"] != stage:
            raise ValueError(f"{ckpt_uri} was written by a different configuration or stage; "
                             "use a new --out or delete the checkpoint")
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"].cpu())
        state = ck["state"]
        state["flops"], state["noise"] = Counter(state["flops"]), Counter(state["noise"])
        state["noise_window"] = Counter(state.get("noise_window", {}))

    stats = ReadStats(max_bad_fraction=t.max_bad_fraction)
    workers = t.decode_workers or (8 if cuda else 1)
    samples = stream(data_uri, t.seed, t.shuffle_buffer, stats, cfg.model.image_size, decode_workers=workers,
                     decode_mode=t.decode_mode)
    if keep is not None:
        samples = (s for s in samples if keep(s))
    for _ in range(state["consumed"]):  # deterministic stream: skip what earlier attempts trained on
        next(samples)
    batches = Prefetcher(make_batches(samples, N, tokenizer), pin=cuda)
    uid_log: list[dict] = []
    if use_compile(t, device):
        compile_towers(model)
    forward = TrainForward(model)
    if dist.active:  # averages gradients over ranks; identical initial weights are broadcast from rank 0
        forward = torch.nn.parallel.DistributedDataParallel(
            forward, device_ids=[dist.local_rank] if device.startswith("cuda") else None)
    callbacks = callbacks if dist.main else ()  # one rank reports, checkpoints and evaluates
    train_step = TrainStep(model, opt, sched, forward, groups, dist, device, cfg.model.loss, t.optim.grad_clip,
                           score_stride=flexi)

    def checkpoint():
        if not dist.main:
            return
        seg = storage.join(out_dir, "uids", f"steps-{state['step'] - len(uid_log):07d}-{state['step'] - 1:07d}.jsonl.gz")
        if uid_log:
            storage.write_bytes(seg, gzip.compress("".join(json.dumps(r) + "\n" for r in uid_log).encode()))
            state["uid_segments"].append(storage.basename(seg))
            uid_log.clear()
        blob = {"config": C.to_dict(cfg), "stage": stage, "model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "gen": gen.get_state(),
                "state": {**state, "flops": dict(state["flops"]), "noise": dict(state["noise"]),
                          "noise_window": dict(state.get("noise_window", {}))}}
        with storage.atomic_path(ckpt_uri) as tmp:
            torch.save(blob, tmp)

    preempted = {"flag": False}

    def on_sigterm(signum, frame):  # Kubernetes preemption: finish this step, checkpoint, exit
        preempted["flag"] = True

    old = signal.signal(signal.SIGTERM, on_sigterm) if threading.current_thread() is threading.main_thread() else None
    bar = tqdm(total=t.steps, initial=state["step"], desc=f"{stage}:{method}", unit="step",
               disable=not (show_progress(progress) and dist.main), mininterval=1.0)
    t_start = time.time() - state["seconds"]
    for cb in callbacks:
        cb.on_start(stage, method)
    try:
        while state["step"] < t.steps:
            step = state["step"]
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                raise ValueError(f"{data_uri}: ran out of samples") from None
            picked = selector(model, batch, gen, device, dist)
            chosen = picked.batch
            lossf = float(train_step(chosen, picked.tapes))
            replayed, picked.tapes = picked.tapes is not None, None  # free the tape before the next scoring pass
            if not math.isfinite(lossf):
                raise ValueError(f"{stage}: loss became {lossf} at step {step}; lower the learning rate")
            state["step"] = step + 1
            state["consumed"] += len(batch)
            fl = state["flops"]
            before = sum(fl.values())
            fl["train"] += train_flops(model, groups, flexi if replayed else 0)
            fl["scoring"] += picked.scoring_flops
            fl["selection"] += picked.selection_flops
            state["noise"].update(n for n in chosen.noise if n)
            state.setdefault("noise_window", Counter()).update(n for n in chosen.noise if n)
            uid_log.append({"step": step, "uids": chosen.uids})
            dt = time.perf_counter() - t0
            noisy = [n for n in chosen.noise if n]
            s = {"step": step + 1, "loss": lossf, "lr": sched.get_last_lr()[0], "step_seconds": dt,
                 "data_wait_seconds": batches.wait_seconds, "selection_seconds": picked.selection_seconds,
                 "examples": len(chosen), "examples_per_second": len(chosen) / max(dt, 1e-9),
                 "noisy_fraction": (sum(n != "clean" for n in noisy) / len(noisy)) if noisy else float("nan"),
                 "skipped": stats.bad, "flops": sum(fl.values()) - before, **picked.info}
            for cb in callbacks:
                cb.on_step(stage, method, s)
            bar.update(1)
            if step % t.log_every == 0:
                bar.set_postfix(loss=f"{lossf:.3f}")
            last = state["step"] == t.steps
            if ev is not None and dist.main and (state["step"] % t.eval_every == 0 or last):
                m = evaluate(model, tokenizer, ev, cfg.eval.batch_size, device)
                point = {"step": state["step"], "flops": sum(fl.values()), **m,
                         "noise_window": dict(state.pop("noise_window", {}))}
                state["curve"].append(point)
                for cb in callbacks:
                    cb.on_eval(stage, method, point)
            state["seconds"] = time.time() - t_start
            stop = dist.any(preempted["flag"])  # torchrun forwards SIGTERM to every rank; agree anyway
            if state["step"] % t.checkpoint_every == 0 or last or stop:
                checkpoint()
            if stop and not last:
                raise _Preempted
    except _Preempted:
        bar.close()
        raise SystemExit(f"{stage}: SIGTERM received; checkpoint written at step {state['step']}, rerun to resume")
    finally:
        batches.close()
        bar.close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)

    trained = sum(state["noise"].values())
    summary = {
        "stage": stage, "method": method, "steps": state["step"], "batch_size": t.batch_size,
        "super_batch_size": N, "examples_seen": state["consumed"], "flops": dict(state["flops"]),
        "flops_total": float(sum(state["flops"].values())), "forward_flops_per_example": fwd,
        "noise_mix": {k: v / trained for k, v in sorted(state["noise"].items())} if trained else {},
        "clean_fraction": state["noise"].get("clean", 0) / trained if trained else float("nan"),
        "skipped": dict(stats.skipped), "wall_seconds": state["seconds"], "device": device, "world_size": dist.world,
        "curve": state["curve"], "uid_log": state["uid_segments"], **(extra_summary or {}),
    }
    if dist.main:
        save_model(model, storage.join(out_dir, "model.pt"))
        tokenizer.save(storage.join(out_dir, "tokenizer.json"))
        storage.write_json(storage.join(out_dir, "train.json"), summary)
    dist.barrier()  # the other ranks return once rank 0's outputs exist
    for cb in callbacks:
        cb.on_end(stage, method, summary)
    return summary


def read_uid_log(out_dir: str) -> list[dict]:
    """All steps' chosen uids of a finished run, in order (for audits and replays)."""
    summary = storage.read_json(storage.join(out_dir, "train.json"))
    rows = []
    for name in summary["uid_log"]:
        with storage.open_read(storage.join(out_dir, "uids", name)) as f:
            rows += [json.loads(line) for line in gzip.decompress(f.read()).decode().splitlines()]
    return rows
