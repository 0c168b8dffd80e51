"""Q1 ablation: baseline -> +augmentation -> +BatchNorm -> +dropout -> +depth -> +width.

Every step trains the improved family with the improved recipe (optimizer, schedule, epochs), so the
only change from one row to the next is the component named. The last row is the default model.

    python q1_fashion/ablate.py               # full recipe
    python q1_fashion/ablate.py --epochs 3    # a quick look
"""
from common.command import quiet_start  # first: Ctrl-C while the imports below load is one line

quiet_start(__name__)

import argparse

from common.ablation import (
    add_ablation_arguments,
    as_flags,
    cumulative,
    passed_through,
    step_folders,
    step_row,
    write_ablation,
)
from common.command import run_cli
from common.settings import Parser
from q1_fashion import train

BEST = train.RECIPES["improved"]
# One change per row, each added to everything above it; the first row is BaseNet's shape.
STEPS = [
    ("baseline (BaseNet)", {"augment": False, "batchnorm": False, "dropout": 0.0, "depth": 1, "width": 6}),
    ("+ augmentation", {"augment": True}),
    ("+ BatchNorm", {"batchnorm": True}),
    ("+ dropout", {"dropout": BEST["dropout"]}),
    ("+ depth", {"depth": BEST["depth"]}),
    ("+ width (= improved)", {"width": BEST["width"]}),
]
COLUMNS = [("val_accuracy", "val accuracy (%)")]  # metrics.json's key, the table's heading


def main(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ablation_arguments(parser, "q1_fashion", BEST["epochs"])
    args = parser.parse_args(argv)
    rows = []
    for number, (name, slug, settings) in enumerate(cumulative(STEPS), start=1):
        print(f"\n=== ablation step {number}/{len(STEPS)}: {name} ===")
        out_dir, checkpoint_dir = step_folders(args, slug)
        # --overwrite: each step is a fresh training; running the ablation again retrains it
        train.main(["--model", "improved", *as_flags(settings), *passed_through(args), "--out-dir", str(out_dir),
                    "--checkpoint-dir", str(checkpoint_dir), "--overwrite"])
        rows.append(step_row(name, out_dir, COLUMNS))
    return write_ablation(rows, COLUMNS, args.results_dir)


if __name__ == "__main__":
    run_cli(main)
