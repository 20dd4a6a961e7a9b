#!/usr/bin/env bash
# Wall time of `make run` on a fresh clone: first with cold caches (empty uv cache, empty pip
# cache for the nodes), then on a second fresh clone with the caches the first run warmed.
# Ratio warm/cold printed at the end. Runs on its own API port and node SSH port, and deletes
# the demo cluster and stops the stack it started after each run.
#   bash bench/fresh_clone.sh [PORT] [SSH_PORT]
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
port=${1:-8380}
ssh_port=${2:-2622}
work=$(mktemp -d /tmp/loom-fresh-XXXX)
export UV_CACHE_DIR="$work/uv-cache"          # cold for the first run, warm for the second
export AIRFLOW__API__PORT=$port AIRFLOW__API__BASE_URL=http://127.0.0.1:$port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$port/execution/
export AIRFLOW__LOOM__API_URL=http://127.0.0.1:$port AIRFLOW__LOOM__LOCAL_SSH_PORT=$ssh_port
export AIRFLOW__LOOM__LOCAL_PIP_CACHE="$work/pip-cache"   # the nodes' pip cache, cold then warm
export PIP_CACHE_DIR="$work/pip-cache-host"                # bootstrap pip (installs uv)

one_run() {  # $1 = label
  local dir="$work/$1"
  git clone -q "$src" "$dir"
  local start end
  start=$(date +%s.%N)
  (cd "$dir" && make run >"$work/$1.log" 2>&1)
  end=$(date +%s.%N)
  grep -q "Cluster demo: ACTIVE" "$work/$1.log" || { echo "$1: demo not ACTIVE, see $work/$1.log"; exit 1; }
  (cd "$dir" && .venv/bin/loom cluster delete demo >/dev/null && make stop >/dev/null)
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$end"
}

cold=$(one_run cold)
warm=$(one_run warm)
python3 - "$cold" "$warm" <<'PY'
import sys
cold, warm = map(float, sys.argv[1:])
print(f"make run on a fresh clone: cold caches {cold:.1f} s, warm caches {warm:.1f} s, ratio warm/cold {warm / cold:.2f}")
PY
rm -rf "$work"
