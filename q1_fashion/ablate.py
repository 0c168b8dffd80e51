"""Q1 ablation: baseline -> +augmentation -> +BatchNorm -> +dropout -> +depth -> +width.

Every step trains the improved family with the improved recipe (optimizer, schedule, epochs), so the
only change from one row to the next is the component named. The last row is the improved model.

    python q1_fashion/ablate.py               # full recipe, about 30 minutes on 2 CPU cores
    python q1_fashion/ablate.py --epochs 3    # a quick look
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.ablation import add_ablation_arguments, passed_through, run_ladder  # noqa: E402
from common.runtime import run_cli  # noqa: E402
from q1_fashion import train  # noqa: E402

BEST = train.RECIPES["improved"]
STEPS = [
    ("baseline (BaseNet)", "1_baseline", ["--no-augment", "--no-batchnorm", "--dropout", "0", "--depth", "1",
                                          "--width", "6"]),
    ("+ augmentation", "2_augment", ["--augment", "--no-batchnorm", "--dropout", "0", "--depth", "1", "--width", "6"]),
    ("+ BatchNorm", "3_batchnorm", ["--augment", "--batchnorm", "--dropout", "0", "--depth", "1", "--width", "6"]),
    ("+ dropout", "4_dropout", ["--augment", "--batchnorm", "--dropout", str(BEST["dropout"]), "--depth", "1",
                                "--width", "6"]),
    ("+ depth", "5_depth", ["--augment", "--batchnorm", "--dropout", str(BEST["dropout"]),
                            "--depth", str(BEST["depth"]), "--width", "6"]),
    ("+ width (= improved)", "6_width", ["--augment", "--batchnorm", "--dropout", str(BEST["dropout"]),
                                         "--depth", str(BEST["depth"]), "--width", str(BEST["width"])]),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ablation_arguments(parser, "q1_fashion", BEST["epochs"])
    args = parser.parse_args(argv)
    run_ladder(STEPS, train.main, ["--model", "improved"], args.results_dir, args.checkpoints_dir,
               [("val_accuracy", "val accuracy (%)")], passed_through(args))


if __name__ == "__main__":
    run_cli(main)
