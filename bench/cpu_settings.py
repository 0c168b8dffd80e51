"""Which CPU settings win: bf16 autocast vs fp32, channels-last vs the default layout, threads, batch size.

Times training steps (forward, backward, SGD step) of the default models on random inputs, each pair of
settings alternating in one process; prints the median ratio of images/s for each comparison.

    python bench/cpu_settings.py [--rounds 3]
"""
import time

import torch
from torch import nn

from bench.timing import alternate, bench_parser, median_ratio, refuse_if_busy
from common.precision import autocast
from q1_fashion import train as q1_train
from q1_fashion.models import build_model as build_q1
from q2_segmentation.models import build_model as build_q2


def rate(build, input_shape, batch, steps, channels_last, threads, precision="fp32"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build()
    x = torch.randn(batch, *input_shape)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    out_shape = model(x).shape
    target = torch.randint(0, out_shape[1], (batch, *out_shape[2:]))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad()
        with autocast(precision, torch.device("cpu")):
            outputs = model(x)
        nn.functional.cross_entropy(outputs.float(), target).backward()
        optimizer.step()

    step()  # the first step builds oneDNN's kernels: not timed
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - began)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    refuse_if_busy(args.force)
    threads = torch.get_num_threads()

    def q1():
        return build_q1(dict(q1_train.RECIPES["improved"], model="improved"))

    def q2():
        return build_q2(dict(backbone="efficientnet_lite0", model="improved", pretrained=False))

    cases = [
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
    for title, first, second in cases:
        print(title)
        a, b = alternate(first, second, args.rounds)
        print(f"  median ratio: {median_ratio(a, b):.2f}")
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
