#!/usr/bin/env bash
# Takes every benchmark run that docs/PERFORMANCE.md is written from, into
# bench/runs/ (one file per run, each starting with the command that made
# it); the document is then written from them:
#   bench/take_runs.sh [BUILD_DIR]      (about 6 minutes on the 2-core VM)
#   /usr/bin/python3 bench/performance_md.py bench/runs > docs/PERFORMANCE.md
# Run it on an otherwise idle machine: the figures are ratios within each
# run, but a busy machine still skews them. The runs are taken into a
# temporary folder and replace bench/runs/ only when all of them succeeded.
# Without bnorm-sync-bench (no MPI in the build) sync.txt is left out.
source "$(dirname "$0")/script_setup.sh"
take() {  # take FILE COMMAND...: the command's output, after a "$ command" line
  local file=$1
  shift
  { echo "\$ ${*/#$PWD\//./}"; "$@"; } > "$work/$file"
}
bench=$build/bench/bnorm-bench
take batch_norm.txt "$bench" --bandwidth --threads 1,2 --reps 21
take small.txt "$bench" --shapes 8x2048 2x64x7x7 1x64x1x1 --threads 1,2 --reps 201 --impls bnorm,aten
take patterns.txt "$bench" --patterns --shapes 64x256x56x56 256x1024x12x16 8192x1x64x64 --threads 1,2 --reps 15
take family.txt "$bench" --ops bn_relu,bn_add_relu,layer_norm,rms_norm,group_norm,instance_norm --threads 2 \
  --reps 11
take family_small.txt "$bench" --ops group_norm,instance_norm --shapes 64x512x7x7 64x512x2x2 --threads 2 --reps 21
if [[ -x $build/bench/bnorm-sync-bench ]]; then
  take sync.txt mpirun --allow-run-as-root --oversubscribe -np 2 "$build/bench/bnorm-sync-bench" --reps 21
fi
bench/exec_speed.sh "$build" > "$work/exec.txt"
mkdir -p bench/runs
rm -f bench/runs/*.txt
mv "$work"/*.txt bench/runs/
