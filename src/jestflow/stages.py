"""The four JEST stages as plain functions: what the CLI, the KFP components and the tests call."""

from __future__ import annotations

import dataclasses
import json

import yaml

from . import config as C
from . import storage
from .core import flops
from .data.shards import ReadStats, iter_split
from .model.factory import build_tokenizer, load_model_dir, load_reference, load_tokenizer
from .training import distributed
from .training.devices import resolve_device
from .training.evaluation import EvalSet, evaluate
from .training.loop import Callback, train
from .training.score_cache import ScoreCache, score_pool


def _write_config(cfg: C.Config, out_dir: str, name: str = "config.yaml") -> None:
    """Record the configuration in `out_dir`, unless the folder holds a run (a checkpoint) made with
    another one: then refuse before touching anything, so the folder keeps describing what it holds."""
    uri, text = storage.join(out_dir, name), C.dump(cfg)
    if storage.exists(storage.join(out_dir, "checkpoint.pt")) and storage.exists(uri) and not _same_config(uri, text):
        raise ValueError(
            f"{out_dir} holds a run made with another configuration ({uri} differs); "
            "use a new --out or delete that folder"
        )
    storage.write_bytes(uri, text.encode())


def _same_config(uri: str, text: str) -> bool:
    """Whether the config file at `uri` describes the configuration `text` does. Read as a configuration,
    not compared as text: a file written before a jestflow upgrade added a setting lacks that setting, and
    its default fills it in (a run interrupted across an upgrade resumes)."""
    old = _read_text(uri)
    if old == text:
        return True
    try:
        return C.dump(C.from_dict(yaml.safe_load(old) or {})) == text
    except (ValueError, TypeError, yaml.YAMLError):  # a setting since removed or renamed, or not YAML: differs
        return False


def _read_text(uri: str) -> str:
    with storage.open_read(uri) as f:
        return f.read().decode("utf-8", "replace")


def finished_run(cfg: C.Config, out: str, stage: str) -> dict | None:
    """The summary of the run `out` already holds, finished with this very configuration (it is not
    trained or written again: a rerun of a finished command is a no-op), or None."""
    summary_uri, config_uri = storage.join(out, "train.json"), storage.join(out, "config.yaml")
    if not (storage.exists(summary_uri) and storage.exists(config_uri)):
        return None
    try:
        held = C.from_dict(yaml.safe_load(_read_text(config_uri)) or {})
    except (ValueError, yaml.YAMLError):  # another version's keys, or damaged: not this run
        return None
    if cfg.learner.init_from:  # the model section was replaced by the starting model's (train_learner)
        cfg = dataclasses.replace(cfg, model=held.model)
    if held != cfg:
        return None
    print(f"{stage}: {out} already holds this run, finished (train.json); delete the folder to train it again",
          flush=True)  # fmt: skip
    return storage.read_json(summary_uri)


def train_reference(
    cfg: C.Config,
    curated: str,
    out: str,
    eval_uri: str | None = None,
    callbacks: list[Callback] = (),
    progress: bool = True,
    metrics=None,
    checkpoint_dir: str | None = None,
) -> dict:
    """Stage 1: build the tokenizer from the curated captions and train the reference on them.
    `checkpoint_dir`: durable storage for the checkpoint where `out` is not (training.loop.train).
    A run `out` holds finished with this configuration is returned as it is (not trained or written again)."""
    done = finished_run(cfg, out, "reference")
    if done is not None:
        return done
    _write_config(cfg, out)
    stats = ReadStats(max_bad_fraction=cfg.reference.max_bad_fraction)
    captions = (s.caption for s in iter_split(curated, stats, cfg.model.image_size))
    tokenizer = build_tokenizer(cfg.model.arch, captions, cfg.model.context_length)
    stats.judge(f"curated split {curated}")  # read whole for the tokenizer: judged whole, before training
    callbacks = [*callbacks, *([metrics] if metrics else [])]
    return train(cfg, "reference", curated, out, tokenizer, eval_uri=eval_uri, callbacks=callbacks, progress=progress,
                 checkpoint_dir=checkpoint_dir)  # fmt: skip


