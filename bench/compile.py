"""Does `torch.compile` pay for a default run? Its compile time against the time it saves per epoch.

For each question, train.py's own training (its build() and trainer(): the recipe's optimizer, schedule,
weight average and augmented batches of the real data) runs three epochs over the first few hundred or
thousand training images, once as built and once after `model.compile()` (the module compiled in place, so
a checkpoint's keys do not change). The first compiled epoch holds the compilation, the second any
recompilation for shapes first seen then; the third is steady. Compilation is the first two epochs'
excess over the steady one, less the same excess of the eager runs.
From the steady seconds per image it projects a default run's training (the recipe's epochs over the full
training set) both ways, the compilation counted once, and prints the verdict. Needs a C++ compiler on a CPU
(TorchInductor generates C++); the compiled module is not saved.

    python bench/compile.py [--questions q1 q2] [--rounds 2]
"""
import statistics
import time

import torch

from bench.timing import bench_parser, refuse_if_busy
from common.paths import DATA_DIR
from common.run import resolve
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train

MODULES = {"q1": q1_train, "q2": q2_train}
IMAGES = {"q1": 8192, "q2": 96}  # a few steps an epoch: 32 of Q1's batches of 256, 6 of Q2's batches of 16
FULL = {"q1": 55000, "q2": 700}  # the images a default run trains on an epoch


def epochs_timed(question, compiled, data):
    """Seconds of each of three epochs of train.py's training over data, the model compiled in place or not."""
    module = MODULES[question]
    run = data["run"]
    torch.manual_seed(0)
    model = module.build(run)
    if compiled:
        model.compile()
    _, run_epoch, _ = module.trainer(run, model, data["data"])
    seconds = []
    for epoch in (1, 2, 3):
        began = time.perf_counter()
        run_epoch(epoch)
        seconds.append(time.perf_counter() - began)
    return seconds


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--questions", nargs="+", choices=MODULES, default=list(MODULES))
    parser.add_argument("--rounds", type=int, default=2, help="eager and compiled runs alternate this many times")
    args = parser.parse_args()
    refuse_if_busy(args.force)
    for question in args.questions:
        module = MODULES[question]
        extra = ["--backbone", "efficientnet_lite0", "--no-pretrained"] if question == "q2" else []
        run = resolve(module.parse_args([*extra, "--limit", str(IMAGES[question])]), module.QUESTION)
        data = {"run": run, "data": module.load_data(run, DATA_DIR)}
        eager, compiled = [], []
        for round_number in range(1, args.rounds + 1):
            eager.append(epochs_timed(question, False, data))
            compiled.append(epochs_timed(question, True, data))
            print(f"{question} round {round_number}: eager epochs {', '.join(f'{s:.1f}' for s in eager[-1])} s; "
                  f"compiled {', '.join(f'{s:.1f}' for s in compiled[-1])} s", flush=True)
        steady_eager = statistics.median(s[2] for s in eager) / IMAGES[question]
        steady_compiled = statistics.median(s[2] for s in compiled) / IMAGES[question]
        # the first two epochs' excess over the steady one, less eager's own (oneDNN builds kernels on first use)
        compile_seconds = statistics.median((c[0] + c[1] - 2 * c[2]) - (e[0] + e[1] - 2 * e[2])
                                            for c, e in zip(compiled, eager, strict=True))
        epochs, images = run.recipe["epochs"], FULL[question]
        plain = epochs * images * steady_eager
        with_compile = compile_seconds + epochs * images * steady_compiled
        print(f"{question}: steady epoch {steady_eager / steady_compiled:.2f}x as fast compiled; compilation "
              f"{compile_seconds:.0f} s; a default run's {epochs} epochs of {images} images: {plain:.0f} s eager, "
              f"{with_compile:.0f} s compiled ({'pays' if with_compile < plain else 'does not pay'})", flush=True)


if __name__ == "__main__":
    main()
