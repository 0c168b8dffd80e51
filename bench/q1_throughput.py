"""Q1 training throughput (images/s): the project's loop against the course starter's, same model.

Starter: torchvision FashionMNIST + ToTensor() + DataLoader(batch_size=64, shuffle=True, num_workers=2),
SGD lr 0.005 momentum 0.9, the model in PyTorch's default memory layout.
Project: the whole set as one uint8 tensor, batches indexed, augmented and normalised as tensors,
channels-last, the model's own recipe (batch size, augmentation, optimizer), through train.py's own functions.
Both sides alternate in one process; the figure is the median of the per-round ratios.

    python bench/q1_throughput.py [--images 25600] [--rounds 5]
"""
import gzip
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

from bench.timing import alternate, bench_parser, median_ratio, refuse_if_busy, training
from common.files import DATA_DIR
from q1_fashion import train as q1_train
from q1_fashion.data import locate_fashion_mnist


def starter_dataset(root):
    """torchvision's FashionMNIST reads uncompressed files from root/FashionMNIST/raw."""
    import torchvision
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    paths = locate_fashion_mnist(DATA_DIR, download=False)
    for path in paths.values():
        target = raw / Path(path).name.removesuffix(".gz")
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # torchvision checks all four exist
        shutil.copy(raw / "train-images-idx3-ubyte" if "images" in name else raw / "train-labels-idx1-ubyte",
                    raw / name)
    return torchvision.datasets.FashionMNIST(root, train=True, download=False,
                                             transform=torchvision.transforms.ToTensor())


def starter_rate(run, dataset, images):
    model = q1_train.build_model(run.recipe)  # the same network, untrained, in the default layout
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    began, seen = time.perf_counter(), 0
    for inputs, labels in loader:
        optimizer.zero_grad()
        loss_fn(model(inputs), labels).backward()
        optimizer.step()
        seen += len(inputs)
        if seen >= images:
            break
    return seen / (time.perf_counter() - began)


def project_rate(bench):
    """images/s of one epoch of train.py's own training (see bench.timing.training)."""
    began = time.perf_counter()
    bench.epoch(1)
    return bench.data.train_size / (time.perf_counter() - began)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--images", type=int, default=25600, help="training images per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    refuse_if_busy(args.force)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratios = {}
    with tempfile.TemporaryDirectory() as root:
        dataset = starter_dataset(root)
        for model_name in ("basenet", "improved"):
            print(f"{model_name}: project vs starter, images/s over {args.images} training images")
            bench = training(q1_train, ["--model", model_name, "--precision", "fp32", "--limit", str(args.images)])
            project, starter = alternate(partial(project_rate, bench),
                                         partial(starter_rate, bench.run, dataset, args.images), args.rounds)
            ratios[model_name] = median_ratio(project, starter)
            print(f"  median: project {statistics.median(project):.0f} img/s, "
                  f"starter {statistics.median(starter):.0f} img/s")
    print(f"basenet_ratio: {ratios['basenet']:.2f}")
    print(f"improved_ratio: {ratios['improved']:.2f}")


if __name__ == "__main__":
    main()
