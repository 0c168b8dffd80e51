"""The Q1 accuracy/time frontier: full `python q1_fashion/train.py` runs of several members of the improved
family, one after another, each timed from process start to exit (training + predictions).

Prints one table row per run: model, parameters, epochs, precision, seconds, val %. Each run takes minutes
on a CPU; pass your own candidates as quoted flag strings to measure others.

    python bench/q1_frontier.py
    python bench/q1_frontier.py "--width 48 --epochs 20" "--depth 3 --epochs 26"
"""
import shlex

from bench.timing import bench_parser, refuse_if_busy, run_training

CANDIDATES = [
    "",                         # the default recipe
    "--epochs 20",
    "--width 48 --epochs 20",
    "--depth 3 --epochs 26",
    "--no-tta",
]


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("candidates", nargs="*", metavar="FLAGS",
                        help="a candidate's train.py flags as one quoted string (default: the list in this file)")
    args, single_flags = parser.parse_known_args()  # an unquoted one-flag candidate, e.g. --no-tta
    refuse_if_busy(args.force)
    candidates = [*args.candidates, *single_flags] or CANDIDATES
    rows = []
    for flags in candidates:
        total, _, metrics = run_training("q1_fashion/train.py", shlex.split(flags), "val_accuracy", echo=False)
        config = metrics["config"]
        rows.append([flags or "(default)", f"width {config['width']}, depth {config['depth']}",
                     f"{metrics['params']:,}", str(metrics["epochs"]), metrics["train_precision"],
                     "flip" if config["tta"] else "none", f"{total:.0f}", f"{metrics['val_accuracy']:.2f}"])
        print(f"{rows[-1]}", flush=True)
    print("\n| flags | model | parameters | epochs | precision | TTA | seconds | val % |")
    print("|---|---|---:|---:|---|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
