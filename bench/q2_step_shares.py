"""Where a Q2 training step spends its time: the Lovász term, the improved head's stride-4 3x3 block.

Times train.py's own training steps (forward, loss, backward, AdamW step, weight average) on a fixed batch of
16 random 224x224 images, a step with one part against the same step without it: the default
recipe against cross-entropy alone (the Lovász term), and `--stride4-refine` against the default, which
leaves that block out. The two alternate in one process; it prints the median share of the step with the
part that the part costs.

    python bench/q2_step_shares.py [--rounds 3]
"""
import torch

from bench.timing import alternate, bench_parser, median_ratio, refuse_if_busy, step_rate, training
from q2_segmentation import train as q2_train

BATCH, SIZE = 16, 224
# the recipe from random weights (the timing does not depend on them; nothing is downloaded)
FLAGS = ["--backbone", "efficientnet_lite0", "--no-pretrained", "--limit", "16"]


def rate(*flags, steps=3):
    """Images/s of train.py's training steps for these flags, on a fixed batch of random images."""
    images = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8)
    labels = torch.randint(0, 6, (BATCH, SIZE, SIZE))
    bench = training(q2_train, [*FLAGS, *flags])
    return step_rate(bench, (bench.model.normalize(images), labels), steps)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    refuse_if_busy(args.force)
    for title, with_part, without_part in (
            ("the Lovász term (default step vs cross-entropy alone)", lambda: rate(), lambda: rate("--loss", "ce")),
            ("the stride-4 3x3 block (--stride4-refine step vs the default's, without it)",
             lambda: rate("--stride4-refine"), lambda: rate())):
        print(title)
        with_rates, without_rates = alternate(with_part, without_part, args.rounds)
        ratio = median_ratio(with_rates, without_rates)  # < 1: the step with the part is slower by its cost
        print(f"  median rate ratio {ratio:.2f}: the part costs {100 * (1 - ratio):.0f} % of a step with it")


if __name__ == "__main__":
    main()
