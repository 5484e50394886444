"""Every KFP step's body (`component.python_func`) on real `kfp.dsl` artifacts whose local path and URI
differ, the way pipelines-components tests its components: a tiny configuration (a 160-sample pool,
2 steps), so the whole chain runs in seconds. The launcher stand-in (launcher.py) keeps each output
away from its URI until the step returns, as KFP's launcher does."""

import json
from pathlib import Path

import pytest
from kfp import dsl
from launcher import Launcher

from jestflow_components.evaluate.component import evaluate
from jestflow_components.merge_scores.component import merge_scores
from jestflow_components.prepare.component import prepare
from jestflow_components.report.component import report
from jestflow_components.score.component import score
from jestflow_components.train_learner.component import train_learner
from jestflow_components.train_reference.component import train_reference

TINY = [
    "demo.n_curated=64",
    "demo.n_pool=160",
    "demo.n_eval=40",
    "demo.shard_size=40",
    "learner.eval_every=1",
    "learner.batch_size=16",
    "reference.batch_size=16",
    "learner.shuffle_buffer=16",
    "reference.shuffle_buffer=16",
    "eval.batch_size=64",
]
PARAMS = dict(curated_uri="", pool_uri="", eval_uri="", demo_dir="", preset="smoke", model_size="",
              reference_steps=2, steps=2, batch_size=0, filter_ratio=0.0, n_chunks=0, seed=0, overrides=TINY,
              check_data=False)  # fmt: skip


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """prepare -> reference -> score (2 parts) -> merge -> JEST, uniform, uniform@flops -> evaluate -> report."""
    la = Launcher(tmp_path_factory.mktemp("kfp"))
    out = {"launcher": la}
    config, demo = la.output(dsl.Artifact, "config"), la.output(dsl.Dataset, "demo")
    out["prepare"] = la.run(prepare, **PARAMS, config=config, demo=demo)
    out["config"], out["demo"] = config, demo
    cfg = la.input(config)
    ref, ref_metrics = la.output(dsl.Model, "reference"), la.output(dsl.Metrics, "metrics")
    la.run(train_reference, config=cfg, curated_uri=out["prepare"][0], reference=ref, metrics=ref_metrics)  # fmt: skip
    out["reference"], out["reference_metrics"] = ref, ref_metrics
    parts = []
    for p in (0, 1):
        part = la.output(dsl.Dataset, "scores")
        la.run(score, config=la.input(config), reference=la.input(ref), part=p, parts=[0, 1], scores=part)  # fmt: skip
        parts.append(part)
    out["parts"] = parts
    merged = la.output(dsl.Dataset, "scores")
    la.run(merge_scores, parts=[la.input(p) for p in parts], pool_uri=out["prepare"][1], scores=merged)
    out["scores"] = merged
    runs = {}
    for name, method, match in (("jest", "jest", ""), ("uniform", "uniform", ""), ("uniform@flops", "uniform", "jest")):
        model, metrics, results = la.output(dsl.Model, "model"), la.output(dsl.Metrics, "metrics"), None
        la.run(train_learner, config=la.input(config), method=method, match_flops_of=match, pool_uri=out["prepare"][1],
               eval_uri=out["prepare"][2], scores=la.input(merged), reference=la.input(ref), model=model,
               metrics=metrics)  # fmt: skip
        results, ev_metrics = la.output(dsl.Artifact, "results"), la.output(dsl.Metrics, "metrics")
        la.run(evaluate, config=la.input(config), model=la.input(model), eval_uri=out["prepare"][2],
               metrics=ev_metrics, results=results)  # fmt: skip
        runs[name] = (model, metrics, results, ev_metrics)
    out["runs"] = runs
    md, html, summary = la.output(dsl.Markdown, "report"), la.output(dsl.HTML, "report_html"), la.output()
    la.run(report, method="jest", jest_model=la.input(runs["jest"][0]), jest_eval=la.input(runs["jest"][2]),
           uniform_model=la.input(runs["uniform"][0]), uniform_eval=la.input(runs["uniform"][2]),
           uniform_flops_model=la.input(runs["uniform@flops"][0]),
           uniform_flops_eval=la.input(runs["uniform@flops"][2]), config=la.input(config), scores=la.input(merged),
           pool_uri=out["prepare"][1], report=md, report_html=html, summary=summary)  # fmt: skip
    out["report"] = (md, html, summary)
    return out


