#!/usr/bin/env bash
# dask-*.start ROLE: start the daemon detached, record its pid, wait until it listens. Idempotent.
set -euo pipefail
role=$1
source "$HOME/dask/$role.env"
pidfile="$HOME/dask/$role.pid" log="$HOME/dask/$role.log"
alive() { [ -f "$pidfile" ] && [ -r "/proc/$(cat "$pidfile")/stat" ] && ! grep -q ') Z' "/proc/$(cat "$pidfile")/stat"; }
if alive; then echo "$role already running (pid $(cat "$pidfile"))"; exit 0; fi
cd "$HOME/dask"
if [ "$role" = scheduler ]; then
  setsid "$HOME/venv/bin/dask" scheduler --host "$IP" --port 8786 --dashboard-address "$IP:8787" \
    >"$log" 2>&1 </dev/null & echo $! >"$pidfile"
  ready='Scheduler at:'
else
  setsid "$HOME/venv/bin/dask" worker "$SCHEDULER" --host "$IP" --name "$NAME" --nthreads "$THREADS" \
    --memory-limit "${MEMORY:-auto}" \
    --nworkers 1 --local-directory "$HOME/dask/work" >"$log" 2>&1 </dev/null & echo $! >"$pidfile"
  ready='Registered to:'
fi
for _ in $(seq 1 120); do
  if grep -q "$ready" "$log"; then echo "$role started (pid $(cat "$pidfile"))"; grep "$ready" "$log"; exit 0; fi
  if ! alive; then echo "$role exited during start-up:" >&2; tail -n 30 "$log" >&2; exit 1; fi
  sleep 0.5
done
echo "$role did not report '$ready' within 60 s:" >&2; tail -n 30 "$log" >&2; exit 1
