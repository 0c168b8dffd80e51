"""Which CPU settings win: bf16 autocast vs fp32, channels-last vs the default layout, threads, batch size.

First the decision `--precision auto` rests on: bf16 against fp32 in the real training loop of each
question's default recipe (train.py's own settings, optimizer, schedule, weight average and augmented
batches of the real data, Q2's variable sizes included), a few hundred images an epoch. Then training steps
(forward, backward, SGD step) of the default models on fixed-shape random inputs. Each pair of settings
alternates in one process; it prints the median ratio of images/s. bf16 is skipped on a CPU without it.

    python bench/cpu_settings.py [--rounds 3]
"""
import time

import torch
from torch import nn

from bench.timing import alternate, bench_parser, images_per_second, median_ratio, refuse_if_busy, training_pieces
from common.device import CPU_BF16_FLAGS, autocast, cpu_flags
from common.settings import resolve
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train

MODULES = {"q1": q1_train, "q2": q2_train}
# the default model's recipe; Q2's trunk with random weights (the weights do not change a step's time)
EXTRA = {"q1": [], "q2": ["--backbone", "efficientnet_lite0", "--no-pretrained"]}


def resolved(question, *flags):
    """The run train.py resolves from these flags."""
    module = MODULES[question]
    return module, resolve(module.parse_args([*EXTRA[question], *flags]), module.QUESTION)


def loop_rate(question, precision, images=512):
    """images/s of one epoch of train.py's own training (its trainer()) over the first `images` training images."""
    _, _, run_epoch, _ = training_pieces(MODULES[question],
                                         [*EXTRA[question], "--precision", precision, "--limit", str(images)])
    began = time.perf_counter()
    run_epoch(1)
    return images / (time.perf_counter() - began)


def rate(build, input_shape, batch, steps, channels_last, threads, precision="fp32"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build()  # train.py's build(): channels-last
    x = torch.randn(batch, *input_shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)
    out_shape = model(x).shape
    target = torch.randint(0, out_shape[1], (batch, *out_shape[2:]))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad()
        with autocast(precision, torch.device("cpu")):
            outputs = model(x)
        nn.functional.cross_entropy(outputs.float(), target).backward()
        optimizer.step()

    return images_per_second(step, steps, batch)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    refuse_if_busy(args.force)
    threads = torch.get_num_threads()

    def q1():
        return q1_train.build(resolved("q1")[1])

    def q2():  # the default head as the recipe has it (without the stride-4 block)
        return q2_train.build(resolved("q2")[1])

    bf16 = bool(cpu_flags() & CPU_BF16_FLAGS)
    loops = [
        ("q1 default recipe, real training loop, bf16 vs fp32 (4096 images an epoch)",
         lambda: loop_rate("q1", "bf16", 4096), lambda: loop_rate("q1", "fp32", 4096)),
        ("q2 default recipe, real training loop, bf16 vs fp32 (64 images an epoch)",
         lambda: loop_rate("q2", "bf16", 64), lambda: loop_rate("q2", "fp32", 64)),
    ]
    cases = loops + [
        ("q1 improved, bf16 autocast vs fp32 (batch 256)",
         lambda: rate(q1, (1, 28, 28), 256, 20, True, threads, "bf16"),
         lambda: rate(q1, (1, 28, 28), 256, 20, True, threads)),
        ("q2 efficientnet_lite0 improved, bf16 autocast vs fp32 (batch 16)",
         lambda: rate(q2, (3, 224, 224), 16, 3, True, threads, "bf16"),
         lambda: rate(q2, (3, 224, 224), 16, 3, True, threads)),
        ("q1 improved, channels_last vs default layout (batch 256)",
         lambda: rate(q1, (1, 28, 28), 256, 20, True, threads), lambda: rate(q1, (1, 28, 28), 256, 20, False, threads)),
        ("q1 improved, batch 256 vs 64 (channels_last)",
         lambda: rate(q1, (1, 28, 28), 256, 20, True, threads), lambda: rate(q1, (1, 28, 28), 64, 80, True, threads)),
        (f"q1 improved, {threads} threads vs 1",
         lambda: rate(q1, (1, 28, 28), 256, 20, True, threads), lambda: rate(q1, (1, 28, 28), 256, 20, True, 1)),
        ("q2 efficientnet_lite0 improved, channels_last vs default layout (batch 16)",
         lambda: rate(q2, (3, 224, 224), 16, 3, True, threads), lambda: rate(q2, (3, 224, 224), 16, 3, False, threads)),
    ]
    if not bf16:
        print("this CPU has no native bf16 (AVX512-BF16, AMX-BF16 or ARM BF16): bf16 comparisons skipped")
        cases = [case for case in cases if "bf16" not in case[0]]
    for title, first, second in cases:
        print(title)
        a, b = alternate(first, second, args.rounds)
        print(f"  median ratio: {median_ratio(a, b):.2f}")
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
