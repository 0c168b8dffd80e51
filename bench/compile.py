"""Does `torch.compile` pay for a default run? Its compile time against the time it saves per epoch.

For each question, train.py's own training (see bench.timing.training: the recipe's optimizer, schedule,
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

from bench.cpu_settings import EXTRA, MODULES
from bench.timing import bench_parser, refuse_if_busy, training
from common.files import DATA_DIR
from q1_fashion.data import NUM_TRAIN
from q2_segmentation.data import list_items

IMAGES = {"q1": 8192, "q2": 96}  # a few steps an epoch: 32 of Q1's batches of 256, 6 of Q2's batches of 16


def epochs_timed(question, compiled):
    """Seconds of each of three epochs of train.py's training, the model compiled in place or not."""
    bench = training(MODULES[question], [*EXTRA[question], "--limit", str(IMAGES[question])])
    if compiled:
        bench.model.compile()  # in place: the optimizer's references and a checkpoint's keys stay the same
    seconds = []
    for epoch in (1, 2, 3):
        began = time.perf_counter()
        bench.epoch(epoch)
        seconds.append(time.perf_counter() - began)
    return seconds


def full_epoch_images(question):
    """The images a default run trains on an epoch: Q1's first 55,000, Q2's whole train folder."""
    return NUM_TRAIN if question == "q1" else len(list_items(DATA_DIR / "train", labelled=True))


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--questions", nargs="+", choices=MODULES, default=list(MODULES))
    parser.add_argument("--rounds", type=int, default=2, help="eager and compiled runs alternate this many times")
    args = parser.parse_args()
    refuse_if_busy(args.force)
    for question in args.questions:
        eager, compiled = [], []
        for round_number in range(1, args.rounds + 1):
            eager.append(epochs_timed(question, False))
            compiled.append(epochs_timed(question, True))
            print(f"{question} round {round_number}: eager epochs {', '.join(f'{s:.1f}' for s in eager[-1])} s; "
                  f"compiled {', '.join(f'{s:.1f}' for s in compiled[-1])} s", flush=True)
        steady_eager = statistics.median(s[2] for s in eager) / IMAGES[question]
        steady_compiled = statistics.median(s[2] for s in compiled) / IMAGES[question]
        # the first two epochs' excess over the steady one, less eager's own (oneDNN builds kernels on first use)
        compile_seconds = statistics.median((c[0] + c[1] - 2 * c[2]) - (e[0] + e[1] - 2 * e[2])
                                            for c, e in zip(compiled, eager, strict=True))
        epochs = MODULES[question].RECIPES["improved"]["epochs"]  # the default model's
        images = full_epoch_images(question)
        plain = epochs * images * steady_eager
        with_compile = compile_seconds + epochs * images * steady_compiled
        print(f"{question}: steady epoch {steady_eager / steady_compiled:.2f}x as fast compiled; compilation "
              f"{compile_seconds:.0f} s; a default run's {epochs} epochs of {images} images: {plain:.0f} s eager, "
              f"{with_compile:.0f} s compiled ({'pays' if with_compile < plain else 'does not pay'})", flush=True)


if __name__ == "__main__":
    main()
