#!/usr/bin/env bash
# base.install: a virtualenv in the node's home that services install into. Idempotent.
set -euo pipefail
if [ ! -x "$HOME/venv/bin/python" ]; then
  python3 -m venv "$HOME/venv"
fi
"$HOME/venv/bin/python" --version