def test_prepare_checks_the_demo_where_it_wrote_it_and_publishes_its_uris(steps):
    """The demo data goes to the `demo` artifact's local path; the URIs later steps read are under its
    URI, where the launcher uploads it after the step (Was: the data check read the URIs first and
    found nothing there: "data check failed: no .tar shards in gs://...", issue 25)."""
    demo = steps["demo"]
    assert demo.path != demo.uri
    assert steps["prepare"] == tuple(f"{demo.uri}/{s}" for s in ("curated", "pool", "eval"))
    assert steps["config"].metadata["pool"] == f"{demo.uri}/pool"
    assert len(list(Path(demo.uri, "pool").glob("*.tar"))) == 4  # uploaded: 160 samples in shards of 40


def test_train_reference_writes_a_model_and_logs_its_metrics(steps):
    assert {"model.pt", "tokenizer.json", "train.json", "config.yaml"} <= {
        p.name for p in Path(steps["reference"].uri).iterdir()
    }
    assert steps["reference_metrics"].metadata["steps"] == 2.0


def test_score_parts_split_the_pool_and_merge_into_one_cache(steps):
    p0, p1 = steps["parts"]
    assert (p0.metadata["part"], p1.metadata["part"], p0.metadata["parts"]) == (0, 1, 2)
    assert p0.metadata["n"] + p1.metadata["n"] == steps["scores"].metadata["n"] == 160
    index = json.loads(Path(steps["scores"].uri, "index.json").read_text())
    assert index["n"] == 160 and index["parts"] == 2 and len(index["shards"]) == 4


def test_learners_train_and_evaluate(steps):
    runs = steps["runs"]
    steps = {name: m.metadata["steps"] for name, (m, *_) in runs.items()}
    assert steps["jest"] == steps["uniform"] == 2 and steps["uniform@flops"] > 2  # JEST's total compute buys more
    assert runs["uniform@flops"][0].metadata["label"] == "uniform@flops"
    for name, (_, _, results, ev_metrics) in runs.items():
        r = json.loads(Path(results.uri).read_text())
        assert r["n"] == 40 and 0 <= r["retrieval_r1"] <= 1, name
        assert ev_metrics.metadata["retrieval_r1"] == r["retrieval_r1"], name
    assert runs["jest"][1].metadata["flops_total"] > runs["uniform"][1].metadata["flops_total"]


def test_report_writes_markdown_html_and_the_curation_table(steps):
    md, html, summary = steps["report"]
    assert "uniform@flops" in Path(md.uri).read_text()
    assert Path(html.uri).read_text().startswith("<!doctype html>")
    assert {"results.json", "report.md", "report.html", "curation.parquet"} <= {
        p.name for p in Path(summary.uri).iterdir()
    }
    assert summary.metadata["runs"] == ["jest", "uniform", "uniform@flops"]


def test_a_retried_step_resumes_from_its_durable_checkpoint(steps, capsys):
    """A retry is a new pod: a new local output folder, the same output URI (the driver ran once; the
    retryStrategy sits on the executor template: backend/src/v2/compiler/argocompiler/container.go).
    Preempted (SIGTERM) after a checkpoint, the step's second attempt resumes there, not at step 0,
    because checkpoints live beside the output URI (kfp_steps.beside), not in the lost local folder."""
    import os
    import signal
    import threading
    import time

    from jestflow.platform.kfp_steps import beside

    la = steps["launcher"]
    cfg_overrides = [*TINY, "reference.steps=60", "reference.checkpoint_every=5"]
    config = la.output(dsl.Artifact, "config")
    la.run(prepare, **{**PARAMS, "overrides": cfg_overrides}, config=config, demo=la.output(dsl.Dataset, "demo"))
    first, metrics = la.output(dsl.Model, "reference"), la.output(dsl.Metrics, "metrics")
    ckpt = Path(beside(first, "checkpoint"), "checkpoint.pt")

    def preempt():  # what Kubernetes does to a pod: SIGTERM, once a checkpoint exists
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    late = signal.signal(signal.SIGTERM, lambda *a: None)  # a signal after training ended must not end pytest
    try:
        with pytest.raises(SystemExit, match="SIGTERM received; checkpoint written at step"):
            train_reference.python_func(config=la.input(config), curated_uri=steps["prepare"][0], reference=first,
                                        metrics=metrics)  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, late)
    assert not Path(first.uri).exists()  # the failed attempt uploaded nothing
    retry = dsl.Model(name="reference", uri=first.uri, metadata={})
    retry.set_path(str(Path(first.path).parent / "retry-pod" / "reference"))  # a fresh pod's local folder
    capsys.readouterr()
    la.run(train_reference, config=la.input(config), curated_uri=steps["prepare"][0], reference=retry,
           metrics=la.output(dsl.Metrics, "metrics"))  # fmt: skip
    said = capsys.readouterr().out
    assert "reference: resuming from step " in said and " of 60 (" in said
    assert json.loads(Path(first.uri, "train.json").read_text())["steps"] == 60


