"""Wall time of `python q1_fashion/train.py` (default: improved) to first reach 92.1 % val accuracy.

Also its total time (training + prediction) and final numbers. Extra arguments go to train.py, so
`python bench/q1_time_to_accuracy.py --model basenet` measures BaseNet's default recipe.

    python bench/q1_time_to_accuracy.py
"""
import json
import sys
import tempfile
from pathlib import Path

from bench.timing import run_script

THRESHOLD = 92.1  # the reference report's best val accuracy


def main():
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out"
        argv = ["q1_fashion/train.py", *extra, "--out-dir", str(out), "--checkpoint-dir", str(Path(scratch) / "ckpt")]
        total, epochs = run_script(argv, r"epoch +(\d+)/", "val_accuracy")
        metrics = json.loads((out / "metrics.json").read_text())
    reached = next((seconds for seconds, _, value in epochs if value >= THRESHOLD), None)
    print(f"\nmodel: {metrics['model']} ({metrics['params']:,} parameters), {metrics['epochs']} epochs")
    print(f"total_seconds (training + prediction, process start to exit): {total:.1f}")
    print(f"train_seconds: {metrics['train_seconds']}")
    print(f"best_val_accuracy (the checkpoint behind the prediction file): {metrics['val_accuracy']:.2f}")
    print(f"final_epoch_val_accuracy: {epochs[-1][2]:.2f}")
    print(f"seconds_to_{THRESHOLD}: {reached:.1f}" if reached is not None else f"seconds_to_{THRESHOLD}: never")


if __name__ == "__main__":
    main()
