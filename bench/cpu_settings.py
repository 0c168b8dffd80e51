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

from bench.timing import alternate, bench_parser, images_per_second, median_ratio, refuse_if_busy
from common.data import batch_bounds
from common.loop import Training
from common.precision import CPU_BF16_FLAGS, autocast, cpu_flags
from common.run import resolve
from q1_fashion import train as q1_train
from q1_fashion.models import build_model as build_q1
from q2_segmentation import train as q2_train
from q2_segmentation.models import build_model as build_q2


def loop_rate(question, precision, images=512):
    """images/s of one epoch of train.py's real training loop over the first `images` training images."""
    module = q1_train if question == "q1" else q2_train
    run = resolve(module.parse_args(["--precision", precision, "--limit", str(images)]), module.QUESTION)
    torch.manual_seed(0)
    if question == "q1":
        data = q1_train.load_data(run, "data")
        model = q1_train.build_model(run.recipe).to(memory_format=torch.channels_last)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=run.recipe["label_smoothing"])
        epoch = q1_train.batches(data.train_images, data.train_labels, run.recipe["batch_size"],
                                 augmented=run.recipe["augment"])
        count = len(data.train_images)
    else:
        data = LOADED.setdefault("q2", q2_train.load_data(run, "data"))
        model = q2_train.build(run)
        loss_fn = q2_train.make_loss(run.recipe["loss"], run.recipe["loss_weight"])
        recipe = run.recipe
        epoch = q2_train.batches(data.train, recipe["batch_size"], model.normalize, recipe["augment"],
                                 recipe["max_scale"], recipe["min_scale"], recipe["color"], recipe["crop"])
        count = len(data.train.names)
    make_optimizer = (q1_train if question == "q1" else q2_train).make_optimizer
    steps = len(batch_bounds(count, run.recipe["batch_size"]))
    training = Training(model, make_optimizer(model, run.recipe), run, steps)
    began = time.perf_counter()
    training.epoch(epoch, loss_fn, 1)
    return count / (time.perf_counter() - began)


LOADED = {}  # Q2's decoded images, loaded once for every round


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

    return images_per_second(step, steps, batch)


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
