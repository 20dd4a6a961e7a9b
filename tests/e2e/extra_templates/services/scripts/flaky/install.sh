#!/usr/bin/env bash
echo "flaky: the disk is full (on purpose)" >&2
exit 7
