"""Wall time and val numbers of a full `python q2_segmentation/train.py` run (default: efficientnet_lite0).

Arguments go to train.py; with none, the target run `--backbone efficientnet_lite0` (improved head).

    python bench/q2_accuracy.py
    python bench/q2_accuracy.py --backbone efficientnet_lite0 --model baseline
"""
import json
import sys
import tempfile
from pathlib import Path

from bench.timing import run_script


def main():
    extra = sys.argv[1:] or ["--backbone", "efficientnet_lite0"]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out"
        argv = ["q2_segmentation/train.py", *extra, "--out-dir", str(out), "--checkpoint-dir", str(Path(scratch) / "c")]
        total, epochs = run_script(argv, r"epoch +(\d+)/", "val_mIoU")
        metrics = json.loads((out / "metrics.json").read_text())
    print(f"\nrun: {metrics['backbone']} {metrics['model']} ({metrics['params']:,} parameters), "
          f"{metrics['epochs']} epochs, best epoch {metrics['best_epoch']}")
    print("per class: " + ", ".join(f"{name} AP {metrics['val_ap'][name]:.3f} IoU {metrics['val_iou'][name]:.3f}"
                                    for name in metrics["val_ap"]))
    print(f"train_seconds: {metrics['train_seconds']}")
    print(f"total_seconds (process start to exit, predictions written): {total:.1f}")
    print(f"val_mAP: {metrics['val_mAP']:.4f}")
    print(f"val_mIoU: {metrics['val_mIoU']:.4f}")


if __name__ == "__main__":
    main()