def test_score_files_travel_by_reference_not_inside_artifacts(steps):
    """KFP's launcher downloads a step's input artifacts whole (launcher_v2.go, downloadArtifacts): the
    merge, the three learners and the report would each copy the whole cache (31 TB at paper scale).
    Score files live beside each scoring part (kfp_steps.beside); the artifacts hold an index naming
    them, so what is downloaded is a few kilobytes, and a learner that reads no reference reads none."""
    from jestflow.platform.kfp_steps import beside

    for part in steps["parts"]:
        assert sorted(p.name for p in Path(part.uri).iterdir()) == ["index.json", "score-config.yaml", "tokenizer.json"]
        assert list(Path(beside(part, "shards")).glob("*.npz"))
    merged = Path(steps["scores"].uri)
    assert sorted(p.name for p in merged.iterdir()) == ["index.json", "tokenizer.json"]
    files = [e["file"] for e in json.loads((merged / "index.json").read_text())["shards"]]
    assert all(Path(f).is_file() and not Path(f).is_relative_to(merged) for f in files)
    summaries = {n: json.loads(Path(m.uri, "train.json").read_text()) for n, (m, *_) in steps["runs"].items()}
    assert 0 < summaries["jest"]["score_cache_read"]["files"] <= summaries["jest"]["score_cache_read"]["of"]
    assert "score_cache_read" not in summaries["uniform"] and "score_cache_read" not in summaries["uniform@flops"]


def test_a_pretrained_reference_is_fetched_not_trained(tmp_path):
    """reference_model: the reference step fetches the pretrained SigLIP into its artifact (no training,
    no cost charged), scoring reads it from there, and hf-siglip learners train with its tokenizer; a vit
    configuration is refused before anything is fetched."""
    pytest.importorskip("transformers")
    from hf import make_pretrained_siglip

    make_pretrained_siglip(tmp_path / "pre")
    la = Launcher(tmp_path / "kfp")
    config, demo = la.output(dsl.Artifact, "config"), la.output(dsl.Dataset, "demo")
    params = {**PARAMS, "overrides": [*TINY, "model.arch=hf-siglip"]}
    curated, pool, _ = la.run(prepare, **params, config=config, demo=demo)
    ref, metrics = la.output(dsl.Model, "reference"), la.output(dsl.Metrics, "metrics")
    la.run(train_reference, config=la.input(config), curated_uri=curated, reference=ref, metrics=metrics,
           reference_model=str(tmp_path / "pre"))  # fmt: skip
    meta = json.loads(Path(ref.uri, "jestflow.json").read_text())
    assert meta["pretrained"] == str(tmp_path / "pre") and metrics.metadata["pretrained"] == 1.0
    assert not Path(ref.uri, "train.json").exists()  # nothing was trained
    scores = la.output(dsl.Dataset, "scores")
    la.run(score, config=la.input(config), reference=la.input(ref), part=0, parts=[0], scores=scores)
    index = json.loads(Path(scores.uri, "index.json").read_text())
    assert index["reference_pretrained"] is True and index["reference_flops"] == 0.0 and index["n"] == 160
    model, lm = la.output(dsl.Model, "model"), la.output(dsl.Metrics, "metrics")
    la.run(train_learner, config=la.input(config), method="uniform", match_flops_of="", pool_uri=pool, eval_uri="",
           scores=la.input(scores), reference=la.input(ref), model=model, metrics=lm)  # fmt: skip
    assert json.loads(Path(model.uri, "jestflow.json").read_text())["arch"] == "hf-siglip"
    vit_config = la.output(dsl.Artifact, "config")
    la.run(prepare, **PARAMS, config=vit_config, demo=la.output(dsl.Dataset, "demo"))
    with pytest.raises(ValueError, match="needs --set model.arch=hf-siglip"):
        la.run(train_reference, config=la.input(vit_config), curated_uri=curated, reference=la.output(dsl.Model, "r"),
               metrics=la.output(dsl.Metrics, "m"), reference_model=str(tmp_path / "pre"))  # fmt: skip
