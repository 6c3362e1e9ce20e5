#!/usr/bin/env bash
# The seed-level re-run of the embedded scenario (the grid the README's verdicts need), one seed at a time so
# that every finished seed is complete for every defense; the bench resumes, so the script can be stopped and
# started again at any point (finished cells are never redone):
#   bash benchmarks/grid_mnist.sh [OUT] [CACHE]        (default runs/grid10, runs/cache)
# Primary family (scenario `primary:`): none, calor, lor, ca, ls-ft on seeds 2-11; baselines mid, negls on 2-6;
# attacks: GMI with the scenario's tuned update rule, BPDA on it, PLG-MI, BPDA on PLG-MI (PLG-MI's prior is
# shared: built on the real target), LOMMA on KED-MI; the black-box / logit / confidence-cap attacks on none and
# calor; an A/A replicate of none under GMI and PLG-MI. Then `calor report --all OUT`.
set -euo pipefail
cd "$(dirname "$0")/.."
calor=${CALOR:-.venv/bin/calor}
out=${1:-runs/grid10}
cache=${2:-runs/cache}
threads=${THREADS:-1}
main_attacks="gmi,adaptive-bpda,plgmi,adaptive-bpda[base=plgmi],lomma-kedmi"
for seed in 2 3 4 5 6 7 8 9 10 11; do
  defenses=none,calor,lor,ca,ls-ft
  [ "$seed" -le 6 ] && defenses="$defenses,mid,negls"
  "$calor" bench --defenses "$defenses" --attacks "$main_attacks" --seed "$seed" --seeds 1 --out "$out" --cache "$cache" \
    --threads "$threads" --quiet
  "$calor" bench --defenses none,calor --attacks "mirror-b,adaptive-logit,adaptive-pstar[update=normalized,lr=0.001]" \
    --seed "$seed" --seeds 1 --out "$out" --cache "$cache" --threads "$threads" --quiet
  "$calor" bench --defenses none --aa none --attacks gmi,plgmi --seed "$seed" --seeds 1 --out "$out" --cache "$cache" \
    --threads "$threads" --quiet
  echo "seed $seed complete $(date -u +%FT%TZ)"
done
"$calor" report --all "$out"
