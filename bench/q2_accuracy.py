"""Val accuracy and wall time of full `python q2_segmentation/train.py` runs, one per seed.

With no arguments: the default command (`--backbone auto`, the improved head's recipe) for seeds 0, 1, 2.
Other arguments go to train.py. For each seed it prints the figures of the checkpoint behind the
prediction file (best val mIoU, with the recipe's full test-time augmentation), and, side by side under
the per-epoch protocol (flip only, fast AP order), the best epoch's and the last epoch's; then the mean
and the spread over the seeds. Each run takes up to 20 minutes on 2 CPU cores.

    python bench/q2_accuracy.py
    python bench/q2_accuracy.py --seeds 0 --backbone efficientnet_lite0 --model baseline
"""
import statistics
from pathlib import Path

from bench.timing import bench_parser, refuse_if_busy, run_training

BUDGET = 1200  # seconds: the time the default run must fit on the slowest machine of this kind


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each seed's run in DIR/seed-S/results and DIR/seed-S/checkpoints (for the report, "
                             "or bench/q2_tta.py)")
    args, extra = parser.parse_known_args()
    refuse_if_busy(args.force)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        kept = args.keep.resolve() / f"seed-{seed}" if args.keep else None
        keep = ["--out-dir", str(kept / "results"), "--checkpoint-dir", str(kept / "checkpoints")] if kept else []
        total, _, metrics = run_training("q2_segmentation/train.py", [*extra, "--seed", str(seed), *keep], "val_mIoU")
        history = [record for record in metrics["history"] if "val_mIoU" in record]
        best = max(history, key=lambda record: record["val_mIoU"])
        rows.append({"seed": seed, "seconds": total, "mAP": metrics["val_mAP"], "mIoU": metrics["val_mIoU"],
                     "best_epoch": best["epoch"], "best_epoch_mIoU": best["val_mIoU"],
                     "last_epoch_mIoU": history[-1]["val_mIoU"], "last_epoch_mAP": history[-1]["val_mAP"]})
        print(f"\nrun: {metrics['backbone']} {metrics['model']} ({metrics['params']:,} parameters), "
              f"{metrics['epochs']} epochs, precision {metrics['train_precision']}, best epoch {metrics['best_epoch']}")
        print("per class: " + ", ".join(f"{name} AP {metrics['val_ap'][name]:.3f} IoU {metrics['val_iou'][name]:.3f}"
                                        for name in metrics["val_ap"]))
    print("\n| seed | seconds | val mAP | val mIoU | best epoch: mIoU (per-epoch protocol) | last epoch: mIoU |")
    print("|---:|---:|---:|---:|---|---:|")
    for row in rows:
        print(f"| {row['seed']} | {row['seconds']:.0f} | {row['mAP']:.4f} | {row['mIoU']:.4f} | "
              f"{row['best_epoch']}: {row['best_epoch_mIoU']:.4f} | {row['last_epoch_mIoU']:.4f} |")
    for key in ("mAP", "mIoU", "last_epoch_mIoU", "seconds"):
        values = [row[key] for row in rows]
        spread = f", std {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        print(f"{key}: mean {statistics.mean(values):.4f}, min {min(values):.4f}, max {max(values):.4f}{spread}")
    print(f"time budget: {BUDGET} s; slowest run {max(row['seconds'] for row in rows):.0f} s")


if __name__ == "__main__":
    main()
