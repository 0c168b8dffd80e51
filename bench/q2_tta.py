"""Q2's test-time scales on trained runs: the val (or holdout) figures and the time of each set of scales.

For each run folder and each set of scales, times `python q2_segmentation/train.py --eval-only --tta
--tta-scales SET` from process start to exit (the data's decoding and the network's build are the same in
every set; the difference between two sets is their prediction time) and reads the figures it recorded. A run
trained with --holdout is scored on its holdout, as it was validated. Prints one row per run and set, then
each set's means over the runs.

    python bench/q2_accuracy.py --keep runs/q2                  # seeds 0, 1, 2, each kept in runs/q2/seed-S
    python bench/q2_tta.py runs/q2/seed-0 runs/q2/seed-1 runs/q2/seed-2
    python bench/q2_tta.py runs/q2/seed-0 --sets 1 0.75,1,1.25,1.5
"""
import statistics
import tempfile
from pathlib import Path

from bench.timing import bench_parser, refuse_if_busy, run_training

SETS = ["1", "1,1.25", "0.75,1,1.25", "0.75,1,1.25,1.5"]


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("runs", nargs="+", type=Path,
                        help="run folders holding checkpoints/ (as bench/q2_accuracy.py --keep writes them)")
    parser.add_argument("--sets", nargs="+", default=SETS, help=f"sets of scales (default: {' '.join(SETS)})")
    args, extra = parser.parse_known_args()
    refuse_if_busy(args.force)
    rows = []
    for run in args.runs:
        for scales in args.sets:
            with tempfile.TemporaryDirectory() as scratch:
                total, _, metrics = run_training(
                    "q2_segmentation/train.py", ["--eval-only", "--tta", "--tta-scales", scales, "--checkpoint-dir",
                                                 str((run / "checkpoints").resolve()), "--out-dir", scratch, *extra],
                    "val_mIoU", echo=False)
            rows.append((run.name, scales, total, metrics["val_mAP"], metrics["val_mIoU"],
                         "holdout" if metrics.get("holdout") else "val"))
            print(f"{run.name}, scales {scales}: {total:.0f} s, {rows[-1][5]} mAP {metrics['val_mAP']:.4f} "
                  f"mIoU {metrics['val_mIoU']:.4f} ({metrics['views']}, {metrics['eval_precision']})", flush=True)
    print("\n| run | scales | seconds | mAP | mIoU | scored on |\n|---|---|---:|---:|---:|---|")
    for name, scales, total, ap, iou, split in rows:
        print(f"| {name} | {scales} | {total:.0f} | {ap:.4f} | {iou:.4f} | {split} |")
    print("\n| scales | mean seconds | mean mAP | mean mIoU |\n|---|---:|---:|---:|")
    for scales in args.sets:
        chosen = [row for row in rows if row[1] == scales]
        print(f"| {scales} | {statistics.mean(r[2] for r in chosen):.0f} | {statistics.mean(r[3] for r in chosen):.4f}"
              f" | {statistics.mean(r[4] for r in chosen):.4f} |")


if __name__ == "__main__":
    main()
