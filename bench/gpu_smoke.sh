#!/usr/bin/env bash
# The CUDA path end to end, on a machine with a GPU (run by hand): Q1 for 2 epochs, a resume to 3, Q2 for
# 1 epoch, --eval-only and the checker, all with --device cuda and the default --precision auto (bf16 where
# the GPU has it, else fp16 with a loss scaler). Prints each step's wall time and the figures; stops at the
# first failure. Needs data/ prepared (cs543-prepare-data) and `pip install -e .`.
#
#     bash bench/gpu_smoke.sh
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

step() {
    local title=$1
    shift
    local began=$SECONDS
    local status=0
    echo "=== $title: $*"
    "$@" > "$scratch/log" 2>&1 || status=$?
    grep -E "precision:|^epoch|resumed|checkpoint: epoch|Accuracy of the final|mean: AP|^OK|^INVALID|error" \
        "$scratch/log" || true
    [ "$status" = 0 ] || tail -3 "$scratch/log"
    echo "--- $title: exit $status, $((SECONDS - began)) s"
    return "$status"
}

python -c "import torch; print('torch', torch.__version__, '| GPU:', torch.cuda.get_device_name(0), '| bf16:', torch.cuda.is_bf16_supported())"
q1=(--device cuda --out-dir "$scratch/q1" --checkpoint-dir "$scratch/q1c")
step "Q1 improved, 2 epochs" python q1_fashion/train.py "${q1[@]}" --epochs 2
step "Q1 resumed to 3 epochs" python q1_fashion/train.py "${q1[@]}" --epochs 3 --resume
step "Q1 --eval-only" python q1_fashion/train.py "${q1[@]}" --eval-only
step "Q1 checker" cs543-check "$scratch/q1/Q1_label_predictions.npy"
step "Q1 checker, val scored" cs543-check "$scratch/q1/Q1_val_label_predictions.npy" --data-dir data
q2=(--device cuda --backbone efficientnet_lite0 --out-dir "$scratch/q2" --checkpoint-dir "$scratch/q2c")
step "Q2 improved, 1 epoch" python q2_segmentation/train.py "${q2[@]}" --epochs 1
step "Q2 --eval-only" python q2_segmentation/train.py "${q2[@]}" --eval-only
step "Q2 checker" cs543-check "$scratch/q2/Q2_sseg_predictions.npy"
step "Q2 checker, val scored" cs543-check "$scratch/q2/Q2_sseg_val_predictions.npy" --data-dir data --split val
echo "GPU smoke test passed"
