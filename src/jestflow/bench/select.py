"""`jestflow bench select`: dense vs chunked joint selection, time and peak memory.

Each case runs in a fresh subprocess so peak memory is that case's alone: on CPU the growth of peak
RSS during the selection (Linux `VmHWM`, reset through /proc/self/clear_refs), on CUDA torch's peak
allocation above what was allocated before. Times are the best of `repeats` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from .. import storage


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _embeds(n: int, d: int, seed: int, device: str):
    from ..core.selection import Embeds

    g = torch.Generator(device="cpu").manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 0.8 * torch.randn(n, d, generator=g), dim=1)
    return Embeds(img.to(device), txt.to(device), torch.tensor(2.3, device=device), torch.tensor(-10.0, device=device))


def run_case(impl: str, n: int, d: int, ratio: float, chunks: int, device: str, repeats: int) -> dict:
    """One measurement, in this process."""
    from ..core.selection import DenseScorer, SigmoidScorer, dense_score_matrix, sample_chunks, score_terms

    b = int(round(n * (1 - ratio)))
    b -= b % chunks
    terms = score_terms("learnability", _embeds(n, d, 0, device), _embeds(n, d, 1, device))

    def once():
        gen = torch.Generator(device=device).manual_seed(0)
        scorer = DenseScorer(dense_score_matrix(terms)) if impl == "dense" else SigmoidScorer(terms)
        idx = sample_chunks(scorer, b, chunks, gen)
        if device == "cuda":
            torch.cuda.synchronize()
        return idx

    once() if device == "cuda" else None  # CUDA: warm up kernels before measuring
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
        base = _rss_kib("VmRSS") * 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _rss_kib("VmHWM") * 1024) - base
    return {
        "impl": impl,
        "n": n,
        "b": b,
        "d": d,
        "chunks": chunks,
        "device": device,
        "seconds": min(times),
        "peak_bytes": max(0, peak),
    }


def bench_select(sizes, dim, ratio, chunks, device, repeats, out=None) -> list[dict]:
    devices = (
        ["cpu", "cuda"] if device == "auto" and torch.cuda.is_available() else ["cpu"] if device == "auto" else [device]
    )
    rows = []
    for dev in devices:
        for n in sizes:
            for impl in ("dense", "chunked"):
                args = json.dumps([impl, n, dim, ratio, chunks, dev, repeats])
                res = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import json,sys; from jestflow.bench.select import run_case;"
                        "print(json.dumps(run_case(*json.loads(sys.argv[1]))))",
                        args,
                    ],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                )
                if res.returncode != 0:
                    tail = res.stderr.strip().splitlines()[-1:] or ["?"]
                    row = {"impl": impl, "n": n, "device": dev, "error": tail[0]}
                else:
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(_fmt_row(row), flush=True)
    table = markdown_table(rows)
    print("\n" + table)
    if out:
        storage.write_bytes(storage.join(out, "select.md"), table.encode())
        storage.write_json(storage.join(out, "select.json"), rows)
    return rows


def _fmt_row(r: dict) -> str:
    if "error" in r:
        return f"{r['device']:>4} {r['impl']:>7} N={r['n']:>7}: failed ({r['error']})"
    return (
        f"{r['device']:>4} {r['impl']:>7} N={r['n']:>7} b={r['b']:>6}: {r['seconds'] * 1e3:9.1f} ms, "
        f"peak {r['peak_bytes'] / 2**20:9.1f} MiB"
    )


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| device | N | b | d | dense ms | chunked ms | speed-up | dense peak MiB | chunked peak MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["device"], r["n"], r["impl"]): r for r in rows}
    for dev, n in dict.fromkeys((r["device"], r["n"]) for r in rows):
        de, ch = by.get((dev, n, "dense"), {}), by.get((dev, n, "chunked"), {})
        if "seconds" not in de or "seconds" not in ch:
            lines.append(f"| {dev} | {n} | | | {de.get('error', '')} | {ch.get('error', '')} | | | | |")
            continue
        mem_ratio = ch["peak_bytes"] / de["peak_bytes"] if de["peak_bytes"] else float("nan")
        lines.append(
            f"| {dev} | {n} | {ch['b']} | {ch['d']} | {de['seconds'] * 1e3:.1f} | {ch['seconds'] * 1e3:.1f} | "
            f"{de['seconds'] / ch['seconds']:.2f}x | {de['peak_bytes'] / 2**20:.1f} | "
            f"{ch['peak_bytes'] / 2**20:.1f} | {mem_ratio:.3f} |"
        )
    return "\n".join(lines) + "\n"
