#!/usr/bin/env bash
# Make sure a Docker engine answers: start dockerd here (root, no bridge or iptables, as these sandboxed
# machines allow) when none does; install docker.io from Debian first if needed. Idempotent.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; }
mkdir -p /var/log
setsid dockerd --bridge=none --iptables=false >/var/log/jestflow-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && { echo "dockerd started (log /var/log/jestflow-dockerd.log)"; exit 0; }; sleep 1; done
echo "dockerd did not start; see /var/log/jestflow-dockerd.log" >&2; tail -20 /var/log/jestflow-dockerd.log >&2; exit 1
