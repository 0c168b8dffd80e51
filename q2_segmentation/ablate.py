"""Q2 ablation, the reference report's ladder, then this repository's head:
baseline -> +flip -> +dilated convs -> +BatchNorm -> +stepwise upsampling -> the default improved head.

Each ladder step adds one change to the one before and keeps the recipe; the last row swaps the
ladder for the default `improved` head with its own recipe, to place it on the same scale.

    python q2_segmentation/ablate.py                          # 43 minutes on 2 CPU cores (measured)
    python q2_segmentation/ablate.py --ladder-width 512       # the report's exact head (GPU)
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
from common.settings import Parser, positive_int
from q2_segmentation import train
from q2_segmentation.models import BACKBONES

# 10 epochs a step: the whole ladder fits in an hour on 2 CPU cores (42.7 minutes measured). Short runs
# of one seed each: the seed alone moves a full run's mIoU by about 0.016, so closer rows are not ordered.
EPOCHS = 10
# The report's blocks have 512 channels, and the stepwise head runs its last one at stride 4: about
# 7 GMAC per image, hours per epoch on a CPU. 128 channels keep the ladder's shape at 1/16 of the cost.
CPU_WIDTH = 128
COLUMNS = [("val_mAP", "val mAP"), ("val_mIoU", "val mIoU")]  # metrics.json's keys, the table's headings


def steps(width):
    """The rows: one change each, added to everything above; the first is the report's Q2.1 baseline."""
    return [
        ("baseline (1x1 conv, x32 upsampling)", {"augment": False, "dilated": False, "batchnorm": False,
                                                 "stepwise": False, "ladder_width": width}),
        ("+ flip augmentation", {"augment": True}),
        (f"+ dilated convs ({width} channels)", {"dilated": True}),
        ("+ BatchNorm", {"batchnorm": True}),
        ("+ stepwise upsampling (= report_best)" if width == 512 else "+ stepwise upsampling", {"stepwise": True}),
        ("default improved head, its recipe", {"model": "improved", "augment": None, "dilated": None,
                                               "batchnorm": None, "stepwise": None, "ladder_width": None}),
    ]


def main(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=("auto", *BACKBONES), default="auto",
                        help="trunk (default: auto, as train.py)")
    parser.add_argument("--ladder-width", type=positive_int, default=CPU_WIDTH,
                        help=f"channels of the ladder's conv blocks (default {CPU_WIDTH}; the report's: 512)")
    add_ablation_arguments(parser, "q2_segmentation", EPOCHS)
    args = parser.parse_args(argv)
    args.epochs = args.epochs or EPOCHS
    ladder, rows = cumulative(steps(args.ladder_width)), []
    for number, (name, slug, settings) in enumerate(ladder, start=1):
        print(f"\n=== ablation step {number}/{len(ladder)}: {name} ===")
        out_dir, checkpoint_dir = step_folders(args, slug)
        # --overwrite: each step is a fresh training; running the ablation again retrains it
        train.main(["--model", "ladder", "--backbone", args.backbone, *as_flags(settings), *passed_through(args),
                    "--out-dir", str(out_dir), "--checkpoint-dir", str(checkpoint_dir), "--overwrite"])
        rows.append(step_row(name, out_dir, COLUMNS))
    return write_ablation(rows, COLUMNS, args.results_dir)


if __name__ == "__main__":
    run_cli(main)
