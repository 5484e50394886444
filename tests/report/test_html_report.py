"""Issue 17: report.html in a real browser (Debian's headless Chromium), and the curation export."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from cli import smoke_args
from jestflow.cli import main
from jestflow.reporting.html_report import SECTIONS, headline


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: `make test` installs Debian's chromium package")
        pytest.skip("chromium not installed (make test installs it)")
    return path


def _browser(args, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]  # fmt: skip
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=180)


def test_report_html_renders_in_chromium_with_every_image_and_section(local_pipeline, tmp_path):
    out, log = local_pipeline
    page = out / "report.html"
    assert page.exists() and f"report: {out}/report.html" in log
    size = page.stat().st_size
    assert size < 2_000_000, size  # small enough for the KFP UI's visualization tab
    assert "http://" not in page.read_text().split("<script>")[0] and "https://" not in page.read_text()
    r = _browser(["--dump-dom", page.as_uri()], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    check = json.loads(re.search(r'data-check="([^"]*)"', r.stdout)[1].replace("&quot;", '"'))
    assert check["broken"] == [], check  # every image decoded in the browser
    assert check["sections"] == list(SECTIONS) and check["images"] >= 30, check
    shot = out / "report.png"
    r = _browser([f"--screenshot={shot}", "--window-size=1100,2400", page.as_uri()], tmp_path)
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]
    text = page.read_text()
    assert "At equal iterations" in text and "At equal total compute" in text  # the headline
    assert 'alt="per-chunk diagnostics"' in text
    for gallery in ("chosen most often", "highest learnability, never chosen", "random sample"):
        assert gallery in text


def _sections(page) -> dict:
    text = page.read_text()
    return {m[1]: m[2] for m in re.finditer(r"<section id=(\w+)>(.*?)</section>", text, re.S)}


def test_re_rendering_a_finished_run_gives_the_same_page(local_pipeline, tmp_path):
    """Issue 27 (3). Was: `jestflow report RUN` on a finished run rewrote report.html without provenance
    ({}), noise mix and per-chunk sections, and called a JEST run "no run with online selection". The
    first render keeps what it drew beyond results.json (report-inputs.json); the re-render reads it."""
    out, _ = local_pipeline
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    first, again = _sections(out / "report.html"), _sections(copy / "report.html")
    assert list(first) == list(again) == list(SECTIONS)
    for name in SECTIONS:
        assert again[name] == first[name], name
    assert "no run with online selection" not in again["selection"]
    assert "&quot;versions&quot;" in again["provenance"]  # the provenance is there (HTML-escaped JSON)


def test_a_broken_page_is_caught(tmp_path):
    """The browser check is not vacuous: a missing image and a missing section are reported."""
    page = tmp_path / "bad.html"
    from jestflow.reporting.html_report import CHECK

    page.write_text(f'<html><body><section id=headline></section><img alt=x src="nope.png">{CHECK}</body></html>')
    r = _browser(["--dump-dom", page.as_uri()], tmp_path)
    check = json.loads(re.search(r'data-check="([^"]*)"', r.stdout)[1].replace("&quot;", '"'))
    assert check["broken"] == ["x"] and check["sections"] == ["headline"]


def test_export_round_trips_on_the_smoke_data(smoke_scored, tmp_path):
    from jestflow.reporting.curation_table import curation_table, read_parquet

    pool, scores, learner = smoke_scored / "data" / "pool", smoke_scored / "scores", tmp_path / "learner"
    sets = ("learner.steps=3", "learner.eval_every=0")
    assert main(smoke_args("train", *sets, method="jest", data=pool, scores=scores, out=learner)) == 0
    chunks = json.loads((learner / "train.json").read_text())["selection_chunks"]
    from jestflow.config import load_config

    per_chunk = chunks["mean_learnability_by_chunk"]
    assert len(per_chunk) == load_config("smoke").select.n_chunks  # Algorithm 1's chunks, in draw order
    assert np.mean(per_chunk) > chunks["superbatch_mean_learnability"]  # the chosen beat what was offered
    args = smoke_args("export", model=learner, scores=scores, pool=pool, out=tmp_path / "x", top=0.1)
    assert main(args) == 0
    got = read_parquet(str(tmp_path / "x" / "curation.parquet"))
    want = curation_table(str(learner), str(scores), str(pool), progress=False)
    assert list(got["uid"]) == list(want["uid"]) and len(got["uid"]) == 1600  # every pool example
    for col in ("reference_loss", "learner_loss", "learnability", "chosen"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-4, atol=1e-3)
    assert got["chosen"].sum() == 3 * 32  # the uid log: 3 steps of 32 chosen examples
    np.testing.assert_allclose(got["learnability"], got["learner_loss"] - got["reference_loss"], atol=1e-4)
    top = list((tmp_path / "x" / "top").glob("*.tar"))
    assert top and main(["data", "check", str(tmp_path / "x" / "top"), "--preset", "smoke"]) == 0


def test_the_headline_does_not_claim_a_miss_when_the_baseline_is_at_chance():
    """A run whose uniform stayed at chance has no payoff: the page said JEST "did not reach uniform's final
    score" although JEST was 14x above it (seen on `jestflow run --preset smoke --reference-model`)."""
    rows = [
        {"run": "jest", "retrieval_r1": 0.070, "iterations": 60},
        {"run": "uniform", "retrieval_r1": 0.005, "iterations": 60},
        {"run": "uniform@flops", "retrieval_r1": 0.010, "iterations": 177},
    ]
    text = " ".join(headline({"rows": rows, "baseline": "uniform", "payoff": {}, "at_chance": ["retrieval_r1"]}))
    assert "did not reach" not in text and "under 2x chance in retrieval_r1" in text
    text = " ".join(headline({"rows": rows, "baseline": "uniform", "payoff": {}, "at_chance": []}))
    assert "jest did not reach uniform's final score" in text
