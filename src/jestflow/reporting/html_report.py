"""report.html: one self-contained page per run (every image inline, no network), for people who want
to *look* at what was curated: a headline written from the numbers, the learning and payoff curves,
galleries of pool examples (chosen most often, highest and lowest learnability never chosen, a random
sample), learnability of chosen vs offered examples, the noise mix over training, and the run's
configuration and provenance. The KFP UI shows it as the report step's HTML artifact.

A small script at the end records, on the page's <body>, how many images loaded and which sections
exist (`data-check`), so a headless browser test can tell a broken page from a good one.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random

import numpy as np

from .. import storage
from ..core.flops import break_even_words
from .run_report import CHANCE_FACTOR

SECTIONS = ("headline", "curves", "galleries", "selection", "noise", "provenance")
GALLERY = 12  # thumbnails per gallery


def headline(results: dict) -> list[str]:
    """Two or three sentences from results.json: the method against uniform at equal iterations and at
    equal total compute, and whether the reference has paid for itself yet."""
    rows = {r["run"]: r for r in results["rows"]}
    base = results.get("baseline", "uniform")
    methods = [n for n in rows if n != base and not n.endswith("@flops")]
    out = []
    for m in methods:
        r, u = rows[m], rows.get(base)
        if u is None:
            continue
        key = "retrieval_r1"
        out.append(
            f"At equal iterations ({r.get('iterations', '?')} steps) {m} reached retrieval R@1 {r[key]:.3f}, "
            f"{base} {u[key]:.3f}."
        )
        flops_run = rows.get(f"{base}@flops")
        if flops_run is not None:
            better = "ahead of" if r[key] > flops_run[key] else "behind"
            out.append(
                f"At equal total compute (the reference's training and scoring included) {base} reached "
                f"{flops_run[key]:.3f}: {m} is {better} it by {abs(r[key] - flops_run[key]):.3f}."
            )
        p = (results.get("payoff") or {}).get(m)
        if p is None and key in results.get("at_chance", []):  # no target to reach: nothing to read
            out.append(f"{base} stayed under {CHANCE_FACTOR:g}x chance in {key}, so whether the reference has paid "
                       "for itself cannot be read (no speed-up is given).")  # fmt: skip
        elif p is None:
            out.append(f"{m} did not reach {base}'s final score, so its reference has not paid for itself.")
        elif p.get("break_even_runs"):
            paid = break_even_words(p["break_even_runs"])
            out.append(f"The reference {paid} (learner-only speed-up {p['learner_speedup']:.2f}x).")
        else:
            out.append(f"{m} needs no fewer learner FLOPs than {base}: the reference never pays for itself.")
    return out or ["No selected method to compare with the baseline."]


def _png_data(path_or_bytes) -> str:
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
    else:
        with storage.open_read(path_or_bytes) as f:
            data = f.read()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _thumb(image: np.ndarray, side: int = 72) -> str:
    from PIL import Image

    im = Image.fromarray(image)
    im = im.resize((side, side), Image.NEAREST if min(im.size) < side else Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return _png_data(buf.getvalue())


def _fig(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return _png_data(buf.getvalue())


def galleries(table: dict, seed: int = 0) -> dict[str, list[int]]:
    """Row indices of each gallery."""
    n = len(table["uid"])
    chosen, learn = table["chosen"], table["learnability"]
    never = np.flatnonzero(chosen == 0)
    out = {
        "chosen most often": [int(i) for i in np.argsort(-chosen, kind="stable")[:GALLERY] if chosen[i] > 0],
        "highest learnability, never chosen": [int(i) for i in never[np.argsort(-learn[never])][:GALLERY]],
        "lowest learnability, never chosen": [int(i) for i in never[np.argsort(learn[never])][:GALLERY]],
        "random sample": sorted(random.Random(seed).sample(range(n), min(GALLERY, n))),
    }
    return out


def _images_for(uids: set, pool_uri: str, shards: set) -> dict:
    from ..data.shards import ReadStats, iter_shard, list_shards

    found = {}
    for i, shard in enumerate(list_shards(pool_uri)):
        if i not in shards:
            continue
        for s in iter_shard(shard, ReadStats(max_bad_fraction=1.0)):
            if s.uid in uids:
                found[s.uid] = s.image
    return found


def _gallery_html(table: dict, pool_uri: str | None) -> str:
    if table is None or not len(table["uid"]):
        return "<p>No curation table (no selected method that reads the reference, or no pool).</p>"
    picks = galleries(table)
    rows = {i for idx in picks.values() for i in idx}
    images = (
        _images_for({table["uid"][i] for i in rows}, pool_uri, {int(table["shard_index"][i]) for i in rows})
        if pool_uri
        else {}
    )
    parts = []
    for title, idx in picks.items():
        cards = []
        for i in idx:
            uid = table["uid"][i]
            img = f'<img alt="{html.escape(uid)}" src="{_thumb(images[uid])}">' if uid in images else ""
            noise = table["noise"][i]
            cards.append(
                f"<figure>{img}<figcaption>{html.escape(str(table['caption'][i]))[:140]}<br><small>"
                f"learnability {table['learnability'][i]:+.2f} · reference {table['reference_loss'][i]:.2f} · "
                f"learner {table['learner_loss'][i]:.2f} · chosen {int(table['chosen'][i])}×"
                + (f" · noise <b>{html.escape(str(noise))}</b>" if noise else "")
                + "</small></figcaption></figure>"
            )
        parts.append(f"<h3>{html.escape(title)}</h3><div class=gallery>{''.join(cards) or '<p>none</p>'}</div>")
    return "".join(parts)


def _chunks_html(runs: dict | None) -> str:
    """Algorithm 1's per-chunk diagnostics: mean learnability (A_kk) of each chunk, in draw order."""
    rows = {n: r["summary"].get("selection_chunks") for n, r in (runs or {}).items()}
    rows = {n: c for n, c in rows.items() if c}
    if not rows:
        return "<p>Per-chunk diagnostics: no run with online selection (or re-rendered from disk).</p>"

    def draw(ax):
        for name, c in rows.items():
            y = c["mean_learnability_by_chunk"]
            ax.plot(range(1, len(y) + 1), y, marker="o", ms=3, label=f"{name}: chunk mean")
            ax.axhline(c["superbatch_mean_learnability"], ls="--", lw=1, label=f"{name}: super-batch mean")
        ax.set_xlabel("chunk (draw order)")
        ax.set_ylabel("mean learnability A_kk (averaged over steps)")
        ax.legend(fontsize=8)

    return (
        f'<img alt="per-chunk diagnostics" src="{_fig(draw)}"><p>Each chunk of Algorithm 1 is drawn given the '
        "chunks before it; later chunks take what the earlier ones left, so their mean learnability usually falls "
        "towards the super-batch's.</p>"
    )


