"""`jestflow bench scale` (`make bench-scale`): the cluster data path rehearsed at several pool sizes.

A pool of small synthetic pairs (8x8 images, two-word captions) is written straight to a bucket of
`gcp-storage-emulator` (started on 127.0.0.1, stopped by PID), then the pipeline's steps run on it as
they do on a cluster, each in its own process: scoring in parallel parts that write their score files
beside the part (the pipeline's `kfp_steps.beside`), the merge (an index that names the parts' files,
nothing copied), and a JEST learner that reads the pool and the cache by URI, shard by shard. Per step
and size: peak resident memory, bytes read through jestflow's storage layer, samples per second and wall
time. What the rehearsal must show: memory that does not grow with the pool (largest <= 1.5x the
smallest, per step) and a learner that reads only the score files of the shards it trains on.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

from .. import storage

SIZES = (100_000, 300_000, 1_000_000)
SHARDS = (64, 128, 256)
BUCKET = "jestflow-scale"
COLORS = ("red", "green", "blue", "yellow", "white", "black", "purple", "orange")
RGB = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 240), "yellow": (240, 220, 40),
       "white": (245, 245, 245), "black": (15, 15, 15), "purple": (160, 60, 220), "orange": (250, 140, 20)}  # fmt: skip
SETS = ["model.size=tiny", "model.image_size=8", "model.patch_size=2", "model.context_length=8", "eval.batch_size=512"]
MEMORY_GROWTH_LIMIT = 1.5


# ---- the emulator ---------------------------------------------------------------------------------


def console_script(name: str) -> str | None:
    """A console script installed beside the running interpreter (a venv's bin/, which `make test` does
    not put on PATH), else one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.access(here, os.X_OK) else shutil.which(name)


