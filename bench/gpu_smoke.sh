#!/usr/bin/env bash
# The CUDA path end to end, on a machine with a GPU (run by hand): Q1 for 2 epochs, a resume to 3, --eval-only and
# the checker with --precision auto; then Q1 for 1 epoch in every precision the GPU offers (fp32, fp16, and bf16
# where it is native) and the refusal of bf16 where it is not; Q2 for 1 epoch, --eval-only and the checker.
# Each run's printed precision line is checked against the one expected from the GPU's compute capability, read
# from nvidia-smi (8.0 or later: bf16, else fp16 with a loss scaler). Prints each step's wall time and figures;
# stops at the first failure. Needs data/ prepared (cs543-prepare-data) and `pip install -e .`. About 3 minutes.
#
#     bash bench/gpu_smoke.sh
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# step TITLE EXPECTED_PRECISION COMMAND...: run COMMAND, show its key lines, check its precision line (- for none)
step() {
    local title=$1 expected=$2
    shift 2
    local began=$SECONDS status=0
    echo "=== $title: $*"
    "$@" > "$scratch/log" 2>&1 || status=$?
    grep -E "^precision:|^NOTE|^epoch|resumed|checkpoint: epoch|Accuracy of the final|mean: AP|^OK|^INVALID|error" \
        "$scratch/log" || true
    [ "$status" = 0 ] || tail -3 "$scratch/log"
    echo "--- $title: exit $status, $((SECONDS - began)) s"
    [ "$status" = 0 ] || return "$status"
    if [ "$expected" != - ] && ! grep -q "^precision: $expected (" "$scratch/log"; then
        echo "FAILED: expected the line 'precision: $expected (...)'"
        return 1
    fi
}

capability=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)
if [ -z "$capability" ]; then  # an older driver without the field: ask PyTorch
    capability=$(python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
fi
if [ "${capability%%.*}" -ge 8 ]; then auto=bf16; offered=(fp32 fp16 bf16); else auto=fp16; offered=(fp32 fp16); fi
python -c "import torch; print('torch', torch.__version__, '| GPU:', torch.cuda.get_device_name(0), '| arch list:', \
' '.join(torch.cuda.get_arch_list()))"
echo "compute capability $capability: --precision auto should be $auto; offered: ${offered[*]}"

q1=(--device cuda --out-dir "$scratch/q1" --checkpoint-dir "$scratch/q1c")
step "Q1 improved, 2 epochs" "$auto" python q1_fashion/train.py "${q1[@]}" --epochs 2
step "Q1 resumed to 3 epochs" "$auto" python q1_fashion/train.py "${q1[@]}" --epochs 3 --resume
step "Q1 --eval-only" "$auto" python q1_fashion/train.py "${q1[@]}" --eval-only
step "Q1 checker" - cs543-check "$scratch/q1/Q1_label_predictions.npy"
step "Q1 checker, val scored" - cs543-check "$scratch/q1/Q1_val_label_predictions.npy" --data-dir data
for precision in "${offered[@]}"; do
    step "Q1 in $precision, 1 epoch" "$precision" python q1_fashion/train.py --device cuda --precision "$precision" \
        --epochs 1 --out-dir "$scratch/q1-$precision" --checkpoint-dir "$scratch/q1c-$precision"
done
if [ "$auto" = fp16 ]; then  # no native bf16: refused in one line, exit 2
    status=0
    python q1_fashion/train.py --device cuda --precision bf16 --epochs 1 --out-dir "$scratch/q1-bf16" \
        --checkpoint-dir "$scratch/q1c-bf16" > "$scratch/log" 2>&1 || status=$?
    cat "$scratch/log"
    if [ "$status" != 2 ] || [ "$(wc -l < "$scratch/log")" != 1 ] || ! grep -q "has no native bf16" "$scratch/log"; then
        echo "FAILED: --precision bf16 on a GPU without native bf16 should be one line and exit 2 (exit $status)"
        exit 1
    fi
    echo "--- --precision bf16 refused in one line (exit 2)"
fi
q2=(--device cuda --backbone efficientnet_lite0 --out-dir "$scratch/q2" --checkpoint-dir "$scratch/q2c")
step "Q2 improved, 1 epoch" "$auto" python q2_segmentation/train.py "${q2[@]}" --epochs 1
step "Q2 --eval-only" "$auto" python q2_segmentation/train.py "${q2[@]}" --eval-only
step "Q2 checker" - cs543-check "$scratch/q2/Q2_sseg_predictions.npy"
step "Q2 checker, val scored" - cs543-check "$scratch/q2/Q2_sseg_val_predictions.npy" --data-dir data --split val
echo "GPU smoke test passed"
