"""Which CPU settings win: bf16 autocast vs fp32, channels-last vs the default layout, threads, batch size.

First the decision `--precision auto` rests on: bf16 against fp32 in the real training loop of each
question's default recipe (train.py's own settings, optimizer, schedule, weight average and augmented
batches of the real data, Q2's variable sizes included), a few hundred images an epoch. Then train.py's own
training steps of the default recipes on fixed-shape random inputs. Each pair of settings
alternates in one process; it prints the median ratio of images/s. bf16 is skipped on a CPU without it.

    python bench/cpu_settings.py [--rounds 3]
"""
import time

import torch

from bench.timing import alternate, bench_parser, median_ratio, refuse_if_busy, step_rate, training
from common.device import CPU_BF16_FLAGS, cpu_flags
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train

MODULES = {"q1": q1_train, "q2": q2_train}
# the default model's recipe; Q2's trunk with random weights (the weights do not change a step's time)
EXTRA = {"q1": [], "q2": ["--backbone", "efficientnet_lite0", "--no-pretrained"]}
INPUT = {"q1": (1, 28, 28), "q2": (3, 224, 224)}
THREADS = torch.get_num_threads()


def loop_rate(question, precision, images):
    """images/s of one epoch of train.py's own training over the first `images` training images."""
    bench = training(MODULES[question], [*EXTRA[question], "--precision", precision, "--limit", str(images)])
    began = time.perf_counter()
    bench.epoch(1)
    return images / (time.perf_counter() - began)


def rate(question, batch, steps, channels_last=True, threads=None, precision="fp32"):
    """images/s of train.py's training steps on a fixed batch of random inputs, in this layout, thread count and
    precision (the network is built channels-last; the default layout converts it back)."""
    torch.set_num_threads(threads or THREADS)
    bench = training(MODULES[question], [*EXTRA[question], "--precision", precision, "--limit", "512"])
    inputs = torch.randn(batch, *INPUT[question])
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    else:
        bench.model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        shape = bench.model(inputs).shape
    targets = torch.randint(0, shape[1], (batch, *shape[2:]))
    return step_rate(bench, (inputs, targets), steps)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    refuse_if_busy(args.force)
    threads = THREADS
    bf16 = bool(cpu_flags() & CPU_BF16_FLAGS)
    loops = [
        ("q1 default recipe, real training loop, bf16 vs fp32 (4096 images an epoch)",
         lambda: loop_rate("q1", "bf16", 4096), lambda: loop_rate("q1", "fp32", 4096)),
        ("q2 default recipe, real training loop, bf16 vs fp32 (64 images an epoch)",
         lambda: loop_rate("q2", "bf16", 64), lambda: loop_rate("q2", "fp32", 64)),
    ]
    cases = loops + [
        ("q1 improved, bf16 autocast vs fp32 (batch 256)",
         lambda: rate("q1", 256, 20, precision="bf16"), lambda: rate("q1", 256, 20)),
        ("q2 efficientnet_lite0 improved, bf16 autocast vs fp32 (batch 16)",
         lambda: rate("q2", 16, 3, precision="bf16"), lambda: rate("q2", 16, 3)),
        ("q1 improved, channels_last vs default layout (batch 256)",
         lambda: rate("q1", 256, 20), lambda: rate("q1", 256, 20, channels_last=False)),
        ("q1 improved, batch 256 vs 64 (channels_last)", lambda: rate("q1", 256, 20), lambda: rate("q1", 64, 80)),
        (f"q1 improved, {threads} threads vs 1", lambda: rate("q1", 256, 20), lambda: rate("q1", 256, 20, threads=1)),
        ("q2 efficientnet_lite0 improved, channels_last vs default layout (batch 16)",
         lambda: rate("q2", 16, 3), lambda: rate("q2", 16, 3, channels_last=False)),
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
