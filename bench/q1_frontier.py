"""The Q1 accuracy/time frontier: full `python q1_fashion/train.py` runs of several members of the improved
family, one after another, each timed from process start to exit (training + predictions).

Prints one table row per run: model, parameters, epochs, precision, seconds, val %. Each run takes minutes
on a CPU; pass your own candidates as quoted flag strings to measure others.

    python bench/q1_frontier.py
    python bench/q1_frontier.py "--width 48 --epochs 20" "--depth 3 --epochs 26"
"""
import shlex
import sys

from bench.timing import run_training

CANDIDATES = [
    "",                         # the default recipe
    "--epochs 20",
    "--width 48 --epochs 20",
    "--depth 3 --epochs 26",
    "--no-tta",
]


def main():
    candidates = sys.argv[1:] or CANDIDATES
    rows = []
    for flags in candidates:
        total, _, metrics = run_training("q1_fashion/train.py", shlex.split(flags), "val_accuracy", echo=False)
        config = metrics["config"]
        rows.append([flags or "(default)", f"width {config['width']}, depth {config['depth']}",
                     f"{metrics['params']:,}", str(metrics["epochs"]), metrics["precision"],
                     "flip" if config["tta"] else "none", f"{total:.0f}", f"{metrics['val_accuracy']:.2f}"])
        print(f"{rows[-1]}", flush=True)
    print("\n| flags | model | parameters | epochs | precision | TTA | seconds | val % |")
    print("|---|---|---:|---:|---|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
