"""The curation benchmark end to end at toy size: every method, aggregation, report, plots."""

import json

from jestflow.bench_curation import REPORTED, bench_curation
from jestflow.bench_report import targets


def test_bench_curation_toy(tmp_path):
    out = tmp_path / "bench"
    overrides = ["reference.steps=30", "learner.steps=12", "learner.eval_every=4", "demo.n_pool=800",
                 "demo.n_curated=200", "demo.n_eval=100"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bench-findings.md").write_text("Toy findings paragraph.")
    res = bench_curation("smoke", overrides, str(out), seeds=1, workers=2, ablations=False,
                         benchmarks=str(tmp_path / "BENCHMARKS.md"), command="test")
    assert set(res["per_method"]) == set(REPORTED)
    flops = res["per_method"]["uniform@flops"]
    assert flops["total_flops"]["mean"] >= 0.98 * res["per_method"]["jest"]["total_flops"]["mean"]
    assert res["per_method"]["uniform"]["iteration_speedup_retrieval_r1"]["mean"] == 1.0
    assert res["per_method"]["oracle"]["clean_fraction"]["mean"] == 1.0
    assert res["per_method"]["jest"]["clean_fraction"]["mean"] > res["per_method"]["uniform"]["clean_fraction"]["mean"]
    assert len(res["chunk_learnability"]["chosen"]) == 4  # smoke: 4 chunks
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for name in ("curve_iterations.png", "curve_flops.png", "noise_mix.png", "chunk_learnability.png"):
        assert f"(docs/bench/{name})" in md and (tmp_path / "docs" / "bench" / name).exists()
    assert "Toy findings paragraph." in md and "| target | met | measured |" in md
    assert json.loads((out / "results.json").read_text())["seeds"] == 1
    assert [t[0] for t in targets(res)][0].startswith("JEST reaches uniform")
    # resumable: a second call reuses every finished run
    mtime = (out / "runs" / "jest-s0" / "train.json").stat().st_mtime_ns
    bench_curation("smoke", overrides, str(out), seeds=1, workers=1, ablations=False)
    assert (out / "runs" / "jest-s0" / "train.json").stat().st_mtime_ns == mtime
