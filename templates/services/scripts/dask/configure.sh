#!/usr/bin/env bash
# dask-*.configure ROLE IP [SCHEDULER_ADDRESS NAME]: write the role's settings file.
set -euo pipefail
role=$1 ip=$2
mkdir -p "$HOME/dask"
setting() {  # setting KEY DEFAULT: config dask.KEY
  python3 -c 'import json,os,sys; print(json.loads(os.environ["LOOM_CONFIG"]).get("dask",{}).get(sys.argv[1],sys.argv[2]))' "$1" "$2"
}
threads=$(setting worker_threads 1)
memory=$(setting memory_limit auto)
{
  printf 'ROLE=%q\nIP=%q\nTHREADS=%q\nMEMORY=%q\n' "$role" "$ip" "$threads" "$memory"
  if [ "$role" = worker ]; then printf 'SCHEDULER=%q\nNAME=%q\n' "$3" "$4"; fi
} >"$HOME/dask/$role.env"
cat "$HOME/dask/$role.env"
