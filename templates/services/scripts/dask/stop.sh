#!/usr/bin/env bash
# dask-*.stop ROLE: stop the daemon's whole process group and wait for it. Idempotent.
set -euo pipefail
role=$1
pidfile="$HOME/dask/$role.pid"
[ -f "$pidfile" ] || { echo "$role not running"; exit 0; }
pid=$(cat "$pidfile")
alive() { [ -r "/proc/$pid/stat" ] && ! grep -q ') Z' "/proc/$pid/stat"; }
if alive; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do alive || break; sleep 0.25; done
  alive && kill -KILL -- "-$pid" 2>/dev/null || true
fi
rm -f "$pidfile"
echo "$role stopped"
