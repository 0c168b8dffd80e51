"""Where a Q2 training step spends its time: the Lovász term, the improved head's stride-4 3x3 block.

Times training steps (forward, loss, backward, AdamW step) of train.py's own model, loss and optimizer on a
fixed batch of 16 random 224x224 images, a step with one part against the same step without it: the default
recipe against cross-entropy alone (the Lovász term), and `--stride4-refine` against the default, which
leaves that block out. The two alternate in one process; it prints the median share of the step with the
part that the part costs.

    python bench/q2_step_shares.py [--rounds 3]
"""
import torch

from bench.timing import alternate, bench_parser, images_per_second, median_ratio, refuse_if_busy
from common.settings import resolve
from q2_segmentation import train as q2_train

BATCH, SIZE = 16, 224


def step_rate(run, loss_name, steps=3):
    """Images/s of training steps of the run's model with this loss."""
    torch.manual_seed(0)
    model = q2_train.build(run)
    loss_fn = q2_train.make_loss(loss_name, run.recipe["loss_weight"])
    optimizer = q2_train.make_optimizer(model, run.recipe, run.device)
    images = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8)
    labels = torch.randint(0, 6, (BATCH, SIZE, SIZE))
    model.train()

    def step():
        optimizer.zero_grad()
        loss_fn(model(model.normalize(images)), labels).backward()
        optimizer.step()

    return images_per_second(step, steps, BATCH)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    refuse_if_busy(args.force)
    # the recipe from random weights (the timing does not depend on them; nothing is downloaded)
    flags = ["--backbone", "efficientnet_lite0", "--no-pretrained"]
    default = resolve(q2_train.parse_args(flags), q2_train.QUESTION)
    with_block = resolve(q2_train.parse_args([*flags, "--stride4-refine"]), q2_train.QUESTION)
    loss = default.recipe["loss"]
    for title, with_part, without_part in (
            ("the Lovász term (default step vs cross-entropy alone)",
             lambda: step_rate(default, loss), lambda: step_rate(default, "ce")),
            ("the stride-4 3x3 block (--stride4-refine step vs the default's, without it)",
             lambda: step_rate(with_block, loss), lambda: step_rate(default, loss))):
        print(title)
        with_rates, without_rates = alternate(with_part, without_part, args.rounds)
        ratio = median_ratio(with_rates, without_rates)  # < 1: the step with the part is slower by its cost
        print(f"  median rate ratio {ratio:.2f}: the part costs {100 * (1 - ratio):.0f} % of a step with it")


if __name__ == "__main__":
    main()
