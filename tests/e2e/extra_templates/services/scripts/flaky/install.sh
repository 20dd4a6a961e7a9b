#!/usr/bin/env bash
# Fails until the test "fixes the cause" by creating ~/fixed on the node (then resume works).
if [ ! -f "$HOME/fixed" ]; then
  echo "flaky: the disk is full (on purpose)" >&2
  exit 7
fi
echo "flaky: installed"
