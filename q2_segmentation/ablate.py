"""Q2 ablation, the reference report's ladder: baseline -> +flip -> +dilated convs -> +BatchNorm -> +stepwise.

Each step adds to the previous one and keeps the recipe; the last row is the report's best model.

    python q2_segmentation/ablate.py --backbone efficientnet_lite0 --epochs 5
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.ablation import add_ablation_arguments, passed_through, run_ladder  # noqa: E402
from common.runtime import run_cli  # noqa: E402
from q2_segmentation import train  # noqa: E402
from q2_segmentation.models import BACKBONES  # noqa: E402

STEPS = [
    ("baseline (1x1 conv, x32 upsampling)", "1_baseline", ["--no-augment", "--no-dilated", "--no-batchnorm",
                                                             "--no-stepwise"]),
    ("+ flip augmentation", "2_flip", ["--augment", "--no-dilated", "--no-batchnorm", "--no-stepwise"]),
    ("+ dilated convs", "3_dilated", ["--augment", "--dilated", "--no-batchnorm", "--no-stepwise"]),
    ("+ BatchNorm", "4_batchnorm", ["--augment", "--dilated", "--batchnorm", "--no-stepwise"]),
    ("+ stepwise upsampling (= report_best)", "5_stepwise", ["--augment", "--dilated", "--batchnorm", "--stepwise"]),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONES, default="resnet18")
    add_ablation_arguments(parser, "q2_segmentation", train.RECIPE["epochs"])
    args = parser.parse_args(argv)
    run_ladder(STEPS, train.main, ["--model", "ladder", "--backbone", args.backbone], args.results_dir,
               args.checkpoints_dir, [("val_mAP", "val mAP"), ("val_mIoU", "val mIoU")], passed_through(args))


if __name__ == "__main__":
    run_cli(main)
