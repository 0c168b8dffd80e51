"""Q1 ablation: baseline -> +augmentation -> +BatchNorm -> +dropout -> +depth -> +width.

Every step trains the improved family with the improved recipe (optimizer, schedule, epochs), so the
only change from one row to the next is the component named. The last row is the default model.

    python q1_fashion/ablate.py               # full recipe
    python q1_fashion/ablate.py --epochs 3    # a quick look
"""
from common.command import quiet_start  # first: Ctrl-C while the imports below load is one line

quiet_start(__name__)

import argparse

from common.ablation import add_ablation_arguments, passed_through, run_ladder
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


def main(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ablation_arguments(parser, "q1_fashion", BEST["epochs"])
    args = parser.parse_args(argv)
    return run_ladder(STEPS, train.main, ["--model", "improved"], args.results_dir, args.checkpoints_dir,
                      [("val_accuracy", "val accuracy (%)")], passed_through(args))


if __name__ == "__main__":
    run_cli(main)
