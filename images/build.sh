#!/usr/bin/env bash
# Build one jestflow image from dist/ with the classic builder (or BuildKit), then remove what earlier
# builds left behind. Usage: images/build.sh cpu|cuda TAG BASE_IMAGE WHEEL
# - Refuses to start, in one line, when Docker's data root has less free disk than the flavour needs
#   (a build that dies half-way with "no space left on device" is slower to diagnose).
# - The classic builder keeps every step's intermediate image; each rebuild leaves the previous chain
#   dangling (~7 GB for the CPU image, ~30 GB for CUDA), which fills a CI machine's disk within a few
#   runs. After a build, dangling images carrying the Dockerfile's io.jestflow.build label are pruned;
#   nobody else's images are touched.
set -euo pipefail
flavour=$1 tag=$2 base=$3 wheel=$4
case $flavour in
  cpu) need_gb=6; parts=(images/Dockerfile "dist/$wheel" dist/wheels) ;;
  cuda) need_gb=25; parts=(images/Dockerfile "dist/$wheel" dist/wheels dist/wheels-cuda) ;;
  *) echo "images/build.sh: flavour must be cpu or cuda, not '$flavour'" >&2; exit 2 ;;
esac
root=$(docker info --format '{{.DockerRootDir}}')
free_gb=$(( $(df -Pk "$root" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
if (( free_gb < need_gb )); then
  echo "images/build.sh: Docker's data root $root has ${free_gb} GB free; the $flavour image needs ~${need_gb} GB" \
    "(free disk, e.g. 'docker image prune' or 'docker system df' to see what holds it)" >&2
  exit 1
fi
# What the image was built from: a digest of the wheel's RECORD (every packaged file's hash; unlike the
# wheel file, it does not change with the build time). tests/images compares it with dist/'s wheel.
source=$(python3 -c 'import hashlib, sys, zipfile
z = zipfile.ZipFile(sys.argv[1]); rec = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
print(hashlib.sha256(z.read(rec)).hexdigest()[:16])' "dist/$wheel")
tar -c "${parts[@]}" | DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --network none -f images/Dockerfile \
  --build-arg "JESTFLOW_WHEEL=$wheel" --build-arg "BASE_IMAGE=$base" --build-arg "FLAVOUR=$flavour" \
  --label "io.jestflow.source=$source" -t "$tag" -
docker image prune -f --filter label=io.jestflow.build >/dev/null
