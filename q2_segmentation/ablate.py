"""Q2 ablation, the reference report's ladder: baseline -> +flip -> +dilated convs -> +BatchNorm -> +stepwise.

Each step adds one change to the previous one and keeps the recipe; the last row is the report's best model.

    python q2_segmentation/ablate.py --backbone efficientnet_lite0 --epochs 5
"""
import argparse

from common.ablation import add_ablation_arguments, passed_through, run_ladder
from common.runtime import run_cli
from q2_segmentation import train
from q2_segmentation.models import BACKBONES

# One change per row, each added to everything above it; the first row is the report's Q2.1 baseline.
STEPS = [
    ("baseline (1x1 conv, x32 upsampling)", {"augment": False, "dilated": False, "batchnorm": False,
                                             "stepwise": False}),
    ("+ flip augmentation", {"augment": True}),
    ("+ dilated convs", {"dilated": True}),
    ("+ BatchNorm", {"batchnorm": True}),
    ("+ stepwise upsampling (= report_best)", {"stepwise": True}),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONES, default="resnet18")
    add_ablation_arguments(parser, "q2_segmentation", train.RECIPE["epochs"])
    args = parser.parse_args(argv)
    return run_ladder(STEPS, train.main, ["--model", "ladder", "--backbone", args.backbone], args.results_dir,
                      args.checkpoints_dir, [("val_mAP", "val mAP"), ("val_mIoU", "val mIoU")], passed_through(args))


if __name__ == "__main__":
    run_cli(main)