def fetch_reference(cfg: C.Config, source: str, out: str) -> dict:
    """Stage 1 with a pretrained reference: no training; the model (`load_pretrained`: a folder, gs://
    prefix or hub name) is saved as the reference's folder once, so every scoring step reads it from
    there (one download per run, no network needed where scoring runs)."""
    from .model.factory import load_pretrained, save_model_dir

    if cfg.model.arch != "hf-siglip":
        raise ValueError(
            f"a pretrained reference ({source}) needs --set model.arch=hf-siglip: the learners use the "
            "reference's tokenizer, which a vit learner cannot"
        )
    model, tokenizer, weights_id = load_pretrained(source)
    _write_config(cfg, out)
    save_model_dir(model, tokenizer, out, pretrained=source)
    return {"pretrained": source, "weights_id": weights_id, "steps": 0, "flops_total": 0.0}


def score(
    cfg: C.Config,
    reference: str,
    pool: str,
    out: str,
    progress: bool = True,
    shards: list[str] | None = None,
    metrics=None,
    data_uri: str | None = None,
    reference_uri: str | None = None,
) -> dict:
    """Stage 2: run the reference once over the pool and cache embeddings and losses by uid. `data_uri`:
    where the score files go (default `out`); `reference_uri`: the reference as the index records it
    (default `reference`, e.g. the artifact's URI where `reference` is its local copy)."""
    _write_config(cfg, out, "score-config.yaml")
    device = resolve_device(cfg.reference.device)
    model, tokenizer, weights_id, pretrained = load_reference(reference, device)
    if pretrained:  # trained elsewhere: no training cost of ours to charge (its scoring pass still counts)
        extra = {"reference": reference_uri or reference, "reference_flops": 0.0, "reference_pretrained": True}
    else:
        ref_summary = storage.read_json(storage.join(reference, "train.json"))
        extra = {"reference": reference_uri or reference, "reference_flops": ref_summary["flops_total"]}
    if metrics:
        metrics.start()
    index = score_pool(
        model,
        tokenizer,
        pool,
        out,
        cfg.eval.batch_size,
        device,
        cfg.reference.max_bad_fraction,
        extra,
        progress,
        shards,
        on_shard=metrics.scored if metrics else None,
        dtype=cfg.score.dtype,
        reference_id=weights_id,
        data_uri=data_uri,
    )
    if metrics:
        metrics.end()
    return index


def fit_tokenizer(tokenizer, model: C.ModelConfig, source: str):
    """The reference's tokenizer as the learner uses it: a Hugging Face one padded to the learner's own
    context length (a pretrained reference's may be longer); a vit learner needs jestflow's word-level one
    (its text tower masks padding by id 0)."""
    from .model.tokenizer import HFTokenizer

    if not isinstance(tokenizer, HFTokenizer):
        return tokenizer
    if model.arch == "vit":
        raise ValueError(
            f"{source}: the reference's tokenizer is a Hugging Face one; train the learner with "
            "--set model.arch=hf-siglip, or give a vit learner a word-level one with --tokenizer-from"
        )
    return (
        tokenizer.with_length(model.context_length) if tokenizer.context_length != model.context_length else tokenizer
    )


