#!/usr/bin/env bash
# The seed-level re-run of the embedded scenario (the grid the README's verdicts need). The bench resumes, so
# the script can be stopped and started again at any point (finished cells are never redone):
#   bash benchmarks/grid_mnist.sh [OUT] [CACHE]        (default runs/grid10, runs/cache)
# Phase 1, one seed at a time so that every finished seed is complete for the primary family (scenario
# `primary:`): none, calor, lor, ca, ls-ft on seeds 2-11 under GMI with the scenario's tuned update rule, BPDA on
# it, PLG-MI, BPDA on PLG-MI (PLG-MI's prior is shared: built on the real target), LOMMA on KED-MI; the
# black-box / logit / confidence-cap attacks on none and calor; an A/A replicate of none under GMI and PLG-MI.
# Phase 2: the baselines mid and negls on seeds 2-6 under the main attacks. Then `calor report --all OUT`.
# SEEDS="2 4 6" runs phase 1 on a subset; PHASES="1" or "2" runs one phase. Two copies on disjoint seed lists
# (one thread each) use two cores: they share CACHE safely (every artifact is built under its own lock) but
# need their own OUT (a bench locks its output directory); copy the second's cells/ into the first's and run
# `calor report --all OUT`. REPORT=0 skips the closing report.
set -euo pipefail
cd "$(dirname "$0")/.."
calor=${CALOR:-.venv/bin/calor}
out=${1:-runs/grid10}
cache=${2:-runs/cache}
threads=${THREADS:-1}
phases=${PHASES:-1 2}
main_attacks="gmi,adaptive-bpda,plgmi,adaptive-bpda[base=plgmi],lomma-kedmi"
run() { "$calor" bench "$@" --seeds 1 --out "$out" --cache "$cache" --threads "$threads" --quiet; }
for phase in $phases; do
  if [ "$phase" = 1 ]; then
    for seed in ${SEEDS:-2 3 4 5 6 7 8 9 10 11}; do
      run --defenses none,calor,lor,ca,ls-ft --attacks "$main_attacks" --seed "$seed"
      run --defenses none,calor --attacks "mirror-b,adaptive-logit,adaptive-pstar[update=normalized,lr=0.001]" --seed "$seed"
      run --defenses none --aa none --attacks gmi,plgmi --seed "$seed"
      echo "phase 1 seed $seed complete $(date -u +%FT%TZ)"
    done
  else
    for seed in ${BASELINE_SEEDS:-2 3 4 5 6}; do
      run --defenses none,mid,negls --attacks "$main_attacks" --seed "$seed"
      echo "phase 2 seed $seed complete $(date -u +%FT%TZ)"
    done
  fi
done
[ "${REPORT:-1}" = 0 ] || "$calor" report --all "$out"
