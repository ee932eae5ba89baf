#!/usr/bin/env bash
# The runs behind the committed reference rows of issue 16 (docs/chain.md, "The committed leaderboard").
# Resumable: re-running skips finished stages, rungs and evaluations, and a stage resumes from its last
# Trainer checkpoint. Usage: benchmarks/reference_runs.sh DATA_DIR [controls|lineages|all]
# Then: collapse-bench submit runs/<chain>/<NN-stage>/result.json for every evaluated stage.
set -u
DATA=${1:?usage: benchmarks/reference_runs.sh DATA_DIR [controls|lineages|all]}
WHAT=${2:-all}
CB="${CB:-collapse-bench}"
run() { echo "== $* $(date +%T)"; $CB chain run "$@" --profile cpu --data-dir "$DATA" --device cpu --evaluate standard --no-progress; echo "rc=$? $(date +%T)"; }
if [ "$WHAT" = controls ] || [ "$WHAT" = all ]; then
  run control_svd --out runs/control-svd
  run control_permute --out runs/control-permute
  run control_extrapolate --out runs/control-extrapolate
fi
if [ "$WHAT" = lineages ] || [ "$WHAT" = all ]; then
  run lineage --out runs/lineage-gemma3-270m-none-s0
  # stage 1 of this lineage is the extrapolation ladder's sft checkpoint (same sha256): its row is committed
  run lineage --base smollm2-135m-instruct --evaluate-stages dpo,safety,math,long_cot --out runs/lineage-smollm2-none-s0
  run lineage --base smollm2-135m-instruct --seed 1 --out runs/lineage-smollm2-none-s1
  for i in replay lora_decorrelation feature_refresh diversity_reg; do  # the issue asks for their final stages
    run lineage --base smollm2-135m-instruct --intervention "$i" --evaluate-stages final --out "runs/lineage-smollm2-$i-s0"
  done
fi
