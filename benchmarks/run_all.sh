#!/usr/bin/env bash
# Every benchmark table of BENCHMARKS.md in one go, on one device:
#   bash benchmarks/run_all.sh [cpu|cuda] > tables.txt
# (PYTHON=... selects the interpreter; default .venv/bin/python.)
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
device=${1:-cpu}
status=0
"$py" benchmarks/defense_cost.py --device "$device" || status=1
"$py" benchmarks/attack_cost.py --device "$device" || status=1
if [ "$device" = cpu ]; then
  "$py" benchmarks/end_to_end.py || status=1
else
  "$py" benchmarks/end_to_end.py --skip-tests -- --device "$device" || status=1
fi
exit $status
