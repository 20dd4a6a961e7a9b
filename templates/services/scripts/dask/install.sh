#!/usr/bin/env bash
# dask-*.install: install dask + distributed into the node's venv (spec from config dask.pip_spec).
set -euo pipefail
spec=$(python3 -c 'import json,os; print(json.loads(os.environ["LOOM_CONFIG"]).get("dask",{}).get("pip_spec","dask[distributed]"))')
"$HOME/venv/bin/pip" install --disable-pip-version-check --progress-bar off -q "$spec"
"$HOME/venv/bin/dask" --version
