#!/usr/bin/env bash
# The Model Swarms results table (docs/results.md, section swarm) on one CUDA GPU, as parallel processes.
#
# A 135M model leaves a big GPU mostly idle, so the cells run as independent processes (start the CUDA MPS
# daemon first, `nvidia-cuda-mps-control -d`, to let their kernels overlap). Cells are files, so every phase
# resumes and no two processes compute the same cell:
#   1. one process per target: its experts cell and best_single (seed-free, seed 1);
#   2. one process per (target, seed): seed 1 runs every method, seeds 2 and 3 only the seeded ones;
#   3. one pass over everything: copies the seed-free cells to seeds 2 and 3 and writes the report.
# Usage: scripts/gpu_swarm_table.sh [more `tutti bench swarm` options]   (TUTTI=... to run another CLI)
# Logs: runs/bench-swarm/logs/. The settings below are the ones docs/results.md reports.
set -uo pipefail
TUTTI=${TUTTI:-tutti}
SETTINGS=(--dev 200 --test 1000 --particles 10 --iterations 50 --patience 10 --device cuda --batch-size 64 --tf32
          "$@")
TARGETS=(compare_conversions logic unit_word_problems weekday_word_problems multi:reasoning judge:country_facts)
SEEDED=model_swarms,dare_ties,lorahub,evolutionary
LOGS=runs/bench-swarm/logs
mkdir -p "$LOGS"
cell() {  # cell NAME OPTIONS...: one `tutti bench swarm` process, its report and plots kept apart
  local name=$1; shift
  OMP_NUM_THREADS=2 $TUTTI bench swarm "$@" "${SETTINGS[@]}" --out "$LOGS/$name.md" --img "$LOGS/img-$name" \
    > "$LOGS/$name.log" 2>&1
  echo "$(date +%T) $name exit $?" >> "$LOGS/phases.log"
}
for t in "${TARGETS[@]}"; do cell "p1-${t/:/-}" --targets "$t" --seeds 1 --methods best_single & done
wait
for t in "${TARGETS[@]}"; do
  cell "p2-${t/:/-}-s1" --targets "$t" --seeds 1 &
  for k in 2 3; do cell "p2-${t/:/-}-s$k" --targets "$t" --seeds "$k" --methods "$SEEDED" & done
done
wait
all=$(IFS=,; echo "${TARGETS[*]}")
OMP_NUM_THREADS=2 $TUTTI bench swarm --targets "$all" --seeds 1,2,3 "${SETTINGS[@]}" > "$LOGS/p3.log" 2>&1
echo "$(date +%T) p3 exit $?" >> "$LOGS/phases.log"