class Emulator:
    """gcp-storage-emulator on 127.0.0.1 with a default bucket, its files (or only its log, `in_memory`)
    under `workdir`; stopped by PID. As a context manager it also points STORAGE_EMULATOR_HOST at itself
    for this process and the steps it starts. The tests' fault-injecting proxy starts one with `start`."""

    def __init__(self, workdir: str, bucket: str = BUCKET, in_memory: bool = False):
        self.workdir, self.bucket, self.in_memory = workdir, bucket, in_memory
        self.proc, self.host, self.port, self._old = None, "", 0, None

    def start(self) -> Emulator:
        exe = console_script("gcp-storage-emulator")
        if exe is None:
            raise ValueError("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        os.makedirs(self.workdir, exist_ok=True)
        log = open(os.path.join(self.workdir, "gcs-emulator.log"), "ab")
        cmd = [exe, "start", "--host", "127.0.0.1", "--port", str(self.port), "--default-bucket", self.bucket, "-q"]
        self.proc = subprocess.Popen([*cmd, *(["--in-memory"] if self.in_memory else [])], cwd=self.workdir,
                                     stdout=log, stderr=log, start_new_session=True)  # fmt: skip
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise ValueError(f"gcp-storage-emulator did not start (log: {self.workdir})") from None
                time.sleep(0.2)
        self.host = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> Emulator:
        self.start()
        self._old = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.host
        return self

    def __exit__(self, *exc) -> None:
        if self._old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = self._old
        self.stop()


# ---- the steps, each run in its own process (`python -m jestflow.bench.scale STEP ARGS_JSON`) --------


def synthetic_split(uri: str, n: int, shards: int, seed: int) -> None:
    """`n` pairs in `shards` tar shards at `uri`: an 8x8 image of one colour on another, captioned so."""
    import numpy as np

    from ..data.shards import ShardWriter

    rng = np.random.default_rng(seed)
    per = -(-n // shards)
    with ShardWriter(uri, "pool", per) as w:
        for i in range(n):
            fg, bg = rng.choice(len(COLORS), 2, replace=False)
            img = np.empty((8, 8, 3), np.uint8)
            img[:] = RGB[COLORS[bg]]
            img[2:6, 2:6] = RGB[COLORS[fg]]
            w.write(f"s{seed}-{i:08d}", img, f"{COLORS[fg]} on {COLORS[bg]}")


def _config():
    from .. import config as C

    return C.load_config("smoke", None, SETS)


def step(name: str, args: dict) -> dict:
    """Run one step in this process; what it measured."""
    from .. import stages
    from ..training.score_cache import part_shards

    t0, before = time.time(), storage.bytes_read()
    cfg = _config()
    out: dict = {"step": name}
    if name == "write":
        synthetic_split(args["uri"], args["n"], args["shards"], args["seed"])
        out["samples"] = args["n"]
    elif name == "reference":
        synthetic_split(args["data"], args["n"], 4, seed=99)
        s = stages.train_reference(cfg, args["data"], args["out"], progress=False)
        out["samples"] = s["examples_seen"]
    elif name == "score":
        from ..data.shards import list_shards

        shards = part_shards(list_shards(args["pool"]), args["part"], args["parts"])
        idx = stages.score(cfg, args["reference"], args["pool"], args["out"], progress=False, shards=shards,
                           data_uri=args["out"] + ".shards")  # fmt: skip
        out["samples"] = idx["n"]
    elif name == "merge":
        from ..training.score_cache import merge_caches

        idx = merge_caches(args["parts"], args["pool"], args["out"])
        out["samples"] = idx["n"]
    elif name == "learner":
        sets = [f"learner.steps={args['steps']}", "learner.batch_size=64", "select.n_chunks=4", "learner.eval_every=0",
                "learner.checkpoint_every=1000", "learner.shuffle_buffer=2000"]  # fmt: skip
        c = stages.C.override(cfg.with_method("jest"), sets)
        s = stages.train_learner(c, args["pool"], args["out"], args["scores"], progress=False)
        read = s["score_cache_read"]
        out.update(samples=s["examples_seen"], cache_files_read=read["files"], cache_files=read["of"],
                   cache_bytes_read=read["bytes"])  # fmt: skip
    else:
        raise ValueError(f"unknown scale step {name!r}")
    out["seconds"] = time.time() - t0
    out["bytes_read"] = storage.bytes_read() - before
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return out


def _spawn(name: str, args: dict, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "jestflow.bench.scale", name, json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _collect(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"scale step failed ({p.args[3]}): {stderr.strip().splitlines()[-1:] or stderr}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def bench_scale(out: str, sizes=SIZES, shards=SHARDS, parts: int = 2, steps: int = 100) -> dict:
    """Every size, every step; writes scale.json and scale.md under `out`."""
    os.makedirs(out, exist_ok=True)
    rows = []
    with Emulator(os.path.join(out, "emulator")):
        bucket = f"gs://{BUCKET}"
        ref = os.path.join(out, "reference")
        if not os.path.exists(os.path.join(ref, "train.json")):
            _collect([_spawn("reference", {"data": os.path.join(out, "curated"), "out": ref, "n": 2000}, 2)])
        for n, k in zip(sizes, shards):
            pool = f"{bucket}/pool-{n}"
            print(f"[scale] {n} samples in {k} shards", flush=True)
            measured = {"write": _collect([_spawn("write", {"uri": pool, "n": n, "shards": k, "seed": 1}, 2)])}
            part_uris = [f"{bucket}/scores-{n}/part-{p}" for p in range(parts)]
            jobs = [
                {"pool": pool, "reference": ref, "out": u, "part": p, "parts": parts} for p, u in enumerate(part_uris)
            ]
            score = [_spawn("score", job, max(1, 2 // parts)) for job in jobs]
            measured["score"] = _collect(score)
            merged = f"{bucket}/scores-{n}/merged"
            measured["merge"] = _collect([_spawn("merge", {"parts": part_uris, "pool": pool, "out": merged}, 2)])
            learner = {"pool": pool, "scores": merged, "out": os.path.join(out, f"learner-{n}"), "steps": steps}
            shutil.rmtree(learner["out"], ignore_errors=True)
            measured["learner"] = _collect([_spawn("learner", learner, 2)])
            rows.append({"samples": n, "shards": k, "steps": measured})
            print(f"[scale] {n}: " + json.dumps(measured), flush=True)
    results = {"sizes": list(sizes), "shards": list(shards), "parts": parts, "learner_steps": steps, "rows": rows,
               "date": time.strftime("%Y-%m-%d"), "checks": checks(rows)}  # fmt: skip
    storage.write_json(os.path.join(out, "scale.json"), results)
    md = markdown(results)
    storage.write_bytes(os.path.join(out, "scale.md"), md.encode())
    print(md)
    return results


def checks(rows: list[dict]) -> dict:
    """Memory flat across sizes (per step, largest peak RSS over the smallest's), and the learner reading
    only some of the cache."""
    out = {}
    for name in ("write", "score", "merge", "learner"):
        peaks = [max(m["peak_rss_bytes"] for m in r["steps"][name]) for r in rows]
        out[f"{name}_memory_growth"] = max(peaks) / min(peaks)
    out["memory_flat"] = all(v <= MEMORY_GROWTH_LIMIT for k, v in out.items() if k.endswith("_memory_growth"))
    learners = [r["steps"]["learner"][0] for r in rows]
    out["learner_cache_share_read"] = [m["cache_files_read"] / m["cache_files"] for m in learners]
    out["learner_never_read_whole_cache"] = all(m["cache_files_read"] < m["cache_files"] for m in learners)
    return out


def markdown(results: dict) -> str:
    lines = [
        "## Scale rehearsal (`make bench-scale`)",
        "",
        f"Pools of small synthetic pairs on `gcp-storage-emulator` (127.0.0.1), date {results['date']}; each step in "
        f"its own process, as on a cluster: scoring in {results['parts']} parallel parts writing their score files "
        "beside the part, the merge (an index naming the parts' files), a JEST learner reading pool and cache by "
        f"URI for {results['learner_steps']} steps. Peak RSS is the step's process (the largest part for scoring); "
        "bytes read are those read through jestflow's storage layer.",
        "",
        "| pool | shards | step | peak RSS | bytes read | samples/s | wall s | learner: score files read |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        for name, ms in r["steps"].items():
            peak = max(m["peak_rss_bytes"] for m in ms)
            read = sum(m["bytes_read"] for m in ms)
            secs = max(m["seconds"] for m in ms)
            rate = sum(m["samples"] for m in ms) / secs if secs else 0
            files = f"{ms[0]['cache_files_read']} of {ms[0]['cache_files']}" if name == "learner" else ""
            lines.append(f"| {r['samples']:,} | {r['shards']} | {name} | {peak / 2**20:.0f} MiB | "
                         f"{read / 2**20:.1f} MiB | {rate:,.0f} | {secs:.0f} | {files} |")  # fmt: skip
    c = results["checks"]
    growth = ", ".join(f"{k.removesuffix('_memory_growth')} {v:.2f}×" for k, v in c.items() if k.endswith("_growth"))
    lines += [
        "",
        f"Memory, largest pool's peak over the smallest's, per step: {growth} "
        f"(limit {MEMORY_GROWTH_LIMIT}×: {'met' if c['memory_flat'] else '**not met**'}). The learner read "
        + ", ".join(f"{x:.0%}" for x in c["learner_cache_share_read"])
        + " of the score files ("
        + ("never the whole cache" if c["learner_never_read_whole_cache"] else "**the whole cache**")
        + ").",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(step(sys.argv[1], json.loads(sys.argv[2]))))
