"""Where a Q2 training step of the default recipe spends its time: the Lovász term, the stride-4 refine conv.

Times training steps (forward, loss, backward, AdamW step) of train.py's own model, loss and optimizer at
the default recipe, on a fixed batch of 16 random 224x224 images, against the same step with one part
taken out: the Lovász term (cross-entropy alone), and the head's stride-4 3x3 refine conv (an identity in
its place). The two alternate in one process; it prints the median share of the step each part costs.

    python bench/q2_step_shares.py [--rounds 3]
"""
import torch
from torch import nn

from bench.timing import alternate, bench_parser, images_per_second, median_ratio, refuse_if_busy
from common.run import resolve
from q2_segmentation import train as q2_train

BATCH, SIZE = 16, 224


def step_rate(run, loss_name, refine4=True, steps=3):
    """Images/s of training steps of the default model, with or without the Lovász term and stride-4 refine."""
    torch.manual_seed(0)
    model = q2_train.build(run)
    if not refine4:
        model.head.refine[-1] = nn.Identity()  # the last refine works at stride 4
    loss_fn = q2_train.make_loss(loss_name, run.recipe["loss_weight"])
    optimizer = q2_train.make_optimizer(model, run.recipe)
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
    # the default recipe, from random weights (the timing does not depend on them; nothing is downloaded)
    run = resolve(q2_train.parse_args(["--backbone", "efficientnet_lite0", "--no-pretrained"]), q2_train.QUESTION)
    loss = run.recipe["loss"]
    for title, part in (("the Lovász term (default step vs cross-entropy alone)",
                         lambda: step_rate(run, "ce")),
                        ("the stride-4 refine conv (default step vs the head without it)",
                         lambda: step_rate(run, loss, refine4=False))):
        print(title)
        default, without = alternate(lambda: step_rate(run, loss), part, args.rounds)
        ratio = median_ratio(default, without)  # < 1: the default step is slower by the part's cost
        print(f"  median rate ratio {ratio:.2f}: the part costs {100 * (1 - ratio):.0f} % of a default step")


if __name__ == "__main__":
    main()
