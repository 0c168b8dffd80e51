"""Q2: one training epoch plus one validation pass, the project's pipeline against the course starter's.

Starter: a Dataset that opens each jpg/png with PIL and applies ToTensor + Normalize per item,
DataLoader(batch_size=32, shuffle=True) for training and batch 1 for validation, default memory layout.
Project: images and masks decoded once into uint8 tensors (the one-time decode is reported apart),
batched flip augmentation and normalisation, channels-last, batch 16 (the recipe), validation under
inference_mode in batches of 32 with the uint8 quantisation train.py applies.
Same model on both sides (default: --backbone efficientnet_lite0 --model baseline), same optimizer.
Also times the AP/IoU computation on the full val set (5 M pixels), with the course's tie order and the fast one.

    python bench/q2_epoch.py [--train-images 700] [--rounds 2]
"""
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from bench.timing import alternate, bench_parser, median_ratio, refuse_if_busy, training
from common.files import DATA_DIR
from common.metrics import quantize_probabilities, segmentation_scores
from q2_segmentation import train as q2_train
from q2_segmentation.data import list_items
from q2_segmentation.models import build_model


class StarterDataset(torch.utils.data.Dataset):
    def __init__(self, folder, names, mean, std):
        self.folder, self.names = Path(folder), names
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        image = self.transform(Image.open(self.folder / f"{name}.jpg").convert("RGB"))
        label = torch.from_numpy(np.array(Image.open(self.folder / f"{name}.png"), dtype=np.int64))
        return image, label


def make_model(config):
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return model, optimizer


def starter_epoch(config, data_dir, names, val_names):
    model, optimizer = make_model(config)
    mean, std = model.trunk.mean, model.trunk.std
    train_loader = torch.utils.data.DataLoader(StarterDataset(Path(data_dir) / "train", names, mean, std),
                                               batch_size=32, shuffle=True)
    val_loader = torch.utils.data.DataLoader(StarterDataset(Path(data_dir) / "val", val_names, mean, std),
                                             batch_size=1)
    loss_fn = nn.CrossEntropyLoss()
    began = time.perf_counter()
    model.train()
    for images, labels in train_loader:
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()
    model.eval()
    outputs = []
    with torch.no_grad():
        for images, _ in val_loader:
            outputs.append(model(images).softmax(dim=1).numpy())
    quantize_probabilities(np.concatenate(outputs))
    return 1.0 / (time.perf_counter() - began)  # epochs per second, so larger is faster on both sides


def project_epoch(flags):
    """One epoch and one validation pass of train.py's own training (see bench.timing.training)."""
    bench = training(q2_train, flags)
    began = time.perf_counter()
    bench.epoch(1)
    bench.validate()  # per-epoch validation as train.py runs it: predictions, quantisation, AP (fast order) and IoU
    return 1.0 / (time.perf_counter() - began)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--train-images", type=int, default=700)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    refuse_if_busy(args.force)
    # the head's recipe as train.py resolves it (baseline: AdamW, flips, cross-entropy, like the starter)
    flags = ["--backbone", args.backbone, "--model", args.model, "--no-pretrained", "--no-tta", "--precision", "fp32",
             "--limit", str(args.train_images)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.backbone} {args.model}, "
          f"{args.train_images} training images + 100 val images per epoch")
    began = time.perf_counter()
    bench = training(q2_train, flags)  # decodes the data, kept for every later epoch of this process
    print(f"project one-time decode of train, val and test: {time.perf_counter() - began:.1f} s")
    config, data = bench.run.recipe, bench.data

    names = list_items(DATA_DIR / "train", labelled=True)[:args.train_images]
    val_names = list_items(DATA_DIR / "val", labelled=True)
    project, starter = alternate(lambda: project_epoch(flags),
                                 lambda: starter_epoch(config, DATA_DIR, names, val_names), args.rounds)
    print(f"  median epoch seconds: project {1 / statistics.median(project):.1f}, "
          f"starter {1 / statistics.median(starter):.1f}")

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(100, 6, 224, 224)).astype(np.float32)
    scores = quantize_probabilities(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    timings = {True: [], False: []}
    for _ in range(3):
        for exact in (True, False):
            began = time.perf_counter()
            segmentation_scores(scores, data.val.labels.numpy(), 6, exact=exact)
            timings[exact].append(time.perf_counter() - began)
    print(f"epoch_ratio: {median_ratio(project, starter):.2f}")
    # exact: the course's own tie order (checker, final printout); fast: stable order (per-epoch validation)
    print(f"metrics_seconds_exact: {statistics.median(timings[True]):.2f}")
    print(f"metrics_seconds_fast: {statistics.median(timings[False]):.2f}")


if __name__ == "__main__":
    main()
