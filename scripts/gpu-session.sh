#!/usr/bin/env bash
# One GPU session's measurements, in priority order, each part under its own time limit so that a slow
# part cannot take the others with it (a lent GPU comes for minutes: docs in BENCHMARKS.md's GPU section).
#   1. joint selection at the paper's scale (163,840 -> 32,768): time, memory, the autotuned tile shape
#      and the fused kernel's agreement with float32 on its first (autotuning) call;
#   2. selection precision on trained embeddings at b = 1,024 / 8,192 / 32,768: eight demo pools of
#      20,480 (seeds 1-8) embedded by a trained learner and reference (MODELS/learner, MODELS/reference,
#      e.g. the curation bench's jest-s0 and reference);
#   3. B/16 training vs a plain PyTorch loop (MFU, images/s), uniform / JEST / Flexi-JEST iterations with and
#      without activation reuse, and the real loader (decode processes vs threads) feeding the JEST step.
# Usage: scripts/gpu-session.sh DEST MODELS   (run from the repository root; python3 must hold torch).
# A CPU rehearsal at toy sizes: SELECT_SIZES=1280 POOL_N=640 PRECISION_SIZES=64,256 MODEL=tiny \
#   EXTRA="--device cpu --no-compile" scripts/gpu-session.sh /tmp/g MODELS
set -uo pipefail
dest=${1:?usage: $0 DEST MODELS}
models=${2:?usage: $0 DEST MODELS}
# Everything is written under $out and packed into DEST/session.tgz after each part (a device run returns
# only a few files, and what a killed run had written must still come back).
out=${WORK:-/tmp/jestflow-gpu-session}
rm -rf "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
jf() { "$py" -m jestflow "$@"; }
mkdir -p "$out"
t0=$(date +%s)
stamp() {
  echo "[gpu-session] $1 at $(($(date +%s) - t0)) s" | tee -a "$out/parts.log"
  mkdir -p "$dest" && tar czf "$dest/session.tgz" -C "$out" .
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,temperature.gpu --format=csv \
  >"$out/nvidia-smi.csv" 2>&1
"$py" -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)" \
  | tee "$out/versions.txt"

stamp "select: start"
timeout "${SELECT_LIMIT:-110}" "$py" -m jestflow bench gpu --sections select --select-sizes "${SELECT_SIZES:-163840}" \
  ${EXTRA:-} --out "$out/select" >"$out/select.log" 2>&1
stamp "select: rc $?"

stamp "precision: writing pools"
for k in 1 2 3 4 5 6 7 8; do
  jf data demo --out "/tmp/jestflow-pools/p$k" --quiet --set "demo.n_pool=${POOL_N:-20480}" --set demo.n_curated=10 \
    --set demo.n_eval=10 --set "demo.seed=$k" >/dev/null 2>&1 &
done
wait
pools=$(ls -d /tmp/jestflow-pools/p*/pool | paste -sd,)
stamp "precision: start"
timeout "${PRECISION_LIMIT:-150}" "$py" -m jestflow bench precision --learner "$models/learner" \
  --reference "$models/reference" --pools "$pools" --sizes "${PRECISION_SIZES:-1024,8192,32768}" --draws 4 \
  $( [[ "${EXTRA:-}" == *cpu* ]] && echo "--device cpu --batch 64 --decode-workers 1" ) --out "$out/precision" \
  >"$out/precision.log" 2>&1
stamp "precision: rc $?"

stamp "b16: start"
timeout "${B16_LIMIT:-320}" "$py" -m jestflow bench gpu --sizes "${MODEL:-b16}" --sections train,iteration,data --steps 8 ${EXTRA:-} \
  --budget "$(( ${B16_LIMIT:-320} - 30 ))" --out "$out/b16" >"$out/b16.log" 2>&1
stamp "b16: rc $?"
for f in select precision b16; do echo "== $f"; tail -n 40 "$out/$f.log"; done