def _selection_html(table: dict | None) -> str:
    if table is None or not len(table["uid"]):
        return "<p>No curation table.</p>"
    learn, chosen = table["learnability"], table["chosen"]

    def draw(ax):
        bins = np.histogram_bin_edges(learn, bins=40)
        ax.hist(learn, bins=bins, alpha=0.5, density=True, label="offered (the whole pool)")
        ax.hist(learn, bins=bins, weights=chosen, alpha=0.6, density=True, label="chosen (weighted by times chosen)")
        ax.set_xlabel("learnability = learner loss − reference loss (final learner)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)

    share = float((chosen > 0).mean())
    picked = np.average(learn, weights=np.maximum(chosen, 0) + 1e-12)
    return (
        f'<img alt="learnability histogram" src="{_fig(draw)}"><p>{share:.0%} of the pool was chosen at least '
        f"once; the mean learnability of chosen examples (weighted by times chosen) is {picked:+.2f}, of the "
        f"pool {learn.mean():+.2f}.</p>"
    )


def _noise_html(runs: dict) -> str:
    series = {}
    for name, r in runs.items():
        pts = [p for p in r["summary"].get("curve", []) if p.get("noise_window")]
        if pts:
            clean = [p["noise_window"].get("clean", 0) / max(1, sum(p["noise_window"].values())) for p in pts]
            series[name] = ([p["step"] for p in pts], clean)
    if not series:
        return "<p>The data records no noise types.</p>"

    def draw(ax):
        for name, (x, y) in series.items():
            ax.plot(x, y, marker="o", ms=3, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("clean fraction of trained examples")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)

    return f'<img alt="noise mix" src="{_fig(draw)}">'


CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.headline{font-size:1.1em;background:#f4f7fb;border-left:4px solid #3b6fb6;padding:.6em 1em}
.gallery{display:flex;flex-wrap:wrap;gap:8px}figure{width:160px;margin:0;font-size:11px}
figure img{width:72px;height:72px;image-rendering:pixelated;display:block}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
#curves img,#selection img,#noise img{max-width:100%}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px;max-height:30em}"""

CHECK = """<script>
window.addEventListener('load',function(){var im=[].slice.call(document.images);
var broken=im.filter(function(i){return !(i.complete&&i.naturalWidth>0)}).map(function(i){return i.alt});
var sec=[].slice.call(document.querySelectorAll('section[id]')).map(function(s){return s.id});
document.body.setAttribute('data-check',JSON.stringify({images:im.length,broken:broken,sections:sec}));});
</script>"""


INPUTS = "report-inputs.json"


def _page_inputs(runs: dict) -> list:
    """The part of each run's summary the page draws (noise over training, per-chunk diagnostics), as
    [name, inputs] pairs: the runs' order (the plots' legends) survives JSON's sorted keys."""
    return [
        [name, {"summary": {
            "curve": [{"step": p["step"], "noise_window": p["noise_window"]}
                      for p in r["summary"].get("curve", []) if p.get("noise_window")],
            "selection_chunks": r["summary"].get("selection_chunks") or {},
        }}]
        for name, r in runs.items()
    ]  # fmt: skip


def write_html(
    out_dir: str,
    results: dict,
    runs: dict | None = None,
    table: dict | None = None,
    pool_uri: str | None = None,
    config_text: str = "",
    provenance: dict | None = None,
) -> str:
    """Write `out_dir`/report.html; returns its path. `runs`: name -> {summary, final} (for the noise
    plot); `table`: curation.curation_table's columns; PNG plots are read from `out_dir`.

    A first render (with `runs`) also keeps what the page needs beyond results.json in `INPUTS`; a
    re-render without them (`jestflow report RUN`) reads it back, so the page comes out the same."""
    from .run_report import table as md_table

    saved_uri = storage.join(out_dir, INPUTS)
    if runs is None and not config_text and provenance is None and storage.exists(saved_uri):
        saved = storage.read_json(saved_uri)
        runs, config_text, provenance = dict(saved["runs"]), saved["config_text"], saved["provenance"]
        pool_uri = pool_uri or saved.get("pool")
    elif runs is not None:
        provenance = json.loads(json.dumps(provenance or {}, default=str))  # as the page shows it
        storage.write_json(saved_uri, {"runs": _page_inputs(runs), "config_text": config_text,
                                       "provenance": provenance, "pool": pool_uri})  # fmt: skip

    curves = "".join(
        f'<img alt="{name}" src="{_png_data(storage.join(out_dir, name))}">'
        for name in ("curve_iterations.png", "curve_flops.png", "payoff.png")
        if storage.exists(storage.join(out_dir, name))
    )
    rows_md = md_table(results["rows"]).splitlines()
    head, body = rows_md[0], [r for r in rows_md[2:] if r.strip()]

    def cells(line, tag):
        return "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in line.strip().strip("|").split("|"))

    trs = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body)
    table_html = f"<table><tr>{cells(head, 'th')}</tr>{trs}</table>"
    prov = json.dumps(provenance or {}, indent=1, default=str, sort_keys=True)  # as report-inputs.json keeps it
    noise = _noise_html(runs) if runs else "<p>Not shown: re-rendered from results.json, which keeps no curves.</p>"
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>jestflow run report</title>
<style>{CSS}</style></head><body>
<h1>jestflow run report</h1>
<section id=headline><p class=headline>{" ".join(html.escape(s) for s in headline(results))}</p>{table_html}</section>
<section id=curves><h2>Learning curves and payoff</h2>{curves}</section>
<section id=galleries><h2>What the selection chose</h2>
<p>Pool examples with their learnability (final learner's loss − reference's, on the same batches), both losses,
how often the learner's selection chose them, and the recorded noise type where the data has one.</p>
{_gallery_html(table, pool_uri)}</section>
<section id=selection><h2>Learnability of chosen vs offered examples</h2>{_selection_html(table)}
{_chunks_html(runs)}</section>
<section id=noise><h2>Noise mix over training</h2>{noise}</section>
<section id=provenance><h2>Configuration and provenance</h2><pre>{html.escape(prov)}</pre>
<pre>{html.escape(config_text)}</pre></section>
{CHECK}</body></html>"""
    uri = storage.join(out_dir, "report.html")
    storage.write_bytes(uri, page.encode())
    return uri
