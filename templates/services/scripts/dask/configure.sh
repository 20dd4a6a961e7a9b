#!/usr/bin/env bash
# dask-*.configure ROLE IP [SCHEDULER_ADDRESS NAME]: write the role's settings file.
set -euo pipefail
role=$1 ip=$2
mkdir -p "$HOME/dask"
threads=$(python3 -c 'import json,os; print(int(json.loads(os.environ["LOOM_CONFIG"]).get("dask",{}).get("worker_threads",1)))')
{
  printf 'ROLE=%q\nIP=%q\nTHREADS=%q\n' "$role" "$ip" "$threads"
  if [ "$role" = worker ]; then printf 'SCHEDULER=%q\nNAME=%q\n' "$3" "$4"; fi
} >"$HOME/dask/$role.env"
cat "$HOME/dask/$role.env"
