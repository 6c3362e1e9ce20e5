#!/usr/bin/env bash
# Wall time and peak memory of a cold `calor demo` (empty cache), then of a warm rerun.
# Usage: bash benchmarks/demo_time_memory.sh [extra calor demo args]
set -euo pipefail
cd "$(dirname "$0")/.."
cache=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$cache" "$out"' EXIT
for run in cold warm; do
  /usr/bin/time -f "$run: wall %e s, peak RSS %M KB" .venv/bin/calor demo --quiet --cache "$cache" --out "$out" "$@" >/dev/null
done