def train_learner(
    cfg: C.Config,
    pool: str,
    out: str,
    scores: str | None = None,
    eval_uri: str | None = None,
    tokenizer_from: str | None = None,
    callbacks: list[Callback] = (),
    progress: bool = True,
    metrics=None,
    checkpoint_dir: str | None = None,
) -> dict:
    """Stage 3: train the learner on the pool with `cfg.select.method` choosing each sub-batch.
    `checkpoint_dir`: durable storage for the checkpoint where `out` is not (training.loop.train).
    `learner.init_from`: start from those weights; their model fields and tokenizer replace the config's.
    A run `out` holds finished with this configuration is returned as it is (not trained or written again)."""
    done = finished_run(cfg, out, "learner")
    if done is not None:
        return done
    init = None
    if cfg.learner.init_from:
        init, init_tokenizer, _, _ = load_reference(cfg.learner.init_from)
        cfg = dataclasses.replace(cfg, model=init.config)
        print(f"learner: starting from {cfg.learner.init_from} ({cfg.model.arch}, its tokenizer)", flush=True)
    _write_config(cfg, out)
    m = cfg.select.method_info
    # A method that reads no reference is neither given its scores nor charged its costs.
    cache = ScoreCache(scores, pool) if scores and m.uses_reference else None
    source = tokenizer_from or scores
    if init is not None:
        tokenizer = init_tokenizer
    elif source:
        tokenizer = fit_tokenizer(load_tokenizer(storage.join(source, "tokenizer.json")), cfg.model, source)
    else:
        print(
            "learner: no --scores or --tokenizer-from: building the tokenizer from the pool's captions "
            "(not the reference's; pass --tokenizer-from REFERENCE to compare like for like with a JEST run)",
            flush=True,
        )
        captions = (s.caption for s in iter_split(pool, ReadStats(max_bad_fraction=1.0), cfg.model.image_size))
        tokenizer = build_tokenizer(cfg.model.arch, captions, cfg.model.context_length)
    if m.uses_reference and cache is None:
        raise ValueError(f"method {m.name!r} needs a reference score cache (--scores)")
    # Curation's fixed costs, for the methods that read the reference: its training and its pool pass.
    extra = (
        flops.fixed(m, cache.index.get("reference_flops", 0.0), cache.index.get("scoring_flops", 0.0)) if cache else {}
    )
    callbacks = [*callbacks, *([metrics] if metrics else [])]
    return train(
        cfg,
        "learner",
        pool,
        out,
        tokenizer,
        cache,
        eval_uri,
        callbacks,
        progress,
        extra,
        offline_filter(cfg, cache),
        checkpoint_dir,
        init,
    )


def offline_filter(cfg: C.Config, cache: ScoreCache | None):
    """The pool filter of the offline baselines (registry field `offline_filter`), or None.

    "reference-clip" (offline-easy-reference): keep the top fraction of the pool by the reference's
    CLIP score (cosine similarity of a sample's own image and text embeddings), as CLIP-score
    filtering does; the threshold comes from the cache's histogram, each sample's score from its
    shard's score file as the stream reaches it. "clean" (oracle): keep the samples whose recorded noise
    type is "clean" (an upper bound; needs the demo's noise records)."""
    kind = cfg.select.method_info.offline_filter
    if kind == "clean":

        def clean(sample):
            if "noise" not in sample.meta:
                raise ValueError(
                    f"method {cfg.select.method} needs each sample's recorded noise type; {sample.uid} has none"
                )
            return sample.meta["noise"] == "clean"

        return clean
    if kind != "reference-clip":
        return None
    keep_frac = cfg.select.offline_keep or (1 - cfg.select.filter_ratio)
    cut = cache.clip_threshold(keep_frac)  # from the index's histogram: no score file read to find it
    return lambda sample: cache.clip_score(sample.uid, sample.shard) >= cut


def flops_matched(cfg: C.Config, method: str, scores_path: str) -> C.Config:
    """The uniform baseline at equal total compute to a run of `method` (flops.matched_uniform), with
    activation reuse counted where that run would use it on this device."""
    from .training.batch_selectors import use_reuse

    m = cfg.with_method(method)
    reuse = use_reuse(m, m.learner, resolve_device(m.learner.device), distributed.Dist())
    return flops.matched_uniform(cfg, method, storage.read_json(storage.join(scores_path, "index.json")), reuse)


def evaluate_model(cfg: C.Config, model_dir: str, eval_uri: str, out: str | None = None, metrics=None) -> dict:
    """Stage 4: zero-shot top-1 and retrieval recall of a trained model on a held-out split."""
    if metrics:
        metrics.start()
    device = resolve_device(cfg.learner.device)
    model, tokenizer = load_model_dir(model_dir, device)
    ev = EvalSet.load(eval_uri, model.config.image_size, cfg.learner.max_bad_fraction)
    results = evaluate(model, tokenizer, ev, cfg.eval.batch_size, device)
    results["skipped"] = ev.skipped  # bad eval samples dropped, by reason: `n` is what was evaluated
    summary_uri = storage.join(model_dir, "train.json")
    if storage.exists(summary_uri):
        s = storage.read_json(summary_uri)
        results.update(
            method=s["method"], steps=s["steps"], total_flops=flops.run_total(s), clean_fraction=s["clean_fraction"]
        )
    if out:
        storage.write_json(out, results)
    if metrics:
        metrics.evaluated(results)
        metrics.end()
    return results


def format_metrics(m: dict) -> str:
    return json.dumps(storage.json_safe(m), indent=2, sort_keys=True)
